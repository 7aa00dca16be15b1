"""What drift monitoring watches of a bundle's inputs, under one set of names for all who count them: the
reference profile fitted at training (`jobs.profile`), a serving replica's live counters (`serving.monitor`),
the prediction logs' columns (`serving.predlog`, `feature.<name>`) and the monitor job (`jobs.monitor`).

Number and category features are watched as they are. The other kinds are watched through quantities derived
from them, each a numeric or categorical quantity of its own name:

    text feature f    f.length  numeric      characters of the text (missing when the text is)
                      f.empty   categorical  "true" for a text with no visible character, else "false"
    image feature f   f.width   numeric      the image's width and height as sent (before the resize to the
                      f.height  numeric      model's input size): the serving checker, which decodes each image
                                             once, stores them in the record under these names

In a profile a derived quantity's entry carries `"of": {"feature": f, "quantity": q}`; entries without it are
features watched as they are. The request path copies each watched record field into a tuple of plain values
(`RowCopier`); the derived values are computed later, off the request path (`derive`).
"""
from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Any, Optional, Sequence

FEATURE_PREFIX = "feature."          # a prediction log's column of a watched quantity: feature.<name>
PROBABILITIES = "probabilities"      # a classifier's log column: each class's probability, in the classes' order
KEEP_PREFIX = "keep."                # a request field kept in the logs (serve.log.keep), as text: keep.<name>
# quantity → (how it is counted, whether it is computed from the feature's own value (text) rather than read
# from a record field of its own name (images: the serving checker writes it))
QUANTITIES = {"length": ("numeric", True), "empty": ("categorical", True),
              "width": ("numeric", False), "height": ("numeric", False)}
DERIVED_OF = {"text": ("length", "empty"), "image": ("width", "height")}
KIND_OF_TYPE = {"number": "numeric", "category": "categorical"}


@dataclass(frozen=True)
class Watched:
    """One watched quantity: its `name` (the profile's and the logs'), how it is counted (`kind`: "numeric" or
    "categorical"), the record `field` the request path copies, and the `quantity` derived from that field's
    value (None: the value itself)."""

    name: str
    kind: str
    field: str
    feature: str
    quantity: Optional[str] = None

    def values(self, raw: Sequence) -> list:
        """The copied values of `field` → the watched values (None stays None: missing)."""
        if self.quantity == "length":
            return [len(v) if isinstance(v, str) else None for v in raw]
        if self.quantity == "empty":
            return [None if not isinstance(v, str) else "false" if v.strip() else "true" for v in raw]
        return list(raw)


def derived(feature: str, quantity: str) -> Watched:
    """The watched quantity `quantity` of `feature` (a text's "length" or "empty", an image's "width"/"height")."""
    kind, from_value = QUANTITIES[quantity]
    name = f"{feature}.{quantity}"
    return Watched(name, kind, feature if from_value else name, feature, quantity)


def of_schema(schema: dict, exclude: Sequence[str] = ()) -> list[Watched]:
    """What is watched of a bundle whose schema.json is `schema`, in schema order; a feature in `exclude`, and
    what derives from it, is left out."""
    out = []
    for f in schema["features"]:
        if f["name"] in exclude:
            continue
        if f["type"] in KIND_OF_TYPE:
            out.append(Watched(f["name"], KIND_OF_TYPE[f["type"]], f["name"], f["name"]))
        for quantity in DERIVED_OF.get(f["type"], ()):
            out.append(derived(f["name"], quantity))
    return out


def of_profile(profile: dict) -> list[Watched]:
    """What a reference profile watches: its numeric then its categorical entries, derived ones by their "of"."""
    out = []
    for kind in ("numeric", "categorical"):
        for name, ref in profile.get(kind, {}).items():
            of = ref.get("of")
            out.append(derived(of["feature"], of["quantity"]) if of else Watched(name, kind, name, name))
    return out


def image_size_fields(feature: str) -> tuple[str, str]:
    """The record fields in which the serving checker stores an image's width and height as sent."""
    return derived(feature, "width").field, derived(feature, "height").field


class RowCopier:
    """Copies the given fields of each record into a tuple of plain values, in C (itemgetter of several names
    returns a tuple). Why copies: a request's own dicts and lists, held for about a second until a background
    thread gets to them, survive into the garbage collector's oldest generation, whose growth sets off full
    collections of a replica's whole heap (~150 ms each, measured); tuples of strings and numbers are untracked
    by the collector within two passes."""

    def __init__(self, fields: Sequence[str]):
        self.fields = list(fields)
        self._row = operator.itemgetter(*self.fields) if len(self.fields) >= 2 else None

    def __call__(self, records: list[dict]) -> tuple:
        try:
            return tuple(map(self._row, records))
        except (KeyError, TypeError):      # a field missing (or no _row: fewer than two fields)
            return tuple(tuple(map(r.get, self.fields)) for r in records)


def columns(watched: Sequence[Watched], rows: Sequence[tuple]) -> list[list[Any]]:
    """Copied rows (`RowCopier` over the watched fields, in order) → one list of watched values per quantity."""
    raw = list(zip(*rows)) if rows else [()] * len(watched)
    return [w.values(column) for w, column in zip(watched, raw)]
