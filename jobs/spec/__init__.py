"""The job spec: one YAML file describes a job. Pydantic v2 models, unknown keys are errors.

`load_spec(path, overrides)` reads, applies `--set a.b=value` overrides and validates, collecting every
problem before raising one `SpecError` whose lines each name the file, the field, the value and the fix.

A leaf package: it imports nothing of trainyard's but the error root (`cluster.errors`), so every layer can
read specs. Modules: `yamlio` (YAML reading/writing, `--set`), `errors` (SpecError, pydantic's errors as
lines), `metric_registry` (the metrics a spec can name), one module per section (`data`, `train` for
model + train, `tune`, `serve`, `monitor`) and `job` (the whole spec: load, validate, dump).
"""
from jobs.spec.base import StrictModel
from jobs.spec.data import AugmentSpec, DataSpec, FeatureSpec, ImageSpec, PreprocessSpec, SplitSpec
from jobs.spec.decision import DecisionSpec
from jobs.spec.errors import SpecError, unknown_key_hint
from jobs.spec.job import (JobSpec, dump_spec, load_raw, load_serve_settings, load_spec, run_folder_hint,
                           spec_file_hint, storage_root, validate_spec)
from jobs.spec.metric_registry import (CLASSIFICATION, CLASSIFICATION_METRICS, MAXIMISED_METRICS, METRICS,
                                       REGRESSION, REGRESSION_METRICS, VAL_PREFIX, Metric, best_key, metric_mode,
                                       metrics_for, mode_problem, shown_values, task_problem,
                                       train_task_problems, unknown_metric_problem)
from jobs.spec.monitor import MonitorSpec, window_seconds
from jobs.spec.serve import AutoscalingSpec, BatchSpec, ServeSpec
from jobs.spec.train import EarlyStopSpec, ModelSpec, TrainSpec
from jobs.spec.tune import SEARCH_AXES, AshaSpec, Distribution, SchedulerSpec, TuneSpec
from jobs.spec.yamlio import apply_overrides, read_yaml, read_yaml_file, write_yaml

__all__ = [
    "AshaSpec", "AugmentSpec", "AutoscalingSpec", "BatchSpec", "CLASSIFICATION", "CLASSIFICATION_METRICS", "DataSpec",
    "DecisionSpec",
    "Distribution", "EarlyStopSpec", "FeatureSpec", "ImageSpec", "JobSpec", "MAXIMISED_METRICS", "METRICS", "Metric",
    "ModelSpec", "MonitorSpec", "PreprocessSpec", "REGRESSION", "REGRESSION_METRICS", "SEARCH_AXES", "SchedulerSpec",
    "ServeSpec",
    "SpecError", "SplitSpec", "StrictModel", "TrainSpec", "TuneSpec", "VAL_PREFIX", "apply_overrides", "best_key",
    "dump_spec", "load_raw", "load_serve_settings", "load_spec", "metric_mode", "metrics_for", "mode_problem", "read_yaml",
    "read_yaml_file", "run_folder_hint", "shown_values", "spec_file_hint", "storage_root", "task_problem",
    "train_task_problems",
    "unknown_key_hint",
    "unknown_metric_problem", "validate_spec",
    "window_seconds", "write_yaml",
]
