"""The `monitor` section: when drift against the bundle's reference profile, or a fall in a realised metric, asks
for retraining (`jobs.drift.Thresholds`), and the time window the monitor job groups its logs by."""
from __future__ import annotations

import re

from pydantic import Field, field_validator

from jobs.spec.base import StrictModel

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def window_seconds(text: str) -> float:
    """'30m', '1h', '1d', '2w' (s, m, h, d, w) → seconds; ValueError naming the value and the form otherwise."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([smhdw])\s*", str(text))
    if not m or float(m.group(1)) <= 0:
        raise ValueError(f"window must be a positive number and a unit s, m, h, d or w (e.g. 30m, 1h, 1d), "
                         f"got {text!r}")
    seconds = float(m.group(1)) * _UNITS[m.group(2)]
    if seconds > MAX_WINDOW_S:     # windows are dated (a 1,000,000-week one ended in year 21135: a traceback)
        raise ValueError(f"window must be at most 520w (ten years), got {text!r}")
    return seconds


MAX_WINDOW_S = 520 * 7 * 86400


class MonitorSpec(StrictModel):
    """Drift and quality thresholds (`trainyard monitor`, and the flags of a served app's /monitor). A feature
    drifted when psi >= psi and the test's p-value < p_value / the features checked, or its missing rate rose
    by more than missing_rate, or its unseen categories' share by more than unknown_rate."""

    psi: float = Field(0.2, gt=0, description="Population stability index at or above which a distribution "
                                              "moved (0.1: small shift, 0.2: large), if the p-value agrees.")
    p_value: float = Field(0.01, gt=0, lt=1, description="Significance of the KS / chi-squared test, "
                                                         "Bonferroni-corrected over the features checked.")
    missing_rate: float = Field(0.1, ge=0, le=1, description="Largest rise of a feature's missing rate over the "
                                                             "train split's before it is flagged.")
    unknown_rate: float = Field(0.05, ge=0, le=1, description="Largest rise of the share of categories training "
                                                              "never saw over the train split's.")
    min_rows: int = Field(50, ge=1, description="A window with fewer rows flags nothing (too few to tell).")
    metric_drop: float = Field(0.05, ge=0, description="With labels: a realised metric worse than the bundle's "
                                                       "test metric by more than this asks for retraining.")
    window: str = Field("1d", description="Time window the monitor job groups logged requests by: a number and "
                                          "a unit s, m, h, d or w (e.g. 1h, 1d, 7d).")

    @field_validator("window")
    @classmethod
    def _window_ok(cls, v):
        window_seconds(v)
        return v

    @property
    def window_s(self) -> float:
        return window_seconds(self.window)
