"""Ray's log output, set up once for a trainyard driver: the CLI, the tests and the benchmarks call this.

By default a trainyard command prints its own lines and real errors, not Ray's: `quiet_ray_logs` quiets Ray's
loggers in this process, and a routed `WorkerOutputFilter` passes on, of what Ray forwards from its other
processes, what the Ray Train workers (trainyard's training loop) write, tracebacks and ERROR records from the
rest, and the errors Ray pushes to the driver. Ray's actors' own lines (TrainController, DatasetManager,
SplitCoordinator, PreemptionWatcher, the raylet...) stay in Ray's log files; `trainyard --verbose` prints
them as Ray does.
"""
from __future__ import annotations

import contextlib
import logging
import re
import threading
import time
from collections import deque
from typing import Callable, Iterator, Optional

from cluster import ray_compat

# A trainyard line: a lower-case tag in brackets, "[train] epoch 3/15 ...". Ray's own C++ records start
# "[2026-12-01 ...", Ray's Python records with a date, so neither matches.
OWN_LINE = re.compile(r"^\[[a-z][a-z-]*\] ")
# Where an error begins in another process's output: a Python traceback, or a logging record at ERROR or
# CRITICAL in the formats Ray's processes use ("2026-12-01 17:20:20,653\tERROR file.py:85 -- ...", Serve's
# "ERROR 2026-12-01 ..."). Ray's C++ "E" records are left out: core_worker's "[... E ...]" lines are warnings
# (an actor's constructor arguments in the object store), seen on every tuning trial.
ERROR_START = re.compile(r"^(Traceback \(most recent call last\):|(\S+ \S+\s+)?(ERROR|CRITICAL)\b)")
# The one message Ray pushes to the driver that a tuning search always earns: its trials' fractional CPUs
# (a trial's driver holds 0.25) let Ray start more worker processes at once than it expects. Nothing to do.
WORKER_POOL_NOTE = re.compile(r"worker processes have been started on node")
# What Ray pushes at the end of every `serve.shutdown()` (`trainyard serve` stopped by Ctrl-C): Serve's controller
# kills itself once its graceful shutdown is done, while the driver still waits on that call, and Ray reports
# the call as failed and "will be retried". The normal end of a stop; a controller that died of anything else
# than its own `ray.kill` still shows.
SERVE_STOP_NOTE = re.compile(r"^Task ServeController\.graceful_shutdown failed\..*killed by `ray\.kill`")
# What Ray pushes when a node's raylet dies (killed, out of memory): one paragraph, then the raylet's last 20 log
# lines (its state dumps), and the same message again from each of the node's agents within seconds. Shown once
# (again only after RAYLET_DIED_REPEAT_S: the message names no node, so a later one is another death), without
# the log lines, which stay in the raylet's log file.
RAYLET_DIED = re.compile(r"^(Raylet is terminated\. Termination is unexpected\..*?) Last \d+ lines of the Raylet "
                         r"logs:", re.S)
RAYLET_DIED_REPEAT_S = 30.0
# What Ray Tune's driver logs at ERROR when a trial fails: the whole traceback of Ray's frames around the trial's,
# then the list of trials that did not complete (logger → how the record begins). `trainyard tune` says both
# itself ("[tune] ID failed: ... (traceback: .../error.txt)", "[tune] ID restarts after a failure: ..." for one
# Tune retries, and the search's summary), and the trial's own traceback has come through as its Train worker's
# lines. tuning/experiment.py's callback must keep saying every failure Tune reports.
TUNE_FAILURE_LOGS = {"ray.tune.execution.tune_controller": "Trial task failed for trial ",
                     "ray.tune.tune": "Trials did not complete: "}
# What Ray Tune's driver logs when a search is interrupted (Ctrl-C): "Experiment has been interrupted, but the most
# recent state was saved.\nResume experiment with: Tuner.restore(path=..., trainable=...)", advice for its Python
# API. `trainyard tune` says where the experiment is saved and the command that continues it ("[tune] interrupted
# ... Continue it with: trainyard tune SPEC --resume").
TUNE_INTERRUPTED = ("ray.tune.tune", "Experiment has been interrupted, but the most recent state was saved.")
# Ray Tune's `warn_if_slow`: "The `callbacks.on_step_end` operation took 0.615 s, which may be a performance
# bottleneck." on a busy machine, of the driver's own bookkeeping: nothing a user can act on, dropped.
TUNE_SLOW = ("ray.tune.utils.util", "The `", " operation took ")


# What Ray Tune's driver warns when it reads back an experiment (at the end of an interrupted search, and again on
# its resume) with trials that had not reported yet: "Failed to fetch metrics for 2 trial(s):\n- run_trial_...:
# FileNotFoundError('Could not fetch metrics for ...: both result.json and progress.csv were not found at ...')".
# Nothing is missing: those trials had no epoch to report, and `trainyard tune` says which are unfinished. A
# failure to read a trial that did report still shows.
TUNE_NO_RESULT_YET = ("ray.tune.analysis.experiment_analysis", "Failed to fetch metrics for ",
                      "FileNotFoundError('Could not fetch metrics for ")


def _not_only_trials_without_results(record: logging.LogRecord) -> bool:
    first, *trials = record.getMessage().splitlines() or [""]
    return not (first.startswith(TUNE_NO_RESULT_YET[1]) and trials
                and all(TUNE_NO_RESULT_YET[2] in line for line in trials))


def quiet_ray_logs() -> None:
    """Keep our own progress lines readable: Ray Data's per-dataset banners and progress bars, and Train/Tune/
    Serve INFO lines, go to Ray's log files only. Warnings and errors still show, but for Tune's reports of a
    failed trial and its advice after an interrupted search, which `trainyard tune` gives itself
    (`TUNE_FAILURE_LOGS`, `TUNE_INTERRUPTED`), and its warning that trials which had not reported have no
    results (`TUNE_NO_RESULT_YET`)."""
    try:
        import ray.data  # configures its loggers on import: quiet them after, not before
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        ctx.print_on_execution_start = False
    except Exception:  # a Ray without these knobs is only noisier
        pass
    for name in ("ray.data", "ray.train", "ray.tune", "ray.serve"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # "Progress bars disabled": we turned them off above, on purpose.
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)
    for name, start in [*TUNE_FAILURE_LOGS.items(), TUNE_INTERRUPTED]:
        _drop_starting(logging.getLogger(name), start)
    _drop_starting(logging.getLogger(TUNE_SLOW[0]), *TUNE_SLOW[1:])
    analysis = logging.getLogger(TUNE_NO_RESULT_YET[0])
    if _not_only_trials_without_results not in analysis.filters:
        analysis.addFilter(_not_only_trials_without_results)
    # Ray warns at every start of a local Ray that it turned token authentication on: the secure default,
    # nothing to act on. The warning that it is off stays.
    try:
        auth = ray_compat.token_auth_logger()
    except Exception:  # another Ray: at worst the line is back
        return
    _drop_starting(auth, "Token authentication is enabled")


# Ray's Jobs SDK sets its loggers to INFO at import and logs on every submission ("Uploading package
# gcs://_ray_pkg_<hash>.zip.", "Package ... already exists, skipping upload.") and at the end of each log stream
# ("WebSocket closed for job ..."); the package it zips says "Creating a file package for local module ..."
# through runtime_env.packaging's logger. `trainyard submit` says itself what it uploads ("upload: N files,
# ..."), and the job's own lines and errors still show; Ray's warnings and errors from the SDK too.
JOBS_SDK_LOGGERS = ("ray.dashboard.modules.dashboard_sdk", "ray.dashboard.modules.job.sdk",
                    "ray._private.runtime_env.packaging")


def quiet_jobs_sdk() -> None:
    """Keep the Jobs SDK's INFO lines (`JOBS_SDK_LOGGERS`) out; call it after the SDK is imported."""
    for name in JOBS_SDK_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


# Ray Data warns, once a process, when an execution starts at a moment no CPU is free ("The Dataset job will hang
# unless more CPUs are freed up"). A run started before its data (jobs.early) holds its worker's CPUs meanwhile, and
# starts only where a CPU is left beside it: Ray Data's own tasks and actors holding the rest for a moment is not a
# hang, and the warning showed on most one-worker `trainyard train` runs.
RAY_DATA_NO_CPU = ("ray.data.dataset", "Warning: The Ray cluster currently does not have any available CPUs")


def hide_no_free_cpu_warning() -> None:
    """Keep Ray Data's no-free-CPU warning out (`RAY_DATA_NO_CPU`), for a process whose run holds CPUs while its
    data is prepared, having checked that one is left for the data, or that started the embedded Ray it uses."""
    _drop_starting(logging.getLogger(RAY_DATA_NO_CPU[0]), RAY_DATA_NO_CPU[1])


# What a Ray Train worker logs when the placement group of its run is removed under it: "Error in training
# function:" and the traceback of the call it was in (a report's barrier), ending "ActorDiedError: ... Worker exit
# detail: Destroying worker since its placement group was removed". Only a run's owner removes it: its controller
# ending or restarting the run (which says why itself), or, for a trial ASHA stopped, trainyard's sweep of what the
# trial's dead controller held (tuning/_placement.py). A search printed that traceback for 3 of 4 ASHA runs; the
# worker is being destroyed, nothing failed. Any other error of a training function still shows.
TRAIN_TORN_DOWN = ("ray.train.v2._internal.util", "Error in training function:",
                   "Destroying worker since its placement group was removed")
# The same end, seen first by the report's barrier: its SynchronizationActor is gone with its owner, the trial's
# process that Tune ended on purpose (SIGTERM, an "intended" exit): "ActorDiedError: ... The actor is dead because
# its owner has died. Owner Id: ... Owner worker exit type: INTENDED_SYSTEM_EXIT ...", from the GCS. A search
# printed it for 1 of 3 runs of 4 ASHA trials. An owner that died of anything else still shows.
TRAIN_OWNER_ENDED = ("because its owner has died", "Owner worker exit type: INTENDED_SYSTEM_EXIT")


def hide_torn_down_train_errors() -> None:
    """Keep a Ray Train worker's traceback for a run torn down by its owner out (`TRAIN_TORN_DOWN`,
    `TRAIN_OWNER_ENDED`); call it in the worker."""
    name, start, containing = TRAIN_TORN_DOWN
    _drop_starting(logging.getLogger(name), start, containing)
    _drop_starting(logging.getLogger(name), start, *TRAIN_OWNER_ENDED)


# What Ray Data's driver logs when a read or map task fails, before it raises the task's error to the caller:
# "An exception was raised from a task of operator "ReadCSV->SplitBlocks(8)". Dataset execution will now
# abort. To ignore this exception and continue, set DataContext.max_errored_blocks." with the task's traceback,
# then "Exception occurred in Ray Data or Ray Core internal code. If you continue to see this error, please open
# an issue on the Ray project ..." and "Full stack trace:" with it again: 160 lines for a CSV cell past the file's
# first 4 MB that does not fit its column's type, before trainyard's own error naming the file, line and fix.
# `held_ray_data_errors` holds them back for a caller that says the error itself, and lets them through when that
# caller cannot explain it.
RAY_DATA_ERROR_LOGGERS = ("ray.data._internal.execution.streaming_executor_state", "ray.data.exceptions")


class HeldRecords(logging.Filter):
    """A filter that keeps the records of ERROR and above back, to `release` or drop."""

    def __init__(self):
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR:
            self.records.append(record)
            return False
        return True

    def release(self) -> None:
        """Log what was held, as it would have been (its logger's handlers and its parents')."""
        for record in self.records:
            logging.getLogger(record.name).callHandlers(record)
        self.records.clear()


@contextlib.contextmanager
def held_ray_data_errors() -> Iterator[HeldRecords]:
    """Within: Ray Data's driver-side error records (`RAY_DATA_ERROR_LOGGERS`) are held back; call `release()` on
    what this yields to show them after all (an error the caller cannot explain), or leave them (the caller says
    it)."""
    held = HeldRecords()
    loggers = [logging.getLogger(name) for name in RAY_DATA_ERROR_LOGGERS]
    for logger in loggers:
        logger.addFilter(held)
    try:
        yield held
    finally:
        for logger in loggers:
            logger.removeFilter(held)


def _drop_starting(logger: logging.Logger, start: str, *containing: str) -> None:
    """Keep `logger`'s records whose message begins with `start` (and holds each of `containing`) out of the
    output (once, however often called)."""
    if not any(isinstance(f, _DropStarting) and (f.start, f.containing) == (start, containing)
               for f in logger.filters):
        logger.addFilter(_DropStarting(start, *containing))


class _DropStarting(logging.Filter):
    def __init__(self, start: str, *containing: str):
        super().__init__()
        self.start, self.containing = start, containing

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (message.startswith(self.start) and all(c in message for c in self.containing))


# A Ray process stopped on purpose (Tune ends a trial ASHA stopped with SIGTERM) can print the SystemExit Ray's
# SIGTERM handler raises, when the signal lands in a callback Python reports as "Exception ignored": a traceback
# through `sigterm_handler`, "SystemExit: 1". Seen in 2 of 5 searches; the trial's end is said as a [tune] line.
SIGTERM_EXIT = (re.compile(r", in sigterm_handler$"), re.compile(r"^SystemExit: \d+$"))


def _stopped_by_sigterm(block: list[str]) -> bool:
    return all(any(pattern.search(text.rstrip()) for text in block) for pattern in SIGTERM_EXIT)


# HAProxy failing to bind a port taken since it was found free (two `serve` started at once on one port): ~70
# lines of Serve's tracebacks came before trainyard's own "cannot listen on HOST:PORT ... pass --port" (exit 2),
# which says it (`serving.ingress.not_started`; a port of HAProxy's own is chosen again, `own_port_taken`).
PORT_TAKEN = "cannot bind socket (Address already in use)"


def _owner_ended_on_purpose(block: list[str]) -> bool:
    """A Train controller's traceback of shutting down workers whose owner, a trial's process Tune stopped,
    ended on purpose (`TRAIN_OWNER_ENDED`): 23 lines after a trial ASHA stopped, in a search submitted to a
    cluster. The trial's end is said as a [tune] line."""
    text = "\n".join(block)
    return all(part in text for part in TRAIN_OWNER_ENDED)


# The actors of Ray Serve, whose lines reach every driver that starts or joins Serve, whichever job they run in (a
# replica deployed by another `trainyard serve` on the same cluster). Other jobs' processes are not this command's.
SERVE_ACTORS = ("ServeController", "ServeReplica", "ProxyActor", "HAProxyManager")


class WorkerOutputFilter:
    """What reaches the user of the output Ray forwards from its processes (`route` it, or call it with each
    `ray_compat.WorkerOutput`):

    - from a Ray Train worker (trainyard's training loop), every line but blank ones: trainyard's own lines
      ("[train] ...") as they are, anything else (a warning, a traceback) behind "[worker pid=N]", to `error`
      when the worker wrote it to stderr;
    - from any other process (Ray's actors, tasks and daemons), only errors: from a traceback or an ERROR
      record to the end of that batch, behind "[ray <process> pid=N]", to `error`; but for the SystemExit of a
      process stopped with SIGTERM (`SIGTERM_EXIT`) and a traceback of actors whose owner ended on purpose
      (`TRAIN_OWNER_ENDED`), and for Serve's report of a port taken (`PORT_TAKEN`), which the command says itself;
    - nothing from the processes of another driver's job (another command's training on the same cluster), but
      from Serve's actors (`SERVE_ACTORS`);
    - what Ray pushes to the driver itself (a worker killed for memory, a request no node can hold), behind
      "[ray]", to `error`; but for the note that many worker processes started (`WORKER_POOL_NOTE`) and the
      report of Serve's controller ending its own graceful shutdown (`SERVE_STOP_NOTE`); a raylet's death
      (`RAYLET_DIED`) once, without the raylet's log lines.

    `line` and `error` receive one line each, without Ray's ANSI-coloured "(Name pid=N)" prefix."""

    def __init__(self, line: Callable[[str], None], error: Callable[[str], None]):
        self.line, self.error = line, error
        self._raylet_died_at = float("-inf")
        self._own: deque[str] = deque(maxlen=64)     # the workers' latest trainyard lines, for `await_line`
        self._passed = threading.Condition()
        self.muted = False

    def __call__(self, out: ray_compat.WorkerOutput) -> None:
        if self.muted or (out.other_job and not out.process.startswith(SERVE_ACTORS)):
            return
        if out.process == ray_compat.TRAIN_WORKER:
            for text in out.lines:
                if OWN_LINE.match(text):
                    self.line(text)
                    with self._passed:
                        self._own.append(text)
                        self._passed.notify_all()
                elif text.strip():
                    (self.error if out.is_err else self.line)(f"[worker pid={out.pid}] {text}")
            return
        if out.pushed:
            for text in out.lines:
                if WORKER_POOL_NOTE.search(text) or SERVE_STOP_NOTE.match(text):
                    continue
                if died := RAYLET_DIED.match(text):
                    if time.monotonic() - self._raylet_died_at < RAYLET_DIED_REPEAT_S:
                        continue
                    self._raylet_died_at = time.monotonic()
                    text = (f"{died.group(1)} (the raylet's last log lines: raylet.out in that node's Ray log "
                            f"folder; this node's is {ray_compat.logs_folder()})")
                self.error(f"[ray] {text}")
            return
        blocks: list[list[str]] = []       # from each error's start to the next's, or to the batch's end
        for text in out.lines:
            if ERROR_START.match(text):
                blocks.append([])
            if blocks:
                blocks[-1].append(text)
        if out.process.startswith(SERVE_ACTORS) and any(PORT_TAKEN in text for text in out.lines):
            return          # the batch's ERROR line and its traceback alike
        for block in blocks:
            if not (_stopped_by_sigterm(block) or _owner_ended_on_purpose(block)):
                for text in block:
                    self.error(f"[ray {out.process or 'process'} pid={out.pid}] {text}")

    def route(self) -> "WorkerOutputFilter":
        """Make this filter the printer of what Ray forwards to this driver (`ray_compat.route_worker_output`)."""
        global _routed
        ray_compat.route_worker_output(self)
        _routed = self
        return self

    def await_line(self, start: str, timeout_s: float) -> bool:
        """Wait, at most `timeout_s`, until one of the workers' latest trainyard lines begins with `start`. The
        lines seen so far are then forgotten: a later run's wait (the same epoch count, in the same process) is
        for its own lines, not this one's."""
        with self._passed:
            seen = self._passed.wait_for(lambda: any(text.startswith(start) for text in self._own), timeout_s)
            self._own.clear()
            return seen


_routed: Optional[WorkerOutputFilter] = None


def mute_workers() -> None:
    """Show nothing more of what Ray forwards (`WorkerOutputFilter.route`d): after the command said "interrupted",
    its workers, still being stopped, printed their next epoch's line (the run read as going on) and, stopped,
    the tracebacks of their stop."""
    if _routed is not None:
        _routed.muted = True

# How long a driver waits for a run's last [train] line. A worker's lines reach the driver through Ray's log
# monitor, a beat behind the run's end: without the wait, the driver's "[train] summary" came before the last
# epoch's line in 3 of 4 runs whose output went to a file. The line comes in well under a second.
LAST_LINE_WAIT_S = 2.0


def await_worker_line(start: str, timeout_s: float = LAST_LINE_WAIT_S) -> bool:
    """Before a driver prints what follows a Train run, let the run's last line (beginning `start`) through first,
    if the workers' output is routed to this process (`WorkerOutputFilter.route`). False: it did not come."""
    return True if _routed is None else _routed.await_line(start, timeout_s)
