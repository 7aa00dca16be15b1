"""Stops the Ray workers that outlive the embedded Ray of a command that has ended.

A command that started an embedded Ray (`cluster.connect` with no address) stops it at exit; the workers then exit
on their own within a second or two, but one stuck in Ray's own exit handler never does (`cluster.processes.
end_stuck`). The command does not wait for them: it starts this module in a process of its own session, with its
standard streams closed (a caller reading the command's output would otherwise wait for this process too), and
exits. This process waits up to the grace period, kills what is left, and says so in `trainyard-workers.log` in
the Ray session's logs folder, beside the worker's own logs. It imports no Ray: it starts in 0.03 s (0.4 s with Ray).

    main([LOG, GRACE_S, RECORDS_JSON])   (what `spawn` starts)
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from cluster.processes import end_stuck

LOG_NAME = "trainyard-workers.log"
# The reapers this process started. Meant to outlive it, so never waited for; held here because Python warns
# ("subprocess ... is still running", a ResourceWarning) when a running child's Popen is dropped.
_STARTED: list[subprocess.Popen] = []


def spawn(records: list[dict], session_dir: str, grace_s: float) -> subprocess.Popen:
    """Start the reaper for `records` (from `ray_workers_of_this_process`) and return at once."""
    log = Path(session_dir) / "logs" / LOG_NAME
    # Isolated (-I: neither the current directory nor PYTHONPATH on its path, where a user's `json.py` or
    # `cluster/` may sit), with this package's own folder put first, and run from / so that it keeps no user's
    # folder busy for its 20 s.
    root = str(Path(__file__).resolve().parents[1])
    code = f"import sys; sys.path.insert(0, {root!r}); from cluster.reaper import main; sys.exit(main(sys.argv[1:]))"
    _STARTED[:] = [proc for proc in _STARTED if proc.poll() is None]     # collect those that have ended
    proc = subprocess.Popen([sys.executable, "-I", "-c", code, str(log), str(grace_s), json.dumps(records)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, close_fds=True, cwd="/")
    _STARTED.append(proc)
    return proc


def main(argv: list[str]) -> int:
    log, grace_s, records = Path(argv[0]), float(argv[1]), json.loads(argv[2])
    killed = end_stuck(records, grace_s)
    if killed:
        names = ", ".join(f"{r.get('name', '?')} (pid {r['pid']})" for r in killed)
        with log.open("a") as out:
            out.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} killed {len(killed)} Ray worker(s) still running "
                      f"{grace_s:g} s after their Ray stopped: {names}\n")
    return 0
