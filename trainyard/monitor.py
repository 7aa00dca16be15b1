"""`trainyard monitor BUNDLE --logs PATH [--labels PATH] [--window 1d] [--since 7d] [--labels-since 35d] [--by FIELD]
[--out monitor]`: is the served model still fit for its traffic?

Reads the prediction logs a served app wrote (`serve.log`), compares each time window with the bundle's
reference profile (drift of every logged feature and of the predictions, missing and unknown rates) and, with
labels (Parquet or CSV of request_id, optional record, label), the realised metrics with the bundle's test
metrics. Writes OUT/drift.json and OUT/report.html. The exit code is for cron and CI:

    0  fine             3  retrain: a threshold (`monitor:` in the bundle's spec) was crossed; the last line says why
    4  no traffic logged since --since's time (a quiet period, or a server that stopped logging)
    2  bad input        1  failed while running
"""
from __future__ import annotations

import argparse


def register(subparsers, kit) -> None:
    """Add `monitor` to the `trainyard` subcommands."""
    def cmd_monitor(args) -> int:
        from jobs.monitor import EXIT_RETRAIN, NoTrafficSince, run_monitor     # pandas, scipy: not for every command

        try:
            result = run_monitor(args.bundle, args.logs, labels=args.labels, window=args.window, out=args.out,
                                 progress=kit.progress, connect=lambda: kit.connect(args), since=args.since,
                                 by=args.by, labels_since=args.labels_since)
        except NoTrafficSince as exc:       # not an error: the last line, as ok and retrain are
            print(f"no traffic: {exc}", flush=True)
            return exc.exit_code
        by = result.report.get("by") or {}
        # `--by`'s values that crossed a threshold: on the last line too, though not in the exit code (a source may
        # always differ from the whole traffic, which the exit code judges).
        sliced = (f" || by {by['field']}: {len(by['flagged_values'])} value(s) crossed a threshold (not in the exit "
                  f"code): " + " | ".join(by["crossed"][:5]) + (" | ..." if len(by["crossed"]) > 5 else "")
                  if by.get("flagged_values") else "")
        if result.verdict == "retrain":
            print(f"retrain: {len(result.reasons)} window(s) crossed a threshold; "
                  + " | ".join(result.reasons) + sliced, flush=True)
            return EXIT_RETRAIN
        windows = result.report["windows"]
        judged = sum(1 for w in windows if w["judged"])
        unchecked = result.report["features_not_logged"]
        # "ok" says what it stands on: a window under min_rows is not judged, a feature not logged not checked.
        since = (f" since {result.report['since']}" if result.report["since"] else "")
        untimed = result.report.get("untimed_rows") or 0     # in no window: "ok: 506 rows" stood on 3 of them
        print(f"ok: {result.report['rows'] - result.report['rows_before_since'] - untimed:,} rows{since} in "
              f"{len(windows)} window(s), nothing crossed a threshold"
              + (f"; {untimed:,} row(s) without a time left out" if untimed else "")
              + (f"; {len(windows) - judged} window(s) under monitor.min_rows not judged" if judged < len(windows)
                 else "")
              + (f"; not checked (not in the logs): {', '.join(unchecked)}" if unchecked else "")
              + (f" ({len(result.skipped)} unreadable file(s) skipped)" if result.skipped else "")
              # Labels that joined nothing judged nothing: "ok" alone read as realised metrics that held.
              + (f"; none of the {result.report['labels_given']:,} labels matched a logged record, so no window was "
                 "judged on them" if result.report.get("labels_given") and not result.report.get("labels_joined")
                 else "") + sliced, flush=True)
        return 0

    p = subparsers.add_parser("monitor", help="drift and realised quality of a served bundle, from its logs; "
                                              "exit 3 says retrain", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bundle", help="the bundle that served the logged traffic (folder or run output)")
    p.add_argument("--logs", required=True, help="the prediction logs: serve.log's path or an app's folder in "
                                                 "it (local or a pyarrow URI such as s3://...)")
    p.add_argument("--labels", default=None,
                   help="true labels as they arrive: Parquet or CSV with request_id, optional record, label")
    p.add_argument("--window", default=None,
                   help="time window to judge the traffic by, e.g. 1h, 1d, 7d (default: the bundle's "
                        "monitor.window, else 1d)")
    p.add_argument("--since", default=None, metavar="WHEN",
                   help="judge only the windows from the one holding WHEN on: a date or time (2026-11-01, "
                        "2026-11-01T08:00, UTC unless it names its zone) or a span back from now (7d, 12h); for a "
                        "cron job over logs that keep growing (default: every window)")
    p.add_argument("--labels-since", default=None, metavar="WHEN",
                   help="with --labels and --since: also judge the windows from WHEN to --since's on their labels "
                        "alone (labels that arrive weeks after the traffic, as 30-day outcomes do), e.g. --since 1d "
                        "--labels-since 35d")
    p.add_argument("--by", default=None, metavar="FIELD",
                   help="also judge each value's traffic apart (its 20 most frequent values): a field kept in the "
                        "logs (serve.log.keep: a machine's or a site's id) or a category feature")
    p.add_argument("--out", default="monitor", help="where drift.json and report.html go (default: monitor)")
    p.add_argument("--address", default=None,
                   help="Ray cluster to use (default: RAY_ADDRESS, else an embedded local Ray)")
    p.add_argument("--verbose", action="store_true", help="also print Ray's own log lines")
    p.set_defaults(func=cmd_monitor)
