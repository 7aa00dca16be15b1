"""Serving a fine-tuned MiniLM text bundle: requests/s and p99 of trainyard's Ray Serve app against a plain FastAPI
app calling the same model, at 1 and 16 concurrent clients; then the same with `serve.quantize: int8`, and the
accuracy change int8 costs on the test split.

The harness is benchmarks/serve_latency.py's (closed-loop raw HTTP load from a separate process, plain and
trainyard measured back to back, alternating, median of --rounds): the plain app is its single-process uvicorn
app doing the same body checks and `Bundle.predict` one request at a time, with one torch thread, and trainyard
gets one replica of --cpus CPUs (Ray gives it as many torch threads). Each request carries one real review
snippet of the bundle's test split.

Needs the bundle benchmarks/text_quality.py keeps:

    .venv/bin/python benchmarks/text_quality.py --keep runs/text-quality
    .venv/bin/python benchmarks/text_serving.py [--bundle runs/text-quality] [--concurrency 1,16] [--duration 10]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import pandas as pd

from _harness import ROOT  # noqa: F401  (puts the repository on sys.path)
from text_quality import LABEL, TEXT, load_reviews, quantized_scores


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", default="runs/text-quality", help="text_quality.py's --keep folder (or a bundle)")
    ap.add_argument("--concurrency", default="1,16")
    ap.add_argument("--duration", type=float, default=10.0, help="measured seconds per point")
    ap.add_argument("--warmup", type=float, default=3.0)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--ingress", default="haproxy", help="trainyard's ingress (one)")
    ap.add_argument("--cpus", type=float, default=1.0, help="CPUs of trainyard's replica")
    ap.add_argument("--quantize", default="none,int8", help="trainyard variants: none (float32), int8")
    args = ap.parse_args()
    args.replicas, args.records = 1, 1

    import benchmarks.serve_latency as bench
    from jobs.bundle import resolve

    bundle = resolve(args.bundle)
    if not (bundle / "model.json").is_file():
        print(f"no bundle at {args.bundle}: run benchmarks/text_quality.py --keep {args.bundle} first", file=sys.stderr)
        return 2
    test_file = Path(args.bundle) / "test-split.parquet"
    test = pd.read_parquet(test_file) if test_file.is_file() else None
    texts = (test if test is not None else load_reviews(256))[TEXT].tolist()[:256]
    bodies = [json.dumps({"records": [{TEXT: t}]}) for t in texts]
    levels = [int(c) for c in args.concurrency.split(",")]

    load_before = os.getloadavg()
    plain = bench.PlainServer(bundle)
    runs = {}
    try:
        for mode in args.quantize.split(","):
            settings = {} if mode == "none" else {"quantize": mode}
            runs[mode if settings else "float32"] = bench._measure_pairs(
                bundle, plain.url, args.ingress, levels, bodies, args, settings)
    finally:
        plain.stop()
    load_after = os.getloadavg()
    print(f"\ntrainyard's ingress: {args.ingress}; the rows 'trainyard Serve (float32 | int8)' are serve.quantize off / int8")
    bench._report(runs, levels, args, load_before, load_after)
    modes = [m for m in args.quantize.split(",") if m != "none"]
    if len(runs) > 1:
        base = runs["float32"]
        for mode in modes:
            q = runs[mode]
            for c in levels:
                speedup = bench._median(q[c]["trainyard"], "rps") / bench._median(base[c]["trainyard"], "rps")
                print(f"serve.quantize {mode} vs float32, trainyard at {c} client(s): {speedup:.2f}x req/s "
                      "(medians of separate runs)")
    if test is not None and modes:
        scores = quantized_scores(bundle, test)
        f, q = scores["float32"], scores["int8"]
        print(f"test split ({len(test)} rows, labels {LABEL!r}): accuracy float32 {f['accuracy']:.4f} -> int8 "
              f"{q['accuracy']:.4f} ({q['accuracy'] - f['accuracy']:+.4f}); macro-F1 {f['f1']:.4f} -> "
              f"{q['f1']:.4f} ({q['f1'] - f['f1']:+.4f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
