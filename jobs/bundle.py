"""The model bundle: the contract between training and serving. One folder, readable without Ray or pickle.

    model.safetensors   weights            model.json       the model's constructor args
    preprocessor.json   fitted statistics  schema.json      input features, label, classes, task
    metrics.json        {"val", "test"}    spec.yaml        the resolved spec     lineage.json

`load(path).predict(records)` applies the same `Preprocessor.transform` that produced the training data, so
training-time and serving-time preprocessing cannot drift apart.

A bundle is written once, complete and atomically (`write`): into a hidden sibling folder, scored there through
its own load/predict path, and renamed into place only once `metrics.json` holds every metric. A bundle already
at the path is replaced only then (the caller says so: `jobs.pipeline.export_bundle` prints it).
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file, save_file

from cluster.errors import BadInput
from jobs.fitted import FittedPreprocessor
from jobs.model import build_model
from jobs.preprocess import load_state

FILES = ("model.safetensors", "model.json", "preprocessor.json", "schema.json", "metrics.json", "spec.yaml",
         "lineage.json")


class BundleError(BadInput):
    """A bundle that cannot be loaded, or input it cannot predict on; the message says which file/field."""


def input_schema(pre: FittedPreprocessor, dtypes: Optional[dict[str, str]] = None) -> dict:
    if getattr(pre, "kind", "tabular") == "image":
        from jobs.images import ENCODINGS
        return {"input": "image", "task": pre.task, "label": {"name": pre.label, "classes": pre.classes},
                "image": {"field": pre.column, "size": pre.size, "channels": pre.channels,
                          "accepted": ENCODINGS,
                          "pixels": f"[{pre.size[0]}][{pre.size[1]}]" + ("" if pre.channels == 1 else f"[{pre.channels}]")
                                    + " values 0..255"},
                "features": [{"name": pre.column, "type": "image", "required": True}]}
    dtypes = dtypes or {}
    features = [{"name": s.name, "type": "number", "dtype": dtypes.get(s.name, "double"), "required": False,
                 "missing": f"imputed with {s.fill:g}"} for s in pre.numeric]
    features += [{"name": s.name, "type": "category", "dtype": dtypes.get(s.name, "string"), "required": False,
                  "categories": list(s.categories),
                  "missing": "the 'unknown' slot",
                  "unknown": "the 'unknown' slot" if pre.unknown_category == "ignore" else "rejected"}
                 for s in pre.categorical]
    return {"input": "tabular", "task": pre.task,
            "label": {"name": pre.label, "classes": pre.classes},
            "features": features, "unknown_category": pre.unknown_category}


def write(path: str | os.PathLike, *, state_dict: dict, model_config: dict, preprocessor: FittedPreprocessor,
          metrics: dict, spec_yaml: str, lineage: dict, dtypes: Optional[dict[str, str]] = None,
          score: Optional[Callable[["Bundle"], dict]] = None) -> Path:
    """Write a bundle at `path` once, complete, atomically; returns `path`.

    Every file goes into a hidden sibling folder first. `score`, if given, is called with the bundle loaded from
    that folder (its own load/predict path, as serving will use it) and returns more metrics (the test split's:
    {"test": {...}}); `metrics.json` is written last, with `metrics` and those. Only then is the folder renamed
    to `path`, replacing a bundle already there. If anything fails, the folder is removed and `path` is as it
    was: no complete-looking bundle ever has missing or empty metrics."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_partials(path)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.partial-", dir=path.parent))
    # mkdtemp makes the folder private (0700); a bundle is shared like any folder its user makes (the serving
    # user, a shared filesystem), so it gets the permissions the umask gives.
    umask = os.umask(0)
    os.umask(umask)
    staging.chmod(0o777 & ~umask)
    try:
        save_file({k: v.detach().cpu().contiguous() for k, v in state_dict.items()},
                  str(staging / "model.safetensors"))
        _dump(staging / "model.json", model_config)
        preprocessor.save(staging / "preprocessor.json")
        _dump(staging / "schema.json", input_schema(preprocessor, dtypes))
        (staging / "spec.yaml").write_text(spec_yaml)
        _dump(staging / "lineage.json", lineage)
        if score is not None:
            metrics = {**metrics, **score(_read(staging, metrics=metrics))}
        _dump(staging / "metrics.json", metrics)
        _publish(staging, path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return path


STALE_PARTIAL_S = 3600


def _remove_stale_partials(path: Path) -> None:
    """Staging folders a killed writer left beside `path` (never a bundle: only a rename makes one). Only old
    ones: a writer still at work (scoring a large test split) keeps its folder."""
    import time
    for stale in path.parent.glob(f".{path.name}.partial-*"):
        try:
            if time.time() - stale.stat().st_mtime > STALE_PARTIAL_S:
                shutil.rmtree(stale, ignore_errors=True)
        except OSError:
            continue


def _publish(staging: Path, path: Path) -> None:
    """Rename the finished folder to `path`. A bundle already there is moved aside first (a directory cannot be
    renamed over a non-empty one) and removed after: `path` is never a mix of the two."""
    if not path.exists():
        staging.rename(path)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{path.name}.replaced-", dir=path.parent))
    old.rmdir()
    path.rename(old)
    try:
        staging.rename(path)
    except BaseException:
        old.rename(path)          # put the earlier bundle back
        raise
    shutil.rmtree(old, ignore_errors=True)


def _dump(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, default=_json_default, allow_nan=True))


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"cannot store {type(o).__name__} in a bundle")


@dataclass
class Bundle:
    path: Path
    model: torch.nn.Module
    model_config: dict
    preprocessor: FittedPreprocessor
    schema: dict
    metrics: dict
    lineage: dict

    @property
    def task(self) -> str:
        return self.preprocessor.task

    @property
    def version(self) -> str:
        return str(self.lineage.get("version") or self.lineage.get("created_at", "unknown"))

    # The one prediction path: records → DataFrame → Preprocessor.transform → model → decoded output.
    def predict_frame(self, df: pd.DataFrame) -> dict:
        x = torch.from_numpy(self.preprocessor.transform(df))
        with torch.inference_mode():
            out = self.model(x).float()
        if self.task == "classification":
            proba = torch.softmax(out, dim=1).numpy()
            idx = proba.argmax(axis=1)
            classes = self.preprocessor.classes
            return {"predictions": [classes[i] for i in idx], "probabilities": proba.tolist(), "class_index": idx}
        y = self.preprocessor.decode_regression(out.squeeze(1).numpy())
        return {"predictions": y.tolist()}

    def predict(self, records: list[dict]) -> dict:
        """Predict for a list of records ({feature: value}); missing fields are imputed, unseen categories map
        to the 'unknown' slot (or are rejected when the bundle says unknown_category: error)."""
        if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
            raise BundleError("records must be a list of objects ({feature: value, ...})")
        if not records:
            return {"predictions": [], **({"probabilities": []} if self.task == "classification" else {})}
        problems = self.preprocessor.record_problems(records)
        if problems:
            raise BundleError("; ".join(problems))
        # An explicit index: from_records([{}]) would build zero rows for a record with every field missing.
        out = self.predict_frame(pd.DataFrame(records, index=range(len(records))))
        out.pop("class_index", None)
        return out


def upload(local: Path, uri: str) -> None:
    """Copy a written bundle to a pyarrow URI (s3://, gs://...), replacing what was there. `metrics.json` goes
    last: `load` needs every file, so a reader never takes a half-uploaded bundle for a complete one."""
    import pyarrow.fs as pafs
    fs, root = pafs.FileSystem.from_uri(uri.rstrip("/"))
    if fs.get_file_info(root).type != pafs.FileType.NotFound:
        fs.delete_dir_contents(root, missing_dir_ok=True)
    fs.create_dir(root, recursive=True)
    local_fs = pafs.LocalFileSystem()
    for item in sorted(Path(local).iterdir(), key=lambda p: p.name == "metrics.json"):
        pafs.copy_files(str(item), f"{root}/{item.name}", source_filesystem=local_fs, destination_filesystem=fs)


def fetch(uri: str) -> Path:
    """A bundle (or run output) at a URI → a local copy under the temp dir, keyed by the URI."""
    import hashlib
    import tempfile

    import pyarrow.fs as pafs
    fs, root = pafs.FileSystem.from_uri(uri.rstrip("/"))
    if fs.get_file_info(root + "/bundle/model.json").type == pafs.FileType.File:
        root += "/bundle"
    local = Path(tempfile.gettempdir()) / "trainyard-bundles" / hashlib.sha256(uri.encode()).hexdigest()[:16]
    shutil.rmtree(local, ignore_errors=True)
    local.mkdir(parents=True)
    try:
        pafs.copy_files(root, str(local), source_filesystem=fs, destination_filesystem=pafs.LocalFileSystem())
    except OSError as exc:
        raise BundleError(f"cannot download the bundle at {uri}: {exc}") from None
    return local


def resolve(path: str | os.PathLike) -> Path:
    """A bundle folder, or a run's output folder holding `bundle/` (local, or a URI fetched to a local copy)."""
    if "://" in str(path):
        return fetch(str(path))
    p = Path(path)
    if (p / "bundle" / "model.json").is_file():
        return p / "bundle"
    return p


def load(path: str | os.PathLike) -> Bundle:
    p = resolve(path)
    missing = [f for f in FILES if not (p / f).is_file()]
    if missing:
        raise BundleError(f"{p} is not a trainyard bundle: missing {', '.join(missing)}. "
                          "Give the bundle folder (OUTPUT/bundle) or the run's output folder")
    return _read(p)


def _read(p: Path, metrics: Optional[dict] = None) -> Bundle:
    """The bundle in folder `p`; `metrics`: what its metrics.json will hold (a bundle being written has none yet)."""
    try:
        model_config = json.loads((p / "model.json").read_text())
        pre = load_state(json.loads((p / "preprocessor.json").read_text()))
        model = build_model(model_config)
        model.load_state_dict(load_file(str(p / "model.safetensors")))
    except Exception as exc:  # safetensors, json, torch and our own config errors alike: name the bundle
        raise BundleError(f"{p}: cannot load the bundle ({type(exc).__name__}: {exc}); "
                          "re-export it with trainyard train/tune") from None
    model.eval()
    if metrics is None:
        metrics = json.loads((p / "metrics.json").read_text())
    return Bundle(p, model, model_config, pre, json.loads((p / "schema.json").read_text()), metrics,
                  json.loads((p / "lineage.json").read_text()))
