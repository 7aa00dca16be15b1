"""The monitor's report (OUT/report.html): one self-contained page a person reads at a glance.

The verdict and its reasons first; a table of windows × features with the flagged cells marked; PSI over time
per feature (and the realised metric when labels were given); then, for each feature that drifted, its
distribution in the reference (the train split) against the window where it drifted most. Everything comes from
drift.json's content and the bundle's profile; the plots are PNGs inline (matplotlib, headless), so the page
can be mailed or attached to a CI run as one file.
"""
from __future__ import annotations

import base64
import html
import io
import math
from pathlib import Path
import numpy as np


# How the page begins (`jobs.monitor_logs.check_out` knows an earlier report by it).
HTML_START = "<!doctype html><html><head><meta charset='utf-8'><title>trainyard monitor</title>"


def write_report(path: Path, report: dict, profile: dict) -> Path:
    import matplotlib
    matplotlib.use("Agg")          # headless: cron and CI have no display

    windows = report["windows"]
    drifted = sorted({name for w in windows for name in w["flagged"]})
    min_rows = report["thresholds"]["min_rows"]
    parts = [_header(report), _table(report)]
    parts.append(_figure(_drift_over_time(windows, report["thresholds"]), "PSI per feature over time"))
    if any("metrics" in w for w in windows) and report.get("reference_metric"):
        parts.append(_metric_figure(windows, report["reference_metric"], min_rows, "realised metric"))
    if any((w.get("metrics") or {}).get("auc") is not None for w in windows) and report.get("reference_auc"):
        parts.append(_metric_figure(windows, {"auc": report["reference_auc"]}, min_rows, "realised ROC-AUC",
                                    "auc_rows"))
    for name in drifted:
        worst = max((w for w in windows if name in w["flagged"]), key=lambda w: _finite(w["features"][name]["psi"]))
        ref = profile["numeric"].get(name) or profile["categorical"][name]
        parts.append(f"<h3>{html.escape(name)}: reference vs {html.escape(worst['start'])}</h3>"
                     f"<p>{html.escape('; '.join(worst['features'][name]['flags']))}</p>")
        parts.append(_figure(_distribution(name, ref, worst), name))
    if report.get("by"):
        parts += _by_section(report["by"], profile)
    path.write_text(HTML_START +
                    "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto}"
                    "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px;"
                    "font-size:13px}.bad{background:#f8c8c8}.retrain{color:#b00}.ok{color:#070}"
                    ".unjudged{color:#888;background:#f2f2f2}.caveat{color:#a60}</style>"
                    "</head><body>" + "\n".join(parts) + "</body></html>")
    return path


def _finite(x, otherwise: float = -1.0) -> float:
    return x if isinstance(x, (int, float)) and math.isfinite(x) else otherwise


def _header(report: dict) -> str:
    """The verdict, its reasons and what it does not rest on. The page dropped the caveats the terminal gave: a
    window under monitor.min_rows read "OK" uncoloured, rows of other versions and labels that matched no record
    went unsaid, and each unreadable file read "skipped: ...; skipped". Now each is said here (`_caveats`)."""
    verdict = report["verdict"]
    lines = [f"<h1 class='{verdict}'>{'RETRAIN' if verdict == 'retrain' else 'OK'}</h1>",
             f"<p>bundle {html.escape(str(report['version']))} ({html.escape(report['bundle'])}); logs "
             f"{html.escape(report['logs'])}: {report['files']} file(s), {report['rows']:,} rows, "
             f"{len(report['windows'])} window(s) of {html.escape(report['window'])}</p>"]
    if report["reasons"]:
        lines.append("<ul>" + "".join(f"<li>{html.escape(r)}</li>" for r in report["reasons"]) + "</ul>")
    lines += [f"<p class='caveat'>{html.escape(c)}</p>" for c in _caveats(report)]
    if report["skipped"]:       # drift.json of before 2026-12-07: entries end "; skipped": said once, in the heading
        lines.append("<p>unreadable log files, left out:</p><ul>" + "".join(
            f"<li>{html.escape(s.removesuffix('; skipped'))}</li>" for s in report["skipped"]) + "</ul>")
    if report["features_not_logged"]:
        lines.append("<p>not logged (excluded), not checked: "
                     + html.escape(", ".join(report["features_not_logged"])) + "</p>")
    return "\n".join(lines)


def _caveats(report: dict) -> list[str]:
    """What the verdict does not rest on: windows too small to judge, rows another version served (their labels
    are not this version's), labels that matched no logged record. `labels_given` and `labels_joined` are absent
    from drift.json of earlier versions: nothing is said of them then."""
    windows, min_rows, version = report["windows"], report["thresholds"]["min_rows"], report["version"]
    out = []
    unjudged = [w for w in windows if not w["judged"]]
    if unjudged:
        out.append(f"{len(unjudged)} of {len(windows)} window(s) not judged: fewer than monitor.min_rows "
                   f"({min_rows}) rows; their PSI is shown, not flagged"
                   + ("; no window was judged" if len(unjudged) == len(windows) else ""))
    served: dict[str, int] = {}
    for w in windows:
        for v, n in (w.get("versions") or {}).items():
            served[v] = served.get(v, 0) + n
    if other := {v: n for v, n in served.items() if v != version}:
        listed = ", ".join(f"{v or 'no version logged'}: {n:,}"
                           for v, n in sorted(other.items(), key=lambda kv: -kv[1]))
        out.append(f"{sum(other.values()):,} of {sum(served.values()):,} rows were served by other version(s) than "
                   f"{version} ({listed})" + ("; their labels are left out of the realised metrics"
                                               if report.get("labels") is not None else ""))
    given, joined = report.get("labels_given"), report.get("labels_joined")
    if report.get("labels") is not None and given is not None and joined is not None and joined < given:
        out.append(f"none of the {given:,} labels matched a logged record read: no window was judged on labels"
                   if joined == 0 else
                   f"{joined:,} of {given:,} labels matched a logged record read; the rest were left out")
    return out


def _table(report: dict) -> str:
    windows = report["windows"]
    names = sorted({name for w in windows for name in w["features"]})
    head = "<tr><th>window</th><th>rows</th>" + "".join(f"<th>{html.escape(n)}</th>" for n in names) \
           + "<th>prediction</th><th>metric</th></tr>"
    min_rows, rows = report["thresholds"]["min_rows"], []
    for w in windows:
        # A window under min_rows showed its PSI uncoloured like any other's, nothing saying it was not judged.
        judged = "" if w["judged"] else f" (not judged: {w['n']:,} rows &lt; monitor.min_rows {min_rows})"
        cells = [f"<td>{html.escape(w['start'])}</td><td>{w['n']:,}{judged}</td>"]
        for name in names:
            stats = w["features"].get(name)
            cells.append(_cell(stats["psi"], stats["flags"]) if stats else "<td></td>")
        cells.append(_cell(w["prediction"]["psi"], w["prediction"]["flags"]))
        metrics, ref = w.get("metrics"), report.get("reference_metric")
        shown = [f"{name} {metrics[name]:,.4g}" if name == "rmse" else f"{name} {metrics[name]:.3f}"   # in label units
                 for name in [*(ref or {}), "auc"] if metrics and isinstance(metrics.get(name), (int, float))]
        # The reason in the cell's title: a red "accuracy 0.847; auc 0.866" hid the recall that flagged it.
        flags = html.escape("; ".join((metrics or {}).get("flags") or []))
        cells.append(_metric_cell(metrics, shown, flags, min_rows) if shown or flags else "<td></td>")
        rows.append(("<tr>" if w["judged"] else "<tr class='unjudged'>") + "".join(cells) + "</tr>")
    return ("<h2>PSI per window (flagged cells red)</h2><table>" + head + "".join(rows) + "</table>")


def _metric_cell(metrics: dict, shown: list[str], flags: str, min_rows: int) -> str:
    """A window's realised metrics with the labels they stand on: "accuracy 0.667" on 3 labels read like any
    other window's; now its count is beside it, greyed where under monitor.min_rows (not judged)."""
    n, few = metrics["n"], metrics["n"] < min_rows
    note = f"{n:,} label{'' if n == 1 else 's'}" + (", too few to judge" if few else "")
    if metrics.get("other_versions"):
        note += f"; {metrics['other_versions']:,} labels of other versions left out"
    css = "bad" if metrics["flags"] else "unjudged" if few else ""
    return f"<td class='{css}' title='{flags}'>{html.escape('; '.join(shown))} ({note})</td>"


def _by_section(by: dict, profile: dict, shown: int = 5) -> list[str]:
    """`--by`: a table of the values judged × windows (each cell its rows, red where that value crossed a threshold
    there, the reasons in its title), then for the first `shown` values that crossed one, the feature that drifted
    most against the reference in its worst window (a site's sensor, read in a report that showed the whole
    traffic alone)."""
    from jobs.monitor_stats import crossed

    field = html.escape(by["field"])
    starts = sorted({w["start"] for ws in by["windows"].values() for w in ws})
    rows = []
    for value in by["judged"]:
        mine = {w["start"]: w for w in by["windows"][value]}
        cells = "".join("<td></td>" if s not in mine else _cell_of(mine[s]["n"], crossed(mine[s])) for s in starts)
        rows.append(f"<tr><td>{html.escape(value)}</td>{cells}</tr>")
    flagged = by["flagged_values"]
    parts = [f"<h2>By {field}: {len(flagged)} of {len(by['judged'])} value(s) crossed a threshold</h2>"
             f"<p>{len(by['judged']) - len(by.get('too_few_rows', ()))} of {by['values']:,} value(s) of {field} "
             f"judged apart (the {len(by['judged'])} with the most rows: {by['rows_judged']:,} of {by['rows']:,}"
             + (f"; {len(by['too_few_rows'])} of them under monitor.min_rows in every window"
                if by.get("too_few_rows") else "")
             + "); rows per window, red where a value crossed a threshold (not in the verdict, which is the whole "
             "traffic's)</p>",
             "<table><tr><th>" + field + "</th>" + "".join(f"<th>{html.escape(s)}</th>" for s in starts) + "</tr>"
             + "".join(rows) + "</table>"]
    for value in flagged[:shown]:
        drifted = [(w, name) for w in by["windows"][value] for name in w["flagged"]]
        if not drifted:         # its predictions or a metric alone: said in the table's title
            continue
        worst, name = max(drifted, key=lambda p: _finite(p[0]["features"][p[1]]["psi"]))
        ref = profile["numeric"].get(name) or profile["categorical"][name]
        parts.append(f"<h3>{field} {html.escape(value)}, {html.escape(name)}: reference vs "
                     f"{html.escape(worst['start'])}</h3><p>{html.escape('; '.join(worst['features'][name]['flags']))}"
                     "</p>")
        parts.append(_figure(_distribution(name, ref, worst), f"{value}: {name}"))
    if len(flagged) > shown:
        parts.append(f"<p>and {len(flagged) - shown} more value(s) crossed a threshold: see drift.json's by</p>")
    return parts


def _cell_of(n: int, crossed: list[str]) -> str:
    return f"<td class='{'bad' if crossed else ''}' title='{html.escape('; '.join(crossed))}'>{n:,}</td>"


def _cell(psi, flags: list[str]) -> str:
    text = f"{psi:.3f}" if isinstance(psi, (int, float)) and math.isfinite(psi) else "-"
    title = html.escape("; ".join(flags))
    return f"<td class='{'bad' if flags else ''}' title='{title}'>{text}</td>"


def _figure(fig, alt: str) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    data = base64.b64encode(buf.getvalue()).decode()
    return f"<img alt='{html.escape(alt)}' src='data:image/png;base64,{data}'>"


def _drift_over_time(windows: list[dict], thresholds: dict):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 3.5))
    starts = [w["start"] for w in windows]
    names = sorted({name for w in windows for name in w["features"]})
    for name in names + ["(prediction)"]:
        series = [(w["prediction"] if name == "(prediction)" else w["features"].get(name) or {}).get("psi")
                  for w in windows]
        ys = [y if isinstance(y, (int, float)) and math.isfinite(y) else np.nan for y in series]
        flagged = any(name in w["flagged"] for w in windows)
        ax.plot(starts, ys, marker="o", linewidth=2.5 if flagged else 1, label=name, alpha=1 if flagged else 0.5)
    ax.axhline(thresholds["psi"], color="red", linestyle="--", linewidth=1, label="psi threshold")
    ax.set_ylabel("PSI vs train")
    ax.tick_params(axis="x", rotation=30)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig


def _metric_figure(windows: list[dict], reference: dict, min_rows: int, alt: str, count: str = "n") -> str:
    """The realised metric's plot, and a caption naming the windows it marks as standing on too few labels."""
    few = _few_labels(windows, next(iter(reference)), count, min_rows)
    return _figure(_metric_over_time(windows, reference, few, min_rows), alt) + (
        f"<p class='caveat'>hollow points: {len(few)} window(s) whose {html.escape(alt)} stands on fewer than "
        f"monitor.min_rows ({min_rows}) labels, not judged ({html.escape(', '.join(few))})</p>" if few else "")


def _few_labels(windows: list[dict], name: str, count: str, min_rows: int) -> list[str]:
    """The windows whose metric `name` is shown but stands on fewer than `min_rows` labels (`count`: the metrics'
    key of its labels, "n", or "auc_rows" for the AUC), which were therefore not judged."""
    return [w["start"] for w in windows if math.isfinite(_finite((w.get("metrics") or {}).get(name), np.nan))
            and w["metrics"].get(count, 0) < min_rows]


def _metric_over_time(windows: list[dict], reference: dict, few: list[str], min_rows: int):
    """The realised metric per window against the test split's, the windows in `few` (too few labels to judge) as
    hollow points: 0.667 on 3 labels fell far below the test line, marked like any judged window's."""
    import matplotlib.pyplot as plt

    name, value = next(iter(reference.items()))
    fig, ax = plt.subplots(figsize=(10, 2.5))
    starts = [w["start"] for w in windows]
    ys = [_finite((w.get("metrics") or {}).get(name), np.nan) for w in windows]
    line, = ax.plot(starts, ys, label="realised")
    for hollow in (False, True):
        points = [(s, y) for s, y in zip(starts, ys) if (s in few) == hollow and not np.isnan(y)]
        if points:
            ax.plot(*zip(*points), linestyle="none", marker="o", color=line.get_color(),
                    markerfacecolor="none" if hollow else line.get_color(),
                    label=f"under {min_rows} labels: not judged" if hollow else None)
    ax.axhline(value, color="gray", linestyle="--", label="test split")
    ax.set_ylabel(name)
    ax.tick_params(axis="x", rotation=30)
    ax.legend(fontsize=7)
    return fig


def _bin_label(low: float, high: float) -> str:
    """A bin's label: "64" for the bin that holds its lower edge alone (the top value, `drift.summarise`)."""
    return f"{low:.4g}" if high == np.nextafter(low, np.inf) else f"{low:.4g}–{high:.4g}"


def _distribution(name: str, ref: dict, window: dict):
    """Shares per bin (numeric) or per category (categorical), reference vs the window, missing included."""
    import matplotlib.pyplot as plt

    stats = window["features"][name]
    if stats["kind"] == "numeric":
        edges = ref["edges"]
        labels = [f"<{edges[0]:.4g}"] + [_bin_label(a, b) for a, b in zip(edges, edges[1:])] + [f"≥{edges[-1]:.4g}"]
        if len(edges) > 1 and edges[-1] == np.nextafter(edges[-2], np.inf):   # `drift.summarise`'s edge above the top
            labels[-1] = f">{edges[-2]:.4g}"
        present = 1.0 - (ref.get("missing_rate") or 0.0)
        ref_shares = [s * present for s in ref["shares"]]
        counts = np.asarray(stats["counts"], dtype=np.float64)
    else:
        unknown = window["features"][name].get("unknown_values") or {}
        labels = list(ref["shares"]) + ["(unknown" + (": " + ", ".join(list(unknown)[:3]) if unknown else "") + ")"]
        present = 1.0 - (ref.get("missing_rate") or 0.0)
        ref_shares = [ref["shares"][c] * present for c in ref["shares"]] + [ref.get("unknown_share", 0.0) * present]
        counts = np.asarray([stats["counts"].get(c, 0) for c in ref["shares"]] + [stats["unknown"]],
                            dtype=np.float64)
    labels.append("(missing)")
    ref_shares.append(ref.get("missing_rate") or 0.0)
    now = np.append(counts, stats["n"] * (stats.get("missing_rate") or 0.0)) / max(stats["n"], 1)
    x = np.arange(len(labels))
    fig, ax = plt.subplots(figsize=(10, 3))
    ax.bar(x - 0.2, ref_shares, width=0.4, label="reference (train)")
    ax.bar(x + 0.2, now, width=0.4, label=window["start"])
    ax.set_xticks(x, labels, rotation=45, ha="right", fontsize=7)
    ax.set_ylabel("share of rows")
    ax.set_title(name)
    ax.legend(fontsize=7)
    return fig
