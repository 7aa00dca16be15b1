"""`trainyard monitor` throughput: 1 million logged rows, trainyard's Ray Data job at several parallelisms against
a plain single-process baseline (pandas + the same `jobs.drift` functions), in one invocation.

    .venv/bin/python benchmarks/monitor_throughput.py [--rows 1000000] [--files 16] [--days 7]
        [--parallelism 1,2,4,0] [--bundle runs/machine-failure] [--repeat 2] [--by]

The logs are generated in the format `serve.log` writes (request_id, record, time, model_version, prediction,
probabilities, feature.<name>; zstd Parquet, one file per rotation), from the telemetry generator, with the bundle's own
predictions; the last day's air temperature is shifted by 3 standard deviations so there is something to find.
Without --bundle a small machine-failure bundle is trained first (2 epochs; not timed).

Timed: the whole `jobs.monitor.run_monitor` (listing and footers, the Ray Data job, the statistics per window,
drift.json and the report), with Ray already started. With --by, the logs also hold `keep.site` (one of 50 sites,
as `serve.log.keep` writes a request field) and the auto point runs again with `--by site` (its 20 sites with the
most rows judged apart): the cost of slicing, against the same job without it. Parallelism P reads the logs as P blocks and runs at most
P summary tasks at once (`override_num_blocks`, `concurrency`); 0 leaves both to Ray Data. The baseline reads
every file with pandas, floors the times to windows and runs `numeric_drift` (KS on every value, not a sample),
`categorical_drift`, `prediction_drift` (and `numeric_drift` of the probability of the second class) and
`flagged` per window and feature: what a user would write without Ray.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "examples"))

DAY0_MS = 1_793_577_600_000            # 2026-11-02T00:00Z
DAY_MS = 86_400_000


def train_bundle(work: Path) -> Path:
    """A small machine-failure bundle (2,000 rows, 2 epochs), as the examples train it."""
    import yaml

    from jobs.pipeline import run_train
    from jobs.spec import load_spec
    from telemetry import generate, write_shards

    write_shards(generate(2000, seed=1), work / "telemetry", 4)
    spec = {"name": "bench-monitor", "output": str(work / "out"),
            "data": {"path": str(work / "telemetry"), "label": "failure", "features": {"exclude": ["machine_id"]}},
            "model": {"hidden": [32, 16]}, "train": {"epochs": 2, "batch_size": 128, "workers": 1}}
    (work / "spec.yaml").write_text(yaml.safe_dump(spec))
    path, _ = run_train(load_spec(str(work / "spec.yaml")), progress=lambda *_: None)
    return Path(path)


def write_logs(bundle_dir: Path, folder: Path, rows: int, files: int, days: int) -> None:
    """`rows` log rows over `days` days in `files` files, as serve.log writes them."""
    from jobs.bundle import load
    from jobs.fitted import canonical
    from telemetry import generate

    bundle = load(bundle_dir)
    pre = bundle.preprocessor
    df = generate(rows, seed=7).drop(columns=["machine_id", "failure"])
    times = DAY0_MS + np.sort(np.random.default_rng(7).uniform(0, days * DAY_MS, rows)).astype(np.int64)
    last_day = times >= DAY0_MS + (days - 1) * DAY_MS
    df.loc[last_day, "air_temp_k"] += 3 * df["air_temp_k"].std()
    answers = bundle.predict_frame(df)
    predictions = np.asarray(answers["predictions"], dtype=object)
    probabilities = np.asarray(answers["probabilities"], dtype=np.float32)
    folder.mkdir(parents=True, exist_ok=True)
    for i, part in enumerate(np.array_split(np.arange(rows), files)):
        chunk = df.iloc[part]
        columns = {"request_id": pa.array([f"{j:032x}" for j in part], pa.string()),
                   "record": pa.array(np.zeros(len(part), np.int32)),
                   "time": pa.array(times[part], pa.timestamp("ms", tz="UTC")),
                   "model_version": pa.array([bundle.version] * len(part), pa.string()),
                   "prediction": pa.array(predictions[part].tolist(), pa.string()),
                   "probabilities": pa.array(probabilities[part].tolist(), pa.list_(pa.float32()))}
        for s in pre.numeric:
            columns[f"feature.{s.name}"] = pa.array(chunk[s.name].to_numpy(np.float64), from_pandas=True)
        for s in pre.categorical:
            columns[f"feature.{s.name}"] = pa.array([canonical(v) for v in chunk[s.name].tolist()], pa.string())
        columns["keep.site"] = pa.array([f"S-{j % 50:02d}" for j in part], pa.string())
        pq.write_table(pa.table(columns), folder / f"part-{i:04d}-r1-{i:06d}.parquet", compression="zstd")


def plain_baseline(bundle_dir: Path, folder: Path, window_ms: int = DAY_MS) -> tuple[float, int, list]:
    """One process, no Ray: pandas reads every file; the same jobs.drift functions per window and feature."""
    from jobs import drift
    from jobs.bundle import load

    t0 = time.perf_counter()
    profile = load(bundle_dir).profile
    thresholds = drift.Thresholds()
    df = pd.concat([pd.read_parquet(p) for p in sorted(folder.glob("*.parquet"))], ignore_index=True)
    df["window"] = (df["time"] - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(milliseconds=window_ms)
    n_features = len(profile["numeric"]) + len(profile["categorical"])
    flagged = []
    for window, part in df.groupby("window"):
        for name, ref in profile["numeric"].items():
            stats = drift.numeric_drift(ref, part[f"feature.{name}"].to_numpy(np.float64))
            if drift.flagged(ref, stats, thresholds, n_features):
                flagged.append((window, name))
        for name, ref in profile["categorical"].items():
            values = part[f"feature.{name}"]
            counts = values.value_counts().to_dict()
            known = {c: counts.get(c, 0) for c in ref["shares"]}
            unknown = int(values.notna().sum()) - sum(known.values())
            stats = drift.categorical_drift(ref, known, unknown, int(values.isna().sum()))
            if drift.flagged(ref, stats, thresholds, n_features):
                flagged.append((window, name))
        drift.prediction_drift(profile["prediction"], part["prediction"].value_counts().to_dict())
        if "score" in profile["prediction"]:        # the probability the monitor judges (its class: "index")
            score = np.array([p[1] for p in part["probabilities"]], dtype=np.float64)
            score = score if profile["prediction"]["score"].get("index", 1) == 1 else 1.0 - score
            drift.flagged(profile["prediction"]["score"], drift.numeric_drift(profile["prediction"]["score"], score),
                          thresholds, 1)
    return time.perf_counter() - t0, len(df), flagged


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--files", type=int, default=16)
    ap.add_argument("--days", type=int, default=7)
    ap.add_argument("--parallelism", default="1,2,4,0", help="comma-separated; 0 = Ray Data's choice")
    ap.add_argument("--repeat", type=int, default=2, help="runs per point (the best is reported)")
    ap.add_argument("--bundle", default=None, help="a machine-failure bundle (default: train a small one)")
    ap.add_argument("--by", action="store_true", help="also time --by site at parallelism auto (see above)")
    args = ap.parse_args()

    from cluster import connect
    from cluster.quiet import quiet_ray_logs
    from jobs.monitor import run_monitor

    quiet_ray_logs()
    resources = connect()
    work = Path(tempfile.mkdtemp(prefix="bench-monitor-"))
    try:
        bundle_dir = Path(args.bundle) if args.bundle else train_bundle(work)
        t0 = time.perf_counter()
        write_logs(bundle_dir, work / "logs", args.rows, args.files, args.days)
        size = sum(p.stat().st_size for p in (work / "logs").glob("*.parquet"))
        print(f"machine: {os.cpu_count()} CPUs, Ray {resources['CPU']:g} logical CPUs; load average "
              f"{os.getloadavg()[0]:.1f}; {args.rows:,} rows in {args.files} files ({size / 2**20:.0f} MiB, "
              f"{args.days} days), written in {time.perf_counter() - t0:.0f} s", flush=True)
        results = []
        for parallelism in [int(p) for p in args.parallelism.split(",")]:
            times, job = [], []
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                result = run_monitor(str(bundle_dir), str(work / "logs"), out=str(work / "monitor"),
                                     progress=lambda *_: None, parallelism=parallelism or None)
                times.append(time.perf_counter() - t0)
                job.append(result.report["seconds"])
            flagged = sorted({(w["start"], f) for w in result.report["windows"] for f in w["flagged"]})
            results.append((f"trainyard, parallelism {parallelism or 'auto'}", min(times), min(job)))
            print(f"{results[-1][0]}: {args.rows / min(times):,.0f} rows/s (runs {', '.join(f'{t:.1f}' for t in times)}"
                  f" s, of which the Ray Data job {', '.join(f'{t:.1f}' for t in job)} s; flagged {flagged})",
                  flush=True)
        if args.by:
            for by in (None, "site"):       # side by side, at Ray Data's parallelism
                times = []
                for _ in range(args.repeat):
                    t0 = time.perf_counter()
                    result = run_monitor(str(bundle_dir), str(work / "logs"), out=str(work / "monitor"),
                                         progress=lambda *_: None, by=by)
                    times.append(time.perf_counter() - t0)
                results.append((f"trainyard, auto{', --by site' if by else ''}", min(times), result.report["seconds"]))
                judged = len(result.report["by"]["judged"]) if by else 0
                print(f"{results[-1][0]}: {min(times):.2f} s (runs {', '.join(f'{t:.1f}' for t in times)} s)"
                      + (f"; {judged} sites judged; ratio to without --by {min(times) / results[-2][1]:.2f}" if by
                         else ""), flush=True)
        times = []
        for _ in range(args.repeat):
            elapsed, n, flagged = plain_baseline(bundle_dir, work / "logs")
            times.append(elapsed)
        print(f"plain pandas + jobs.drift, 1 process: {n / min(times):,.0f} rows/s (runs "
              f"{', '.join(f'{t:.1f}' for t in times)} s; flagged {sorted(set(flagged))})", flush=True)
        base = min(times)
        print(f"\n| | wall time (best of {args.repeat}) | rows/s | vs plain | Ray Data job |\n"
              "|---|---:|---:|---:|---:|")
        for name, best, job_s in results:
            print(f"| {name} | {best:.2f} s | {args.rows / best:,.0f} | {base / best:.2f} | {job_s:.2f} s |")
        print(f"| plain pandas + jobs.drift | {base:.2f} s | {args.rows / base:,.0f} | 1.00 | |")
        print(f"load average after: {os.getloadavg()[0]:.1f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
