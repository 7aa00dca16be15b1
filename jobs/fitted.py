"""What a fitted preprocessor offers, whatever its kind: the one contract that training, evaluation, the bundle
and serving rely on.

Each kind (`jobs.tabular.Preprocessor`, `jobs.images.ImagePreprocessor`, `jobs.text.TextPreprocessor`) derives
from `FittedPreprocessor` and stores only its own fields; `jobs.preprocess` knows every kind by the `kind` its JSON state names and
loads one back with `load_state`. This module imports none of the kinds, so none of them imports another.
"""
from __future__ import annotations

import difflib
import json
import math
from abc import ABC, abstractmethod
from contextlib import contextmanager
from dataclasses import asdict
from typing import Any, ClassVar, Optional

import numpy as np
import pandas as pd

FEATURES_COLUMN = "features"
LABEL_COLUMN = "label"


def canonical(value: Any) -> Optional[str]:
    """The string a category is stored and matched as: 3, 3.0 and "3" are one category; None is missing."""
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, (float, np.floating)):
        if math.isnan(value):
            return None
        if float(value).is_integer():
            return str(int(value))
        return repr(float(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    return str(value)


# What a true/false feature's value may come as beside a boolean, in a request or a file: 'True', 'FALSE', '1', 0.
_BOOL_WORDS = {"true": True, "false": False, "1": True, "0": False}


def as_bool(value: Any) -> Optional[bool]:
    """The boolean `value` stands for in a true/false feature ('True', ' false', '1', 0), or None when none."""
    if type(value) is bool or isinstance(value, np.bool_):
        return bool(value)
    if type(value) is int and value in (0, 1):
        return bool(value)
    return _BOOL_WORDS.get(value.strip().lower()) if isinstance(value, str) else None


def category_key(value: Any, boolean: bool) -> Optional[str]:
    """`canonical(value)`; for a category of booleans in training (`boolean`: its categories are 'true' and
    'false'), 'True', 'FALSE', 1 and '0' too are the boolean they stand for: a client's "True" was the unknown
    category, and changed the answer with nothing but `unseen_categories` to say so."""
    if boolean and (flag := as_bool(value)) is not None:
        return "true" if flag else "false"
    return canonical(value)


def is_boolean(categories) -> bool:
    """Whether a category's values in training are booleans (`canonical` writes them 'true' and 'false')."""
    return bool(categories) and set(categories) <= {"true", "false"}


def category_counts(value_counts: Optional[dict]) -> dict[str, int]:
    """Ray Data's ValueCounter output ({"values", "counts"}) → {canonical value: count}, missing values (None,
    NaN) left out."""
    out: dict[str, int] = {}
    for v, n in zip(value_counts["values"], value_counts["counts"]) if value_counts else ():
        key = canonical(v)
        if key is not None:
            out[key] = out.get(key, 0) + int(n)
    return out


def encode_classes(classes: list[Any], values: pd.Series) -> np.ndarray:
    """Label values → class ids (positions in `classes`); a value the train split never had is an error."""
    lookup = {canonical(c): i for i, c in enumerate(classes)}
    codes = np.fromiter((lookup.get(canonical(v), -1) for v in values.tolist()), dtype=np.int64, count=len(values))
    if (codes < 0).any():
        bad = values[codes < 0].tolist()[0]   # a Python value: its repr reads 7, not np.int64(7)
        raise ValueError(f"label value {bad!r} was not seen in the train split; classes are {classes}")
    return codes


def decide(decision: Optional[dict], proba: np.ndarray) -> np.ndarray:
    """Class ids from probabilities: the likelier class, or with a decision (`jobs.decision`: a binary
    classifier's cut-off) the positive class at and above its cut-off and the other class below it."""
    if not decision:
        return proba.argmax(axis=1)
    i = int(decision["positive_index"])
    # In float64, as the cut-off was chosen (`jobs.decision.choose`): float32 would round the threshold, and a
    # cut-off halfway between two close scores could land on the lower one.
    return np.where(proba[:, i].astype(np.float64) >= float(decision["threshold"]), i, 1 - i)


def aggregate(ds, *aggs) -> dict:
    """`ds.aggregate(*aggs)` (one row of statistics over the whole dataset), planned as one map task per block
    computing partial aggregates and one reduce task merging them.

    Why not Ray's default: under Ray 2.60's default shuffle strategy (SHUFFLE_V2) an aggregate runs through
    aggregator actors started for it in fresh worker processes, seconds of start-up on a small table, for a
    global aggregate that needs no shuffle at all. The sort-based pull strategy, with no group key, is exactly
    map-side partials plus one merge, on the workers already running, at any data size. The strategy is set
    on the dataset's context for this call only (the context is shared with the datasets derived from it).
    """
    with pull_shuffle(ds):
        return ds.aggregate(*aggs)


@contextmanager
def pull_shuffle(ds):
    """Run `ds`'s next all-to-all step (an aggregate, a groupby) with the sort-based pull shuffle instead of
    Ray 2.60's default SHUFFLE_V2, which starts aggregator actors in fresh worker processes for it (seconds of
    start-up for a step that merges a few partial results): see `aggregate`. Set on the dataset's context
    (shared with the datasets derived from it) for the `with` block only."""
    from ray.data.context import ShuffleStrategy

    context = ds.context
    before = context.shuffle_strategy
    context.shuffle_strategy = ShuffleStrategy.SORT_SHUFFLE_PULL_BASED
    try:
        yield
    finally:
        context.shuffle_strategy = before


class FittedPreprocessor(ABC):
    """A preprocessor fitted on the train split: raw rows in, one packed float32 matrix out.

    Subclasses are dataclasses of JSON-ready fields (their state, `to_dict`/`from_dict`) with a `kind`.
    They provide `task`, `label`, `classes` and `stats` (fields or properties), `feature_dim`,
    `feature_names`, `transform` and `from_dict`; the rest is shared here.
    """

    kind: ClassVar[str]
    task: str                         # "classification" or "regression"
    label: str                        # the label column
    classes: Optional[list[Any]]      # classification: label values, index = class id
    stats: dict                       # fitted statistics kept for the record (train_rows, class_counts...)

    # Training fits a regression target standardised as (y - label_center) / label_scale; a kind that
    # standardises it stores both (tabular), class ids are used as they are.
    label_center: float = 0.0
    label_scale: float = 1.0
    # A binary classifier's cut-off (`jobs.decision.choose`), set while its bundle is written; None: the likelier
    # class. Kept in preprocessor.json beside the classes it decides between.
    decision: Optional[dict] = None

    # ------------------------------------------------------------------ shape
    @property
    @abstractmethod
    def feature_dim(self) -> int:
        """Width of the packed matrix `transform` returns."""

    @property
    @abstractmethod
    def feature_names(self) -> list[str]:
        """The record fields this preprocessor reads."""

    @property
    def output_dim(self) -> int:
        return len(self.classes) if self.task == "classification" else 1

    @property
    def shape(self) -> Optional[list[int]]:
        """The model's input shape when a packed row is an image ([channels, height, width]); None when it is a
        flat feature vector."""
        return None

    # ------------------------------------------------------------------ apply
    @abstractmethod
    def transform(self, df: pd.DataFrame) -> np.ndarray:
        """Raw rows → packed float32 matrix (len(df), feature_dim); the one transform of training and serving."""

    def record_problems(self, records: list[dict]) -> list[str]:
        """What this preprocessor refuses in `records` before `transform` ("record 3: field=...: why"); a kind
        that maps any value to something (imputation, an 'unknown' slot) refuses nothing."""
        return []

    def frame_problems(self, df: pd.DataFrame) -> list[str]:
        """What `transform` would quietly take for missing in `df` (records built by `Bundle.predict`): a value given
        but unreadable as this kind reads it ("record 3: age='forty' is not a number"); none by default."""
        return []

    def encode_labels(self, values: pd.Series) -> np.ndarray:
        if self.task == "classification":
            return encode_classes(self.classes, values)
        y = values.to_numpy(dtype=np.float64)
        return ((y - self.label_center) / self.label_scale).astype(np.float32)

    def decode_regression(self, y: np.ndarray) -> np.ndarray:
        return y.astype(np.float64) * self.label_scale + self.label_center

    def decide(self, proba: np.ndarray) -> np.ndarray:
        """Class ids from a classifier's probabilities, by its decision (`decide`)."""
        return decide(self.decision, proba)

    def transform_batch(self, df: pd.DataFrame) -> dict[str, np.ndarray]:
        """The Ray Data form: a batch of raw rows → {features, label} for training."""
        return {FEATURES_COLUMN: self.transform(df), LABEL_COLUMN: self.encode_labels(df[self.label])}

    # ------------------------------------------------------------------ JSON
    def to_dict(self) -> dict:
        return {"kind": self.kind, "task": self.task, **asdict(self)}

    @classmethod
    @abstractmethod
    def from_dict(cls, d: dict) -> "FittedPreprocessor":
        """The preprocessor from its `to_dict` state (the `kind` key may be there)."""

    @classmethod
    def from_bundle(cls, d: dict, folder) -> "FittedPreprocessor":
        """The preprocessor from its state and the bundle folder `save_files` wrote into (a text preprocessor's
        tokenizer); a kind without files needs the state alone."""
        return cls.from_dict(d)

    def save(self, path) -> None:
        """preprocessor.json: the kind's state (`to_dict`) and, for every kind, a binary cut-off (`decision`,
        which `jobs.preprocess.load_state` reads back)."""
        with open(path, "w") as f:
            json.dump({**self.to_dict(), **({"decision": self.decision} if self.decision else {})}, f, indent=2)

    def save_files(self, folder) -> None:
        """Files this kind keeps in the bundle folder beside preprocessor.json (a tokenizer's); none by default."""


def near_feature(name: str, lowered: dict[str, str]) -> Optional[str]:
    """The feature (of `lowered`: {lowercased name: name}) that `name` nearly spells ('Age', 'agee' for 'age'), or
    None: one rule for `Bundle.predict` and the server's checker under unknown_fields: ignore."""
    low = name.lower()
    # A name half again as long as every feature scores under 0.8 whatever it holds: not looked at (difflib took
    # 2.8 s of a replica over one 7 MB field name).
    if not lowered or len(low) > 1.5 * max(map(len, lowered)):
        return None
    match = difflib.get_close_matches(low, list(lowered), n=1, cutoff=0.8)
    if match:
        return lowered[match[0]]
    # Two neighbouring letters swapped ('tmep' for 'temp') score 0.75 in a short name: a misspelling all the same.
    return next((lowered[f] for f in lowered if len(f) == len(low) > 2 and _one_swap(f, low)), None)


def _one_swap(a: str, b: str) -> bool:
    """`b` is `a` with two neighbouring letters swapped (not digits: 's21' beside 's12' is a sensor of its own)."""
    diff = [i for i, (x, y) in enumerate(zip(a, b)) if x != y]
    return (len(diff) == 2 and diff[1] == diff[0] + 1 and (a[diff[0]], a[diff[1]]) == (b[diff[1]], b[diff[0]])
            and a[diff[0]].isalpha() and a[diff[1]].isalpha())


def misspelt_fields(records: list[dict], features: list[str], label: str) -> list[str]:
    """Fields that are not features but are a near miss of a feature the same record lacks ('Age' or 'agee' for
    'age'): the value would be ignored and the feature imputed. Other extra fields (the label, an id, any column
    of the data the model does not read) stay ignored, so a table's own rows can be passed as they are."""
    extra = set().union(*records) - set(features) - {label}
    if not extra:
        return []           # the usual case (the server's checker has refused or dropped unknown fields): one union
    lowered = {f.lower(): f for f in features}
    near = {}               # extra field → the feature it nearly spells, worked out once per field name
    # A feature's derived field ('photo.width': the server's checker adds an image's size as sent,
    # `jobs.watched.image_size_fields`) is the server's own, not a near miss of a feature 'photo_width'.
    derived = tuple(f"{f}." for f in features)
    for name in sorted(n for n in extra if isinstance(n, str) and not n.startswith(derived)):
        if match := near_feature(name, lowered):
            near[name] = match
    problems = []
    for i, record in enumerate(records):
        if not near:
            break
        for name, feature in list(near.items()):
            if name in record and feature not in record:
                del near[name]              # named once, at its first record
                problems.append(f"record {i}: {name!r} is not a feature of this model; did you mean {feature!r}? "
                                f"(its features: {', '.join(features)})")
    return problems
