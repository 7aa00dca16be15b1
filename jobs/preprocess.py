"""Preprocessing, the stage: every kind of fitted preprocessor by the `kind` its JSON state names, and the
Ray Data form of their one transform.

- ``load_state(d, folder)`` / ``load(path)``: a fitted preprocessor back from its JSON state (a bundle's
  preprocessor.json, and the files it keeps in the bundle folder), whatever its kind;
- ``fit(train_ds, data_spec, ...)``: fit the tabular preprocessor (`jobs.tabular`); images fit theirs with
  `jobs.images.fit`, text with `jobs.text.fit`;
- ``apply(ds, pre)``: raw rows → {features, label} in Ray Data, through `pre.transform`, the function serving
  applies to records.

What every kind offers is `jobs.fitted.FittedPreprocessor`; the kinds live in `jobs.tabular`, `jobs.images`
and `jobs.text`, which import only that contract (and `jobs.text` the tabular kind for its table
columns), not this module.
"""
from __future__ import annotations

import json
import os
from typing import Any

from cluster.errors import BadInput
from jobs.fitted import FEATURES_COLUMN, LABEL_COLUMN, FittedPreprocessor, canonical, encode_classes
from jobs.images import ImagePreprocessor
from jobs.tabular import CategoricalState, NumericState, Preprocessor, fit
from jobs.text import TextPreprocessor

KINDS: dict[str, type[FittedPreprocessor]] = {cls.kind: cls for cls in (Preprocessor, ImagePreprocessor,
                                                                        TextPreprocessor)}


def load_state(d: dict, folder=None) -> FittedPreprocessor:
    """A fitted preprocessor from its JSON state, and from the files it keeps in its bundle `folder` when
    given (a text preprocessor's tokenizer). States written before the kind was stored are tabular."""
    kind = d.get("kind", Preprocessor.kind)
    if kind not in KINDS:
        raise BadInput(f"preprocessor state of unknown kind {kind!r}: this trainyard reads {sorted(KINDS)}; "
                       "retrain the bundle with it, or load it with the trainyard that wrote it")
    d = dict(d)
    decision = d.pop("decision", None)      # a binary classifier's cut-off (`FittedPreprocessor.save`)
    pre = KINDS[kind].from_dict(d) if folder is None else KINDS[kind].from_bundle(d, folder)
    if decision is not None:
        _check_decision(decision, pre)
    pre.decision = decision
    return pre


def _check_decision(d: Any, pre: FittedPreprocessor) -> None:
    """A cut-off state that `decide` can apply: the positive class's index among two classes and a threshold."""
    try:
        ok = (len(pre.classes or []) == 2 and int(d["positive_index"]) in (0, 1)
              and 0.0 <= float(d["threshold"]) <= 1.0)
    except (TypeError, KeyError, ValueError):
        ok = False
    if not ok:
        raise BadInput(f"preprocessor.json: decision {d!r} is not a cut-off between two classes (positive_index 0 "
                       "or 1, threshold 0..1); re-export the bundle with trainyard train")


def load(path) -> FittedPreprocessor:
    """A bundle's preprocessor.json (and its files in the same folder)."""
    with open(path) as f:
        return load_state(json.load(f), os.path.dirname(os.path.abspath(path)))


def apply(ds, pre: FittedPreprocessor):
    """Ray Data form of `pre.transform`: raw rows → {features: float32[d], label}."""
    return ds.map_batches(pre.transform_batch, batch_format="pandas")


__all__ = ["KINDS", "load_state", "load", "fit", "apply", "FittedPreprocessor", "Preprocessor", "NumericState",
           "CategoricalState", "ImagePreprocessor", "TextPreprocessor", "canonical", "encode_classes",
           "FEATURES_COLUMN", "LABEL_COLUMN"]
