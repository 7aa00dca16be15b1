"""Data-parallel workers each take a contiguous part of the packed train split: rows that arrive grouped (sorted
by label, an image folder read class by class) must be mixed first, or each worker trains on a few classes."""
import numpy as np
import pandas as pd
import pytest

from jobs.pipeline import prepare
from jobs.spec import load_spec
from tests.conftest import write_spec


def _sorted_by_label(folder, rows: int = 240, classes: int = 4):
    folder.mkdir()
    rng = np.random.default_rng(0)
    label = np.repeat(np.arange(classes), rows // classes)
    frame = pd.DataFrame({"x1": rng.normal(size=rows) + label, "x2": rng.normal(size=rows), "kind": label})
    for i, rows_of_part in enumerate(np.array_split(np.arange(rows), 3)):   # three shards, each a run of labels
        frame.iloc[rows_of_part].to_csv(folder / f"part-{i}.csv", index=False)
    return folder


@pytest.mark.parametrize("workers", [2])
def test_two_workers_shards_each_hold_every_class_and_the_order_is_seeded(tmp_path, ray_session, workers):
    data = _sorted_by_label(tmp_path / "sorted")
    spec = load_spec(write_spec(tmp_path / "s.yaml", {
        "name": "mix", "data": {"path": str(data), "label": "kind"},
        "model": {"hidden": [8]}, "train": {"epochs": 1, "workers": workers}, "output": str(tmp_path / "out")}))
    quiet = lambda *_: None
    first, second = prepare(spec, progress=quiet), prepare(spec, progress=quiet)
    labels = first.train_ds.to_pandas()["label"].to_numpy()
    for shard in np.array_split(labels, workers):                # what each worker's contiguous part holds
        shares = np.bincount(shard.astype(int), minlength=4) / len(shard)
        assert shares.min() > 0.1, shares                        # sorted input gives one worker classes 0-1 only
    pd.testing.assert_frame_equal(first.train_ds.to_pandas(), second.train_ds.to_pandas())
