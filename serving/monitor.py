"""Live drift monitoring in a serving replica: the inputs and predictions of the last `serve.monitor.window_s`
seconds, counted against the bundle's reference profile (profile.json), judged by `jobs.drift`, the statistics
and flags `trainyard monitor` computes over the prediction logs.

Per replica, counters over a sliding window (kept in 10 steps, so the window spans between 9/10 and all of
window_s): each numeric feature's values per reference bin and missing, each categorical feature's values per
known category, unknown and missing, and the predictions per class (or regression bin). From them, per feature
PSI, chi-squared p-value, missing and unknown rates and the flags (`jobs.drift.flagged`, thresholds from the
bundle's `monitor:` section), answered by `GET /monitor` and exported as Prometheus gauges through Ray's
metrics system (`ray.util.metrics`): each node's Ray metrics agent serves them, prefixed `ray_`, at
http://<node>:<MetricsExportPort>/metrics (`ray.nodes()`), about every 10 s (Ray's metrics_report_interval_ms):

    trainyard_feature_drift{app, version, replica, feature, stat}    stat: psi, p
    trainyard_feature_missing_rate{app, version, replica, feature}
    trainyard_unknown_category_rate{app, version, replica, feature}  categorical features
    trainyard_feature_flagged{app, version, replica, feature}        1 when jobs.drift.flagged gives a reason
    trainyard_prediction_drift{app, version, replica, stat}          stat: psi, p, flagged
    trainyard_monitor_window_records{app, version, replica}          the rows in the window

Cheap by construction: a request only copies its records' watched fields (`jobs.watched`: the features, a text's
own value, an image's size as sent) and its predictions into tuples of plain values and appends them to a queue
(~0.9 us for a 1-record request of 8 features; queueing references cost 1.2 us). Tuples, not the request's own
dicts and lists: those, held until the next fold, survive into the garbage collector's oldest generation and
set off full collections of the replica's heap (150-210 ms pauses, measured for the same pattern in the
prediction logger). A thread of the replica folds what arrived into the counters every second (numpy: one pass
per quantity over everything at once, one bincount for all counters; ~2 us a record of 8 features), and every
10 s, as often as Ray exports, recomputes the statistics (~2 ms for 8 features, most of it scipy's chisquare)
and sets the gauges. Past MAX_PENDING_RECORDS waiting (the thread starved), requests are not counted rather than
held (`skipped` in /monitor). Each replica counts its own traffic: /monitor answers for the replica that takes the
request; Prometheus has every replica's series (sum or compare them there).
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from jobs.drift import (Thresholds, bin_index, bundle_monitor_settings, categorical_drift, flagged, json_safe,
                        median_side, numeric_drift_from_counts, prediction_drift, score_flags)
from jobs.fitted import canonical
from jobs.watched import RowCopier, columns, of_profile

STEPS = 10                      # the window moves in steps of window_s / STEPS
FOLD_S = 1.0                    # how often arrived requests are folded into the counters
STATS_S = 10.0                  # how often the statistics and gauges are recomputed: as often as Ray exports
MAX_PENDING_RECORDS = 100_000   # records waiting to be folded in, beyond which requests go uncounted
logger = logging.getLogger("ray.serve")
NO_PROFILE = ("this bundle has no profile.json (it was exported before trainyard wrote one), so there is no "
              "reference to compare the traffic with: retrain it to monitor drift")


class _Layout:
    """Where each counter lives in one flat vector: per numeric quantity its reference bins + missing, per
    categorical quantity its known categories + unknown + missing, then the prediction's classes (+ one slot for
    a label outside them) or regression bins (+ missing). The quantities are the profile's (`jobs.watched`)."""

    def __init__(self, profile: dict, ranges: Optional[dict[str, tuple[float, float]]] = None):
        offset = 0
        self.watched = of_profile(profile)
        self.numeric: list[tuple[str, np.ndarray, int]] = []
        # Past these a number is outside its training range (`jobs.tabular.range_bounds`), counted in one more
        # slot after its missing one: a unit changed at one source (the batch monitor's `outside_rate` too).
        self.ranges = dict(ranges or {})
        for name, ref in profile.get("numeric", {}).items():
            edges = np.asarray(ref["edges"], dtype=np.float64)
            self.numeric.append((name, edges, offset))
            offset += len(edges) + 3
        self.categorical: list[tuple[str, dict[str, int], int]] = []
        for name, ref in profile.get("categorical", {}).items():
            lookup = {c: i for i, c in enumerate(ref["shares"])}
            self.categorical.append((name, lookup, offset))
            offset += len(lookup) + 2
        pred = profile["prediction"]
        self.prediction_offset = offset
        if pred["task"] == "classification":
            self.classes: Optional[dict[str, int]] = {canonical(c): i for i, c in enumerate(pred["classes"])}
            self.prediction_edges = None
            offset += len(self.classes) + 1
        else:
            self.classes = None
            self.prediction_edges = np.asarray(pred["edges"], dtype=np.float64)
            offset += len(self.prediction_edges) + 2
        # A binary model's probability of its profiled class (profile "score", as `trainyard monitor` judges it):
        # its bins on the validation split's edges, after the prediction's slots.
        score = pred.get("score") if pred["task"] == "classification" and len(pred.get("classes") or []) == 2 else None
        self.score_index = int(score.get("index", 1)) if score else None
        self.score_edges = np.asarray(score["edges"], dtype=np.float64) if score else None
        self.score_offset = offset
        offset += len(self.score_edges) + 1 if score else 0
        self.size = offset

    def count(self, rows: list[tuple], predictions: list, scores: Sequence[float] = ()) -> np.ndarray:
        """The counters of these rows (`RowCopier` over the watched fields) and their predictions, as one vector
        of `size`."""
        values = columns(self.watched, rows)
        slots = []
        for (name, edges, offset), column in zip(self.numeric, values):
            # Checked records hold numbers or None here; float64 turns None into NaN.
            x = np.array(column, dtype=np.float64)
            b = bin_index(x, edges)
            b[np.isnan(x)] = len(edges) + 1
            slots.append(b + offset)
            if name in self.ranges:
                low, high = self.ranges[name]
                outside = np.count_nonzero((x < low) | (x > high))        # NaN is neither
                slots.append(np.full(outside, offset + len(edges) + 2, dtype=np.int64))
        for (name, lookup, offset), column in zip(self.categorical, values[len(self.numeric):]):
            unknown, missing = len(lookup), len(lookup) + 1
            # A string is its own canonical form; other JSON scalars (3, 3.0, true) go through canonical().
            codes = [lookup.get(v, unknown) if type(v) is str else missing if v is None
                     else lookup.get(canonical(v), unknown) for v in column]
            slots.append(np.asarray(codes, dtype=np.int64) + offset)
        if self.classes is not None:
            other = len(self.classes)
            slots.append(np.asarray([self.classes.get(canonical(p), other) for p in predictions], dtype=np.int64)
                         + self.prediction_offset)
        else:
            y = np.asarray(predictions, dtype=np.float64)
            b = bin_index(y, self.prediction_edges)
            b[~np.isfinite(y)] = len(self.prediction_edges) + 1
            slots.append(b + self.prediction_offset)
        if self.score_edges is not None and len(scores):
            # As the logs hold them (float32) and the profile was made of them: a shared value may be an edge.
            p = np.asarray(scores, dtype=np.float32).astype(np.float64)
            slots.append(bin_index(p if self.score_index == 1 else 1.0 - p, self.score_edges) + self.score_offset)
        return np.bincount(np.concatenate(slots), minlength=self.size)


class _Window:
    """Counters of the last STEPS steps of `step_s` seconds: a ring of rows, a row cleared when its step
    comes round again."""

    def __init__(self, size: int, window_s: float):
        self.step_s = window_s / STEPS
        self.counts = np.zeros((STEPS, size), dtype=np.int64)
        self.rows = np.zeros(STEPS, dtype=np.int64)
        self.step = np.full(STEPS, -1, dtype=np.int64)       # the step each row holds

    def add(self, t: float, counts: np.ndarray, rows: int) -> None:
        step = int(t // self.step_s)
        i = step % STEPS
        if self.step[i] != step:
            if self.step[i] > step:      # older than the window (the clock went back): nowhere to put it
                return
            self.counts[i] = 0
            self.rows[i] = 0
            self.step[i] = step
        self.counts[i] += counts
        self.rows[i] += rows

    def total(self, now: float) -> tuple[np.ndarray, int, float]:
        """(counters, rows, start time) of the window ending now."""
        current = int(now // self.step_s)
        live = (self.step > current - STEPS) & (self.step >= 0)
        start = (self.step[live].min() if live.any() else current) * self.step_s
        return self.counts[live].sum(axis=0), int(self.rows[live].sum()), float(start)


class LiveMonitor:
    """One replica's monitoring. `observe(records, predictions)` on the request path; `snapshot()` for
    GET /monitor. Off (observe does nothing, snapshot says why) when `reason_off` is given."""

    def __init__(self, profile: Optional[dict], *, app: str, version: str, replica: str, window_s: float,
                 thresholds: Thresholds = Thresholds(), reason_off: Optional[str] = None, export: bool = True,
                 note: Optional[str] = None, ranges: Optional[dict[str, tuple[float, float]]] = None):
        self.app, self.version, self.replica = app, version, replica
        self.window_s = window_s
        self.thresholds = thresholds
        self.note = note
        self.reason_off = reason_off or (None if profile is not None else NO_PROFILE)
        self.enabled = self.reason_off is None
        self.skipped = 0
        self.busy_s = 0.0           # thread time spent counting and judging: what monitoring costs the replica
        # Requests waiting to be counted, as (time, rows, predictions, scores) of plain values. deque.append and popleft
        # are atomic, so the request path takes no lock; `_queued` is written by the request path only and
        # `_folded` by the folding side only.
        self._pending: deque[tuple[float, tuple, tuple]] = deque()
        self._queued = self._folded = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        if not self.enabled:
            return
        self.profile = profile
        self.layout = _Layout(profile, ranges)
        self._copy = RowCopier([w.field for w in self.layout.watched])
        self.window = _Window(self.layout.size, window_s)
        self.started = time.time()
        self.n_features = max(len(self.layout.numeric) + len(self.layout.categorical), 1)
        self.gauges = _Gauges(app, version, replica) if export else None
        self._thread = threading.Thread(target=self._run, name="trainyard-monitor", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------------------------------ request path
    def observe(self, records: list[dict], predictions: list, probabilities: Optional[list] = None) -> None:
        """Count one answered request: its records (as checked) and their predictions. Copies the watched
        values (see the module docstring: never the request's own objects); the counting happens on the
        monitor's thread."""
        if not self.enabled:
            return
        if self._queued - self._folded + len(records) > MAX_PENDING_RECORDS:
            self.skipped += len(records)
            return
        # Of a binary model, the probability of its second class per record (floats: untracked by the GC).
        second = (tuple(p[1] for p in probabilities) if probabilities is not None and self.layout.score_edges is not None
                  else ())
        self._pending.append((time.time(), self._copy(records), tuple(predictions), second))
        self._queued += len(records)

    # ------------------------------------------------------------------------------------------ thread
    def _run(self) -> None:
        last_stats = 0.0
        while not self._stop.wait(FOLD_S):
            try:
                t0 = time.thread_time()
                self._fold()
                if time.monotonic() - last_stats >= STATS_S:
                    last_stats = time.monotonic()
                    self.stats(export=True)
                self.busy_s += time.thread_time() - t0
            except Exception as exc:  # noqa: BLE001 - monitoring must never take the replica down
                self._stopped(exc)
                return

    def _stopped(self, exc: Exception) -> None:
        """Monitoring failed: say so in the replica's log and in /monitor, and blank the gauges, which would
        otherwise go on exporting the last window's values as if it were current."""
        logger.exception(f"live monitoring of {self.app} (version {self.version}) stopped; the app goes on "
                         "serving, unmonitored: GET /monitor says why")
        self.note = f"monitoring stopped: {type(exc).__name__}: {exc}"
        self.enabled = False
        self._pending.clear()
        if self.gauges is not None:
            self.gauges.blank()

    def _fold(self) -> None:
        with self._lock:
            by_step: dict[int, tuple[float, list, list, list]] = {}
            while self._pending:
                t, rows, predictions, scores = self._pending.popleft()
                self._folded += len(rows)
                step = int(t // self.window.step_s)
                group = by_step.setdefault(step, (t, [], [], []))
                group[1].extend(rows)
                group[2].extend(predictions)
                group[3].extend(scores)
            for t, rows, predictions, scores in by_step.values():
                self.window.add(t, self.layout.count(rows, predictions, scores), len(rows))

    def close(self) -> None:
        self._stop.set()

    # ------------------------------------------------------------------------------------------ statistics
    def stats(self, export: bool = False) -> dict:
        """The current window's statistics and flags; `export` also sets the Prometheus gauges."""
        with self._lock:
            counts, rows, start = self.window.total(time.time())
        start = max(start, self.started)
        features: dict[str, dict] = {}
        sides: dict[str, Optional[str]] = {}      # which way each number went, for its psi flag
        for name, edges, offset in self.layout.numeric:
            bins = counts[offset:offset + len(edges) + 1]
            missing = int(counts[offset + len(edges) + 1])
            stats = numeric_drift_from_counts(self.profile["numeric"][name], bins, missing, rows)
            if name in self.layout.ranges:
                outside, present = int(counts[offset + len(edges) + 2]), int(bins.sum())
                stats.update(outside=outside, outside_rate=outside / present if present else None)
            features[name] = {"kind": "numeric", **stats}
            sides[name] = median_side(self.profile["numeric"][name], bins)
        for name, lookup, offset in self.layout.categorical:
            known = {c: int(counts[offset + i]) for c, i in lookup.items()}
            unknown, missing = int(counts[offset + len(lookup)]), int(counts[offset + len(lookup) + 1])
            stats = categorical_drift(self.profile["categorical"][name], known, unknown, missing)
            features[name] = {"kind": "categorical", **stats, "counts": known, "unknown": unknown}
        for name, stats in features.items():
            ref = self.profile["numeric"].get(name) or self.profile["categorical"][name]
            stats["flags"] = [f"{f}; {sides[name]}" if f.startswith("psi ") and sides.get(name) else f
                              for f in flagged(ref, stats, self.thresholds, self.n_features)]
        prediction = self._prediction_stats(counts)
        out = {"n": rows, "judged": rows >= self.thresholds.min_rows, "features": features,
               "prediction": prediction, "flagged": sorted(n for n, s in features.items() if s["flags"]),
               "window": {"seconds": self.window_s, "start": _iso(start), "end": _iso(time.time())}}
        if export and self.gauges is not None:
            self.gauges.set(out)
        return out

    def _prediction_stats(self, counts: np.ndarray) -> dict:
        ref = self.profile["prediction"]
        o = self.layout.prediction_offset
        if self.layout.classes is not None:
            per_class = {c: int(counts[o + i]) for c, i in self.layout.classes.items()}
            stats = prediction_drift(ref, per_class)
        else:
            bins = counts[o:o + len(self.layout.prediction_edges) + 1]
            per_class = {str(i): int(c) for i, c in enumerate(bins)}
            stats = prediction_drift(ref, dict(enumerate(bins.tolist())))
        stats["counts"] = per_class
        stats["flags"] = flagged(ref, stats, self.thresholds, 1)
        if self.layout.score_edges is not None:
            o, edges = self.layout.score_offset, self.layout.score_edges
            bins = counts[o:o + len(edges) + 1]
            score = numeric_drift_from_counts(ref["score"], bins, 0, int(bins.sum()))
            score["flags"] = flagged(ref["score"], score, self.thresholds, 1)
            stats["score"] = score
            stats["flags"] += score_flags(ref, score)
        return stats

    def snapshot(self) -> dict:
        """GET /monitor: the current window (what arrived until now included), or why monitoring is off."""
        head = {"model": {"name": self.app, "version": self.version}, "replica": self.replica,
                "enabled": self.enabled}
        if self.note:
            head["note"] = self.note
        if not self.enabled:
            return {**head, "reason": self.reason_off or self.note}
        self._fold()
        body = self.stats()
        thresholds = {k: getattr(self.thresholds, k) for k in ("psi", "p_value", "missing_rate", "unknown_rate",
                                                                 "min_rows")}
        cost = {"cpu_s": round(self.busy_s, 3),
                "us_per_record": round(1e6 * self.busy_s / self._folded, 2) if self._folded else None}
        return json_safe({**head, **body, "skipped": self.skipped, "cost": cost, "thresholds": thresholds})


class _Gauges:
    """The Prometheus gauges of one replica (ray.util.metrics; Ray's agent adds the `ray_` prefix)."""

    def __init__(self, app: str, version: str, replica: str):
        from ray.util.metrics import Gauge

        keys = ("app", "version", "replica")
        self.drift = Gauge("trainyard_feature_drift", "Drift of a feature in the replica's window against the "
                           "bundle's profile: stat psi (population stability index) or p (chi-squared p-value)",
                           tag_keys=keys + ("feature", "stat"))
        self.missing = Gauge("trainyard_feature_missing_rate", "Share of the window's records missing the feature",
                             tag_keys=keys + ("feature",))
        self.unknown = Gauge("trainyard_unknown_category_rate", "Share of the window's values of a categorical "
                             "feature that training never saw", tag_keys=keys + ("feature",))
        self.outside = Gauge("trainyard_outside_range_rate", "Share of the window's values of a numeric feature past "
                             "its training range (as /predict's out_of_range)", tag_keys=keys + ("feature",))
        self.flagged = Gauge("trainyard_feature_flagged", "1 when the feature drifted beyond the bundle's monitor "
                             "thresholds (GET /monitor says why), else 0", tag_keys=keys + ("feature",))
        self.prediction = Gauge("trainyard_prediction_drift", "Drift of the predictions against the validation "
                                "split's: stat psi, p or flagged (1/0)", tag_keys=keys + ("stat",))
        self.records = Gauge("trainyard_monitor_window_records", "Records in the replica's monitoring window",
                             tag_keys=keys)
        tags = {"app": app, "version": version, "replica": replica}
        for g in (self.drift, self.missing, self.unknown, self.outside, self.flagged, self.prediction, self.records):
            g.set_default_tags(tags)
        # Every series set so far: (gauge name, tags) → (gauge, the value last set).
        self.series: dict[tuple[str, tuple], tuple[Any, float]] = {}

    def _set(self, gauge, value: float, tags: Optional[dict] = None) -> None:
        gauge.set(value, tags=tags)
        self.series[(gauge.info["name"], tuple(sorted((tags or {}).items())))] = (gauge, value)

    def set(self, out: dict) -> None:
        self._set(self.records, out["n"])
        for name, s in out["features"].items():
            self._set(self.drift, _number(s["psi"]), {"feature": name, "stat": "psi"})
            self._set(self.drift, _number(s["chi2_p"]), {"feature": name, "stat": "p"})
            self._set(self.missing, _number(s["missing_rate"]), {"feature": name})
            if s["kind"] == "categorical":
                self._set(self.unknown, _number(s["unknown_rate"]), {"feature": name})
            if "outside_rate" in s:
                self._set(self.outside, _number(s["outside_rate"]), {"feature": name})
            self._set(self.flagged, 1 if s["flags"] else 0, {"feature": name})
        p = out["prediction"]
        self._set(self.prediction, _number(p["psi"]), {"stat": "psi"})
        self._set(self.prediction, _number(p["p"]), {"stat": "p"})
        self._set(self.prediction, 1 if p["flags"] else 0, {"stat": "flagged"})

    def blank(self) -> None:
        """Every series set so far to NaN (no value): what a stopped monitor exports."""
        for (name, tags), (gauge, _) in self.series.items():
            self._set(gauge, float("nan"), dict(tags) or None)


def for_replica(bundle, settings: dict, payload: dict, replica: str) -> LiveMonitor:
    """The monitor of a replica serving `bundle` under `settings` (serving.app.replica_settings); thresholds
    from the bundle's own spec.yaml (`monitor:`), read from the payload it was loaded from."""
    from jobs.spec.serve import LiveMonitorSpec

    # Settings made before serve.monitor existed have none (a rollback redeploys the running version's own
    # replica arguments): the defaults then.
    spec = LiveMonitorSpec.model_validate(settings["serve"].get("monitor") or {})
    common = dict(app=settings["name"], version=bundle.version, replica=replica, window_s=spec.window_s)
    if not spec.enabled:
        return LiveMonitor(None, reason_off="monitoring is off for this app (serve.monitor.enabled: false)",
                           **common)
    from jobs.tabular import range_bounds, training_ranges

    thresholds, note = bundle_thresholds(payload)
    ranges = {name: range_bounds(lo, hi) for name, lo, hi in training_ranges(getattr(bundle, "preprocessor", None))}
    return LiveMonitor(bundle.profile, thresholds=thresholds, note=note, ranges=ranges, **common)


def bundle_thresholds(payload: dict) -> tuple[Thresholds, Optional[str]]:
    """The `monitor:` thresholds of the bundle's spec.yaml (`jobs.drift.bundle_monitor_settings`), or the
    defaults and why when it does not read: a damaged section must not stop the replica serving."""
    try:
        raw = payload["files"].get("spec.yaml") if "files" in payload else \
            (Path(payload["path"]) / "spec.yaml").read_bytes()
        return bundle_monitor_settings(raw.decode() if raw else None)[0], None
    except (OSError, ValueError) as exc:
        return Thresholds(), f"the bundle's spec.yaml does not read ({exc}); default thresholds"


def _number(v: Any) -> float:
    return float("nan") if v is None else float(v)


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
