"""What a person reads after a search: a table of the top trials, tune/results.csv (every trial) and
tune/report.png (the metric against the learning rate, and every trial's learning curve with where it stopped).
"""
from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from jobs.spec import SEARCH_AXES
from tuning.space import encode_hidden

# How a trial ended, as written in results.csv and the table.
COMPLETED = "completed"            # ran train.epochs
EARLY_STOPPED = "early_stopped"    # its own train.early_stop patience ran out
STOPPED = "stopped"                # ASHA stopped it
TIME_BUDGET = "time_budget"        # tune.time_budget_s ran out while it ran
NOT_RUN = "not_run"                # never started (the time budget ran out first)
ERROR = "error"


@dataclass
class TrialRecord:
    trial_id: str
    status: str
    config: dict                    # the full train/model values this trial used (sampled or from the spec)
    history: list[dict] = field(default_factory=list)
    best_value: Optional[float] = None
    best_epoch: Optional[int] = None
    error: Optional[str] = None
    train_run: Optional[str] = None
    # The last epoch Tune saw. Train workers run ahead of Tune's decisions, so a stopped trial may have
    # trained (and paid for) an epoch or two past the one it was judged on: epochs_run counts those.
    judged_at: Optional[int] = None
    # The last epoch Tune reported while the search ran (0: none), each printed as it came; None: not known.
    seen_at: Optional[int] = None

    @property
    def epochs_run(self) -> int:
        return len(self.history)

    def row(self, metric: str) -> dict:
        last = self.history[-1].get(metric) if self.history else None
        return {"trial_id": self.trial_id, "status": self.status,
                **{a: _cell(self.config.get(a)) for a in SEARCH_AXES},
                "epochs_run": self.epochs_run, "judged_at_epoch": _cell(self.judged_at),
                "best_epoch": self.best_epoch if self.best_epoch else "",
                f"best_{metric}": _cell(self.best_value), f"last_{metric}": _cell(last),
                "error": self.error or "", "train_run": self.train_run or ""}


def _cell(v: Any) -> Any:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, list):
        return encode_hidden(v)                 # hidden [128, 64] → 128x64, one CSV cell
    return v


def with_unstarted(records: list[TrialRecord], total: int, config: dict) -> list[TrialRecord]:
    """`records` and a NOT_RUN record for each of the search's `total` trials Tune never created (it creates a
    trial once there is room to run it: those after a time budget ran out were left out of the table and the CSV).
    Tune numbers trials <experiment>_<5 digits>: the missing numbers are those. `config`: the spec's values, with
    the sampled axes blank."""
    if len(records) >= total:
        return records
    ids = [re.fullmatch(r"(.+)_(\d{5})", r.trial_id) for r in records]
    if ids and all(ids) and len({m.group(1) for m in ids}) == 1:
        prefix, taken = ids[0].group(1), {int(m.group(2)) for m in ids}
        missing = [f"{prefix}_{i:05d}" for i in range(total + len(records)) if i not in taken]
    else:       # Optuna's trials are named by a random id: those never created have none
        missing = [f"unstarted_{i:05d}" for i in range(total)]
    return records + [TrialRecord(name, NOT_RUN, dict(config)) for name in missing[:total - len(records)]]


def ranked(records: list[TrialRecord], mode: str) -> list[TrialRecord]:
    """Trials with a value first, best first; then the rest in trial order."""
    scored = [r for r in records if r.best_value is not None and not math.isnan(r.best_value)]
    scored.sort(key=lambda r: r.best_value, reverse=(mode == "max"))
    return scored + [r for r in records if r not in scored]


def write_csv(records: list[TrialRecord], metric: str, mode: str, path: Path) -> Path:
    rows = [r.row(metric) for r in ranked(records, mode)]
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["trial_id"])
        writer.writeheader()
        writer.writerows(rows)
    return path


def table(records: list[TrialRecord], metric: str, mode: str, searched: list[str], top: int = 10) -> str:
    """The top trials, best first, with the axes that were searched."""
    axes = [a for a in SEARCH_AXES if a in ("lr", "batch_size") or a in searched]   # lr, batch always shown
    head = ["rank", "trial", *axes, "epochs", "status", metric]
    lines = []
    for i, r in enumerate(ranked(records, mode)[:top], 1):
        cells = [str(i), r.trial_id]
        for a in axes:
            v = r.config.get(a)
            cells.append(f"{v:.3g}" if isinstance(v, float) else str(_cell(v)))
        cells += [str(r.epochs_run), r.status + (f" ({_short(r.error)})" if r.error else ""),
                  f"{r.best_value:.4f}" if r.best_value is not None else "-"]
        lines.append(cells)
    widths = [max(len(h), *(len(c[i]) for c in lines)) if lines else len(h) for i, h in enumerate(head)]
    fmt = lambda cells: "  ".join(c.rjust(w) if j not in (1, len(head) - 2) else c.ljust(w)
                                  for j, (c, w) in enumerate(zip(cells, widths)))
    out = [fmt(head)] + [fmt(c) + ("  ← best" if i == 0 and records and c[-1] != "-" else "")
                         for i, c in enumerate(lines)]
    hidden = len(records) - len(lines)
    if hidden > 0:
        out.append(f"... {hidden} more trial(s) in results.csv")
    return "\n".join(out)


def _short(error: str, width: int = 60) -> str:
    return error if len(error) <= width else error[:width - 1] + "…"


@dataclass(frozen=True)
class ValueAxis:
    """How a panel's metric axis is drawn: `scale` ("linear" or "log") and `limits` (None: every value fits)."""
    scale: str
    limits: Optional[tuple[float, float]] = None

    def clipped(self, value: float) -> Optional[str]:
        """"above" or "below" when `value` lies beyond the limits, else None."""
        if self.limits is None or not math.isfinite(value):
            return None
        return "above" if value > self.limits[1] else "below" if value < self.limits[0] else None


def value_axis(values: list[float]) -> ValueAxis:
    """The axis on which every trial's values stay readable, one diverged trial (val_loss 66 among values near
    0.3) included. A value far outside the bulk of them is left off the axis (beyond 3 interquartile ranges
    of the quartiles, Tukey's far-out fence; measured in decades when the values are positive and span more
    than one): the limits hug the rest, and the plot marks the points beyond them. What stays gets a log axis
    when it is positive and spans more than a decade, else a linear one."""
    finite = sorted(v for v in values if isinstance(v, (int, float)) and math.isfinite(v))
    kept = finite
    if len(finite) >= 4:
        log = _spans_decades(finite)
        on_axis = [math.log10(v) for v in finite] if log else finite
        q1, q3 = _quantile(on_axis, 0.25), _quantile(on_axis, 0.75)
        # A spread of at least a tenth of a decade (log) or a tenth of the values' size: near-equal values
        # must not make every other value an outlier.
        spread = max(q3 - q1, 0.1 if log else 0.1 * max(abs(q1), abs(q3), 1e-12))
        kept = [v for v, a in zip(finite, on_axis) if q1 - 3 * spread <= a <= q3 + 3 * spread]
    scale = "log" if kept and _spans_decades(kept) else "linear"
    if len(kept) == len(finite):
        return ValueAxis(scale)
    on_axis = [math.log10(v) for v in kept] if scale == "log" else kept
    pad = 0.05 * (on_axis[-1] - on_axis[0]) or 0.05 * max(abs(on_axis[0]), 1e-12)
    bottom, top = on_axis[0] - pad, on_axis[-1] + pad
    return ValueAxis(scale, (10 ** bottom, 10 ** top) if scale == "log" else (bottom, top))


def _spans_decades(ordered: list[float]) -> bool:
    return ordered[0] > 0 and ordered[-1] / ordered[0] > 10


def _quantile(ordered: list[float], q: float) -> float:
    """Linear interpolation between the closest ranks of an ordered list (numpy's default)."""
    at = q * (len(ordered) - 1)
    i = int(at)
    return ordered[i] if i + 1 >= len(ordered) else ordered[i] + (at - i) * (ordered[i + 1] - ordered[i])


def _apply(ax, axis: ValueAxis, points: list[tuple[float, float]]) -> None:
    """Set `ax`'s y axis as `axis` says and mark each (x, y) of `points` beyond its limits at the edge it
    passes (▲ above, ▼ below), with a note of how many and how far."""
    ax.set_yscale(axis.scale)
    if axis.limits is None:
        return
    ax.set_ylim(*axis.limits)
    beyond = [(x, y, axis.clipped(y)) for x, y in points if axis.clipped(y)]
    for side, marker, edge in (("above", "^", axis.limits[1]), ("below", "v", axis.limits[0])):
        xs = [x for x, _, where in beyond if where == side]
        if xs:
            ax.scatter(xs, [edge] * len(xs), marker=marker, color="crimson", s=36, zorder=5, clip_on=False)
    worst = max((y for _, y, _ in beyond), key=lambda y: abs(y))
    ax.text(0.99, 0.95, f"{len(beyond)} point(s) off the axis (▲▼), e.g. {worst:.3g}", transform=ax.transAxes,
            ha="right", va="top", fontsize=8, color="crimson")


# The left panel's x axis: the first of these the search varied (a continuous axis shows a trend best).
_X_AXES = {"lr": ("learning rate", "log"), "weight_decay": ("weight decay", "symlog"), "dropout": ("dropout", "linear")}


def curve_title(records: list[TrialRecord], rungs: list[int]) -> str:
    """The learning curves' title, on two lines (one line ran off a 12-inch figure), with what the marks mean for
    what the search had: ASHA's stops and rungs only with a scheduler that has them."""
    keys = (["× = stopped by ASHA"] if rungs or any(r.status == STOPPED for r in records) else []) + \
        ["○ = other early end"] + (["dotted = rungs"] if rungs else [])
    return "learning curves\n(" + ", ".join(keys) + ")"


def plot(records: list[TrialRecord], metric: str, mode: str, path: Path, *, rungs: list[int],
         title: str, searched: Optional[list[str]] = None) -> Path:
    """Left: best metric of each trial against its learning rate (else the first other axis searched: weight
    decay, dropout, or the layer widths as categories), coloured by batch size.
    Right: every trial's learning curve; a cross marks where a trial was stopped early, dotted lines the ASHA rungs.
    Each panel's metric axis keeps every trial readable (`value_axis`): a log axis over more than a decade, and
    a far outlier (a diverged trial) marked at the edge instead of flattening the rest."""
    import matplotlib
    matplotlib.use("Agg")          # headless: no display on a training node
    import matplotlib.pyplot as plt

    batches = sorted({r.config.get("batch_size") for r in records if r.config.get("batch_size") is not None})
    cmap = plt.get_cmap("viridis", max(len(batches), 1))
    colour = {b: cmap(i) for i, b in enumerate(batches)}
    best = next((r for r in ranked(records, mode) if r.best_value is not None), None)

    searched = list(searched) if searched is not None else ["lr"]
    x_axis = next((a for a in _X_AXES if a in searched), None)
    categories: list[str] = []
    if x_axis is None:           # only widths (or only batch sizes) searched: one column per value
        key = "hidden" if "hidden" in searched else "batch_size"
        # In the values' own order (batch 32 before 128; widths by their list), trials with none left out.
        values = sorted({tuple(v) if isinstance(v, list) else v for v in (r.config.get(key) for r in records
                                                                              if r.best_value is not None)
                         if v is not None})
        categories = [str(_cell(list(v) if isinstance(v, tuple) else v)) for v in values]
        x_of = lambda r: categories.index(str(_cell(r.config.get(key))))  # noqa: E731
    else:
        x_of = lambda r: r.config.get(x_axis)  # noqa: E731
    fig, (ax_lr, ax_curve) = plt.subplots(1, 2, figsize=(12, 4.8))
    for b in batches or [None]:
        pts = [r for r in records if r.config.get("batch_size") == b and r.best_value is not None]
        ax_lr.scatter([x_of(r) for r in pts], [r.best_value for r in pts], color=colour.get(b, "grey"),
                      label=f"batch {b}" if b is not None else None, s=40, edgecolor="black", linewidth=0.5,
                      zorder=3)
    if best is not None:
        ax_lr.scatter([x_of(best)], [best.best_value], s=180, facecolor="none", edgecolor="red",
                      linewidth=1.5, zorder=4, label=f"best ({best.trial_id})")
    failed = [r for r in records if r.status == ERROR]
    if failed:
        ax_lr.text(0.01, 0.01, f"{len(failed)} trial(s) failed (not shown)", transform=ax_lr.transAxes,
                   fontsize=8, color="crimson")
    positive = []
    if x_axis is None:
        ax_lr.set_xticks(range(len(categories)), categories)
        label = "layer widths" if key == "hidden" else "batch size"
    else:
        label, scale = _X_AXES[x_axis]
        positive = [v for v in (r.config.get(x_axis) for r in records) if isinstance(v, (int, float)) and v > 0]
        if scale == "symlog":     # weight decay may include 0
            ax_lr.set_xscale("symlog", linthresh=min(positive) if positive else 1e-6)
        else:
            ax_lr.set_xscale(scale)
    # Within a decade a log axis labels its minor ticks too; slanted, they do not run into each other.
    ax_lr.tick_params(axis="x", which="both", labelrotation=30, labelsize=8)
    scored = [r for r in records if r.best_value is not None]
    _apply(ax_lr, value_axis([r.best_value for r in scored]), [(x_of(r), r.best_value) for r in scored])
    if not scored:      # a budget spent before any epoch ended, or every trial failed: empty, and said
        ax_lr.text(0.5, 0.5, "no trial reported a score", transform=ax_lr.transAxes, ha="center", va="center")
        if x_axis is not None and positive:    # a log axis with no point had no range: matplotlib failed to draw it
            ax_lr.set_xlim(min(positive) / 2, max(positive) * 2)
    ax_lr.set_xlabel(label)
    ax_lr.set_ylabel(f"best {metric}")
    ax_lr.set_title(f"{metric} vs {label} ({'higher' if mode == 'max' else 'lower'} is better)")
    if ax_lr.get_legend_handles_labels()[0]:    # no scored trial, no best: matplotlib would warn of an empty legend
        ax_lr.legend(fontsize=8)
    ax_lr.grid(alpha=0.3)

    for r in records:
        epochs = [h["epoch"] for h in r.history if h.get(metric) is not None]
        values = [h[metric] for h in r.history if h.get(metric) is not None]
        if not epochs:
            continue
        c = colour.get(r.config.get("batch_size"), "grey")
        is_best = best is not None and r is best
        style = dict(color="red" if is_best else c, linewidth=2.2 if is_best else 1.0,
                     alpha=1.0 if is_best else 0.75, zorder=3 if is_best else 2)
        at = epochs.index(r.judged_at) if r.status == STOPPED and r.judged_at in epochs else len(epochs) - 1
        ax_curve.plot(epochs[:at + 1], values[:at + 1], **style)
        if at < len(epochs) - 1:      # epochs the workers trained while Tune was deciding to stop the trial
            ax_curve.plot(epochs[at:], values[at:], linestyle="--", **style)
        if r.status == STOPPED and r.judged_at in epochs:
            ax_curve.scatter([epochs[at]], [values[at]], marker="x", color="black", s=45, zorder=4)
        elif r.status in (TIME_BUDGET, EARLY_STOPPED):
            ax_curve.scatter([epochs[-1]], [values[-1]], marker="o", facecolor="none", color="black", s=40,
                             zorder=4)
    curve_points = [(h["epoch"], h[metric]) for r in records for h in r.history if h.get(metric) is not None]
    _apply(ax_curve, value_axis([y for _, y in curve_points]), curve_points)
    for rung in rungs:
        ax_curve.axvline(rung, color="grey", linestyle=":", linewidth=1)
    ax_curve.set_xlabel("epoch")
    ax_curve.set_ylabel(metric)
    ax_curve.xaxis.get_major_locator().set_params(integer=True)
    ax_curve.set_title(curve_title(records, rungs), fontsize=9)
    ax_curve.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
