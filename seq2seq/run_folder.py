"""A run folder: the names of its files, the lock a training holds on it, the checks
before a training starts in it, and which validated checkpoints it keeps. Training,
`seq2seq plot`, `seq2seq average` and the result scripts all find a run's files here."""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import stat
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from seq2seq.errors import UserError
from seq2seq.files import make_folder, remove_orphans

if TYPE_CHECKING:
    from seq2seq import distributed

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
        make_folder(self.path)
        handle = self._open_lock(os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(handle)
            handle.close()
            advice = "wait for it to end, or choose another --run-dir"
            raise self._in_use(holder, advice) from None
        handle.truncate(0)
        handle.seek(0)
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._lock = handle

    def unlock(self) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def _open_lock(self, flags: int) -> IO[str]:
        """The lock file, refused unless it is a regular file: through a symlink a
        training would truncate the link's target, and a FIFO would block."""
        try:
            descriptor = os.open(
                self.lock_file, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o644
            )
        except OSError as error:
            link = error.errno == errno.ELOOP
            reason = "it is a symbolic link; remove it" if link else error.strerror or str(error)
            raise UserError(f"{self.lock_file}: cannot open the folder's lock: {reason}") from None
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            os.close(descriptor)
            raise UserError(
                f"{self.lock_file}: the run folder's lock is not a regular file; remove it"
            )
        return os.fdopen(descriptor, "r+" if flags & os.O_RDWR else "r", encoding="utf-8")

    def training(self) -> str | None:
        """The process id of the training that holds the folder now, or None (other
        commands then write elsewhere)."""
        if not os.path.lexists(self.lock_file):
            return None
        with self._open_lock(os.O_RDONLY) as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return _holder(handle)
            return None

    def refuse_while_training(self, advice: str) -> None:
        """A UserError if a training holds the folder."""
        if holder := self.training():
            raise self._in_use(holder, advice)

    def _in_use(self, holder: str, advice: str) -> UserError:
        return UserError(f"{self.path} is in use by a training (PID {holder}); {advice}")

    def owns(self, name: str) -> bool:
        """Whether `name` is one that only this folder's training may write (its config,
        metrics, log, checkpoints) and the folder holds a run (other than that file)."""
        kept = name.startswith(KEPT_PREFIX) and name.endswith(".pt")
        written = (self.config, self.last, self.best, self.metrics, self.log)
        own = kept or name in {path.name for path in written}
        return own and any(path.name != name for path in self.files())

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
        from seq2seq.checkpoint import save_checkpoint  # torch: not for translate's output checks

        written = [self.best] * best + [self.kept(step)] * keep
        for path in written:
            save_checkpoint(payload, path)
        for old in dropped:
            self.kept(old).unlink(missing_ok=True)
        return written

    def files(self) -> list[Path]:
        """The files of a run found here: any one makes the folder hold a run, and
        --overwrite deletes them all (a user's own files stay)."""
        named = (self.config, self.last, self.best, self.metrics, self.curves, self.log)
        found = [path for path in (*named, self.tensorboard) if os.path.lexists(path)]
        return found + self.all_kept()

    def check(self, overwrite: bool, resume: bool) -> bool:
        """Whether a training may start here; True when it resumes from last.pt."""
        for path in (self.config, self.last, self.best, self.metrics, self.curves):
            if path.exists() and not path.is_file():
                raise UserError(f"{path}: is not a regular file; move it out of the run folder")
        found = self.files()
        if resume and self.last.exists():
            return True
        if found and not overwrite:
            names = ", ".join(path.name for path in found[:3]) + ", ..." * (len(found) > 3)
            if resume:
                raise UserError(
                    f"{self.path} holds a run ({names}) but no last.pt to resume from; pass "
                    "--overwrite to start it again (deleting them), or choose another --run-dir"
                )
            resuming = "--resume to continue it, " if self.last.exists() else ""
            raise UserError(
                f"{self.path} already holds a run ({names}); pass {resuming}--overwrite to "
                "replace it, or choose another --run-dir"
            )
        return False

    def start(self, overwrite: bool, resume: bool, context: distributed.Context) -> bool:
        """`check`, then `prepare`: every rank decides from what is on disk, then rank 0
        alone changes the folder -> whether the run resumes from last.pt."""
        from seq2seq import distributed  # torch: not for translate's output checks

        resuming = self.check(overwrite, resume)
        distributed.barrier(context)
        if context.is_main:
            self.prepare(resuming)
        distributed.barrier(context)
        return resuming

    def prepare(self, resuming: bool) -> None:
        """Delete what killed saves left behind and, unless resuming, the previous run."""
        make_folder(self.path)
        remove_orphans(self.path)
        for path in [] if resuming else self.files():
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()


def _holder(lock: IO[str]) -> str:
    """The process id that the training holding the lock wrote into it."""
    lock.seek(0)
    return lock.read().strip() or "unknown"


def check_not_run_file(path: Path) -> None:
    """Refuse an output that would replace a run's own file, by any spelling of its path
    (a link, `./`, `..`): another command's output would destroy the run."""
    target = Path(os.path.realpath(path))
    if RunFolder(target.parent).owns(target.name):
        raise UserError(
            f"{path}: is the {target.name} of the run in {target.parent}; write the output "
            "to another file"
        )


def rank_kept(
    kept: list[list[float]], score: float, step: int, k: int
) -> tuple[list[list[float]], bool, list[int]]:
    """The k best validations as [[signed score, step], ...], best first (the later step
    first among equal scores) -> (the new list, is this validation kept?, steps to delete)."""
    entry = [score, step]
    ranked = sorted([*kept, entry], key=lambda e: (-e[0], -e[1]))
    return ranked[:k], entry in ranked[:k], [int(old) for _, old in ranked[k:]]
