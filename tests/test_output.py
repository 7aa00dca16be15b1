"""What a trainyard command prints: its own lines and real errors, never Ray's internal chatter; on a terminal a
progress bar of epochs and trials, plain lines elsewhere (CI logs, pipes)."""
from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from cluster import ray_compat
from cluster.quiet import WorkerOutputFilter
from cluster.ray_compat import TRAIN_WORKER, WorkerOutput
from jobs.contracts import WorkerConfig
from jobs.spec import validate_spec
from jobs.worker import _early_stop_line, _progress_line
from tests.conftest import small_spec, write_spec
from trainyard.display import Display
from tuning import report as R
from tuning.lines import search_end_line, search_line, trial_end_line, trial_epoch_line

ROOT = Path(__file__).resolve().parents[1]
# What Ray printed in a plain `trainyard train` / `tune` before (Ray 2.60): none of it may reach the user.
RAY_CHATTER = ("(RayTrainWorker", "(TrainController", "PlacementGroupCleaner", "PreemptionWatcher", "DatasetManager",
               "RayDeprecationWarning", "SplitCoordinator", "(raylet)", "Token authentication is enabled",
               "The Dataset job will hang", "Stop signal received", "Failed to fetch metrics", "SystemExit")
ANSI = re.compile(r"\x1b\[")
# How Ray 2.60 reports the Serve controller's graceful_shutdown call, pushed to the driver, before the cause.
SERVE_STOP = ("Task ServeController.graceful_shutdown failed. There are infinite retries remaining, so the task "
              "will be retried.")
RAYLET_DIED = ("Raylet is terminated. Termination is unexpected. Possible reasons include: (1) SIGKILL by the user or "
               "system OOM killer, (2) Invalid memory access from Raylet causing SIGSEGV or SIGBUS, (3) Other "
               "termination signals.")


# ---------------------------------------------------------------------------------------------- the filter
def _filtered(batches: list[WorkerOutput]) -> tuple[list[str], list[str]]:
    lines, errors = [], []
    keep = WorkerOutputFilter(line=lines.append, error=errors.append)
    for batch in batches:
        keep(batch)
    return lines, errors


def test_ray_actors_lines_stay_out_and_workers_lines_come_without_rays_prefix():
    """Batches as Ray 2.60 forwarded them in a 3-epoch `trainyard train` and a 2-trial `trainyard tune`."""
    epoch = "[train] epoch 1/3  train_loss 0.4818  val_loss 0.3541  val_f1 0.6386  0.22s 64,739 samples/s"
    lines, errors = _filtered([
        WorkerOutput([epoch], "19255", TRAIN_WORKER, is_err=False),
        WorkerOutput(["/x/ray/data/_internal/execution/interfaces/execution_options.py:436: RayDeprecationWarning: "
                      "`ExecutionOptions.exclude_resources` is deprecated", "  self.exclude_resources = x"],
                     "19453", "DatasetManager", is_err=True),
        WorkerOutput(["Progress bars disabled. To enable, set ...", "✔️  Dataset train_0 execution finished in 0.05 s"],
                     "19715", "SplitCoordinator", is_err=True),
        WorkerOutput(["[2026-12-01 17:23:29,838 E 27428 27927] core_worker.cc:2465: Actor with class name: "
                      "'PreemptionWatcher' and ID: '37' has constructor arguments in the object store"],
                     "27428", "TrainController", is_err=True),
        WorkerOutput(["2026-12-01 17:20:20,653\tWARNING placement_group_cleaner.py:80 -- Failed to query Ray Train "
                      "Controller actor state"], "301", "PlacementGroupCleaner", is_err=True),
        WorkerOutput(["WARNING: 8 PYTHON worker processes have been started on node: 648c with address: 192.0.2.2, "
                      "which is 4x the maximum expected startup concurrency (2)."], "raylet", "", is_err=False,
                     pushed=True),
        # `trainyard serve` stopped with Ctrl-C: Serve's controller ends its own graceful shutdown.
        WorkerOutput([f"{SERVE_STOP} Error: The actor is dead because it was killed by `ray.kill`."], "raylet", "",
                     is_err=False, pushed=True),
    ])
    assert lines == [epoch] and errors == []


def test_another_jobs_processes_stay_out_of_a_serve_but_its_replicas_errors_show():
    """Serve turns Ray's per-job filter of forwarded lines off in the driver that starts or joins it: a `trainyard
    serve` printed the epochs and a Train actor's traceback of a `trainyard train --address` beside it (a README
    walkthrough). Another job's processes are kept out; Serve's own actors' errors still show, whichever job."""
    epoch = "[train] epoch 1/2  train_loss 0.4818  val_loss 0.3541  val_f1 0.6386  0.22s 64,739 samples/s"
    traceback = ["Traceback (most recent call last):", "ConnectionError: Found multiple active Ray instances"]
    lines, errors = _filtered([
        WorkerOutput([epoch], "19255", TRAIN_WORKER, is_err=False, other_job=True),
        WorkerOutput(traceback, "29926", "PlacementGroupCleaner", is_err=True, other_job=True),
        WorkerOutput(traceback, "300", "ServeReplica:machine-failure:ModelServer", is_err=True, other_job=True),
        WorkerOutput([epoch], "19256", TRAIN_WORKER, is_err=False),           # its own (or no job's yet)
    ])
    assert lines == [epoch]
    assert errors == [f"[ray ServeReplica:machine-failure:ModelServer pid=300] {t}" for t in traceback]


def test_errors_stay_visible():
    """A worker's traceback (as Ray Train 2.60 logs it), an ERROR record or traceback of any other process, and
    what Ray pushes to the driver (but the worker-pool note and Serve's own stop; a raylet's death once, without
    its log lines) reach the user, each line saying where it came from."""
    traceback = ["Error in training function:", "Traceback (most recent call last):",
                 '  File "/x/jobs/worker.py", line 10, in loop', "ValueError: boom in the loop", ""]
    lines, errors = _filtered([
        WorkerOutput(traceback, "314", TRAIN_WORKER, is_err=True),
        WorkerOutput(["some info first", "2026-12-01 17:20:20,653\tERROR controller.py:925 -- Error in control loop",
                      "Traceback (most recent call last):", "RuntimeError: lost"], "27", "TrainController",
                     is_err=True),
        WorkerOutput(["Task was killed due to the node running low on memory."], "raylet", "", is_err=False,
                     pushed=True),
        WorkerOutput([f"{SERVE_STOP} Error: The actor died unexpectedly before finishing this task."], "raylet", "",
                     is_err=False, pushed=True),
        # A SIGKILLed raylet: Ray 2.60 pushes its death with the raylet's last 20 log lines, from two agents.
        *[WorkerOutput([f"{RAYLET_DIED} Last 20 lines of the Raylet logs:\n    [state-dump] NodeManager:\n"
                        "    [2026-12-02 13:37:59,699 I 13253 13253] (raylet) worker_pool.cc:564: Started worker\n"],
                       "raylet", "", is_err=False, pushed=True)] * 2,
    ])
    assert lines == []
    assert errors == [f"[worker pid=314] {t}" for t in traceback if t] + [
        "[ray TrainController pid=27] 2026-12-01 17:20:20,653\tERROR controller.py:925 -- Error in control loop",
        "[ray TrainController pid=27] Traceback (most recent call last):",
        "[ray TrainController pid=27] RuntimeError: lost",
        "[ray] Task was killed due to the node running low on memory.",
        f"[ray] {SERVE_STOP} Error: The actor died unexpectedly before finishing this task.",
        f"[ray] {RAYLET_DIED} (the raylet's last log lines: raylet.out in that node's Ray log folder; this node's "
        f"is {ray_compat.logs_folder()})"]


def test_the_logs_named_are_this_rays_not_always_tmp_ray(monkeypatch, tmp_path):
    """/tmp/ray/session_latest/logs was named always: under $RAY_TMPDIR, or on a `cluster up` cluster, another
    Ray's logs (another user's, here)."""
    import ray
    if ray.is_initialized():
        pytest.skip("a Ray is connected in this process: its own folder is named")
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))
    assert ray_compat.logs_folder() == str(tmp_path / "ray" / "session_latest" / "logs")


def test_the_logs_named_with_a_ray_connected_are_its_sessions(ray_session):
    folder = ray_compat.logs_folder()
    assert os.path.isdir(folder) and folder.endswith("/logs") and any(Path(folder).glob("raylet*")), folder


def test_a_process_stopped_with_sigterm_shows_no_system_exit_and_its_other_errors_show():
    """A trial ASHA stopped: Tune ends its process with SIGTERM, and Ray's handler's SystemExit came through as a
    traceback (as Ray 2.60 printed it, 2 of 5 searches). An error before it in the same batch still shows."""
    sigterm = ["Traceback (most recent call last):",
               '  File "/usr/lib/python3.11/_weakrefset.py", line 39, in _remove',
               "    def _remove(item, selfref=ref(self)):", "",
               '  File "/x/ray/_private/worker.py", line 1063, in sigterm_handler',
               "    raise_sys_exit_with_custom_error_message(",
               '  File "python/ray/_raylet.pyx", line 712, in ray._raylet.raise_sys_exit_with_custom_error_message',
               "SystemExit: 1"]
    real = ["Traceback (most recent call last):", '  File "/x/tuning/trial.py", line 3, in run_trial',
            "RuntimeError: a real one"]
    lines, errors = _filtered([WorkerOutput(sigterm, "6971", "run_trial", is_err=True),
                               WorkerOutput(real + sigterm, "6972", "run_trial", is_err=True)])
    assert lines == [] and errors == [f"[ray run_trial pid=6972] {t}" for t in real]
    from ray._private import worker as ray_worker
    assert "def sigterm_handler(" in Path(ray_worker.__file__).read_text()    # the frame the filter knows it by


def test_serves_tracebacks_of_a_port_taken_stay_out_and_its_other_errors_show():
    """Two `serve` at once on one port: the one that lost printed ~70 lines of HAProxyManager tracebacks before
    trainyard's own "cannot listen on 127.0.0.1:18432 ... pass --port" (a fault walkthrough)."""
    taken = ["2026-12-07 12:01:02,003\tERROR haproxy.py:1886 -- Failed to start HAProxy.",
             "Traceback (most recent call last):", '  File "/x/ray/serve/_private/haproxy.py", line 1211, in _wait',
             "RuntimeError: HAProxy crashed during startup: [ALERT]    (77) : Binding [/tmp/h/haproxy.cfg:41] for "
             "frontend http_frontend: cannot bind socket (Address already in use) for [127.0.0.1:18432]"]
    other = ["Traceback (most recent call last):", "RuntimeError: HAProxy crashed during startup: [ALERT] bad config"]
    lines, errors = _filtered([WorkerOutput(taken, "81", "HAProxyManager", is_err=True),
                               WorkerOutput(other, "82", "HAProxyManager", is_err=True),
                               WorkerOutput(taken, "83", "run_trial", is_err=True)])
    assert lines == []
    assert errors == [f"[ray HAProxyManager pid=82] {t}" for t in other] + [f"[ray run_trial pid=83] {t}" for t in taken]


def test_a_train_controllers_traceback_for_workers_whose_owner_ended_on_purpose_stays_out():
    """A trial ASHA stopped, in a search submitted to a cluster: its Train controller printed 23 lines of
    ActorDiedError from shutting down workers whose owner (the trial's process, stopped by Tune) had ended on
    purpose. An owner that died of anything else still shows."""
    head = ["Traceback (most recent call last):",
            '  File "/x/ray/train/v2/_internal/callbacks/backend_setup.py", line 27, in before_execution_group_shutdown',
            "ray.exceptions.ActorDiedError: The actor died unexpectedly before finishing this task.",
            "\tclass_name: RayTrainWorker"]
    ended = head + ["The actor is dead because its owner has died. Owner Id: 175b Owner Ip address: 127.0.0.1 Owner "
                    "worker exit type: INTENDED_SYSTEM_EXIT Worker exit detail: Owner's worker process has crashed."]
    crashed = head + ["The actor is dead because its owner has died. Owner Id: 175b Owner Ip address: 127.0.0.1 Owner "
                      "worker exit type: SYSTEM_ERROR Worker exit detail: Owner's worker process has crashed."]
    lines, errors = _filtered([WorkerOutput(ended, "21341", "TrainController", is_err=True),
                               WorkerOutput(crashed, "21342", "TrainController", is_err=True)])
    assert lines == [] and errors == [f"[ray TrainController pid=21342] {t}" for t in crashed]


def test_the_driver_waits_for_a_workers_last_line_before_going_on():
    """The last epoch's line reaches the driver through Ray's log monitor, a beat after the run ended: the driver
    waits for it (at most a moment) before its summary, which came first in 3 of 4 runs written to a file."""
    import threading
    import time

    from cluster import quiet

    shown: list[str] = []
    keep = WorkerOutputFilter(line=shown.append, error=shown.append)
    last = "[train] epoch 8/8  train_loss 0.3812  val_loss 0.5266  0.03s 125,682 samples/s"
    threading.Timer(0.3, lambda: keep(WorkerOutput([last], "7", TRAIN_WORKER, is_err=False))).start()
    t0 = time.monotonic()
    assert keep.await_line("[train] epoch 8/8 ", timeout_s=5)
    assert time.monotonic() - t0 > 0.2 and shown == [last]
    assert not keep.await_line("[train] early stop", timeout_s=0.2)            # a line that never comes
    keep(WorkerOutput([last], "7", TRAIN_WORKER, is_err=False))
    assert keep.await_line("[train] epoch 8/8 ", timeout_s=0)                   # come already: no wait
    assert not keep.await_line("[train] epoch 8/8 ", timeout_s=0.1)   # a second run's wait is for its own line
    routed = quiet._routed
    try:
        quiet._routed = None
        assert quiet.await_worker_line("[train] never", timeout_s=30)     # nothing routed: no wait
        quiet._routed = keep
        keep(WorkerOutput([last], "7", TRAIN_WORKER, is_err=False))
        assert quiet.await_worker_line("[train] epoch 8/8 ", timeout_s=0)
    finally:
        quiet._routed = routed


def test_after_interrupted_the_workers_being_stopped_print_nothing(monkeypatch):
    """After "interrupted" the run's worker, still being stopped, printed its next epoch's line (the run read as
    going on) and the traceback of its stop. The command's Ctrl-C mutes what Ray forwards; before it, all shows."""
    from types import SimpleNamespace

    from cluster import quiet
    from trainyard import cli

    shown: list[str] = []
    keep = WorkerOutputFilter(line=shown.append, error=shown.append)
    monkeypatch.setattr(quiet, "_routed", keep)
    epoch = WorkerOutput(["[train] epoch 3/9  train_loss 0.4  val_loss 0.5"], "7", TRAIN_WORKER, is_err=False)
    keep(epoch)
    assert len(shown) == 1

    def ctrl_c(args):           # the command's work, where the Ctrl-C lands
        raise KeyboardInterrupt

    parser = cli.build_parser()
    monkeypatch.setattr(parser, "parse_args", lambda argv: SimpleNamespace(func=ctrl_c))
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    assert cli.main(["train", "x.yaml"]) == 130
    keep(epoch)
    keep(WorkerOutput(["Traceback (most recent call last):", "KeyboardInterrupt"], "7", "TrainController", True))
    assert len(shown) == 1


def test_a_ctrl_c_while_ray_stops_at_exit_is_told_and_a_second_leaves():
    """A Ctrl-C after "bundle written to", while the embedded Ray stopped at exit, printed "Exception ignored in:
    <function WeakSet...>" and a KeyboardInterrupt traceback (exit 0). The first now says what is happening,
    the second leaves at once (130); the work done is kept either way."""
    from cluster.connection import STOPPING_NOTE

    code = ("import os, signal, time\n"
            "from cluster.connection import tell_ctrl_c\n"
            "tell_ctrl_c()\n"
            "os.kill(os.getpid(), signal.SIGINT)\n"
            "time.sleep(0.2)\n"
            "print('went on', flush=True)\n"
            "os.kill(os.getpid(), signal.SIGINT)\n"
            "time.sleep(30)\n"
            "print('not reached')\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          cwd=Path(__file__).resolve().parents[1])
    assert (done.returncode, done.stdout) == (130, "went on\n"), done
    assert done.stderr == STOPPING_NOTE + "\n", done.stderr


@pytest.mark.ray
def test_a_ctrl_c_once_a_command_with_its_own_ray_is_done_is_told_not_a_traceback():
    """The user's side of the test above: a command that started its own Ray and did its work, Ctrl-C'd as it
    ends. "Exception ignored in: <function WeakSet...>" and a KeyboardInterrupt traceback came after "bundle
    written to" (2 of 2 tries), the Ctrl-C landing in the exit's garbage collection or Ray's stop."""
    from cluster.connection import STOPPING_NOTE

    # 'armed' once `run` has set the handler: the SIGINT then lands in the exit, not before (an xdist worker's child
    # inherits SIGINT ignored, and one sent a moment early on a loaded machine was lost)
    code = ("import sys\n"
            "from trainyard import cli\n"
            "from cluster import connection\n"
            "tell = connection.tell_ctrl_c\n"
            "connection.tell_ctrl_c = lambda: (tell(), print('armed', flush=True))\n"
            "cli.main = lambda argv=None: (connection.connect(), 0)[1]\n"
            "sys.exit(cli.run())\n")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert proc.stdout.readline() == "armed\n"
        os.kill(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, err
    assert STOPPING_NOTE in err and "Traceback" not in err and "Exception ignored" not in err, err


def test_tunes_own_report_of_a_failed_trial_stays_out_and_its_other_errors_show():
    """Ray Tune's driver logs a failed trial's whole traceback and "Trials did not complete"; `trainyard tune` says
    both itself. The records are dropped at their loggers; any other error of the same loggers still shows. Fails
    when Ray moves either record (then the lines are back: update cluster.quiet.TUNE_FAILURE_LOGS)."""
    import logging

    from ray.tune import tune
    from ray.tune.execution import tune_controller

    from cluster.quiet import TUNE_FAILURE_LOGS, TUNE_INTERRUPTED, TUNE_SLOW, quiet_ray_logs

    assert "Trial task failed for trial {trial}" in Path(tune_controller.__file__).read_text()
    assert '"Trials did not complete: %s"' in Path(tune.__file__).read_text()
    assert set(TUNE_FAILURE_LOGS) == {tune_controller.logger.name, tune.logger.name}
    # Its advice after Ctrl-C (Tuner.restore, for its Python API): `trainyard tune` gives the command to resume.
    interrupted = TUNE_INTERRUPTED[1]
    assert TUNE_INTERRUPTED[0] == tune.logger.name
    source = Path(tune.__file__).read_text()
    assert f'"{interrupted.removesuffix(" saved.")} "' in source and 'f"saved.\\nResume experiment with: ' in source
    quiet_ray_logs()
    seen: list[str] = []
    sink = logging.Handler()
    sink.emit = lambda record: seen.append(record.getMessage())
    ray_logger = logging.getLogger("ray")            # where Ray's records end (it does not propagate further)
    ray_logger.addHandler(sink)
    try:
        try:
            raise RuntimeError("boom")
        except RuntimeError as exc:
            tune_controller.logger.error("Trial task failed for trial run_trial_1", exc_info=exc)
        tune.logger.error("Trials did not complete: %s", ["run_trial_1"])
        tune.logger.warning(f"{interrupted}\nResume experiment with: Tuner.restore(path=\"/x\", trainable=...)")
        tune_controller.logger.error("Something else broke")
        # warn_if_slow of the driver's bookkeeping on a busy machine: nothing to act on (a README walkthrough saw it).
        from ray.tune.utils.util import warn_if_slow
        assert TUNE_SLOW[0] == warn_if_slow.__module__
        logging.getLogger(TUNE_SLOW[0]).warning(warn_if_slow.DEFAULT_MESSAGE.format(name="callbacks.on_step_end",
                                                                                   duration=0.615))
    finally:
        ray_logger.removeHandler(sink)
    assert seen == ["Something else broke"]


def test_ctrl_c_of_a_search_says_trainyards_line_not_tunes_warnings():
    """At Ctrl-C Ray Tune warned "Stop signal received ... Press CTRL+C ... to skip", and at the end and again on
    `--resume` "Failed to fetch metrics for 2 trial(s): - ...: FileNotFoundError(...)" for trials that had not
    reported yet (it read as if the resume were broken). The first is said in trainyard's words, from a thread of
    its own (the signal may land while the main thread holds the display's lock); the second is dropped, unless a
    trial could not be read for another reason. Fails when Ray rewords either."""
    import logging
    import threading
    import time

    from ray.tune import tune
    from ray.tune.analysis import experiment_analysis

    from cluster.quiet import TUNE_NO_RESULT_YET, quiet_ray_logs
    from tuning import experiment

    assert experiment.TUNE_STOP_SIGNAL == (tune.logger.name, "Stop signal received")
    assert '"Stop signal received (e.g. via SIGINT/Ctrl+C), ending Ray Tune run. "' in Path(tune.__file__).read_text()
    source = Path(experiment_analysis.__file__).read_text()
    assert experiment_analysis.logger.name == TUNE_NO_RESULT_YET[0]
    assert f'f"{TUNE_NO_RESULT_YET[1]}{{len(failures)}} trial(s):' in source
    assert f'f"{TUNE_NO_RESULT_YET[2].removeprefix("FileNotFoundError(").strip(chr(39))}{{trial}}: both ' in source
    quiet_ray_logs()
    seen: list[str] = []
    said: list[str] = []
    sink = logging.Handler()
    sink.emit = lambda record: seen.append(record.getMessage())
    logging.getLogger("ray").addHandler(sink)
    missing = ("- run_trial_c3d76_0000{}: FileNotFoundError('Could not fetch metrics for run_trial_c3d76_0000{}: "
               "both result.json and progress.csv were not found at /x/trial-c3d76_0000{}')")
    printing = threading.Lock()         # the display's lock, held by the main thread mid-line when Ctrl-C comes

    def display_line(line: str) -> None:
        if not printing.acquire(timeout=5):        # called from the thread that holds it: it would wait forever
            said.append("waited on its own lock")
            return
        said.append(line)
        printing.release()

    try:
        with experiment._progress_sink(display_line), experiment._own_stop_notice():
            with printing:                  # Tune's handler logs from the main thread: it must not wait on the lock
                tune.logger.warning("Stop signal received (e.g. via SIGINT/Ctrl+C), ending Ray Tune run. This will "
                                    "try to checkpoint the experiment state one last time. Press CTRL+C to skip. ")
                assert said == []
            for _ in range(100):
                if said:
                    break
                time.sleep(0.02)
        experiment_analysis.logger.warning("Failed to fetch metrics for 2 trial(s):\n"
                                           + "\n".join(missing.format(*[i] * 3) for i in (2, 3)))
        experiment_analysis.logger.warning("Failed to fetch metrics for 2 trial(s):\n" + missing.format(*[2] * 3)
                                           + "\n- run_trial_c3d76_00003: ValueError('bad json')")
        tune.logger.warning("Stop signal received, outside a search")       # no search, no notice: as Ray says it
    finally:
        logging.getLogger("ray").removeHandler(sink)
    assert said == [experiment.STOPPING_LINE]
    assert len(seen) == 2 and seen[0].endswith("ValueError('bad json')") and seen[1].startswith("Stop signal")


def test_a_train_workers_traceback_for_a_run_torn_down_by_its_owner_stays_out_and_other_errors_show():
    """A search printed, for 3 of 4 runs of 3 ASHA trials, a stopped trial's worker's "Error in training function"
    and the traceback of its report's barrier, ending in the placement group's removal: the trial's own end.
    Fails when Ray moves the record or rewords the removal (update cluster.quiet.TRAIN_TORN_DOWN)."""
    import logging

    import ray
    from ray.train.v2._internal import util as train_util

    from cluster.quiet import TRAIN_OWNER_ENDED, TRAIN_TORN_DOWN, hide_torn_down_train_errors

    name, start, containing = TRAIN_TORN_DOWN
    assert train_util.logger.name == name
    assert f'logger.error(f"{start}\\n' in Path(train_util.__file__).read_text()
    raylet = Path(ray.__file__).parent / "core" / "src" / "ray" / "raylet" / "raylet"
    assert containing.encode() in raylet.read_bytes()       # the raylet writes the exit detail
    gcs = (Path(ray.__file__).parent / "core" / "src" / "ray" / "gcs" / "gcs_server").read_bytes()
    assert TRAIN_OWNER_ENDED[0].encode() in gcs and b"Owner worker exit type: " in gcs    # the GCS, its owner's
    hide_torn_down_train_errors()
    filters = len(train_util.logger.filters)
    hide_torn_down_train_errors()                           # once, however often called
    assert len(train_util.logger.filters) == filters
    seen: list[str] = []
    sink = logging.Handler()
    sink.emit = lambda record: seen.append(record.getMessage())
    logging.getLogger("ray").addHandler(sink)
    try:
        train_util.logger.error(f"{start}\nTraceback (most recent call last):\n  ...\nray.exceptions.ActorDiedError: "
                                f"... Worker exit type: INTENDED_SYSTEM_EXIT Worker exit detail: {containing}. ...")
        train_util.logger.error(f"{start}\nTraceback (most recent call last):\n  ...\nValueError: a real bug")
        # A trial's process that Tune ended on purpose took the report's SynchronizationActor with it (as Ray 2.60
        # logged it in 1 of 3 searches); an owner that crashed still shows.
        owner = ("ray.exceptions.ActorDiedError: The actor died unexpectedly before finishing this task.\n\tclass_name:"
                 " SynchronizationActor\nThe actor is dead because its owner has died. Owner Id: d919 Owner Ip "
                 "address: 127.0.0.1 Owner worker exit type: {} Worker exit detail: Owner's worker process has crashed.")
        train_util.logger.error(f"{start}\nTraceback (most recent call last):\n  ...\n"
                                + owner.format("INTENDED_SYSTEM_EXIT"))
        train_util.logger.error(f"{start}\nTraceback (most recent call last):\n  ...\n" + owner.format("SYSTEM_ERROR"))
    finally:
        logging.getLogger("ray").removeHandler(sink)
    assert len(seen) == 2 and seen[0].endswith("ValueError: a real bug") and "SYSTEM_ERROR Worker" in seen[1]


def test_ray_datas_no_free_cpu_warning_is_dropped_for_a_run_started_early():
    """A run started before its data holds its worker's CPUs while Ray Data prepares the data (a CPU left for it,
    `jobs.early`): Ray Data's once-a-process "will hang" warning was a false alarm there, on most one-worker runs.
    Fails when Ray moves the record (update cluster.quiet.RAY_DATA_NO_CPU)."""
    import logging

    import ray.data.dataset as dataset

    from cluster.quiet import RAY_DATA_NO_CPU, hide_no_free_cpu_warning

    source = Path(dataset.__file__).read_text()
    assert dataset.logger.name == RAY_DATA_NO_CPU[0] and '"Warning: The Ray cluster currently does not have any "' \
        in source and '"available CPUs. The Dataset job will hang' in source
    hide_no_free_cpu_warning()
    hide_no_free_cpu_warning()                      # once, however often called
    seen: list[str] = []
    sink = logging.Handler()
    sink.emit = lambda record: seen.append(record.getMessage())
    dataset.logger.addHandler(sink)                 # the logger's own filters run before any of its handlers
    try:
        dataset.logger.warning("Warning: The Ray cluster currently does not have any available CPUs. The Dataset "
                               "job will hang unless more CPUs are freed up.")
        dataset.logger.warning("Something else")
    finally:
        dataset.logger.removeHandler(sink)
    assert seen == ["Something else"]
    assert sum(getattr(f, "start", None) == RAY_DATA_NO_CPU[1] for f in dataset.logger.filters) == 1


# ---------------------------------------------------------------------------------------------- the display
def _worker_config(epochs: int) -> WorkerConfig:
    return WorkerConfig(task="classification", model={}, epochs=epochs, batch_size=32, lr=0.01, weight_decay=0.0,
                        optimizer="adamw", lr_schedule="constant", loss="mse", seed=0, cache="memory",
                        output_dim=2, label_center=0.0, label_scale=1.0, early_stop_metric="val_loss",
                        early_stop_mode="min", use_gpu=False)


def _epoch_line(epoch: int, epochs: int) -> str:
    row = {"epoch": epoch, "lr": 0.01, "train_loss": 0.5, "val_loss": 0.4, "val_accuracy": 0.9,
           "epoch_time_s": 0.01, "train_samples_per_s": 1000.0}
    return _progress_line(row, _worker_config(epochs), "val_loss")


def _terminal() -> tuple[Display, io.StringIO]:
    screen = io.StringIO()
    return Display(live=True, console=Console(file=screen, force_terminal=True, width=120)), screen


def test_an_epoch_line_shows_what_the_epoch_did_and_on_a_gpu_its_memory():
    line = _epoch_line(2, 4)
    assert line == ("[train] epoch 2/4  train_loss 0.5000  val_loss 0.4000  val_accuracy 0.9000  "
                    "0.01s 1,000 samples/s")
    row = {"epoch": 2, "lr": 0.01, "train_loss": 0.5, "val_loss": 0.4, "epoch_time_s": 0.01,
           "train_samples_per_s": 1000.0, "gpu_peak_mib": 1536.4}
    assert _progress_line(row, _worker_config(4), "val_loss").endswith("1,000 samples/s  GPU peak 1,536 MiB")
    # a regression's MAE is shown beside its RMSE, both in the label's units (days to failure: MAE is what counts)
    row = {"epoch": 2, "lr": 0.01, "train_loss": 0.5, "val_loss": 0.4, "val_mae": 49.95, "val_rmse": 77.07,
           "val_r2": 0.117, "epoch_time_s": 0.01, "train_samples_per_s": 1000.0}
    assert "val_loss 0.4000  val_mae 49.9500  val_rmse 77.0700  val_r2 0.1170  " in _progress_line(
        row, _worker_config(4), "val_loss")


def test_a_terminal_gets_a_bar_of_epochs_that_ends_with_the_training():
    display, screen = _terminal()
    display.line("[train] 1 worker(s) on CPU, 4 epoch(s), batch 32, lr 0.01, shard in memory")
    for epoch in (1, 2, 3):
        display.line(_epoch_line(epoch, 4))
    assert display._progress is not None and display._completed("epochs") == 3 and display._total("epochs") == 4
    after = screen.getvalue().split(_epoch_line(3, 4), 1)[1]
    assert re.search(r"\d/4", after)[0] == "3/4"  # the bar drawn under the line shows the epoch that line ended
    display.line(_early_stop_line("val_loss", 2, 1))
    assert display._progress is None            # the bar is full and gone: what follows prints as plain lines
    shown = screen.getvalue()
    assert "3/3" in shown and "early stop" in shown and _epoch_line(3, 4) in shown


def test_epochs_a_stopped_trial_ran_on_after_its_judgment_are_said_one_line_each():
    """A trial the scheduler stopped at epoch 2 whose workers trained epoch 3 before they were gone: the table said
    3 epochs and the epoch-3 value, and no line had shown epoch 3. Those epochs get their lines, before the table."""
    from tuning.lines import ran_on_lines

    history = [{"epoch": e, "val_f1": v} for e, v in ((1, 0.095), (2, 0.095), (3, 0.2178))]
    stopped = R.TrialRecord("ed53f_00001", R.STOPPED, {}, history=history, judged_at=2)
    finished = R.TrialRecord("ed53f_00000", R.COMPLETED, {}, history=history, judged_at=3)
    stopped_in_time = R.TrialRecord("ed53f_00002", R.STOPPED, {}, history=history[:2], judged_at=2)
    assert ran_on_lines([finished, stopped, stopped_in_time], 6, "val_f1") == [
        "[tune] ed53f_00001 epoch 3/6  val_f1 0.2178  (ran on after the scheduler stopped it at epoch 2)"]


def test_epochs_trained_as_a_search_ended_are_said_one_line_each():
    """A time budget ran out on a trial whose epoch 1 alone had a line (Tune stopped hearing it) while its table row
    said 3 epochs, and on one that no line showed at all; a Ctrl-C leaves the same. Their epochs past the last
    one Tune reported get their lines, saying why they came late; a trial whose every epoch had its line, none."""
    from tuning.lines import ran_on_lines

    history = [{"epoch": e, "val_loss": v} for e, v in ((1, 0.42), (2, 0.31), (3, 0.25))]
    cut = R.TrialRecord("1abc1_00000", R.TIME_BUDGET, {}, history=history, seen_at=1)
    unheard = R.TrialRecord("1abc1_00001", R.TIME_BUDGET, {}, history=history[:1], seen_at=0)
    heard = R.TrialRecord("1abc1_00002", R.TIME_BUDGET, {}, history=history[:2], seen_at=2)
    interrupted = R.TrialRecord("1abc1_00003", "interrupted", {}, history=history[:2], seen_at=1)
    never = R.TrialRecord("1abc1_00004", R.NOT_RUN, {}, seen_at=0)
    assert ran_on_lines([cut, unheard, heard, interrupted, never], 30, "val_loss") == [
        "[tune] 1abc1_00000 epoch 2/30  val_loss 0.3100  (trained as the time budget ran out)",
        "[tune] 1abc1_00000 epoch 3/30  val_loss 0.2500  (trained as the time budget ran out)",
        "[tune] 1abc1_00001 epoch 1/30  val_loss 0.4200  (trained as the time budget ran out)",
        "[tune] 1abc1_00003 epoch 2/30  val_loss 0.3100  (trained as the search was interrupted)"]
    # One that trained its last epoch as the budget ran out is completed, and its late epochs say why too.
    done = R.TrialRecord("1abc1_00005", R.COMPLETED, {}, history=history, seen_at=2)
    assert ran_on_lines([done], 3, "val_loss", budget_out=True) == [
        "[tune] 1abc1_00005 epoch 3/3  val_loss 0.2500  (trained as the time budget ran out)"]
    assert ran_on_lines([done], 3, "val_loss")[0].endswith("(trained as the search ended)")


def test_a_terminal_gets_a_bar_of_trials():
    spec = validate_spec({"name": "x", "data": {"path": "d", "label": "y"}, "train": {"epochs": 2},
                          "tune": {"samples": 3, "scheduler": "none"}})
    display, screen = _terminal()
    display.line(search_line(spec, Path("/out/ray/tune-1"), "val_loss", "min", resume=False))
    display.line(trial_epoch_line("a_00000", 1, 2, "val_loss", 0.5, {"lr": 0.01}))
    display.line(trial_end_line("a_00000", 2, 2))
    display.line(trial_end_line("a_00001", 1, 2))
    assert display._completed("trials") == 2 and display._total("trials") == 3
    # Who stopped it: both said "stopped early, judged at epoch N", the README's words for ASHA alone.
    assert trial_end_line("a_00001", 1, 2) == "[tune] a_00001 stopped early by the scheduler, judged at epoch 1"
    assert trial_end_line("a_00001", 4, 5, patience=2) == (
        "[tune] a_00001 stopped early by train.early_stop at epoch 4 (no better for 2 epoch(s))")
    display.line(trial_end_line("a_00002", None, 2, error="ValueError: boom"))
    assert display._progress is None and "3/3" in screen.getvalue()

    # A resumed search hears only of the trials it still runs; its end fills the bar.
    display, screen = _terminal()
    display.line(search_line(spec, Path("/out/ray/tune-1"), "val_loss", "min", resume=True))
    display.line(trial_end_line("a_00002", 2, 2))
    assert display._completed("trials") == 1
    done = [R.TrialRecord(trial_id=f"a_0000{i}", status=R.COMPLETED, config={}) for i in range(3)]
    display.line(search_end_line(done, 12.0, before=30.0))
    assert display._progress is None and "3/3" in screen.getvalue()
    # Its time is this run's, and the whole search's with the runs before (it said 12s alone).
    assert search_end_line(done, 12.0, before=30.0).startswith(
        "[tune] 3 trial(s) in 12s (42s with the runs before --resume); ")


def test_plain_output_is_the_lines_alone(capsys):
    display = Display(live=False)
    for epoch in (1, 2):
        display.line(_epoch_line(epoch, 2))
    display.error("[worker pid=1] Traceback (most recent call last):")
    out, err = capsys.readouterr()
    assert out == f"{_epoch_line(1, 2)}\n{_epoch_line(2, 2)}\n"
    assert err == "[worker pid=1] Traceback (most recent call last):\n"


# ---------------------------------------------------------------------------------------------- end to end
def _trainyard(*argv: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}     # its own embedded Ray
    return subprocess.run([sys.executable, "-m", "trainyard", *argv], cwd=ROOT, capture_output=True, text=True,
                          timeout=600, env=env)


def _assert_no_ray_chatter(run: subprocess.CompletedProcess) -> list[str]:
    assert run.returncode == 0, run.stderr[-3000:]
    lines = (run.stdout + run.stderr).splitlines()
    leaked = [line for line in lines if ANSI.search(line) or any(c in line for c in RAY_CHATTER)]
    assert not leaked, "\n".join(leaked)
    return run.stdout.splitlines()


@pytest.mark.ray
@pytest.mark.slow
def test_train_and_tune_print_trainyard_lines_only(tmp_path, telemetry_dir):
    """The real CLI, not on a terminal, as CI runs it: every epoch line and the summary, nothing of Ray's. The
    training run is the README's example (2 workers: a split train set, so Ray's SplitCoordinator too), cut
    to 2 epochs on the tests' telemetry."""
    example = ROOT / "examples" / "machine-failure.yaml"
    out = _assert_no_ray_chatter(_trainyard("train", str(example), "--set", f"data.path={telemetry_dir}",
                                            "--set", f"output={tmp_path / 'train'}", "--set", "train.epochs=2"))
    assert [line.split("  ")[0] for line in out if line.startswith("[train] epoch")] == [
        "[train] epoch 1/2", "[train] epoch 2/2"]
    assert "[train] summary" in out and out[-1].startswith("bundle written to"), out
    # The bundle's path is said where it is written (with its version) and at the end, not a third time.
    bundle = out[-1].removeprefix("bundle written to ")
    assert [line for line in out if line.endswith(bundle)] == [out[-1]], out
    # The embedded Ray's start (seconds on 2 cores) is said before it begins; a process joined to a cluster
    # does not say it (test_serving's guest prints one "[ray]" line).
    ray_lines = [line for line in out if line.startswith("[ray]")]
    assert ray_lines[0] == "[ray] starting Ray on this machine (embedded: it stops when the command ends)", out
    assert ray_lines[1].startswith("[ray] 1 node(s)"), out

    spec = {**small_spec("quiet-tune", telemetry_dir, tmp_path / "tune", epochs=1),
            "tune": {"samples": 2, "scheduler": "none", "lr": {"loguniform": [1e-3, 1e-1]}}}
    out = _assert_no_ray_chatter(_trainyard("tune", str(write_spec(tmp_path / "tune.yaml", spec))))
    assert sum(bool(re.match(r"\[tune\] \S+ finished its 1 epoch", line)) for line in out) == 2, out
    assert any(line.startswith("[tune] 2 trial(s) in") for line in out)
    assert out[-1].startswith("bundle written to"), out
    bundle = out[-1].removeprefix("bundle written to ")
    assert [line for line in out if line.endswith(bundle)] == [out[-1]], out


@pytest.mark.ray
@pytest.mark.slow
def test_verbose_prints_rays_lines_as_ray_does(tmp_path, telemetry_dir):
    spec = small_spec("loud", telemetry_dir, tmp_path / "out", epochs=1)
    run = _trainyard("train", str(write_spec(tmp_path / "spec.yaml", spec)), "--verbose")
    assert run.returncode == 0, run.stderr[-3000:]
    assert re.search(r"\(RayTrainWorker pid=\d+\)\S* \[train\] epoch 1/1", run.stdout), run.stdout
