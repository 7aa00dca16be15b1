"""The checks, notes and category lookup of `Bundle.predict` read a field at a time (`jobs.columns`) say exactly what
the record-by-record rules they replaced said: the same predictions, probabilities, notes (content, order, values)
and refusals, on random records holding every awkward kind of value. The reference rules are kept here as they
were (jobs/tabular.py before the change), so the comparison does not depend on the code under test."""
import math
import random

import numpy as np
import pandas as pd
import pytest

from jobs import bundle as B
from jobs.loaded import MAX_SHOWN_PROBLEMS
from jobs.fitted import canonical, category_key, is_boolean, misspelt_fields
from jobs.model import build_model
from jobs.tabular import (CategoricalState, NumericState, Preprocessor, _echoed, missing_fields, outside_range,
                          range_bounds, training_ranges, unseen_categories)

NUMBERS = ["age", "income", "debt"]
CATEGORIES = {"region": ["north", "south", "3"], "member": ["true", "false"], "rooms": ["1", "2", "2.5"]}


# ---------------------------------------------------------------- the record-by-record rules, as they were
def ref_outside_range(ranges, records):
    found = []
    bounds = [(name, lo, hi, *range_bounds(lo, hi)) for name, lo, hi in ranges]
    for i, record in enumerate(records):
        for name, lo, hi, low, high in bounds:
            v = record.get(name)
            if type(v) is str:
                try:
                    v = float(v)
                except ValueError:
                    continue
            elif type(v) not in (int, float):
                continue
            if math.isfinite(v) and not low <= v <= high:
                found.append({"record": i, "field": name, "value": v, "trained_on": [lo, hi]})
    return found


def ref_unseen_categories(known, records):
    found = []
    booleans = {name for name, categories in known.items() if is_boolean(categories)}
    for i, record in enumerate(records):
        for name, categories in known.items():
            v = record.get(name)
            key = (category_key(v, True) if name in booleans else v if type(v) is str else canonical(v))
            if key is not None and key not in categories:
                found.append({"record": i, "field": name, "value": _echoed(v)})
    return found


def ref_missing_fields(names, records, blank=frozenset()):
    missing = [[n for n in names if (v := r.get(n)) is None or (type(v) is float and v != v)
                or (n in blank and type(v) is str and not v.strip())] for r in records]
    everywhere = set(missing[0]).intersection(*missing[1:]) if missing else set()
    return ([n for n in names if n in everywhere],
            [{"record": i, "field": n} for i, fields in enumerate(missing) for n in fields if n not in everywhere])


def ref_record_problems(pre, records):
    if pre.unknown_category != "error":
        return []
    problems = []
    for s in pre.categorical:
        allowed, boolean = set(s.categories), is_boolean(s.categories)
        for i, r in enumerate(records):
            v = category_key(r.get(s.name), boolean)
            if v is not None and v not in allowed:
                problems.append(f"record {i}: {s.name}={r[s.name]!r} is not a known category (known: {s.categories})")
    return problems


def ref_transform(pre, df):
    n = len(df)
    out = np.zeros((n, pre.feature_dim), dtype=np.float32)
    for j, s in enumerate(pre.numeric):
        col = pd.to_numeric(df[s.name], errors="coerce") if s.name in df else pd.Series(np.nan, index=df.index)
        x = col.to_numpy(dtype=np.float64, na_value=np.nan)
        out[:, j] = (np.where(np.isfinite(x), x, s.fill) - s.center) / s.scale
    offset = len(pre.numeric)
    for s in pre.categorical:
        lookup = {c: i for i, c in enumerate(s.categories)}
        unknown = len(s.categories)
        if s.name in df:
            boolean = is_boolean(s.categories)
            idx = np.fromiter((lookup.get(category_key(v, boolean) if boolean else canonical(v), unknown)
                               for v in df[s.name].tolist()), dtype=np.int64, count=n)
        else:
            idx = np.full(n, unknown, dtype=np.int64)
        out[np.arange(n), offset + idx] = 1.0
        offset += unknown + 1
    return out


def ref_predict(bundle, records, notes=True):
    """`Bundle.predict` as it was: records (a DataFrame's through to_dict), checked and noted one by one."""
    if isinstance(records, pd.DataFrame):
        records = records.to_dict("records")
    if not records:
        return {"predictions": [], "probabilities": []}
    pre = bundle.preprocessor
    problems = misspelt_fields(records, pre.feature_names, pre.label) + ref_record_problems(pre, records)
    df = pd.DataFrame(records, index=range(len(records)))
    problems += pre.frame_problems(df)
    if problems:
        shown = problems[:MAX_SHOWN_PROBLEMS]
        more = len(problems) - len(shown)
        raise B.BundleError("; ".join(shown) + (f"; and {more} more" if more else ""))
    out = bundle.predict_features(ref_transform(pre, df))
    out.pop("class_index", None)
    if not notes:
        return out
    said = {}
    if outside := ref_outside_range(training_ranges(pre), records):
        said["out_of_range"] = outside
    known = {f["name"]: set(f.get("categories") or []) for f in bundle.schema["features"] if f["type"] == "category"}
    if bundle.schema.get("unknown_category") != "error" and (unseen := ref_unseen_categories(known, records)):
        said["unseen_categories"] = unseen
    every, imputed = ref_missing_fields([f["name"] for f in bundle.schema["features"]], records)
    said.update({"imputed_in_every_record": every} if every else {}, **({"imputed": imputed} if imputed else {}))
    return {**out, **said}


# ---------------------------------------------------------------- random awkward records
NUMBER_VALUES = [None, math.nan, "", "NA", "nan", "null", 3, -7, 0, 41.5, -0.0, 1e300, -1e300, 5e-324, 10**20,
                 2**53 + 1, 10**400, math.inf, -math.inf, "41", " 12 ", "1e3", np.int64(900), np.float64(-900.5),
                 np.float32(2.5), np.float64(math.nan), 12.0, 900.0, -500, 1000.25]
BAD_NUMBERS = ["forty", "12,5", "1_000", [1], {"a": 1}, True]
CATEGORY_VALUES = [None, math.nan, "", "NA", "north", "south", "North", "3", 3, 3.0, True, False, "True", "FALSE",
                   "1", "0", 1, 0, 1.0, 2, 2.5, "2.5", np.int64(2), np.float64(2.5), np.bool_(True), "x" * 150, [1],
                   "west", 10**20, pd.NA]
EXTRA = ["id", "churn", "Age", "agee", "incmoe", "note"]


def random_records(rng: random.Random, n: int, bad: bool) -> list[dict]:
    records = []
    for _ in range(n):
        r = {}
        for name in NUMBERS:
            if rng.random() < 0.85:
                r[name] = rng.choice(NUMBER_VALUES + (BAD_NUMBERS if bad and rng.random() < 0.05 else []))
            if rng.random() < 0.5:
                r[name] = round(rng.gauss(0, 60), 3)
        for name in CATEGORIES:
            if rng.random() < 0.85:
                r[name] = rng.choice(CATEGORY_VALUES if rng.random() < 0.5 else CATEGORIES[name])
        for name in EXTRA:
            if (bad or name in ("id", "churn")) and rng.random() < 0.02:
                r[name] = rng.choice([1, "x", None])
        records.append(r)
    return records


def same(a, b) -> bool:
    """Equal, NaN equal to NaN, and of the same types all the way down (1 is not 1.0 is not True)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    return a is b if a is pd.NA else bool(a == b)


@pytest.fixture(scope="module", params=["ignore", "error"])
def bundle(request, tmp_path_factory):
    pre = Preprocessor(task="classification", label="churn", classes=["no", "yes"],
                       numeric=[NumericState(n, fill=1.0, center=2.0, scale=3.0) for n in NUMBERS],
                       categorical=[CategoricalState(c, v) for c, v in CATEGORIES.items()],
                       unknown_category=request.param,
                       stats={"numeric": {n: {"min": -100.0, "max": 100.0} for n in NUMBERS}})
    dim = len(NUMBERS) + sum(len(v) + 1 for v in CATEGORIES.values())
    config = {"kind": "mlp", "input_dim": dim, "output_dim": 2, "hidden": [4], "dropout": 0.0, "activation": "relu"}
    folder = B.write(tmp_path_factory.mktemp("b") / "out", state_dict=build_model(config).state_dict(),
                     model_config=config, preprocessor=pre, metrics={"val": {}}, spec_yaml="name: t\n",
                     lineage={"version": "1"}, progress=lambda _line: None)
    return B.load(folder)


def outcome(predict, *args, **kwargs):
    try:
        return predict(*args, **kwargs)
    except Exception as exc:    # a refusal (BundleError), or what a value no rule foresaw raises (10**400)
        return (type(exc).__name__, str(exc))


@pytest.mark.parametrize("seed", range(12))
def test_predict_says_and_refuses_what_the_record_by_record_rules_did(bundle, seed):
    rng = random.Random(seed)
    answered = 0
    for n, bad in [(1, False), (3, True), (40, False), (300, True), (2000, False), (2000, True)]:
        records = random_records(rng, n, bad) + ([{}] if rng.random() < 0.3 else [])
        for notes in (True, False):
            want, got = outcome(ref_predict, bundle, records, notes), outcome(bundle.predict, records, notes=notes)
            assert same(got, want), (n, bad, notes)
            answered += isinstance(want, dict)
    assert answered >= 4 or bundle.preprocessor.unknown_category == "error"   # notes compared, not only refusals


@pytest.mark.parametrize("seed", range(6))
def test_the_notes_alone_match_on_any_records(seed):
    """The server calls the three note functions on a request's records as parsed (no check before them)."""
    rng = random.Random(seed)
    ranges = [(n, -100.0, 100.0) for n in NUMBERS] + [("big", 0.0, 2.0**60)]
    known = {c: set(v) for c, v in CATEGORIES.items()}
    for n in (1, 7, 500):
        records = random_records(rng, n, True)
        for r in records:
            for name in NUMBERS:        # an int past a float's range: OverflowError, then and now (checked below)
                if type(r.get(name)) is int and r[name] > 10**350:
                    r[name] = 10**300
            if rng.random() < 0.3:
                r["big"] = rng.choice([2**60 + 1, 2**60, 1.2 * 2**60, 2**62, "1e18", None])
            if rng.random() < 0.2:
                r["note"] = rng.choice(["", "  ", "text", None, math.nan])
        assert same(outside_range(ranges, records), ref_outside_range(ranges, records))
        assert same(unseen_categories(known, records), ref_unseen_categories(known, records))
        names = NUMBERS + list(CATEGORIES) + ["note", "absent"]
        assert same(missing_fields(names, records, blank={"note"}), ref_missing_fields(names, records, {"note"}))
    huge = [{"age": 1}, {"age": 10**400}]
    assert same(outcome(outside_range, ranges, huge), outcome(ref_outside_range, ranges, huge))


@pytest.mark.parametrize("seed", range(4))
def test_a_dataframes_rows_predict_as_their_records_did(bundle, seed):
    """A DataFrame is predicted from its columns where their types allow it, as from its to_dict records."""
    rng = np.random.default_rng(seed)
    n = 3000
    df = pd.DataFrame({"id": np.arange(n), "age": rng.normal(0, 60, n).round(2), "income": rng.integers(-200, 200, n),
                       "debt": rng.choice([1.5, np.nan, 500.0], n)})
    df["region"] = pd.Series(rng.choice(["north", "south", "west", "3"], n)).where(rng.random(n) > 0.1)
    df["member"] = rng.random(n) > 0.5
    df["rooms"] = rng.choice([1.0, 2.0, 2.5, 4.0, np.nan], n)
    variants = [df, df.drop(columns=["debt"]), df.assign(age=df["age"].astype(str)),
                df.assign(region=df["region"].astype(object)), df.assign(Age=1).drop(columns=["age"]),
                df.assign(rooms=pd.array(rng.choice([1, 2, None], n), dtype="Int64"))]
    for frame in variants:
        for notes in (True, False):
            want, got = outcome(ref_predict, bundle, frame, notes), outcome(bundle.predict, frame, notes=notes)
            assert same(got, want)
