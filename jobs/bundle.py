"""The model bundle: the contract between training and serving. One folder, readable without Ray or pickle.

    model.safetensors   weights            model.json       the model's constructor args
    preprocessor.json   fitted statistics  schema.json      input features, label, classes, task
    metrics.json        {"val", "test"}    spec.yaml        the resolved spec     lineage.json

`load(path).predict(records)` applies the same `Preprocessor.transform` that produced the training data, so
training-time and serving-time preprocessing cannot drift apart.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file, save_file

from jobs.model import build_model
from jobs.preprocess import Preprocessor, load_state

FILES = ("model.safetensors", "model.json", "preprocessor.json", "schema.json", "metrics.json", "spec.yaml",
         "lineage.json")


class BundleError(ValueError):
    """A bundle that cannot be loaded, or input it cannot predict on; the message says which file/field."""


def input_schema(pre: Preprocessor, dtypes: Optional[dict[str, str]] = None) -> dict:
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


def write(path: str | os.PathLike, *, state_dict: dict, model_config: dict, preprocessor: Preprocessor,
          metrics: dict, spec_yaml: str, lineage: dict, dtypes: Optional[dict[str, str]] = None) -> Path:
    """Write a bundle atomically: into a sibling temp folder, then renamed over `path`."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in state_dict.items()}, str(tmp / "model.safetensors"))
    _dump(tmp / "model.json", model_config)
    preprocessor.save(tmp / "preprocessor.json")
    _dump(tmp / "schema.json", input_schema(preprocessor, dtypes))
    _dump(tmp / "metrics.json", metrics)
    (tmp / "spec.yaml").write_text(spec_yaml)
    _dump(tmp / "lineage.json", lineage)
    if path.exists():
        old = path.with_name(path.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        path.rename(old)
        tmp.rename(path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(path)
    return path


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
    preprocessor: Preprocessor
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
        if self.preprocessor.unknown_category == "error":
            self._reject_unknown(records)
        # An explicit index: from_records([{}]) would build zero rows for a record with every field missing.
        out = self.predict_frame(pd.DataFrame(records, index=range(len(records))))
        out.pop("class_index", None)
        return out

    def _reject_unknown(self, records: list[dict]) -> None:
        from jobs.preprocess import canonical
        problems = []
        for s in self.preprocessor.categorical:
            allowed = set(s.categories)
            for i, r in enumerate(records):
                v = canonical(r.get(s.name))
                if v is not None and v not in allowed:
                    problems.append(f"record {i}: {s.name}={r[s.name]!r} is not a known category "
                                    f"(known: {s.categories})")
        if problems:
            raise BundleError("; ".join(problems))


def upload(local: Path, uri: str) -> None:
    """Copy a written bundle to a pyarrow URI (s3://, gs://...), replacing what was there."""
    import pyarrow.fs as pafs
    fs, root = pafs.FileSystem.from_uri(uri.rstrip("/"))
    if fs.get_file_info(root).type != pafs.FileType.NotFound:
        fs.delete_dir_contents(root, missing_dir_ok=True)
    fs.create_dir(root, recursive=True)
    pafs.copy_files(str(local), root, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs)


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
    try:
        model_config = json.loads((p / "model.json").read_text())
        pre = load_state(json.loads((p / "preprocessor.json").read_text()))
        model = build_model(model_config)
        model.load_state_dict(load_file(str(p / "model.safetensors")))
    except Exception as exc:  # safetensors, json, torch and our own config errors alike: name the bundle
        raise BundleError(f"{p}: cannot load the bundle ({type(exc).__name__}: {exc}); "
                          "re-export it with trainyard train/tune") from None
    model.eval()
    return Bundle(p, model, model_config, pre, json.loads((p / "schema.json").read_text()),
                  json.loads((p / "metrics.json").read_text()), json.loads((p / "lineage.json").read_text()))
