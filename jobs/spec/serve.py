"""The `serve` section: the Ray Serve deployment of the bundle."""
from __future__ import annotations

import os
from typing import Any, ClassVar, Literal, Optional, Union

from pydantic import Field, PrivateAttr, field_validator, model_validator

from jobs.spec.base import StrictModel


class AutoscalingSpec(StrictModel):
    """Ray Serve's request-based autoscaler: replicas follow the number of requests in flight."""

    min_replicas: int = Field(1, ge=0, description="Replicas kept running with no traffic (0 allows scale to zero).")
    max_replicas: int = Field(4, ge=1, description="Most replicas; each holds ray_actor_options' CPUs.")
    target_ongoing_requests: float = Field(
        4, gt=0, description="Requests in flight per replica the autoscaler aims for; more per replica "
                             "scales up, fewer scales down.")
    upscale_delay_s: float = Field(30.0, ge=0, description="Load must stay above target this long before adding "
                                                           "replicas.")
    downscale_delay_s: float = Field(600.0, ge=0, description="Load must stay below target this long before "
                                                              "removing replicas.")
    look_back_period_s: float = Field(30.0, gt=0, description="Window the request counts are averaged over.")
    metrics_interval_s: float = Field(
        10.0, gt=0, description="How often each replica reports its request count to the autoscaler; keep it "
                                "below look_back_period_s.")

    @model_validator(mode="after")
    def _bounds(self):
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas ({self.min_replicas}) is above max_replicas ({self.max_replicas})")
        if self.metrics_interval_s >= self.look_back_period_s:
            raise ValueError(f"metrics_interval_s ({self.metrics_interval_s:g}) must be below look_back_period_s "
                             f"({self.look_back_period_s:g}), or the window averages a single report")
        return self


class BatchSpec(StrictModel):
    max_size: int = Field(64, ge=1, description="Most records batched into one model call, across concurrent "
                                                "requests; a request with more records runs as its own batch.")
    wait_ms: float = Field(5.0, ge=0, description="How long a batch waits to fill.")


class LogSpec(StrictModel):
    """Prediction logging: each replica appends every sampled request's id, time, features and predictions to
    Parquet files under `path`/<app name>/ (what `trainyard monitor --logs` reads). Never slows a request: records
    that find the in-memory buffer full are dropped and counted (GET /readyz, `logging`)."""

    path: str = Field(description="Folder the logs go to: a local path (made absolute where the spec is read; on "
                                  "several nodes, one every node mounts) or a pyarrow URI (s3://bucket/prefix).")
    sample: float = Field(1.0, gt=0, le=1, description="Share of requests logged (each request whole, or not at "
                                                       "all); 1 logs every request.")
    exclude: list[str] = Field(
        default_factory=list, description="Input features never written to the logs (personal data): no column, "
                                          "no value; they must be features of the bundle.")
    keep: list[str] = Field(
        default_factory=list, description="Request fields that are not features, written to the logs as text "
                                          "(`keep.<name>`: a machine's, a site's, a customer's id), so that "
                                          "`trainyard monitor --by <name>` can judge each one's traffic apart. "
                                          "Accepted in requests whatever unknown_fields says; never read by the "
                                          "model.")
    rotate_mb: float = Field(64.0, gt=0, description="A replica starts a new file once its open file's journal "
                                                     "reaches this size (its Parquet file can be smaller or larger).")
    rotate_s: float = Field(300.0, gt=0, description="... or once its open file is this old: a file becomes "
                                                     "visible only when complete. A replica that dies abruptly "
                                                     "loses about its last second of logs: the next replica to "
                                                     "start publishes the rest.")
    buffer_records: int = Field(20000, ge=1, description="Most records a replica holds waiting to be written; "
                                                         "beyond it records are dropped (and counted).")

    @field_validator("path")
    @classmethod
    def _path_ok(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("path is empty: give a folder (logs/predictions) or a URI (s3://bucket/prefix)")
        if v.startswith("file://"):
            v = v[len("file://"):]
        # Replicas run in other working directories: a relative path means the one where the spec was read.
        return v if "://" in v else os.path.abspath(os.path.expanduser(v))

    @field_validator("keep")
    @classmethod
    def _keep_ok(cls, v: list[str]) -> list[str]:
        blank = [name for name in v if not name.strip()]
        twice = sorted({name for name in v if v.count(name) > 1})
        if blank or twice:
            raise ValueError(f"keep names {'an empty field' if blank else f'{twice} more than once'}; list each "
                             "request field to log once")
        return v


class LiveMonitorSpec(StrictModel):
    """Live drift monitoring in each replica (serving/monitor.py): its recent inputs and predictions counted
    against the bundle's profile.json, judged by the bundle's `monitor:` thresholds; GET /monitor and the
    Prometheus gauges trainyard_* (README, Monitoring)."""

    enabled: bool = Field(True, description="Count and judge the traffic (a bundle without profile.json is never "
                                            "monitored; GET /monitor says why).")
    window_s: float = Field(900.0, gt=0, description="Seconds of traffic a replica's window holds (it moves in "
                                                     "tenths of this).")


class ServeSpec(StrictModel):
    """Ray Serve deployment of the bundle (`trainyard serve`, and `trainyard run` after training)."""

    # A bundle is data, not code: the only settings `trainyard serve` takes from a bundle's own spec.yaml are
    # the model's request contract and its limits. What runs (ray_actor_options.runtime_env, ingress), where it
    # listens (host, port, route_prefix), how much of the cluster it takes (resources, autoscaling) and what it
    # logs come from the operator. A field added later stays the operator's until it is listed here.
    FROM_BUNDLE: ClassVar[frozenset[str]] = frozenset({
        "batch", "max_records", "max_body_mb", "max_ongoing_requests", "required_features", "unknown_fields"})

    # A section an update's --set gave in part (`--set log.keep=[site]` without log.path), to be completed from
    # the running app's (`serving.settings.keep_running`): {section: (what --set gave, the problems alone)}.
    _given_in_part: dict = PrivateAttr(default_factory=dict)

    autoscaling: AutoscalingSpec = Field(default_factory=AutoscalingSpec)
    batch: BatchSpec = Field(default_factory=BatchSpec)
    max_records: int = Field(1000, ge=1, description="Most records in one request; more get 413.")
    max_body_mb: float = Field(8.0, gt=0, description="Larger request bodies get 413.")
    body_timeout_s: float = Field(
        30.0, gt=0, le=3600, description="Seconds a request's body may take to arrive after its headers; a slower "
                                         "one gets 408 (a client that stalls mid-body held a replica's request slot "
                                         "for up to an hour, and a few hundred of them froze the app).")
    ray_actor_options: dict[str, Any] = Field(default_factory=lambda: {"num_cpus": 0.5},
                                              description="Resources of each replica (num_cpus, num_gpus, ...).")
    host: str = Field("127.0.0.1", description="Interface Serve listens on; 0.0.0.0 exposes it to the network.")
    port: int = Field(8000, ge=0, le=65535, description="HTTP port; 0 picks a free one.")
    route_prefix: str = Field("/", description="URL prefix of the app: /predict lives at <route_prefix>/predict.")
    max_ongoing_requests: int = Field(
        128, ge=1, description="Requests one replica holds at once. Batching can only merge requests that are "
                               "in the replica together, so keep it well above batch.max_size / records per "
                               "request.")
    required_features: Union[Literal["all"], list[str]] = Field(
        default_factory=list, description="Features a record must carry (422 otherwise). Default none: a "
                                          "missing value is imputed exactly as in training.")
    unknown_fields: Literal["reject", "ignore"] = Field(
        "reject", description="A record field that is not a feature: reject it (422, catches typos) or ignore it.")
    ingress: Literal["auto", "haproxy", "proxy"] = Field(
        "auto", description="HTTP ingress: haproxy (Ray 2.60's HAProxy in front of the replicas), proxy (Serve's "
                            "Python proxy), auto (see the serving section of the README).")
    access_log: bool = Field(False, description="Log every request in the replica logs (costs throughput).")
    health_check_period_s: float = Field(10.0, gt=0, description="How often each replica runs a canary "
                                                                 "prediction; a failure restarts the replica.")
    health_check_timeout_s: float = Field(30.0, gt=0, description="A health check slower than this fails.")
    max_surge_percent: int = Field(
        100, ge=0, le=100, description="Updates start this many extra replicas (percent of the count) and stop "
                                       "old ones only once the new ones serve; 0 stops old replicas first.")
    log: Optional[LogSpec] = Field(
        None, description="Prediction logging (path, sample, exclude, rotate_mb, rotate_s); off when not set.")
    monitor: LiveMonitorSpec = Field(default_factory=LiveMonitorSpec,
                                     description="Live drift monitoring (enabled, window_s).")
    quantize: Optional[Literal["int8"]] = Field(
        None, description="Compress the model when a replica loads it: int8 quantizes its linear layers "
                          "dynamically (PyTorch's quantize_dynamic; CPU serving, for any bundle; the bundle on "
                          "disk is unchanged). Faster on CPU for transformer encoders; measure the accuracy "
                          "change on your test split (benchmarks/text_serving.py). Off when not set.")
    drain_period_s: float = Field(
        5.0, ge=0, description="HAProxy ingress: how long a stopping replica (update, scale-down, Ctrl-C) stays "
                               "reachable while HAProxy reloads without it. Ray's default, 30, suits cloud load "
                               "balancers in front of many nodes.")

    @field_validator("route_prefix")
    @classmethod
    def _prefix_ok(cls, v):
        if not v.startswith("/") or (len(v) > 1 and v.endswith("/")):
            raise ValueError(f"route_prefix must start with '/' and not end with one (e.g. / or /models/a), got {v!r}")
        return v

    @field_validator("ray_actor_options")
    @classmethod
    def _actor_options_ok(cls, v):
        allowed = {"num_cpus", "num_gpus", "memory", "resources", "accelerator_type", "runtime_env",
                   "label_selector"}
        unknown = sorted(set(v) - allowed)
        if unknown:
            raise ValueError(f"unknown ray_actor_options {unknown}; allowed: {sorted(allowed)}")
        return v
