"""Ray workers that outlive the embedded Ray that ran them: a worker stuck in Ray's own exit handler never exits,
so the process that started that Ray kills it after a grace period (`cluster.processes.end_stuck`), and a command
leaves the wait to `cluster.reaper` instead of waiting itself. Plain processes stand in for stuck workers; the
last test starts a real embedded Ray in a real driver process and lets it exit."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cluster import processes, reaper

ROOT = Path(__file__).resolve().parents[1]
# A process that ignores SIGTERM, as a worker blocked in Ray's exit handler does not react to its raylet's end.
STUCK = [sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"]
WORKER_ENV = {"RAY_RAYLET_PID": "1", "PATH": "/usr/bin:/bin"}


def _record(proc: subprocess.Popen) -> dict:
    started, ticks, _ = processes.identity(proc.pid)
    return {"pid": proc.pid, "started": started, "start_ticks": ticks, "name": "python"}


def _log_line_within(log: Path, text: str, seconds: float) -> str:
    """The reaper's log once it holds `text` (the reaper kills first, then writes), else what it holds by then."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if log.exists() and text in log.read_text():
            break
        time.sleep(0.1)
    return log.read_text() if log.exists() else ""


def _gone_within(pid: int, ticks: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not processes.running({"pid": pid, "start_ticks": ticks}):
            return True
        time.sleep(0.1)
    return False


def test_end_stuck_kills_only_what_still_runs_after_the_grace():
    stuck = subprocess.Popen(STUCK, env=WORKER_ENV)
    ending = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.3)"], env=WORKER_ENV)
    try:
        records = [_record(stuck), _record(ending)]
        # A record whose pid another process has now (another start): not the process recorded, never signalled.
        reused = {**records[0], "start_ticks": records[0]["start_ticks"] + 1}
        assert processes.end_stuck([reused], grace_s=0.2) == [] and stuck.poll() is None
        started = time.monotonic()
        killed = processes.end_stuck(records, grace_s=3.0)
        # The one that exited in time (a zombie until this test waits for it: that counts as exited) is left.
        assert [r["pid"] for r in killed] == [stuck.pid]
        assert time.monotonic() - started >= 3.0
        assert stuck.wait(10) == -9 and ending.wait(10) == 0
        # Nothing left to wait for: back at once.
        started = time.monotonic()
        assert processes.end_stuck(records, grace_s=30.0) == [] and time.monotonic() - started < 10
    finally:
        for proc in (stuck, ending):
            proc.kill()
            proc.wait()


def test_the_reaper_does_not_hold_the_command_and_says_what_it_killed(tmp_path):
    """`spawn` returns at once, with none of the caller's streams held open: a caller that reads the command's
    output (the tests, CI, a pipe) is not kept waiting for the grace period."""
    stuck = subprocess.Popen(STUCK, env=WORKER_ENV)
    try:
        record = _record(stuck)
        code = ("import json, sys; from cluster.reaper import spawn; "
                "spawn(json.loads(sys.argv[1]), sys.argv[2], 3.0)")
        (tmp_path / "logs").mkdir()
        run = subprocess.run([sys.executable, "-c", code, json.dumps([record]), str(tmp_path)], cwd=ROOT,
                             capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, run.stderr[-2000:]
        assert stuck.poll() is None        # the command's output ended before the grace did
        assert stuck.wait(60) == -9
        line = f"killed 1 Ray worker(s) still running 3 s after their Ray stopped: python (pid {stuck.pid})"
        assert line in _log_line_within(tmp_path / "logs" / reaper.LOG_NAME, line, 10)
    finally:
        stuck.kill()
        stuck.wait()


@pytest.mark.ray
def test_a_command_that_started_ray_leaves_no_worker_running_after_it_exits(tmp_path):
    """A real driver: `connect()` starts the embedded Ray, a task runs on one of its workers, a stand-in for a
    stuck worker runs under it, and the driver exits without stopping anything itself. Its exit stops Ray
    (before Ray's own exit handler: the workers are found under the driver only while the raylet lives), and
    every worker is gone soon after: the real ones by themselves, the stuck one killed after the grace. Ray's
    autoscaler monitor is killed (SIGKILL) before Ray stops, where Ray's own stop waits 1 s for it."""
    monitor_seen = tmp_path / "monitor.json"
    code = f"""
import json, os, subprocess, sys
import ray
from cluster import connect, connection, processes, ray_compat
processes.WORKER_EXIT_GRACE_S = 4.0
connect(num_cpus=1)
monitor = ray._private.worker._global_node.all_processes["monitor"][0].process
kill = ray_compat.kill_autoscaler_monitor
def kill_and_say():     # what the exit's stop does with the monitor, written where the test reads it
    killed = kill()
    open({str(monitor_seen)!r}, "w").write(json.dumps({{"killed": killed, "returncode": monitor.returncode}}))
    return killed
ray_compat.kill_autoscaler_monitor = kill_and_say
task_pid = ray.get(ray.remote(lambda: os.getpid()).remote())
stuck = subprocess.Popen({STUCK!r}, env={WORKER_ENV!r}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
print(json.dumps({{"workers": processes.ray_workers_of_this_process(), "stuck": stuck.pid, "task": task_pid,
                  "session": connection._embedded_session}}), flush=True)
"""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=180)
    assert run.returncode == 0, run.stderr[-3000:]
    seen = json.loads(next(line for line in run.stdout.splitlines() if line.startswith('{"workers"')))
    workers = {r["pid"]: r for r in seen["workers"]}
    try:
        assert seen["stuck"] in workers and seen["task"] in workers
        for pid, record in workers.items():
            assert _gone_within(pid, record["start_ticks"], 60), f"Ray worker {record} still running"
        text = _log_line_within(Path(seen["session"]) / "logs" / reaper.LOG_NAME, f"(pid {seen['stuck']})", 10)
        assert f"(pid {seen['stuck']})" in text and f"(pid {seen['task']})" not in text, text
        # SIGKILL (-9) before Ray's stop: not Ray's SIGTERM, whose handler exits 143 or is killed a second later.
        assert json.loads(monitor_seen.read_text()) == {"killed": True, "returncode": -9}
    finally:   # this test stops what it started, even when the code under test did not
        processes.end_stuck(list(workers.values()), grace_s=0)
