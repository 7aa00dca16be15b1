"""Whether a process trainyard recorded by pid in a state file (a local cluster's node leaders, the `trainyard
serve` that owns a port) is still that process. A pid alone is not enough: once a process exits, the OS hands
its pid to the next one, and a stale record would then name a stranger. A record therefore keeps the process's
start (`identity`) next to its pid, and `recorded_process` compares them.

Also the Ray worker processes that outlive their Ray: `ray_workers_of_this_process` records them before Ray stops,
`end_stuck` kills those still running a grace period after it (here or, at a command's exit, in `cluster.reaper`).
"""
from __future__ import annotations

import os
import time
from pathlib import Path

# What became of a recorded process (recorded_process).
ALIVE, GONE, REUSED = "alive", "gone", "reused"


def load_psutil():
    """psutil, which ships inside Ray (ray/thirdparty_files): importing ray puts it on sys.path."""
    import ray  # noqa: F401
    import psutil as ps
    return ps


def _stat_fields(pid: int) -> list[str]:
    """/proc/<pid>/stat from field 3 (the state) on; OSError where there is no such process or no /proc."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    # Field 2, the command name in parentheses, may itself hold spaces and parentheses.
    return stat[stat.rindex(")") + 2:].split()


def start_ticks(pid: int) -> int | None:
    """When the process started, in clock ticks since boot (/proc/<pid>/stat, field 22): exact, where an
    epoch start time is only as good as the boot time it is computed from (whole seconds). None where there
    is no /proc (macOS) or no such process."""
    try:
        return int(_stat_fields(pid)[19])
    except OSError:
        return None


def identity(pid: int) -> tuple[float | None, int | None, list[str] | None]:
    """(epoch start time, start in clock ticks since boot, command line) of a running process, as records
    keep them (`started`, `start_ticks`, `cmdline`); Nones when it is gone."""
    ps = load_psutil()
    try:
        proc = ps.Process(pid)
        with proc.oneshot():
            return proc.create_time(), start_ticks(pid), proc.cmdline()
    except ps.Error:
        return None, None, None


def own_identity() -> dict:
    """This process's pid and start, as a record keeps them (no command line: this process knows it is itself)."""
    started, ticks, _ = identity(os.getpid())
    return {"pid": os.getpid(), "started": started, "start_ticks": ticks}


def recorded_process(record: dict) -> str:
    """ALIVE: the record's pid is still the process recorded (same start time, and the same command line when
    the record keeps one); GONE: it has exited (nothing has its pid, or only its zombie); REUSED: another
    process has its pid now, or one that is not ours to read (another user's)."""
    ps = load_psutil()
    try:
        proc = ps.Process(int(record["pid"]))
        with proc.oneshot():
            started, ticks = proc.create_time(), start_ticks(proc.pid)
            zombie = proc.status() == ps.STATUS_ZOMBIE
            cmdline = None if zombie else proc.cmdline()  # a zombie has no command line left to compare
    except ps.NoSuchProcess:
        return GONE
    except ps.Error:  # not ours to read (another user's process): not ours to signal either
        return REUSED
    return classify(record, started, ticks, zombie, cmdline)


def classify(record: dict, started: float, ticks: int | None, zombie: bool, cmdline: list[str] | None) -> str:
    """`recorded_process`'s verdict on what it read of the process that has the record's pid now."""
    # Records from before the exact start and the command line were kept (a cluster's state version 1), or made
    # where there is no /proc, are checked by the epoch start time, to the second.
    if record.get("start_ticks") is not None:
        if ticks is None:     # /proc/<pid>/stat vanished after psutil found the process: it has just exited
            return GONE
        if ticks != record["start_ticks"]:
            return REUSED
    elif record.get("started") is None or abs(started - record["started"]) >= 1:
        return REUSED
    if zombie:
        return GONE
    return ALIVE if "cmdline" not in record or cmdline == record["cmdline"] else REUSED


def describe(pid: int) -> str:
    """How a message names the process that has `pid` now: its command and start time."""
    started, _, cmdline = identity(pid)
    if started is None:
        return "gone"
    return (f"now `{' '.join(cmdline or [])[:120]}`, started "
            f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(started))}")


# ---------------------------------------------------------------------------------- Ray workers left running
# How long Ray's worker processes get to exit once their Ray has stopped before they count as stuck. Normally
# they are all gone within 1-2 s of `ray.shutdown()` (a `trainyard train` on 2 cores: 1.2 s).
WORKER_EXIT_GRACE_S = 20.0


def ray_workers_of_this_process() -> list[dict]:
    """Records (pid, start, name) of the Ray worker processes under this process, the driver of an embedded Ray:
    those with Ray's RAY_RAYLET_PID in their environment (Ray's own daemons, and the other processes this one
    started, are not workers). Taken before Ray stops: once the raylet is gone they are no longer under it."""
    ps = load_psutil()
    workers = []
    for proc in ps.Process().children(recursive=True):
        try:
            with proc.oneshot():
                if "RAY_RAYLET_PID" in proc.environ():
                    workers.append({"pid": proc.pid, "started": proc.create_time(),
                                    "start_ticks": start_ticks(proc.pid), "name": proc.name()})
        except ps.Error:
            continue
    return workers


def running(record: dict) -> bool:
    """Whether the recorded process still runs (not exited, not a zombie, its pid not reused), from /proc alone
    where there is one: `cluster.reaper` starts in 0.03 s where importing Ray for its psutil takes 0.4 s here."""
    try:
        fields = _stat_fields(int(record["pid"]))
    except OSError:
        if Path("/proc/self/stat").exists():
            return False
        return recorded_process(record) == ALIVE
    return fields[0] != "Z" and int(fields[19]) == record.get("start_ticks")


def end_stuck(records: list[dict], grace_s: float | None = None, poll_s: float = 0.2) -> list[dict]:
    """Wait up to `grace_s` (WORKER_EXIT_GRACE_S) for the recorded processes to exit, then kill (SIGKILL) those
    still running; return the ones killed. Returns as soon as all have exited.

    Why: Ray's own exit handler sometimes deadlocks in a worker after all its Python has run (seen twice in a
    TrainController: `CoreWorkerProcess::HandleAtExit` → boost.asio's scheduler shutdown → `~Publisher`, waiting
    on the scheduler's own mutex; benchmarks/RESULTS.md). Such a process never exits, orphaned once its raylet is
    gone, so whoever started that Ray stops it."""
    import signal

    deadline = time.monotonic() + (WORKER_EXIT_GRACE_S if grace_s is None else grace_s)
    left = [r for r in records if running(r)]
    while left and time.monotonic() < deadline:
        time.sleep(poll_s)
        left = [r for r in left if running(r)]
    killed = []
    for record in left:
        if not running(record):     # exited (or its pid reused) since the last look
            continue
        try:
            os.kill(int(record["pid"]), getattr(signal, "SIGKILL", signal.SIGTERM))   # no SIGKILL on Windows
        except ProcessLookupError:
            continue
        killed.append(record)
    return killed
