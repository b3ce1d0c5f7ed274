"""Resuming a run: what last.pt must hold, which config changes a resumed run takes, and
the random streams that make a resumed run bit-exact."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import torch

from seq2seq import distributed
from seq2seq.checkpoint import (
    Bundle,
    saved_config,
    saved_training,
    saved_vocabularies,
    saved_weights,
)
from seq2seq.config import Config
from seq2seq.errors import UserError
from seq2seq.optimization import Optimization

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


def check_resumable(payload: dict[str, Any], bundle: Bundle, last: Path) -> None:
    """last.pt must hold training state, and the vocabularies the data give now."""
    sides = (bundle.src, bundle.trg)
    for side, text, saved in zip(("src", "trg"), sides, saved_vocabularies(payload), strict=True):
        if saved.itos != text.vocab.itos:
            raise UserError(
                f"{last}: its {side} vocabulary ({len(saved)} tokens) does not match the one "
                f"the data give now ({len(text.vocab)}): the training data changed"
            )
    if not saved_training(payload):
        raise UserError(f"{last}: holds no training state (an averaged or exported model?)")


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


def restore_training(
    payload: dict[str, Any],
    changes: dict[str, tuple],
    bundle: Bundle,
    optimization: Optimization,
    last: Path,
) -> dict[str, Any]:
    """Weights and optimizer state from last.pt, with the config's `changes` (from
    `config_changes`) applied -> the training state."""
    check_resumable(payload, bundle, last)
    state = saved_training(payload)
    try:
        bundle.model.load_state_dict(saved_weights(payload))
        optimization.load_state_dict(state)
    except (RuntimeError, ValueError, KeyError) as error:
        raise UserError(f"{last}: does not fit this config's model ({error})") from None
    if "train.learning_rate" in changes:
        optimization.change_learning_rate(*changes["train.learning_rate"])
    return state


def describe_changes(changes: dict[str, tuple]) -> str:
    """'; changed: key old -> new, ...' for the resume line, or nothing."""
    changed = ", ".join(f"{key} {old} -> {new}" for key, (old, new) in changes.items())
    return f"; changed: {changed}" if changed else ""
