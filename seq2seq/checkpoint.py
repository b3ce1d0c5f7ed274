"""Self-contained checkpoints: weights, resolved config, vocabularies, tokenizer names,
training state when training, and a format version. This is the only module that knows
the payload's keys; the rest of the package sees a `Bundle` (config, model, both sides).

A checkpoint holds only tensors, numbers, strings, lists and dicts, and is always
opened with `torch.load(weights_only=True)`: opening one can never run code.
Saves are atomic: temporary file in the same folder, flush, fsync, rename.

Payload: format, format_version, config (Config.model_dump()), vocab {src, trg: itos},
tokenizer (tokenizer_state), model (state_dict), step, validation, and in last.pt
training {optimizer, scheduler, scaler, progress, rng}; an average adds averaged_from.
"""

from __future__ import annotations

import pickle
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from seq2seq.config import Config, config_from_dict
from seq2seq.errors import UserError
from seq2seq.files import write_atomic
from seq2seq.model import Seq2Seq
from seq2seq.text import TextSide
from seq2seq.tokenizer import make_tokenizers, tokenizer_state
from seq2seq.vocab import Vocabulary

FORMAT = "seq2seq-checkpoint"
FORMAT_VERSION = 1


def save_checkpoint(payload: dict[str, Any], path: str | Path) -> None:
    """Write atomically and durably: readers see the old file or the new one."""
    payload = {"format": FORMAT, "format_version": FORMAT_VERSION, **payload}
    write_atomic(path, lambda handle: torch.save(payload, handle), durable=True)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Open a checkpoint without running code; anything that is not ours is a UserError."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: checkpoint not found")
    try:
        is_zip = zipfile.is_zipfile(path)  # torch.save writes zip archives
    except zipfile.BadZipFile as e:  # a damaged end record, e.g. "span multiple disks"
        raise UserError(f"{path}: damaged seq2seq checkpoint ({e})") from None
    if not is_zip:
        raise UserError(f"{path}: not a seq2seq checkpoint (truncated, or another kind of file)")
    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 5": one line on stderr
            warnings.simplefilter("ignore")
            payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        raise UserError(
            f"{path}: refused: it holds pickled Python objects, which seq2seq checkpoints never "
            "do (it was opened weights-only, so nothing in it ran)"
        ) from None
    except Exception as e:  # foreign bytes fail in many ways: KeyError, IndexError, struct.error...
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"{path}: damaged seq2seq checkpoint ({reason[:120]})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise UserError(f"{path}: not a seq2seq checkpoint")
    version = payload.get("format_version")
    if isinstance(version, int) and version < 1:
        raise UserError(f"{path}: damaged seq2seq checkpoint (format version {version})")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise UserError(
            f"{path}: checkpoint format {version} is newer than this seq2seq reads "
            f"({FORMAT_VERSION}); upgrade seq2seq"
        )
    return payload


def average_checkpoints(paths: list[Path]) -> dict[str, Any]:
    """One self-contained checkpoint whose weights are the mean of the given ones.

    Config, vocabularies and tokenizers come from the first checkpoint; all must share
    them (weights of different vocabularies cannot be averaged). No training state.
    One checkpoint is open at a time, added into a float64 running sum: the peak memory
    is the sum (2x the weights) and one checkpoint, whatever the number averaged."""
    if not paths:
        raise UserError("average: no checkpoints given")
    first = load_checkpoint(paths[0])
    kept = {key: first[key] for key in ("config", "vocab", "tokenizer")}
    dtypes = {name: tensor.dtype for name, tensor in first["model"].items()}
    total = {name: tensor.to(torch.float64, copy=True) for name, tensor in first["model"].items()}
    del first
    for path in paths[1:]:
        payload = load_checkpoint(path)
        if payload["vocab"] != kept["vocab"] or payload["model"].keys() != total.keys():
            raise UserError(f"{path}: a different model or vocabulary than {paths[0]}")
        for name, tensor in payload["model"].items():
            if tensor.shape != total[name].shape:
                raise UserError(
                    f"{path}: {name} has shape {tuple(tensor.shape)}, "
                    f"not {tuple(total[name].shape)}"
                )
            total[name] += tensor  # promoted to float64 as it is added: no copy
        del payload  # before the next one is read
    # Popped one by one: each sum is freed as its mean is made.
    model = {name: total.pop(name).div_(len(paths)).to(dtypes[name]) for name in list(total)}
    return {**kept, "model": model, "averaged_from": [str(p) for p in paths]}


@dataclass
class Bundle:
    """A model with everything needed to use it: its config and both text sides."""

    config: Config
    model: Seq2Seq
    src: TextSide
    trg: TextSide

    def payload(
        self,
        step: int | None = None,
        validation: dict[str, Any] | None = None,
        training: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The checkpoint payload; `training` (optimizer, progress...) only in last.pt."""
        payload = {
            "config": self.config.model_dump(),
            "vocab": {"src": self.src.vocab.itos, "trg": self.trg.vocab.itos},
            "tokenizer": tokenizer_state(self.src.tokenizer, self.trg.tokenizer),
            "model": self.model.state_dict(),
            "step": step,
            "validation": validation,
        }
        return {**payload, "training": training} if training is not None else payload


def load_bundle(path: str | Path, device: torch.device | str = "cpu") -> Bundle:
    """A checkpoint's model (in eval mode, on `device`), config and text sides."""
    payload = load_checkpoint(path)
    try:
        config = config_from_dict(payload["config"], source=f"{path} (config)")
        src_vocab, trg_vocab = saved_vocabularies(payload)
        model = Seq2Seq(config.model, len(src_vocab), len(trg_vocab))
        model.load_state_dict(payload["model"])
        src_tokenizer, trg_tokenizer = make_tokenizers(config, saved_tokenizers(payload))
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        raise UserError(f"{path}: damaged seq2seq checkpoint ({error})") from None
    model.to(device).eval()
    return Bundle(
        config, model, TextSide(src_tokenizer, src_vocab), TextSide(trg_tokenizer, trg_vocab)
    )


def saved_config(payload: dict[str, Any], source: str) -> Config:
    return config_from_dict(payload["config"], source=source)


def saved_vocabularies(payload: dict[str, Any]) -> tuple[Vocabulary, Vocabulary]:
    return Vocabulary(payload["vocab"]["src"]), Vocabulary(payload["vocab"]["trg"])


def saved_tokenizers(payload: dict[str, Any]) -> dict[str, Any]:
    """What `make_tokenizers` needs to rebuild the tokenizers a checkpoint was made with."""
    return payload["tokenizer"]


def saved_weights(payload: dict[str, Any]) -> dict[str, torch.Tensor]:
    return payload["model"]


def saved_training(payload: dict[str, Any]) -> dict[str, Any] | None:
    """last.pt's optimizer, scheduler, scaler, progress and RNG streams (None elsewhere)."""
    return payload.get("training") or None
