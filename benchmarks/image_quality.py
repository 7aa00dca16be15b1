"""Image model quality on real photos: trainyard's default image model against a logistic regression on raw
pixels and a plain PyTorch CNN, on the same train/val/test split, in one invocation.

Data: Animal-MNIST (PyPI `animal-mnist`, shipped inside the package; install it with
`pip install --no-deps animal-mnist`, as its loader module pulls in TensorFlow, which this script does not use):
10,000 real 28x28 greyscale animal silhouettes cut out of photographs, 10 classes (bear ... zebra) of 1,000 each.
The arrays are written as PNG files, one folder per class, and trainyard ingests that folder like any user's; the
split is trainyard's (val 0.2, test 0.2: 6,000 training images), and the baselines read the very same rows.

    .venv/bin/python benchmarks/image_quality.py [--epochs N] [--workers 2] [--channels 32,64] [--pool 4]

Without --epochs/--channels/--pool the trainyard run is the spec's defaults for `model.kind: cnn`.
"""
from __future__ import annotations

import argparse
import gzip
import io
import os
import pickle
import tempfile
import time
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from torch import nn

from _harness import ROOT  # noqa: F401  (puts the repository on sys.path)

CLASSES = ["bear", "bird", "cat", "cow", "dog", "elephant", "giraffe", "horse", "sheep", "zebra"]


class _ArraysOnly(pickle.Unpickler):
    """The package stores its arrays as pickled numpy arrays: rebuild those and refuse any other object."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype")}

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"animal-mnist data holds {module}.{name}, not a numpy array")
        return super().find_class(module, name)


def load_animals() -> tuple[np.ndarray, np.ndarray]:
    """(10000, 28, 28) uint8 images and their labels 0..9, read from the installed package's data files."""
    try:
        folder = resources.files("animal_mnist") / "data" / "Animal_MNIST"
    except ModuleNotFoundError:
        raise SystemExit("this benchmark needs the animal-mnist package: "
                         ".venv/bin/pip install --no-deps animal-mnist") from None
    arrays = []
    for name in ("animal_data_version_3.gz", "animal_label_version_3.gz"):
        with gzip.open(io.BytesIO((folder / name).read_bytes())) as f:
            arrays.append(np.asarray(_ArraysOnly(f).load()))
    return arrays[0].astype(np.uint8), arrays[1].astype(np.int64)


def write_folders(images: np.ndarray, labels: np.ndarray, root: Path) -> Path:
    from PIL import Image

    for i, (img, y) in enumerate(zip(images, labels)):
        folder = root / CLASSES[y]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img, mode="L").save(folder / f"{i:05d}.png")
    return root


def split_pixels(prepared, split: int) -> tuple[np.ndarray, np.ndarray]:
    """A split's rows as trainyard ingested them: (n, 784) pixels in [0, 1] and label indices."""
    from PIL import Image

    df = prepared.ingest.split(split).to_pandas()
    x = np.stack([np.asarray(Image.open(io.BytesIO(b)).convert("L"), dtype=np.float32).ravel() / 255.0
                  for b in df["image"]])
    y = np.asarray([CLASSES.index(c) for c in df["label"]])
    return x, y


def logistic_regression(train, val, test) -> dict:
    """Multinomial logistic regression on raw pixels; C picked on the validation split."""
    from sklearn.linear_model import LogisticRegression

    best = None
    t0 = time.perf_counter()
    for c in (0.01, 0.1, 1.0):
        model = LogisticRegression(C=c, max_iter=500).fit(*train)
        acc = model.score(*val)
        if best is None or acc > best[0]:
            best = (acc, c, model)
    return {"test_accuracy": best[2].score(*test), "val_accuracy": best[0], "note": f"C={best[1]}",
            "seconds": time.perf_counter() - t0}


def plain_cnn(train, val, test, epochs: int, seed: int = 0) -> dict:
    """A textbook small CNN in plain PyTorch (two conv blocks, flatten, dense): Adam, batch 128, the epoch
    with the best validation accuracy is kept. Inputs standardised with the train split's mean and std."""
    torch.manual_seed(seed)
    mean, std = train[0].mean(), train[0].std()
    tensors = [(torch.from_numpy((x - mean) / std).view(-1, 1, 28, 28), torch.from_numpy(y)) for x, y in (train, val, test)]
    model = nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Dropout(0.3), nn.Linear(128, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def accuracy(x, y) -> float:
        model.eval()
        with torch.no_grad():
            return float((model(x).argmax(1) == y).float().mean())

    (xt, yt), (xv, yv), (xs, ys) = tensors
    best = (-1.0, 0.0, 0)
    t0 = time.perf_counter()
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(len(xt))
        for i in range(0, len(xt), 128):
            idx = perm[i:i + 128]
            loss = nn.functional.cross_entropy(model(xt[idx]), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        val_acc = accuracy(xv, yv)
        if val_acc > best[0]:
            best = (val_acc, accuracy(xs, ys), epoch + 1)
    seconds = time.perf_counter() - t0
    return {"test_accuracy": best[1], "val_accuracy": best[0], "note": f"best epoch {best[2]}/{epochs}",
            "seconds": seconds, "images_per_s": len(xt) * epochs / seconds}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=None, help="default: the spec's default train.epochs")
    ap.add_argument("--workers", type=int, default=None, help="default: the spec's default train.workers")
    ap.add_argument("--channels", default=None, help="model.channels, e.g. 32,64 (default: the spec's)")
    ap.add_argument("--pool", type=int, default=None, help="model.pool (default: the spec's)")
    ap.add_argument("--plain-epochs", type=int, default=15)
    ap.add_argument("--baselines", action=argparse.BooleanOptionalAction, default=True,
                    help="--no-baselines: the trainyard run alone (while trying settings)")
    args = ap.parse_args()

    from cluster import connect
    from cluster.quiet import quiet_ray_logs
    from jobs.ingest import TEST, TRAIN, VAL
    from jobs.pipeline import export_bundle, prepare, storage_root
    from jobs.spec import validate_spec
    from jobs.train import fit

    images, labels = load_animals()
    tmp = Path(tempfile.mkdtemp(prefix="trainyard-imgquality-"))
    write_folders(images, labels, tmp / "animals")
    model = {"kind": "cnn"}
    if args.channels:
        model["channels"] = [int(c) for c in args.channels.split(",")]
    if args.pool is not None:
        model["pool"] = args.pool
    train = {k: v for k, v in (("epochs", args.epochs), ("workers", args.workers)) if v is not None}
    spec = validate_spec({
        "name": "animals", "output": str(tmp / "out"),
        "data": {"path": str(tmp / "animals"), "format": "images", "label": "label",
                 "image": {"size": [28, 28], "channels": 1}, "split": {"val": 0.2, "test": 0.2, "seed": 0}},
        "model": model, "train": train})
    quiet_ray_logs()
    connect(num_cpus=max(os.cpu_count() or 1, spec.train.workers * int(spec.train.cpus_per_worker)))
    quiet = lambda *_: None
    t0 = time.perf_counter()
    prepared = prepare(spec, quiet)
    outcome = fit(spec, prepared, storage_path=storage_root(spec), run_name=f"quality-{int(t0)}", progress=quiet)
    _, metrics = export_bundle(spec, prepared, outcome, progress=quiet)
    t_ours = time.perf_counter() - t0
    steady = float(np.median([r["train_samples_per_s"] for r in outcome.history][1:] or [0]))
    ours = {"test_accuracy": metrics["test"]["accuracy"], "val_accuracy": outcome.val_metrics["val_accuracy"],
            "note": f"best epoch {outcome.best_epoch}/{len(outcome.history)}", "seconds": t_ours,
            "images_per_s": steady}

    splits = [split_pixels(prepared, s) for s in (TRAIN, VAL, TEST)]
    rows = [("trainyard default", ours)]
    if args.baselines:
        linear = logistic_regression(*splits)
        rows += [("logistic regression (pixels)", linear),
                 ("plain PyTorch CNN", plain_cnn(*splits, epochs=args.plain_epochs))]

    print(f"\nAnimal-MNIST (real silhouettes, 28x28 grey, 10 classes): train/val/test = "
          f"{'/'.join(str(len(s[1])) for s in splits)}; machine {os.cpu_count()} cores")
    shown = spec.model.model_dump(include={"kind", "channels", "pool", "hidden", "dropout", "activation"})
    print(f"trainyard: model {shown}, {spec.train.epochs} epochs max (early stop {spec.train.early_stop.metric if spec.train.early_stop else None}),"
          f" batch {spec.train.batch_size}, lr {spec.train.lr:g}, {spec.train.workers} worker(s)")
    print(f"{'':<30}{'test acc':>10}{'val acc':>10}{'wall s':>9}  {'train img/s':>12}  note")
    for name, r in rows:
        ips = f"{r['images_per_s']:>12,.0f}" if "images_per_s" in r else f"{'':>12}"
        print(f"{name:<30}{r['test_accuracy']:>10.4f}{r['val_accuracy']:>10.4f}{r['seconds']:>9.1f}  {ips}  {r['note']}")
    if args.baselines:
        print(f"trainyard - logistic regression: {ours['test_accuracy'] - linear['test_accuracy']:+.4f} test accuracy")


if __name__ == "__main__":
    main()
