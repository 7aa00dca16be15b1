"""What crosses a boundary of training: prepared data (pipeline → train), the config a Ray Train worker
receives (driver → workers) and the state a checkpoint holds (workers → driver, tuning, a resumed run).

Each is one type here; the plain dicts that travel (Ray's `train_loop_config`, the `state.pt` checkpoint file)
are made and read only through their `to_dict`/`from_dict`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from jobs.preprocess import Preprocessor


@dataclass
class PreparedData:
    """Everything training needs, computed once (`jobs.pipeline.prepare`): the ingest result, fitted
    preprocessing, packed splits. Tuning shares one across its trials, so every trial sees the same rows."""
    ingest: Any                   # jobs.ingest.IngestResult
    preprocessor: Preprocessor
    train_ds: Any                 # ray.data.Dataset of {features, label}, materialized
    val_ds: Any
    test_raw: Any                 # raw test rows (not transformed): evaluated through the bundle's code path

    @property
    def task(self) -> str:
        return self.preprocessor.task
