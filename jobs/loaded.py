"""A bundle loaded for prediction (`jobs.bundle.load` makes one): its model, preprocessor and documents, and the
one prediction path that evaluation, `trainyard predict` and every Serve replica share. Also importable as
`jobs.bundle.Bundle` and `jobs.bundle.BundleError`."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd
import torch

from cluster.errors import BadInput
from jobs.columns import Fields, frame_fields
from jobs.fitted import FittedPreprocessor, misspelt_fields

MAX_SHOWN_PROBLEMS = 20         # a refusal of records names this many problems at most


class BundleError(BadInput):
    """A bundle that cannot be loaded, or input it cannot predict on; the message says which file/field."""


@dataclass
class Bundle:
    path: Path
    model: torch.nn.Module
    model_config: dict
    preprocessor: FittedPreprocessor
    schema: dict
    metrics: dict
    lineage: dict
    profile: Optional[dict] = None      # profile.json (`jobs.profile`); None for a bundle written before it

    @property
    def task(self) -> str:
        return self.preprocessor.task

    @property
    def version(self) -> str:
        return str(self.lineage.get("version") or self.lineage.get("created_at", "unknown"))

    # The one prediction path: records → DataFrame → Preprocessor.transform → model → decoded output.
    def predict_frame(self, df: pd.DataFrame) -> dict:
        return self.predict_features(self.preprocessor.transform(df))

    def predict_features(self, features: np.ndarray) -> dict:
        """Predictions for rows the preprocessor already packed (`transform`): the model and the decoding."""
        x = torch.from_numpy(features)
        step = getattr(self.model, "chunk_rows", None) or max(len(x), 1)   # a transformer: rows at a time
        with torch.inference_mode():
            out = torch.cat([self.model(x[i:i + step]).float() for i in range(0, len(x), step)]) if len(x) \
                else self.model(x).float()
        if self.task == "classification":
            proba = torch.softmax(out, dim=1).numpy()
            idx = self.preprocessor.decide(proba)
            classes = self.preprocessor.classes
            return {"predictions": [classes[i] for i in idx], "probabilities": proba.tolist(), "class_index": idx}
        y = self.preprocessor.decode_regression(out.squeeze(1).numpy())
        return {"predictions": y.tolist()}

    def __repr__(self) -> str:
        # The dataclass's own repr printed every document whole: 16,379 characters for a notebook's `model`.
        return f"<trainyard bundle {self.path} ({self.task}, {len(self.preprocessor.feature_names)} features)>"

    def predict(self, records: "list[dict] | pd.DataFrame", notes: bool = True) -> dict:
        """Predict for a list of records ({feature: value}), or a DataFrame's rows; missing fields are imputed,
        unseen categories map to the 'unknown' slot (or are rejected when the bundle says unknown_category:
        error). Fields that are not features are ignored (a row's label, an id), except one that looks like a
        misspelt feature the record lacks; a numeric feature's value that is not a number is refused, not
        imputed. `notes`: add what /predict says beside the answers (`_notes`); the server, which says them
        itself, asks for none."""
        if isinstance(records, pd.DataFrame):   # its rows, checked as records are (a NaN is a missing value)
            # Read from its columns where they hold what its records would (`frame_fields`): to_dict("records")
            # cost more than the checks, the transform and the notes together.
            fields = frame_fields(records, self.preprocessor.feature_names) \
                if self.preprocessor.kind == "tabular" else None
            if fields is not None:
                return self._predict_checked(records, fields, [dict.fromkeys(records.columns)], notes)
            records = records.to_dict("records")
        if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
            raise BundleError(f"records must be a list of objects ({{feature: value, ...}}) or a pandas DataFrame, "
                              f"not {type(records).__name__}")
        # An explicit index: from_records([{}]) would build zero rows for a record with every field missing.
        df = pd.DataFrame(records, index=range(len(records))) if records else None
        return self._predict_checked(df, Fields(records), records, notes)

    def _predict_checked(self, df: Optional[pd.DataFrame], fields: Fields, keys: list[dict], notes: bool) -> dict:
        """`predict` of the rows of `df` (`fields`: their values a field at a time; `keys`: records with the
        fields they send, or a frame's one record of its columns, for the misspelt-field check)."""
        if df is None or not len(df):
            return {"predictions": [], **({"probabilities": []} if self.task == "classification" else {})}
        problems = misspelt_fields(keys, self.preprocessor.feature_names, self.preprocessor.label)
        # A text bundle's own checks read the records (the frame's go through `to_dict` for it).
        problems += self.preprocessor.record_problems(fields if fields.records is None else fields.records)
        problems += self.preprocessor.frame_problems(df)
        if problems:
            shown = problems[:MAX_SHOWN_PROBLEMS]
            more = len(problems) - len(shown)
            raise BundleError("; ".join(shown) + (f"; and {more} more" if more else ""))
        out = self.predict_frame(df)
        out.pop("class_index", None)
        return {**out, **self._notes(fields)} if notes else out

    def _notes(self, records: "list[dict] | Fields") -> dict:
        """What the server's /predict says beside the answers (`out_of_range`, `unseen_categories`, `imputed`), said
        here too: `bundle.predict` answered an age of -500 with nothing to say it lay far outside training."""
        from jobs.tabular import missing_fields, outside_range, training_ranges, unseen_categories

        notes, records = {}, Fields.of(records)     # each field's values read once, for the three notes
        if outside := outside_range(training_ranges(self.preprocessor), records):
            notes["out_of_range"] = outside
        known = {f["name"]: set(f.get("categories") or []) for f in self.schema.get("features", [])
                 if f.get("type") == "category"}
        if known and self.schema.get("unknown_category") != "error" and (unseen := unseen_categories(known, records)):
            notes["unseen_categories"] = unseen
        features = self.schema.get("features", [])
        blank = {f["name"] for f in features if f.get("type") == "text" and not f.get("required", True)}
        imputable = [f["name"] for f in features if f.get("type") in ("number", "category") or f["name"] in blank]
        every, imputed = missing_fields(imputable, records, blank=blank)
        notes.update({"imputed_in_every_record": every} if every else {}, **({"imputed": imputed} if imputed else {}))
        if hasattr(self.preprocessor, "cut_records") and (cut := self.preprocessor.cut_records(records.records)):
            notes["truncated"] = cut        # text past max_length tokens: the model read its beginning alone
        return notes
