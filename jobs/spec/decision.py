"""The `decision` section: how a binary classifier's probability of the positive class becomes its answer.

Without it a model answers the likelier class (a cut-off of 0.5). A credit-risk or screening team sets the
cut-off by what a miss and a false alarm cost: a fixed one, or one chosen on the validation split when the
bundle is written (`jobs.decision`): the highest that keeps a recall, the one that catches the most while
keeping a precision, or the one with the best F1. The bundle keeps the cut-off (preprocessor.json, schema.json);
serving, evaluation, `predict` and the monitor's reference all answer with it.
"""
from __future__ import annotations

from typing import Literal, Optional, Union

from pydantic import Field, model_validator

from jobs.spec.base import StrictModel

RULES = ("threshold", "min_recall", "min_precision")


class DecisionSpec(StrictModel):
    """Exactly one of threshold, min_recall and min_precision."""

    positive: Optional[Union[str, int, float, bool]] = Field(
        None, description="The class the cut-off is for, as the label column writes it (e.g. 'yes', 1, true); "
                          "default: the rarer class of the train split.")
    threshold: Optional[Union[float, Literal["best_f1"]]] = Field(
        None, description="A fixed cut-off on the probability of `positive` (0 < t < 1), or best_f1: the one "
                          "with the best F1 of `positive` on the validation split.")
    min_recall: Optional[float] = Field(
        None, gt=0, le=1, description="The highest cut-off whose recall of `positive` on the validation split is "
                                      "at least this (a screening test that must miss few cases).")
    min_precision: Optional[float] = Field(
        None, gt=0, le=1, description="The cut-off that catches the most of `positive` on the validation split "
                                      "while its precision there stays at least this (few false alarms).")

    @model_validator(mode="after")
    def _one_rule(self):
        given = [r for r in RULES if getattr(self, r) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of {', '.join(RULES)} (got {', '.join(given) or 'none'}); e.g. "
                             "decision: {threshold: 0.3}, {min_recall: 0.9} or {threshold: best_f1}")
        t = self.threshold
        if isinstance(t, float) and not 0 < t < 1:
            raise ValueError(f"threshold {t} must be between 0 and 1 (a probability), or best_f1")
        return self

    @property
    def rule(self) -> str:
        """The rule as one phrase: 'threshold 0.3', 'best_f1', 'min_recall 0.9'."""
        if self.threshold == "best_f1":
            return "best_f1"
        name = next(r for r in RULES if getattr(self, r) is not None)
        return f"{name} {getattr(self, name):g}"

    @property
    def chosen_on_validation(self) -> bool:
        return not isinstance(self.threshold, float)

