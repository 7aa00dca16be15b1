"""Ingest on a real local Ray: schema reconciliation, the errors that name files and columns, inference, split."""
import logging
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs.ingest import TEST, TRAIN, VAL, DataError, ingest
from jobs.spec import validate_spec

pytestmark = pytest.mark.usefixtures("ray_session")


def data_spec(path, label="y", **data):
    return validate_spec({"name": "t", "data": {"path": str(path), "label": label, **data}}).data


def frame(n=40, seed=0, **cols):
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"a": rng.normal(size=n), "b": rng.integers(0, 100, n), "c": rng.choice(["x", "z"], n),
                       "y": np.arange(n) % 2})
    for k, v in cols.items():
        df[k] = v
    return df


def test_int_and_float_shards_promote_to_float(tmp_path):
    frame(seed=0).to_parquet(tmp_path / "p0.parquet")
    f = frame(seed=1)
    f["b"] = f["b"].astype(float) + 0.5
    f.to_parquet(tmp_path / "p1.parquet")
    r = ingest(data_spec(tmp_path), progress=lambda *_: None)
    assert r.schema.field("b").type == pa.float64()
    assert r.rows_read == 80 and "b" in r.numeric


def test_warehouse_shards_whose_types_differ_only_in_encoding_are_read_as_one(tmp_path):
    """A warehouse export: one shard dictionary-encodes a text column, one stores decimals, large strings, 32-bit
    integers or a column of nulls alone, and an excluded timestamp has a time zone in three shards and not in the
    fourth. Ray Data merged the files' whole schemas and failed ("Unable to merge: Field region has incompatible
    types: dictionary<...> vs string", a traceback, exit 1) though the columns used agree."""
    import datetime as dt
    import decimal

    rng = np.random.default_rng(0)
    for i in range(4):
        n = 30
        region = pa.array(rng.choice(["n", "s", "e"], n))
        spend = [decimal.Decimal(f"{v:.2f}") for v in rng.uniform(0, 99, n)]
        stamp = [dt.datetime(2026, 1, 1) + dt.timedelta(hours=int(h)) for h in rng.integers(0, 999, n)]
        pq.write_table(pa.table({
            "region": region.dictionary_encode() if i == 0 else region.cast(pa.large_string()) if i == 1 else region,
            "spend": pa.array(spend, pa.decimal128(10, 2)) if i < 2 else pa.array([float(v) for v in spend]),
            "orders": pa.array(rng.integers(0, 9, n), pa.int32() if i == 2 else pa.int64()),
            "coupon": pa.nulls(n) if i == 3 else pa.array(rng.choice(["a", "b"], n)),
            "last_order": pa.array(stamp, pa.timestamp("ns") if i == 3 else pa.timestamp("us", tz="UTC")),
            "y": pa.array(np.arange(n) % 2)}), tmp_path / f"part-{i}.parquet")
    with pytest.raises(DataError, match=r"column 'last_order' has type timestamp\[us, tz=UTC\] which trainyard cannot "
                                        r"use as a feature; dates and times are not read as features: derive a number "
                                        r"from it in the data \(days before a reference date, a weekday, an hour\), "
                                        r"or list it under data.features.exclude"):
        ingest(data_spec(tmp_path), progress=lambda *_: None)
    r = ingest(data_spec(tmp_path, features={"exclude": ["last_order"]}), progress=lambda *_: None)
    assert r.rows_read == 120
    assert (r.schema.field("region").type, r.schema.field("spend").type) == (pa.string(), pa.float64())
    assert "spend" in r.numeric and {"coupon", "region"} <= set(r.categorical) and "last_order" not in r.schema.names
    rows = r.split(TRAIN).to_pandas()
    assert set(rows["region"]) == {"n", "s", "e"} and rows["spend"].between(0, 99).all()


def test_a_timestamp_column_and_an_id_column_are_named_in_one_pass_before_ray(tmp_path):
    """`validate` (and `train` before Ray) named the timestamp column alone; excluded, the next try named the ID
    column: one problem a run, where the README promises every one at once."""
    import datetime as dt

    from jobs import precheck

    n = 60
    pq.write_table(pa.table({"recorded_at": pa.array([dt.datetime(2026, 1, 1) + dt.timedelta(hours=i) for i in range(n)]),
                             "asset_id": [f"U{i:05d}" for i in range(n)], "x": np.arange(n) * 0.5,
                             "y": np.arange(n) % 2}), tmp_path / "part-0.parquet")
    spec = validate_spec({"name": "t", "data": {"path": str(tmp_path), "label": "y"}})
    with pytest.raises(DataError) as err:
        precheck.check_columns(spec)
    lines = str(err.value).splitlines()
    assert [line.split(" has type ")[0].split(" holds ")[0] for line in lines] == ["column 'recorded_at'",
                                                                                   "column 'asset_id'"], lines
    listed = spec.model_copy(update={"data": spec.data.model_copy(update={"features": spec.data.features.model_copy(
        update={"exclude": ["recorded_at", "asset_id"]})})})
    precheck.check_columns(listed)


def test_shard_missing_a_column_is_named(tmp_path):
    frame().to_parquet(tmp_path / "p0.parquet")
    frame().drop(columns=["c"]).to_parquet(tmp_path / "p1.parquet")
    with pytest.raises(DataError, match=r"p1.parquet: missing column\(s\) \['c'\]"):
        ingest(data_spec(tmp_path))
    # Excluding the column makes the shards agree.
    assert ingest(data_spec(tmp_path, features={"exclude": ["c"]}), progress=lambda *_: None).rows_read == 80


def test_the_shard_that_differs_is_named_not_the_shards_that_agree(tmp_path):
    """Six monthly exports, one without 'ambient_temp_c': the five good ones were each told "has column(s)
    ['ambient_temp_c'] that <the first> lacks; fix the shard". Now the odd one out is named, once, either way round."""
    from jobs.datafiles import reconcile

    full = pa.schema([("x", pa.float64()), ("ambient_temp_c", pa.float64()), ("y", pa.int64())])
    short = pa.schema([("x", pa.float64()), ("y", pa.int64())])
    with pytest.raises(DataError) as exc:
        reconcile({"m01.csv": short, **{f"m0{i}.csv": full for i in range(2, 7)}}, None, set(), "y")
    assert str(exc.value) == ("m01.csv: missing column(s) ['ambient_temp_c'] that 5 of the 6 shards have; fix the "
                              "shard (a column it lacks may be added empty, null in every row: it is imputed there), "
                              "or list the column under data.features.exclude")
    with pytest.raises(DataError) as exc:
        reconcile({**{f"m0{i}.csv": short for i in range(1, 6)}, "m06.csv": full}, None, set(), "y")
    assert str(exc.value).startswith("m06.csv: has column(s) ['ambient_temp_c'] that 5 of the 6 shards lack; fix the "
                                     "shard (")
    with pytest.raises(DataError, match=r"^b.csv: has column\(s\) \['ambient_temp_c'\] that a.csv lacks; "):
        reconcile({"a.csv": short, "b.csv": full}, None, set(), "y")         # a tie: the first shard is the rule
    # A sensor added halfway (7 of 14 daily shards without it): one line for the 7, not one per newer shard.
    days = {f"d{i:02d}.parquet": short if i <= 7 else full for i in range(1, 15)}
    with pytest.raises(DataError) as exc:
        reconcile(days, None, set(), "y")
    assert str(exc.value) == (
        "column(s) ['ambient_temp_c'] are in 7 of the 14 shards and missing from the other 7 (d01.parquet, "
        "d02.parquet, d03.parquet and 4 more): a column added or dropped partway. Give the shards that lack it the "
        "column, empty (null in every row: it is imputed there), or list it under data.features.exclude")


def test_stray_cells_in_one_csv_shard_are_named_with_their_lines(tmp_path):
    """Two '?' cells in one monthly CSV made its column text there, and the shards "incompatible types (float in
    ..., string in ...)" with no cell named; one shard alone got the stray-cell message with its lines."""
    for month in (1, 2, 3):
        vib = [0.5 + i / 10 for i in range(20)]
        if month == 2:
            vib[3], vib[9] = "?", "?"
        pd.DataFrame({"vib": vib, "y": [i % 2 for i in range(20)]}).to_csv(tmp_path / f"m{month}.csv", index=False)
    with pytest.raises(DataError) as exc:
        check_files_of(tmp_path)
    assert str(exc.value) == (
        f"column 'vib' holds numbers but for 2 cell(s) of {tmp_path / 'm2.csv'}, which make it text there: "
        f"{tmp_path / 'm2.csv'} line 5 ('?'), {tmp_path / 'm2.csv'} line 11 ('?'). Fix those cells (leave them empty "
        "for a missing value), or list 'vib' under data.features.exclude")
    # A shard exported with thousands separators: numbers written as text there, said with the pandas option.
    pd.DataFrame({"vib": [f"{1000 + i:,}" for i in range(20)], "y": [0, 1] * 10}).to_csv(tmp_path / "m2.csv",
                                                                                         index=False)
    with pytest.raises(DataError, match=rf"^column 'vib' holds numbers written with a comma or a space between "
                                        rf"digits \(20 of its 20 filled cell\(s\), such as '1,000', .*thousands=',' "
                                        rf"\(or ' '\) for a thousands separator.* \(in "
                                        rf"{tmp_path / 'm2.csv'}, e.g. {tmp_path / 'm2.csv'} line 2: '1,000'; the other "
                                        rf"shards hold plain numbers\)$"):
        check_files_of(tmp_path)
    # A shard whose column is words, not numbers with strays, is still a disagreement between shards.
    pd.DataFrame({"vib": ["low", "high"] * 10, "y": [0, 1] * 10}).to_csv(tmp_path / "m2.csv", index=False)
    with pytest.raises(DataError, match=r"column 'vib' has incompatible types across shards \(float in .*m1.csv, "
                                        r"string in .*m2.csv\); make the shards agree or exclude the column"):
        check_files_of(tmp_path)
    # Dates as times in one monthly shard and as text in another (written 05/01/2023 there): not read as a
    # feature either way, which is the fix it gets.
    pd.DataFrame({"seen": ["2023-01-0%d" % (i % 9 + 1) for i in range(20)], "y": [0, 1] * 10}).to_csv(
        tmp_path / "m1.csv", index=False)
    pd.DataFrame({"seen": ["05/01/2023"] * 20, "y": [0, 1] * 10}).to_csv(tmp_path / "m2.csv", index=False)
    with pytest.raises(DataError, match=r"column 'seen' has incompatible types across shards \(time in .*m1.csv, "
                                        r"string in .*m2.csv\); dates and times are not features .*list it under "
                                        r"data.features.exclude"):
        check_files_of(tmp_path)


def check_files_of(folder: Path, fmt: str = "csv"):
    from jobs.datafiles import check_files, file_schema, resolve_files

    fs, files, _ = resolve_files(str(folder))
    return check_files(data_spec(folder, label="y"), {f: file_schema(fs, f, fmt) for f in files}, fmt, fs=fs)


def test_stray_cells_in_one_parquet_shard_are_named_with_their_rows(tmp_path):
    """A month's Parquet file whose sensor was written as text with 29 'n/a' among its readings was told only
    "incompatible types across shards (float in ..., string in ...)", and to exclude the sensor."""
    for month in (1, 2, 3):
        vib = [0.5 + i / 10 for i in range(40)]
        if month == 2:
            vib = [str(v) for v in vib]
            vib[3], vib[9], vib[12] = "n/a", None, "n/a"
        pq.write_table(pa.table({"vib": vib, "y": [i % 2 for i in range(40)]}), tmp_path / f"m{month}.parquet")
    with pytest.raises(DataError) as exc:
        check_files_of(tmp_path, "parquet")
    m2 = tmp_path / "m2.parquet"
    assert str(exc.value) == (
        f"column 'vib' holds numbers but for 2 cell(s) of {m2}, which make it text there: {m2} row 4 ('n/a'), {m2} "
        "row 13 ('n/a'). Fix those cells (leave them empty for a missing value), or list 'vib' under "
        "data.features.exclude")


def test_copies_under_hidden_or_underscore_folders_are_not_read_as_shards(tmp_path):
    """A notebook's .ipynb_checkpoints and a failed Spark job's _temporary hold copies of the shards: listed
    recursively by file name alone, their rows were read as well (twice in train, predict and evaluate)."""
    from jobs.datafiles import resolve_files

    (tmp_path / "d" / ".ipynb_checkpoints").mkdir(parents=True)
    (tmp_path / "d" / "_temporary" / "0").mkdir(parents=True)
    (tmp_path / "d" / "2024" / "_old").mkdir(parents=True)
    for path in ("d/a.csv", "d/2024/b.csv", "d/.ipynb_checkpoints/a-checkpoint.csv", "d/_temporary/0/part-0.csv",
                 "d/2024/_old/b.csv", "d/_SUCCESS.csv"):
        frame().to_csv(tmp_path / path, index=False)
    _, files, _ = resolve_files(str(tmp_path / "d"))
    assert [os.path.relpath(f, tmp_path / "d") for f in files] == ["2024/b.csv", "a.csv"]
    # A glob alike, below the folder it starts from (one that names a '_' folder itself is taken as asked).
    _, globbed, _ = resolve_files(str(tmp_path / "d" / "**" / "*.csv"))
    assert [os.path.relpath(f, tmp_path / "d") for f in globbed] == ["2024/b.csv", "a.csv"]
    _, asked, _ = resolve_files(str(tmp_path / "d" / "_temporary" / "0" / "*.csv"))
    assert [os.path.relpath(f, tmp_path / "d") for f in asked] == ["_temporary/0/part-0.csv"]
    (tmp_path / "e" / "_temporary").mkdir(parents=True)
    frame().to_csv(tmp_path / "e" / "_temporary" / "x.csv", index=False)
    with pytest.raises(DataError, match=r"holds no .parquet or .csv files \(1 under names starting with '.' or '_', "
                                        r"which are skipped\)"):
        resolve_files(str(tmp_path / "e"))


def test_incompatible_column_type_names_file_and_column(tmp_path):
    frame().to_parquet(tmp_path / "p0.parquet")
    frame(a=["oops"] * 40).to_parquet(tmp_path / "p1.parquet")
    with pytest.raises(DataError, match=r"column 'a' has incompatible types.*float in .*p0.parquet.*string in .*p1.parquet"):
        ingest(data_spec(tmp_path))


def test_missing_label_column(tmp_path):
    frame().to_parquet(tmp_path / "p0.parquet")
    with pytest.raises(DataError, match=r"label column 'target' is in none of the 1 file\(s\).*; columns are "
                                        r"\['a', 'b', 'c', 'y'\]. Fix data.label"):
        ingest(data_spec(tmp_path, label="target"))
    # A name a letter or a case away from a column is named, as `validate` names a misspelt key.
    with pytest.raises(DataError, match=r"label column 'Y' is in none .*; did you mean 'y'\? columns are "):
        ingest(data_spec(tmp_path, label="Y"))


def test_empty_data_and_corrupt_file(tmp_path):
    frame(n=0).to_parquet(tmp_path / "empty.parquet")
    with pytest.raises(DataError, match="hold no rows"):
        ingest(data_spec(tmp_path))
    bad = tmp_path / "bad"
    bad.mkdir()
    frame().to_parquet(bad / "ok.parquet")
    (bad / "torn.parquet").write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(DataError, match=r"torn.parquet: cannot read it as parquet"):
        ingest(data_spec(bad))
    # A file of 0 bytes is said to be empty, not corrupt.
    blank = tmp_path / "blank"
    blank.mkdir()
    (blank / "rows.csv").write_bytes(b"")
    with pytest.raises(DataError, match=r"rows.csv: the file is empty \(0 bytes\); remove it, or write its rows"):
        ingest(data_spec(blank))
    with pytest.raises(DataError, match="does not exist"):
        ingest(data_spec(tmp_path / "nowhere"))


def test_single_class_label(tmp_path):
    frame(y=[1] * 40).to_parquet(tmp_path / "p.parquet")
    with pytest.raises(DataError, match=r"label 'y' has a single class \(1\)"):
        ingest(data_spec(tmp_path, task="classification"))


def test_rows_without_label_dropped_and_counted(tmp_path):
    f = frame(n=60).astype({"y": float})
    f.loc[:4, "y"] = np.nan
    f.to_parquet(tmp_path / "p.parquet")
    r = ingest(data_spec(tmp_path), progress=lambda *_: None)
    assert r.rows_dropped_missing_label == 5 and r.rows_read == 60
    assert sum(r.split_rows.values()) == 55
    assert r.task == "classification" and r.classes == [0.0, 1.0]


def test_a_csvs_empty_text_labels_are_dropped_and_counted_not_a_class(tmp_path):
    """A CSV reads an empty cell of a text column as "": as a label that was a class of its own, ''."""
    f = frame(n=60)
    f["y"] = np.where(np.arange(60) % 2, "fail", "ok").astype(object)
    f.loc[:5, "y"] = ["", " ", "", None, "", ""]
    f.to_csv(tmp_path / "p.csv", index=False)
    r = ingest(data_spec(tmp_path), progress=lambda *_: None)
    assert r.classes == ["fail", "ok"] and r.rows_dropped_missing_label == 6
    assert sum(r.split_rows.values()) == 54


def test_infinite_values_and_a_misspelt_exclude_are_named(tmp_path):
    """An inf in a feature trained a model of NaNs, exit 0; a misspelt exclude left its column among the features."""
    f = frame(n=40).astype({"b": float})
    f.loc[3, "a"], f.loc[7, "b"] = np.inf, -np.inf
    f.to_parquet(tmp_path / "p.parquet")
    with pytest.raises(DataError, match=r"column 'a' holds 1 infinite value\(s\).*column 'b' holds 1 .*empty those "
                                        r"cells"):
        ingest(data_spec(tmp_path), progress=lambda *_: None)
    clean = tmp_path / "clean"
    clean.mkdir()
    frame(n=40).to_parquet(clean / "p.parquet")
    with pytest.raises(DataError, match=r"data.features.exclude names column 'C', which is in none of the files; "
                                        r"did you mean 'c'\? columns are \['a', 'b', 'c', 'y'\]. Fix "
                                        r"data.features.exclude$"):
        ingest(data_spec(clean, features={"exclude": ["C"]}), progress=lambda *_: None)


def test_a_feature_with_no_value_in_the_train_split_is_said(tmp_path):
    """A column empty in every row was imputed one constant and trained on without a word; it is named now."""
    from jobs.pipeline import prepare

    f = frame(n=40)
    f["gone"] = np.nan
    f["blank"] = pd.Series([None] * 40, dtype=object)
    # And a column of two units (mmol/L and mg/dL), which a lab's table trained and served as one spread.
    f["glucose"] = [4.0 + (i % 6) for i in range(30)] + [90.0 + 10 * i for i in range(10)]
    pq.write_table(pa.Table.from_pandas(f, preserve_index=False).cast(pa.schema(
        [pa.field(n, pa.string() if n in ("c", "blank") else t) for n, t in
         zip(f.columns, pa.Table.from_pandas(f, preserve_index=False).schema.types)])), tmp_path / "p.parquet")
    spec = validate_spec({"name": "t", "data": {"path": str(tmp_path), "label": "y",
                                                "features": {"categorical": ["c", "blank"],
                                                             "numeric": ["a", "gone", "glucose"], "exclude": ["b"]}},
                          "output": str(tmp_path / "out")})
    said = []
    prepare(spec, progress=said.append)
    assert any(line.startswith("[prepare] 'gone', 'blank': no value in any row of the train split") and
               "features.exclude" in line for line in said), said
    [note] = [line for line in said if line.startswith("[prepare] note: column 'glucose' holds two groups")]
    assert "Two units in one column" in note and sum("holds two groups" in line for line in said) == 1
    said.clear()
    prepare(validate_spec({**spec.model_dump(), "data": {**spec.data.model_dump(), "features": {
        "categorical": ["c"], "numeric": ["a"], "exclude": ["b", "gone", "blank", "glucose"]}}}),
            progress=said.append)
    assert not any("no value in any row" in line for line in said)


def test_a_semicolon_separated_csv_is_told_to_use_commas(tmp_path):
    """A ';'-separated file reads as one column named by its whole header: the advice was "Fix data.label"."""
    (tmp_path / "rows.csv").write_text("a;b;y\n" + "".join(f"{i};{i * 2};{i % 2}\n" for i in range(20)))
    with pytest.raises(DataError, match=r"1 of the 1 file\(s\) .* read as a single column named 'a;b;y': their fields "
                                        r"are separated by ';', and trainyard reads CSV with ',' .*sep=';'"):
        ingest(data_spec(tmp_path), progress=lambda *_: None)


def test_label_classes_written_two_ways_are_refused_or_said(tmp_path):
    """'Yes ' next to 'Yes' became a class of its own without a word (only the class counts showed it); then a
    note said it, and 'Yes'/'yes'/'No'/'no' in monthly exports still trained 4 classes (a model answering 'no' to
    every test row) after `validate` said OK. Classes that differ only in case or spaces are refused, in validate
    and in ingest; a yes/no answer spelt two ways ('Y', 'yes') is said."""
    from jobs import precheck

    f = frame(n=40)
    f["y"] = ["Yes", "No", "Yes ", "no"] * 10
    f.to_csv(tmp_path / "p.csv", index=False)
    said = (f"label 'y': classes 'No' and 'no'; 'Yes' and 'Yes ' differ only in case or in spaces around them, and "
            f"would be trained as different classes each (data.path: {tmp_path}). Write each class one way in the "
            "data, e.g. with pandas: df[label].str.strip() for the spaces, .str.lower() for the case")
    with pytest.raises(DataError) as err:
        ingest(data_spec(tmp_path), progress=lambda *_: None)
    assert str(err.value) == said
    assert precheck.class_problems(validate_spec({"name": "t", "data": {"path": str(tmp_path), "label": "y"}})) \
        == [said]
    import yaml

    from trainyard import cli
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump({"name": "t", "data": {"path": str(tmp_path), "label": "y"}}))
    assert cli.main(["validate", str(tmp_path / "spec.yaml")]) == 2
    f["y"] = ["Y", "N", "yes", "no"] * 10
    f.to_csv(tmp_path / "p.csv", index=False)
    lines = []
    r = ingest(data_spec(tmp_path), progress=lines.append)
    assert r.classes == ["N", "Y", "no", "yes"]
    assert "[ingest] label 'y': classes 'N' and 'no' are one yes/no answer spelt differently, and are trained as " \
           "different classes; if they are one, make them the same in the data" in lines


def test_inference_is_reported(tmp_path):
    f = frame(n=60)
    f["shift"] = np.arange(60) % 3
    f["flag"] = np.arange(60) % 2 == 0
    f.to_csv(tmp_path / "p.csv", index=False)
    r = ingest(data_spec(tmp_path), progress=lambda *_: None)
    assert r.format == "csv"
    assert set(r.categorical) == {"c", "shift", "flag"} and set(r.numeric) == {"a", "b"}
    assert "task" in r.inferred
    # A count of a few values reads as categories by default: the summary says so, and what that does to a new value.
    assert r.inferred["shift"] == (
        "categorical (3 distinct integers, 0 to 2; if it is a count or a scale, list it under "
        "data.features.numeric: as a category, a value not seen in training, such as 3, is the unknown category)")
    # Both lists given: other columns are reported, not silently dropped.
    r2 = ingest(data_spec(tmp_path, features={"numeric": ["a"], "categorical": ["c"]}), progress=lambda *_: None)
    assert set(r2.unused_columns) == {"b", "shift", "flag"}


def test_split_is_seeded_stratified_and_disjoint(tmp_path):
    n = 400
    f = frame(n=n, y=np.where(np.arange(n) % 10 == 0, "rare", "common"))
    f.to_parquet(tmp_path / "p.parquet")
    spec = data_spec(tmp_path, split={"val": 0.2, "test": 0.2, "seed": 3})
    r1 = ingest(spec, progress=lambda *_: None)
    r2 = ingest(spec, progress=lambda *_: None)
    parts1 = {k: r1.split(k).to_pandas().sort_values("a").reset_index(drop=True) for k in (TRAIN, VAL, TEST)}
    parts2 = {k: r2.split(k).to_pandas().sort_values("a").reset_index(drop=True) for k in (TRAIN, VAL, TEST)}
    for k in parts1:
        pd.testing.assert_frame_equal(parts1[k], parts2[k])
    assert r1.class_counts["test"] == {"common": 72, "rare": 8}      # floor(360 × 0.2), floor(40 × 0.2)
    assert r1.class_counts["val"] == {"common": 72, "rare": 8}
    assert set(parts1[TRAIN]["a"]).isdisjoint(parts1[TEST]["a"])
    other = ingest(data_spec(tmp_path, split={"val": 0.2, "test": 0.2, "seed": 4}), progress=lambda *_: None)
    assert set(other.split(TEST).to_pandas()["a"]) != set(parts1[TEST]["a"])


def test_a_stray_value_past_a_csvs_first_block_is_named_with_its_line(tmp_path):
    """A column's type is read from each CSV's first 4 MB; a '?' further down failed the read deep in Ray Data
    with its retry advice as the only message, naming neither the column, the line nor the value. Then it was
    named, after ~160 lines of Ray Data's own log of the failed task (twice its traceback, and advice to report
    a Ray bug): those are held back where trainyard says the error itself."""
    n = 400_000                                               # ~4.6 MB: the "?" lies past the first block
    f = pd.DataFrame({"a": np.round(np.random.default_rng(0).normal(size=n), 6), "y": np.arange(n) % 2})
    f = f.astype({"a": object})
    f.loc[n - 10, "a"] = "?"
    f.to_csv(tmp_path / "p.csv", index=False)
    assert (tmp_path / "p.csv").stat().st_size > 4 << 20
    said = logging.Handler()
    said.emit = lambda record: logged.append(record.getMessage())
    logged: list[str] = []
    logging.getLogger("ray.data").addHandler(said)           # where Ray Data's records go, and its handlers are
    try:
        with pytest.raises(DataError, match=rf"p.csv, line {n - 10 + 2}: column 'a' holds '\?', which does not "
                                            r"read as double .*leave it empty for a missing value"):
            ingest(data_spec(tmp_path), progress=lambda *_: None)
    finally:
        logging.getLogger("ray.data").removeHandler(said)
    assert not [m for m in logged if "An exception was raised from a task" in m or "Full stack trace" in m], logged


def test_a_numeric_column_with_a_stray_value_is_named_not_taken_for_categories(tmp_path):
    """One '?' made a numeric column text, inferred categorical: every number its own category (capped at 50),
    a model that ignored the column, exit 0. Listing it as numeric said "holds text", naming no value."""
    f = frame(n=60).astype({"a": object})
    f.loc[[5, 9], "a"] = ["?", " n/a "]
    f.to_csv(tmp_path / "p.csv", index=False)
    with pytest.raises(DataError, match=r"column 'a' holds numbers but for 2 of its 60 filled cell\(s\) \(values "
                                        r"such as '\?', 'n/a'\).*list it under data.features.categorical") as err:
        ingest(data_spec(tmp_path), progress=lambda *_: None)
    # Where they are, as `trainyard predict` says it (the probe that counted them knows no line).
    assert str(err.value).endswith(f". Where: {tmp_path / 'p.csv'} line 7 ('?'), {tmp_path / 'p.csv'} line 11 "
                                   "(' n/a ')"), str(err.value)
    with pytest.raises(DataError, match=r"column 'a' holds numbers but for 2 of its"):
        ingest(data_spec(tmp_path, features={"numeric": ["a", "b"]}), progress=lambda *_: None)
    r = ingest(data_spec(tmp_path, features={"categorical": ["a"]}), progress=lambda *_: None)
    assert "a" in r.categorical                                     # the override still holds


def test_an_id_column_and_a_written_index_are_named_not_taken_for_features(tmp_path):
    """A patient ID (a different string in every row) was a categorical feature: 50 real IDs in the bundle's
    schema, served at /schema. pandas' index (to_csv without index=False) was a numeric feature."""
    from types import SimpleNamespace

    from jobs.pipeline import print_ingest_summary

    f = frame(n=60, patient=[f"P{100000 + i}" for i in range(60)], visits=np.arange(60) * 2)
    f.to_csv(tmp_path / "p.csv")                                            # the index too, as column ''
    with pytest.raises(DataError) as err:
        ingest(data_spec(tmp_path), progress=lambda *_: None)
    assert str(err.value).splitlines() == [
        "column '' (no name in the header: the index pandas writes unless to_csv(..., index=False)) holds the whole "
        "numbers 0 to 59, each once: a row number or an ID, not a feature a model can learn from. List it under "
        "data.features.exclude (or under data.features.numeric to use it anyway)",
        "column 'patient' holds a different value in each of its 60 rows ('P100000', 'P100001', ...): an ID, not a "
        "feature a model can learn from, and 50 of its values would be kept in the bundle as categories. List it "
        "under data.features.exclude (or under data.features.categorical to use it anyway)"]
    r = ingest(data_spec(tmp_path, features={"exclude": ["", "patient"]}), progress=lambda *_: None)
    assert "visits" in r.numeric            # distinct whole numbers, not consecutive: a count, not a row number
    assert r.summary()["excluded_columns"] == ["", "patient"]      # summary.json said "unused_columns": [] alone
    lines = []
    print_ingest_summary(SimpleNamespace(ingest=r), lines.append)
    assert "[data] excluded (data.features.exclude): '', 'patient'" in lines[0].splitlines()
    r = ingest(data_spec(tmp_path, features={"exclude": [""], "categorical": ["patient"]}), progress=lambda *_: None)
    assert "patient" in r.categorical       # listed: used as the user asks


def test_warehouse_ids_repeats_across_blocks_numbers_and_dates_stored_as_text(tmp_path):
    """A warehouse export of 2,000 customers, as `validate` (before Ray) and ingest (after) read it:
    - customer_id, sparse whole numbers, each once, was a numeric feature (predictions moved with the ID);
    - a login time written '27.09.2026 00:44', distinct within each Ray block but not across them, was refused
      as "a different value in each of its rows: an ID" (validate, reading the file whole, had passed it);
    - a price stored as text in a Parquet string column was 50 of its values kept as categories, nothing said;
      listed under numeric, it was "holds text (values such as ); move it to categorical";
    - a date written 12/05/2022 was a category of 50 of its 1,152 values, nothing said; both dates are refused
      now, as a Parquet timestamp is (as categories, every date after training is one the model never saw)."""
    from jobs import precheck

    rng = np.random.default_rng(0)
    n = 2000
    first = pd.Timestamp("2026-09-01")
    logins = [(first + pd.Timedelta(minutes=7 * i)).strftime("%d.%m.%Y %H:%M") for i in range(n)]
    logins[1500:1510] = logins[:10]           # distinct within each shard; ten repeats across shards
    table = pa.table({"customer_id": pa.array(rng.choice(10**8, n, replace=False)),
                      "last_login": logins, "price": [f"{v:.2f}" for v in rng.uniform(5, 500, n)],
                      "signup": [f"{m:02d}/{d:02d}/20{y}" for m, d, y in zip(rng.integers(1, 13, n),
                                                                          rng.integers(1, 29, n),
                                                                          rng.integers(15, 25, n))],
                      "orders": rng.integers(0, 40, n), "paid": rng.choice(10**7, n, replace=False),
                      "y": np.arange(n) % 2})
    for i in range(4):                                                          # 4 shards: 4 blocks at least
        pq.write_table(table.slice(500 * i, 500), tmp_path / f"customers-{i}.parquet")
    spec = validate_spec({"name": "c", "data": {"path": str(tmp_path), "label": "y"}})
    refused = [
        "column 'customer_id' holds a different whole number in each of its 2000 rows",
        "column 'last_login' holds dates or times written as text (values such as '01.09.2026 00:00', '01.09.2026 "
        "00:07', ",
        "column 'price' holds numbers stored as text in every filled cell (values such as",
        "column 'signup' holds dates or times written as text (values such as '",
    ]
    with pytest.raises(DataError) as err:
        ingest(spec.data, progress=lambda *_: None)
    assert str(err.value).startswith(refused[0]) and "last_login" not in str(err.value), str(err.value)
    said = precheck.problems(spec)[1]
    assert [p[:len(r)] for p, r in zip(said, refused)] == refused and len(said) == 4, said
    assert "more distinct values than categories could keep): store them as numbers (pandas: df['price'] = " \
           "pd.to_numeric(df['price'])" in said[2]
    assert said[3].endswith("Derive a number from it in the data (days before a reference date, a weekday), or list "
                            "it under data.features.exclude; or, to keep its values as categories, list it under "
                            "data.features.categorical")
    listed = validate_spec({"name": "c", "data": {"path": str(tmp_path), "label": "y", "features": {
        "exclude": ["customer_id"], "numeric": ["price", "orders"]}}})
    assert precheck.problems(listed)[1][1].startswith(refused[2]), precheck.problems(listed)[1]
    lines: list[str] = []
    r = ingest(data_spec(tmp_path, features={"exclude": ["customer_id", "price"],
                                             "categorical": ["last_login", "signup"]}), progress=lines.append)
    assert "last_login" in r.categorical and "signup" in r.categorical
    assert "paid" in r.numeric              # a different whole number in each row, but not named as an ID
    notes = [line for line in lines if line.startswith("[ingest] note: column 'signup' has more than 100 distinct")]
    assert notes and re.search(r"its values look like dates or times \('\d\d/\d\d/20\d\d', '\d\d/\d\d/20\d\d'\), "
                               r"which trainyard does not read: derive a number from them in the data \(days before "
                               r"a reference date, a weekday\), or list it under data.features.exclude$", notes[0]), lines


def test_a_regression_label_of_numbers_with_a_unit_is_named_with_the_fix(tmp_path):
    """Where no check before Ray ran (a job submitted to a cluster), ingest says the same as `validate`."""
    f = frame(n=30)
    f["y"] = [f"{i / 3:.1f} days" for i in range(30)]
    f.to_csv(tmp_path / "p.csv", index=False)
    with pytest.raises(DataError, match=r"^label 'y' holds numbers written with text \(values such as '0.0 days', "
                                        r"'0.3 days', '0.7 days'\), so it reads as string.*write the numbers alone"):
        ingest(data_spec(tmp_path, task="regression"), progress=lambda *_: None)


def test_a_column_name_given_twice_is_named(tmp_path):
    """A CSV header `a,a,...` failed with a KeyError traceback from the schema reconciliation."""
    (tmp_path / "p.csv").write_text("a,a,c,y\n1,2,x,0\n3,4,z,1\n")
    with pytest.raises(DataError, match=r"p.csv: column name\(s\) \['a'\] appear more than once in its header"):
        ingest(data_spec(tmp_path), progress=lambda *_: None)


def test_a_folder_mixing_parquet_and_csv_gets_advice_that_works(tmp_path):
    """The advice was "or set data.format", which then failed reading the CSV as Parquet."""
    frame().to_parquet(tmp_path / "a.parquet")
    frame().to_csv(tmp_path / "b.csv", index=False)
    with pytest.raises(DataError, match=r"mixes Parquet and CSV files \(.*b.csv, .*a.parquet\); "
                                        r".*FOLDER/\*\*/\*.parquet"):
        ingest(data_spec(tmp_path), progress=lambda *_: None)
    with pytest.raises(DataError, match=r"data.format is parquet, but data.path also holds \[.*b.csv'\]"):
        ingest(data_spec(tmp_path, format="parquet"), progress=lambda *_: None)
    r = ingest(data_spec(str(tmp_path / "**" / "*.parquet"), format="parquet"), progress=lambda *_: None)
    assert r.rows_read == 40


def test_an_empty_validation_split_is_refused(tmp_path):
    """Without validation rows every epoch scored NaN, the best epoch was -1 and early stopping ended the run
    after its patience; exit 0."""
    frame(n=12).to_parquet(tmp_path / "p.parquet")            # 6 rows a class: floor(6 × 0.15) = 0 val rows each
    with pytest.raises(DataError, match=r"the validation split is empty \(12 rows, data.split.val 0.15\).*Raise "
                                        r"data.split.val, or add rows"):
        ingest(data_spec(tmp_path), progress=lambda *_: None)
    with pytest.raises(DataError, match=r"validation split is empty .*data.split.val 0\)"):
        ingest(data_spec(tmp_path, split={"val": 0, "test": 0.5}), progress=lambda *_: None)
    # One row per class (an identifier taken for the label): not "raise data.split.val", which cannot help.
    ids = tmp_path / "ids"
    ids.mkdir()
    frame(n=60).assign(y=[f"id{i}" for i in range(60)]).to_parquet(ids / "p.parquet")
    with pytest.raises(DataError, match=r"label 'y' has 60 classes in 60 rows, too few rows per class .* Is it an "
                                        r"identifier rather than what to predict\? Fix data.label"):
        ingest(data_spec(ids), progress=lambda *_: None)


def test_the_message_of_a_failed_ray_data_task_is_the_users_not_rays_retry_advice():
    """A Ray Data task's exception comes back as RayTaskError(UserCodeException) whose text ends in Ray's retry
    advice; the message trainyard shows (ingest, images, monitor) is the user code's own last line."""
    import ray

    from cluster.errors import root_cause

    def fail(batch):
        raise ValueError("column 'x' holds 'abc'")

    with pytest.raises(Exception) as info:
        ray.data.range(3).map_batches(fail).take_all()
    assert "retried_map_errors" in str(info.value)          # what the old last-line rule showed
    assert root_cause(info.value) == "ValueError: column 'x' holds 'abc'"
    assert root_cause(ValueError("plain")) == "plain"


def test_a_split_made_lumpy_by_identical_rows_is_said(tmp_path):
    """Identical rows share a split (none leaks from train into test); with few distinct rows the fractions came
    out far from those asked (35% test, a validation split without one class) without a word."""
    base = pd.DataFrame({"a": ["x", "y", "z", "x", "y", "z", "x", "y"], "b": [1, 1, 1, 2, 2, 2, 3, 3],
                         "y": ["p", "q"] * 4})
    pd.concat([base] * 40, ignore_index=True).to_parquet(tmp_path / "p.parquet")
    said = []
    try:
        ingest(data_spec(tmp_path), progress=said.append)
    except DataError:
        pass                                 # an empty split may follow; the line comes first
    line = next((s for s in said if s.startswith("[ingest] split: asked")), None)
    assert line is not None and "only 8 of the 320 rows are distinct" in line, said


def test_an_auc_that_picks_epochs_needs_two_classes_in_validation():
    """With one class in the validation split val_auc was NaN every epoch, "best epoch -1", exit 0 with a bundle."""
    from jobs.pipeline import check_auc_judgeable

    base = {"name": "t", "data": {"path": "d", "label": "y"}}
    spec = validate_spec({**base, "train": {"early_stop": {"metric": "val_auc", "patience": 2}}})
    with pytest.raises(DataError, match=r"the validation split holds one class only \('no': 2 row\(s\)\), where "
                                        r"val_auc is undefined, .* judge by val_loss \(train.early_stop.metric\)"):
        check_auc_judgeable(spec, {"train": {"no": 9, "yes": 5}, "val": {"no": 2}})
    check_auc_judgeable(spec, {"val": {"no": 2, "yes": 1}})
    check_auc_judgeable(validate_spec(base), {"val": {"no": 2}})          # judged by val_loss: nothing to refuse
    tuned = validate_spec({**base, "tune": {"metric": "val_auc"}})
    with pytest.raises(DataError, match=r"judge by val_loss \(tune.metric\)"):
        check_auc_judgeable(tuned, {"val": {"no": 2}})


def test_numbers_written_with_a_decimal_comma_are_named_not_taken_for_categories(tmp_path):
    """A European CSV re-saved with sep=';' alone (the advice for ';' files) trained with its income, age and
    debt ratio as categories, exit 0: every "25,0" a category of its own."""
    f = frame(n=60).astype({"a": object})
    f["a"] = [f"{v:.1f}".replace(".", ",") if i % 3 else str(int(v)) for i, v in enumerate(f["b"] * 10)]
    f.to_csv(tmp_path / "p.csv", index=False)
    with pytest.raises(DataError, match=r"column 'a' holds numbers written with a comma or a space between digits \(40 of its 60 filled "
                                        r"cell\(s\), such as .*pd.read_csv\(path, decimal=','\).*list it under "
                                        r"data.features.categorical"):
        ingest(data_spec(tmp_path), progress=lambda *_: None)
    r = ingest(data_spec(tmp_path, features={"categorical": ["a"]}), progress=lambda *_: None)
    assert "a" in r.categorical                                     # the override still holds


def test_a_file_type_trainyard_does_not_read_is_named_with_how_to_convert_it():
    """A .json path got "cannot infer data.format; set data.format: parquet or csv", inviting a hopeless
    `format: csv`; a single .csv under `format: parquet` was said to be "also" there."""
    from jobs.datafiles import infer_format

    with pytest.raises(DataError, match=r"data.path names \['/x/credit.json'\]: trainyard reads CSV and Parquet "
                                        r"files .*pd.read_json\(path\).to_parquet\('data.parquet'\)"):
        infer_format(["/x/credit.json"], None)
    with pytest.raises(DataError, match=r"data.format is parquet, but data.path names \['/x/a.csv'\]: set "
                                        r"data.format to match, or leave it out$"):
        infer_format(["/x/a.csv"], "parquet")


def test_a_file_under_format_csv_that_is_parquet_or_json_is_named_as_such(tmp_path):
    """`data.format: csv` on a Parquet file got Arrow's "CSV parse error: Expected 1 columns"; on JSON lines it
    parsed, and the label was "in none of the files; columns are ['{"a":0', 'y:0}']"."""
    import pyarrow.fs as pafs

    from jobs.datafiles import file_schema
    frame = pd.DataFrame({"a": [1, 2], "y": [0, 1]})
    frame.to_parquet(tmp_path / "table.bin")
    frame.to_json(tmp_path / "table.dat", orient="records", lines=True)
    fs = pafs.LocalFileSystem()
    with pytest.raises(DataError, match=r"table.bin: data.format is csv, but the file is Parquet; set data.format: "
                                        r"parquet$"):
        file_schema(fs, str(tmp_path / "table.bin"), "csv")
    with pytest.raises(DataError, match=r"table.dat: data.format is csv, but the file holds JSON "
                                        r"\('\{\"a\":1'\.\.\.\): trainyard reads CSV and Parquet files .*"
                                        r"lines=True for JSON lines"):
        file_schema(fs, str(tmp_path / "table.dat"), "csv")


def test_a_csv_saved_as_latin_1_is_named_with_its_line_and_how_to_save_it_as_utf_8(tmp_path):
    """A Latin-1 header ended `validate` and `train` with Python's UnicodeDecodeError traceback; Latin-1 values made
    the column "type binary which trainyard cannot use as a feature; list it under data.features.exclude". A data
    line is named by its number, column and character, not shown: its other cells may be a patient's."""
    import pyarrow.fs as pafs

    from jobs.datafiles import file_schema
    from serving.tables import TableError, read_table

    (tmp_path / "header.csv").write_bytes("Région,y\nNord,0\n".encode("latin-1"))
    (tmp_path / "values.csv").write_bytes("name,region,y\nAnna,Nord,0\n\"Doe, Jane\",Süd,1\n".encode("latin-1"))
    fs = pafs.LocalFileSystem()
    with pytest.raises(DataError, match=r"header.csv: its header holds text that is not UTF-8 \(line 1: 'Région,y' as "
                                        r"cp1252\); trainyard reads CSV files as UTF-8. Save the file as UTF-8, e.g. "
                                        r"iconv -f cp1252 -t utf-8 .*header.csv > fixed.csv, or in Python pandas"):
        file_schema(fs, str(tmp_path / "header.csv"), "csv")
    with pytest.raises(DataError, match=r"values.csv: column 'region' holds text that is not UTF-8 \(line 3: "
                                        r"byte 0xfc, 'ü' as cp1252\)") as caught:
        file_schema(fs, str(tmp_path / "values.csv"), "csv")
    assert "Doe" not in str(caught.value)
    # The column of a quoted note across lines, and a UTF-8 header's accented name (a review: 'id', and
    # 'tempÃ©rature'); a byte-order mark is no part of the first name.
    from jobs.csvfix import HEAD_BYTES, not_utf8
    (tmp_path / "notes.csv").write_bytes('\ufeffid,température,note\n1,2,"line one\nline two caf'.encode()
                                         + b'\xe9",x\n')
    assert "(line 3, column 'note': byte 0xe9, 'é' as cp1252)" in not_utf8(fs, str(tmp_path / "notes.csv"), "it")
    (tmp_path / "notes.csv").write_bytes("id,température\n1,2".encode() + b"\xb0C\n")
    assert "(line 2, column 'température': byte 0xb0, '°' as cp1252)" in not_utf8(fs, str(tmp_path / "notes.csv"), "it")
    # A UTF-8 character cut by the 4 MB read is not the file's fault: the line named is the real one, further on.
    line = "é,1\n".encode()
    body = b"a,b\n" + line * ((HEAD_BYTES - 5) // len(line)) + "é".encode()[:1]
    (tmp_path / "big.csv").write_bytes(body + "é".encode()[1:] + b",1\n" + line * 10 + b"\xe9,2\n")
    said = not_utf8(fs, str(tmp_path / "big.csv"), "it")
    assert "(line" not in said and "holds text that is not UTF-8; " in said, said        # past the 4 MB read
    # `trainyard predict` reads its rows with pandas: the same fix, not "cannot read it as csv: 'utf-8' codec...".
    with pytest.raises(TableError, match=r"values.csv: the file holds text that is not UTF-8 \(line 3, column "
                                         r"'region': byte 0xfc, 'ü' as cp1252\); .* iconv -f cp1252 -t utf-8 "
                                         r".*values.csv > fixed.csv"):
        read_table(tmp_path / "values.csv")


def test_a_cell_is_named_by_the_line_an_editor_shows_past_quoted_line_breaks(tmp_path):
    """Ten notes of three lines each above a '?' in record 200: "line 202", where the editor shows line 222."""
    import pyarrow.fs as pafs

    from jobs.datafiles import column_cells, record_lines

    rows = (["x,y,note"] + [f'{i},{i % 2},"multi\nline\ntext"' for i in range(10)] + [""]
            + [f"{i},{i % 2},plain" for i in range(10, 199)] + ["?,1,plain", "5,0,plain"])
    (tmp_path / "l.csv").write_text("\n".join(rows) + "\n")
    fs = pafs.LocalFileSystem()
    lines = record_lines(fs, str(tmp_path / "l.csv"))
    assert lines[:3] == [2, 5, 8] and lines[10] == 33 and len(lines) == 201
    cells = column_cells(fs, str(tmp_path / "l.csv"), "x")
    assert [line for line, v in cells if v == "?"] == [222]
    with pytest.raises(DataError, match=r"l.csv line 222 \('\?'\)"):
        ingest(data_spec(tmp_path), progress=lambda *_: None)


def test_a_files_header_is_read_once_for_precheck_and_ingest_and_again_once_it_changes(tmp_path):
    """`jobs.precheck` reads every file's header before Ray starts and ingest a few seconds later: the second read
    is the first's, while the file is the same (size and modification time)."""
    import pyarrow.fs as pafs

    from jobs.datafiles import file_schema

    path = str(tmp_path / "p.csv")
    frame(n=5).to_csv(path, index=False)
    fs = pafs.LocalFileSystem()
    first = file_schema(fs, path, "csv")
    assert file_schema(fs, path, "csv") is first
    frame(n=5).rename(columns={"a": "renamed"}).to_csv(path, index=False)
    assert file_schema(fs, path, "csv").names == ["renamed", "b", "c", "y"]


def test_a_csvs_empty_and_na_cells_of_a_category_are_missing_not_a_category(tmp_path):
    """README: in a CSV an empty cell and 'NA' are missing values. In a column of text they were read as strings:
    '' became a category of its own, which `trainyard predict` (pandas: NaN) never sends, and was not counted."""
    from jobs import preprocess

    f = frame(n=40)
    f.loc[[1, 2, 3], "c"] = [None, "", "NA"]
    f.to_csv(tmp_path / "p.csv", index=False)
    spec = data_spec(tmp_path)
    r = ingest(spec, progress=lambda *_: None)
    assert r.missing == {"c": 3}
    pre = preprocess.fit(r.split(TRAIN), spec, numeric=r.numeric, categorical=r.categorical, task=r.task,
                         classes=r.classes)
    assert sorted(pre.categorical[0].categories) == ["x", "z"]


def test_missing_feature_values_are_counted_per_column(tmp_path):
    """They were imputed without a word: a column mostly empty looked like any other in the summary."""
    f = frame(n=40)
    f.loc[[1, 2, 3], "a"] = np.nan
    f.to_parquet(tmp_path / "p.parquet")
    r = ingest(data_spec(tmp_path), progress=lambda *_: None)
    assert r.missing == {"a": 3} and r.summary()["missing_values"] == {"a": 3}


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_hive_folder_names_never_replace_or_add_columns(tmp_path, fmt):
    """A data lake export in key=value folders: Ray Data parsed each folder name into a column by default, put the
    folder's value over the file's own column of that name (a shift of 3 trained as 1 or 2, while predict and the
    server read the file's 3), and failed on a value that would not cast ('north' for an int column) with Ray's
    retry advice for message. The files' own columns are read; a key only in folder names is said, and named
    when a feature or the split asks for it."""
    def write(df, path):
        path.parent.mkdir(parents=True, exist_ok=True)
        df.to_parquet(path) if fmt == "parquet" else df.to_csv(path, index=False)

    for folder in ("site=north/shift=1", "site=south/shift=2"):
        write(frame(n=60, shift=np.arange(60) % 3 + 1), tmp_path / "d" / folder / f"part-0.{fmt}")
    said = []
    r = ingest(data_spec(tmp_path / "d", features={"categorical": ["c", "shift"], "numeric": ["a", "b"]}),
               progress=said.append)
    shifts = [row["shift"] for row in r.dataset.take_all()]
    assert sorted(set(shifts)) == [1, 2, 3] and r.rows_read == 120 and "site" not in r.schema.names
    assert [line for line in said if "folder names" in line] == [
        "[ingest] note: folder names give site (site=north/), not read: trainyard reads the files' own columns, as "
        "predict and the server do; write it into the files to use it"]
    with pytest.raises(DataError, match=r"data.features.categorical names column 'site', which is in none of the "
                                        r"files \(it is only in folder names, site=north/: trainyard reads the "
                                        r"files' own columns; write it into the files to use it\)"):
        ingest(data_spec(tmp_path / "d", features={"categorical": ["site"]}), progress=lambda *_: None)
    with pytest.raises(DataError, match=r"data.split.by names column 'site', which is in none of the files \(it is "
                                        r"only in folder names"):
        ingest(data_spec(tmp_path / "d", split={"by": "site"}), progress=lambda *_: None)
    with pytest.raises(DataError, match=r"label column 'site' is in none of the 2 file\(s\) under .*\(it is only in "
                                        r"folder names, site=north/"):
        ingest(data_spec(tmp_path / "d", label="site"), progress=lambda *_: None)


def test_compressed_shards_are_named_not_skipped(tmp_path):
    """A folder's listing kept .csv and .parquet files only: its .csv.gz shards were skipped without a word, and
    a job trained on half its rows; a folder of them alone said it held no files."""
    from jobs.datafiles import resolve_files

    (tmp_path / "d" / "sub").mkdir(parents=True)
    frame().to_csv(tmp_path / "d" / "part-0.csv", index=False)
    frame().to_csv(tmp_path / "d" / "sub" / "part-1.csv.gz", index=False)
    (tmp_path / "d" / "_SUCCESS").write_text("")
    (tmp_path / "d" / "notes.txt.gz").write_bytes(b"")        # not a table: left alone
    expected = (r"data.path holds 1 compressed file\(s\) \(.*/d/sub/part-1.csv.gz\), which trainyard does not "
                r"read: decompress them \(e.g. gunzip FILE\), or save each as Parquet")
    for path in (tmp_path / "d", tmp_path / "d" / "**" / "*.csv*", tmp_path / "d" / "sub" / "part-1.csv.gz"):
        with pytest.raises(DataError, match=expected):
            resolve_files(str(path))
    _, files, _ = resolve_files(str(tmp_path / "d" / "*.csv"))
    assert [os.path.basename(f) for f in files] == ["part-0.csv"]


def test_a_glob_of_folders_reads_their_files_and_a_file_named_twice_is_one_shard(tmp_path):
    """`data.path: lake/site=*` matched folders and said it matched no files; a folder and a file in it, both
    listed, counted that file twice in the `[ingest]` line."""
    from jobs.datafiles import resolve_files

    for site in ("site=a", "site=b"):
        (tmp_path / "lake" / site / "day=1").mkdir(parents=True)
        frame().to_parquet(tmp_path / "lake" / site / "day=1" / "part-0.parquet")
    _, files, _ = resolve_files(str(tmp_path / "lake" / "site=*"))
    assert [os.path.relpath(f, tmp_path / "lake") for f in files] == ["site=a/day=1/part-0.parquet",
                                                                       "site=b/day=1/part-0.parquet"]
    _, files, _ = resolve_files([str(tmp_path / "lake"), str(tmp_path / "lake" / "site=a" / "day=1" / "part-0.parquet")])
    assert len(files) == 2
    # A folder of no tables among those matched is passed over, and a Spark job's _temporary copies stay out.
    (tmp_path / "lake" / "logs").mkdir()
    (tmp_path / "lake" / "logs" / "run.txt").write_text("")
    (tmp_path / "lake" / "_temporary" / "0").mkdir(parents=True)
    frame().to_parquet(tmp_path / "lake" / "_temporary" / "0" / "part-0.parquet")
    for pattern in ("*", "site=*"):
        _, files, _ = resolve_files(str(tmp_path / "lake" / pattern))
        assert [os.path.relpath(f, tmp_path / "lake") for f in files] == ["site=a/day=1/part-0.parquet",
                                                                           "site=b/day=1/part-0.parquet"], pattern
    # Folders above data.path are not the data's partitions.
    from jobs.lake import folder_partitions
    (tmp_path / "run=7" / "data" / "site=a").mkdir(parents=True)
    shard = str(tmp_path / "run=7" / "data" / "site=a" / "p.parquet")
    assert folder_partitions([shard], {"x"}, str(tmp_path / "run=7" / "data")) == {"site": "site=a"}
    assert folder_partitions([shard], {"x"}, str(tmp_path / "run=7" / "data" / "**" / "*.parquet")) == {
        "site": "site=a"}


def test_ray_datas_retry_note_is_cut_from_an_error_it_retried():
    """Ray Data appends its retry note to an error it retried (a read that failed to cast, say): the last line
    shown was that advice, not the error."""
    from cluster.errors import root_cause

    exc = ValueError("Failed to parse string: 'north' as a scalar of type int64\nFailed to read files after 1/3 "
                     "attempts (total backoff 0.0s).\nTo change retry attempts, backoff, or which errors are "
                     "retried, configure `ray.data.DataContext.get_current()` if you believe this to be transient.")
    assert root_cause(exc) == "Failed to parse string: 'north' as a scalar of type int64"
