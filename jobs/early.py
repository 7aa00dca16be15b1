"""A one-worker training run started while its data is still being prepared (`trainyard train`, `run`).

Before the first epoch of a small job, Ray Train's controller, worker group and worker process take ~5 s on
2 cores (process starts, imports of torch and Ray Train), and ingest and preprocessing take ~3 s before them,
though the run's start needs nothing from the data. `start_early` starts the run right after Ray is up with a
loop config that holds only the handle of a small actor (`jobs.handoff.Handoff`); the worker waits on it
(`jobs.worker.handed_config`) and `EarlyRun.finish` hands over what `jobs.train.fit` would have given it at
the start (the worker config and both splits, `jobs.train.run_loop_config`) once `prepare` is done. Same
trainer, same loop, same data: a seeded run trains the same model either way. If the data cannot be
prepared, `EarlyRun.abort` hands over nothing: the worker returns without training and the run's folder goes.

Only one-worker runs start early: several workers get their splits through Ray Train's DataConfig, which takes
the datasets when the trainer is built. And only when the cluster has a CPU free beside the worker now (free,
not in total: on a shared cluster Serve replicas or other jobs may hold the rest): Ray Data's tasks in
`prepare` need one, and a worker holding the last free CPU would wait on data that never comes.

A run given up (`abort`) winds down in the background: its controller aborts it as Ray's Ctrl-C does (a worker
still starting is killed where it stands), and a worker that starts all the same takes nothing and returns. A
process that goes on using the same Ray afterwards, and wants no run of its own still starting (the tests,
counting the actors a run starts), waits for them with `wait_given_up`.
"""
from __future__ import annotations

import atexit
import sys
import threading
import traceback
from typing import Callable, Optional

from cluster.quiet import hide_no_free_cpu_warning
from cluster.ray_compat import abort_run
from jobs.contracts import CHECKPOINT_PREFIX, PreparedData
from jobs.handoff import Handoff, wrap
from jobs.spec import JobSpec
from jobs.train import (TrainerFactory, TrainOutcome, controller_env, epoch_floor_s, folder_id, outcome_of,
                        pretrained_encoder, run_loop_config, run_trainer, start_line, train_failure, worker_config)
from jobs.worker import HANDOFF_KEY

__all__ = ["EarlyRun", "start_early", "starts_early", "wait_given_up", "early_epoch_floor_s", "ABORT_WAIT_S"]

# How long a process joined to a cluster waits, as it exits, for a run it gave up before its data was ready to
# wind down (its worker starts, takes nothing, returns), so that the run's folder is removed (`EarlyRun._at_exit`).
ABORT_WAIT_S = 30.0
# The same on the embedded Ray, before it is stopped (`EarlyRun._at_exit`): such a run ends 0.4-1.3 s after
# `abort` on a quiet 2-core machine, but took over 10 s on a CI machine busy with a second test process; past
# this, Ray is stopped under it (and the process may exit 1 instead of its own code).
EMBEDDED_ABORT_WAIT_S = 30.0


# The Parquet footers `early_epoch_floor_s` reads at most: a table of thousands of shards is not opened file by
# file before its run starts; the rest count as empty (a floor stays a floor).
FOOTERS_READ = 32

# Runs given up whose thread has not ended yet (`EarlyRun.abort`, `wait_given_up`).
_GIVEN_UP: set = set()
_LOCK = threading.Lock()


def starts_early(spec: JobSpec, free: dict) -> bool:
    """Whether the spec's run can start before its data is prepared on a cluster with `free` resources now
    (`ray.available_resources()`: its CPU count)."""
    return spec.train.workers == 1 and free.get("CPU", 0) - spec.train.cpus_per_worker >= 1


def wait_given_up(timeout: Optional[float] = None) -> bool:
    """Wait up to `timeout` seconds (None: no limit) for every run this process gave up to end; whether all did."""
    import time

    deadline = None if timeout is None else time.monotonic() + timeout
    with _LOCK:
        runs = list(_GIVEN_UP)
    for run in runs:
        if not run.wait(None if deadline is None else max(0.0, deadline - time.monotonic())):
            return False
        with _LOCK:
            _GIVEN_UP.discard(run)
    return True


def start_early(spec: JobSpec, *, use_gpu: bool, storage_path: str, run_name: str, **run) -> Optional["EarlyRun"]:
    """The spec's run, started now and waiting for its data; None where it cannot start early (`starts_early`).
    `run`: `callbacks`, `trainer`, as `jobs.train.fit` takes them."""
    import ray

    if not starts_early(spec, ray.available_resources()):
        return None
    hide_no_free_cpu_warning()          # a CPU is left for the data: Ray Data's warning would be a false alarm
    return EarlyRun(spec, use_gpu=use_gpu, storage_path=storage_path, run_name=run_name, **run)


def early_epoch_floor_s(spec: JobSpec, use_gpu: bool) -> float:
    """A floor under the early run's epoch before its data is read (`jobs.train.epoch_floor_s`, which sets how often
    its controller polls, fixed from its start): the train share of the labelled rows in the first FOOTERS_READ
    local Parquet files, counted from their footers (rows less the label's nulls; the ingest drops those), the
    spec's batch size, and its MLP with one input and one output (the features are not known yet; fewer weights make
    a lower floor). 0, and so the fast poll, where the footers cannot say: CSV (counting its rows means reading it),
    `format: images`, remote files, a label column a file lacks or keeps no null count for, a string label that may
    hold blanks (its smallest value is blank), files that cannot be read now (the ingest says why); and on a GPU."""
    import pyarrow.parquet as pq

    from jobs.datafiles import infer_format, resolve_files

    data = spec.data
    paths = data.path if isinstance(data.path, list) else [data.path]
    if use_gpu or data.format not in (None, "parquet") or any("://" in p for p in paths):
        return 0.0
    try:
        _, files, _ = resolve_files(data.path)
        if infer_format(files, data.format) != "parquet":
            return 0.0
        rows = sum(_labelled_rows(pq.read_metadata(f), data.label) for f in files[:FOOTERS_READ])
    except Exception:       # DataError, an unreadable footer, a label the footer cannot count: the fast poll
        return 0.0
    train = rows * (1.0 - data.split.val - data.split.test)
    model = {"kind": spec.model.kind, "input_dim": 1, "hidden": list(spec.model.hidden), "output_dim": 1}
    return epoch_floor_s(int(train), spec.train.batch_size, model, spec.train.cpus_per_worker, use_gpu)


def _labelled_rows(meta, label: str) -> int:
    """The rows of a Parquet file (its footer `meta`) whose `label` is set; ValueError where the footer cannot say."""
    names = [meta.schema.column(i).name for i in range(meta.num_columns)]
    if names.count(label) != 1:
        raise ValueError(f"no single column {label!r}")
    col = names.index(label)
    rows = 0
    for g in range(meta.num_row_groups):
        chunk = meta.row_group(g).column(col)
        stats = chunk.statistics
        if stats is None or not stats.has_null_count:
            raise ValueError("no null count")
        labelled = meta.row_group(g).num_rows - stats.null_count
        if labelled and chunk.physical_type == "BYTE_ARRAY" and not (stats.has_min_max and stats.min.strip()):
            raise ValueError("blank labels possible")
        rows += labelled
    return rows


class EarlyRun:
    """A Ray Train run (`jobs.train.run_trainer`, one worker) whose `fit()` runs in a thread of this process
    from the start; `finish` hands the worker its config and waits for the outcome, `abort` gives it up."""

    def __init__(self, spec: JobSpec, *, use_gpu: bool, storage_path: str, run_name: str,
                 callbacks: Optional[list] = None, trainer: Optional[TrainerFactory] = None) -> None:
        import ray

        from cluster import is_embedded

        self.spec, self.use_gpu, self.storage_path, self.run_name = spec, use_gpu, storage_path, run_name
        self._output = folder_id(storage_path)       # the output folder, to tell it was removed mid-run
        # On the driver's node, which outlives the run as the driver does: a worker group that Ray Train restarts
        # after losing a node still finds its config there.
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        self._handoff = _handoff_actor().options(scheduling_strategy=NodeAffinitySchedulingStrategy(
            ray.get_runtime_context().get_node_id(), soft=False)).remote()
        embedded = is_embedded()
        self._trainer = run_trainer(spec, {HANDOFF_KEY: self._handoff}, use_gpu=use_gpu, storage_path=storage_path,
                                    run_name=run_name, callbacks=callbacks, trainer=trainer, embedded=embedded)
        # The floor under an epoch that sets how often the run's controller polls (`early_epoch_floor_s`).
        self.epoch_floor = early_epoch_floor_s(spec, use_gpu)
        self._env = (spec.train.workers, embedded, pretrained_encoder(spec), self.epoch_floor)
        self._embedded = embedded
        self._result = self._error = self._controller = None
        self._handed = self._aborted = False
        if hasattr(self._trainer, "on_controller"):        # trainyard's trainers (`ray_compat.trainer_class`)
            self._trainer.on_controller = self._controller_made
        # A daemon: a process that ends (Ctrl-C, an error) does not wait for a run it no longer follows; Ray's
        # shutdown (embedded) or the driver's exit (a cluster: the controller is this driver's actor) ends it.
        self._thread = threading.Thread(target=self._fit, name="trainyard-train", daemon=True)
        # Set as the thread ends: waited on instead of the thread's join(). In CPython 3.11 a join() that a Ctrl-C
        # interrupts (KeyboardInterrupt in the lock's acquire) releases the running thread's state lock and marks
        # it stopped (bpo-45274's handling): is_alive() then said False of a run still training, every later
        # join() returned at once, and the embedded Ray was stopped at exit under the run (`abort`).
        self._ended = threading.Event()
        self._thread.start()

    def _fit(self) -> None:
        try:
            with controller_env(*self._env):
                self._result = self._trainer.fit()
        except BaseException as exc:       # handed to the caller by `finish`
            # Its frames' locals (the trainer, its loop config) would keep the handoff actor alive with the error.
            traceback.clear_frames(exc.__traceback__)
            self._error = exc
        finally:
            # The actor ends with its last handle (here and in the trainer's loop config): a long-lived driver
            # keeps none of its runs' actors.
            self._handoff = self._trainer = self._controller = None
            try:
                with _LOCK:
                    aborted = self._aborted
                    _GIVEN_UP.discard(self)
                if aborted:
                    self._remove_run()
                    atexit.unregister(self._at_exit)
            finally:            # whatever happens above, whoever waits on the run is not left waiting for ever
                self._ended.set()

    def _controller_made(self, controller) -> None:
        """The run's controller, made (in the thread): kept so that `abort` can end the run; ended now if the run
        was given up while the controller was being made."""
        with _LOCK:
            self._controller, aborted = controller, self._aborted
        if aborted:
            abort_run(controller)

    def finish(self, prepared: PreparedData, progress: Callable[[str], None] = print) -> TrainOutcome:
        """Hand the waiting worker its config for `prepared` and train; the outcome as `jobs.train.fit` gives it.
        A config the spec cannot have (SpecError from `worker_config`) is raised before anything is handed."""
        config = worker_config(self.spec, prepared, use_gpu=self.use_gpu)
        progress(start_line(self.spec, config, prepared))
        handoff = self._handoff             # None once the run has ended (it failed to start): nothing to hand
        if handoff is not None:
            handoff.give.remote(wrap(run_loop_config(self.spec, prepared, config)))
        self._handed = True
        self.wait()
        if self._error is not None:
            raise train_failure(self._error, self.storage_path, self.run_name, self._output) from self._error
        return outcome_of(self._result, config, progress)

    def abort(self) -> None:
        """Give the run up. Before its data was handed over: its worker takes nothing and returns, and the run's
        folder is removed once the run has ended. After (a Ctrl-C while it trains, which reaches `finish`'s wait,
        not the run's thread): the run is aborted, its folder kept with its checkpoints (one without any goes).
        The caller goes on at once (its error is said now); a process that exits before the run has ended waits
        for it (`_at_exit`). With the run's thread still in Ray Train's fit, the embedded Ray stopped at exit
        under it ended a Ctrl-C'd `trainyard train` with exit code 1 ("The core worker has already been
        shutdown") or a segmentation fault (139) instead of 130: 9 of 29 Ctrl-Cs mid-training on 2 cores."""
        if self._aborted or (self._handed and self._ended.is_set()):
            return              # a run that ended (its error being raised): its folder is the error's to name
        handoff = self._handoff
        if handoff is not None and not self._handed:
            handoff.give.remote(None)
        with _LOCK:     # against the thread's end: one of the two removes the folder
            self._aborted = True
            running, controller = not self._ended.is_set(), self._controller
            if running:
                _GIVEN_UP.add(self)
                atexit.register(self._at_exit)
        if not running:
            self._remove_run()
        elif controller is not None:
            # Aborted as Ray's Ctrl-C aborts a run: a worker still starting is killed where it stands instead of
            # importing torch and Ray Train only to take nothing and return. Measured on 2 cores (RESULTS), a run
            # given up 0.1-1.5 s after its start ended 1.1-4.8 s after the abort instead of 3.5-6.0 s, ~1 CPU-s
            # less. Not `ray.kill`, though it ends the run at once: Ray keeps a placement group made by an actor
            # until the actor and its job (this driver) are gone, so a run killed once its worker group was placed
            # would hold its worker's CPUs until the driver exits (tuning/_placement.py says more). The handoff's
            # None still ends a run whose trainer is not trainyard's (no controller handle).
            abort_run(controller)

    def _at_exit(self) -> None:
        """A process exits while the run it gave up is still starting (or, interrupted, training). On the embedded Ray this process started,
        wait up to EMBEDDED_ABORT_WAIT_S for the run to end (`abort` has ended its controller), saying so after a
        second, then stop Ray, as its own exit handler would a moment later, and remove the run's folder. Stopping Ray at once, with the
        run's thread still in Ray Train's `fit`, let that thread reach Ray's shut-down core worker, whose C++
        side then logs "The core worker has already been shutdown" and ends the process with exit code 1: a
        `trainyard train` refusing its data exited 1 instead of 2 in 3 of 5 runs on 2 cores (RESULTS), and took
        longer (6.6-10.9 s against 7.6-8.8 s with the wait: the run ended 0.4-1.3 s after the abort).
        Joined to a cluster, wait up to ABORT_WAIT_S for the run to end (its worker takes nothing and returns; the
        thread's end removes the folder), saying so after a second; a Ctrl-C there leaves the folder and says so."""
        if self._ended.is_set():
            self._remove_run()      # idempotent: the thread's end may have seen the run before it was given up
            return
        if self._embedded:
            from cluster import stop_embedded

            try:
                self._wait_saying(EMBEDDED_ABORT_WAIT_S, "before Ray stops (Ctrl-C stops it now)")
            except KeyboardInterrupt:   # a second Ctrl-C: stop Ray now, as before
                pass
            from cluster.connection import tell_ctrl_c
            tell_ctrl_c()               # a Ctrl-C while Ray stops is told, not a traceback of the exit handler
            stop_embedded()
            self._remove_run()
            return
        folder = f"{self.storage_path.rstrip('/')}/{self.run_name}"
        try:
            if self._wait_saying(ABORT_WAIT_S, "before this driver leaves (Ctrl-C leaves now)" if self._handed else
                                 f"to remove its folder {folder} (Ctrl-C leaves it)"):
                return
        except KeyboardInterrupt:
            pass
        if not self._handed:        # an interrupted run's folder holds its checkpoints: nothing to say of it
            print(f"[train] left {folder}: the training run started while the data was read had not stopped; it "
                  "holds no checkpoint, delete it at will", file=sys.stderr, flush=True)

    def _wait_saying(self, limit: float, why: str) -> bool:
        """`wait` up to `limit` s for the run given up to end, saying so (with `why`) if it has not within a
        second; whether it has."""
        if self.wait(1.0):
            return True
        run = "the interrupted training run" if self._handed else "the training run started while the data was read"
        print(f"[train] waiting up to {limit:g} s for {run} to stop, {why}", file=sys.stderr, flush=True)
        return self.wait(limit)

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Wait up to `timeout` seconds (None: no limit) for the run to end; whether it has."""
        return self._ended.wait(timeout)

    def _remove_run(self) -> None:
        """The run's folder, made by Ray Train at its start (a storage marker, its checkpoint manager's state):
        nothing of the user's, and no checkpoint, since the run never had data to train on."""
        import pyarrow.fs as pafs

        try:
            fs, root = pafs.FileSystem.from_uri(f"{self.storage_path.rstrip('/')}/{self.run_name}")
            if fs.get_file_info(root).type != pafs.FileType.Directory:
                return
            if not any(i.base_name.startswith(CHECKPOINT_PREFIX) for i in fs.get_file_info(pafs.FileSelector(root))):
                fs.delete_dir(root)
        except Exception:       # an unreachable store: the folder stays, as a failed run's does
            pass


_HANDOFF_ACTOR = None


def _handoff_actor():
    """`Handoff` as a Ray actor class, made once per process."""
    global _HANDOFF_ACTOR
    if _HANDOFF_ACTOR is None:
        import ray

        _HANDOFF_ACTOR = ray.remote(num_cpus=0)(Handoff)
    return _HANDOFF_ACTOR
