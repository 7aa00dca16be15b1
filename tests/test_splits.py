"""The split by group (`data.split.by`) and by time (`data.split.order`): spec checks, the columns' checks before
Ray starts, and ingest on a real local Ray."""
import base64
import datetime as dt
import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from jobs import precheck
from jobs.infer import DataError
from jobs.spec import SpecError, validate_spec
from jobs.splits import TEST, TRAIN, VAL, split_field, split_key


def spec_of(path, split, label="y", **data):
    return validate_spec({"name": "t", "data": {"path": str(path), "label": label, "split": split, **data}})


def visits(n=240, patients=40, seed=0, label_per_patient=True) -> pd.DataFrame:
    """A clinic's visits: several rows per patient; the diagnosis is the patient's (or, when not
    `label_per_patient`, each visit's own)."""
    rng = np.random.default_rng(seed)
    patient = rng.integers(0, patients, n)
    y = (patient % 4 == 0) if label_per_patient else rng.uniform(size=n) < 0.3
    return pd.DataFrame({"patient_id": np.char.add("P-", patient.astype(str)), "age": 30 + patient % 50,
                         "glucose": rng.normal(5.5, 1.0, n).round(2), "site": rng.choice(["a", "b"], n),
                         "weight": rng.uniform(50, 90, n),        # a float unique to each row: which row it is
                         "y": np.where(y, "sick", "well"),
                         "seen": [dt.date(2024, 1, 1) + dt.timedelta(days=int(d)) for d in rng.integers(0, 365, n)]})


# ---------------------------------------------------------------------------------------------- the spec
@pytest.mark.parametrize("split, data, said", [
    ({"by": "patient_id", "order": "seen"}, {}, "by and order are both set"),
    ({"by": "y"}, {}, "split.by is the label 'y'"),
    ({"order": "y"}, {}, "split.order is the label 'y'; name the column the rows are ordered by"),
    ({"by": "patient_id"}, {"features": {"categorical": ["patient_id", "site"]}},
     "split.by column 'patient_id' is also listed under data.features.categorical; the column a split is made by "
     "is no feature (every group of the test split would be one training never saw)"),
    ({"order": "seen"}, {"format": "images"}, "split.order is for tables"),
    ({"order": "seen", "seed": 7}, {}, "seed (7) is not used with order: the split by time takes the latest rows"),
    ({"by": "patient_id", "gap": "30d"}, {}, "gap ('30d') is for a split by time: set order to the column of times"),
    ({"order": "seen", "gap": "30 days"}, {}, "gap '30 days' must be a positive number and a unit s, h, d or w (e.g. "
                                              "30d, 12h, 2w; a number alone where the order column holds numbers)"),
    ({"order": "seen", "gap": "1m"}, {}, "gap '1m': m would be minutes (a month is 30d); write a positive number"),
    ({"order": "seen", "gap": 0}, {}, "gap must be a positive span (30d) or number, got 0"),
    ({"order": "seen", "gap": "600w"}, {}, "gap '600w' must be at most 520w (ten years)"),   # not "e.g. 30d"
])
def test_a_split_column_the_spec_cannot_use_is_refused(split, data, said):
    with pytest.raises(SpecError) as err:
        spec_of("d", split, **data)
    assert said in str(err.value)


def test_a_time_split_keeps_the_default_seed_every_resolved_spec_holds():
    assert spec_of("d", {"order": "seen", "seed": 0}).data.split.order == "seen"
    # A gap of a number quoted (YAML 1.1 reads 1e3 as text too) is that number, not a span without its unit.
    assert spec_of("d", {"order": "day", "gap": "30"}).data.split.gap == 30.0
    assert spec_of("d", {"order": "seen", "gap": "30d"}).data.split.gap == "30d"


def test_a_split_column_may_be_excluded_as_a_feature_already(tmp_path):
    spec = spec_of(tmp_path, {"by": "patient_id"}, features={"exclude": ["patient_id", "seen"]})
    assert spec.data.split.by == "patient_id"


# ---------------------------------------------------------------------------------------------- the column
def test_the_split_column_is_read_as_one_type_across_shards():
    one = {"a.parquet": pa.schema([("y", pa.string()), ("seen", pa.date32())]),
           "b.parquet": pa.schema([("y", pa.string()), ("seen", pa.timestamp("ms"))])}
    assert split_field(spec_of("d", {"order": "seen"}).data, one).type == pa.timestamp("us")
    pandas = {**one, "c.parquet": pa.schema([("y", pa.string()), ("seen", pa.timestamp("ns"))])}
    assert split_field(spec_of("d", {"order": "seen"}).data, pandas).type == pa.timestamp("ns")
    days = {"a.parquet": pa.schema([("day", pa.int32())]), "b.parquet": pa.schema([("day", pa.float64())])}
    assert split_field(spec_of("d", {"order": "day"}).data, days).type == pa.float64()
    ids = {"a.parquet": pa.schema([("pid", pa.int32())]), "b.parquet": pa.schema([("pid", pa.int64())])}
    assert split_field(spec_of("d", {"by": "pid"}).data, ids).type == pa.int64()
    assert split_field(spec_of("d", {}).data, ids) is None


def test_a_split_column_that_cannot_split_is_named():
    text = {"a.csv": pa.schema([("y", pa.string()), ("seen", pa.string())])}
    with pytest.raises(DataError, match=r"data.split.order names column 'seen', of type string: the split orders "
                                        r"rows by a date, a time or a number that counts up"):
        split_field(spec_of("d", {"order": "seen"}).data, text)
    with pytest.raises(DataError, match=r"data.split.by names column 'patient', which is in none of the files; did "
                                        r"you mean 'Patient'\? columns are \['Patient', 'y'\]. Fix data.split.by"):
        split_field(spec_of("d", {"by": "patient"}).data, {"a.csv": pa.schema([("y", pa.string()),
                                                                                ("Patient", pa.string())])})
    two = {"a.parquet": pa.schema([("y", pa.string()), ("pid", pa.string())]),
           "b.parquet": pa.schema([("y", pa.string())])}
    with pytest.raises(DataError, match=r"which 1 of the 2 file\(s\) lack \(b.parquet\): their rows could not be "
                                        r"split by it"):
        split_field(spec_of("d", {"by": "pid"}).data, two)
    uuids = {"a.parquet": pa.schema([("y", pa.string()), ("pid", pa.binary(16))])}
    with pytest.raises(DataError, match=r"data.split.by names column 'pid', of type fixed_size_binary\[16\]: a split "
                                        r"groups rows by text, numbers, booleans or times"):
        split_field(spec_of("d", {"by": "pid"}).data, uuids)
    zones = {"a.parquet": pa.schema([("t", pa.timestamp("us", "Europe/Berlin"))]),
             "b.parquet": pa.schema([("t", pa.timestamp("us"))])}
    with pytest.raises(DataError, match=r"whose times carry a time zone in 1 file\(s\) \(a.parquet\) and none in 1 "
                                        r"\(b.parquet\): they cannot be ordered together"):
        split_field(spec_of("d", {"order": "t"}).data, zones)
    zones["b.parquet"] = pa.schema([("t", pa.timestamp("s", "UTC"))])
    assert split_field(spec_of("d", {"order": "t"}).data, zones).type == pa.timestamp("us", "UTC")
    # Ids written as numbers in one CSV shard and as text in another: one text, as each row writes it.
    mixed = {"a.csv": pa.schema([("pid", pa.string())]), "b.csv": pa.schema([("pid", pa.int64())])}
    assert split_field(spec_of("d", {"by": "pid"}).data, mixed).type == pa.string()


def test_validate_says_a_gap_longer_than_a_splits_period_before_ray_starts(tmp_path):
    """A credit analyst's six months, 15 % validation (27 days) and a gap of 30 days: validate said OK, and the run
    stopped on an empty validation split after a Ray start. The labelled rows' times are split as ingest will."""
    df = visits(n=400)                                  # a year of visits: 15 % of it is about 55 days
    df.loc[df.index[:5], "y"] = None                    # label-less rows, which ingest drops, are not counted
    df.iloc[:200].to_csv(tmp_path / "a.csv", index=False)
    df.iloc[200:].to_parquet(tmp_path / "b.parquet")
    no_ids = {"exclude": ["patient_id"]}
    for part in ("a.csv", "b.parquet"):
        folder = tmp_path / part.split(".")[1]
        folder.mkdir()
        (tmp_path / part).rename(folder / part)
    df.to_parquet(tmp_path / "parquet" / "c.parquet")   # the whole table in Parquet, the CSV holds half of it
    for folder in ("parquet", "csv"):
        path = tmp_path / folder
        precheck.check_columns(spec_of(path, {"order": "seen", "gap": "20d"}, features=no_ids))
        with pytest.raises(DataError, match=r"^the validation split is empty: all \d+ row\(s\) of its period fell "
                                            r"within data.split.gap '90d' before test's start"):
            precheck.check_columns(spec_of(path, {"order": "seen", "gap": "90d"}, features=no_ids))
        with pytest.raises(DataError, match=r"^the train split is empty: all \d+ row\(s\) of its period fell "
                                            r"within data.split.gap '400d' before validation's start"):
            precheck.check_columns(spec_of(path, {"order": "seen", "gap": "400d"}, features=no_ids))
    # Recent rows whose outcome is not known yet (NaN, or blank text), which ingest drops: not counted in the periods.
    days = pd.DataFrame({"t": list(range(200)) + [200 + i % 11 for i in range(1000)], "x": np.arange(1200.0),
                         "y": [float(i % 2) for i in range(200)] + [np.nan] * 1000})
    for y in (days["y"], days["y"].map(lambda v: "" if np.isnan(v) else str(v))):
        days.assign(y=y).to_parquet(tmp_path / "parquet" / "c.parquet")
        precheck.check_columns(spec_of(tmp_path / "parquet" / "c.parquet", {"order": "t", "gap": 5}))


def test_validate_names_a_split_column_the_files_lack_before_ray_starts(tmp_path):
    visits().to_csv(tmp_path / "visits.csv", index=False)
    no_dates = {"exclude": ["seen"]}
    with pytest.raises(DataError, match=r"data.split.by names column 'patient', which is in none of the files; did "
                                        r"you mean 'patient_id'\?"):
        precheck.check_columns(spec_of(tmp_path / "visits.csv", {"by": "patient"}, features=no_dates))
    precheck.check_columns(spec_of(tmp_path / "visits.csv", {"by": "patient_id"}, features=no_dates))
    # A date no split is made by is refused as a feature, as before; the one the split is by is not a feature.
    with pytest.raises(DataError, match=r"column 'seen' has type date32\[day\] which trainyard cannot use as a "
                                        r"feature"):
        precheck.check_columns(spec_of(tmp_path / "visits.csv", {"by": "patient_id"}))
    precheck.check_columns(spec_of(tmp_path / "visits.csv", {"order": "seen"}, features={"exclude": ["patient_id"]}))
    # The split column misspelt: its "did you mean" (that date) is not also refused as a feature, a fix that would
    # have left the split without its column.
    with pytest.raises(DataError) as err:
        precheck.check_columns(spec_of(tmp_path / "visits.csv", {"order": "seenn"}, features={"exclude": ["patient_id"]}))
    assert "did you mean 'seen'?" in str(err.value) and "column 'seen' has type" not in str(err.value)


# ---------------------------------------------------------------------------------------------- the key
def test_a_groups_rows_share_a_key_and_the_split_column_is_dropped():
    df = pd.DataFrame({"pid": ["a", "a", "b", None, None], "x": [1.0, 2.0, 1.0, 1.0, 3.0], "_label_missing": 0})
    out = split_key(df, seed=0, by="pid")
    assert "pid" not in out.columns and out["_u"].iloc[0] == out["_u"].iloc[1] != out["_u"].iloc[2]
    assert out["_u"].iloc[3] != out["_u"].iloc[4]            # no group: each row on its own, by its content
    assert split_key(df, seed=1, by="pid")["_u"].iloc[0] != out["_u"].iloc[0]       # the seed still seeds it
    # Integer ids as Ray hands them over (Arrow-backed): a block with a missing id keys the others alike.
    ids = [pd.DataFrame({"pid": pd.array(v, dtype="int64[pyarrow]"), "_label_missing": 0}) for v in ([7, 8], [7, None])]
    assert split_key(ids[0], seed=0, by="pid")["_u"].iloc[0] == split_key(ids[1], seed=0, by="pid")["_u"].iloc[0]
    times = pd.DataFrame({"t": pd.to_datetime(["2024-01-02", "2024-01-01"]), "x": [1, 2], "_label_missing": 0})
    keyed = split_key(times, seed=0, order="t")
    assert "t" not in keyed.columns and keyed["_u"].iloc[0] < keyed["_u"].iloc[1]   # the later first (test)


def test_numbers_order_and_an_infinite_time_is_refused():
    from jobs.splits import assign_split, order_problem, split_summary, split_thresholds

    days = pd.DataFrame({"day": [3.0, 1.0, 2.0, 2.0, 5.0, 4.0], "y": 0, "_label_missing": 0})
    keyed = split_key(days, seed=0, order="day")
    cuts = split_thresholds(keyed["y"].to_numpy(), keyed["_u"].to_numpy(), val=0.2, test=0.0, stratify=False)
    splits = assign_split(keyed, "y", cuts, False)
    assert list(splits["_split"]) == [TRAIN, TRAIN, TRAIN, TRAIN, VAL, TRAIN]     # test 0: none; the latest, val
    how = split_summary(spec_of("d", {"order": "day"}).data, splits, keyed["_u"].to_numpy(), False,
                        order_type=pa.float64())
    assert how == {"order": "day", "from": {"val": 5, "test": None, "train_until": 4}}
    assert "an infinite value in column 'day'" in order_problem("day", {"nulls": 0, "n": 6, "infinite": 1})


def test_a_gap_leaves_out_the_rows_whose_labels_were_made_in_the_next_split():
    """Defaults known 30 days after each loan's month: a loan of the last month before validation was labelled by
    what happened in validation's period. With `gap`, such rows are in no split; a row a whole gap before a
    split's start had its label by then, and stays."""
    from jobs.placed import splits_of
    from jobs.splits import GAP, assign_split, split_line, split_summary, split_thresholds

    days = pd.DataFrame({"day": np.arange(1.0, 11.0), "y": 0, "_label_missing": 0})
    keyed = split_key(days, seed=0, order="day")
    cuts = split_thresholds(keyed["y"].to_numpy(), keyed["_u"].to_numpy(), val=0.2, test=0.2, stratify=False)
    spec = spec_of("d", {"order": "day", "val": 0.2, "test": 0.2, "gap": 2}).data
    splits = assign_split(keyed, "y", cuts, False, gap=2.0)
    assert list(splits["_split"]) == [TRAIN] * 5 + [GAP, VAL, GAP, TEST, TEST]     # days 6 and 8; not 5 and 7
    kept = assign_split(keyed, "y", cuts, False, gap=2.0, keep_gap=False)
    assert list(kept["_split"]) == [TRAIN] * 5 + [VAL] + [TEST] * 2
    how = split_summary(spec, splits, keyed["_u"].to_numpy(), False, order_type=pa.float64(), cuts=cuts)
    assert how == {"order": "day", "from": {"val": 7, "test": 9, "train_until": 5}, "gap": 2.0,
                   "in_gap": {"train": 1, "val": 1}}
    assert split_line(how) == ("[ingest] split by time 'day': train up to 5, validation from 7, test from 9; gap 2: 1 "
                               "train and 1 validation row(s) within it before the next split's start left out")
    # `evaluate` places rows again as ingest did, a gap's rows (and a time between) in none of the splits.
    again = pd.DataFrame({"day": [1.0, 5.0, 5.5, 6.0, 7.0, 8.0, 9.0, 12.0]})
    assert list(splits_of(json.loads(json.dumps(how)), again, "y")) == [TRAIN, TRAIN, GAP, GAP, VAL, GAP, TEST, TEST]
    # The gap's form must fit the column: a span for times, a number of its units for numbers.
    schemas = {"a.parquet": pa.schema([("seen", pa.date32()), ("y", pa.string())])}
    with pytest.raises(DataError, match=r"data.split.gap is 30, a bare number, but the order column holds times: "
                                        r"give a span with its unit \(30d for days, 30h for hours\)"):
        split_field(spec_of("d", {"order": "seen", "gap": 30}).data, schemas)
    assert split_field(spec_of("d", {"order": "seen", "gap": "30d"}).data, schemas).type == pa.timestamp("us")
    with pytest.raises(DataError, match=r"data.split.gap is '2w', a span of time, but the order column holds numbers"):
        split_field(spec_of("d", {"order": "day", "gap": "2w"}).data,
                    {"a.parquet": pa.schema([("day", pa.int32()), ("y", pa.string())])})


def rows_by_tag(parts: dict) -> dict:
    """Which split each row went to, by its unique `weight`."""
    return {w: k for k, p in parts.items() for w in p["weight"]}


# ---------------------------------------------------------------------------------------------- on Ray
@pytest.mark.usefixtures("ray_session")
def test_split_by_patient_keeps_each_patients_visits_in_one_split(tmp_path):
    """A clinic's table, several visits per patient: by row, a patient's visits landed in train and test alike,
    and the test split measured the model on patients it had learnt (a leak no metric shows). Integer ids over
    two shards, a few missing, several blocks, the column also under exclude (still read for the split)."""
    from jobs.ingest import ingest
    from jobs.pipeline import lineage

    df = visits()
    df["patient_id"] = pd.array(df["patient_id"].str[2:].astype(int), dtype="Int64")
    df.loc[df.index[[5, 130, 200]], "patient_id"] = pd.NA            # three visits of no known patient
    df = df.drop(columns=["seen"])
    df.iloc[:120].to_parquet(tmp_path / "a.parquet", row_group_size=30)
    df.iloc[120:].to_parquet(tmp_path / "b.parquet", row_group_size=30)
    said = []
    spec = spec_of(tmp_path, {"by": "patient_id", "seed": 1}, features={"exclude": ["patient_id"]})
    r = ingest(spec.data, progress=said.append)
    assert "patient_id" not in r.numeric + r.categorical
    parts = {k: r.split(k).to_pandas() for k in (TRAIN, VAL, TEST)}
    assert all("patient_id" not in p.columns for p in parts.values())
    known = df.dropna(subset=["patient_id"])
    split_of = known.assign(split=known["weight"].map(rows_by_tag(parts)))
    assert split_of["split"].notna().all()
    per_patient = split_of.groupby("patient_id")["split"].agg(["nunique", "first"])
    assert per_patient["nunique"].max() == 1
    groups = per_patient["first"].value_counts()
    assert r.split_how["type"] == "int"
    # The groups it saw, kept for `evaluate` (a group it never saw is new, not trained on): train and validation's
    # (a row without its id a group of its own, as the counts have it).
    assert len(base64.b64decode(r.split_how["seen"])) == 4 * (r.split_how["groups"]["train"]
                                                               + r.split_how["groups"]["val"])
    assert {k: v for k, v in r.split_how.items() if k not in ("cuts", "type", "seen")} == {"by": "patient_id", "stratified": True,
                           "groups": {n: int(groups.get(k, 0)) + sum(int(rows_by_tag(parts)[w] == k) for w in
                                                                   df.loc[df["patient_id"].isna(), "weight"])
                                      for k, n in ((TRAIN, "train"), (VAL, "val"), (TEST, "test"))}}
    assert r.summary()["split"] == r.split_how
    patients = len(per_patient) + 3
    assert any(s.startswith(f"[ingest] split by 'patient_id': {patients} groups, train/val/test ") and
               s.endswith("none in two splits (each class split on its own, as every group holds one class)")
               for s in said)
    assert ("[ingest] note: 3 row(s) have no value in data.split.by 'patient_id': each of them is split on its "
            "own, as a group of one") in said
    assert any(s.startswith("[ingest] 2 parquet file(s), 6 column(s) read: the label and 4 more, and "
                            "'patient_id' for the split") for s in said)
    # Every class in every split, as stratified; what the bundle's lineage keeps of it.
    assert all(set(r.class_counts[s]) == {"sick", "well"} for s in ("train", "val", "test"))
    kept = lineage(spec, SimpleNamespace(ingest=r), SimpleNamespace(best_epoch=0, history=[], use_gpu=False,
                                                                    run_path=""))
    assert kept["data"]["split"] == {"val": 0.15, "test": 0.15, "seed": 1, **r.split_how}
    # The bundle's split places rows of a table read another way (pandas, ids as floats beside a null) as ingest
    # did: what `trainyard evaluate` says of rows a bundle trained on, and --held-out keeps.
    from jobs.placed import splits_of
    again = pd.concat([pd.read_parquet(tmp_path / "a.parquet"), pd.read_parquet(tmp_path / "b.parquet")])
    again["patient_id"] = again["patient_id"].astype("float64")
    placed = splits_of(json.loads(json.dumps(kept["data"]["split"])), again.reset_index(drop=True), "y")
    truth = again["weight"].map(rows_by_tag(parts)).to_numpy()
    known_rows = again["patient_id"].notna().to_numpy()
    # Stratified: each class had its cuts; a group between two classes' cuts is not placed (-1), every other as
    # ingest placed it.
    assert ((placed == truth) | (placed == -1))[known_rows].all() and (placed[~known_rows] == -1).all()
    assert (placed[known_rows] == -1).mean() < 0.1

    # A label that varies within a patient: the split stays by patient, not stratified (class cuts would part
    # a patient's visits), and says so.
    (tmp_path / "b.parquet").unlink()
    mixed = visits(label_per_patient=False).drop(columns=["seen"])
    mixed.to_parquet(tmp_path / "a.parquet")
    said.clear()
    r = ingest(spec_of(tmp_path, {"by": "patient_id"}).data, progress=said.append)
    parts = {k: r.split(k).to_pandas() for k in (TRAIN, VAL, TEST)}
    split_of = mixed.assign(split=mixed["weight"].map(rows_by_tag(parts)))
    assert split_of.groupby("patient_id")["split"].nunique().max() == 1
    assert split_of.groupby("patient_id")["y"].nunique().max() == 2      # the case: classes mixed in a patient
    assert r.split_how["stratified"] is False
    assert any("not stratified by class: a group's rows hold more than one class" in s for s in said)


@pytest.mark.usefixtures("ray_session")
def test_split_by_time_puts_the_latest_rows_in_test(tmp_path):
    """A credit book or a plant's telemetry: a random split let the model learn from next month's rows and
    scored it on last month's; by time, test is the latest period, validation the one before."""
    from jobs.ingest import ingest

    df = visits(n=300)
    df["seen"] = pd.to_datetime(df["seen"])
    order = {"order": "seen", "val": 0.2, "test": 0.2}
    no_ids = {"exclude": ["patient_id"]}
    df.iloc[:150].to_csv(tmp_path / "a.csv", index=False)          # ISO dates in a CSV read as times
    df.iloc[150:].to_csv(tmp_path / "b.csv", index=False)
    said = []
    r = ingest(spec_of(tmp_path, order, features=no_ids).data, progress=said.append)
    assert "seen" not in r.numeric + r.categorical
    parts = {k: r.split(k).to_pandas() for k in (TRAIN, VAL, TEST)}
    when = {k: df.set_index("weight").loc[p["weight"], "seen"] for k, p in parts.items()}
    assert sum(len(w) for w in when.values()) == 300
    assert when[TRAIN].max() < when[VAL].min() and when[VAL].max() < when[TEST].min()
    assert abs(r.split_rows["test"] - 60) <= 3 and abs(r.split_rows["val"] - 60) <= 3       # ties share a split
    f = r.split_how["from"]
    assert f["test"] == str(when[TEST].min().date()) and f["val"] == str(when[VAL].min().date())
    assert f["train_until"] == str(when[TRAIN].max().date())
    assert f"[ingest] split by time 'seen': train up to {f['train_until']}, validation from {f['val']}, test from " \
           f"{f['test']}" in said

    # The same rows as pandas writes them to Parquet (timestamps in nanoseconds), and as UTC times with a zone
    # in a CSV (2024-03-01T00:00:00Z): the same split.
    for path in tmp_path.glob("*.csv"):
        path.unlink()
    df.to_parquet(tmp_path / "a.parquet")
    again = ingest(spec_of(tmp_path, order, features=no_ids).data, progress=lambda *_: None)
    assert again.split_how == r.split_how and again.split_rows == r.split_rows
    (tmp_path / "a.parquet").unlink()
    df.assign(seen=df["seen"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")).to_csv(tmp_path / "a.csv", index=False)
    zoned = ingest(spec_of(tmp_path, order, features=no_ids).data, progress=lambda *_: None)
    assert zoned.split_rows == r.split_rows and zoned.split_how["from"]["test"] == f"{f['test']} 00:00:00+00:00"
    # Each row placed again from the split's starts, in a table read as text, as times, or with a zone.
    from jobs.placed import splits_of
    truth = df["weight"].map(rows_by_tag(parts)).to_numpy()
    for how, seen in ((r.split_how, df["seen"].dt.strftime("%Y-%m-%d")), (r.split_how, df["seen"]),
                      (zoned.split_how, df["seen"].dt.tz_localize("UTC"))):
        assert (splits_of({**how, "seed": 0}, df.assign(seen=seen), "y") == truth).all()

    # With a gap of 30 days: no train row within 30 days before validation's first day, no validation row within
    # 30 days before test's; test and the splits' starts as before, every row counted.
    gapped = ingest(spec_of(tmp_path, {**order, "gap": "30d"}, features=no_ids).data, progress=said.append)
    cut = {k: df.set_index("weight").loc[gapped.split(k).to_pandas()["weight"], "seen"] for k in (TRAIN, VAL)}
    month = pd.Timedelta(days=30)
    assert cut[TRAIN].max() <= when[VAL].min() - month and cut[VAL].max() <= when[TEST].min() - month
    left_out = gapped.split_how["in_gap"]
    assert left_out["train"] == r.split_rows["train"] - gapped.split_rows["train"] > 0
    assert left_out["val"] == r.split_rows["val"] - gapped.split_rows["val"] > 0
    assert gapped.split_rows["test"] == r.split_rows["test"]
    assert gapped.split_how["from"]["test"] == zoned.split_how["from"]["test"]      # the files as zoned.csv left them
    assert any(line.endswith(f"; gap 30d: {left_out['train']} train and {left_out['val']} validation row(s) within "
                             "it before the next split's start left out") for line in said)
    assert gapped.left_out() == f"0 dropped (no label), {sum(left_out.values())} in data.split.gap left out"
    assert r.left_out() == "0 dropped (no label)"
    from jobs.splits import GAP
    placed = splits_of({**gapped.split_how, "seed": 0}, df, "y")
    assert ((placed == truth) | ((placed == GAP) & (truth != TEST))).all()
    assert (placed == GAP).sum() == sum(left_out.values())

    # A row without a time cannot be placed: refused, counted, with the fix.
    df.loc[df.index[:4], "seen"] = pd.NaT
    df.to_csv(tmp_path / "a.csv", index=False)
    with pytest.raises(DataError, match=r"data.split.order: 4 row\(s\) have no value in column 'seen' \(\S*a.csv "
                                        r"line 2; \S*a.csv line 3; \S*a.csv line 4 and 1 more\), so the split "
                                        r"cannot tell which period they belong to"):
        ingest(spec_of(tmp_path, {"order": "seen"}, features={"exclude": ["patient_id"]}).data,
               progress=lambda *_: None)


def test_a_train_split_emptied_by_one_time_says_why():
    from jobs.ingest import check_splits

    with pytest.raises(DataError, match=r"the train split is empty; lower data.split.val / data.split.test or add "
                                        r"rows \(rows of one time of data.split.order 'day' share a split"):
        check_splits({"train": 0, "val": 0, "test": 40}, spec_of("d", {"order": "day"}).data)
    with pytest.raises(DataError, match=r"or add rows$"):
        check_splits({"train": 0, "val": 0, "test": 40}, spec_of("d", {}).data)
    with pytest.raises(DataError, match=r"the validation split is empty .*or add rows \(rows of one time of "
                                        r"data.split.order 'term' share a split: it needs rows of more times\)$"):
        check_splits({"train": 30, "val": 0, "test": 10}, spec_of("d", {"order": "term"}).data)
    # A period shorter than the gap: all its rows left out, said as such (not as the ties of one time).
    gapped = spec_of("d", {"order": "term", "gap": "90d"}).data
    with pytest.raises(DataError, match=r"^the validation split is empty: all 9 row\(s\) of its period fell within "
                                        r"data.split.gap '90d' before test's start, and were left out. Shorten the "
                                        r"gap, raise data.split.val \(a longer validation period\), or add rows of a "
                                        r"longer period$"):
        check_splits({"train": 30, "val": 0, "test": 10}, gapped, in_gap={"train": 4, "val": 9})
    with pytest.raises(DataError, match=r"^the train split is empty: all 4 row\(s\) of its period fell within "
                                        r"data.split.gap '90d' before validation's start.*lower data.split.val / "
                                        r"data.split.test \(a longer train period\)"):
        check_splits({"train": 0, "val": 20, "test": 10}, gapped, in_gap={"train": 4, "val": 0})
    from jobs.splits import split_line
    assert split_line({"order": "term", "from": {"val": 5, "test": 9, "train_until": None}, "gap": 90.0,
                       "in_gap": {"train": 4, "val": 0}}).startswith("[ingest] split by time 'term': validation from 5")
    # A regression's label has no classes: "not stratified by class: a group's rows hold more than one class" was
    # said of remaining days to failure, a number per row.
    grouped = {"by": "turbine_id", "groups": {"train": 42, "val": 9, "test": 9}, "stratified": False}
    assert split_line(grouped, "regression") == ("[ingest] split by 'turbine_id': 60 groups, train/val/test 42/9/9 "
                                                 "groups, none in two splits")
    assert split_line(grouped).endswith("none in two splits (not stratified by class: a group's rows hold more than "
                                        "one class)")


def test_validate_says_where_the_times_are_missing_or_not_dates_before_ray_starts(tmp_path):
    """A credit analyst's 23 monthly files: one '?' in one file made its date column text there, and rows without
    a date passed `validate`, then stopped the run after a Ray start; neither message named a file or a line."""
    df = visits(n=60)
    df["seen"] = df["seen"].astype(str)
    no_ids = {"exclude": ["patient_id"]}
    df.iloc[:30].to_csv(tmp_path / "jan.csv", index=False)
    df.iloc[30:].assign(seen=["?"] + list(df["seen"].iloc[31:])).to_csv(tmp_path / "feb.csv", index=False)
    with pytest.raises(DataError, match=r"data.split.order names column 'seen', of type date32\[day\], string: the "
                                        r"split orders rows by a date, a time or a number that counts up; it reads "
                                        r"as text in 1 of 2 file\(s\): \S*feb.csv line 2: '\?'\. Store it as"):
        precheck.check_columns(spec_of(tmp_path, {"order": "seen"}, features=no_ids))
    # Written month/day/year: said, with the pandas that turns it around.
    df.iloc[30:].assign(seen=pd.to_datetime(df["seen"].iloc[30:]).dt.strftime("%m/%d/%Y")).to_csv(
        tmp_path / "feb.csv", index=False)
    with pytest.raises(DataError, match=r"feb.csv line 2: '\d\d/\d\d/2024'.* and 27 more \(month/day/year as written\? "
                                        r"pd.to_datetime\(df\[col\], format='%m/%d/%Y'\) reads it"):
        precheck.check_columns(spec_of(tmp_path, {"order": "seen"}, features=no_ids))
    # ISO times, some with a zone and some without: text to Arrow, every cell an ISO time; said which is which.
    df.iloc[30:].assign(seen=["2024-03-01T10:00Z"] + ["2024-03-02T11:00"] * 29).to_csv(tmp_path / "feb.csv",
                                                                                       index=False)
    with pytest.raises(DataError, match=r"feb.csv: line 2 '2024-03-01T10:00Z' has a zone or offset, line 3 "
                                        r"'2024-03-02T11:00' none \(write every time of the column one way"):
        precheck.check_columns(spec_of(tmp_path, {"order": "seen"}, features=no_ids))
    # Rows without a date: named by file and line in validate, not after a Ray start.
    df.iloc[30:].assign(seen=[None, None] + list(df["seen"].iloc[32:])).to_csv(tmp_path / "feb.csv", index=False)
    with pytest.raises(DataError, match=r"data.split.order: 2 row\(s\) have no value in column 'seen' \(\S*feb.csv "
                                        r"line 2; \S*feb.csv line 3\), so the split cannot tell which period"):
        precheck.check_columns(spec_of(tmp_path, {"order": "seen"}, features=no_ids))
    # A misspelt split column is said first, before its side effect (the date left among the features).
    with pytest.raises(DataError) as err:
        precheck.check_columns(spec_of(tmp_path, {"order": "sen"}, features=no_ids))
    assert str(err.value).startswith("data.split.order names column 'sen', which is in none of the files; did you "
                                     "mean 'seen'?")
    # Day numbers, one '?' in one file: the '?' is named, not the good numbers, and the fix is that cell.
    days = df.assign(day=range(60)).drop(columns=["seen"])
    days.iloc[:30].to_csv(tmp_path / "jan.csv", index=False)
    days.iloc[30:].assign(day=["7"] * 3 + ["?"] + [str(d) for d in range(34, 60)]).to_csv(tmp_path / "feb.csv",
                                                                                        index=False)
    with pytest.raises(DataError, match=r"it reads as text in 1 of 2 file\(s\): \S*feb.csv line 5: '\?' \(the other "
                                        r"cells are numbers: fix or empty these\)"):
        precheck.check_columns(spec_of(tmp_path, {"order": "day"}, features=no_ids))
    # A shard whose time column is empty: its rows without a time are named, not a time zone mix-up.
    df.iloc[:30].assign(seen=pd.to_datetime(df["seen"].iloc[:30]).dt.strftime("%Y-%m-%dT10:00Z")).to_csv(
        tmp_path / "jan.csv", index=False)
    df.iloc[30:].assign(seen=None).to_csv(tmp_path / "feb.csv", index=False)
    with pytest.raises(DataError, match=r"data.split.order: 30 row\(s\) have no value in column 'seen' \(\S*feb.csv "
                                        r"line 2; "):
        precheck.check_columns(spec_of(tmp_path, {"order": "seen"}, features=no_ids))


def test_a_repeated_identifier_kept_as_a_category_is_pointed_at_the_group_split():
    """A loan book's customer_id (2,027 customers over 3,835 loans) is no ID by the one-value-per-row rule, and
    was learnt as its 50 most frequent customers with a note on categories alone."""
    from jobs.infer import feature_notes

    facts = {c: {"capped": True, "distinct": set(), "first": ["C-0001", "C-0002"], "n": 3835, "nulls": 0}
             for c in ("customer_id", "purpose")}
    notes = feature_notes([], ["customer_id", "purpose"], facts, max_categories=50)
    [ident] = [n for n in notes if n.startswith("column 'customer_id'")]
    assert ident.endswith("; named as an identifier, it teaches the model who the 50 most frequent 'customer_id' "
                          "are, which a test split of the same ones flatters: list it under data.features.exclude, "
                          "or split by it (data.split.by: customer_id) to measure the model on ones it never saw")
    assert not any("identifier" in n for n in notes if n.startswith("column 'purpose'"))
    # Split by time, where data.split.by is refused beside data.split.order: excluding it is the fix.
    [ident] = [n for n in feature_notes([], ["customer_id"], facts, max_categories=50, by_time=True)]
    assert ident.endswith("which a test split of the same ones flatters: list it under data.features.exclude")


def test_iso_times_are_told_from_other_text_in_one_pass():
    from jobs.splits import _times

    ok, zoned = _times(["2024-11-04", "2024-11-04T10:00:00.123456789", "2024-11-04T10:00Z", "2024-11-04 10:00+02:00",
                        "2024-11-04T10:00-05", "2024-13-01", "2024-02-30", "?", "03/15/2024", "2024/11/04"])
    assert ok.tolist() == [True] * 5 + [False] * 5
    assert zoned.tolist() == [False, False, True, True, True] + [False] * 5


def test_a_group_is_placed_by_its_class_cuts_only_where_its_rows_hold_one_class():
    """A stratified split by group cut each class apart: a patient's split came from the class it had in
    training. Later rows of another outcome must not move a patient into test: where a group's rows hold two
    classes, or labels as text "1" against cuts of 1, it is placed where every class's cuts agree."""
    from jobs.placed import splits_of
    from jobs.splits import _group_hashes, _unit

    ids = pd.Series([f"P{i}" for i in range(400)])
    key = __import__("hashlib").sha256(b"0").hexdigest()[:16]
    u = _unit(_group_hashes(ids, key))
    how = {"by": "pid", "seed": 0, "stratified": True, "type": "string", "cuts": [[1, 0.10, 0.20], [0, 0.30, 0.45]]}
    one = splits_of(how, pd.DataFrame({"pid": ids, "y": ["1"] * 400}), "y")     # text labels, int cuts: matched
    assert (one == np.where(u <= 0.10, TEST, np.where(u <= 0.20, VAL, TRAIN))).all()
    both = splits_of(how, pd.DataFrame({"pid": pd.concat([ids, ids]), "y": [1] * 400 + [0] * 400}).reset_index(
        drop=True), "y")[:400]
    assert (both[u <= 0.10] == TEST).all() and (both[(u > 0.10) & (u <= 0.30)] == -1).all()
    assert (both[(u > 0.30) & (u <= 0.20)] == VAL).all() and (both[u > 0.45] == TRAIN).all()
    numbers = pd.DataFrame({"pid": pd.Series(range(5)), "y": [1] * 5})
    assert splits_of({**how, "type": "string"}, numbers, "y") is None          # text ids read as numbers
    assert splits_of({**how, "type": "time"}, numbers, "y") is None


def test_a_group_the_bundle_never_saw_is_new_not_trained_on():
    """A split by group kept only its cuts on the groups' keys, so a new applicant's key fell in the train split's
    range as often as a seen one's: `evaluate` counted 477 of 600 rows of new applicants as "groups it trained or
    validated on", and --held-out threw them away. The summary keeps the groups it saw; a group it never saw is
    NEW wherever its key falls, one it saw keeps its split, and over SEEN_MAX groups none are kept (the cuts
    alone, as before)."""
    from jobs.placed import NEW, splits_of
    from jobs.splits import assign_split, split_summary, split_thresholds

    seen = pd.DataFrame({"pid": [f"P{i}" for i in range(300)], "y": 0, "_label_missing": 0})
    keyed = split_key(seen, seed=0, by="pid")
    cuts = split_thresholds(keyed["y"].to_numpy(), keyed["_u"].to_numpy(), val=0.15, test=0.15, stratify=False)
    splits = assign_split(keyed, "y", cuts, False)
    how = json.loads(json.dumps(split_summary(spec_of("d", {"by": "pid", "val": 0.15, "test": 0.15}).data, splits,
                                              keyed["_u"].to_numpy(), False, cuts=cuts, by_type=pa.string())))
    assert len(base64.b64decode(how["seen"])) == 4 * int(np.isin(splits["_split"], (TRAIN, VAL)).sum())
    again = splits_of({**how, "seed": 0}, pd.DataFrame({"pid": seen["pid"], "y": 0}), "y")
    assert (again == splits["_split"].to_numpy()).all()             # the groups it saw: their own splits
    new = splits_of({**how, "seed": 0}, pd.DataFrame({"pid": [f"N{i}" for i in range(300)], "y": 0}), "y")
    assert set(new) <= {NEW, TEST} and (new == NEW).sum() > 150       # by the cuts alone, ~70 % were "train"
    without = {k: v for k, v in how.items() if k != "seen"}
    assert (splits_of({**without, "seed": 0}, pd.DataFrame({"pid": [f"N{i}" for i in range(300)], "y": 0}), "y")
            == TRAIN).sum() > 150


def test_placing_rows_keeps_to_what_training_did():
    """A review of the seen groups: a stray cell in a numeric order column left the whole column unplaced (60 of 60
    rows, "not a time or number"); text ids ('007') of a split that read them as numbers missed their groups, now
    NEW and kept by --held-out; a group it saw, placed in test by another class's cuts, was kept by --held-out;
    an image bundle's groups are keyed otherwise than a table's, so its rows cannot be placed."""
    from jobs.placed import NEW, splits_of, unplaced
    from jobs.splits import _comparable, assign_split, split_summary, split_thresholds

    stray = _comparable(pd.Series([str(d) for d in range(59)] + ["?"], dtype=object))
    assert np.isnan(stray).sum() == 1 and stray[58] == 58.0
    ids = pd.DataFrame({"pid": list(range(300)), "y": 0, "_label_missing": 0})
    keyed = split_key(ids, seed=0, by="pid")
    cuts = split_thresholds(keyed["y"].to_numpy(), keyed["_u"].to_numpy(), val=0.15, test=0.15, stratify=False)
    splits = assign_split(keyed, "y", cuts, False)
    how = {**json.loads(json.dumps(split_summary(spec_of("d", {"by": "pid", "val": 0.15, "test": 0.15}).data,
                                                 splits, keyed["_u"].to_numpy(), False, cuts=cuts,
                                                 by_type=pa.int64()))), "seed": 0}
    padded = splits_of(how, pd.DataFrame({"pid": [f"{i:03d}" for i in range(300)], "y": 0}), "y")
    assert (padded == splits["_split"].to_numpy()).all() and NEW not in padded
    # Stratified: a seen group's later row of the other class falls in that class's test range; still seen.
    u = keyed["_u"].to_numpy()
    trained = np.isin(splits["_split"].to_numpy(), (TRAIN, VAL))
    strat = {**how, "stratified": True, "cuts": [[0, 0.15, 0.30], [1, float(u[trained].max()), 0.999]]}
    flipped = splits_of(strat, pd.DataFrame({"pid": ids["pid"], "y": 1}), "y")
    assert set(flipped[trained]) <= {TRAIN, VAL}
    assert unplaced({**how, "keyed": "image"}, pd.DataFrame({"pid": [1]})).startswith(
        "split by 'pid' of images, whose groups training keyed otherwise")
