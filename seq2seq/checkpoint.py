"""Self-contained checkpoints: weights, resolved config, vocabularies, tokenizer names,
and a format version. This is the only module that knows the payload's keys (last.pt's
training state is run.py's); the rest of the package sees a `Bundle` (config, model, sides).

A checkpoint holds only tensors, numbers, strings, lists and dicts, and is always
opened with `torch.load(weights_only=True)`: opening one can never run code. What a
crafted file could still do is checked before it costs anything: entries that would
inflate beyond the file (a zip bomb), tensors that repeat or share their storage (a model
larger than the file), tokenizer names that are not spaCy's (spacy.load imports the
package it is given), weights that are NaN or infinite, and a config whose sizes disagree
with the weights (it would allocate a model of its own size first).
Saves are atomic: temporary file in the same folder, flush, fsync, rename.

Payload: format, format_version, config (Config.model_dump()), vocab {src, trg: itos},
tokenizer (tokenizer_state), model (state_dict), step, validation, and in last.pt
training (run.py); an average adds averaged_from.
A model folder or Hub id (model_folder.py: safetensors and JSON) gives the same payload,
without training state, and passes the same checks.
"""

from __future__ import annotations

import pickle
import warnings
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from operator import attrgetter
from pathlib import Path
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

from seq2seq.config import Config, check_spacy_name, config_from_dict
from seq2seq.errors import UserError
from seq2seq.files import same_file, write_atomic
from seq2seq.model import Seq2Seq
from seq2seq.model_folder import SavedModel, is_model_folder, read_model_folder
from seq2seq.text import TextSide
from seq2seq.tokenizer import make_tokenizers, tokenizer_state
from seq2seq.vocab import Vocabulary

FORMAT = "seq2seq-checkpoint"
FORMAT_VERSION = 1


def save_checkpoint(payload: dict[str, Any], path: str | Path) -> None:
    """Write atomically and durably: readers see the old file or the new one."""
    payload = {"format": FORMAT, "format_version": FORMAT_VERSION, **payload}
    write_atomic(path, lambda handle: torch.save(payload, handle), durable=True)


def load_checkpoint(
    path: str | Path, map_location: str | torch.device = "cpu", mmap: bool = False
) -> dict[str, Any]:
    """Open a checkpoint without running code; anything that is not ours is a UserError.
    `mmap` maps the tensors from the file instead of reading them: pages are read as they
    are used, and processes that open the same model share them."""
    path = Path(path)
    if is_model_folder(path):  # nothing to unpickle there
        payload = _payload(read_model_folder(path))
        _check_contents(payload, path)
        return payload
    if not path.is_file():
        raise UserError(f"{path}: checkpoint not found")
    _check_archive(path)
    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 5": one line on stderr
            warnings.simplefilter("ignore")
            payload = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
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
    _check_storage(payload, path)
    _check_contents(payload, path)
    return payload


def _check_archive(path: Path) -> None:
    """A zip archive (torch.save writes them) whose entries cannot inflate beyond the
    file: torch.save stores entries uncompressed, so together they are never larger than
    the file holding them, while torch.load would inflate a compressed entry that claims
    gigabytes in memory before anything else checks it."""
    try:
        if not zipfile.is_zipfile(path):
            raise UserError(
                f"{path}: not a seq2seq checkpoint (truncated, or another kind of file)"
            )
        with zipfile.ZipFile(path) as archive:
            claimed = sum(entry.file_size for entry in archive.infolist())
    # e.g. "span multiple disks", or NotImplementedError for a made-up zip version
    except (zipfile.BadZipFile, ValueError, EOFError, NotImplementedError) as e:
        raise UserError(f"{path}: damaged seq2seq checkpoint ({e})") from None
    size = path.stat().st_size
    if claimed > size:
        raise UserError(
            f"{path}: refused: its entries would inflate to {claimed:,} bytes from a "
            f"{size:,}-byte file (seq2seq checkpoints are stored uncompressed)"
        )


def _check_storage(payload: dict[str, Any], path: Path) -> None:
    """Tensors that hold their elements, and no more of them than the file holds.

    A tensor is a view of a storage. A view expanded from a tiny storage (stride 0:
    torch.zeros(1).expand(16000, 16384)), or many views of one storage, would pass every
    shape check and then cost its full size in each copy and computation: a file of
    kilobytes declaring a model of gigabytes. torch.load refuses a view that reaches
    beyond its storage, so a contiguous view holds its own elements; torch.save writes
    each storage once, uncompressed, so together they fit in the file."""
    total = 0
    for name, tensor in _tensors(payload):
        if not tensor.is_contiguous():
            raise UserError(
                f"{path}: refused: its tensor {name} of shape {tuple(tensor.shape)} is a view "
                f"with strides {tensor.stride()}, not stored element by element"
            )
        total += tensor.numel() * tensor.element_size()
    size = path.stat().st_size
    if total > size:
        raise UserError(
            f"{path}: refused: its tensors hold {total:,} bytes, more than its {size:,}-byte "
            "file (views that share storage)"
        )


def _tensors(payload: dict[str, Any]) -> Iterator[tuple[str, torch.Tensor]]:
    """(dotted name, tensor) of every tensor in the payload, at any depth (walked with a
    list rather than recursion: a crafted file may nest lists deeply)."""
    pending: list[tuple[tuple[object, ...], object]] = [((), payload)]
    while pending:
        keys, value = pending.pop()
        if isinstance(value, torch.Tensor):
            yield ".".join(map(str, keys)), value
        elif isinstance(value, dict):
            pending.extend(((*keys, key), item) for key, item in value.items())
        elif isinstance(value, (list, tuple)):
            pending.extend(((*keys, index), item) for index, item in enumerate(value))


def _check_contents(payload: dict[str, Any], path: Path) -> None:
    """Tokenizer names that spacy.load may import, and finite floating-point weights."""
    names = payload.get("tokenizer")
    for side in ("src", "trg") if isinstance(names, dict) else ():
        try:
            check_spacy_name(names.get(side), "pipeline")
        except ValueError as error:
            raise UserError(f"{path}: refused: tokenizer.{side} {error}") from None
    weights = payload.get("model")
    for name, tensor in weights.items() if isinstance(weights, dict) else ():
        if isinstance(tensor, torch.Tensor) and not tensor.is_floating_point():
            kind = str(tensor.dtype).removeprefix("torch.")
            raise UserError(f"{path}: refused: its weights {name} are {kind}, not floating point")
        if isinstance(tensor, torch.Tensor) and not bool(torch.isfinite(tensor).all()):
            raise UserError(f"{path}: refused: its weights {name} hold NaN or infinite values")


def average_checkpoints(paths: list[Path]) -> dict[str, Any]:
    """One self-contained checkpoint whose weights are the mean of the given ones.

    Config, vocabularies and tokenizers come from the first checkpoint; all must share
    them (weights of different vocabularies cannot be averaged). No training state.
    One checkpoint is open at a time, added into a float64 running sum: the peak memory
    is the sum (float64: twice the weights' float32 bytes) and one checkpoint, whatever
    the number averaged."""
    if not paths:
        raise UserError("average: no checkpoints given")
    first = load_checkpoint(paths[0])
    kept = {key: first[key] for key in ("config", "vocab", "tokenizer")}
    dtypes = {name: tensor.dtype for name, tensor in first["model"].items()}
    total = {name: tensor.to(torch.float64, copy=True) for name, tensor in first["model"].items()}
    del first
    for index, path in enumerate(paths[1:], 1):
        payload = load_checkpoint(path)  # first: a missing file is named as missing
        twin = next((other for other in paths[:index] if same_file(other, path)), None)
        if twin is not None:
            raise UserError(f"{path}: the same file as {twin}; an average takes each once")
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
        self, step: int | None = None, validation: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """The checkpoint payload (last.pt adds its training state: run.py)."""
        return {
            "config": self.config.model_dump(),
            "vocab": {"src": self.src.vocab.itos, "trg": self.trg.vocab.itos},
            "tokenizer": tokenizer_state(self.src.tokenizer, self.trg.tokenizer),
            "model": self.model.state_dict(),
            "step": step,
            "validation": validation,
        }


def load_bundle(path: str | Path, device: torch.device | str = "cpu") -> Bundle:
    """A checkpoint's model (in eval mode, on `device`), config and text sides."""
    payload = load_checkpoint(path, mmap=True)
    try:
        config = config_from_dict(payload["config"], source=f"{path} (config)")
        src_vocab, trg_vocab = saved_vocabularies(payload)
        weights = saved_weights(payload)
        model = _empty_model(config, len(src_vocab), len(trg_vocab), weights, path)
        # The model takes the loaded tensors themselves: no initialization, no copy.
        model.load_state_dict(weights, assign=True)
        src_tokenizer, trg_tokenizer = make_tokenizers(config, saved_tokenizers(payload))
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as error:
        raise UserError(f"{path}: damaged seq2seq checkpoint ({error})") from None
    model.to(device).eval()
    return Bundle(
        config, model, TextSide(src_tokenizer, src_vocab), TextSide(trg_tokenizer, trg_vocab)
    )


# The sizes that a config and its vocabularies give a model, and the weights whose shape
# shows each: (key, weights, dimension).
_SIZES = (
    ("vocab.src size", "encoder.embedding.weight", 0),
    ("model.encoder.embedding_size", "encoder.embedding.weight", 1),
    ("model.encoder.hidden_size", "encoder.rnn.weight_hh_l0", 1),
    ("vocab.trg size", "decoder.embedding.weight", 0),
    ("model.decoder.embedding_size", "decoder.embedding.weight", 1),
    ("model.decoder.hidden_size", "decoder.rnn.weight_hh", 1),
)


def _empty_model(
    config: Config, src_vocab: int, trg_vocab: int, weights: dict[str, Any], path: str | Path
) -> Seq2Seq:
    """The model the config and vocabularies make, on the meta device (no memory, no
    values), once its shapes are those of the weights: a small file whose config says
    hidden_size 8000 would otherwise allocate gigabytes, only to fail at loading."""
    vocab_sizes = {"vocab.src size": src_vocab, "vocab.trg size": trg_vocab}
    for key, name, dimension in _SIZES:
        size = vocab_sizes[key] if key in vocab_sizes else attrgetter(key)(config)
        stored = weights.get(name)
        if not isinstance(stored, torch.Tensor) or stored.dim() <= dimension:
            raise UserError(f"{path}: damaged seq2seq checkpoint (no weights {name})")
        if stored.shape[dimension] != size:
            raise UserError(
                f"{path}: refused: its {key} is {size} but its weights {name} have "
                f"{stored.shape[dimension]} there (dimension {dimension}): config and "
                "weights disagree"
            )
    # The sizes agree; every shape (a product of sizes, a gate's kernel...) is compared on
    # the meta device, which allocates nothing.
    with torch.device("meta"), _NoFills():
        model = Seq2Seq(config.model, src_vocab, trg_vocab)
    expected = model.state_dict()
    for name in sorted(expected.keys() | weights.keys()):
        shapes = [_shape(tensors.get(name)) for tensors in (weights, expected)]
        if shapes[0] != shapes[1]:
            raise UserError(
                f"{path}: refused: its weights {name} are {shapes[0]} where its config "
                f"makes them {shapes[1]}"
            )
    return model


class _NoFills(TorchFunctionMode):
    """Skips torch.nn.init's fills: a meta tensor holds no values, and torch's meta
    normal_ first imports its compiler (seconds at every start)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if getattr(func, "__module__", None) == "torch.nn.init":
            return kwargs["tensor"] if "tensor" in kwargs else args[0]
        return func(*args, **kwargs)


def _shape(tensor: object) -> str:
    return f"shape {tuple(tensor.shape)}" if isinstance(tensor, torch.Tensor) else "absent"


def saved_config(payload: dict[str, Any], source: str) -> Config:
    return config_from_dict(payload["config"], source=source)


def saved_vocabularies(payload: dict[str, Any]) -> tuple[Vocabulary, Vocabulary]:
    return Vocabulary(payload["vocab"]["src"]), Vocabulary(payload["vocab"]["trg"])


def saved_tokenizers(payload: dict[str, Any]) -> dict[str, Any]:
    """What `make_tokenizers` needs to rebuild the tokenizers a checkpoint was made with."""
    return payload["tokenizer"]


def saved_weights(payload: dict[str, Any]) -> dict[str, torch.Tensor]:
    return payload["model"]


def saved_model(payload: dict[str, Any]) -> SavedModel:
    """What a model folder holds of a payload: all but the training state."""
    return SavedModel(
        payload["config"],
        payload["vocab"],
        payload["tokenizer"],
        payload["model"],
        payload.get("step"),
        payload.get("validation"),
    )


def _payload(model: SavedModel) -> dict[str, Any]:
    """The payload of a model read from a model folder."""
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": model.config,
        "vocab": model.vocab,
        "tokenizer": model.tokenizer,
        "model": model.weights,
        "step": model.step,
        "validation": model.validation,
    }
