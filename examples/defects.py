"""Generate a visual-inspection data set: small greyscale machined parts, with and without defects.

Each image shows a bright part (a disc or a plate with a bore) on a dark, noisy background; a "defect" image
adds a scratch (a thin dark line) or spots (dark pits) on the part. Written folder-per-class
(`OUT/ok/*.png`, `OUT/defect/*.png`) or, with --parquet, as Parquet shards with an `image` bytes column.

    python examples/defects.py --out data/parts --per-class 300 --size 32
"""
from __future__ import annotations

import argparse
import io
from pathlib import Path

import numpy as np


def render(rng: np.random.Generator, size: int, defect: bool) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    cy, cx = size / 2 + rng.normal(0, size * 0.04, 2)
    img = rng.normal(40, 10, (size, size))
    if rng.uniform() < 0.5:   # a disc
        r = size * rng.uniform(0.3, 0.4)
        part = (yy - cy) ** 2 + (xx - cx) ** 2 < r ** 2
    else:                     # a plate with a bore
        half = size * rng.uniform(0.28, 0.38)
        part = (np.abs(yy - cy) < half) & (np.abs(xx - cx) < half * rng.uniform(0.8, 1.1))
        part &= (yy - cy) ** 2 + (xx - cx) ** 2 > (half * 0.35) ** 2
    img[part] = rng.normal(190, 12, part.sum())
    if defect:
        if rng.uniform() < 0.5:   # a scratch across the part
            angle = rng.uniform(0, np.pi)
            dist = np.abs((xx - cx) * np.sin(angle) - (yy - cy) * np.cos(angle))
            length = np.abs((xx - cx) * np.cos(angle) + (yy - cy) * np.sin(angle)) < size * 0.3
            img[(dist < max(size / 32, 0.8)) & length & part] = rng.normal(70, 10)
        else:                     # pits
            for _ in range(rng.integers(2, 5)):
                py, px = cy + rng.normal(0, size * 0.15), cx + rng.normal(0, size * 0.15)
                pit = (yy - py) ** 2 + (xx - px) ** 2 < (size / 16) ** 2
                img[pit & part] = rng.normal(60, 10)
    return np.clip(img, 0, 255).astype(np.uint8)


def png_bytes(pixels: np.ndarray) -> bytes:
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(buf, format="PNG")
    return buf.getvalue()


def generate(out: Path, per_class: int, size: int = 32, seed: int = 0, parquet: bool = False, shards: int = 2):
    rng = np.random.default_rng(seed)
    rows = []
    for label in ("ok", "defect"):
        for i in range(per_class):
            rows.append((label, i, png_bytes(render(rng, size, label == "defect"))))
    out.mkdir(parents=True, exist_ok=True)
    if parquet:
        import pandas as pd
        df = pd.DataFrame({"image": [r[2] for r in rows], "label": [r[0] for r in rows]})
        df = df.sample(frac=1.0, random_state=seed).reset_index(drop=True)
        for k, part in enumerate(np.array_split(np.arange(len(df)), shards)):
            df.iloc[part].to_parquet(out / f"part-{k:03d}.parquet", index=False)
    else:
        for label, i, data in rows:
            (out / label).mkdir(exist_ok=True)
            (out / label / f"{label}-{i:05d}.png").write_bytes(data)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="data/parts")
    ap.add_argument("--per-class", type=int, default=300)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--parquet", action="store_true", help="Parquet shards with an image bytes column")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--force", action="store_true")
    args = ap.parse_args()
    out = Path(args.out)
    if out.exists() and any(out.iterdir()) and not args.force:
        print(f"{out} already holds data; keeping it (--force rewrites)")
        return
    generate(out, args.per_class, args.size, args.seed, args.parquet)
    print(f"wrote {2 * args.per_class} images ({args.size}x{args.size}) to {out}")


if __name__ == "__main__":
    main()
