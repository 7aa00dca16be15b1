"""schema.json: what a bundle takes (each input field: its name, type and what happens when it is missing) and
what it answers (the label, its classes, the task). Serving builds its OpenAPI and its request checks from it.

    tabular: {"input": "tabular", "features": [number fields (with the train split's range, "trained_on": [min,
              max]) and category fields], "unknown_category", ...}
    image:   {"input": "image", "image": {field, size, channels, accepted, pixels}, "features": [the image field]}
    text:    {"input": "text", "features": [text fields ({"name", "type": "text", "max_length", "required"}),
              then the table's number and category fields], "unknown_category", ...}
"""
from __future__ import annotations

from typing import Optional

from jobs.fitted import FittedPreprocessor


def input_schema(pre: FittedPreprocessor, dtypes: Optional[dict[str, str]] = None) -> dict:
    """The schema of a fitted preprocessor's input; `dtypes`: the columns' Arrow types as read at ingest."""
    kind = getattr(pre, "kind", "tabular")
    if kind == "image":
        from jobs.images import ENCODINGS
        return {"input": "image", "task": pre.task, "label": _label(pre),
                "image": {"field": pre.column, "size": pre.size, "channels": pre.channels,
                          "accepted": ENCODINGS,
                          "pixels": f"[{pre.size[0]}][{pre.size[1]}]" + ("" if pre.channels == 1 else f"[{pre.channels}]")
                                    + " values 0..255"},
                "features": [{"name": pre.column, "type": "image", "required": True}]}
    table = pre.tabular if kind == "text" else pre
    text = pre.schema_features() if kind == "text" else []
    return {"input": kind, "task": pre.task, "label": _label(pre),
            "features": text + _table_features(table, dtypes or {}), "unknown_category": table.unknown_category}


def _label(pre: FittedPreprocessor) -> dict:
    """The label, its classes, and a binary classifier's cut-off (`jobs.decision`): which class it answers at and
    above which probability, and how the cut-off was chosen."""
    d = pre.decision
    return {"name": pre.label, "classes": pre.classes,
            **({"decision": {k: d[k] for k in ("positive", "threshold", "rule")}} if d else {})}


def _table_features(pre, dtypes: dict[str, str]) -> list[dict]:
    from jobs.tabular import training_ranges

    # trained_on: the train split's min and max; a served value outside it is answered with a note (serving).
    ranges = {name: [lo, hi] for name, lo, hi in training_ranges(pre)}
    features = [{"name": s.name, "type": "number", "dtype": dtypes.get(s.name, "double"), "required": False,
                 "missing": f"imputed with {s.fill:g}", "typical": float(f"{s.fill:.6g}"),
                 **({"trained_on": ranges[s.name]} if s.name in ranges else {})} for s in pre.numeric]
    features += [{"name": s.name, "type": "category", "dtype": dtypes.get(s.name, "string"), "required": False,
                  "categories": list(s.categories),
                  # Of how many values in the train split: a value outside `categories` may be one training held.
                  **({"kept_of": seen} if (seen := (pre.stats.get("categories_seen") or {}).get(s.name)) else {}),
                  "missing": "the 'unknown' slot",
                  "unknown": "the 'unknown' slot" if pre.unknown_category == "ignore" else "rejected"}
                 for s in pre.categorical]
    return features
