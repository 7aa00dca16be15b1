"""`cluster down` checks what `.trainyard/cluster.json` says before acting on it: a recorded pid is signalled
only while it is still the process `cluster up` started (same start time, same command line), and only the
temp folder `up` created and marked is removed. A forged (or stale) state file pointing at another live
process and at a folder outside leaves both untouched. No Ray cluster is started here: the processes are
plain `sleep`s this test starts and stops."""
from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from cluster import local, processes, state as cluster_state


@pytest.fixture
def bystander():
    """A live process that is not Ray's: a session leader (as our nodes are) with a child in its session."""
    proc = subprocess.Popen(["bash", "-c", "sleep 60 & wait"], start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while len(_session(proc.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(_session(proc.pid)) == 2, "the bystander's child did not start"
        yield proc
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # its own process group: the bash and its sleep, nothing else
        proc.wait(timeout=10)


def _session(sid: int) -> list[int]:
    psutil = processes.load_psutil()
    found = []
    for proc in psutil.process_iter(["pid", "status"]):
        try:
            if os.getsid(proc.info["pid"]) == sid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                found.append(proc.info["pid"])
        except (ProcessLookupError, PermissionError):
            continue
    return found


def _forge(state_dir, pid: int, started: float, ticks: int, cmdline: list[str], temp_root) -> None:
    cluster_state.write_state(state_dir, {
        "version": 2, "cluster_id": "forged0000000000", "address": "127.0.0.1:1",
        "ports": {"gcs": 1, "dashboard": 2, "client": 3}, "temp_root": str(temp_root),
        "nodes": [{"name": "head", "pid": pid, "started": started, "start_ticks": ticks,
                   "cmdline": cmdline,
                   "temp_dir": str(temp_root / "head"), "log": "/dev/null"}]})


@pytest.mark.parametrize("forged", ["command line differs", "start time differs"])
def test_down_leaves_another_process_and_an_outside_folder_alone(bystander, tmp_path, forged):
    started, ticks, cmdline = processes.identity(bystander.pid)
    if forged == "command line differs":      # the pid was reused at once: only the command tells
        cmdline = ["/usr/bin/python3", "cluster/_raystart.py", "start", "--block", "--head"]
    else:                                     # the same command started again later, under the old pid
        started, ticks = started - 3600, ticks - 360000
    outside = tmp_path / "precious"
    (outside / "head").mkdir(parents=True)
    (outside / "data.txt").write_text("keep me")
    state_dir = tmp_path / "state"
    _forge(state_dir, bystander.pid, started, ticks, cmdline, outside)
    said = []

    local.down(state_dir, timeout_s=5, progress=said.append)

    assert bystander.poll() is None and len(_session(bystander.pid)) == 2, "a process not ours was signalled"
    assert (outside / "data.txt").read_text() == "keep me" and (outside / "head").is_dir()
    assert any(f"not signalling pid {bystander.pid} (head)" in m and "pid was reused" in m
               and "now `bash -c sleep 60 & wait`" in m for m in said), said
    assert any(f"left {outside} in place" in m and local.TEMP_ROOT_MARKER in m for m in said), said
    assert not cluster_state.state_path(state_dir).exists(), "the stale record itself is ours to remove"


def test_down_removes_the_folder_up_marked(tmp_path):
    """The other side of the marker: the folder `up` created, carrying this cluster's id, goes."""
    temp_root = tmp_path / "ty-root"
    (temp_root / "head").mkdir(parents=True)
    (temp_root / local.TEMP_ROOT_MARKER).write_text("forged0000000000")
    state_dir = tmp_path / "state"
    cluster_state.write_state(state_dir, {"version": 2, "cluster_id": "forged0000000000",
                                          "temp_root": str(temp_root), "nodes": []})
    local.down(state_dir, timeout_s=5)
    assert not temp_root.exists()


def test_a_marker_of_another_cluster_is_not_enough(tmp_path):
    temp_root = tmp_path / "ty-other"
    temp_root.mkdir()
    (temp_root / local.TEMP_ROOT_MARKER).write_text("someone-else")
    state_dir = tmp_path / "state"
    cluster_state.write_state(state_dir, {"version": 2, "cluster_id": "forged0000000000",
                                          "temp_root": str(temp_root), "nodes": []})
    local.down(state_dir, timeout_s=5)
    assert temp_root.is_dir()


def test_a_process_that_exits_while_it_is_read_is_gone_not_reused():
    """psutil found the node's process, then its /proc/<pid>/stat was gone when the start ticks were read (it
    exited in between): GONE, whose session may still hold our processes, not REUSED (which `down` would neither
    signal nor search by, and would report as a reused pid)."""
    node = {"name": "head", "pid": 4321, "started": 1000.0, "start_ticks": 5000, "cmdline": ["ray", "start"]}
    assert processes.classify(node, 1000.0, None, False, None) == processes.GONE
    assert processes.classify(node, 1000.0, 5001, False, ["ray", "start"]) == processes.REUSED
    assert processes.classify(node, 1000.0, 5000, False, ["ray", "start"]) == processes.ALIVE


def test_cluster_up_refuses_what_this_machine_cannot_start_before_starting_anything(tmp_path):
    """`--workers 500` started node after node (a load of 200 on 2 cores) until killed; `--timeout 0` started a
    head and gave up; an unwritable `--state-dir` was a FileNotFoundError traceback. Each is bad input now, said
    before any process starts."""
    import sys

    from cluster.errors import BadInput

    with pytest.raises(BadInput, match=r"--workers 500: 501 nodes need about 195.7 GiB \(~400 MiB of Ray processes "
                                       r"each, every node on this machine\) and 17.6 GiB is free; use --workers 44"):
        local.check_memory(500, available_mb=18000)
    local.check_memory(43, available_mb=18000)
    with pytest.raises(BadInput, match=r"--timeout 0: must be above 0 seconds"):
        local.up(1, 2, tmp_path / "a", timeout_s=0)
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(BadInput, match=rf"--state-dir {tmp_path}/file/sub: cannot be created \(Not a directory\)"):
        local.up(0, 2, tmp_path / "file" / "sub", timeout_s=1)
    run = subprocess.run([sys.executable, "-m", "trainyard", "cluster", "up", "--workers", "100000", "--state-dir",
                          str(tmp_path / "b")], capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "--workers 100000: 100001 nodes need about" in run.stderr, run.stderr
    assert "starting" not in run.stdout and not (tmp_path / "b").exists()
    run = subprocess.run([sys.executable, "-m", "trainyard", "cluster", "down", "--timeout", "-1"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "expected a number of seconds above 0, got '-1'" in run.stderr, run.stderr


def test_a_new_cluster_token_is_its_owners_alone_whatever_stood_at_its_path(tmp_path):
    """`cluster up` wrote the token into an existing auth_token keeping its mode (0644: any local user could read
    it, and with it run code on the cluster), and would have followed a link put there."""
    from cluster.local import fresh_token

    path = tmp_path / "auth_token"
    path.write_text("old")
    path.chmod(0o644)
    token = fresh_token(path)
    assert path.read_text() == token and len(token) == 64 and (path.stat().st_mode & 0o777) == 0o600
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_text("not the token's")
    path.unlink()
    path.symlink_to(elsewhere)
    fresh_token(path)
    assert elsewhere.read_text() == "not the token's" and not path.is_symlink()
