"""A run folder: the names of its files, the lock a training holds on it, the checks
before a training starts in it, and which validated checkpoints it keeps. Training,
`seq2seq plot`, `seq2seq average` and the result scripts all find a run's files here."""

from __future__ import annotations

import fcntl
import os
import shutil
from pathlib import Path
from typing import IO, Any

from seq2seq import distributed
from seq2seq.checkpoint import save_checkpoint
from seq2seq.errors import UserError
from seq2seq.files import TEMPORARY

KEPT_PREFIX = "ckpt-step"


class RunFolder:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.config = self.path / "config.yaml"
        self.last = self.path / "last.pt"  # the training checkpoint: resume from here
        self.best = self.path / "best.pt"  # the best validated model
        self.metrics = self.path / "metrics.jsonl"
        self.curves = self.path / "curves.png"
        self.log = self.path / "train.log"  # what the console showed (console.py)
        self.tensorboard = self.path / "tensorboard"
        self.lock_file = self.path / ".lock"
        self._lock: IO[str] | None = None

    def lock(self) -> None:
        """Hold the folder for this process's life: an advisory lock that the kernel drops
        when the process ends, even by kill -9, so it is never stale."""
        self.path.mkdir(parents=True, exist_ok=True)
        handle = open(self.lock_file, "a+", encoding="utf-8")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise UserError(
                f"{self.path} is in use by a training (PID {holder}); wait for it to end, "
                "or choose another --run-dir"
            ) from None
        handle.truncate(0)
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._lock = handle

    def unlock(self) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def training(self) -> bool:
        """Whether a training holds the folder now (read-only commands then keep out)."""
        if not self.lock_file.exists():
            return False
        with open(self.lock_file, encoding="utf-8") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            return False

    def kept(self, step: int) -> Path:
        """The checkpoint kept from the validation at `step` (train.keep_checkpoints)."""
        return self.path / f"{KEPT_PREFIX}{step}.pt"

    def all_kept(self) -> list[Path]:
        return sorted(self.path.glob(f"{KEPT_PREFIX}*.pt"))

    def save_validated(
        self, payload: dict[str, Any], step: int, best: bool, keep: bool, dropped: list[int]
    ) -> list[Path]:
        """A validated model: best.pt if it is the best so far, ckpt-step{step}.pt if it is
        among the k best; the kept checkpoints it pushes out are deleted -> what it wrote."""
        written = [self.best] * best + [self.kept(step)] * keep
        for path in written:
            save_checkpoint(payload, path)
        for old in dropped:
            self.kept(old).unlink(missing_ok=True)
        return written

    def check(self, overwrite: bool, resume: bool) -> bool:
        """Whether a training may start here; True when it resumes from last.pt."""
        for path in (self.config, self.last, self.best, self.metrics, self.curves):
            if path.exists() and not path.is_file():
                raise UserError(f"{path}: is not a regular file; move it out of the run folder")
        if resume:
            return self.last.exists()
        if (self.config.exists() or self.last.exists()) and not overwrite:
            raise UserError(
                f"{self.path} already holds a run; pass --resume to continue it, "
                "--overwrite to replace it, or choose another --run-dir"
            )
        return False

    def start(self, overwrite: bool, resume: bool, context: distributed.Context) -> bool:
        """`check`, then `prepare`: every rank decides from what is on disk, then rank 0
        alone changes the folder -> whether the run resumes from last.pt."""
        resuming = self.check(overwrite, resume)
        distributed.barrier(context)
        if context.is_main:
            self.prepare(resuming)
        distributed.barrier(context)
        return resuming

    def prepare(self, resuming: bool) -> None:
        """Delete what a killed save left behind and, unless resuming, the previous run."""
        for stale in self.path.glob(TEMPORARY):
            stale.unlink()
        if not resuming and self.path.exists():
            for path in (self.last, self.best, self.config, self.metrics, self.curves, self.log):
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
