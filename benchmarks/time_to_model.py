"""Time to a model on small tables: `trainyard train` end to end against a plain PyTorch loop and LightGBM.

For each table and epoch count, in one invocation:
- trainyard: `python -m trainyard train SPEC` as a user runs it, command start to exit (embedded Ray started and
  stopped inside it), and start to its "bundle written to" line (the bundle is complete; Ray's shutdown and the
  interpreter's exit follow), 1 worker, MLP [128, 64], batch 128, early stopping off;
- plain: a single-process PyTorch loop over the same packed tensors (the bundle's own preprocessing applied to the
  train rows), the same model, optimizer, batch size and epochs; data loading not counted;
- LightGBM: `LGBMClassifier().fit` on the same train rows (its defaults).
Per-epoch overhead is what each epoch costs beyond its own compute: (wall at the larger epoch count − wall at the
smaller) / (difference in epochs) − the plain loop's seconds per epoch.

`--search` also times an 8-trial search of 10-epoch trials (`trainyard tune`, no early stopping by ASHA: every
trial trains all its epochs, so the work is fixed) and reports trials per minute.

`--compare-rev REV [REV ...]` runs the same commands from other revisions of this repository (a git worktree each,
in a temporary folder, this venv's Python), in the same invocation: the before/after of a change on the same machine
and load.

    .venv/bin/python benchmarks/time_to_model.py                        # cancer (569 rows), 1k, 20k rows
    .venv/bin/python benchmarks/time_to_model.py --tables cancer --epochs 20 100 --search --compare-rev e2a75ac
    .venv/bin/python benchmarks/time_to_model.py --search-only --tables 1000 --rounds 2 --compare-rev e2a75ac e22acf3
    .venv/bin/python benchmarks/time_to_model.py --tables 1000 --rounds 5   # medians of 5 runs (one run varies ±1 s)
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "examples"))

from _machine import busy_cpu_seconds  # noqa: E402

MODEL = {"hidden": [128, 64], "dropout": 0.1}
BATCH, LR = 128, 1e-3


# ---------------------------------------------------------------------------------------------- data
def write_table(name: str, out: Path) -> tuple[Path, str, list[str]]:
    """(data folder, label, excluded columns) of a named table: `cancer` is scikit-learn's copy of the Wisconsin
    breast-cancer table (569 rows, 30 numeric features, shipped with scikit-learn, no download); `<N>` rows of
    the example telemetry (examples/telemetry.py)."""
    folder = out / f"data-{name}"
    if name == "cancer":
        from sklearn.datasets import load_breast_cancer
        raw = load_breast_cancer(as_frame=True)
        df = raw.frame.rename(columns=lambda c: c.replace(" ", "_"))
        df["target"] = df["target"].map(dict(enumerate(raw.target_names)))
        folder.mkdir(parents=True, exist_ok=True)
        df.to_parquet(folder / "part-000.parquet", index=False)
        return folder, "target", []
    from telemetry import generate, write_shards
    write_shards(generate(int(name), seed=0), folder, 2)
    return folder, "failure", ["machine_id"]


def spec_for(name: str, data: Path, label: str, exclude: list[str], epochs: int, out: Path) -> dict:
    return {"name": f"ttm-{name}-{epochs}", "data": {"path": str(data), "label": label,
                                                      "features": {"exclude": exclude}},
            "model": MODEL,
            "train": {"epochs": epochs, "batch_size": BATCH, "lr": LR, "workers": 1, "early_stop": None},
            "output": str(out)}


# ---------------------------------------------------------------------------------------------- runs
def cli_of(repo: Path) -> list[str]:
    """How `trainyard` runs from a checkout: `python -m trainyard` (its own package), or `python -m jobs.cli`
    in revisions from before the composition root existed."""
    return [sys.executable, "-m", "trainyard" if (repo / "trainyard" / "__main__.py").exists() else "jobs.cli"]


CPU_SECONDS: list[float] = []   # CPU time the machine spent (all cores, user + system) during each run_cli command
BUNDLE_SECONDS: list[float] = []   # per run_cli command: seconds until it printed "bundle written to"


def run_cli(repo: Path, args: list[str], log: Path) -> float:
    """Wall seconds of one `trainyard` command run from `repo` (its modules first on the path), start to exit;
    the seconds until it printed "bundle written to" (issue 17's end point: the bundle is there; the command then
    stops its embedded Ray and exits) go to BUNDLE_SECONDS, the machine's CPU seconds during it to CPU_SECONDS."""
    env = dict(os.environ, PYTHONPATH=str(repo), PYTHONUNBUFFERED="1")
    before = busy_cpu_seconds()
    t0 = time.perf_counter()
    bundled = None
    with open(log, "w") as f:
        run = subprocess.Popen(cli_of(repo) + args, cwd=repo, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
        for line in run.stdout:
            if bundled is None and line.startswith("bundle written to"):
                bundled = time.perf_counter() - t0
            f.write(line)
        run.wait()
    wall = time.perf_counter() - t0
    CPU_SECONDS.append(busy_cpu_seconds() - before)
    BUNDLE_SECONDS.append(bundled if bundled is not None else wall)
    if run.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed in {repo} (exit {run.returncode}); see {log}")
    return wall


def plain_seconds(bundle: Path, data: Path, label: str, epochs: int) -> float:
    """Seconds of the plain loop: the bundle's preprocessing packs the rows, then a shuffled tensor loop."""
    import torch

    from jobs.bundle import load
    from jobs.model import build_model

    b = load(bundle)
    # As many rows as trainyard's train split had (the bundle's lineage says), so an epoch is the same work.
    df = pd.read_parquet(data).sample(n=b.lineage["data"]["split_rows"]["train"], random_state=0)
    x = torch.from_numpy(np.ascontiguousarray(b.preprocessor.transform(df), dtype=np.float32))
    y = torch.from_numpy(np.asarray(b.preprocessor.encode_labels(df[label]))).long()
    torch.manual_seed(0)
    model = build_model(b.model_config)
    opt = torch.optim.AdamW(model.parameters(), lr=LR)
    loss_fn = torch.nn.CrossEntropyLoss()
    t0 = time.perf_counter()
    for _ in range(epochs):
        perm = torch.randperm(len(x))
        for i in range(0, len(x), BATCH):
            idx = perm[i:i + BATCH]
            loss = loss_fn(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return time.perf_counter() - t0


def lightgbm_seconds(data: Path, label: str, exclude: list[str]) -> float:
    import lightgbm

    df = pd.read_parquet(data).drop(columns=exclude)
    x = df.drop(columns=[label])
    for c in x.columns:
        if not (pd.api.types.is_numeric_dtype(x[c]) or pd.api.types.is_bool_dtype(x[c])):
            x[c] = x[c].astype("category")          # text columns: LightGBM's own categorical handling
    t0 = time.perf_counter()
    lightgbm.LGBMClassifier(verbose=-1).fit(x, df[label])
    return time.perf_counter() - t0


def search_spec(base: dict, out: Path) -> dict:
    spec = json.loads(json.dumps(base))
    spec.update(name="ttm-search", output=str(out))
    spec["train"]["epochs"] = 10
    spec["tune"] = {"samples": 8, "lr": {"loguniform": [1.0e-4, 1.0e-2]}, "batch_size": {"choice": [32, 64, 128]},
                    "scheduler": "none", "seed": 0}
    return spec


# ---------------------------------------------------------------------------------------------- main
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tables", nargs="+", default=["cancer", "1000", "20000"],
                    help="`cancer` (569 rows) or a number of telemetry rows")
    ap.add_argument("--epochs", type=int, nargs=2, default=[20, 100], metavar=("FEW", "MANY"))
    ap.add_argument("--search", action="store_true", help="also time an 8-trial search of 10-epoch trials")
    ap.add_argument("--search-only", action="store_true", help="only the search (on the first of --tables)")
    ap.add_argument("--rounds", type=int, default=1,
                    help="runs of every command per revision, alternating between revisions; medians are "
                         "reported, and every run is printed")
    ap.add_argument("--compare-rev", nargs="+", default=[], metavar="REV",
                    help="also run every command from these git revisions")
    ap.add_argument("--out", default=None, help="working folder (default: a temporary one, removed)")
    args = ap.parse_args()
    import yaml
    if not args.search_only:
        try:
            import lightgbm  # noqa: F401
        except ImportError:
            ap.error("the tables are also fitted with LightGBM, which is not installed here: "
                     "`.venv/bin/pip install -e '.[bench]'` (or run only the search: --search-only)")

    work = Path(args.out or tempfile.mkdtemp(prefix="trainyard-ttm-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    repos = {"now": ROOT}
    for rev in args.compare_rev:
        old = work / f"rev-{rev}"
        subprocess.run(["git", "worktree", "add", "--detach", "-f", str(old), rev], cwd=ROOT,
                       check=True, capture_output=True)
        repos[rev] = old
    load = os.getloadavg()[0]
    tables = [] if args.search_only else args.tables     # the tables timed by `trainyard train`
    print(f"[ttm] {os.cpu_count()} cores, load average {load:.2f} at start; revisions {list(repos)}", flush=True)
    rows = []
    try:
        for table in tables:
            data, label, exclude = write_table(table, work)
            lgbm = statistics.median(lightgbm_seconds(data, label, exclude) for _ in range(3))
            # Per revision and epoch count, every run's (to exit, to the bundle, plain loop) seconds.
            runs = {rev: {epochs: [] for epochs in args.epochs} for rev in repos}
            for round_ in range(args.rounds):
                # Alternating revisions: a machine that slows down mid-run slows both alike.
                for rev, repo in (list(repos.items()) if round_ % 2 == 0 else list(repos.items())[::-1]):
                    for epochs in args.epochs:
                        out = work / f"out-{rev}-{table}-{epochs}-{round_}"
                        spec = work / f"spec-{rev}-{table}-{epochs}-{round_}.yaml"
                        spec.write_text(yaml.safe_dump(spec_for(table, data, label, exclude, epochs, out)))
                        wall = run_cli(repo, ["train", str(spec)], work / f"log-{rev}-{table}-{epochs}-{round_}.txt")
                        plain = plain_seconds(out / "bundle", data, label, epochs)
                        runs[rev][epochs].append((wall, BUNDLE_SECONDS[-1], plain))
                        print(f"[ttm] {rev} {table} {epochs} epochs: trainyard {wall:.1f}s to exit, "
                              f"{BUNDLE_SECONDS[-1]:.1f}s to the bundle ({CPU_SECONDS[-1]:.0f} CPU-s), plain "
                              f"{plain:.2f}s, LightGBM {lgbm:.2f}s", flush=True)
            for rev in repos:
                walls, bundled, plain = ({epochs: statistics.median(r[i] for r in runs[rev][epochs])
                                          for epochs in args.epochs} for i in range(3))
                few, many = args.epochs
                per_epoch_compute = plain[many] / many
                overhead = (walls[many] - walls[few]) / (many - few) - per_epoch_compute
                rows.append({"rev": rev, "table": table, "walls": walls, "bundled": bundled, "plain": plain,
                             "lightgbm": lgbm, "bundled_runs": [r[1] for r in runs[rev][many]],
                             "overhead_per_epoch_s": overhead, "fixed_s": walls[few] - few * (
                                 per_epoch_compute + overhead)})
        searches, search_cpu = {}, {}
        if args.search or args.search_only:
            data, label, exclude = write_table(args.tables[0], work)
            base = spec_for(args.tables[0], data, label, exclude, 10, work)
            walls: dict[str, list[float]] = {rev: [] for rev in repos}
            cpus: dict[str, list[float]] = {rev: [] for rev in repos}
            for round_ in range(args.rounds):
                # Alternating revisions: a machine that slows down mid-run slows both alike.
                for rev, repo in (list(repos.items()) if round_ % 2 == 0 else list(repos.items())[::-1]):
                    spec = work / f"search-{rev}-{round_}.yaml"
                    spec.write_text(yaml.safe_dump(search_spec(base, work / f"search-out-{rev}-{round_}")))
                    wall = run_cli(repo, ["tune", str(spec)], work / f"log-search-{rev}-{round_}.txt")
                    walls[rev].append(wall)
                    cpus[rev].append(CPU_SECONDS[-1])
                    print(f"[ttm] {rev} search of 8 × 10 epochs: {wall:.0f}s, {8 / wall * 60:.1f} trials/min, "
                          f"{CPU_SECONDS[-1]:.0f} CPU-s (load {os.getloadavg()[0]:.1f})", flush=True)
            searches = {rev: statistics.median(w) for rev, w in walls.items()}
            search_cpu = {rev: statistics.median(c) for rev, c in cpus.items()}
    finally:
        for rev in args.compare_rev:
            subprocess.run(["git", "worktree", "remove", "--force", str(repos[rev])], cwd=ROOT,
                           capture_output=True)
        if not args.out:
            shutil.rmtree(work, ignore_errors=True)

    few, many = args.epochs
    if rows and args.rounds > 1:
        print(f"\n(medians of {args.rounds} runs each; {many} epochs to the bundle, every run: "
              + "; ".join(f"{r['rev']} {r['table']} " + ", ".join(f"{v:.1f}" for v in r["bundled_runs"]) + " s"
                          for r in rows) + ")")
    if rows:
        print(f"\n| revision | table | trainyard {few} ep | trainyard {many} ep | {many} ep to the bundle | "
              f"plain {many} ep | LightGBM | plain/trainyard ({many} ep) | overhead per epoch | fixed cost |")
        print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['rev']} | {r['table']} | {r['walls'][few]:.1f} s | {r['walls'][many]:.1f} s | "
              f"{r['bundled'][many]:.1f} s | "
              f"{r['plain'][many]:.2f} s | {r['lightgbm']:.2f} s | {r['plain'][many] / r['walls'][many]:.3f} | "
              f"{r['overhead_per_epoch_s'] * 1000:.0f} ms | {r['fixed_s']:.1f} s |")
    for rev in args.compare_rev:
        for table in tables:
            now = next(r for r in rows if r["rev"] == "now" and r["table"] == table)
            then = next(r for r in rows if r["rev"] == rev and r["table"] == table)
            print(f"[ttm] {table}: {many} epochs {then['walls'][many]:.1f} s ({rev}) -> {now['walls'][many]:.1f} s "
                  f"({then['walls'][many] / now['walls'][many]:.2f}× faster); to the bundle "
                  f"{then['bundled'][many]:.1f} s -> {now['bundled'][many]:.1f} s")
        if searches:
            print(f"[ttm] search (median of {args.rounds}): {searches[rev]:.0f} s ({rev}) -> {searches['now']:.0f} s "
                  f"({searches[rev] / searches['now']:.2f}× the trials per minute); CPU {search_cpu[rev]:.0f} -> "
                  f"{search_cpu['now']:.0f} CPU-s ({search_cpu[rev] / search_cpu['now']:.2f}× less work)")
    print(f"[ttm] load average {os.getloadavg()[0]:.2f} at the end (figures from a loaded machine are indicative)")
    print("Goals (issue 17): overhead per epoch <= 50 ms; 1000 rows x 100 epochs end to end <= 15 s; the search "
          ">= 2x as fast as before.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
