"""Free TCP ports that we choose ourselves, for a local cluster's nodes and for Serve's listeners; and whether
something listens at an address (`connect_error`).

Chosen from 20000 up to the start of the OS's ephemeral range (Linux's default ip_local_port_range starts
at 32768, macOS's at 49152), and never past 29999:
- below Ray's own ranges: workers 10002-19999 lie under it, Serve's replicas (30000-31000) over it;
- below the OS's ephemeral range, because a port picked from that range is free when picked but not
  reserved: between then and the bind, any process asking the OS for a free port (a head's own agents and
  workers, started first) can be handed it. CI saw exactly that: the Ray Client server, which binds late,
  found its port taken ("Address already in use") and the head exited.
"""
from __future__ import annotations

import random
import socket
from pathlib import Path

from cluster.errors import Failure

OURS_FROM = 20000
OURS_BELOW = 30000
_EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")


class NoFreePorts(Failure):
    """Not enough free ports in our range on this host; the message names the range and the host."""


def ephemeral_start() -> int:
    """The first port of the range the OS hands out for bind(0) and outgoing connections."""
    try:
        return int(_EPHEMERAL_RANGE_FILE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def port_range() -> range:
    """Where free_ports looks (see the module's docstring)."""
    return range(OURS_FROM, min(OURS_BELOW, ephemeral_start()))


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """``n`` distinct ports that nothing is bound to on ``host`` right now, from ``port_range()``.

    Every port found is held open until all ``n`` are, so none repeats. Tried in random order: two callers at
    once (two clusters, two Serve apps) rarely try the same ports. ``host`` may be IPv6 (``::1``); a wildcard
    host (``0.0.0.0``, ``::``) checks the port on every interface. Raises NoFreePorts naming the range.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    bind_host = "" if host in ("0.0.0.0", "::") else host
    candidates = list(port_range())
    random.shuffle(candidates)
    held: list[socket.socket] = []
    try:
        for port in candidates:
            s = socket.socket(family, socket.SOCK_STREAM)
            try:
                s.bind((bind_host, port))
            except OSError:
                s.close()
                continue
            held.append(s)
            if len(held) == n:
                return [h.getsockname()[1] for h in held]
    finally:
        for h in held:
            h.close()
    ours = port_range()
    where = (f"{ours.start}-{ours.stop - 1}" if ours
             else f"{OURS_FROM}-{OURS_BELOW - 1}, all of it inside the OS's ephemeral range here (which starts at "
                  f"{ephemeral_start()}: {_EPHEMERAL_RANGE_FILE})")
    raise NoFreePorts(f"found only {len(held)} of {n} free ports on {host} in {where}: free some of those "
                      "ports, or give the port explicitly where the command takes one")


def connect_error(host: str, port: int, timeout_s: float = 2.0) -> OSError | None:
    """None when something accepts TCP connections at host:port (an IPv6 host with or without brackets), else
    why not: ConnectionRefusedError when nothing listens there (a process that died closes its ports at once),
    a timeout or another OSError when nothing answers in time."""
    try:
        with socket.create_connection((host.strip("[]"), port), timeout=timeout_s):
            return None
    except OSError as exc:
        return exc
