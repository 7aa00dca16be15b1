"""What preparing data starts on the cluster, beyond the tasks that read and transform it.

- The fit's statistics come from one Ray Data aggregate, planned as per-block partial aggregates merged by one
  reduce task on the workers already running (`jobs.fitted.aggregate`), not through Ray 2.60's default
  SHUFFLE_V2 plan, whose map tasks run in a worker pool of their own (fresh processes: seconds on 2 cores).
- Reading Parquet starts one footer-reading actor per 10 files (`jobs.ingest.read_parquet`), not Ray 2.60's 32
  per read whatever the number of files.
"""
import os

import numpy as np
import pandas as pd
import pytest

from jobs.fitted import aggregate
from jobs.ingest import ingest
from jobs.spec import validate_spec

pytestmark = pytest.mark.usefixtures("ray_session")


def _where_blocks_were_aggregated():
    """An aggregation listing, per accumulate call, whether it ran in a dedicated shuffle-map worker: Ray Data
    2.60 starts those with RAY_DATA_SHUFFLE_MAP_WORKER=1 in their environment (hash_shuffle_v2.py)."""
    from ray.data.aggregate import AggregateFn

    def seen(acc, block):
        import os
        return acc + [os.environ.get("RAY_DATA_SHUFFLE_MAP_WORKER") == "1"]

    return AggregateFn(init=lambda _: [], accumulate_block=seen, merge=lambda a, b: a + b, name="in_shuffle_worker")


def test_aggregate_is_per_block_partials_merged_once_on_the_running_workers():
    import ray
    from ray.data.aggregate import Count, Mean, Std

    ds = ray.data.from_items([{"x": float(i)} for i in range(100)], override_num_blocks=4)
    before = ds.context.shuffle_strategy
    stats = aggregate(ds, Count(), Mean("x"), Std("x", ddof=0), _where_blocks_were_aggregated())
    assert stats["in_shuffle_worker"] == [False] * 4          # one partial per block, none in a shuffle worker
    x = np.arange(100.0)
    assert stats["count()"] == 100
    assert stats["mean(x)"] == pytest.approx(x.mean()) and stats["std(x)"] == pytest.approx(x.std())
    assert ds.context.shuffle_strategy == before               # the dataset's context is as it was


def _footer_readers() -> int:
    from cluster import ray_compat
    return sum(1 for a in ray_compat.actor_table() if a.class_name == "FooterReader")


@pytest.mark.parametrize("files,readers", [(2, 1), (12, 2)])
def test_reading_parquet_starts_one_footer_reader_per_ten_files(tmp_path, files, readers):
    rng = np.random.default_rng(0)
    for i in range(files):
        pd.DataFrame({"a": rng.normal(size=20), "y": np.arange(20) % 2}).to_parquet(tmp_path / f"p{i:02d}.parquet")
    spec = validate_spec({"name": "t", "data": {"path": str(tmp_path), "label": "y"}}).data
    before = _footer_readers()
    assert ingest(spec, progress=lambda *_: None).rows_read == 20 * files
    assert _footer_readers() - before == readers
    assert "RAY_DATA_PARQUET_FOOTER_NUM_ACTORS" not in os.environ      # set for the read's planning only
