"""A checkpoint cut short (a full disk, a kill while it was copied) does not end a run: resuming falls back to the
checkpoint before it, which Ray Train keeps (num_to_keep=2), and says so; a run with no readable checkpoint fails
naming each one tried. The unit tests read folders of state files; the last one trains and resumes on real Ray."""
import json
from pathlib import Path

import pytest
import torch

from jobs.contracts import STATE_FILE, CheckpointError, TrainState
from jobs.train import last_state


def _state(epoch: int) -> TrainState:
    return TrainState(model={"w": torch.full((2,), float(epoch))}, optimizer={}, epoch=epoch,
                      history=[{"epoch": e + 1} for e in range(epoch + 1)], best=None, best_epoch=-1, bad_epochs=0,
                      best_state={}, best_val={})


def _truncate(folder: Path) -> None:
    state = folder / STATE_FILE
    state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])


def _checkpoints(run: Path) -> list[Path]:
    """A Train run's checkpoint folders, oldest first (beside them: checkpoint_manager_snapshot.json)."""
    return sorted(p for p in run.glob("checkpoint_*") if p.is_dir())


@pytest.fixture
def run_dir(tmp_path) -> Path:
    """A Train run's folder with the checkpoints of epochs 1, 2 and 3 (0-based 0..2), oldest first by name."""
    for epoch in range(3):
        folder = tmp_path / f"checkpoint_2026-01-01_00-00-0{epoch}.000000"
        folder.mkdir()
        _state(epoch).save(folder)
    return tmp_path


def test_a_truncated_latest_checkpoint_falls_back_to_the_one_before(run_dir):
    *_, before, latest = sorted(run_dir.iterdir())
    _truncate(latest)
    state, source, skipped = TrainState.load_newest(str(latest))
    assert state.epoch == 1 and source == str(before)
    assert len(skipped) == 1 and skipped[0].startswith(f"{latest}: ")
    assert last_state(run_dir).epoch == 1


def test_a_whole_latest_checkpoint_is_the_one_read(run_dir):
    latest = max(run_dir.iterdir())
    state, source, skipped = TrainState.load_newest(str(latest))
    assert (state.epoch, source, skipped) == (2, str(latest), [])


def test_no_readable_checkpoint_is_a_clear_error(run_dir):
    folders = sorted(run_dir.iterdir())
    for folder in folders:
        _truncate(folder)
    with pytest.raises(CheckpointError) as err:
        TrainState.load_newest(str(folders[-1]))
    message = str(err.value)
    assert all(str(f) in message for f in folders) and "cannot go on from one" in message
    assert last_state(run_dir) is None


@pytest.mark.ray
@pytest.mark.slow
def test_a_resumed_run_falls_back_past_a_truncated_checkpoint(ray_session, tmp_path, telemetry_dir):
    """Train 3 epochs (a checkpoint each; Ray keeps epochs 2 and 3), cut epoch 3's state file in half, and run
    the same run again to 5 epochs: it resumes from epoch 2's checkpoint and trains epochs 3 to 5. With every
    checkpoint cut, resuming fails naming them."""
    import ray.train

    from jobs.pipeline import prepare, storage_root
    from jobs.spec import load_spec
    from jobs.train import TrainError, fit
    from tests.conftest import small_spec, write_spec

    log = tmp_path / "reports.jsonl"

    class Recorder(ray.train.UserCallback):     # runs in the run's controller: pickled by value
        def after_report(self, run_context, metrics, checkpoint):
            with open(log, "a") as f:
                f.write(json.dumps({"epoch": metrics[0]["epoch"], "checkpoint": checkpoint is not None}) + "\n")

    def spec_for(epochs: int, **train):
        return load_spec(write_spec(tmp_path / f"s{epochs}.yaml", small_spec(
            "fallback", telemetry_dir, tmp_path / "out", epochs=epochs, early_stop=None, checkpoint_every=1,
            **train)))

    def recorded() -> list[int]:
        epochs = [json.loads(line)["epoch"] for line in log.read_text().splitlines()]
        log.unlink()
        return epochs

    quiet = lambda *_: None
    first = spec_for(3)
    prepared = prepare(first, progress=quiet)
    storage = storage_root(first)
    fit(first, prepared, storage_path=storage, run_name="run", progress=quiet, callbacks=[Recorder()])
    assert recorded() == [1, 2, 3]
    run = Path(storage) / "run"
    kept = _checkpoints(run)
    assert [TrainState.load(p).epoch + 1 for p in kept] == [2, 3]
    _truncate(kept[-1])

    outcome = fit(spec_for(5), prepared, storage_path=storage, run_name="run", progress=quiet,
                  callbacks=[Recorder()])
    assert recorded() == [3, 4, 5]            # from epoch 2's checkpoint: epoch 3 trains again
    assert [r["epoch"] for r in outcome.history] == [1, 2, 3, 4, 5]
    assert [r["resumes"] for r in outcome.history] == [0, 0, 1, 1, 1]

    for folder in _checkpoints(run):
        _truncate(folder)
    with pytest.raises(TrainError, match="no checkpoint of the run at .* can be read"):
        # max_failures=0: a restarted worker would find the same checkpoints
        fit(spec_for(6, max_failures=0), prepared, storage_path=storage, run_name="run", progress=quiet)


def test_a_search_exports_the_best_trial_whose_checkpoints_read_and_says_what_it_passed_over(tmp_path):
    """The best trial's checkpoints all cut short failed the search with "'NoneType' object has no attribute
    'best_state'", on every --resume; the next best is taken, and a skipped newest checkpoint is said."""
    from tuning import TuneError
    from tuning.experiment import _readable
    from tuning.report import TrialRecord

    def trial(name: str, epochs: int, cut: int) -> TrialRecord:
        run = tmp_path / name
        for epoch in range(epochs):
            folder = run / f"checkpoint_2026-01-01_00-00-0{epoch}.000000"
            folder.mkdir(parents=True)
            _state(epoch).save(folder)
        for folder in _checkpoints(run)[len(_checkpoints(run)) - cut:]:
            _truncate(folder)
        return TrialRecord(trial_id=name, status="completed", config={}, history=[], train_run=str(run))

    said = []
    best, state = _readable([trial("a", 2, cut=2), trial("b", 3, cut=1), trial("c", 3, cut=0)], said.append)
    assert best.trial_id == "b" and state.epoch == 1
    assert said[0].startswith("[tune] warning: trial a ranked best of those left, but no checkpoint of its run can "
                              "be read (") and said[0].endswith("); taking the next one")
    assert said[1].startswith("[tune] note: trial b: ") and said[1].endswith("; its state of epoch 2 is used")
    with pytest.raises(TuneError, match=r"no checkpoint of any trial that left a model can be read \(1 trial"):
        _readable([trial("d", 1, cut=1)], said.append)


def test_an_output_folder_removed_mid_run_is_said_as_such(tmp_path):
    """`rm -rf` of the output while a run trained was said as Ray's "A local path on the head node is not accessible
    by worker nodes" (after two retries), then as no readable checkpoint."""
    from jobs.train import folder_id, train_failure

    out = tmp_path / "out"
    out.mkdir()
    storage = str(out / "ray")
    before = folder_id(storage)
    ray_error = RuntimeError("Unable to set up cluster storage ... A local path on the head node is not accessible")
    assert str(train_failure(ray_error, storage, "train-1", before)) == (
        f"training failed: {ray_error}. The run is at {storage}/train-1")
    out.rename(tmp_path / "elsewhere")                    # removed: missing, or a new folder in its place
    for replaced in (False, True):
        if replaced:
            out.mkdir()
        said = str(train_failure(ray_error, storage, "train-1", before))
        assert said.startswith(f"training failed: the output folder {out} was removed (or replaced) while the run "
                               "trained, its checkpoints with it (Ray said: Unable to set up"), said
    assert folder_id("s3://bucket/runs/x/ray") is None
