"""Images through the same pipeline: ingest (folder-per-class or Parquet bytes), a fitted image preprocessor
(decode, resize, channels, [0, 1], per-channel normalisation), packed float32 rows, train-only augmentation.

The image preprocessor is a `jobs.fitted.FittedPreprocessor` of kind "image" (transform, encode_labels,
feature_dim, output_dim, shape, JSON state), so training, evaluation, the bundle and serving need no second path.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import io
import os
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Optional

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs

from cluster.errors import BadInput, root_cause
from jobs.fitted import FittedPreprocessor, aggregate
from jobs.splits import split_field, split_line, split_summary, stratified_by_groups

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
ENCODINGS = ["png", "jpeg", "bmp", "gif", "webp", "tiff", "base64 of any of these", "pixel array"]
# The same list in Pillow's names: what serving lets Pillow try on a sender's bytes (not its every plugin).
DECODE_FORMATS = ("PNG", "JPEG", "BMP", "GIF", "WEBP", "TIFF")


class InputError(BadInput):
    """Records that cannot be predicted on. `problems` holds (record index, field, message) triples."""

    def __init__(self, problems: list[tuple[int, str, str]]):
        self.problems = problems
        super().__init__("; ".join(f"record {i}: {f}: {m}" for i, f, m in problems))


# ---------------------------------------------------------------------------------------------- decoding
def decode(value: Any, size: tuple[int, int], channels: int, *, formats: Optional[tuple[str, ...]] = None,
           max_pixels: Optional[int] = None) -> np.ndarray:
    """One image → uint8 array (H, W, C). Accepts encoded bytes, base64 text, or a pixel array of the right shape.
    Raises ValueError with a message fit for the user. `formats` (Pillow's names, e.g. DECODE_FORMATS) and
    `max_pixels` bound what an encoded image from an untrusted sender may make the decoder do (serving)."""
    return decode_sized(value, size, channels, formats=formats, max_pixels=max_pixels)[0]


def decode_sized(value: Any, size: tuple[int, int], channels: int, *, formats: Optional[tuple[str, ...]] = None,
                 max_pixels: Optional[int] = None) -> tuple[np.ndarray, tuple[int, int]]:
    """`decode`, and the image's (width, height) as given, before the resize: what drift monitoring watches of
    images (`jobs.watched`)."""
    from PIL import Image, UnidentifiedImageError

    h, w = size
    if isinstance(value, str):
        text = value.split(",", 1)[1] if value.startswith("data:") else value
        try:
            value = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            # A file's path in place of its bytes ("/data/line3/img_0042.png") was told only "not valid base64".
            path = len(text) < 4096 and text.strip().lower().endswith(IMAGE_EXTENSIONS)
            raise ValueError(("a file name or path, not the image: read the file and send its bytes base64-encoded "
                              "(trainyard predict FOLDER does)") if path else
                             "not valid base64; send the PNG/JPEG bytes base64-encoded") from None
    if isinstance(value, (bytes, bytearray, memoryview)):
        try:
            with Image.open(io.BytesIO(bytes(value)), formats=formats) as img:
                declared = img.size
                # Only the header is read so far: refuse before the decoder allocates the declared size.
                too_big = max_pixels is not None and declared[0] * declared[1] > max_pixels
                if not too_big:
                    if img.mode.startswith("I;16") or img.mode == "I":
                        img = _eight_bit(img)
                    img = img.convert("L" if channels == 1 else "RGB")
                    if img.size != (w, h):
                        img = img.resize((w, h), Image.BILINEAR)
                    arr = np.asarray(img, dtype=np.uint8)
        except Image.DecompressionBombError:
            raise ValueError(f"the image declares over {2 * Image.MAX_IMAGE_PIXELS:,} pixels (Pillow's "
                             "decompression-bomb limit): downscale it before sending") from None
        except UnidentifiedImageError:
            raise ValueError("cannot decode the image: not " + (f"a {'/'.join(formats)} file" if formats else
                             "an image format Pillow reads") + " (or a corrupt one)") from None
        except (OSError, ValueError, SyntaxError) as exc:
            raise ValueError(f"cannot decode the image ({type(exc).__name__}: {exc})") from None
        if too_big:
            raise ValueError(f"the image is {declared[0]}x{declared[1]} = {declared[0] * declared[1]:,} pixels; the "
                             f"limit is {max_pixels:,}: downscale it before sending")
        return arr.reshape(h, w, channels), declared
    if value is None or (isinstance(value, float) and value != value):   # None, or NaN from a missing field
        raise ValueError("missing; send a base64 PNG/JPEG or a pixel array")
    try:
        arr = np.asarray(value, dtype=np.float64)
    except OverflowError:
        raise ValueError("a pixel value is an integer beyond the range of a double; pixels lie in 0..255") from None
    except (TypeError, ValueError):
        raise ValueError(f"expected base64 text or a pixel array, got {type(value).__name__}") from None
    given = list(arr.shape)
    if arr.ndim == 1 and arr.size == h * w * channels:   # a flat array, as Parquet stores fixed tensors
        arr = arr.reshape(h, w, channels)
    if arr.ndim == 2 and channels == 1:
        arr = arr[:, :, None]
    if arr.shape != (h, w, channels):
        # "[32, 32] + [3] channels (height, width[, channels])" read as if the channels could be left out.
        raise ValueError(f"pixel array has shape {given}, expected " + (
            f"[{h}, {w}] (height, width; [{h}, {w}, 1] too: the model reads grey images)" if channels == 1 else
            f"[{h}, {w}, {channels}] (height, width, channels: the model reads {channels}-channel images; an "
            "encoded image of any channels is converted, a pixel array is not)"))
    if not np.isfinite(arr).all():
        raise ValueError("pixel array holds NaN or infinity")
    if arr.min() < 0 or arr.max() > 255:
        raise ValueError("pixel values must lie in 0..255")
    if arr.max() <= 1.0 and not np.array_equal(arr, np.rint(arr)):
        # Scaled to 0..1 (torchvision's ToTensor, skimage's img_as_float): read as 0..255 it is a black image.
        raise ValueError(f"pixel values lie in 0..1 (largest {arr.max():.3g}): pixels are taken in 0..255, so "
                         "multiply by 255 and round")
    return np.rint(arr).astype(np.uint8), (w, h)


def _eight_bit(img):
    """A 16-bit greyscale image (X-ray, thermal and machine-vision cameras save them; Pillow opens one as "I;16",
    or as 32-bit "I" in some versions and for TIFFs) → 8-bit "L", its 0..65535 scaled onto 0..255. Pillow's own
    convert("L") clips every value above 255, so that such an image came out nearly all white. An "I" image whose
    values all lie in 0..255 is 8-bit data, kept as it is."""
    from PIL import Image

    wide = np.clip(np.asarray(img).astype(np.int64), 0, 65535)
    if img.mode == "I" and wide.max() <= 255:
        return Image.fromarray(wide.astype(np.uint8), mode="L")
    return Image.fromarray(((wide * 255 + 32767) // 65535).astype(np.uint8), mode="L")


# ---------------------------------------------------------------------------------------------- preprocessor
@dataclass
class ImagePreprocessor(FittedPreprocessor):
    kind: ClassVar[str] = "image"

    label: str
    classes: list[Any]
    size: list[int]                      # [height, width]
    channels: int                        # 1 greyscale, 3 RGB
    column: str = "image"
    mean: list[float] = field(default_factory=list)   # per channel, of pixels scaled to [0, 1], train split only
    std: list[float] = field(default_factory=list)
    stats: dict = field(default_factory=dict)

    @property
    def task(self) -> str:
        return "classification"

    @property
    def shape(self) -> list[int]:
        return [self.channels, *self.size]

    @property
    def feature_dim(self) -> int:
        return self.channels * self.size[0] * self.size[1]

    @property
    def feature_names(self) -> list[str]:
        return [self.column]

    def pixels(self, values: list, strict: bool = True) -> np.ndarray:
        """Decode every value to (n, H, W, C) uint8; bad ones raise one InputError naming every record."""
        out = np.zeros((len(values), self.size[0], self.size[1], self.channels), dtype=np.uint8)
        problems = []
        for i, v in enumerate(values):
            try:
                out[i] = decode(v, tuple(self.size), self.channels)
            except ValueError as exc:
                problems.append((i, self.column, str(exc)))
        if problems and strict:
            raise InputError(problems)
        return out

    def normalise(self, pixels: np.ndarray) -> np.ndarray:
        """(n, H, W, C) uint8 → packed float32 (n, C*H*W) in channel-first order, normalised per channel."""
        x = pixels.astype(np.float32) / 255.0
        x = (x - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2)).reshape(len(pixels), -1)

    def transform(self, df: pd.DataFrame) -> np.ndarray:
        if self.column not in df:
            raise InputError([(i, self.column, "missing") for i in range(len(df))] or [(0, self.column, "missing")])
        return self.normalise(self.pixels(df[self.column].tolist()))

    @classmethod
    def from_dict(cls, d: dict) -> "ImagePreprocessor":
        # Bundles written before the kinds had their own types also stored the tabular fields, empty.
        return cls(**{k: v for k, v in d.items() if k not in _NOT_FIELDS})


_NOT_FIELDS = {"kind", "task", "numeric", "categorical", "unknown_category", "label_center", "label_scale"}


def _channel_moments(batch: pd.DataFrame, column: str, size: tuple, channels: int) -> pd.DataFrame:
    """Per image: mean and mean square of each channel in [0, 1] — the inputs of a distributed Mean — and its
    width and height as stored (the reference profile's, `jobs.profile.image_reference`)."""
    decoded = [decode_sized(v, size, channels) for v in batch[column].tolist()]
    pix = np.stack([d[0] for d in decoded]).astype(np.float64) / 255.0
    out = {"width": [d[1][0] for d in decoded], "height": [d[1][1] for d in decoded]}
    for c in range(channels):
        out[f"m{c}"] = pix[..., c].mean(axis=(1, 2))
        out[f"s{c}"] = (pix[..., c] ** 2).mean(axis=(1, 2))
    return pd.DataFrame(out)


def fit(train_ds, data_spec, *, classes: list[Any]) -> ImagePreprocessor:
    """Per-channel mean/std on the TRAIN split with Ray Data Mean aggregations (all images share one size, so the
    mean of per-image means is the pixel mean)."""
    return fit_with_stats(train_ds, data_spec, classes=classes)[0]


def pretrained_backbone(model_spec):
    """`model.kind: image`: its pretrained backbone (`jobs.vision.Backbone`: the size, channels and normalisation
    its image processor applies); None for a CNN trained from scratch (the data's size, the train split's norms)."""
    if model_spec.kind != "image":
        return None
    from jobs.vision import resolve_backbone   # transformers is imported only for a pretrained backbone
    return resolve_backbone(model_spec)


def fit_with_stats(train_ds, data_spec, *, classes: list[Any], backbone=None) -> tuple[ImagePreprocessor, dict]:
    """`fit`, and the row of aggregated statistics it was fitted from, which also holds the images' width and
    height summaries (`jobs.profile.NumericSummary`, aliased `summary(width)` and `summary(height)`): the train
    part of the reference profile, from the same pass. With a pretrained `backbone` (`jobs.vision.Backbone`)
    the images take its size and channels and its image processor's mean and std, not the train split's."""
    from ray.data.aggregate import Count, Mean

    from jobs.profile import NumericSummary

    img = data_spec.image
    size, ch = (tuple(backbone.size), backbone.channels) if backbone else (tuple(img.size), img.channels)
    moments = train_ds.map_batches(_channel_moments, fn_kwargs={"column": img.column, "size": size, "channels": ch},
                                   batch_format="pandas")
    stats = aggregate(moments, Count(), *[Mean(f"m{c}") for c in range(ch)], *[Mean(f"s{c}") for c in range(ch)],
                      NumericSummary("width"), NumericSummary("height"))
    mean = [float(stats[f"mean(m{c})"]) for c in range(ch)]
    std = [float(max(stats[f"mean(s{c})"] - mean[c] ** 2, 0.0) ** 0.5) for c in range(ch)]
    std = [s if s > 1e-6 else 1.0 for s in std]
    if backbone:
        mean, std = list(backbone.mean), list(backbone.std)
    pre = ImagePreprocessor(label=data_spec.label, classes=list(classes), size=list(size), channels=ch,
                            column=img.column, mean=mean, std=std, stats={"train_rows": int(stats["count()"])})
    return pre, stats


# ---------------------------------------------------------------------------------------------- ingest
def folder_layout(root: str, *, field: str = "data.path", min_classes: int = 2) -> tuple[list[str], list[str],
                                                                                        list[str]]:
    """data/<label>/<file>: (files, labels, ignored top-level files). `field` names where the folder was given (the
    spec's data.path, `evaluate --data`); training needs two classes, scoring a model on new images one."""
    from jobs.ingest import DataError
    from jobs.spelling import case_twins

    if not os.path.isdir(root):
        raise DataError(f"{field}: {root!r} is not a directory; format: images expects <path>/<label>/<image files>")
    classes = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)) and not d.startswith("."))
    stray = sorted(f for f in os.listdir(root) if os.path.isfile(os.path.join(root, f)))
    files, labels = [], []
    for c in classes:
        for dirpath, _, names in os.walk(os.path.join(root, c)):
            for n in sorted(names):
                if n.lower().endswith(IMAGE_EXTENSIONS):
                    files.append(os.path.join(dirpath, n))
                    labels.append(c)
    with_images = sorted(set(labels))
    if not with_images:
        raise DataError(f"{field}: {root} has no class subfolders holding images ({', '.join(IMAGE_EXTENSIONS)}); "
                        "lay the data out as <path>/<label>/<file>.png")
    if len(with_images) < min_classes:
        raise DataError(f"{field}: {root} has a single class folder with images ({with_images[0]!r}); "
                        "classification needs at least two class subfolders")
    if min_classes > 1 and (twins := case_twins(with_images)):
        # 'scratch/' and 'Scratch/' trained as two classes without a word, where a table's are refused.
        raise DataError(f"{field}: {root}: class folders " + "; ".join(" and ".join(map(repr, g)) for g in twins)
                        + " differ only in case or in spaces around them, and would be trained as different "
                          "classes: move each class's images into one folder")
    return files, labels, stray


def folders_without_images(root: str, with_images: Optional[list] = None) -> list[str]:
    """The folders under `root` holding no image file (searched recursively, as `folder_layout` does): not
    classes. Said, not left out without a word: an empty 'scratch' folder trains a model that cannot answer it.
    `with_images`: the classes `folder_layout` found, when it has walked the folders already."""
    folders = [n for n in sorted(os.listdir(root)) if not n.startswith(".") and os.path.isdir(os.path.join(root, n))]
    if with_images is not None:
        return sorted(set(folders) - set(with_images))
    return [n for n in folders if not any(f.lower().endswith(IMAGE_EXTENSIONS)
                                          for _, _, names in os.walk(os.path.join(root, n)) for f in names)]


def without_images_note(root: str, with_images: Optional[list] = None) -> Optional[str]:
    """`folders_without_images`, said; None when there is none."""
    empty = folders_without_images(root, with_images)
    if not empty:
        return None
    return (f"{len(empty)} folder(s) under {root} hold no image ({', '.join(IMAGE_EXTENSIONS)}), so "
            f"they are no class: {', '.join(map(repr, empty[:5]))}{' ...' if len(empty) > 5 else ''}")


def check_parquet_columns(schemas: dict, data) -> None:
    """Every Parquet file of an image data set holds the image column and the label: ingest, and `validate` and
    `train` before Ray starts (found after a Ray start before). `schemas`: {file: pyarrow schema}."""
    from jobs.ingest import DataError

    for f, s in schemas.items():
        for col in (data.image.column, data.label):
            if col not in s.names:
                raise DataError(f"{f}: no column {col!r} (columns: {s.names}); set data.image.column / data.label "
                                "to the columns holding the encoded image and its label")


def _decode_check(batch: pd.DataFrame, column: str, size: tuple, channels: int, seed: int,
                  by: Optional[str] = None) -> pd.DataFrame:
    """Mark rows whose image cannot be decoded, and give every row its split key: a hash of the image bytes, or
    with `by` (data.split.by: a patient's scans, a part's photos) of the row's group, so a group's images share a
    split (an image without a group: of its bytes). The group's column is dropped. `_d`: a digest of the image's
    bytes alone, which finds the same picture filed under two classes."""
    ok, err, keys, digests = [], [], [], []
    salt = str(seed).encode()
    groups = batch.pop(by).tolist() if by else [None] * len(batch)
    for v, group in zip(batch[column].tolist(), groups):
        try:
            decode(v, size, channels)
            ok.append(True)
            err.append("")
        except ValueError as exc:
            ok.append(False)
            err.append(str(exc))
        # The bytes are hashed once: their digest is `_d`, and the split key unless the row has a group.
        raw = v if isinstance(v, (bytes, bytearray)) else repr(v).encode()
        digest = hashlib.blake2b(bytes(raw), key=salt[:64], digest_size=8).digest()
        digests.append(int.from_bytes(digest, "little", signed=True))
        if group is not None and not pd.isna(group):
            digest = hashlib.blake2b(str(group).encode(), key=salt[:64], digest_size=8).digest()
        keys.append((int.from_bytes(digest, "little") >> 11) / float(1 << 53))
    return batch.assign(_ok=ok, _error=err, _u=keys, _d=digests)


def _to_image_rows(batch: pd.DataFrame, column: str, label: str, label_by_path: dict) -> pd.DataFrame:
    out = pd.DataFrame({column: batch["bytes"], "path": batch["path"]})
    out[label] = [label_by_path[p] for p in batch["path"]]
    return out


def ingest_images(data, *, progress: Callable[[str], None] = print):
    """Images → the same IngestResult the tabular path gives (dataset with SPLIT_COLUMN, classes, counts)."""
    import ray
    from jobs import ingest as ING
    from jobs.datafiles import file_schema, resolve_files

    img = data.image
    size, ch = tuple(img.size), img.channels
    label = data.label
    if data.format == "images":
        root = data.path if isinstance(data.path, str) else data.path[0]
        root = os.path.abspath(os.path.expanduser(root))
        files, labels, stray = folder_layout(root)
        if note := without_images_note(root, labels):
            progress(f"[ingest] note: {note}")
        by_path = dict(zip(files, labels))
        ds = ray.data.read_binary_files(files, include_paths=True)
        ds = ds.map_batches(_to_image_rows, fn_kwargs={"column": img.column, "label": label,
                                                       "label_by_path": by_path}, batch_format="pandas")
        fs = pafs.LocalFileSystem()
        shown_files = files
    else:
        fs, shown_files, _ = resolve_files(data.path)
        schemas = {f: file_schema(fs, f, "parquet") for f in shown_files}
        check_parquet_columns(schemas, data)
        by = split_field(data, schemas)         # data.split.by: checked as a table's (in every file, a usable type)
        ds = ING.read_parquet(shown_files, filesystem=fs, include_paths=True, partitioning=None,
                              columns=[img.column, data.label] + ([by.name] if by is not None else []))
        stray, root = [], None
    progress(f"[ingest] {len(shown_files)} {'image' if data.format == 'images' else 'parquet'} file(s)")
    ds = ds.map_batches(_decode_check, fn_kwargs={"column": img.column, "size": size, "channels": ch,
                                                  "seed": data.split.seed, "by": data.split.by},
                        batch_format="pandas")
    try:
        ds = ds.materialize()
    except Exception as exc:
        raise ING.DataError(f"reading images from {data.path!r} failed: {root_cause(exc)}") from None
    facts = ds.select_columns([label, "_ok", "_u", "_d", "path", "_error"]).to_pandas()
    rows_read = len(facts)
    if rows_read == 0:
        raise ING.DataError(f"data.path {data.path!r}: no images found")
    # A Parquet row without a label (null, NaN, blank) is left out and counted, as a table's is (it failed in
    # the split's cut-offs: "boolean value of NA is ambiguous", a traceback after Ray's start).
    unlabelled = _unlabelled(facts[label])
    bad = facts[~facts["_ok"] & ~unlabelled]
    corrupt = [{"path": p, "error": e} for p, e in zip(bad["path"], bad["_error"])]
    if len(bad) > data.max_corrupt_fraction * rows_read:
        listing = "; ".join(f"{c['path']}: {c['error']}" for c in corrupt[:10])
        raise ING.DataError(f"{len(bad)} of {rows_read} images cannot be decoded, more than "
                            f"data.max_corrupt_fraction={data.max_corrupt_fraction:g}: {listing}"
                            + (" …" if len(corrupt) > 10 else "") + ". Remove or replace them, or raise the fraction")
    good = facts[facts["_ok"] & ~unlabelled]
    if note := twins_note(good, label, root):
        progress(f"[ingest] note: {note}")
    labels = good[label].to_numpy()
    classes = sorted(pd.unique(labels).tolist(), key=lambda v: (str(type(v)), v))
    if len(classes) < 2:
        raise ING.DataError(f"label {label!r} has " + (f"a single class ({classes[0]!r})" if classes else
                                                       "no value in any decodable image's row")
                            + "; classification needs two or more")
    stratify = not data.split.by or stratified_by_groups(good[[label, "_u"]], label)
    cuts = ING.split_thresholds(labels, good["_u"].to_numpy(), data.split.val, data.split.test, stratify)
    ds = ds.map_batches(_keep_decodable, fn_kwargs={"label": label}, batch_format="pandas")
    ds = ds.map_batches(ING.assign_split, fn_kwargs={"label": label, "cuts": cuts, "stratify": stratify},
                        batch_format="pandas")
    ds = ds.drop_columns(["_ok", "_error", "_d"]).materialize()
    # The facts already hold every decodable row's label and `_u`, in the dataset's order: the same
    # assign_split gives the rows' splits here, without another pass over the images.
    splits = ING.assign_split(good[[label, "_u"]], label, cuts, stratify)
    names = ING.NAMES
    split_rows = {n: int((splits[ING.SPLIT_COLUMN] == k).sum()) for k, n in names.items()}
    how = split_summary(data, splits, good["_u"].to_numpy(), stratify, cuts=cuts)
    if how.get("by"):   # keyed here, not as a table's rows are: `evaluate` cannot place new rows by it (placed.py)
        how = {**{k: v for k, v in how.items() if k != "seen"}, "keyed": "image"}
    if line := split_line(how):
        progress(line)
    ING.check_splits(split_rows, data)
    class_counts = {n: {str(c): int(v) for c, v in splits.loc[splits[ING.SPLIT_COLUMN] == k, label]
                        .value_counts().items()} for k, n in names.items()}
    for line in ING.unmeasured_classes(class_counts):    # as a table's classes: a class of a few images said
        progress(line)
    result = ING.IngestResult(
        dataset=ds, files=list(shown_files), format=data.format, schema=pa.schema([(img.column, pa.binary()),
                                                                                  (label, pa.string())]),
        label=label, task="classification", numeric=[], categorical=[], classes=classes, rows_read=rows_read,
        rows_dropped_missing_label=int(unlabelled.sum()), split_rows=split_rows, class_counts=class_counts,
        inferred={"task": "classification (images)"}, unused_columns=stray,
        fingerprint=ING.fingerprint(fs, list(shown_files)), corrupt=corrupt, split_how=how)
    return result


def twins_note(good: pd.DataFrame, label: str, root: Optional[str] = None) -> Optional[str]:
    """The same picture (the same bytes) under two or more classes: a labelling slip that teaches the model both
    answers for one image, and lands in one split (its key is its bytes'). Copies under one class are left be."""
    classes = good.groupby("_d", sort=False)[label].nunique()
    twins = classes.index[classes > 1]
    if not len(twins):
        return None
    rows = good[good["_d"].isin(twins)]
    where = (lambda p: os.path.relpath(p, root)) if root else (lambda p: f"a row of {os.path.basename(p)}")
    shown = [" = ".join(f"{where(str(p))} ({lab})" for p, lab in zip(g["path"], g[label]))
             for _, g in rows.groupby("_d", sort=False)][:3]
    return (f"{len(twins)} image(s) are filed under more than one class, byte for byte the same: "
            + " | ".join(shown) + (" | ..." if len(twins) > 3 else "")
            + ". The model is taught two answers for one picture; keep the copy whose class is right")


def _keep_decodable(batch: pd.DataFrame, label: str) -> pd.DataFrame:
    return batch[batch["_ok"] & ~_unlabelled(batch[label])]


def _unlabelled(labels: pd.Series) -> pd.Series:
    """Where an image's label is missing, by ingest's rule for a table's (`infer.label_missing`): null, NaN, or
    text blank after a trim."""
    from jobs.infer import label_missing
    missing = label_missing(pa.array(labels, from_pandas=True))
    return pd.Series(missing.to_numpy(zero_copy_only=False), index=labels.index, dtype=bool)


# ---------------------------------------------------------------------------------------------- augmentation
def augment_batch(x, shape: list[int], hflip: bool, crop: int, generator=None):
    """Train-split augmentation on packed rows (B, C*H*W): per-sample horizontal flip and random crop with zero
    padding. Called only inside the training step, so validation, test and serving never see it."""
    import torch
    import torch.nn.functional as F

    b = x.shape[0]
    c, h, w = shape
    img = x.view(b, c, h, w)
    if hflip:
        flip = torch.rand(b, generator=generator, device="cpu").to(x.device) < 0.5
        img = torch.where(flip[:, None, None, None], img.flip(3), img)
    if crop:
        padded = F.pad(img, (crop, crop, crop, crop))
        oy = torch.randint(0, 2 * crop + 1, (b,), generator=generator).to(x.device)
        ox = torch.randint(0, 2 * crop + 1, (b,), generator=generator).to(x.device)
        iy = (oy[:, None] + torch.arange(h, device=x.device))[:, None, :, None].expand(b, c, h, w + 2 * crop)
        img = padded.gather(2, iy)
        ix = (ox[:, None] + torch.arange(w, device=x.device))[:, None, None, :].expand(b, c, h, w)
        img = img.gather(3, ix)
    return img.reshape(b, -1)
