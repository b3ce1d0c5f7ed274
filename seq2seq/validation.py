"""What each validation decides: a new best model, early stopping, which checkpoints to keep.

Scores are signed so that higher is better (losses are negated); the tracker's state is
saved in last.pt, so a resumed run decides exactly as an uninterrupted one.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Verdict:
    score: float  # signed: higher is better
    improved: bool  # a new best.pt
    stop: bool  # patience exhausted
    keep: bool  # keep this validation's checkpoint
    dropped: list[int]  # steps whose kept checkpoints to delete


def rank_kept(
    kept: list[list[float]], score: float, step: int, k: int
) -> tuple[list[list[float]], bool, list[int]]:
    """The k best validations as [[signed score, step], ...], best first (the later step
    first among equal scores) -> (the new list, is this validation kept?, steps to delete)."""
    entry = [score, step]
    ranked = sorted([*kept, entry], key=lambda e: (-e[0], -e[1]))
    return ranked[:k], entry in ranked[:k], [int(old) for _, old in ranked[k:]]


@dataclass
class ValidationTracker:
    metric: str  # a key of Evaluation.as_dict(); names ending in "loss" are minimized
    patience: int | None  # validations without improvement before stopping; None: never
    keep: int  # how many of the best validated checkpoints to keep
    best: float | None = None
    bad_validations: int = 0  # validations since the last improvement
    kept: list[list[float]] = field(default_factory=list)  # [[signed score, step], ...]

    def update(self, value: float, step: int) -> Verdict:
        score = -float(value) if self.metric.endswith("loss") else float(value)
        # A non-finite score (a diverged model) is never the best.
        improved = math.isfinite(score) and (self.best is None or score > self.best)
        if improved:
            self.best, self.bad_validations = score, 0
        else:
            self.bad_validations += 1
        stop = self.out_of_patience
        keep, dropped = False, []
        if self.keep:
            self.kept, keep, dropped = rank_kept(self.kept, score, step, self.keep)
        return Verdict(score, improved, stop, keep, dropped)

    @property
    def out_of_patience(self) -> bool:
        """`patience` validations in a row without improvement: early stopping."""
        return bool(self.patience and self.bad_validations >= self.patience)

    def describe(self, verdict: Verdict) -> str:
        """' (new best)', or how long the metric has not improved and whether that stops."""
        if verdict.improved:
            return " (new best)"
        stalled = f" (no improvement for {self.bad_validations})"
        if verdict.stop:
            stalled += f"; early stopping: {self.metric} did not improve for {self.patience}"
        return stalled

    def state_dict(self) -> dict[str, Any]:
        state = asdict(self)
        return {key: state[key] for key in ("best", "bad_validations", "kept")}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best = state["best"]
        self.bad_validations = state["bad_validations"]
        self.kept = state["kept"]
