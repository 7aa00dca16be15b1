"""The whole job spec, and reading, validating and writing it."""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Optional

from pydantic import Field, ValidationError, field_validator, model_validator

from jobs.spec.base import StrictModel
from jobs.spec.data import DataSpec
from jobs.spec.decision import DecisionSpec
from jobs.spec.errors import SpecError, format_errors, overridden_paths, source_of
from jobs.spec.metric_registry import task_problem, train_task_problems
from jobs.spec.monitor import MonitorSpec
from jobs.spec.serve import ServeSpec
from jobs.spec.train import ModelSpec, TrainSpec
from jobs.spec.tune import TuneSpec
from jobs.spec.yamlio import apply_overrides, read_yaml_file, write_yaml


# The longest job name: Ray names the submitted job's log file job-driver-trainyard-<name>-<time>-<hex>.log (255 bytes
# at most), and an output folder or Serve app named by 200 characters reads no better than one of 100.
MAX_NAME = 100


class JobSpec(StrictModel):
    name: str = Field(description="Job name: letters, digits, '.', '_' and '-'.")
    data: DataSpec
    model: ModelSpec = Field(default_factory=ModelSpec)
    train: TrainSpec = Field(default_factory=TrainSpec)
    output: Optional[str] = Field(None, description="Where runs, checkpoints and the bundle go; default runs/<name>.")
    tune: Optional[TuneSpec] = Field(None, description="Present: `trainyard run` tunes instead of training once.")
    serve: ServeSpec = Field(default_factory=ServeSpec)
    monitor: MonitorSpec = Field(default_factory=MonitorSpec)
    decision: Optional[DecisionSpec] = Field(None, description="Binary classification: the cut-off on the positive "
                                             "class's probability (default: the likelier class).")

    @field_validator("name")
    @classmethod
    def _name_ok(cls, v):
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", v):
            raise ValueError(f"name {v!r} must use letters, digits, '.', '_' and '-' and start with a letter or digit")
        if len(v) > MAX_NAME:
            # It names the output folder, the Serve app and the submitted job, whose log file Ray names after it:
            # a name of 254 characters passed validate, and `submit` failed in Ray ("File name too long", a
            # traceback) leaving the job PENDING for good.
            raise ValueError(f"name {v[:20]}... has {len(v)} characters; at most {MAX_NAME}: it names the output "
                             "folder, the Ray job and the Serve app")
        return v

    @model_validator(mode="after")
    def _cnn_needs_images(self):
        if self.model.kind in ("cnn", "image") and not self.data.is_image:
            raise ValueError(f"model.kind {self.model.kind} needs image data (data.format: images or data.image); "
                             "use model.kind: mlp for tables")
        if self.model.kind == "text" and self.data.is_image:
            raise ValueError("model.kind text reads text columns, not images; use model.kind: cnn for images")
        if self.model.kind != "text" and self.data.features.text is not None:
            raise ValueError("data.features.text needs model.kind: text (an encoder reads the text); set it, or "
                             "move the columns to data.features.categorical or exclude")
        self._pretrained_defaults()
        self._backbone_takes_its_own_shape()
        if self.decision is not None and self.data.task == "regression":
            raise ValueError("decision: sets a cut-off between two classes, and data.task is regression; remove "
                             "the decision section, or set data.task: classification")
        return self

    def _pretrained_defaults(self) -> None:
        """A pretrained encoder (text, image) fine-tuned at the table model's lr of 1e-3 loses what it learned:
        unless the spec gives them, lr is 5e-5 (the encoder's), head_lr 1e-3 (the new head's) and batch_size 32
        (a transformer's batch of 128 rows is slow on CPU and large on a GPU)."""
        m, t = self.model, self.train
        if m.kind not in ("text", "image") or not m.encoder or m.encoder == "scratch":
            return
        given = t.model_fields_set
        if "lr" not in given:
            t.lr = PRETRAINED_LR
            if "head_lr" not in given:
                t.head_lr = PRETRAINED_HEAD_LR
        if "batch_size" not in given:
            t.batch_size = PRETRAINED_BATCH

    def _backbone_takes_its_own_shape(self) -> None:
        """kind image resizes to its backbone's size and channels (its preprocessor_config.json), so a size or
        channels in data.image, or a CNN's channels and pool in model, would be ignored: said instead (a
        walkthrough's data.image {size: [64, 64], channels: 1} trained at 32x32 RGB with no word)."""
        if self.model.kind != "image":
            return
        # Values other than the defaults: a resolved spec (a bundle's spec.yaml) holds the defaults and must read back.
        image, model = self.data.image, self.model
        given = [f"data.image.{k}" for k in ("size", "channels")
                 if image is not None and getattr(image, k) != type(image).model_fields[k].get_default(
                     call_default_factory=True)]
        given += [f"model.{k}" for k in ("channels", "pool")
                  if getattr(model, k) != type(model).model_fields[k].get_default(call_default_factory=True)]
        if given:
            raise ValueError(f"{', '.join(given)}: model.kind image takes the size, channels and layers of its "
                             "pretrained backbone (model.encoder's preprocessor_config.json and config.json); remove "
                             f"{'it' if len(given) == 1 else 'them'}, or use model.kind: cnn to set them yourself")

    @property
    def output_dir(self) -> str:
        return self.output or f"runs/{self.name}"


def storage_root(spec: JobSpec) -> str:
    """Where Ray Train/Tune keep runs and checkpoints: OUTPUT/ray, absolute (Ray requires it) unless a URI."""
    out = spec.output_dir
    return out.rstrip("/") + "/ray" if "://" in out else os.path.abspath(os.path.join(out, "ray"))


# train.lr, head_lr and batch_size a pretrained encoder gets unless the spec gives them (`_pretrained_defaults`).
PRETRAINED_LR, PRETRAINED_HEAD_LR, PRETRAINED_BATCH = 5e-5, 1e-3, 32

# What a user may give in place of the spec by mistake (`trainyard train rows.csv`).
DATA_SUFFIXES = (".csv", ".parquet", ".tsv", ".json", ".jsonl", ".txt")


def validate_spec(raw: Any, source: str = "<spec>", overridden: tuple[tuple[str, ...], ...] = ()) -> JobSpec:
    """Spec data (a mapping) as a JobSpec; every problem at once, each line starting with `source`, or with
    "--set" for a field `--set` gave (`overridden`: their paths)."""
    if not isinstance(raw, dict):
        if Path(source).suffix.lower() in DATA_SUFFIXES:
            raise SpecError([f"{source}: this is a data file, not a job spec; write a spec (YAML: name:, data:, "
                             f"train:) whose data.path is {source} and give that (README: Quick start)"])
        raise SpecError([f"{source}: the spec must be a YAML mapping (name:, data:, model:, train:), "
                         f"got {type(raw).__name__}"])
    try:
        spec = JobSpec.model_validate(raw)
    except ValidationError as err:
        # Every problem at once: the task checks too, where the train section and data.task are valid on their own
        # (a misspelt model.hiden hid `early_stop.metric: val_f1` on a regression until it was mended).
        lines = format_errors(err, source, JobSpec, overridden)
        try:
            data = raw.get("data") if isinstance(raw.get("data"), dict) else {}
            # data.task read as the spec reads it (`Regression` too): path and label stand in for the rest
            task = DataSpec.model_validate({"path": "x", "label": "y", "task": data.get("task")}).task
            lines += [f"{source_of(p, source, overridden)}: {p}"
                      for p in _task_problems(TrainSpec.model_validate(raw.get("train") or {}), task) if p]
        except ValidationError:
            pass
        raise SpecError(lines) from None
    problems = _task_problems(spec.train, spec.data.task)
    if any(problems):
        raise SpecError([f"{source_of(p, source, overridden)}: {p}" for p in problems if p])
    return spec


def _task_problems(train: TrainSpec, task: Optional[str]) -> list[Optional[str]]:
    """With data.task given, a metric or setting of the other task fails the run only after ingest; said now. (A
    tune section's metric is checked with the search's other checks: tuning.space.check.)"""
    es = train.early_stop
    return [task_problem(es.metric, "train.early_stop.metric", task) if es else None,
            *train_task_problems(train.loss, train.class_weight, task)]


def spec_file_hint(p: Path) -> str:
    """For a job spec given where a bundle goes (`trainyard serve specs/x.yaml`): ": x.yaml is a job spec, and its
    run's output folder is ...", naming the folder that holds the run's bundle; "" for any other path."""
    if p.suffix.lower() not in (".yaml", ".yml") or not p.is_file():
        return ""
    try:
        doc = read_yaml_file(p)
    except SpecError:
        return ""
    if not isinstance(doc, dict):
        return ""
    output = doc.get("output") or (f"runs/{doc['name']}" if isinstance(doc.get("name"), str) else None)
    return (f": {p.name} is a job spec, and its run's output folder is {output} (e.g. trainyard serve {output})"
            if isinstance(output, str) else f": {p.name} is a job spec, not a bundle")


def run_folder_hint(p: Path) -> str:
    """For a run's output folder that holds no bundle (`trainyard serve runs/x` after a training run that failed
    or was stopped), or a folder of bundles (OUTPUT/bundles): what it is and what to do; "" for any other path."""
    pointer = p / "bundle"
    if pointer.is_symlink() and not pointer.exists():
        # The README's `rm -r runs/<name>/bundles/<version>` of the latest version: "no training run has finished"
        # was said of a folder holding 16 versions.
        left = sorted((v.name for v in (p / "bundles").iterdir() if (v / "manifest.json").is_file()), reverse=True) \
            if (p / "bundles").is_dir() else []
        if not left:
            return f"{pointer} points to {os.readlink(pointer)}, which is gone, and {p} holds no other version"
        return (f"{pointer} points to {os.readlink(pointer)}, which is gone (deleted?); {len(left)} other version(s) "
                f"are in {p / 'bundles'}, the newest {left[0]}: give its folder ({p / 'bundles' / left[0]}), or point "
                f"the link at it: ln -sfn bundles/{left[0]} {pointer}")
    versions = sorted((v.name for v in p.iterdir() if (v / "manifest.json").is_file()), reverse=True) \
        if p.is_dir() else []
    if versions:        # OUTPUT/bundles itself: "missing model.safetensors, ..." of the folder of the versions
        run = p.name == "bundles" and (p.parent / "bundle").exists()
        return (f"{p} holds bundles, not one bundle: give one of its {len(versions)} folder(s) (the last by name: "
                f"{p / versions[0]})" + (f", or the run's output folder ({p.parent}) for the one it points to"
                                         if run else ""))
    if not ((p / "summary.json").is_file() or (p / "ray").is_dir()) or pointer.exists():
        return ""
    return (f"{p} is a run's output folder that holds no bundle yet: no training run of it has finished (a run "
            "that failed or was stopped leaves its summary.json and its checkpoints in ray/). Train it to the end "
            "with trainyard train (or tune) SPEC, or give the folder of a run that finished")


def load_raw(path: str | Path) -> dict:
    """A spec file as YAML data, not yet validated ({} when empty)."""
    path = Path(path)
    if not path.is_file():
        what = "a folder, not a spec file" if path.is_dir() else "no such spec file"
        raise SpecError([f"{path}: {what} (give the path of a YAML job spec)"])
    raw = read_yaml_file(path)
    return raw if raw is not None else {}


def load_spec(path: str | Path, overrides: Optional[list[str]] = None) -> JobSpec:
    """Read, override and validate a spec file; every problem is reported at once."""
    raw = load_raw(path)
    if isinstance(raw, dict):
        raw = apply_overrides(raw, overrides or [])
    return validate_spec(raw, str(path), overridden_paths(overrides or []))


class ServeOnly(StrictModel):
    """A file of serve settings alone (`trainyard serve --spec`): a `serve:` section and nothing else."""
    serve: ServeSpec = Field(default_factory=ServeSpec)


def load_serve_settings(path: str | Path) -> dict:
    """The serve settings a file sets (not its defaults): a job spec's serve section, or those of a file whose only
    section is `serve:` (an on-call engineer holds those, not the training spec: "data: required but missing")."""
    raw = load_raw(path)
    if isinstance(raw, dict) and set(raw) == {"serve"}:
        try:
            return ServeOnly.model_validate(raw).serve.model_dump(mode="json", exclude_unset=True)
        except ValidationError as err:
            raise SpecError(format_errors(err, str(path), ServeOnly)) from None
    return load_spec(path).serve.model_dump(mode="json", exclude_unset=True)


def dump_spec(spec: JobSpec) -> str:
    """The resolved spec (defaults filled in) as YAML, for the bundle and the run directory."""
    return write_yaml(spec.model_dump(mode="json"))
