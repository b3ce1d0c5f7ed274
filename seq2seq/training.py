"""The training loop, built never to lose a run.

- Teacher-forced cross-entropy (optional label smoothing), Adam, gradient clipping,
  gradient accumulation, learning-rate schedules, early stopping (optimization.py,
  validation.py).
- `last.pt` every `save_every` steps and at every epoch end, `best.pt` by the validation
  metric, optionally the k best as `ckpt-step{N}.pt`; all saves atomic (run.py).
- Exact resume: a training checkpoint holds the weights, optimizer, scheduler, every RNG
  state and the position inside the epoch (each epoch's batch order is a function of
  seed and epoch), so an interrupted run resumes into the same result bit for bit (CPU).
- Ctrl-C / SIGTERM finish the current step, save last.pt and raise `Interrupted`.
- A training holds its run folder locked; a second one on the same folder is refused.
- Divergence: a step with non-finite gradients is skipped; `train.max_bad_steps` of them
  in a row, or a non-finite validation, stop the run (`Diverged`, exit 3), last.pt and
  best.pt left as the last finite ones.
- metrics.jsonl, curves.png and train.log (the messages shown) in the run folder; a
  failed write saves last.pt first.
- Under torchrun, DistributedDataParallel: each rank trains an equal share of every step's
  batches; rank 0 alone validates and writes (distributed.py).
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import shlex
import signal
import sys
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from seq2seq import console, distributed
from seq2seq.checkpoint import (
    Bundle,
    load_checkpoint,
    saved_config,
    saved_tokenizers,
    saved_vocabularies,
    saved_weights,
)
from seq2seq.config import Config, TrainConfig, load_config, save_config
from seq2seq.corpus import read_split
from seq2seq.data import collate, make_batches
from seq2seq.download import download_multi30k
from seq2seq.errors import UserError, is_out_of_memory
from seq2seq.evaluation import evaluate
from seq2seq.files import WriteFailed
from seq2seq.fine_tuning import start_from_model, with_model_settings
from seq2seq.model import Seq2Seq
from seq2seq.optimization import Optimization
from seq2seq.plots import plot_run
from seq2seq.run import (
    RESEEDED,
    RESTARTS_EPOCH,
    MetricsLog,
    RunFolder,
    TrainingState,
    config_changes,
    describe_changes,
    environment,
    get_rng_state,
    restore_rng,
    restore_training,
    save_last,
)
from seq2seq.text import ParallelIds, TextSide, training_sides
from seq2seq.translator import Translator, resolve_device
from seq2seq.validation import ValidationTracker
from seq2seq.vocab import Vocabulary


def resume_command(run_dir: Path, settings: dict[str, object] | None = None) -> str:
    """The command that continues the run in `run_dir` (its own config.yaml), with a
    `--set` for each of `settings`; quoted for a POSIX shell."""
    sets = [part for key, value in (settings or {}).items() for part in ("--set", f"{key}={value}")]
    return shlex.join(["seq2seq", "train", "--resume", "--run-dir", str(run_dir), *sets])


class Interrupted(Exception):
    """Training stopped by a signal after saving last.pt; exit status 128 + signum."""

    def __init__(self, signum: int, run_dir: Path):
        self.signum = signum
        super().__init__(
            f"stopped by {signal.Signals(signum).name} after saving {RunFolder(run_dir).last}; "
            f"resume with: {resume_command(run_dir)}"
        )


class Diverged(Exception):
    """Training stopped on non-finite losses or gradients; exit status 3."""


@dataclass
class Progress:
    """Where the run is; saved in every training checkpoint."""

    epoch: int = 1  # the epoch being trained (1-based)
    batches_done: int = 0  # position in this epoch's batch order (all ranks together)
    step: int = 0  # optimizer steps taken
    elapsed: float = 0.0  # training seconds over all sessions of this run
    epoch_loss: float = 0.0  # summed loss and tokens of this epoch so far
    epoch_tokens: int = 0
    bad_steps: int = 0  # steps in a row whose update was skipped: non-finite gradients
    finished: bool = False

    def count(self, batches: int, loss: float, tokens: int, seconds: float) -> None:
        """One optimizer step over `batches` batches of the epoch's order."""
        self.elapsed += seconds
        self.batches_done += batches
        self.step += 1
        self.epoch_loss += loss
        self.epoch_tokens += tokens

    def end_epoch(self, epochs: int) -> str:
        """Move to the next epoch -> the line that reports the one done."""
        report = (
            f"epoch {self.epoch} done: train loss "
            f"{self.epoch_loss / max(self.epoch_tokens, 1):.3f}, "
            f"{self.step} steps, {self.elapsed:.0f} s of training so far"
        )
        self.epoch += 1
        self.restart_epoch()
        self.finished = self.finished or self.epoch > epochs
        return report

    def where(self) -> dict[str, float]:
        """Where the run is, for each metrics record."""
        return {"step": self.step, "epoch": self.epoch, "elapsed": self.elapsed}

    def postfix(self) -> dict[str, str]:
        """The epoch's mean loss and perplexity so far, for the progress bar."""
        mean = self.epoch_loss / max(self.epoch_tokens, 1)
        return {"loss": f"{mean:.3f}", "ppl": f"{math.exp(min(mean, 50)):.1f}"}

    def restart_epoch(self) -> None:
        self.batches_done, self.epoch_loss, self.epoch_tokens = 0, 0.0, 0

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Progress:
        """A saved progress record (fields added since it was saved keep their defaults)."""
        return cls(**{f.name: record[f.name] for f in fields(cls) if f.name in record})


@dataclass
class Window:
    """Loss, tokens, steps, batches and seconds since the last training record; seconds
    since the last progress line; the epoch's batches, for its ETA."""

    epoch_batches: int = 0
    loss: float = 0.0
    tokens: int = 0
    steps: int = 0
    batches: int = 0
    seconds: float = 0.0
    unreported: float = 0.0

    def add(self, loss: float, tokens: int, batches: int, seconds: float) -> None:
        self.loss, self.tokens, self.steps = self.loss + loss, self.tokens + tokens, self.steps + 1
        self.batches, self.seconds = self.batches + batches, self.seconds + seconds
        self.unreported += seconds

    def restart(self) -> None:
        """After a training record: a new window over the same epoch."""
        self.loss, self.tokens, self.steps, self.batches, self.seconds = 0.0, 0, 0, 0, 0.0


# Without progress bars (stderr is not a terminal) a progress line comes every
# train.log_every steps, and at the latest after this many seconds of training steps.
LINE_SECONDS = 60.0


def duration(seconds: float) -> str:
    """`42s`, `3m05s`, `2h07m`: how long, at a glance."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def progress_line(progress: Progress, window: Window, train: TrainConfig, lr: float) -> str:
    """One line on where training is: the window's mean loss and target tokens per second,
    the learning rate, the time spent, and how long the epoch and the budget still need at
    the window's pace."""
    per_batch, per_step = window.seconds / window.batches, window.seconds / window.steps
    left, budget = [], []
    if window.epoch_batches:
        batches_left = window.epoch_batches - progress.batches_done
        left.append(f"epoch ETA {duration(batches_left * per_batch)}")
    if train.max_steps:
        budget.append((train.max_steps - progress.step) * per_step)
    if train.max_minutes is not None:
        budget.append(60 * train.max_minutes - progress.elapsed)
    if budget:
        left.append(f"budget ETA {duration(min(budget))}")
    return (
        f"epoch {progress.epoch}, step {progress.step}: loss {window.loss / window.tokens:.3f}, "
        f"{window.tokens / window.seconds:,.0f} target tokens/s, lr {lr:.3g}, "
        f"elapsed {duration(progress.elapsed)}" + "".join(f", {part}" for part in left)
    )


def limits_reached(train: TrainConfig, progress: Progress, time_spent: bool) -> dict[str, float]:
    """The limits among train.epochs, max_steps and max_minutes that the run has reached
    -> {setting: its value}. `time_spent`: max_minutes is up (all ranks agree on it)."""
    steps, minutes = train.max_steps, train.max_minutes
    limits = {
        "train.epochs": (train.epochs, progress.epoch > train.epochs),
        "train.max_steps": (steps, steps is not None and progress.step >= steps),
        "train.max_minutes": (minutes, time_spent),
    }
    return {key: value for key, (value, reached) in limits.items() if reached}


def end_line(
    train: TrainConfig, progress: Progress, reached: dict[str, float], early: bool, run_dir: Path
) -> str:
    """The last line of a training: how far it went, why it stopped and, unless early
    stopping ended it, the command that goes on (each limit reached, doubled)."""
    steps, epochs = progress.step, progress.epoch - 1
    head = (
        f"finished after {steps} step{'s' * (steps != 1)} "
        f"({epochs} epoch{'s' * (epochs != 1)} done)"
    )
    if early:
        return (
            f"{head}: early stopping, {train.best_metric} did not improve for "
            f"{train.patience} validations (train.patience={train.patience})"
        )
    why = " and ".join(
        f"the time budget {key}={value} is spent" if key == "train.max_minutes"
        else f"{key}={value} reached"
        for key, value in reached.items()
    )  # fmt: skip
    doubled = {key: 2 * value for key, value in reached.items()}
    return f"{head}: {why}; resume with: {resume_command(run_dir, doubled)}"


def set_threads(threads: int | None, context: distributed.Context, device: torch.device) -> None:
    """train.threads, or under torchrun on CPUs the cores divided among the processes."""
    if threads is None and context.local_world_size > 1 and device.type == "cpu":
        threads = max(1, (os.cpu_count() or 1) // context.local_world_size)
    if threads:
        torch.set_num_threads(threads)


def progress_bar(total: int, progress: Progress, enabled: bool) -> tqdm:
    """An epoch's bar on stderr, when stderr is a terminal (console.progress_enabled)."""
    return tqdm(
        total=total,
        initial=progress.batches_done,
        desc=f"epoch {progress.epoch}",
        unit="batch",
        file=sys.stderr,
        dynamic_ncols=True,
        mininterval=0.1,
        disable=not (enabled and console.progress_enabled()),
    )


def resolve_run(
    config_path: Path | None,
    overrides: list[str],
    run_dir: Path | None,
    resume: bool,
    init_from: str | None = None,
) -> Config:
    """The config and run folder for `seq2seq train` (with --config and/or --run-dir,
    and --init-from)."""
    if config_path is None:
        if not (resume and run_dir):
            raise UserError("train needs --config FILE (or --resume --run-dir RUN_DIR)")
        config_path = RunFolder(run_dir).config
    config = load_config(config_path, overrides)
    given = {"run_dir": None if run_dir is None else str(run_dir), "init_from": init_from}
    updates = {key: value for key, value in given.items() if value is not None}
    return config.model_copy(update={"train": config.train.model_copy(update=updates)})


def read_training_text(
    config: Config,
    saved_tokenizers: dict[str, Any] | None,
    context: distributed.Context,
    vocabularies: tuple[Vocabulary, Vocabulary] | None = None,
) -> tuple[TextSide, TextSide, ParallelIds, list[str], list[str]]:
    """Fetch Multi30k if the config names it (rank 0; the others wait), read the training
    and validation splits, make the text sides from the training split only (or rebuild
    a resumed run's tokenizers, or take a fine-tuned model's tokenizers and
    `vocabularies`) -> (src, trg, training ids, validation lines src, trg)."""
    data = config.data
    if data.dataset == "multi30k":
        if context.is_main:
            download_multi30k(data.dir, (data.src_lang, data.trg_lang))
        distributed.barrier(context)
    if not Path(data.dir).is_dir():
        raise UserError(f"data.dir: folder '{data.dir}' does not exist")
    train_src, train_trg = read_split(data, data.train)
    valid_src, valid_trg = read_split(data, data.valid)
    unusable = UserError(f"{data.dir}: no usable training pairs in '{data.train}'")
    if not any(s.strip() and t.strip() for s, t in zip(train_src, train_trg, strict=True)):
        raise unusable  # before the progress lines: a user mistake is one line
    report = console.detail if context.is_main else lambda message: None
    src, trg, corpus = training_sides(
        config, train_src, train_trg, saved_tokenizers, report, vocabularies
    )
    if not corpus.src:
        raise unusable
    if context.is_main:
        console.info(
            f"training pairs: {len(corpus.src)} ({corpus.skipped} skipped: empty or longer "
            f"than {data.max_length} tokens); {config.vocab.type} vocabulary: "
            f"{len(src.vocab)} {data.src_lang}, {len(trg.vocab)} {data.trg_lang}"
        )
    return src, trg, corpus, valid_src, valid_trg


def start_device(train: TrainConfig) -> tuple[torch.device, distributed.Context]:
    """The device this process trains on, and its place among torchrun's processes."""
    device = resolve_device(train.device)
    context = distributed.start(device.type, train.distributed_timeout)
    if device.type == "cuda" and context.distributed:
        device = torch.device("cuda", context.local_rank)
    if train.precision == "fp16" and device.type != "cuda":
        raise UserError(f"train.precision: fp16 needs a CUDA device, not {device.type}")
    return device, context


def out_of_memory(group: list[list[int]], train: TrainConfig, last: Path) -> UserError:
    size, accumulate = train.batch_size, train.accumulate_steps
    return UserError(
        f"out of memory on a batch of {sum(map(len, group))} sentences (saved {last}); "
        f"resume with --resume --set train.batch_size={max(1, size // 2)} --set "
        f"train.accumulate_steps={2 * accumulate} (updates of the same size; the epoch "
        "restarts from its first batch)"
    )


def trainable(model: Seq2Seq, context: distributed.Context, device: torch.device) -> nn.Module:
    """What trains: the model itself, or its DDP wrapper that averages gradients."""
    if not context.distributed:
        return model
    device_ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids)


def diverged(what: str, folder: RunFolder) -> str:
    kept = [str(path) for path in (folder.last, folder.best) if path.exists()]
    return (
        f"training diverged: {what} gave non-finite losses or gradients; "
        + (f"{' and '.join(kept)} hold the last finite weights" if kept else "nothing was saved")
        + "; lower train.learning_rate (a resumed run may change it)"
    )


def train(config: Config, overwrite: bool = False, resume: bool = False) -> Path:
    """Train (or resume) the run that the config describes, holding its run folder locked
    (rank 0); returns the run folder."""
    folder = RunFolder(config.train.run_dir)
    if distributed.launched().is_main:  # under torchrun, rank 0 holds the lock
        folder.lock()
    try:
        return Trainer(config, overwrite, resume).run()
    finally:
        console.stop_transcript()
        folder.unlock()


class Trainer:
    def __init__(self, config: Config, overwrite: bool, resume: bool):
        self.config, train = config, config.train
        self.folder = RunFolder(train.run_dir)
        self.device, self.context = device, context = start_device(train)
        self.changes: dict[str, tuple] = {}  # settings changed on resume: {key: (old, new)}
        init, said = self._model_to_start_from(resume)  # first: the folder may hold it
        checkpoint = self._prepare_folder(overwrite, resume)
        if said:
            self._log(said)
        config = self.config  # a fine-tuning run's has its model's settings
        # Rank 0 draws what a single process draws; DDP copies its initial weights to all.
        random.seed(config.seed + context.rank)
        torch.manual_seed(config.seed + context.rank)
        set_threads(train.threads, context, device)
        # Tokenizers come from last.pt or the fine-tuned model, and so do the vocabularies
        # of a fine-tuning run; other runs make theirs from the training data.
        source = checkpoint or init
        saved = saved_tokenizers(source) if source else None
        vocabularies = saved_vocabularies(source) if source and train.init_from else None
        text = read_training_text(config, saved, context, vocabularies)
        src, trg, self.corpus, self.valid_src, self.valid_trg = text
        self.model = Seq2Seq(config.model, len(src.vocab), len(trg.vocab)).to(device)
        if init is not None:
            self.model.load_state_dict(saved_weights(init))
        self.fine_tuning = init is not None  # its first validation scores the model as given
        self.bundle = Bundle(config, self.model, src, trg)
        self.trainable = trainable(self.model, context, device)
        self.optimization = Optimization(self.model, self.trainable, train, device)
        validation = config.decode.updated(beam_size=1, nbest=1)  # validation is greedy
        self.translator = Translator(self.model, src, trg, validation, device)
        self.progress = Progress()
        self.tracker = ValidationTracker(train.best_metric, train.patience, train.keep_checkpoints)
        self.metrics = MetricsLog(self.folder) if context.is_main else None
        if checkpoint is not None:
            self._restore(checkpoint)
        elif context.is_main:
            save_config(config, self.folder.config)
            self.metrics.append({"kind": "start", "config": config.model_dump(), **environment()})
        self._signal: int | None = None

    def _log(self, message: str) -> None:
        if self.context.is_main:
            console.info(message)

    def _record(self, kind: str, **values: Any) -> None:
        """A line of metrics.jsonl (rank 0): its kind, where the run is, the values."""
        if self.metrics is not None:
            where, lr = self.progress.where(), self.optimization.learning_rate
            self.metrics.append({"kind": kind, **where, "lr": lr, **values})
            console.detail(console.record_line(kind, {**where, "lr": lr, **values}))

    def _model_to_start_from(self, resume: bool) -> tuple[dict[str, Any] | None, str]:
        """The payload of the model that `train.init_from` names (the config now has its
        settings) and the line saying which it changed; None when there is no such model
        or the run resumes from its last.pt."""
        if self.config.train.init_from is None or (resume and self.folder.last.exists()):
            return None, ""
        self.config, payload, said = start_from_model(self.config)
        return payload, said

    def _prepare_folder(self, overwrite: bool, resume: bool) -> dict[str, Any] | None:
        """Refuse to clobber a run; returns last.pt's payload when resuming, once the
        config's changes are known to be ones a resumed run takes."""
        resuming = self.folder.start(overwrite, resume, self.context)
        if self.context.is_main:
            console.start_transcript(self.folder.log)
        if not resuming:
            if resume:
                self._log(f"{self.folder.path}: no last.pt yet, starting from the beginning")
            return None
        payload = load_checkpoint(self.folder.last)
        if self.config.train.init_from:  # the settings its model gave it at the start
            saved = saved_config(payload, str(self.folder.last))
            self.config = with_model_settings(self.config, saved)[0]
        self.changes = config_changes(payload, self.config, self.folder.last)
        return payload

    def _restore(self, payload: dict[str, Any]) -> None:
        """Weights, optimizer, progress, validation history and random streams of last.pt."""
        changes = self.changes
        saved = restore_training(payload, changes, self.bundle, self.optimization, self.folder.last)
        self.progress = progress = Progress.from_record(saved.progress)
        self.tracker.load_state_dict(saved.tracker)
        if changes.keys() & RESTARTS_EPOCH:  # other batches: the epoch's position means nothing
            progress.restart_epoch()
            self._log(f"new batch size: epoch {progress.epoch} restarts from its first batch")
        # A finished run continues when the config now allows more epochs, steps or time.
        progress.finished = bool(self._limits_reached())
        reseed = self.config.seed + 1000 * progress.step
        if not restore_rng(saved.rng, self.context, reseed):
            self._log(f"{self.folder.last}: {RESEEDED}")
        if self.metrics is not None:
            self.metrics.truncate_after(progress.step)
            save_config(self.config, self.folder.config)
        where = f"epoch {progress.epoch}, step {progress.step}"
        self._log(f"resuming {self.folder.path} at {where}{describe_changes(changes)}")

    def run(self) -> Path:
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            parameters = sum(p.numel() for p in self.model.parameters())
            ranks = f", {self.context.world_size} ranks" if self.context.distributed else ""
            self._log(f"model: {parameters:,} parameters; device: {self.device}{ranks}")
            if self.fine_tuning:  # the curve starts at the model's score; best.pt at the model
                self._validate()
            while not self.progress.finished:
                self._train_epoch()
            reached = self._limits_reached()  # while the ranks can still agree on the time
        except WriteFailed as failure:
            raise self._saved_after(failure) from None
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            distributed.stop(self.context)
        early = self.tracker.out_of_patience
        self._log(end_line(self.config.train, self.progress, reached, early, self.folder.path))
        return self.folder.path

    def _saved_after(self, failure: WriteFailed) -> UserError:
        """A file of the run could not be written: keep the training done so far."""
        if failure.path != self.folder.last:
            with contextlib.suppress(WriteFailed):  # then only the first failure is told
                self._save_last()
                return UserError(
                    f"{failure} (saved {self.folder.last} at step {self.progress.step})"
                )
        return failure

    def _on_signal(self, signum: int, frame: object) -> None:
        if self._signal is not None:  # a second Ctrl-C: stop now, last.pt is still whole
            raise KeyboardInterrupt
        self._signal = signum
        name = signal.Signals(signum).name
        self._log(f"{name}: finishing this step, then saving {self.folder.last}")

    def _train_epoch(self) -> None:
        config, progress, context = self.config.train, self.progress, self.context
        generator = torch.Generator().manual_seed(self.config.seed * 1000 + progress.epoch)
        batches = make_batches(self.corpus.lengths, config.batch_size, config.batch_unit, generator)
        # Each optimizer step takes `span` batches of the epoch's order; rank r trains on
        # every world_size-th of them. Under torchrun the incomplete last span is dropped,
        # so that every rank gets an equal share.
        span = config.accumulate_steps * context.world_size
        usable = len(batches) - (len(batches) % span if context.distributed else 0)
        self.trainable.train()
        window = Window(epoch_batches=usable)
        with progress_bar(usable, progress, context.is_main) as bar:
            while progress.batches_done < usable:
                taken = batches[progress.batches_done : progress.batches_done + span]
                self._train_step(taken[context.rank :: context.world_size], len(taken), window)
                bar.update(len(taken))
                bar.set_postfix(progress.postfix(), refresh=False)
                if self._after_step(progress.batches_done >= usable):
                    break
        if progress.batches_done >= usable:
            self._log(progress.end_epoch(config.epochs))
        self._save_last()
        if distributed.any_rank(self._signal is not None, context, self.device):
            raise Interrupted(self._signal or signal.SIGTERM, self.folder.path)

    def _train_step(self, group: list[list[int]], taken: int, window: Window) -> None:
        """One optimizer step on this rank's `group` of the `taken` batches; counts it."""
        progress, train = self.progress, self.config.train
        started = time.perf_counter()
        try:
            loss, tokens, finite = self._step(group)
        except (RuntimeError, MemoryError) as error:
            if not is_out_of_memory(error):
                raise
            self.optimization.zero_grad()
            self._save_last()  # what was trained before the batch that did not fit
            raise out_of_memory(group, train, self.folder.last) from None
        seconds = time.perf_counter() - started
        progress.bad_steps = 0 if finite else progress.bad_steps + 1
        if not finite:  # the update was skipped: the step counts, its loss does not
            loss, tokens = 0.0, 0
            self._log(f"step {progress.step + 1}: non-finite gradients, update skipped")
            if progress.bad_steps >= train.max_bad_steps:
                raise Diverged(diverged(f"{progress.bad_steps} steps in a row", self.folder))
        progress.count(taken, loss, tokens, seconds)
        window.add(loss, tokens, taken, seconds)
        self._report(window)

    def _report(self, window: Window) -> None:
        """The training record every train.log_every steps; with it, or after
        LINE_SECONDS without one, a progress line where no progress bar shows."""
        due = self.progress.step % self.config.train.log_every == 0
        if not window.tokens or not (due or window.unreported >= LINE_SECONDS):
            return
        if self.context.is_main:
            lr = self.optimization.learning_rate
            console.progress_line(progress_line(self.progress, window, self.config.train, lr))
        window.unreported = 0.0
        if due:
            loss, rate = window.loss / window.tokens, window.tokens / window.seconds
            self._record("train", loss=loss, tokens_per_s=rate)
            window.restart()

    def _after_step(self, epoch_done: bool) -> bool:
        """Validate and save when due; True when the epoch loop must stop."""
        config, progress = self.config.train, self.progress
        last_step = (epoch_done and progress.epoch == config.epochs) or self._budget_spent()
        due = progress.step % config.validate_every == 0 if config.validate_every else epoch_done
        if due or last_step:
            self._validate()  # may decide to stop early
        progress.finished = progress.finished or last_step
        if progress.finished or distributed.any_rank(
            self._signal is not None, self.context, self.device
        ):
            return True
        if progress.step % config.save_every == 0 and not epoch_done:
            self._save_last()
        return False

    def _step(self, group: list[list[int]]) -> tuple[float, int, bool]:
        """One optimizer step over this rank's `group` of batches -> the summed loss and
        target tokens over all ranks, and whether the update was made (finite gradients)."""
        context = self.context
        batches = [
            collate(indices, self.corpus.src, self.corpus.trg).to(self.device) for indices in group
        ]
        local_tokens = sum(batch.target_tokens for batch in batches)
        tokens = int(distributed.all_sum([local_tokens], context, self.device)[0])
        # DDP averages gradients over ranks: dividing by tokens / world_size makes the
        # update the mean over every target token of the global batch.
        per_rank = tokens / context.world_size
        total, finite = self.optimization.step(batches, per_rank, context.distributed)
        return distributed.all_sum([total], context, self.device)[0], tokens, finite

    def _limits_reached(self) -> dict[str, float]:
        """The limits of epochs, steps and time that the run has reached. Time is agreed on
        by all ranks (their clocks differ, they must stop together); steps and epochs are
        the same everywhere."""
        train, progress = self.config.train, self.progress
        spent = train.max_minutes is not None and distributed.any_rank(
            progress.elapsed >= 60 * train.max_minutes, self.context, self.device
        )
        return limits_reached(train, progress, spent)

    def _budget_spent(self) -> bool:
        """train.max_steps or train.max_minutes reached."""
        return bool(self._limits_reached().keys() & {"train.max_steps", "train.max_minutes"})

    def _validate(self) -> None:
        """Rank 0 validates; its score reaches every rank, so that the best score, early
        stopping and the plateau schedule stay the same everywhere."""
        config, progress = self.config.train, self.progress
        started = time.perf_counter()
        evaluation = None
        if self.context.is_main:
            console.detail(f"validating at step {progress.step}")
            evaluation = evaluate(self.translator, self.valid_src, self.valid_trg)
        values = evaluation.as_dict() if evaluation else {}
        finite = all(math.isfinite(v) for v in values.values() if isinstance(v, float))
        shared = (values.get(config.best_metric), finite)
        metric, finite = distributed.from_main(shared, self.context)
        if not finite:
            raise Diverged(diverged(f"the validation at step {progress.step}", self.folder))
        verdict = self.tracker.update(float(metric), progress.step)
        self.optimization.after_validation(verdict.score)
        progress.finished = progress.finished or verdict.stop
        if evaluation is None:
            return
        self._record("valid", seconds=time.perf_counter() - started, **values)
        where = f"validation at step {progress.step} (epoch {progress.epoch})"
        self._log(f"{where}: {evaluation.summary()}{self.tracker.describe(verdict)}")
        payload = self.bundle.payload(progress.step, values)
        saved = self.folder.save_validated(
            payload, progress.step, verdict.improved, verdict.keep, verdict.dropped
        )
        plot_run(self.folder.path)
        console.detail(f"saved {', '.join(path.name for path in [*saved, self.folder.curves])}")

    def _save_last(self) -> None:
        if not all(bool(p.isfinite().all()) for p in self.model.parameters()):
            raise Diverged(diverged(f"step {self.progress.step}", self.folder))
        streams = distributed.gather_to_main(get_rng_state(), self.context)
        if self.context.is_main:
            state = TrainingState(asdict(self.progress), self.tracker.state_dict(), streams)
            save_last(self.folder.last, self.bundle, self.optimization, state)
            console.detail(f"saved {self.folder.last.name} at step {self.progress.step}")
