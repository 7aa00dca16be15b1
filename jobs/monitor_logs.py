"""The prediction logs `trainyard monitor` reads: which files (complete ones, those of `--since`'s windows by
their footers), the columns every log holds, and the errors of its inputs."""
from __future__ import annotations

import os
from datetime import datetime, timezone
from typing import Callable, Optional

import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from cluster.errors import BadInput, TrainyardError

# What every log file must hold (the contract of serve.log); the features are `feature.<name>` columns.
LOG_COLUMNS = ("request_id", "record", "time", "prediction")
VERSION_COLUMN = "model_version"      # which bundle version served the row (logs from before it lack it)


class MonitorInputError(BadInput):
    """Logs, labels or bundle the monitor cannot use; the message names the file and column."""


EXIT_NO_TRAFFIC = 4
NO_TRAFFIC = (": no traffic to judge (a quiet period, or a server that stopped logging); exit 4. An earlier --since "
              "judges older windows")


class NoTrafficSince(TrainyardError):
    """`--since`: no logged row from its window on. Not bad input: a cron job's quiet day (exit 4, its own)."""

    exit_code = EXIT_NO_TRAFFIC


def log_files(logs: str, progress: Callable[[str], None], earlier: Optional[list] = None,
              before_ms: Optional[int] = None) -> tuple[pafs.FileSystem, list[str], list[str], int,
                                                        dict[str, list[int]]]:
    """The complete Parquet log files under `logs` (a folder, local or a pyarrow URI, searched recursively, or
    one file): (filesystem, files, warnings for files skipped, rows, {column: [files, rows] that hold it}, every
    column of any file: a feature a version did not take is in its files only). With `before_ms` (`--since`'s
    window start), a file whose every row is earlier by its footer's statistics is left out, unread, its rows
    added to `earlier[0]` (a cron job's cost grew with the logs' whole history). Truncated
    files are skipped with a warning (a writer killed before its rename leaves at most a hidden temp file, but
    a copy or a full disk can cut one); a file without a column every log needs is bad input."""
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
    if info.type == pafs.FileType.File:
        candidates = [root]
    else:
        listing = fs.get_file_info(pafs.FileSelector(root, recursive=True))
        candidates = sorted(i.path for i in listing if i.type == pafs.FileType.File and i.path.endswith(".parquet")
                            and not os.path.basename(i.path).startswith((".", "_")))
    files, skipped, rows, held = [], [], 0, {}     # held: column → [files, rows] that have it
    for path in candidates:
        try:
            with fs.open_input_file(path) as f:
                meta = pq.read_metadata(f)
            schema = meta.schema.to_arrow_schema()
        except (OSError, pa.ArrowInvalid) as exc:
            skipped.append(f"{path}: not a complete Parquet file ({exc}); skipped")
            progress(f"[monitor] warning: {skipped[-1]}")
            continue
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
        rows += meta.num_rows
        for c in schema.names:
            counts = held.setdefault(c, [0, 0])
            counts[0], counts[1] = counts[0] + 1, counts[1] + meta.num_rows
    if not files and earlier and earlier[0]:
        raise NoTrafficSince(f"--since: every one of the {earlier[0]:,} logged rows under {logs} is earlier than "
                             f"{_iso(before_ms)} (the window that holds it){NO_TRAFFIC}")
    if not files:
        raise MonitorInputError(f"--logs {logs}: no readable prediction logs (*.parquet) there"
                                + (f"; {len(skipped)} file(s) were unreadable" if skipped else ""))
    return fs, files, skipped, rows, held


def _last_time_ms(meta) -> Optional[int]:
    """A log file's latest `time` (ms since 1970, UTC) from its row groups' statistics; None where one lacks them."""
    column = next((j for j in range(meta.num_columns) if meta.schema.column(j).path == "time"), None)
    last = None
    for i in range(meta.num_row_groups):
        stats = meta.row_group(i).column(column).statistics if column is not None else None
        if stats is None or not stats.has_min_max:
            return None
        t = pd.Timestamp(stats.max)
        t = t.tz_localize("UTC") if t.tzinfo is None else t
        last = max(last or 0, int(t.value // 1_000_000))
    return last


def _iso(ms: int, window_ms: int = 60_000) -> str:
    """A window's start or end, to the minute; to the second for windows that are not whole minutes (`--window
    5s` printed three windows as one minute, and each one's start equal to its end)."""
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime(
        "%Y-%m-%dT%H:%MZ" if window_ms % 60_000 == 0 else "%Y-%m-%dT%H:%M:%SZ")
