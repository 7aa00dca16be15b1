"""A one-worker run started before its data is prepared (`jobs.early`): it trains what `fit` trains, a killed
worker still resumes from its checkpoint, and a run given up before its data ends and leaves nothing behind."""
import asyncio
import logging
import os
import time

import pytest

from jobs.early import start_early, starts_early, wait_given_up
from jobs.handoff import Handoff, unwrap, wrap
from jobs.ingest import DataError
from jobs.pipeline import prepare, run_train
from jobs.spec import load_spec
from jobs.train import fit
from tests.conftest import small_spec, write_spec
from tests.train_helpers import actors_by_class, dies_once_after, recorded, report_recorder

QUIET = lambda *_: None     # noqa: E731


def _spec(tmp_path, telemetry_dir, name: str, **train):
    return load_spec(write_spec(tmp_path / f"{name}.yaml", small_spec(name, telemetry_dir, tmp_path / "out", **train)))


def test_only_a_one_worker_run_with_a_cpu_to_spare_starts_early(tmp_path):
    one = load_spec(write_spec(tmp_path / "a.yaml", small_spec("a", tmp_path, tmp_path / "out")))
    two = load_spec(write_spec(tmp_path / "b.yaml", small_spec("b", tmp_path, tmp_path / "out", workers=2)))
    wide = load_spec(write_spec(tmp_path / "c.yaml", small_spec("c", tmp_path, tmp_path / "out", cpus_per_worker=4)))
    assert starts_early(one, {"CPU": 2})
    assert not starts_early(one, {"CPU": 1}), "the worker would hold the CPU the data's preparation needs"
    assert not starts_early(two, {"CPU": 64}), "several workers take their splits when the trainer is built"
    assert not starts_early(wide, {"CPU": 4}) and starts_early(wide, {"CPU": 5})


def test_cpus_held_by_others_count_against_an_early_start(tmp_path, telemetry_dir, ray_session):
    """On a shared cluster other work (Serve replicas, other jobs) holds CPUs: only the free ones count. With
    all but one of the session's CPUs held, the run does not start early (its worker would take the last free
    CPU from the data's preparation), and trains once the data is prepared, as before the early start."""
    import ray

    spec = _spec(tmp_path, telemetry_dir, "held", epochs=1, early_stop=None)
    free = ray.available_resources().get("CPU", 0)
    holder = ray.remote(num_cpus=free - 1)(Handoff).remote()
    try:
        ray.get(holder.give.remote(None))           # placed: its CPUs are taken
        assert start_early(spec, use_gpu=False, storage_path=str(tmp_path / "runs"), run_name="held") is None
    finally:
        ray.kill(holder)


def test_the_handoff_gives_every_taker_the_config_once_given():
    async def go():
        handoff = Handoff()
        waiting = asyncio.ensure_future(handoff.take())
        await asyncio.sleep(0.05)
        assert not waiting.done(), "nothing given yet: the worker waits"
        await handoff.give(["config"])
        assert await waiting == ["config"]
        # A worker group Ray Train restarts after a failure takes it again.
        assert await handoff.take() == ["config"]
    asyncio.run(go())


def test_the_handoff_holds_a_reference_and_never_loads_the_config(ray_session):
    """What the driver gives the handoff (`wrap`, as `EarlyRun.finish` does) is never deserialized in the
    handoff's process (neither Ray Data nor pandas imported there), and the taker gets the config whole."""
    import sys

    import ray.data

    class Probe(Handoff):
        def modules(self) -> list:
            return sorted(m for m in ("ray.data", "pandas") if m in sys.modules)

    handoff = ray.remote(num_cpus=0)(Probe).remote()
    try:
        split = ray.data.from_items([{"x": 1}, {"x": 2}]).materialize()
        ray.get(handoff.give.remote(wrap({"datasets": {"train": split}, "epochs": 3})))
        config = unwrap(ray.get(handoff.take.remote()))
        assert config["epochs"] == 3 and config["datasets"]["train"].take_all() == [{"x": 1}, {"x": 2}]
        assert ray.get(handoff.modules.remote()) == []
        assert unwrap(wrap(None)) is None
    finally:
        ray.kill(handoff)


def test_a_run_started_early_trains_what_fit_trains(tmp_path, telemetry_dir, ray_session, monkeypatch):
    """... and its controller polls for the floor under an epoch that the Parquet footers give
    (`early_epoch_floor_s`; raised here so that it is not the fast poll's 0.02 s)."""
    from jobs import train
    from jobs.early import early_epoch_floor_s
    from jobs.train import POLL_ENV, controller_poll_s

    monkeypatch.delenv(POLL_ENV, raising=False)
    monkeypatch.setattr(train, "BATCH_FLOOR_S", 3e-3)
    spec = _spec(tmp_path, telemetry_dir, "same", epochs=3, early_stop=None)
    prepared = prepare(spec, progress=QUIET)
    before = actors_by_class()
    log = str(tmp_path / "reports.jsonl")
    early = start_early(spec, use_gpu=False, storage_path=str(tmp_path / "runs"), run_name="early",
                        callbacks=[report_recorder(log)])
    assert early is not None
    got = early.finish(prepared, progress=QUIET)
    assert (actors_by_class() - before)["Handoff"] == 1
    assert early.epoch_floor == early_epoch_floor_s(spec, use_gpu=False)
    poll = controller_poll_s(1, epoch_floor=early_epoch_floor_s(spec, use_gpu=False))
    assert {r["poll"] for r in recorded(log)} == {f"{poll:g}"} and 0.02 < poll < 0.06
    want = fit(spec, prepared, storage_path=str(tmp_path / "runs"), run_name="late", progress=QUIET)
    assert [h["epoch"] for h in got.history] == [1, 2, 3]
    for a, b in zip(got.history, want.history):
        assert (a["train_loss"], a["val_loss"]) == (b["train_loss"], b["val_loss"])
    assert got.best_epoch == want.best_epoch
    assert all(got.best_state[k].equal(v) for k, v in want.best_state.items())


def test_a_killed_worker_of_a_run_started_early_resumes_from_its_checkpoint(tmp_path, telemetry_dir, ray_session):
    """The restarted worker takes its config from the handoff again and resumes from the checkpoint of epoch 2."""
    from ray.train.v2.api.data_parallel_trainer import DataParallelTrainer

    spec = _spec(tmp_path, telemetry_dir, "kill", epochs=4, max_failures=2, early_stop=None, checkpoint_every=2)
    runs = tmp_path / "runs"
    runs.mkdir()
    marker, log = str(runs / "kill.fault-injected"), str(tmp_path / "reports.jsonl")
    early = start_early(spec, use_gpu=False, storage_path=str(runs), run_name="kill",
                        callbacks=[report_recorder(log)],
                        trainer=lambda loop, **kw: DataParallelTrainer(dies_once_after(loop, 3, marker), **kw))
    assert early is not None
    outcome = early.finish(prepare(spec, progress=QUIET), progress=QUIET)
    assert os.path.exists(marker)
    reports = recorded(log)
    assert [r["epoch"] for r in reports] == [1, 2, 3, 3, 4]
    assert [h["resumes"] for h in outcome.history] == [0, 0, 1, 1]


def test_a_run_given_up_before_its_data_ends_and_leaves_nothing(tmp_path, telemetry_dir, ray_session, monkeypatch):
    """The data error is raised at once, as without the early start; the waiting run is aborted through its
    controller (Ray's own abort: the run's fit() sees the controller gone), the run's actors end, no placement
    group is left holding CPUs, and its folder (Ray Train's storage marker) goes."""
    import ray
    import jobs.pipeline

    made = []

    def spied(*args, **kwargs):
        made.append(start_early(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(jobs.pipeline, "start_early", spied)
    spec = _spec(tmp_path, telemetry_dir, "bad", label="failur")
    started, alive = actors_by_class(), actors_by_class(alive=True)
    with pytest.raises(DataError, match="label column 'failur'"):
        run_train(spec, progress=QUIET)
    early = made[0]
    assert early is not None and early.wait(90), "the run given up did not end"
    assert isinstance(early._error, ray.exceptions.RayActorError), \
        f"the run was waited out, not aborted through its controller: {early._error!r}"
    assert wait_given_up(0), "an ended run is still counted as winding down"
    assert (actors_by_class() - started)["TrainController"] == 1, "the run had started"
    ours = ("Handoff", "TrainController", "RayTrainWorker", "SynchronizationActor")
    deadline = time.monotonic() + 30
    while (left := {k: n for k, n in (actors_by_class(alive=True) - alive).items() if k in ours}) \
            and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not left, f"still alive: {left}"
    from tuning._placement import train_groups
    assert train_groups() == 0, "the aborted run's placement group still holds its worker's CPUs"
    runs = tmp_path / "out" / "ray"
    assert not runs.exists() or not any(runs.iterdir()), sorted(map(str, runs.iterdir()))


def test_a_process_joined_to_a_cluster_says_what_it_waits_for_at_exit(tmp_path, telemetry_dir, ray_session,
                                                                      capsys, monkeypatch):
    """At the exit of a process joined to a cluster (the session's Ray stands in for one: Ray is not stopped), a
    run given up is waited for with a line saying why; the folder goes when it ends. A Ctrl-C during that wait
    leaves the folder and says where it is, without a traceback. (The runs here are not aborted through their
    controllers, so that they surely take the second the exit waits before it says so: their workers start,
    take nothing and return.)"""
    import jobs.early

    monkeypatch.setattr(jobs.early, "abort_run", lambda controller: None)
    # The run's worker starts before it returns: 30 s was not enough once on a CI machine busy with a second test
    # process, so the wait here is longer (the line names the wait it was given).
    monkeypatch.setattr(jobs.early, "ABORT_WAIT_S", 150.0)

    spec = _spec(tmp_path, telemetry_dir, "exit", epochs=1, early_stop=None)
    runs = tmp_path / "runs"
    early = start_early(spec, use_gpu=False, storage_path=str(runs), run_name="exit")
    assert early is not None
    early._embedded = False         # as joined to a cluster
    early.abort()
    early._at_exit()
    err = capsys.readouterr().err
    assert "waiting up to 150 s for the training run started while the data was read to stop" in err, err
    assert "Ctrl-C leaves it" in err, err
    assert early.wait(0) and not (runs / "exit").exists()

    second = start_early(spec, use_gpu=False, storage_path=str(runs), run_name="interrupted")
    assert second is not None
    second._embedded = False
    second.abort()
    waits = []

    def interrupted(timeout=None):
        waits.append(timeout)
        raise KeyboardInterrupt

    second.wait = interrupted
    second._at_exit()
    assert waits == [1.0]
    err = capsys.readouterr().err
    assert f"left {runs}/interrupted: the training run started while the data was read had not stopped" in err, err
    del second.wait
    assert jobs.early.wait_given_up(90)


def test_at_exit_on_the_embedded_ray_the_run_given_up_ends_before_ray_stops(tmp_path, telemetry_dir, ray_session,
                                                                            monkeypatch):
    """Ray stopped under a run's thread still in Ray Train's fit() let that thread reach Ray's shut-down core
    worker, whose C++ side ends the process with exit code 1 (a `trainyard train` refusing its data exited 1, not
    2, in about half its runs). Now the run ends first, then Ray stops. (The session's Ray stands in for the
    embedded one; its stop is recorded instead of done.)"""
    import cluster
    import jobs.early

    spec = _spec(tmp_path, telemetry_dir, "embedded-exit", epochs=1, early_stop=None)
    runs = tmp_path / "runs"
    early = start_early(spec, use_gpu=False, storage_path=str(runs), run_name="embedded-exit")
    assert early is not None
    # A CPU is left for the data: Ray Data's "no free CPU, will hang" warning is kept out (tests/test_output.py).
    from cluster.quiet import RAY_DATA_NO_CPU
    assert any(getattr(f, "start", None) == RAY_DATA_NO_CPU[1]
               for f in logging.getLogger(RAY_DATA_NO_CPU[0]).filters)
    stops = []
    monkeypatch.setattr(cluster, "stop_embedded", lambda: stops.append(early._thread.is_alive()))
    # The order is tested, not the bound: a CI machine busy with a second test process took over 10 s to end it.
    monkeypatch.setattr(jobs.early, "EMBEDDED_ABORT_WAIT_S", 180.0)
    early._embedded = True
    early.abort()
    early._at_exit()
    assert stops == [False], "Ray was stopped while the run given up was still in fit()"
    assert not (runs / "embedded-exit").exists()
    assert wait_given_up(0)


@pytest.mark.ray
def test_a_ctrl_c_while_the_run_trains_ends_the_run_before_ray_stops(tmp_path, telemetry_dir, ray_session,
                                                                      monkeypatch):
    """A Ctrl-C while a run started early trained reached `finish`'s wait on the run's thread, and CPython 3.11's
    Thread.join, so interrupted, marks a running thread stopped: `abort` saw no run (and did nothing to one
    handed its data), the exit waited for none, and the embedded Ray was stopped under the run's fit(): exit
    code 1 (Ray's C++ "The core worker has already been shutdown") or a segmentation fault instead of 130, in 9
    of 29 Ctrl-Cs on 2 cores. Now the run is aborted, Ray stops once it has ended, and its checkpoints stay."""
    import signal
    import threading

    import cluster
    import jobs.early
    from jobs.contracts import CHECKPOINT_PREFIX

    # An xdist worker ignores SIGINT: Python's own handler for the test (a KeyboardInterrupt, as in `trainyard`),
    # and epochs that end, so that a Ctrl-C that never lands fails the test rather than hangs it.
    spec = _spec(tmp_path, telemetry_dir, "ctrl-c", epochs=3_000, early_stop=None, checkpoint_every=1)
    runs, log = tmp_path / "runs", str(tmp_path / "reports.jsonl")
    prepared = prepare(spec, progress=QUIET)
    early = start_early(spec, use_gpu=False, storage_path=str(runs), run_name="ctrl-c",
                        callbacks=[report_recorder(log)])
    assert early is not None

    def ctrl_c_once_it_trains():            # a real SIGINT to the main thread, waiting in `finish`
        while not (os.path.exists(log) and os.path.getsize(log)):
            time.sleep(0.05)
        signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    threading.Thread(target=ctrl_c_once_it_trains, daemon=True).start()
    try:
        with pytest.raises(KeyboardInterrupt):
            early.finish(prepared, progress=QUIET)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert not early.wait(0), "only the driver's wait was interrupted: the run trains on"
    stops = []
    monkeypatch.setattr(cluster, "stop_embedded", lambda: stops.append(early.wait(0)))
    monkeypatch.setattr(jobs.early, "EMBEDDED_ABORT_WAIT_S", 180.0)
    early._embedded = True              # the session's Ray stands in for the embedded one; its stop is recorded
    early.abort()
    early._at_exit()
    assert stops == [True], "Ray was stopped while the interrupted run was still in fit()"
    assert any(p.name.startswith(CHECKPOINT_PREFIX) for p in (runs / "ctrl-c").iterdir()), "its checkpoints go"
    assert wait_given_up(0)


@pytest.mark.ray
def test_train_refusing_its_data_after_the_embedded_ray_started_exits_2(tmp_path, telemetry_dir):
    """The user's side of the test above: data refused by the ingest while the run started early waits (a label
    column left empty: what `validate` reads of the values before Ray cannot see it); the command says so and
    exits 2, without Ray's C++ line, leaving no run folder."""
    import subprocess
    import sys

    import pandas as pd

    rows = pd.read_parquet(sorted(telemetry_dir.glob("*.parquet"))[0]).head(200).assign(failure=None)
    (tmp_path / "data").mkdir()
    rows.to_csv(tmp_path / "data" / "rows.csv", index=False)
    spec = write_spec(tmp_path / "s.yaml", small_spec("refused", tmp_path / "data", tmp_path / "out"))
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    run = subprocess.run([sys.executable, "-m", "trainyard", "train", str(spec)], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=180)
    assert "[ray] starting Ray on this machine" in run.stdout, run.stdout + run.stderr
    assert run.returncode == 2, run.stdout + run.stderr
    assert "label column 'failure' is empty in every row of" in run.stderr, run.stderr
    assert "core worker has already been shutdown" not in run.stderr, run.stderr
    runs = tmp_path / "out" / "ray"
    assert not runs.exists() or not any(runs.iterdir()), sorted(map(str, runs.iterdir()))


def test_a_run_that_ended_with_an_error_keeps_the_folder_its_error_names(tmp_path):
    """`run_train` gives the run up on any error, the run's own failure too ("training failed ... The run is at
    <folder>"): a run that had ended without a checkpoint lost that folder."""
    import threading

    from jobs.early import EarlyRun

    run = object.__new__(EarlyRun)          # a run as `finish` leaves one whose training failed
    run._aborted, run._handed, run._ended, run._handoff = False, True, threading.Event(), None
    run._ended.set()
    run.storage_path, run.run_name = str(tmp_path), "failed"
    (tmp_path / "failed").mkdir()
    run.abort()
    assert (tmp_path / "failed").is_dir() and not run._aborted
