"""`trainyard monitor --by NAME`: each value of a field judged apart, per window, as the whole traffic is.

NAME is a field kept in the logs (`serve.log.keep`: a machine's, a site's id) or a category feature. One site of
several sending a lab value in other units, one machine whose sensor failed: a few percent of the whole traffic,
under every threshold there, all of that value's rows here. Each value's rows are compared with the whole training
data, as the traffic is: a value whose traffic always differed from the fleet's (a machine of one type) is flagged
as different, not as changed, and the reason says which feature. The `BY_VALUES` values with the most rows are
judged (their summaries travel with the windows' through the same Ray Data job); the p-value threshold is divided
by the values judged too, so that judging 20 machines does not give 20 times the false alarms.
"""
from __future__ import annotations

import difflib
from typing import Callable, Optional

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from cluster.errors import BadInput
from jobs.monitor_stats import crossed
from jobs.watched import FEATURE_PREFIX, KEEP_PREFIX

BY_VALUES = 20          # the values of a --by field judged: those with the most rows


def by_column(name: str, columns, profile: dict) -> str:
    """The log column `--by NAME` reads: `keep.NAME` (a field kept for the logs), else a category feature's
    `feature.NAME`. BadInput (exit 2) naming what the logs offer, before Ray starts."""
    if KEEP_PREFIX + name in columns:
        return KEEP_PREFIX + name
    if name in profile.get("categorical", {}) and FEATURE_PREFIX + name in columns:
        return FEATURE_PREFIX + name
    if name in profile.get("numeric", {}):
        raise BadInput(f"--by {name}: {name} is a number; --by judges the traffic of each value of a category "
                       "feature, or of a field kept in the logs (serve.log.keep), apart")
    kept = sorted(c[len(KEEP_PREFIX):] for c in columns if c.startswith(KEEP_PREFIX))
    categories = sorted(n for n in profile.get("categorical", {}) if FEATURE_PREFIX + n in columns)
    lowered = {n.lower(): n for n in kept + categories}     # case too: --by Site for the kept site
    near = [lowered[n] for n in difflib.get_close_matches(name.lower(), list(lowered), n=1)]
    raise BadInput(f"--by {name}: the logs hold no field {name!r}" + (f" (did you mean {near[0]!r}?)" if near else "")
                   + f". Fields kept in them: {', '.join(kept) or 'none'} (a request field that is not a feature "
                   "is logged when serve.log.keep lists it, as keep: [machine_id]); category features: "
                   f"{', '.join(categories) or 'none'}")


def top_values(fs, files: list[str], column: str, k: int = BY_VALUES,
               since_ms: Optional[int] = None) -> tuple[list[str], dict]:
    """The `k` values of `column` with the most rows over `files` (read for that column and the time alone; files
    without it count as rows without a value), of the rows from `since_ms` on (the windows judged: a machine new
    yesterday was left out for the 25 with a month of rows), and {"values", "rows", "rows_judged", "rows_without"}."""
    counts: dict[str, int] = {}
    rows = without = 0
    for path in files:
        with fs.open_input_file(path) as f:
            file = pq.ParquetFile(f)
            held = file.schema_arrow.names
            table = file.read(columns=[c for c in (column, "time") if c in held])
        if since_ms is not None:
            times = pc.cast(pc.cast(table["time"], pa.timestamp("ms", tz="UTC")), pa.int64())
            table = table.filter(pc.fill_null(pc.greater_equal(times, since_ms), False))
        if column not in held:
            rows += table.num_rows
            without += table.num_rows
            continue
        values = pc.cast(table[column], pa.string())
        rows += len(values)
        without += values.null_count
        for entry in pc.value_counts(values.drop_null()).to_pylist():
            counts[entry["values"]] = counts.get(entry["values"], 0) + entry["counts"]
    chosen = sorted(counts, key=lambda v: (-counts[v], v))[:k]
    return chosen, {"values": len(counts), "rows": rows, "rows_judged": sum(counts[v] for v in chosen),
                    "rows_without": without}


def judge(name: str, sliced: dict, judge_window: Callable[[dict, int], dict], iso: Callable[[int], str],
          window_ms: int, counted: dict, progress: Callable[[str], None],
          by_feature: Optional[str] = None) -> tuple[dict, list[str]]:
    """The values' windows (`sliced`: {(window start, value): summary}) judged by `judge_window(summary, tests)`
    with the tests of every value counted in the p-value correction: (drift.json's "by", the reasons of the
    value-windows that crossed a threshold). Says a line per such value-window and one line of the whole.
    Not judged within a value: the `--by` feature itself (`by_feature`: all of a value's rows hold it), nor a
    category that holds one value in all of a value's windows (a machine's type): what the source is, not how it
    changed."""
    rows: dict[str, int] = {}
    for (_, value), summary in sliced.items():
        rows[value] = rows.get(value, 0) + summary["n"]
    values = sorted(rows, key=lambda v: (-rows[v], v))
    judged = {key: judge_window(summary, max(len(values), 1)) for key, summary in sorted(sliced.items())}
    for value in values:
        mine = [stats for (_, v), stats in judged.items() if v == value]
        fixed = {f for f, s in mine[0]["features"].items() if s.get("kind") == "categorical"
                 and len({c for st in mine for c, k in st["features"][f]["counts"].items() if k}) == 1
                 and not any(st["features"][f].get("unknown") for st in mine)}
        for stats in mine:
            for f in fixed | ({by_feature} & set(stats["features"])):
                stats["features"][f]["flags"] = []
            stats["flagged"] = [f for f in stats["flagged"] if stats["features"][f]["flags"]]
    out: dict[str, list] = {v: [] for v in values}
    reasons, flagged = [], set()
    for (start, value), stats in judged.items():
        what = crossed(stats)
        out[value].append({"start": iso(start), "end": iso(start + window_ms), **stats})
        if what:
            flagged.add(value)
            reasons.append(f"{iso(start)}, {name} {shown(value)}: " + ", ".join(what))
            progress(f"[monitor] {iso(start)}, {name} {shown(value)}: {stats['n']:,} rows, flagged: "
                     + ", ".join(what))
    share = counted["rows_judged"] / counted["rows"] if counted["rows"] else 0.0
    # A value under monitor.min_rows in every window was counted as judged (545 customers of 1-3 rows a day).
    small = [v for v in values if not any(w["judged"] for w in out[v])]
    progress(f"[monitor] by {name}: {len(values) - len(small)} of {counted['values']:,} value(s) judged (the "
             + (f"{len(values)} with the most rows: " if small else "most rows: ")
             + f"{counted['rows_judged']:,} of {counted['rows']:,} rows, {share:.0%}"
             + (f"; {len(small)} of them under monitor.min_rows in every window, not judged" if small else "")
             + (f"; {counted['rows_without']:,} rows without one" if counted["rows_without"] else "") + "); "
             + (f"{len(flagged)} crossed a threshold: {', '.join(shown(v) for v in values if v in flagged)}" if flagged
                else "none crossed a threshold"))
    return {"field": name, **counted, "judged": values, "windows": out, "crossed": reasons,
            "flagged_values": [v for v in values if v in flagged], "too_few_rows": small}, reasons


def shown(value: str) -> str:
    """A value of a logged field as a terminal line shows it: as it is when it is plain printable text, else
    quoted with its escapes. The value is whatever a client sent ("S1\\n[monitor] ok: ...", a terminal's
    escape codes): written raw, it forged lines of this output, its last line included, which scripts read."""
    return value if value.isprintable() and value == value.strip() and value else repr(value)
