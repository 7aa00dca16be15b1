"""A search on the embedded Ray starts no Ray Train preemption watcher for its trials (nothing there is ever
drained): one actor process less per trial, and none of the watcher's lines."""
import os
import subprocess
import sys

import pytest

from jobs.train import PREEMPTION_ENV
from tests.conftest import small_spec, write_spec
from tests.train_helpers import actors_by_class
from trainyard.cli import main


@pytest.mark.slow
def test_trials_on_embedded_ray_start_no_preemption_watcher(tmp_path, telemetry_dir, ray_session, monkeypatch):
    from cluster import is_embedded

    assert is_embedded()
    monkeypatch.delenv(PREEMPTION_ENV, raising=False)
    spec = {**small_spec("no-watcher", telemetry_dir, tmp_path / "out", epochs=1),
            "tune": {"samples": 2, "scheduler": "none", "lr": {"loguniform": [1e-3, 1e-1]}}}
    before = actors_by_class()
    assert main(["tune", str(write_spec(tmp_path / "s.yaml", spec))]) == 0
    started = actors_by_class() - before
    assert started["TrainController"] == 2 and started["PreemptionWatcher"] == 0, started


def test_row_channel_hands_over_every_row_in_order_the_last_one_too(ray_session, tmp_path):
    """A trial's Train run reports through RowChannel: every row reaches the trial, in order, even one written
    just before the run returns (Ray's queue-actor bridge could lose that one), and an error comes after them."""
    from types import SimpleNamespace

    from tuning.rows import forward_rows, run_reporting

    def train(channel):
        for epoch in range(1, 4):
            channel.after_report(None, [{"epoch": epoch, "val_loss": 1.0 / epoch}, {"epoch": -1}],
                                 SimpleNamespace(path=f"/ckpt/{epoch}") if epoch == 3 else None)
        return "done"

    got = []
    assert run_reporting(train, got.append, wait_s=10.0) == "done"     # no wait catches a row: the last read does
    assert got == [{"epoch": 1, "val_loss": 1.0}, {"epoch": 2, "val_loss": 0.5},
                   {"epoch": 3, "val_loss": 1.0 / 3, "checkpoint_path": "/ckpt/3"}]

    def fails(channel):
        channel.after_report(None, [{"epoch": 1}], None)
        raise ValueError("worker died")

    got.clear()
    with pytest.raises(ValueError, match="worker died"):
        run_reporting(fails, got.append)
    assert got == [{"epoch": 1}]

    # A line still being written is left for the next read.
    rows = tmp_path / "rows.jsonl"
    rows.write_bytes(b'{"epoch": 1}\n{"epo')
    got.clear()
    offset = forward_rows(str(rows), 0, got.append)
    assert got == [{"epoch": 1}] and offset == len(b'{"epoch": 1}\n')
    rows.write_bytes(b'{"epoch": 1}\n{"epoch": 2}\n')
    assert forward_rows(str(rows), offset, got.append) == rows.stat().st_size and got == [{"epoch": 1}, {"epoch": 2}]


def test_numpy_and_torch_metrics_pass_as_numbers_and_anything_else_is_named(ray_session):
    import numpy as np
    import torch

    from tuning.rows import run_reporting

    got = []
    run_reporting(lambda channel: channel.after_report(
        None, [{"val_loss": np.float32(0.5), "epoch": np.int64(2), "acc": torch.tensor(0.25),
                "per_class": np.array([1.0, 2.0])}], None), got.append)
    assert got == [{"val_loss": 0.5, "epoch": 2, "acc": 0.25, "per_class": [1.0, 2.0]}]
    assert type(got[0]["epoch"]) is int

    class Odd:
        pass

    got.clear()
    with pytest.raises(TypeError, match="reported metric holds .*Odd"):
        run_reporting(lambda channel: channel.after_report(None, [{"epoch": 1, "x": Odd()}], None), got.append)
    assert got == []             # nothing half-written


def test_a_trials_row_file_goes_with_it_and_a_dead_trials_with_the_next(ray_session):
    from tuning.rows import rows_folder, run_reporting

    seen = []
    run_reporting(lambda channel: seen.append(channel.path), lambda row: None)
    assert seen and not os.path.exists(seen[0])
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    leftover = rows_folder() / f"{gone.stdout.strip()}-abc.jsonl"     # a trial process Tune ended mid-run
    leftover.write_text('{"epoch": 1}\n')
    mine = rows_folder() / f"{os.getpid()}-abc.jsonl"                 # a live trial's
    mine.write_text("")
    try:
        rows_folder()
        assert not leftover.exists() and mine.exists()
    finally:
        mine.unlink(missing_ok=True)


def test_the_row_files_folder_is_this_users_alone(tmp_path, monkeypatch):
    """One folder for every user, made 0755 by the first, failed every trial of the next (PermissionError in
    mkstemp); a folder or link put there by someone else is refused, not written into."""
    import stat
    import tempfile

    from tuning.rows import rows_folder
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    folder = rows_folder()
    assert folder == tmp_path / f"trainyard-trial-rows-{os.getuid()}"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    folder.chmod(0o755)                                   # readable by others
    with pytest.raises(PermissionError, match=r"not a folder of this user's alone .* drwxr-xr-x.*set TMPDIR"):
        rows_folder()
    folder.rmdir()
    (tmp_path / "elsewhere").mkdir(mode=0o700)
    folder.symlink_to(tmp_path / "elsewhere")             # a link planted at the name
    with pytest.raises(PermissionError, match="not a folder of this user's alone"):
        rows_folder()


def test_the_row_channel_does_not_bring_torch_into_the_controller():
    """The Train controller unpickles RowChannel, so imports its module: a one-worker run's controller never needs
    torch (`jobs.train.default_trainer`), and one import of it costs ~1 CPU-s per trial on 2 cores."""
    probe = "import sys; from tuning.rows import RowChannel; print('torch' in sys.modules)"
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "False"
