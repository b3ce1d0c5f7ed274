"""The training loop, built never to lose a run.

- Teacher-forced cross-entropy (optional label smoothing), Adam, gradient clipping,
  gradient accumulation, learning-rate schedules, early stopping (optimization.py,
  validation.py).
- `last.pt` every `save_every` steps and at every epoch end, `best.pt` by the validation
  metric, optionally the k best as `ckpt-step{N}.pt`; all saves atomic (run_folder.py).
- Exact resume: a training checkpoint holds the weights, optimizer, scheduler, every RNG
  state and the position inside the epoch (each epoch's batch order is a function of
  seed and epoch), so an interrupted run resumes into the same result bit for bit (CPU).
- Ctrl-C / SIGTERM finish the current step, save last.pt and raise `Interrupted`.
- metrics.jsonl, curves.png and train.log (the messages shown) in the run folder.
- Under torchrun, DistributedDataParallel: each rank trains an equal share of every step's
  batches; rank 0 alone validates and writes (distributed.py).
"""

from __future__ import annotations

import math
import os
import random
import signal
import sys
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from seq2seq import console, distributed
from seq2seq.checkpoint import (
    Bundle,
    load_checkpoint,
    save_checkpoint,
    saved_config,
    saved_tokenizers,
    saved_training,
    saved_vocabularies,
    saved_weights,
)
from seq2seq.config import Config, load_config, save_config
from seq2seq.corpus import read_split
from seq2seq.data import collate, make_batches
from seq2seq.download import download_multi30k
from seq2seq.errors import UserError, is_out_of_memory
from seq2seq.evaluation import evaluate
from seq2seq.model import Seq2Seq
from seq2seq.optimization import Optimization
from seq2seq.plots import plot_run
from seq2seq.run_folder import RunFolder
from seq2seq.runlog import MetricsLog, environment
from seq2seq.text import ParallelIds, TextSide, training_sides
from seq2seq.translator import Translator, resolve_device
from seq2seq.validation import ValidationTracker


class Interrupted(Exception):
    """Training stopped by a signal after saving last.pt; exit status 128 + signum."""

    def __init__(self, signum: int, run_dir: Path):
        self.signum = signum
        super().__init__(
            f"stopped by {signal.Signals(signum).name} after saving {RunFolder(run_dir).last}; "
            f"resume with: seq2seq train --resume --run-dir {run_dir}"
        )


@dataclass
class Progress:
    """Where the run is; saved in every training checkpoint."""

    epoch: int = 1  # the epoch being trained (1-based)
    batches_done: int = 0  # position in this epoch's batch order (all ranks together)
    step: int = 0  # optimizer steps taken
    elapsed: float = 0.0  # training seconds over all sessions of this run
    epoch_loss: float = 0.0  # summed loss and tokens of this epoch so far
    epoch_tokens: int = 0
    finished: bool = False

    def count(self, batches: int, loss: float, tokens: int, seconds: float) -> None:
        """One optimizer step over `batches` batches of the epoch's order."""
        self.elapsed += seconds
        self.batches_done += batches
        self.step += 1
        self.epoch_loss += loss
        self.epoch_tokens += tokens


@dataclass
class Window:
    """Loss, tokens and seconds since the last training record."""

    loss: float = 0.0
    tokens: int = 0
    seconds: float = 0.0


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
    config_path: Path | None, overrides: list[str], run_dir: Path | None, resume: bool
) -> Config:
    """The config and run folder for `seq2seq train` (with --config and/or --run-dir)."""
    if config_path is None:
        if not (resume and run_dir):
            raise UserError("train needs --config FILE (or --resume --run-dir RUN_DIR)")
        config_path = RunFolder(run_dir).config
    config = load_config(config_path, overrides)
    if run_dir is not None:
        config = config.model_copy(
            update={"train": config.train.model_copy(update={"run_dir": str(run_dir)})}
        )
    return config


def read_training_text(
    config: Config, saved_tokenizers: dict[str, Any] | None, context: distributed.Context
) -> tuple[TextSide, TextSide, ParallelIds, list[str], list[str]]:
    """Fetch Multi30k if the config names it (rank 0; the others wait), read the training
    and validation splits, make the text sides from the training split only (or rebuild
    a resumed run's tokenizers) -> (src, trg, training ids, validation lines src, trg)."""
    data = config.data
    if data.dataset == "multi30k":
        if context.is_main:
            download_multi30k(data.dir, (data.src_lang, data.trg_lang))
        distributed.barrier(context)
    if not Path(data.dir).is_dir():
        raise UserError(f"data.dir: folder '{data.dir}' does not exist")
    train_src, train_trg = read_split(data, data.train)
    valid_src, valid_trg = read_split(data, data.valid)
    src, trg, corpus = training_sides(config, train_src, train_trg, saved_tokenizers)
    if not corpus.src:
        raise UserError(f"{data.dir}: no usable training pairs in '{data.train}'")
    return src, trg, corpus, valid_src, valid_trg


def check_resumable(payload: dict[str, Any], config: Config, bundle: Bundle, last: Path) -> None:
    """last.pt must hold training state and the vocabularies this config and data give."""
    saved_vocab = saved_config(payload, str(last)).vocab
    hint = f"resume with the run's own {RunFolder(last.parent).config.name}"
    if saved_vocab != config.vocab:
        raise UserError(
            f"{last}: its vocabulary settings ({saved_vocab}) differ from this config's "
            f"({config.vocab}); {hint}"
        )
    sides = (bundle.src, bundle.trg)
    for side, text, saved in zip(("src", "trg"), sides, saved_vocabularies(payload), strict=True):
        if saved.itos != text.vocab.itos:
            raise UserError(
                f"{last}: its {side} vocabulary ({len(saved)} tokens) does not match the one "
                f"this config and data give ({len(text.vocab)}); {hint}"
            )
    if not saved_training(payload):
        raise UserError(f"{last}: holds no training state (an averaged or exported model?)")


def train(config: Config, overwrite: bool = False, resume: bool = False) -> Path:
    """Train (or resume) the run that the config describes; returns the run folder."""
    try:
        return Trainer(config, overwrite, resume).run()
    finally:
        console.stop_transcript()


class Trainer:
    def __init__(self, config: Config, overwrite: bool, resume: bool):
        self.config, train = config, config.train
        self.folder = RunFolder(train.run_dir)
        device = resolve_device(train.device)
        self.context = context = distributed.start(device.type, train.distributed_timeout)
        if device.type == "cuda" and context.distributed:
            device = torch.device("cuda", context.local_rank)
        self.device = device
        if train.precision == "fp16" and device.type != "cuda":
            raise UserError(f"train.precision: fp16 needs a CUDA device, not {device.type}")
        checkpoint = self._prepare_folder(overwrite, resume)
        # Rank 0 draws what a single process draws; DDP copies its initial weights to all.
        random.seed(config.seed + context.rank)
        torch.manual_seed(config.seed + context.rank)
        set_threads(train.threads, context, device)
        saved = saved_tokenizers(checkpoint) if checkpoint else None
        text = read_training_text(config, saved, context)
        src, trg, self.corpus, self.valid_src, self.valid_trg = text
        self._log(
            f"training pairs: {len(self.corpus.src)} ({self.corpus.skipped} skipped: empty or "
            f"longer than {config.data.max_length} tokens); {config.vocab.type} vocabulary: "
            f"{len(src.vocab)} {config.data.src_lang}, {len(trg.vocab)} {config.data.trg_lang}"
        )
        self.model = Seq2Seq(config.model, len(src.vocab), len(trg.vocab)).to(device)
        self.bundle = Bundle(config, self.model, src, trg)
        # What trains: the model itself, or its DDP wrapper that averages gradients.
        self.trainable: torch.nn.Module = self.model
        if context.distributed:
            device_ids = [device.index] if device.type == "cuda" else None
            self.trainable = DistributedDataParallel(self.model, device_ids=device_ids)
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
            progress = self.progress
            where = {"step": progress.step, "epoch": progress.epoch, "elapsed": progress.elapsed}
            lr = self.optimization.learning_rate
            self.metrics.append({"kind": kind, **where, "lr": lr, **values})
            console.detail(console.record_line(kind, {**where, "lr": lr, **values}))

    # -- setup ---------------------------------------------------------------------------

    def _prepare_folder(self, overwrite: bool, resume: bool) -> dict[str, Any] | None:
        """Refuse to clobber a run; returns last.pt's payload when resuming. Every rank
        decides from what is on disk; then rank 0 alone changes the folder."""
        resuming = self.folder.check(overwrite, resume)
        if resume and not resuming:
            self._log(
                f"{self.folder.path}: no {self.folder.last.name} yet, starting from the beginning"
            )
        payload = load_checkpoint(self.folder.last) if resuming else None
        distributed.barrier(self.context)
        if self.context.is_main:
            self.folder.prepare(resuming)
            console.start_transcript(self.folder.path / "train.log", append=resuming)
        distributed.barrier(self.context)
        return payload

    def _restore(self, payload: dict[str, Any]) -> None:
        last = self.folder.last
        check_resumable(payload, self.config, self.bundle, last)
        state = saved_training(payload)
        assert state is not None  # check_resumable
        try:
            self.model.load_state_dict(saved_weights(payload))
            self.optimization.load_state_dict(state)
        except (RuntimeError, ValueError, KeyError) as error:
            raise UserError(f"{last}: does not fit this config's model ({error})") from None
        self._restore_progress(state)
        if self.metrics is not None:
            self.metrics.truncate_after(self.progress.step)
            save_config(self.config, self.folder.config)
        self._log(
            f"resuming {self.folder.path} at epoch {self.progress.epoch}, step {self.progress.step}"
        )

    def _restore_progress(self, state: dict[str, Any]) -> None:
        """Progress, validation history and random streams of a training checkpoint."""
        record = state["progress"]  # Progress's fields and the tracker's state
        self.progress = Progress(**{f.name: record[f.name] for f in fields(Progress)})
        self.tracker.load_state_dict(record)
        # A finished run continues when the config now allows more epochs, steps or time.
        self.progress.finished = (
            self.progress.epoch > self.config.train.epochs or self._budget_spent()
        )
        reseed = self.config.seed + 1000 * self.progress.step
        if not restore_rng(state["rng"], self.context, reseed):
            self._log(
                f"{self.folder.last} was saved by {len(state['rng'])} ranks, this run has "
                f"{self.context.world_size}: random streams restart from the seed (the data "
                "order and position are kept, the resumed run is not bit-exact)"
            )

    # -- the loop ------------------------------------------------------------------------

    def run(self) -> Path:
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            parameters = sum(p.numel() for p in self.model.parameters())
            ranks = f", {self.context.world_size} ranks" if self.context.distributed else ""
            self._log(f"model: {parameters:,} parameters; device: {self.device}{ranks}")
            while not self.progress.finished:
                self._train_epoch()
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            distributed.stop()
        self._log(f"finished after {self.progress.step} steps; best model: {self.folder.best}")
        return self.folder.path

    def _on_signal(self, signum: int, frame: object) -> None:
        if self._signal is not None:  # a second Ctrl-C: stop now, last.pt is still whole
            raise KeyboardInterrupt
        self._signal = signum
        self._log(
            f"{signal.Signals(signum).name}: finishing this step, then saving {self.folder.last}"
        )

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
        window = Window()
        bar = progress_bar(usable, progress, context.is_main)
        while progress.batches_done < usable:
            taken = batches[progress.batches_done : progress.batches_done + span]
            self._train_step(taken[context.rank :: context.world_size], len(taken), window)
            bar.update(len(taken))
            mean = progress.epoch_loss / progress.epoch_tokens
            bar.set_postfix(loss=f"{mean:.3f}", ppl=f"{math.exp(min(mean, 50)):.1f}", refresh=False)
            if self._after_step(progress.batches_done >= usable):
                break
        bar.close()
        if progress.batches_done >= usable:
            self._end_epoch()
        self._save_last()
        if distributed.any_rank(self._signal is not None, context, self.device):
            raise Interrupted(self._signal or signal.SIGTERM, self.folder.path)

    def _train_step(self, group: list[list[int]], taken: int, window: Window) -> None:
        """One optimizer step on this rank's `group` of the `taken` batches; counts it."""
        progress = self.progress
        started = time.perf_counter()
        try:
            loss, tokens = self._step(group)
        except (RuntimeError, MemoryError) as error:
            if not is_out_of_memory(error):
                raise
            self._out_of_memory(group)
        seconds = time.perf_counter() - started
        progress.count(taken, loss, tokens, seconds)
        window.loss, window.tokens = window.loss + loss, window.tokens + tokens
        window.seconds += seconds
        if progress.step % self.config.train.log_every == 0:
            rate = window.tokens / window.seconds
            self._record("train", loss=window.loss / window.tokens, tokens_per_s=rate)
            window.loss, window.tokens, window.seconds = 0.0, 0, 0.0

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

    def _out_of_memory(self, group: list[list[int]]) -> None:
        """Save what was trained before the batch that did not fit, then explain."""
        self.optimization.zero_grad()
        self._save_last()
        size = self.config.train.batch_size
        raise UserError(
            f"out of memory on a batch of {sum(map(len, group))} sentences; lower "
            f"train.batch_size (now {size}), e.g. resume with --resume --set "
            f"train.batch_size={max(1, size // 2)} (saved {self.folder.last})"
        )

    def _step(self, group: list[list[int]]) -> tuple[float, int]:
        """One optimizer step over this rank's `group` of batches; returns the summed loss
        and target tokens over all ranks."""
        context = self.context
        batches = [
            collate(indices, self.corpus.src, self.corpus.trg).to(self.device) for indices in group
        ]
        local_tokens = sum(batch.target_tokens for batch in batches)
        tokens = int(distributed.all_sum([local_tokens], context, self.device)[0])
        # DDP averages gradients over ranks: dividing by tokens / world_size makes the
        # update the mean over every target token of the global batch.
        total = self.optimization.step(batches, tokens / context.world_size, context.distributed)
        return distributed.all_sum([total], context, self.device)[0], tokens

    def _budget_spent(self) -> bool:
        """train.max_steps or train.max_minutes reached. Time is agreed on by all ranks
        (their clocks differ, they must stop together); steps are the same everywhere."""
        train, progress = self.config.train, self.progress
        if train.max_steps and progress.step >= train.max_steps:
            return True
        if train.max_minutes is None:
            return False
        spent = progress.elapsed >= 60 * train.max_minutes
        return distributed.any_rank(spent, self.context, self.device)

    def _end_epoch(self) -> None:
        progress = self.progress
        self._log(
            f"epoch {progress.epoch} done: train loss "
            f"{progress.epoch_loss / max(progress.epoch_tokens, 1):.3f}, "
            f"{progress.step} steps, {progress.elapsed:.0f} s of training so far"
        )
        progress.epoch += 1
        progress.batches_done = 0
        progress.epoch_loss, progress.epoch_tokens = 0.0, 0
        if progress.epoch > self.config.train.epochs:
            progress.finished = True

    # -- validation and checkpoints ------------------------------------------------------

    def _validate(self) -> None:
        """Rank 0 validates; its score reaches every rank, so that the best score, early
        stopping and the plateau schedule stay the same everywhere."""
        config, progress = self.config.train, self.progress
        started = time.perf_counter()
        evaluation = None
        if self.context.is_main:
            evaluation = evaluate(self.translator, self.valid_src, self.valid_trg)
        metric = distributed.from_main(
            evaluation.as_dict()[config.best_metric] if evaluation else None, self.context
        )
        verdict = self.tracker.update(float(metric), progress.step)
        self.optimization.after_validation(verdict.score)
        progress.finished = progress.finished or verdict.stop
        if evaluation is None:
            return
        seconds = time.perf_counter() - started
        self._record("valid", seconds=seconds, **evaluation.as_dict())
        outcome = " (new best)" if verdict.improved else (
            f" (no improvement for {self.tracker.bad_validations})"
        )  # fmt: skip
        self._log(
            f"validation at step {progress.step} (epoch {progress.epoch}): "
            f"{evaluation.summary()}{outcome}"
        )
        if verdict.stop:
            self._log(
                f"early stopping: {config.best_metric} did not improve "
                f"for {config.patience} validations"
            )
        payload = self.bundle.payload(progress.step, evaluation.as_dict())
        self.folder.save_validated(
            payload, progress.step, verdict.improved, verdict.keep, verdict.dropped
        )
        plot_run(self.folder.path)

    def _save_last(self) -> None:
        streams = distributed.gather_to_main(get_rng_state(), self.context)
        if self.context.is_main:
            training = {
                **self.optimization.state_dict(),
                "progress": {**asdict(self.progress), **self.tracker.state_dict()},
                "rng": streams,
            }
            payload = self.bundle.payload(self.progress.step, training=training)
            save_checkpoint(payload, self.folder.last)


def restore_rng(streams: list[dict[str, Any]], context: distributed.Context, seed: int) -> bool:
    """Each rank takes its own saved streams; with another rank count, every rank reseeds
    (seed + rank) instead -> whether the saved streams were restored."""
    if len(streams) == context.world_size:
        set_rng_state(streams[context.rank])
        return True
    torch.manual_seed(seed + context.rank)
    return False


def get_rng_state() -> dict[str, Any]:
    """Every RNG the run uses, as plain numbers and lists: weights_only-loadable, and
    gatherable from every rank."""
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
