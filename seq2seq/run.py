"""A run on disk: the run folder's files, the lock a training holds on it, the checks before
a training starts there, which validated checkpoints it keeps; what last.pt holds, its save
and restore, what a resumed run may change; the metrics log. Training, `seq2seq plot`,
`seq2seq average` and the result scripts all find a run's files here. The output checks
of every command (corpus.py) import this module without torch: what needs torch imports it there.

metrics.jsonl holds one JSON object per line, of "kind" "start" (versions, commit), "train"
(every log_every steps) or "valid" (every validation). Each line is written with one
write() and flushed, so a kill leaves at most one partial last line, which readers skip
and resume removes. Non-finite numbers (a diverged loss) are written as null: the file
stays valid JSON.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import random
import shutil
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from seq2seq import console
from seq2seq.errors import UserError
from seq2seq.files import append_line, make_folder, remove_orphans, strict_json, write_atomic

if TYPE_CHECKING:
    from seq2seq import distributed
    from seq2seq.checkpoint import Bundle
    from seq2seq.config import Config
    from seq2seq.optimization import Optimization

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
        from seq2seq.checkpoint import save_checkpoint

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
        from seq2seq import distributed

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


# -- last.pt: what a resumed run may change, what it holds, its save and its restore -------
# Settings that a resumed run may change: they bound or pace the run, or choose the
# hardware, and leave what was learned so far as it is. Every other setting (data,
# vocabulary, model, seed, loss, the schedule's shape) would make it another run.
RESUMABLE = {
    "train.run_dir",
    "train.epochs",
    "train.max_steps",
    "train.max_minutes",
    "train.patience",
    "train.validate_every",
    "train.save_every",
    "train.log_every",
    "train.keep_checkpoints",
    "train.learning_rate",  # applied to the optimizer, the schedule keeps its shape
    "train.batch_size",  # these two change the epoch's batches: the epoch restarts
    "train.batch_unit",
    "train.accumulate_steps",
    "train.device",
    "train.precision",
    "train.threads",
    "train.distributed_timeout",
    "train.max_bad_steps",
}
RESTARTS_EPOCH = {"train.batch_size", "train.batch_unit"}
RESEEDED = (
    "saved by another number of ranks: random streams restart from the seed (the data "
    "order and position are kept, the resumed run is not bit-exact)"
)


def config_changes(payload: dict[str, Any], config: Config, last: Path) -> dict[str, tuple]:
    """The settings that differ from the run's own -> {key: (old, new)}; a change that a
    resumed run cannot take is refused, naming the key and both values. Decoding settings
    (`decode.*`) are translation defaults and may change."""
    from seq2seq.checkpoint import saved_config

    old = flatten(saved_config(payload, str(last)).model_dump())
    new = flatten(config.model_dump())
    changes = {key: (old.get(key), new.get(key)) for key in old if old.get(key) != new.get(key)}
    for key, (before, after) in changes.items():
        if key not in RESUMABLE and not key.startswith("decode."):
            raise UserError(
                f"{last}: the run was trained with {key}={before!r}, this config says "
                f"{after!r}; a resumed run cannot change it: set it back, or start a new run"
            )
    return changes


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A config dump as dotted keys: {"train": {"epochs": 3}} -> {"train.epochs": 3}."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def describe_changes(changes: dict[str, tuple]) -> str:
    """'; changed: key old -> new, ...' for the resume line, or nothing."""
    changed = ", ".join(f"{key} {old} -> {new}" for key, (old, new) in changes.items())
    return f"; changed: {changed}" if changed else ""


@dataclass
class TrainingState:
    """What last.pt holds under "training" beside the optimizer's, scheduler's and
    gradient scaler's state (the model checkpoint's keys hold the rest: checkpoint.py)."""

    progress: dict[str, Any]  # training.Progress's fields: where the run is
    tracker: dict[str, Any]  # ValidationTracker.state_dict(): what validations decided
    rng: list[dict[str, Any]]  # get_rng_state() of every rank, by rank


def save_last(path: Path, bundle: Bundle, optimization: Optimization, state: TrainingState) -> None:
    """last.pt: the model, and all that `restore_training` needs to go on exactly."""
    from seq2seq.checkpoint import save_checkpoint

    training = {**optimization.state_dict(), **vars(state)}
    save_checkpoint({**bundle.payload(state.progress["step"]), "training": training}, path)


def restore_training(
    payload: dict[str, Any],
    changes: dict[str, tuple],
    bundle: Bundle,
    optimization: Optimization,
    last: Path,
) -> TrainingState:
    """Weights and optimizer state from last.pt (whose vocabularies must be the ones the
    data give now), with the config's `changes` (from `config_changes`) applied -> the
    rest of the training state."""
    from seq2seq.checkpoint import saved_vocabularies, saved_weights

    sides = (bundle.src, bundle.trg)
    for side, text, saved in zip(("src", "trg"), sides, saved_vocabularies(payload), strict=True):
        if saved.itos != text.vocab.itos:
            raise UserError(
                f"{last}: its {side} vocabulary ({len(saved)} tokens) does not match the one "
                f"the data give now ({len(text.vocab)}): the training data changed"
            )
    training = payload.get("training")
    if not training:
        raise UserError(f"{last}: holds no training state (an averaged or exported model?)")
    try:
        bundle.model.load_state_dict(saved_weights(payload))
        optimization.load_state_dict(training)
    except (RuntimeError, ValueError, KeyError) as error:
        raise UserError(f"{last}: does not fit this config's model ({error})") from None
    if "train.learning_rate" in changes:
        optimization.change_learning_rate(*changes["train.learning_rate"])
    progress = training["progress"]
    # An older last.pt holds the tracker's state among the progress fields.
    return TrainingState(progress, training.get("tracker", progress), training["rng"])


def restore_rng(streams: list[dict[str, Any]], context: distributed.Context, seed: int) -> bool:
    """Each rank takes its own saved streams; with another rank count, every rank reseeds
    (seed + rank) instead -> whether the saved streams were restored."""
    import torch

    if len(streams) == context.world_size:
        set_rng_state(streams[context.rank])
        return True
    torch.manual_seed(seed + context.rank)
    return False


def get_rng_state() -> dict[str, Any]:
    """Every RNG the run uses, as plain numbers and lists: weights_only-loadable, and
    gatherable from every rank."""
    import torch

    version, internal, gauss = random.getstate()
    state: dict[str, Any] = {
        "python": [version, list(internal), gauss],
        "torch": torch.get_rng_state().tolist(),
    }
    if torch.cuda.is_available():
        state["cuda"] = [generator.tolist() for generator in torch.cuda.get_rng_state_all()]
    try:
        import numpy

        kind, keys, position, has_gauss, cached = numpy.random.get_state()
        state["numpy"] = [kind, keys.tolist(), position, has_gauss, cached]
    except ImportError:
        pass
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    import torch

    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([torch.tensor(s, dtype=torch.uint8) for s in state["cuda"]])
    if "numpy" in state:
        import numpy

        kind, keys, position, has_gauss, cached = state["numpy"]
        numpy.random.set_state(
            (kind, numpy.array(keys, dtype=numpy.uint32), position, has_gauss, cached)
        )


# -- the metrics log ------------------------------------------------------------------------
class MetricsLog:
    def __init__(self, folder: RunFolder):
        self.path = folder.metrics
        self._writer = None
        try:
            from torch.utils.tensorboard import SummaryWriter  # optional extra

            self._writer = SummaryWriter(str(folder.tensorboard))
        except ImportError:
            pass

    def append(self, record: dict[str, Any]) -> None:
        append_line(self.path, strict_json(record))
        if self._writer is not None and "step" in record:
            for key, value in record.items():
                if isinstance(value, float) and key not in ("step", "epoch"):
                    self._writer.add_scalar(f"{record['kind']}/{key}", value, record["step"])
            self._writer.flush()

    def truncate_after(self, step: int) -> None:
        """Drop records written after `step` (work lost by a kill, about to be redone)."""
        kept = [r for r in read_metrics(self.path) if r.get("step", 0) <= step]
        text = "".join(strict_json(r) + "\n" for r in kept)
        write_atomic(self.path, lambda handle: handle.write(text.encode("utf-8")))


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """All complete records of a metrics.jsonl. A partial last line (a kill) is skipped;
    so is any other line that is not a JSON object (not UTF-8, not JSON, a list), with a
    warning naming it: a damaged line never stops a resume or a plot."""
    if not path.exists():
        return []
    lines = path.read_bytes().split(b"\n")  # the last is b"" after a complete line
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            record = None
        if isinstance(record, dict):
            records.append(record)
        elif number < len(lines):  # not the last, which lacks its "\n" when a kill cut it
            console.warn(f"{path}:{number}: not a metrics record (a JSON object), skipped")
    return records


def environment() -> dict[str, str | None]:
    """Versions of what produced the run, and the git commit of this source tree if any."""
    import seq2seq

    info = seq2seq.versions("torch", "spacy", "sacrebleu")
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(seq2seq.__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
        if commit.returncode == 0:
            info["git_commit"] = commit.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return info
