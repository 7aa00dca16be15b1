"""The HTTP contract of a served bundle, generated from its schema.json.

- `RequestChecker.parse(body)`: bytes of a POST /predict body → list of records, or a `RequestError` whose
  problems name each offending record index and field, and say how to fix it. Every check happens here,
  before the model sees a record, so a bad request is a 4xx and never reaches (or breaks) the model.
- `serving.openapi.openapi_components(checker, ...)`: the JSON schemas that /openapi.json shows, from a checker.

The checks are hand-written rather than a generated pydantic model: this runs on every request of the hot
path, and a hand-written loop both costs less than building model instances and words errors the way a
user of *this* model needs ("record 3, field 'machine_type': 'Z' is not a known category; known: L, M, H").
"""
from __future__ import annotations

import difflib
import json
import math
import re
import sys
from dataclasses import dataclass
from typing import Any, Iterator, Optional, Sequence

from cluster.errors import BadInput
from jobs.watched import image_size_fields
from serving.decode import RepeatedKey, load_json

MAX_LISTED_PROBLEMS = 20
# The longest unseen category or field kept for the log (logged and counted whole: 365 MB of 7 MB strings, 288 KB
# compressed in the logs, took `trainyard monitor` to 1.5 GB). A known category may be longer.
MAX_CATEGORY_CHARS = 1000
MAX_CODE = 10**30                # a whole number sent for a category: 30 digits at most (4,000: ms each to compare)
MISSPELT_CHECKED = 20        # unknown fields of a record checked for a misspelt feature (unknown_fields: ignore)
MISSPELT_LOOKUPS = 50        # ... of a request, by names not seen before (a body of 1,000 records of 20 random names
                             # took 2.6 s of the event loop against 30 features)
_ID_NAME = re.compile(r"(^|[_\-\s])id$|[a-z]Id$|ID$|uuid", re.I)     # 'machine_id', 'orderId', 'ID', 'uuid'
# Integers the model's float arithmetic can hold; a larger one (JSON allows any) would overflow in pandas.
MAX_DOUBLE_INT = int(sys.float_info.max)
# An encoded image may declare at most 64x the model's input size in each dimension, and never less than
# 4096 x 4096 (a phone photo) nor more than 8192 x 8192: decoding is bounded whatever the model size.
MIN_IMAGE_PIXEL_LIMIT, MAX_IMAGE_PIXEL_LIMIT = 4096 * 4096, 8192 * 8192
# A JSON escape of half a UTF-16 surrogate pair: the only way a body that is valid UTF-8 gives a string that is not
# text (a lone surrogate), which pandas' Arrow-backed strings then fail to encode.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


@dataclass
class Problem:
    message: str
    record: Optional[int] = None
    field: Optional[str] = None

    def to_json(self) -> dict:
        out: dict[str, Any] = {}
        if self.record is not None:
            out["record"] = self.record
        if self.field is not None:
            out["field"] = self.field
        out["message"] = self.message
        return out

    def __str__(self) -> str:
        where = ([f"record {self.record}"] if self.record is not None else []) + (
            [f"field {self.field!r}"] if self.field is not None else [])
        return f"{', '.join(where)}: {self.message}" if where else self.message


class RequestError(BadInput):
    """A client error: HTTP `status` (4xx) and the problems found (all of them, up to MAX_LISTED_PROBLEMS)."""

    close_connection = False        # answered with `Connection: close` (its body was not read whole)

    def __init__(self, status: int, problems: list[Problem], total: Optional[int] = None):
        self.status = status
        self.problems = problems[:MAX_LISTED_PROBLEMS]
        self.total = total if total is not None else len(problems)
        super().__init__(self.summary())

    def summary(self) -> str:
        head = "; ".join(str(p) for p in self.problems[:3])
        more = self.total - min(3, len(self.problems))
        return head + (f"; and {more} more problem(s), listed in 'errors'" if more > 0 else "")

    def to_json(self) -> dict:
        body = {"detail": self.summary(), "errors": [p.to_json() for p in self.problems]}
        if self.total > len(self.problems):
            body["errors_not_listed"] = self.total - len(self.problems)
        return body


_NUMBER, _CATEGORY, _IMAGE, _TEXT = 0, 1, 2, 3
_KINDS = {"number": _NUMBER, "category": _CATEGORY, "image": _IMAGE, "text": _TEXT}
_REQUIRED_FIX = {_TEXT: "send the text as a non-empty string",   # a field the model needs in every record
                 _IMAGE: "the model predicts from the image: send it (base64 of an encoded file, or a pixel array)"}
_JSON_TYPE_NAMES = {str: "a string", bool: "a boolean", list: "an array", dict: "an object", type(None): "null",
                    int: "an integer", float: "a number"}


def _type_name(v: Any) -> str:
    return _JSON_TYPE_NAMES.get(type(v), type(v).__name__)


def _short(v: Any) -> str:
    try:
        text = json.dumps(v, allow_nan=True) if not isinstance(v, str) else repr(v)
    except (RecursionError, ValueError):      # nested past the encoder's depth; an int of over 4300 digits
        return _type_name(v)
    return text if len(text) <= 40 else text[:37] + "..."


class RequestChecker:
    """Checks POST /predict bodies against one bundle's input schema and the serve settings."""

    def __init__(self, schema: dict, *, max_records: int, max_body_bytes: int,
                 required_features: "list[str] | str" = (), unknown_fields: str = "reject",
                 keep: Sequence[str] = ()):
        self.features = {f["name"]: f for f in schema["features"]}
        self.kinds = {name: _KINDS.get(f["type"], _NUMBER) for name, f in self.features.items()}
        # Image bundles: every record needs its image, decoded here once so a bad one is a 4xx naming the record.
        self.image = schema.get("image")
        self.max_image_pixels = image_pixel_limit(self.image["size"]) if self.image else None
        self.reject_unknown_categories = schema.get("unknown_category") == "error"
        self.known = {name: set(f.get("categories") or []) for name, f in self.features.items()
                      if self.kinds[name] == _CATEGORY}
        # The fields a record may leave out, which the model then imputes (said in the answer's `imputed`); a
        # text the training data left empty in some rows is read as empty text, also when sent blank.
        self.blank_text = {name for name, kind in self.kinds.items()
                           if kind == _TEXT and not self.features[name].get("required", True)}
        self.imputable = [name for name, kind in self.kinds.items()
                          if kind in (_NUMBER, _CATEGORY) or name in self.blank_text]
        # Categories that were booleans in training: 'True', 'FALSE', 1 and '0' are taken as the boolean they
        # stand for, here, for everything after (the model, unseen_categories, the logs and the monitor), by the
        # preprocessor's own rule (`jobs.fitted.is_boolean`: its categories are 'true' and 'false').
        from jobs.fitted import as_bool, is_boolean, near_feature     # here: pandas, not for every command's start
        self._near_feature = near_feature
        self.booleans = {name for name, known in self.known.items() if is_boolean(known)}
        self._as_bool = as_bool
        if required_features == "all":
            required = list(self.features)
        else:
            required = list(required_features or [])
            missing = [r for r in required if r not in self.features]
            if missing:
                raise ValueError(f"serve.required_features names {missing}, which the bundle does not have; "
                                 f"its features are {list(self.features)}")
        # Text fields are required unless the schema says otherwise: the model has nothing to impute text with.
        self.text = [n for n, k in self.kinds.items() if k == _TEXT]
        self.required = required + [n for n, k in self.kinds.items() if n not in required and (
            k == _IMAGE or (k == _TEXT and self.features[n].get("required", True)))]
        # Text the training data left empty in some rows (schema "required": false): empty text is read as such.
        self.blank_text = {n for n in self.text if n not in self.required}
        self.reject_unknown_fields = unknown_fields == "reject"
        # Request fields that are not features, accepted for the prediction log (serve.log.keep): text, numbers,
        # booleans or null, left in the records for the logger; the model never reads them (`without_kept`).
        self.keep = frozenset(keep)
        self._near: dict[str, str] = {}     # field name → its nearest feature ("" none): `_misspelt`
        self._lowered = {f.lower(): f for f in self.features}
        self._longest = max(map(len, self.features), default=0)
        self._derived = tuple(f"{f}." for f in self.features)
        self._lookups = 0                   # names `_misspelt` may look up in this request (difflib: ~0.1 ms each)
        self.label = (schema.get("label") or {}).get("name")
        self.max_records = max_records
        self.max_body_bytes = max_body_bytes

    # ----------------------------------------------------------------------------------------- body
    def parse(self, body: bytes) -> list[dict]:
        if len(body) > self.max_body_bytes:
            raise RequestError(413, [Problem(body_too_large(len(body), self.max_body_bytes))])
        if not body.strip():
            raise RequestError(400, [Problem('the body is empty; send JSON like {"records": [{"feature": value}]}')])
        try:
            payload = load_json(body)
        except RecursionError:
            raise RequestError(400, [Problem("the body nests arrays or objects hundreds of levels deep, more than "
                                             "it can be parsed with; a record is an object of feature values "
                                             "(an image's pixel array nests 3 levels)")]) from None
        except RepeatedKey as exc:
            raise RequestError(400, [Problem(f"the body gives {exc.key!r} twice in one object; JSON readers "
                                             "disagree on which one counts (Python's takes the last, a proxy or "
                                             "log may read the first): send each field once")]) from None
        except UnicodeDecodeError as exc:
            raise RequestError(400, [Problem(f"the body is not UTF-8 text ({exc.reason} at byte {exc.start}); "
                                             "send UTF-8 encoded JSON")]) from None
        except json.JSONDecodeError as exc:
            raise RequestError(400, [Problem(f"the body is not valid JSON: {exc.msg} at line {exc.lineno} column "
                                             f"{exc.colno}; send {{\"records\": [{{\"feature\": value}}]}}")]) from None
        if not isinstance(payload, dict):
            raise RequestError(422, [Problem(f"the body must be a JSON object {{\"records\": [...]}}, got "
                                             f"{_type_name(payload)}")])
        extra = [k for k in payload if k != "records"]
        if extra:
            raise RequestError(422, [Problem(f"unknown top-level key {k!r}; the body has one key, \"records\"")
                                     for k in extra])
        if "records" not in payload:
            raise RequestError(422, [Problem('missing required field "records": send {"records": [{...}, ...]}',
                                             field="records")])
        records = payload["records"]
        if not isinstance(records, list):
            raise RequestError(422, [Problem(f"\"records\" must be an array of objects, got {_type_name(records)}",
                                             field="records")])
        if not records:
            raise RequestError(422, [Problem("\"records\" is empty; send at least one record", field="records")])
        if len(records) > self.max_records:
            raise RequestError(413, [Problem(
                f"{len(records)} records in one request; the limit is {self.max_records} (serve.max_records). "
                f"Split them into requests of at most {self.max_records} (trainyard predict and serving.Client "
                "do this for you)", field="records")])
        self.check_records(records, lone_surrogates=_SURROGATE_ESCAPE.search(body) is not None)
        return records

    # ----------------------------------------------------------------------------------------- records
    def check_records(self, records: list, lone_surrogates: bool = False) -> None:
        """Raise one RequestError listing every problem of `records`; fields ignored under unknown_fields: ignore
        are removed from them. `lone_surrogates`: the body escapes a surrogate, so the category strings that reach
        the model are checked to be text too (a pass only such bodies pay)."""
        problems: list[Problem] = []
        self._lookups = MISSPELT_LOOKUPS
        ignored: list[str] = []         # of the record at hand, under unknown_fields: ignore
        sizes: list = []                # of the record at hand: (image feature, its (width, height) as sent)
        total = 0
        kinds = self.kinds
        for i, record in enumerate(records):
            if type(record) is not dict:
                total += 1
                if len(problems) < MAX_LISTED_PROBLEMS:
                    problems.append(Problem(f"expected an object {{feature: value}}, got {_type_name(record)}", i))
                continue
            for name, value in record.items():
                kind = kinds.get(name)
                # The fast path: a float or int for a number, a string for a category.
                t = type(value)
                if kind == _NUMBER:
                    if t is float:
                        if value - value == 0.0:      # finite: inf - inf and nan - nan are nan
                            continue
                    elif t is int:
                        if -MAX_DOUBLE_INT <= value <= MAX_DOUBLE_INT:
                            continue
                    elif value is None:
                        continue
                elif kind == _IMAGE:
                    if value is None:
                        continue        # reported below as a missing required field
                    problem, decoded = self._check_image(value)
                    if problem is None:
                        record[name] = decoded[0]     # decoded once, here: the model takes the array as it is
                        sizes.append((name, decoded[1]))
                        continue
                    total += 1
                    if len(problems) < MAX_LISTED_PROBLEMS:
                        problems.append(Problem(problem, i, name))
                    continue
                elif kind == _TEXT:
                    # Not empty: the model would read only its special tokens (whitespace is empty text too),
                    # unless training read empty text in this field (`blank_text`).
                    if (t is str and (name in self.blank_text or (value and not value.isspace()))) or value is None:
                        continue
                elif kind == _CATEGORY:
                    if name in self.booleans and t is not bool and (flag := self._as_bool(value)) is not None:
                        record[name] = flag
                        continue
                    if t is str or value is None:
                        if value is None or value in self.known[name] or (
                                not self.reject_unknown_categories and len(value) <= MAX_CATEGORY_CHARS):
                            continue
                    elif t is int and not -MAX_CODE < value < MAX_CODE:
                        pass
                    elif t is int or t is bool or (t is float and value - value == 0.0):
                        if not self.reject_unknown_categories or _canonical(value) in self.known[name]:
                            continue
                elif name in self.keep:
                    if (t is str and len(value) <= MAX_CATEGORY_CHARS) or t is bool or value is None or (
                            t is int and -MAX_CODE < value < MAX_CODE) or (t is float and value - value == 0.0):
                        continue
                elif not self.reject_unknown_fields and (len(ignored) >= MISSPELT_CHECKED
                                                         or not self._misspelt(name, record)):
                    ignored.append(name)
                    continue
                total += 1
                if len(problems) < MAX_LISTED_PROBLEMS:
                    problems.append(self._explain(i, name, value, kind))
            if ignored:
                # The model never reads them, and pandas would pay for each as a column (200,000 of them in one
                # 2.5 MiB record: 1.2 s); nor could it encode a name that is a lone surrogate.
                for name in ignored:
                    del record[name]
                ignored.clear()
            if sizes:
                # Drift monitoring watches an image's size as sent (jobs.watched), which decoding resized away.
                for name, size in sizes:
                    record.update(zip(image_size_fields(name), size))
                sizes.clear()
            for name in self.required:
                if record.get(name) is None:
                    total += 1
                    if len(problems) < MAX_LISTED_PROBLEMS:
                        fix = _REQUIRED_FIX.get(kinds[name]) or (f"this server requires {', '.join(self.required)}"
                                                                 " (serve.required_features)")
                        problems.append(Problem(
                            "missing required field" + (" (null given)" if name in record else "") + f"; {fix}",
                            i, name))
        if lone_surrogates:
            for problem in self._not_text(records):
                total += 1
                if len(problems) < MAX_LISTED_PROBLEMS:
                    problems.append(problem)
        if total:
            raise RequestError(422, problems, total)

    def _not_text(self, records: list) -> Iterator[Problem]:
        """Text and category values with a lone surrogate, the strings the checks above let through to the model
        (categories only where unseen ones are accepted: otherwise they are already reported), and kept fields'
        (one lost the prediction log's whole open file: Arrow cannot encode it)."""
        checked = {n for n, k in self.kinds.items()
                   if k == _TEXT or (k == _CATEGORY and not self.reject_unknown_categories)} | self.keep
        if not checked:
            return
        for i, record in enumerate(records):
            if type(record) is not dict:
                continue
            for name, value in record.items():
                if name in checked and type(value) is str and not _is_text(value):
                    yield Problem(f"{value!r} holds a lone surrogate, which is not text; send the character itself, "
                                  "or both halves of its surrogate pair", i, name)

    def _check_image(self, value: Any) -> tuple[Optional[str], Any]:
        """(None, (the decoded pixels, the image's (width, height) as sent)) when the value decodes to an image of
        the bundle's shape, else (what is wrong with it, None). Only the documented formats, and at most
        `max_image_pixels`, reach the decoder."""
        from jobs.images import DECODE_FORMATS, decode_sized
        if not isinstance(value, (str, list)):
            return (f"expected a base64-encoded PNG/JPEG (a string) or a pixel array, got {_type_name(value)}"), None
        try:
            return None, decode_sized(value, tuple(self.image["size"]), self.image["channels"],
                                      formats=DECODE_FORMATS, max_pixels=self.max_image_pixels)
        except ValueError as exc:
            return str(exc), None

    def _misspelt(self, name: str, record: dict) -> bool:
        """Under unknown_fields: ignore, whether `name` reads as a misspelling of a feature `record` lacks, as
        `Bundle.predict` refuses it ('lenght_of_stay' was ignored and the stay imputed, answered 200). Not a name
        that reads as an id ('clinic_id' beside 'clinic_type'); each name's nearest feature is looked up once."""
        near = self._near.get(name)
        if near is None:
            # A request's budget spent; 'photo.width'; a name no feature is near, not kept (4 MB names filled it).
            if self._lookups <= 0 or name.startswith(self._derived) or len(name) > 1.5 * self._longest:
                return False
            self._lookups -= 1
            if len(self._near) >= 4096:
                self._near.clear()
            match = self._near_feature(name, self._lowered)
            near = self._near[name] = match if match and not _ID_NAME.search(name) and name != self.label else ""
        return bool(near) and near not in record

    def without_kept(self, records: list[dict]) -> list[dict]:
        """`records` without the fields kept for the log: the model's input (a kept 'machine_id' beside a missing
        'machine_type' read to `Bundle.predict` as a misspelt feature)."""
        if not self.keep:
            return records
        keep = self.keep
        return [{k: v for k, v in r.items() if k not in keep} if not keep.isdisjoint(r) else r for r in records]

    def _explain(self, i: int, name: str, value: Any, kind: Optional[int]) -> Problem:
        if kind in (None, _CATEGORY) and (isinstance(value, str) and len(value) > MAX_CATEGORY_CHARS or
                                          type(value) is int and not -MAX_CODE < value < MAX_CODE):
            what = f"{len(value):,} characters" if isinstance(value, str) else f"{len(str(abs(value)))} digits"
            return Problem(f"{'a field kept for the prediction log' if kind is None else 'a category'} of {what}; "
                           f"at most {MAX_CATEGORY_CHARS:,} characters (or a whole number of 30 digits) are taken: "
                           "send the value itself", i, name)
        if kind is None and name in self.keep:
            return Problem(f"a field kept for the prediction log (serve.log.keep) is logged as text: send text, a "
                           f"number, true/false or null, not {'a non-finite number' if isinstance(value, float) else _type_name(value)}",
                           i, name)
        if kind is None:
            # The label is no misspelt feature ('machine_failure' was asked "did you mean 'machine_type'?"); a name
            # 2.5 times every feature's length scores under difflib's 0.6 (not compared: 2.8 s for 7 MB).
            close = ([] if name == self.label else [near] if (near := self._near_feature(name, self._lowered)) else
                     [] if len(name) > 2.5 * self._longest else
                     difflib.get_close_matches(name, list(self.features), n=1))
            hint = f"did you mean {close[0]!r}? " if close else ""
            # A table's own row (its id, its label) sent as it is: say what the field is and how to have such
            # fields ignored, an operator's choice (serve.unknown_fields) that a misspelt feature must not hide.
            # Not for a near name (a misspelt feature ignored would be imputed without a word), unless it reads as
            # an id: 'machine_id' was asked "did you mean 'machine_type'?" and nothing else.
            an_id = bool(_ID_NAME.search(name))
            what = "if it is an id rather than a misspelling, " if close and an_id else ""
            other = (" (fields that are not features are ignored here, but this one reads as a misspelt feature "
                     "the record lacks, which would be imputed: fix its name)" if close and not an_id
                     and not self.reject_unknown_fields else "" if close and not an_id else
                     # serve.log.keep refuses the label: a label logged beside its own prediction is no label
                     # `monitor --labels` can trust (it was pointed there, and then refused).
                     "; it is the model's label: send features only (labels known later are joined to the logged "
                     "predictions by trainyard monitor --labels), or serve with --set unknown_fields=ignore to have "
                     "fields that are not features ignored" if name == self.label else
                     f"; {what}send features only, list it in serve.log.keep to accept it and keep it in the "
                     "prediction log, or serve with --set unknown_fields=ignore to have fields that are not "
                     "features ignored")
            return Problem(f"unknown field; {hint}the features are {', '.join(self.features)} (GET /schema){other}",
                           i, name)
        if kind == _TEXT:
            if isinstance(value, str):
                return Problem(f"the text is empty{' (only whitespace)' if value else ''}; send a non-empty "
                               "string", i, name)
            fix = "send it as a JSON string" if type(value) in (int, float) else "send the text as a JSON string"
            return Problem(f"expected text (a string), got {_type_name(value)} {_short(value)}; {fix}", i, name)
        if isinstance(value, float) and not math.isfinite(value):
            beyond = " (beyond the range of a double, ±1.8e308)" if math.isinf(value) else ""
            return Problem(f"{_short(value)} is not a finite number{beyond}; send null for a missing value (it is "
                           "then imputed)", i, name)
        if kind == _NUMBER and type(value) is int:
            return Problem(f"an integer of {len(str(abs(value)))} digits is beyond the range of a double "
                           "(±1.8e308); send a finite number, or null for a missing value", i, name)
        if kind == _NUMBER:
            fix = ("send it as a JSON number, not a string" if isinstance(value, str) and _is_number(value)
                   else "send a JSON number, or null for a missing value")
            return Problem(f"expected a number, got {_type_name(value)} {_short(value)}; {fix}", i, name)
        if isinstance(value, (list, dict)):
            return Problem(f"expected a category (a string), got {_type_name(value)}; known categories: "
                           f"{', '.join(self.features[name]['categories'])}", i, name)
        return Problem(f"{_short(value)} is not a known category; known: "
                       f"{', '.join(self.features[name]['categories'])}. This model rejects unseen categories "
                       "(data.preprocess.unknown_category: error): send one of the known values or null",
                       i, name)


def with_ranges(features: list[dict], ranges: list[tuple[str, float, float]]) -> list[dict]:
    """schema.json's features as GET /schema gives them: each number with its training range (`trained_on`,
    from `jobs.tabular.training_ranges`; what the out_of_range notes use and a client tells a server's age by)."""
    trained = {name: [lo, hi] for name, lo, hi in ranges}
    return [{**({"trained_on": trained[f["name"]]} if f.get("type") == "number" and f["name"] in trained else {}),
             **f} for f in features]


def image_pixel_limit(size: list[int]) -> int:
    """The most pixels an encoded image sent to a model of input `size` [height, width] may declare."""
    return min(max(64 * size[0] * 64 * size[1], MIN_IMAGE_PIXEL_LIMIT), MAX_IMAGE_PIXEL_LIMIT)


def non_finite_outputs(out: dict, records: list[dict]) -> RequestError:
    """A 422 naming each record whose prediction (or probabilities) came out NaN or infinite: finite inputs far
    outside what the model was trained on overflow its float32 arithmetic, and JSON has no NaN to answer with."""
    rows = out["probabilities"] if "probabilities" in out else [[p] for p in out["predictions"]]
    problems = []
    for i, row in enumerate(rows):
        if all(math.isfinite(v) for v in row):
            continue
        numbers = {k: v for k, v in records[i].items() if type(v) in (int, float)}
        largest = max(numbers, key=lambda k: abs(numbers[k]), default=None)
        hint = f" (its largest: {largest!r} = {_short(numbers[largest])})" if largest is not None else ""
        problems.append(Problem(f"the model's output is not a finite number: the record's values{hint} lie too far "
                                "outside the range the model was trained on; send values in that range", i))
    return RequestError(422, problems or [Problem("the model's output is not a finite number")])


def body_too_large(size: int, limit: int, partial: bool = False) -> str:
    return (f"the body is {'over ' if partial else ''}{size / 2**20:.2f} MiB; the limit is {limit / 2**20:g} MiB (serve.max_body_mb). "
            "Send fewer records per request")


def _is_text(s: str) -> bool:
    try:
        s.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def _canonical(value) -> str:
    # The same matching rule as the preprocessor (3, 3.0 and "3" are one category); imported lazily so this
    # module stays importable without pandas.
    from jobs.fitted import canonical
    return canonical(value)


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False
