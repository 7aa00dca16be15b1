"""`trainyard monitor`'s inputs, Ray-free: the log files it reads (copies, open journals, a file whose pages do not
read), the labels file, `--out`, and `--since`. Found by a user watching a served model after deploy."""
from __future__ import annotations

import json
import shutil
from datetime import datetime, timedelta, timezone

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

DAY0 = datetime(2026, 11, 2, tzinfo=timezone.utc)
COLUMNS = ["request_id", "record", "time", "model_version", "prediction", "feature.rpm"]


def _log(path, n: int, records_per_request: int = 1) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({
        "request_id": pa.array([f"{path.stem}-{i // records_per_request}" for i in range(n)]),
        "record": pa.array([i % records_per_request for i in range(n)], pa.int32()),
        "time": pa.array([DAY0 + timedelta(seconds=i) for i in range(n)], pa.timestamp("ms", tz="UTC")),
        "model_version": pa.array(["v1"] * n), "prediction": pa.array(["ok"] * n),
        "feature.rpm": pa.array(np.linspace(1000.0, 2000.0, n))}), path, row_group_size=n)
    return str(path)


def _scrambled(source: str, path) -> str:
    """A copy of `source` whose footer reads and whose pages do not: every byte between the magic and the footer
    is overwritten (a bad disk, a broken copy)."""
    data = bytearray(open(source, "rb").read())
    footer = int.from_bytes(data[-8:-4], "little") + 8
    data[4:len(data) - footer] = bytes(np.random.default_rng(0).integers(0, 256, len(data) - footer - 4, np.uint8))
    path.write_bytes(bytes(data))
    return str(path)


def test_a_copy_of_a_log_file_under_logs_is_read_once_and_said(tmp_path):
    """A backup or a second sync inside --logs: each file read twice, its rows and the labels joined to them counted
    twice (1,000 labels of a 500-label file, sharper p-values than the traffic gives). A file of the same name, size
    and footer is left out, in a line, unread (no hashing: a backup under --logs costs nothing per run); one of
    the same name with other rows is read."""
    from jobs.monitor_logs import NoTrafficSince, log_files

    logs = tmp_path / "logs"
    first = _log(logs / "app" / "part-a.parquet", 30)
    shutil.copy(first, logs / "part-a.parquet")                     # a copy higher up
    (logs / "backup").mkdir()
    shutil.copy(first, logs / "backup" / "part-a.parquet")
    other = _log(logs / "other" / "part-a.parquet", 31)               # the same name, other rows
    said = []
    _, files, skipped, rows, _ = log_files(str(logs), said.append)
    assert sorted(files) == sorted([first, other]) and rows == 61 and not skipped, (files, said)
    line, folders = said
    assert line.startswith("[monitor] note: 2 log file(s) left out, the same name, size and footer as another: ")
    # Two apps' logs (serve.log's path given for an app's folder) are one traffic: said, naming the folders.
    assert folders == (f"[monitor] note: the log files are in 2 folders under {logs} (app, other), read as one "
                       "traffic; if they are different apps' logs (serve.log keeps each app's in a folder of its "
                       "name), give one app's folder to judge it alone")
    _, _, _, _, _ = log_files(str(logs / "app"), said.append)
    assert len(said) == 2
    # Copies before --since are left out unread, and counted once among the earlier rows.
    earlier = [0]
    with pytest.raises(NoTrafficSince, match="every one of the 61 logged rows"):
        log_files(str(logs), said.append, earlier, int(DAY0.timestamp() * 1000) + 86_400_000)
    # A linked folder is the same files again.
    (tmp_path / "linked").mkdir()
    (tmp_path / "linked" / "current").symlink_to(logs / "app")
    (tmp_path / "linked" / "app").symlink_to(logs / "app")
    _, files, _, rows, _ = log_files(str(tmp_path / "linked"), said.append)
    assert len(files) == 1 and rows == 30 and "left out, the same name, size and footer" in said[-2], said[-2:]
    assert f"{logs / 'backup' / 'part-a.parquet'} (a copy of {first})" in line
    assert f"{logs / 'part-a.parquet'} (a copy of {first})" in line


def test_open_journals_are_said_and_a_folder_of_them_alone_is_no_traffic_yet(tmp_path):
    """A server still logging holds its records in a hidden journal until it publishes them: the monitor said
    "no readable prediction logs there" (exit 2, bad input) for its first records, and nothing of the records
    pending beside published files."""
    from jobs.monitor_logs import NoTrafficSince, log_files

    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / ".part-20261207T213456-xx080mqr-000000.parquet.tmp").write_bytes(b"journal")
    said = []
    with pytest.raises(NoTrafficSince, match=r"no prediction log published yet; 1 open journal\(s\) hold what a "
                                             r"server is logging .*exit 4") as raised:
        log_files(str(logs), said.append)
    assert raised.value.exit_code == 4
    assert said == [f"[monitor] note: 1 open journal(s) under {logs} (.part-*.parquet.tmp) hold records not "
                    "published yet, which are not read: a server still logging publishes them every "
                    "serve.log.rotate_s and as it stops; those of a server killed outright, the next one to start "
                    "with the same log"]
    published = _log(logs / "part-a.parquet", 5)
    _, files, _, rows, _ = log_files(str(logs), said.append)
    assert files == [published] and rows == 5 and len(said) == 2


def test_a_file_whose_pages_do_not_read_is_left_out_and_named(tmp_path):
    """Its footer reads, so the footer check passed it; its pages failed the summary task, and the whole job with
    "the monitor job failed while reading LOGS: Deserializing page header failed", the file unnamed. It is left out
    with a warning naming it, as a truncated file is, its rows taken off the count."""
    from jobs.monitor_logs import log_files, unreadable_files
    from jobs.monitor_summary import UNREADABLE, Plan, summarise_files

    good = _log(tmp_path / "logs" / "part-a.parquet", 40)
    bad = _scrambled(_log(tmp_path / "source" / "part-b.parquet", 400), tmp_path / "logs" / "part-b.parquet")
    fs, files, skipped, rows, _ = log_files(str(tmp_path / "logs"), print)
    assert files == [good, bad] and rows == 440 and not skipped          # the footers read
    plan = Plan(86_400_000, {"rpm": [1000.0, 1500.0, 2000.0]}, {}, "classification", ["ok"], None)
    parts = summarise_files(pa.table({"path": files}), plan, COLUMNS, pafs.LocalFileSystem()).to_pylist()
    [failed] = [p for p in parts if p["window"] == UNREADABLE]
    assert failed["slice"] == bad and json.loads(failed["summary"])["error"]
    [window] = [json.loads(p["summary"]) for p in parts if p["window"] != UNREADABLE]
    assert window["n"] == 40
    said = []
    lost = unreadable_files(fs, [(bad, json.loads(failed["summary"])["error"])], skipped, said.append)
    assert lost == 400 and skipped == [said[0].removeprefix("[monitor] warning: ").removesuffix("; left out")]
    assert said[0].startswith(f"[monitor] warning: {bad}: its data cannot be read (") and said[0].endswith("left out")


def test_out_is_checked_before_ray_and_a_users_own_file_there_is_not_replaced(tmp_path):
    """`--out` under a file failed after the whole job with NotADirectoryError's traceback (exit 1, the verdict
    lost); a drift.json of the user's own in the folder was replaced, the line calling it an earlier report."""
    from jobs.monitor_logs import MonitorInputError, check_out

    (tmp_path / "existing.txt").write_text("notes")
    with pytest.raises(MonitorInputError, match=r"--out .*existing.txt/report: .*existing.txt is a file, so no "
                                                r"folder can be made under it"):
        check_out(str(tmp_path / "existing.txt" / "report"))
    with pytest.raises(MonitorInputError, match=r"existing.txt: is a file; give a folder"):
        check_out(str(tmp_path / "existing.txt"))
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "drift.json").write_text("user's own\n")
    with pytest.raises(MonitorInputError, match=r"drift.json is not a report of trainyard monitor, and this run "
                                                r"would replace it; give another folder, or move the file"):
        check_out(str(mine))
    (mine / "drift.json").write_text(json.dumps({"format": 1, "verdict": "ok"}, indent=2))
    (mine / "report.html").write_text("<html>my notes</html>")
    with pytest.raises(MonitorInputError, match=r"report.html is not a report of trainyard monitor"):
        check_out(str(mine))
    (mine / "report.html").write_text("<!doctype html><html><head><meta charset='utf-8'><title>trainyard monitor"
                                      "</title>")
    assert check_out(str(mine)) == mine             # an earlier run's: replaced, as said when written
    # One cut short (a full disk, before the reports were written whole) or empty is an earlier run's too: it was
    # refused as the user's on every run after.
    (mine / "drift.json").write_text('{\n  "format": 1,\n  "bundle": "/runs/x/bund')
    (mine / "report.html").write_text("")
    check_out(str(mine))
    assert check_out(str(tmp_path / "new" / "deeper")) == tmp_path / "new" / "deeper"     # made when written
    with pytest.raises(MonitorInputError, match=r"--out s3://bucket/mon: the reports are written to a local folder"):
        check_out("s3://bucket/mon")


def test_labels_without_record_for_requests_of_several_rows_are_refused(tmp_path):
    """`record` is optional (0 when absent): `predict --out`'s file with its record column dropped gave each
    request's last label to its record 0, "497 label(s) ... labelled again later", and accuracy on 3 labels. Where
    the logs hold requests of several records (their footers say so), a request id given twice without `record` is
    refused; where every request is of one row, it is a label given again, the last one kept."""
    from jobs.monitor import read_labels
    from jobs.monitor_logs import MonitorInputError, several_records

    fs = pafs.LocalFileSystem()
    batch = [_log(tmp_path / "logs" / "part-a.parquet", 6), _log(tmp_path / "logs" / "part-b.parquet", 6, 3)]
    assert several_records(fs, batch) and not several_records(fs, batch[:1])
    (tmp_path / "norecord.csv").write_text("request_id,label\nr-1,ok\nr-1,failure\nr-1,ok\nr-2,ok\nr-3,ok\nr-3,ok\n")
    with pytest.raises(MonitorInputError, match=r"norecord.csv: request_id 'r-1' is given more than once \(2 request "
                                                r"id\(s\) are\) and there is no column 'record'.*keep the column "
                                                r"record that `trainyard predict --out` writes"):
        read_labels(str(tmp_path / "norecord.csv"), ["failure", "ok"], print,
                    several=lambda: several_records(fs, batch))
    said = []
    relabelled = read_labels(str(tmp_path / "norecord.csv"), ["failure", "ok"], said.append,
                             several=lambda: several_records(fs, batch[:1]))
    assert relabelled.num_rows == 3 and "3 label(s) for a (request_id, record) labelled again later" in said[0]
    (tmp_path / "single.csv").write_text("request_id,label\nr-1,ok\nr-2,failure\n")
    assert read_labels(str(tmp_path / "single.csv"), ["failure", "ok"], print).num_rows == 2
    (tmp_path / "relabelled.csv").write_text("request_id,record,label\nr-1,0,ok\nr-1,0,failure\n")
    said = []
    assert read_labels(str(tmp_path / "relabelled.csv"), ["failure", "ok"], said.append).num_rows == 1
    assert "labelled again later in the file: the last one given is used" in said[0]


def test_a_labels_file_is_told_what_is_wrong_with_it(tmp_path):
    from jobs.monitor import read_labels
    from jobs.monitor_logs import MonitorInputError

    (tmp_path / "cased.csv").write_text("request_id,Label\nr-1,ok\n")
    with pytest.raises(MonitorInputError, match=r"column 'label' is missing \(columns: request_id, Label\); rename "
                                                r"'Label' for 'label' \(names are matched exactly\)"):
        read_labels(str(tmp_path / "cased.csv"), ["failure", "ok"], print)
    (tmp_path / "wrong.csv").write_text("id,outcome\nr-1,ok\n")
    with pytest.raises(MonitorInputError, match=r"columns 'request_id', 'label' are missing \(columns: id, outcome"):
        read_labels(str(tmp_path / "wrong.csv"), ["failure", "ok"], print)
    (tmp_path / "labels.json").write_text("[]")
    with pytest.raises(MonitorInputError, match=r"labels.json: give a .csv or .parquet file"):
        read_labels(str(tmp_path / "labels.json"), ["failure", "ok"], print)
    with pytest.raises(MonitorInputError, match=r"gone.csv: no such file or folder"):
        read_labels(str(tmp_path / "gone.csv"), ["failure", "ok"], print)
    # A folder of Parquet files (Spark's or Ray Data's output, whatever its name) is read as one table, as before.
    for folder in ("labels", "labels.parquet"):
        (tmp_path / folder).mkdir()
        pq.write_table(pa.table({"request_id": ["r-1"], "label": ["ok"]}), tmp_path / folder / "part-0.parquet")
        pq.write_table(pa.table({"request_id": ["r-2"], "label": ["failure"]}), tmp_path / folder / "part-1.parquet")
        assert read_labels(str(tmp_path / folder), ["failure", "ok"], print).num_rows == 2


def test_labels_that_match_no_log_but_for_their_case_are_told_so(tmp_path):
    """Request ids upper-cased by a spreadsheet matched nothing, and the warning gave no hint that the case alone
    differed."""
    from jobs.monitor_logs import case_only

    logs = _log(tmp_path / "part-a.parquet", 3)
    fs = pafs.LocalFileSystem()
    upper = pa.table({"request_id": ["PART-A-1", "PART-A-2"]})
    assert case_only(fs, [logs], upper) == ("; they differ from the logged ids in case alone ('PART-A-1' is logged "
                                            "as 'part-a-1'): ids are matched exactly, so write them as logged")
    assert case_only(fs, [logs], pa.table({"request_id": ["other-1"]})) == ""
    # The ids exactly as logged: the records are what did not match (it said "in case alone").
    assert case_only(fs, [logs], pa.table({"request_id": ["part-a-1"]})) == (
        "; request id 'part-a-1' is logged, but not with the record numbers given for it: a request's records count "
        "from 0, as `trainyard predict --out` writes them")


def test_labels_since_not_before_since_is_refused_before_anything_is_read(tmp_path):
    """`--labels-since` later than `--since` was passed over without a word: bad input, said before the bundle or
    the logs are read; the same span for both, whatever the clock ticked between them. (A --since in the future:
    tests/test_monitor_job.py, which has a bundle.)"""
    from jobs.monitor import run_monitor
    from jobs.monitor_logs import MonitorInputError

    for same in ("1d", "1h"):
        with pytest.raises(MonitorInputError, match=rf"--labels-since {same}: it is not earlier than --since {same}"):
            run_monitor(str(tmp_path / "no-bundle"), str(tmp_path / "no-logs"), labels="l.csv", since=same,
                        labels_since=same)
    with pytest.raises(MonitorInputError, match=r"--labels-since 12h: it is not earlier than --since 1d"):
        run_monitor(str(tmp_path / "no-bundle"), str(tmp_path / "no-logs"), labels="l.csv", since="1d",
                    labels_since="12h")
