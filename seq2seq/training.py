"""The training loop, built never to lose a run.

- Teacher-forced cross-entropy (optional label smoothing), Adam, gradient clipping,
  gradient accumulation, learning-rate schedules, early stopping.
- `last.pt` every `save_every` steps and at every epoch end, `best.pt` by the validation
  metric, optionally the k best as `ckpt-step{N}.pt`; all saves atomic.
- Exact resume: a training checkpoint holds the weights, optimizer, scheduler, every RNG
  state and the position inside the epoch (each epoch's batch order is a function of
  seed and epoch), so an interrupted run resumes into the same result bit for bit (CPU).
- Ctrl-C / SIGTERM finish the current step, save last.pt and raise `Interrupted`.
- metrics.jsonl and curves.png in the run folder.
"""

from __future__ import annotations

import math
import random
import signal
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from seq2seq.checkpoint import load_checkpoint, save_checkpoint
from seq2seq.config import Config, load_config, save_config
from seq2seq.corpus import read_parallel, split_path
from seq2seq.data import collate, make_batches
from seq2seq.errors import UserError, is_out_of_memory
from seq2seq.evaluation import Evaluation, evaluate
from seq2seq.loss import sequence_loss
from seq2seq.model import Seq2Seq
from seq2seq.plots import CURVES_FILE, plot_run
from seq2seq.runlog import METRICS_FILE, MetricsLog, environment
from seq2seq.tokenizer import Tokenizer
from seq2seq.translator import Translator, make_tokenizers, resolve_device
from seq2seq.vocab import Vocabulary

CONFIG_FILE = "config.yaml"
LAST, BEST = "last.pt", "best.pt"


class Interrupted(Exception):
    """Training stopped by a signal after saving last.pt; exit status 128 + signum."""

    def __init__(self, signum: int, run_dir: Path):
        self.signum = signum
        super().__init__(
            f"stopped by {signal.Signals(signum).name} after saving {run_dir / LAST}; "
            f"resume with: seq2seq train --resume --run-dir {run_dir}"
        )


@dataclass
class Progress:
    """Where the run is; saved in every training checkpoint."""

    epoch: int = 1  # the epoch being trained (1-based)
    batches_done: int = 0  # batches of this epoch already trained
    step: int = 0  # optimizer steps taken
    elapsed: float = 0.0  # training seconds over all sessions of this run
    best: float | None = None  # best validation score so far, signed so higher is better
    bad_validations: int = 0  # validations since the last improvement
    kept: list[list[float]] = field(default_factory=list)  # [[signed score, step], ...]
    epoch_loss: float = 0.0  # summed loss and tokens of this epoch so far
    epoch_tokens: int = 0
    finished: bool = False


@dataclass
class TokenizedSplit:
    src_lines: list[str]
    trg_lines: list[str]
    src_tokens: list[list[str]]
    trg_tokens: list[list[str]]


def load_split(
    config: Config, split: str, src_tokenizer: Tokenizer, trg_tokenizer: Tokenizer
) -> TokenizedSplit:
    data = config.data
    src_lines, trg_lines = read_parallel(
        split_path(data.dir, split, data.src_lang), split_path(data.dir, split, data.trg_lang)
    )
    return TokenizedSplit(
        src_lines, trg_lines, src_tokenizer.tokenize(src_lines), trg_tokenizer.tokenize(trg_lines)
    )


def log(message: str) -> None:
    tqdm.write(message, file=sys.stderr)


def resolve_run(
    config_path: Path | None, overrides: list[str], run_dir: Path | None, resume: bool
) -> tuple[Config, Path]:
    """The config and run folder for `seq2seq train` (with --config and/or --run-dir)."""
    if config_path is None:
        if not (resume and run_dir):
            raise UserError("train needs --config FILE (or --resume --run-dir RUN_DIR)")
        config_path = run_dir / CONFIG_FILE
    config = load_config(config_path, overrides)
    if run_dir is not None:
        config = config.model_copy(
            update={"train": config.train.model_copy(update={"run_dir": str(run_dir)})}
        )
    return config, Path(config.train.run_dir)


def train(config: Config, overwrite: bool = False, resume: bool = False) -> Path:
    """Train (or resume) the run that the config describes; returns the run folder."""
    return Trainer(config, overwrite, resume).run()


class Trainer:
    def __init__(self, config: Config, overwrite: bool, resume: bool):
        self.config = config
        self.run_dir = Path(config.train.run_dir)
        checkpoint = self._prepare_run_dir(overwrite, resume)

        random.seed(config.seed)
        torch.manual_seed(config.seed)
        if config.train.threads:
            torch.set_num_threads(config.train.threads)
        self.device = resolve_device(config.train.device)

        self.src_tokenizer, self.trg_tokenizer = make_tokenizers(config)
        self._load_data()
        self.model = Seq2Seq(config.model, len(self.src_vocab), len(self.trg_vocab)).to(self.device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.train.learning_rate)
        self.scheduler = make_scheduler(self.optimizer, config)
        self.translator = Translator(
            self.model,
            self.src_vocab,
            self.trg_vocab,
            self.src_tokenizer,
            self.trg_tokenizer,
            config.decode.model_copy(update={"beam_size": 1}),  # validation is greedy
            self.device,
        )
        self.progress = Progress()
        self.metrics = MetricsLog(self.run_dir)
        if checkpoint is not None:
            self._restore(checkpoint)
        else:
            save_config(config, self.run_dir / CONFIG_FILE)
            self.metrics.append({"kind": "start", "config": config.model_dump(), **environment()})
        self._signal: int | None = None

    # -- setup ---------------------------------------------------------------------------

    def _prepare_run_dir(self, overwrite: bool, resume: bool) -> dict[str, Any] | None:
        """Refuse to clobber a run; returns last.pt's payload when resuming."""
        run_dir = self.run_dir
        for stale in run_dir.glob(".*.tmp*"):  # left by a kill during a save
            stale.unlink()
        holds_run = (run_dir / CONFIG_FILE).exists() or (run_dir / LAST).exists()
        if resume:
            if (run_dir / LAST).exists():
                return load_checkpoint(run_dir / LAST)
            log(f"{run_dir}: no {LAST} yet, starting from the beginning")
        elif holds_run and not overwrite:
            raise UserError(
                f"{run_dir} already holds a run; pass --resume to continue it, "
                "--overwrite to replace it, or choose another --run-dir"
            )
        if run_dir.exists():
            for name in (LAST, BEST, CONFIG_FILE, METRICS_FILE, CURVES_FILE):
                (run_dir / name).unlink(missing_ok=True)
            for old in run_dir.glob("ckpt-step*.pt"):
                old.unlink()
        run_dir.mkdir(parents=True, exist_ok=True)
        return None

    def _load_data(self) -> None:
        config = self.config
        if not Path(config.data.dir).is_dir():
            raise UserError(f"data.dir: folder '{config.data.dir}' does not exist")
        train_split = load_split(config, config.data.train, self.src_tokenizer, self.trg_tokenizer)
        self.valid = load_split(config, config.data.valid, self.src_tokenizer, self.trg_tokenizer)
        limit = config.data.max_length
        pairs = [
            (s, t)
            for s, t in zip(train_split.src_tokens, train_split.trg_tokens, strict=True)
            if s and t and len(s) <= limit and len(t) <= limit
        ]
        if not pairs:
            raise UserError(f"{config.data.dir}: no usable training pairs in '{config.data.train}'")
        vocab = config.vocab
        self.src_vocab = Vocabulary.build((s for s, _ in pairs), vocab.min_freq, vocab.max_size)
        self.trg_vocab = Vocabulary.build((t for _, t in pairs), vocab.min_freq, vocab.max_size)
        log(
            f"training pairs: {len(pairs)} ({len(train_split.src_tokens) - len(pairs)} skipped: "
            f"empty or longer than {limit} tokens); vocabulary: {len(self.src_vocab)} "
            f"{config.data.src_lang}, {len(self.trg_vocab)} {config.data.trg_lang}"
        )
        self.src_ids = [torch.tensor(self.src_vocab.encode(s)) for s, _ in pairs]
        self.trg_ids = [torch.tensor(self.trg_vocab.encode(t)) for _, t in pairs]
        self.lengths = [
            max(len(s), len(t)) for s, t in zip(self.src_ids, self.trg_ids, strict=True)
        ]

    def _restore(self, payload: dict[str, Any]) -> None:
        last = self.run_dir / LAST
        for side, vocab in (("src", self.src_vocab), ("trg", self.trg_vocab)):
            if payload["vocab"][side] != vocab.itos:
                raise UserError(
                    f"{last}: its {side} vocabulary ({len(payload['vocab'][side])} tokens) does "
                    f"not match the one this config and data give ({len(vocab)}); resume with "
                    f"the run's own {CONFIG_FILE}"
                )
        state = payload.get("training")
        if not state:
            raise UserError(f"{last}: holds no training state (an averaged or exported model?)")
        try:
            self.model.load_state_dict(payload["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
        except (RuntimeError, ValueError, KeyError) as error:
            raise UserError(f"{last}: does not fit this config's model ({error})") from None
        self.progress = Progress(**state["progress"])
        # A finished run continues when the config now allows more epochs or steps.
        train = self.config.train
        self.progress.finished = self.progress.epoch > train.epochs or bool(
            train.max_steps and self.progress.step >= train.max_steps
        )
        set_rng_state(state["rng"])
        self.metrics.truncate_after(self.progress.step)
        save_config(self.config, self.run_dir / CONFIG_FILE)
        log(f"resuming {self.run_dir} at epoch {self.progress.epoch}, step {self.progress.step}")

    # -- the loop ------------------------------------------------------------------------

    def run(self) -> Path:
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            parameters = sum(p.numel() for p in self.model.parameters())
            log(f"model: {parameters:,} parameters; device: {self.device}")
            while not self.progress.finished:
                self._train_epoch()
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        log(f"finished after {self.progress.step} steps; best model: {self.run_dir / BEST}")
        return self.run_dir

    def _on_signal(self, signum: int, frame: object) -> None:
        if self._signal is not None:  # a second Ctrl-C: stop now, last.pt is still whole
            raise KeyboardInterrupt
        self._signal = signum
        log(f"{signal.Signals(signum).name}: finishing this step, then saving {LAST}")

    def _train_epoch(self) -> None:
        config, progress = self.config.train, self.progress
        generator = torch.Generator().manual_seed(self.config.seed * 1000 + progress.epoch)
        batches = make_batches(self.lengths, config.batch_size, config.batch_unit, generator)
        self.model.train()
        window_seconds, window_tokens, window_loss = 0.0, 0, 0.0  # since the last train record
        bar = tqdm(
            total=len(batches),
            initial=progress.batches_done,
            desc=f"epoch {progress.epoch}",
            unit="batch",
            file=sys.stderr,
            dynamic_ncols=True,
            mininterval=0.1 if sys.stderr.isatty() else 30.0,  # keep logs short
        )
        while progress.batches_done < len(batches):
            group = batches[progress.batches_done : progress.batches_done + config.accumulate_steps]
            started = time.perf_counter()
            try:
                loss, tokens = self._step(group)
            except (RuntimeError, MemoryError) as error:
                if not is_out_of_memory(error):
                    raise
                self._out_of_memory(group)
            seconds = time.perf_counter() - started
            progress.elapsed += seconds
            window_seconds += seconds
            progress.batches_done += len(group)
            progress.step += 1
            progress.epoch_loss += loss
            progress.epoch_tokens += tokens
            window_loss += loss
            window_tokens += tokens
            bar.update(len(group))
            mean = progress.epoch_loss / progress.epoch_tokens
            bar.set_postfix(loss=f"{mean:.3f}", ppl=f"{math.exp(min(mean, 50)):.1f}", refresh=False)
            if progress.step % config.log_every == 0:
                self._log_train(window_loss / window_tokens, window_tokens / window_seconds)
                window_seconds, window_tokens, window_loss = 0.0, 0, 0.0
            epoch_done = progress.batches_done >= len(batches)
            last_step = bool(config.max_steps and progress.step >= config.max_steps) or (
                epoch_done and progress.epoch == config.epochs
            )
            due = (
                progress.step % config.validate_every == 0 if config.validate_every else epoch_done
            )
            if due or last_step:
                self._validate()  # may decide to stop early
            progress.finished = progress.finished or last_step
            if progress.finished or self._signal is not None:
                break
            if progress.step % config.save_every == 0 and not epoch_done:
                self._save_last()
        bar.close()
        if progress.batches_done >= len(batches):
            self._end_epoch()
        self._save_last()
        if self._signal is not None:
            raise Interrupted(self._signal, self.run_dir)

    def _out_of_memory(self, group: list[list[int]]) -> None:
        """Save what was trained before the batch that did not fit, then explain."""
        self.optimizer.zero_grad(set_to_none=True)
        self._save_last()
        size = self.config.train.batch_size
        raise UserError(
            f"out of memory on a batch of {sum(map(len, group))} sentences; lower "
            f"train.batch_size (now {size}), e.g. resume with --resume --set "
            f"train.batch_size={max(1, size // 2)} (saved {self.run_dir / LAST})"
        )

    def _step(self, group: list[list[int]]) -> tuple[float, int]:
        """One optimizer step over `group` batches; returns (summed loss, target tokens)."""
        config = self.config.train
        batches = [
            collate(indices, self.src_ids, self.trg_ids).to(self.device) for indices in group
        ]
        tokens = sum(batch.target_tokens for batch in batches)
        total = 0.0
        self.optimizer.zero_grad(set_to_none=True)
        for batch in batches:
            logits = self.model(
                batch.src, batch.src_lengths, batch.trg[:, :-1], config.teacher_forcing
            )
            loss = sequence_loss(logits, batch.trg, config.label_smoothing)
            (loss / tokens).backward()  # mean over every target token of the group
            total += loss.item()
        if config.clip_norm:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), config.clip_norm)
        self.optimizer.step()
        if config.scheduler == "inverse_sqrt":
            self.scheduler.step()
        return total, tokens

    def _end_epoch(self) -> None:
        progress = self.progress
        log(
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

    def _validate(self) -> Evaluation:
        config, progress = self.config.train, self.progress
        started = time.perf_counter()
        evaluation = evaluate(self.translator, self.valid.src_lines, self.valid.trg_lines)
        self.model.train()
        metric = evaluation.as_dict()[config.best_metric]
        lower_is_better = config.best_metric.endswith("loss")
        signed = -float(metric) if lower_is_better else float(metric)
        improved = progress.best is None or signed > progress.best
        if improved:
            progress.best, progress.bad_validations = signed, 0
        else:
            progress.bad_validations += 1
        if config.scheduler == "plateau":
            self.scheduler.step(signed)
        record = {
            "kind": "valid",
            "step": progress.step,
            "epoch": progress.epoch,
            "lr": self.optimizer.param_groups[0]["lr"],
            "elapsed": progress.elapsed,
            "seconds": time.perf_counter() - started,
            **evaluation.as_dict(),
        }
        self.metrics.append(record)
        scores = evaluation.scores
        log(
            f"validation at step {progress.step} (epoch {progress.epoch}): loss "
            f"{evaluation.loss:.3f} ppl {evaluation.perplexity:.2f} (free-running "
            f"{evaluation.free_running_perplexity:.2f}) BLEU {scores.bleu:.2f} chrF "
            f"{scores.chrf:.2f} tokenized BLEU {scores.tokenized_bleu:.2f}"
            + (" (new best)" if improved else f" (no improvement for {progress.bad_validations})")
        )
        if config.patience and progress.bad_validations >= config.patience:
            log(
                f"early stopping: {config.best_metric} did not improve "
                f"for {config.patience} validations"
            )
            progress.finished = True
        payload = self._payload(evaluation)
        if improved:
            save_checkpoint(payload, self.run_dir / BEST)
        if config.keep_checkpoints:
            self._keep(payload, signed)
        plot_run(self.run_dir)
        return evaluation

    def _keep(self, payload: dict[str, Any], signed: float) -> None:
        """Keep the k best validated checkpoints as ckpt-step{N}.pt."""
        progress, k = self.progress, self.config.train.keep_checkpoints
        ranked = sorted([*progress.kept, [signed, progress.step]], key=lambda e: (-e[0], -e[1]))
        if [signed, progress.step] in ranked[:k]:
            save_checkpoint(payload, self.run_dir / f"ckpt-step{progress.step}.pt")
        for _, step in ranked[k:]:
            (self.run_dir / f"ckpt-step{int(step)}.pt").unlink(missing_ok=True)
        progress.kept = ranked[:k]

    def _log_train(self, loss: float, tokens_per_second: float) -> None:
        progress = self.progress
        self.metrics.append(
            {
                "kind": "train",
                "step": progress.step,
                "epoch": progress.epoch,
                "loss": loss,
                "lr": self.optimizer.param_groups[0]["lr"],
                "tokens_per_s": tokens_per_second,
                "elapsed": progress.elapsed,
            }
        )

    def _save_last(self) -> None:
        save_checkpoint(self._payload(None, training=True), self.run_dir / LAST)

    def _payload(self, evaluation: Evaluation | None, training: bool = False) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "config": self.config.model_dump(),
            "vocab": {"src": self.src_vocab.itos, "trg": self.trg_vocab.itos},
            "tokenizer": {"src": self.src_tokenizer.name, "trg": self.trg_tokenizer.name},
            "model": self.model.state_dict(),
            "step": self.progress.step,
            "validation": evaluation.as_dict() if evaluation else None,
        }
        if training:
            payload["training"] = {
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "progress": asdict(self.progress),
                "rng": get_rng_state(),
            }
        return payload


def make_scheduler(optimizer: torch.optim.Optimizer, config: Config) -> Any:
    """The learning-rate schedule; `none` is a constant LambdaLR so every run saves one."""
    train = config.train
    if train.scheduler == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer,
            mode="max",  # validation scores are signed so that higher is better
            factor=train.plateau_factor,
            patience=train.plateau_patience,
            min_lr=train.min_learning_rate,
        )
    if train.scheduler == "inverse_sqrt":
        warmup = max(train.warmup_steps, 1)
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: min((step + 1) / warmup, math.sqrt(warmup / (step + 1)))
        )
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)


def get_rng_state() -> dict[str, Any]:
    """Every RNG the run uses, as plain tensors and lists (weights_only-loadable)."""
    version, internal, gauss = random.getstate()
    state: dict[str, Any] = {
        "python": [version, list(internal), gauss],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    try:
        import numpy

        kind, keys, position, has_gauss, cached = numpy.random.get_state()
        state["numpy"] = [kind, torch.from_numpy(keys.copy()), position, has_gauss, cached]
    except ImportError:
        pass
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if "numpy" in state:
        import numpy

        kind, keys, position, has_gauss, cached = state["numpy"]
        numpy.random.set_state((kind, keys.numpy(), position, has_gauss, cached))
