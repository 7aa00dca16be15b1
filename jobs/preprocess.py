"""Preprocessing, the stage: every kind of fitted preprocessor by the `kind` its JSON state names, and the
Ray Data form of their one transform.

- ``load_state(d)`` / ``load(path)``: a fitted preprocessor back from its JSON state (a bundle's
  preprocessor.json), whatever its kind;
- ``fit(train_ds, data_spec, ...)``: fit the tabular preprocessor (`jobs.tabular`); images fit theirs with
  `jobs.images.fit`;
- ``apply(ds, pre)``: raw rows → {features, label} in Ray Data, through `pre.transform`, the function serving
  applies to records.

What every kind offers is `jobs.fitted.FittedPreprocessor`; the kinds live in `jobs.tabular` and
`jobs.images`, which import only that contract, not each other nor this module.
"""
from __future__ import annotations

import json

from cluster.errors import BadInput
from jobs.fitted import FEATURES_COLUMN, LABEL_COLUMN, FittedPreprocessor, canonical, encode_classes
from jobs.images import ImagePreprocessor
from jobs.tabular import CategoricalState, NumericState, Preprocessor, fit

KINDS: dict[str, type[FittedPreprocessor]] = {cls.kind: cls for cls in (Preprocessor, ImagePreprocessor)}


def load_state(d: dict) -> FittedPreprocessor:
    """A fitted preprocessor from its JSON state. States written before the kind was stored are tabular."""
    kind = d.get("kind", Preprocessor.kind)
    if kind not in KINDS:
        raise BadInput(f"preprocessor state of unknown kind {kind!r}: this trainyard reads {sorted(KINDS)}; "
                       "retrain the bundle with it, or load it with the trainyard that wrote it")
    return KINDS[kind].from_dict(d)


def load(path) -> FittedPreprocessor:
    with open(path) as f:
        return load_state(json.load(f))


def apply(ds, pre: FittedPreprocessor):
    """Ray Data form of `pre.transform`: raw rows → {features: float32[d], label}."""
    return ds.map_batches(pre.transform_batch, batch_format="pandas")


__all__ = ["KINDS", "load_state", "load", "fit", "apply", "FittedPreprocessor", "Preprocessor", "NumericState",
           "CategoricalState", "ImagePreprocessor", "canonical", "encode_classes", "FEATURES_COLUMN",
           "LABEL_COLUMN"]
