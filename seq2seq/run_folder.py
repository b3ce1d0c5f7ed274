"""A run folder: the names of its files, the checks before a training starts in it, and
which validated checkpoints it keeps. Training, `seq2seq average` and the result scripts
all find a run's files through `RunFolder`."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from seq2seq.checkpoint import save_checkpoint
from seq2seq.errors import UserError

KEPT_PREFIX = "ckpt-step"


class RunFolder:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.config = self.path / "config.yaml"
        self.last = self.path / "last.pt"  # the training checkpoint: resume from here
        self.best = self.path / "best.pt"  # the best validated model
        self.metrics = self.path / "metrics.jsonl"
        self.curves = self.path / "curves.png"
        self.tensorboard = self.path / "tensorboard"

    def kept(self, step: int) -> Path:
        """The checkpoint kept from the validation at `step` (train.keep_checkpoints)."""
        return self.path / f"{KEPT_PREFIX}{step}.pt"

    def all_kept(self) -> list[Path]:
        return sorted(self.path.glob(f"{KEPT_PREFIX}*.pt"))

    def save_validated(
        self, payload: dict[str, Any], step: int, best: bool, keep: bool, dropped: list[int]
    ) -> None:
        """A validated model: best.pt if it is the best so far, ckpt-step{step}.pt if it is
        among the k best; the kept checkpoints it pushes out are deleted."""
        if best:
            save_checkpoint(payload, self.best)
        if keep:
            save_checkpoint(payload, self.kept(step))
        for old in dropped:
            self.kept(old).unlink(missing_ok=True)

    def check(self, overwrite: bool, resume: bool) -> bool:
        """Whether a training may start here; True when it resumes from last.pt."""
        if resume:
            return self.last.exists()
        if (self.config.exists() or self.last.exists()) and not overwrite:
            raise UserError(
                f"{self.path} already holds a run; pass --resume to continue it, "
                "--overwrite to replace it, or choose another --run-dir"
            )
        return False

    def prepare(self, resuming: bool) -> None:
        """Delete what a killed save left behind and, unless resuming, the previous run."""
        for stale in self.path.glob(".*.tmp*"):
            stale.unlink()
        if not resuming and self.path.exists():
            for path in (self.last, self.best, self.config, self.metrics, self.curves):
                path.unlink(missing_ok=True)
            for old in self.all_kept():
                old.unlink()
            shutil.rmtree(self.tensorboard, ignore_errors=True)
        self.path.mkdir(parents=True, exist_ok=True)


def rank_kept(
    kept: list[list[float]], score: float, step: int, k: int
) -> tuple[list[list[float]], bool, list[int]]:
    """The k best validations as [[signed score, step], ...], best first (the later step
    first among equal scores) -> (the new list, is this validation kept?, steps to delete)."""
    entry = [score, step]
    ranked = sorted([*kept, entry], key=lambda e: (-e[0], -e[1]))
    return ranked[:k], entry in ranked[:k], [int(old) for _, old in ranked[k:]]
