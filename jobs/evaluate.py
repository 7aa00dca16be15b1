"""Evaluation on the test split, through the bundle's own prediction path.

The test metrics are the registry's for the task and label (`jobs.spec.METRICS`, computed by `jobs.metrics`),
named as validation names them less the `val_` prefix, so a bundle's val and test metrics line up."""
from __future__ import annotations

import numpy as np
import pandas as pd

from jobs import metrics as M
from jobs.fitted import canonical
from jobs.spec import CLASSIFICATION


def score(bundle, frames, label: str) -> dict:
    """Test metrics of `bundle` over an iterable of raw DataFrames (features + label)."""
    pre = bundle.preprocessor
    y_true, probas, preds, answered = [], [], [], []
    for df in frames:
        if not len(df):
            continue
        out = bundle.predict_frame(df)
        if pre.task == CLASSIFICATION:
            lookup = {canonical(c): i for i, c in enumerate(pre.classes)}
            y = np.array([lookup.get(canonical(v), -1) for v in df[label].tolist()], dtype=np.int64)
            keep = y >= 0  # a class absent from train cannot be scored by this model
            y_true.append(y[keep])
            probas.append(np.asarray(out["probabilities"], dtype=np.float64)[keep])
            answered.append(np.asarray(out["class_index"], dtype=np.int64)[keep])   # by the bundle's decision
        else:
            y_true.append(df[label].to_numpy(dtype=np.float64))
            preds.append(np.asarray(out["predictions"], dtype=np.float64))
    if not y_true:
        return {}
    if pre.task == CLASSIFICATION:
        return M.classification_metrics(np.concatenate(y_true), np.concatenate(probas),
                                        y_pred=np.concatenate(answered))
    return M.regression_metrics(np.concatenate(y_true), np.concatenate(preds))


def evaluate(bundle, test_ds, label: str, batch_size: int = 4096) -> dict:
    """Stream the raw test split out of Ray Data and score it."""
    return score(bundle, test_ds.iter_batches(batch_size=batch_size, batch_format="pandas"), label)


def score_records(bundle, records: list[dict], label: str) -> dict:
    """The same scoring over plain records, as a user of `bundle.predict` holds them."""
    return score(bundle, [pd.DataFrame.from_records(records)], label)
