"""The prediction logs `trainyard monitor` reads: which files (complete ones, those of `--since`'s windows by
their footers), the columns every log holds, and the errors of its inputs."""
from __future__ import annotations

import fnmatch
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Optional

import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from cluster.errors import BadInput, TrainyardError
from jobs.monitor_report import HTML_START

# What every log file must hold (the contract of serve.log); the features are `feature.<name>` columns.
LOG_COLUMNS = ("request_id", "record", "time", "prediction")
VERSION_COLUMN = "model_version"      # which bundle version served the row (logs from before it lack it)
# How the monitor's reports begin (jobs.monitor, jobs.monitor_report): a file of that name in --out that does not
# is the user's, not replaced.
REPORT_STARTS = {"drift.json": '{\n  "format": 1,', "report.html": HTML_START}
# A server's open prediction log (serving/predlog.py): an Arrow IPC journal, published as Parquet when complete.
OPEN_JOURNAL = ".part-*.parquet.tmp"


class MonitorInputError(BadInput):
    """Logs, labels or bundle the monitor cannot use; the message names the file and column."""


EXIT_NO_TRAFFIC = 4
NO_TRAFFIC = (": no traffic to judge (a quiet period, or a server that stopped logging); exit 4. An earlier --since "
              "judges older windows")


class NoTrafficSince(TrainyardError):
    """`--since`: no logged row from its window on. Not bad input: a cron job's quiet day (exit 4, its own)."""

    exit_code = EXIT_NO_TRAFFIC


def log_files(logs: str, progress: Callable[[str], None], earlier: Optional[list] = None,
              before_ms: Optional[int] = None, footers: Optional[dict] = None
              ) -> tuple[pafs.FileSystem, list[str], list[str], int, dict[str, list[int]]]:
    """The complete Parquet log files under `logs` (a folder, local or a pyarrow URI, searched recursively, or
    one file): (filesystem, files, warnings for files skipped, rows, {column: [files, rows] that hold it}, every
    column of any file: a feature a version did not take is in its files only). With `before_ms` (`--since`'s
    window start), a file whose every row is earlier by its footer's statistics is left out, unread, its rows
    added to `earlier[0]` (a cron job's cost grew with the logs' whole history). Truncated
    files are skipped with a warning (a writer killed before its rename leaves at most a hidden temp file, but
    a copy or a full disk can cut one); a file without a column every log needs is bad input. `footers`, when
    given, gets each kept file's footer, so that no later step reads one again."""
    try:
        fs, root = pafs.FileSystem.from_uri(logs) if "://" in logs else (pafs.LocalFileSystem(),
                                                                        os.path.abspath(os.path.expanduser(logs)))
        info = fs.get_file_info(root)
    except (OSError, pa.ArrowInvalid) as exc:
        raise MonitorInputError(f"--logs {logs}: cannot open it: {exc}") from None
    if info.type == pafs.FileType.NotFound:
        raise MonitorInputError(f"--logs {logs}: no such folder; give the serve.log path (or its app's folder). A "
                                "server logs its predictions only when asked: serve with --set log.path=FOLDER (or "
                                "serve.log.path in the spec), and it writes under FOLDER/APP_NAME/")
    journals, sizes = [], {}
    if info.type == pafs.FileType.File:
        candidates = [root]
    else:
        listing = [i for i in fs.get_file_info(pafs.FileSelector(root, recursive=True)) if i.type == pafs.FileType.File]
        candidates = sorted(i.path for i in listing if i.path.endswith(".parquet")
                            and not os.path.basename(i.path).startswith((".", "_")))
        journals = [i.path for i in listing if fnmatch.fnmatch(os.path.basename(i.path), OPEN_JOURNAL)]
        sizes = {i.path: i.size for i in listing}
    if journals:
        progress(f"[monitor] note: {len(journals)} open journal(s) under {logs} ({OPEN_JOURNAL}) hold records not "
                 "published yet, which are not read: a server still logging publishes them every serve.log.rotate_s "
                 "and as it stops; those of a server killed outright, the next one to start with the same log")
    files, skipped, rows, held = [], [], 0, {}     # held: column → [files, rows] that have it
    # A copy of a log file in another folder under --logs (a backup, a second sync, a linked folder): the same name,
    # size and footer. Each was read as traffic of its own: its rows, and the labels joined to them, counted twice
    # (1,000 labels of a 500-label file), its p-values sharper than its traffic gives. Left out, said in a line.
    seen: dict[tuple, list] = {}
    copies = []
    for path in candidates:
        try:
            with fs.open_input_file(path) as f:
                meta = pq.read_metadata(f)
            schema = meta.schema.to_arrow_schema()
        except (OSError, pa.ArrowInvalid) as exc:
            skipped.append(f"{path}: not a complete Parquet file ({exc})")
            progress(f"[monitor] warning: {skipped[-1]}; left out")
            continue
        same_name = seen.setdefault((os.path.basename(path), sizes.get(path)), [])
        if (first := next((p for p, m in same_name if m.equals(meta)), None)) is not None:
            copies.append(f"{path} (a copy of {first})")
            continue
        same_name.append((path, meta))
        missing = [c for c in LOG_COLUMNS if c not in schema.names]
        if missing:
            raise MonitorInputError(f"{path}: a prediction log needs the columns {', '.join(LOG_COLUMNS)}; "
                                    f"column {missing[0]!r} is missing (columns: {', '.join(schema.names)}). "
                                    "Point --logs at the folder serve.log writes")
        if not pa.types.is_timestamp(schema.field("time").type):
            raise MonitorInputError(f"{path}: column 'time' is {schema.field('time').type}, not a timestamp")
        if before_ms is not None and (last := _last_time_ms(meta)) is not None and last < before_ms:
            earlier[0] += meta.num_rows
            continue
        files.append(path)
        if footers is not None:     # kept for `several_records` and `unreadable_files`: read once
            footers[path] = meta
        rows += meta.num_rows
        for c in schema.names:
            counts = held.setdefault(c, [0, 0])
            counts[0], counts[1] = counts[0] + 1, counts[1] + meta.num_rows
    if copies:
        progress(f"[monitor] note: {len(copies)} log file(s) left out, the same name, size and footer as another: "
                 f"{'; '.join(copies[:3])}{'; ...' if len(copies) > 3 else ''}")
    apps = sorted({os.path.relpath(p, root).split("/")[0] for p in files if "/" in os.path.relpath(p, root)})
    if len(apps) > 1:   # serve.log's path given for an app's folder: two apps' traffic judged as one
        progress(f"[monitor] note: the log files are in {len(apps)} folders under {logs} ({', '.join(apps[:5])}"
                 f"{', ...' if len(apps) > 5 else ''}), read as one traffic; if they are different apps' logs "
                 "(serve.log keeps each app's in a folder of its name), give one app's folder to judge it alone")
    if not files and earlier and earlier[0]:
        raise NoTrafficSince(f"--since: every one of the {earlier[0]:,} logged rows under {logs} is earlier than "
                             f"{_iso(before_ms)} (the window that holds it){NO_TRAFFIC}")
    if not files and not skipped and journals:      # a server's first records, not a wrong folder
        raise NoTrafficSince(f"--logs {logs}: no prediction log published yet; {len(journals)} open journal(s) hold "
                             "what a server is logging (see the note above): no traffic to judge yet; exit 4")
    if not files:
        raise MonitorInputError(f"--logs {logs}: no readable prediction logs (*.parquet) there"
                                + (f"; {len(skipped)} file(s) were unreadable" if skipped else ""))
    return fs, files, skipped, rows, held


def check_out(out: str) -> Path:
    """`--out`, before Ray starts: a folder this process can make or write to, whose drift.json and report.html, if
    there, are an earlier run's (the user's own file of that name was replaced, the run's line calling it an earlier
    report); a folder under a file, or one not writable, failed after the whole job with a traceback. The folder,
    `~` expanded, which the reports are written to."""
    if "://" in out:
        raise MonitorInputError(f"--out {out}: the reports are written to a local folder; give one (and copy them to "
                                "object storage after, if they belong there)")
    path = Path(out).expanduser().absolute()
    if path.exists() and not path.is_dir():
        raise MonitorInputError(f"--out {out}: is a file; give a folder for drift.json and report.html")
    there = next(p for p in (path, *path.parents) if p.exists())
    if not there.is_dir():
        raise MonitorInputError(f"--out {out}: {there} is a file, so no folder can be made under it; give a folder")
    if not os.access(there, os.W_OK | os.X_OK):
        raise MonitorInputError(f"--out {out}: {there} is not writable by this user; give a folder you can write to")
    for name, ours in REPORT_STARTS.items():
        if (path / name).is_file():
            try:
                with open(path / name, encoding="utf-8", errors="replace") as f:
                    start = f.read(len(ours))
            except OSError:
                start = None
            # Empty, or begun as the monitor begins it: an earlier run's (one cut short by a full disk included).
            if start is None or (start and not (ours.startswith(start) or start.startswith(ours))):
                raise MonitorInputError(f"--out {out}: {path / name} is not a report of trainyard monitor, and this "
                                        "run would replace it; give another folder, or move the file")
    return path


def several_records(fs, files: list[str], footers: Optional[dict] = None) -> bool:
    """Whether any log file holds a request of several records (a `record` above 0), by its footer's statistics
    (`footers`: those `log_files` read, else read here); True where a file has none to tell."""
    for path in files:
        try:
            meta = (footers or {}).get(path) or _footer(fs, path)
        except (OSError, pa.ArrowInvalid):
            continue
        if any(top is None or top > 0 for top in _maxima(meta, "record")):
            return True
    return False


def case_only(fs, files: list[str], labels: pa.Table, most: int = 4) -> str:
    """When no label matched a logged record: "; ..." if the labels' request ids match the first log files' but for
    their case (ids upper-cased by a spreadsheet or a database), or match them exactly (so the records do not),
    else ""."""
    given = {str(i).lower(): str(i) for i in labels["request_id"].to_pylist()}
    for path in files[:most]:
        try:
            with fs.open_input_file(path) as f:
                logged = pq.read_table(f, columns=["request_id"])["request_id"].to_pylist()
        except (OSError, pa.ArrowException):
            continue
        same = next((i for i in logged if i is not None and str(i).lower() in given), None)
        if same is not None and given[str(same).lower()] != str(same):
            return (f"; they differ from the logged ids in case alone ({given[str(same).lower()]!r} is logged as "
                    f"{same!r}): ids are matched exactly, so write them as logged")
        if same is not None:        # the ids are there: the records are not (counted from 1, say)
            return (f"; request id {same!r} is logged, but not with the record numbers given for it: a request's "
                    "records count from 0, as `trainyard predict --out` writes them")
    return ""


def _footer(fs, path: str):
    with fs.open_input_file(path) as f:
        return pq.read_metadata(f)


def unreadable_files(fs, failed: list[tuple[str, str]], skipped: list[str], progress: Callable[[str], None],
                     footers: Optional[dict] = None) -> int:
    """The log files whose footer read but whose data did not (a page scrambled by a bad disk or copy: "Deserializing
    page header failed"), as the summary tasks found them: each said in a warning and added to `skipped`, as a
    truncated file is; the rows their footers count, which the job did not read."""
    lost = 0
    for path, error in failed:
        skipped.append(f"{path}: its data cannot be read ({error})")
        progress(f"[monitor] warning: {skipped[-1]}; left out")
        try:
            lost += ((footers or {}).get(path) or _footer(fs, path)).num_rows
        except (OSError, pa.ArrowInvalid):
            pass
    return lost


def _maxima(meta, name: str) -> list:
    """Each row group's largest value of column `name`, from its footer's statistics (None where a group has none)."""
    column = next((j for j in range(meta.num_columns) if meta.schema.column(j).path == name), None)
    groups = (meta.row_group(i).column(column).statistics if column is not None else None
              for i in range(meta.num_row_groups))
    return [s.max if s is not None and s.has_min_max else None for s in groups]


def _last_time_ms(meta) -> Optional[int]:
    """A log file's latest `time` (ms since 1970, UTC) from its row groups' statistics; None where one lacks them."""
    last = None
    for top in _maxima(meta, "time"):
        if top is None:
            return None
        t = pd.Timestamp(top)
        t = t.tz_localize("UTC") if t.tzinfo is None else t
        last = max(last or 0, int(t.value // 1_000_000))
    return last


def _iso(ms: int, window_ms: int = 60_000) -> str:
    """A window's start or end, to the minute; to the second for windows that are not whole minutes (`--window
    5s` printed three windows as one minute, and each one's start equal to its end)."""
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime(
        "%Y-%m-%dT%H:%MZ" if window_ms % 60_000 == 0 else "%Y-%m-%dT%H:%M:%SZ")
