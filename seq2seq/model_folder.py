"""A model as a folder of standard files, read without unpickling anything:

    config.json              what rebuilds and runs the model: format, format version, the
                             seq2seq version that wrote it, the weights' file and dtype, the
                             tokenizer files, the step and validation scores of the save,
                             and the resolved config (architecture, gate, languages,
                             tokenizer settings, decode defaults)
    model.safetensors        the weights
    vocab.src.json, vocab.trg.json
                             word models: each vocabulary's tokens in id order
    sentencepiece.src.model, sentencepiece.trg.model (one sentencepiece.model if shared)
                             subword models: the SentencePiece models, whose pieces are the
                             vocabularies
    README.md                a Hugging Face model card (model_card.py)

`seq2seq export` writes one; `checkpoint.load_checkpoint` reads one (or a Hub id,
hub.py) into the same payload that a `.pt` file gives, so every command takes either,
and the same checks follow (tokenizer names, finite weights, config sizes against the
weights' shapes before the model is built). safetensors refuses a header whose tensors do
not exactly cover the file, so the weights never take more memory than the file (twice
that for float16 or bfloat16 files, which are read back as float32).

`seq2seq export --onnx` adds the model as ONNX graphs (onnx_export.py), which config.json
names under `onnx`; the onnxruntime path (onnx_runtime.py) reads them with this module's
description and text files, without torch, which only the weights need.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sentencepiece

from seq2seq import __version__
from seq2seq.config import config_from_dict
from seq2seq.errors import UserError
from seq2seq.files import WriteFailed, make_folder, remove_orphans, temporary_beside
from seq2seq.hub import is_hub_id, local_folder
from seq2seq.tokenizer import make_tokenizers

if TYPE_CHECKING:
    import torch

FORMAT = "seq2seq-model"
FORMAT_VERSION = 1
CONFIG = "config.json"
WEIGHTS = "model.safetensors"
CARD = "README.md"
SIDES = ("src", "trg")


@dataclass
class SavedModel:
    """A model's parts in the form a checkpoint's payload holds them (checkpoint.py
    converts): the resolved config as plain data, each vocabulary's tokens in id order,
    the tokenizers' state (`tokenizer.tokenizer_state`: spaCy names, SentencePiece models
    as byte tensors), the weights, and the step and validation scores of the save."""

    config: dict[str, Any]
    vocab: dict[str, list[str]]
    tokenizer: dict[str, Any]
    weights: dict[str, torch.Tensor]
    step: int | None = None
    validation: dict[str, Any] | None = None


def is_model_folder(model: str | Path) -> bool:
    """Whether `model` names a model folder (or a Hub id of one) rather than a `.pt` file."""
    return is_hub_id(model) or Path(model).is_dir()


def folder_path(model: str | Path) -> Path:
    """The folder of a model folder's path, or of a Hub id (in huggingface_hub's cache)."""
    return local_folder(model) if is_hub_id(model) else Path(model)


def read_model_folder(model: str | Path) -> SavedModel:
    """A model folder, or a Hub id's folder in huggingface_hub's cache; a missing or
    damaged file, or a format newer than this seq2seq, is one line naming it."""
    import torch

    folder = folder_path(model)
    description = read_description(folder)
    tokenizer, vocab = read_text_files(folder, description)
    try:
        weights = _read_weights(member(folder, description["files"]["weights"]))
        return SavedModel(
            description["config"],
            vocab,
            {  # a checkpoint's form: SentencePiece models as byte tensors
                key: torch.frombuffer(bytearray(value), dtype=torch.uint8)
                if isinstance(value, bytes)
                else value
                for key, value in tokenizer.items()
            },
            weights,
            description.get("step"),
            description.get("validation"),
        )
    except (KeyError, TypeError) as error:
        raise _damaged(folder, error) from None


def read_text_files(
    folder: Path, description: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """What the tokenizers and vocabularies of a folder's model are made of -> (the
    tokenizers' state: spaCy names and SentencePiece models as bytes; the vocabularies:
    each side's tokens in id order)."""
    try:
        files = description["files"]
        tokenizer: dict[str, Any] = {side: description["spacy"][side] for side in SIDES}
        vocab = {}
        for side in SIDES:
            if f"{side}_model" in files:
                path = member(folder, files[f"{side}_model"])
                tokenizer[f"{side}_model"] = _read_sentencepiece(path)
            else:
                vocab[side] = _read_vocabulary(member(folder, files[f"{side}_vocab"]))
        return tokenizer, vocab or _pieces(description["config"], tokenizer, folder / CONFIG)
    except (KeyError, TypeError) as error:
        raise _damaged(folder, error) from None


def _damaged(folder: Path, error: Exception) -> UserError:
    return UserError(f"{folder / CONFIG}: damaged model folder config ({error!r})")


def read_description(folder: Path) -> dict[str, Any]:
    """config.json, once it is known to be a model folder's of a format this reads."""
    path = folder / CONFIG
    if not path.is_file():
        raise UserError(
            f"{folder}: not a seq2seq model folder (no {CONFIG}; a run folder's model is "
            "its best.pt)"
        )
    try:
        description = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UserError(f"{path}: cannot read: {error}") from None
    if not isinstance(description, dict) or description.get("format") != FORMAT:
        raise UserError(f"{path}: not a seq2seq model folder's {CONFIG} (format is not {FORMAT})")
    version = description.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise UserError(f"{path}: damaged model folder config (format_version {version!r})")
    if version > FORMAT_VERSION:
        raise UserError(
            f"{path}: model folder format {version} is newer than this seq2seq reads "
            f"({FORMAT_VERSION}); upgrade seq2seq"
        )
    return description


def member(folder: Path, name: object) -> Path:
    """A file that config.json names: a plain name inside the folder, never a path that
    leads elsewhere; a missing one is named."""
    if not isinstance(name, str) or name in ("", ".", "..") or Path(name).name != name:
        raise UserError(f"{folder / CONFIG}: {name!r} is not the name of a file in the folder")
    path = folder / name
    if not path.is_file():
        raise UserError(f"{path}: missing from the model folder")
    return path


def _read_sentencepiece(path: Path) -> bytes:
    """A SentencePiece model file's bytes, once SentencePiece has read them."""
    model = path.read_bytes()
    try:
        if not model:  # empty bytes load as "no model"
            raise RuntimeError
        sentencepiece.SentencePieceProcessor(model_proto=model)
    except RuntimeError:
        raise UserError(f"{path}: not a SentencePiece model") from None
    return model


def _read_vocabulary(path: Path) -> list[str]:
    try:
        tokens = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UserError(f"{path}: cannot read: {error}") from None
    if not isinstance(tokens, list) or not all(isinstance(token, str) for token in tokens):
        raise UserError(f"{path}: not a vocabulary (a JSON list of tokens in id order)")
    return tokens


def _pieces(config: dict[str, Any], tokenizer: dict[str, Any], path: Path) -> dict[str, list[str]]:
    """A subword model's vocabularies: its SentencePiece models' pieces, as training made them."""
    src, trg = make_tokenizers(config_from_dict(config, source=f"{path} (config)"), tokenizer)
    return {"src": src.pieces(), "trg": trg.pieces()}


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file, floating point ones as float32."""
    import torch
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(path, framework="pt") as weights:
            tensors = {name: weights.get_tensor(name) for name in weights.keys()}
    except (SafetensorError, OSError) as error:
        raise UserError(f"{path}: not a readable safetensors file ({error})") from None
    # Fresh copies, not views of the file's buffer: a tensor at an unaligned offset makes
    # CPU kernels take another path, whose rounding differs from the checkpoint's.
    return {
        name: tensor.to(torch.float32 if tensor.is_floating_point() else tensor.dtype, copy=True)
        for name, tensor in tensors.items()
    }


def write_model_folder(
    folder: Path,
    model: SavedModel,
    dtype: str,
    card: str,
    overwrite: bool = False,
    extra: Callable[[Path], dict[str, Any]] | None = None,
) -> None:
    """Write the model folder whole: into a new folder beside it, which then takes its
    place, so a failure leaves no half folder and an existing one as it was. Only a model
    folder (or an empty one) is replaced, and only with `overwrite`. `extra` writes more
    files into the new folder and returns what config.json says of them."""
    _check_target(folder, overwrite)
    weights = _converted(model.weights, dtype)
    make_folder(folder.parent)
    remove_orphans(folder.parent, folder.name)  # what an export killed with -9 left
    staging, retired = temporary_beside(folder), temporary_beside(folder)
    try:
        staging.mkdir()
        _write_files(staging, model, weights, dtype, card, extra(staging) if extra else {})
        if folder.exists():
            os.replace(folder, retired)
        os.replace(staging, folder)
    except OSError as error:
        raise WriteFailed(folder, str(error.strerror or error)) from None
    finally:
        for leftover in (staging, retired):
            shutil.rmtree(leftover, ignore_errors=True)


def _check_target(folder: Path, overwrite: bool) -> None:
    if not folder.exists():
        return
    if not folder.is_dir():
        raise UserError(f"{folder}: exists and is not a folder; choose another --output")
    if not any(folder.iterdir()):
        return
    if not (folder / CONFIG).is_file():
        raise UserError(f"{folder}: a folder that is not a model folder; choose another --output")
    if not overwrite:
        raise UserError(f"{folder}: already holds a model; pass --overwrite to replace it")


def _converted(weights: dict[str, torch.Tensor], dtype: str) -> dict[str, torch.Tensor]:
    """The weights in `dtype`; one that the dtype cannot hold (beyond float16's range) is
    refused rather than written as infinity."""
    import torch

    converted = {}
    for name, tensor in weights.items():
        if tensor.is_floating_point():
            tensor = tensor.to(getattr(torch, dtype))
            if not bool(torch.isfinite(tensor).all()):
                raise UserError(
                    f"weights {name} do not fit in {dtype} (values beyond its range); "
                    "export with --dtype bfloat16 or float32"
                )
        converted[name] = tensor.contiguous()
    return converted


def _write_files(
    folder: Path,
    model: SavedModel,
    weights: dict[str, torch.Tensor],
    dtype: str,
    card: str,
    extra: dict[str, Any],
) -> None:
    import torch
    from safetensors.torch import save

    files: dict[str, str] = {"weights": WEIGHTS}
    writes: dict[str, Callable[[Path], object]] = {
        WEIGHTS: lambda path: path.write_bytes(save(weights, metadata={"format": "pt"})),
        CARD: lambda path: path.write_text(card, encoding="utf-8"),
    }
    models = {side: model.tokenizer.get(f"{side}_model") for side in SIDES}
    for side in SIDES:
        if models[side] is None:
            name = files[f"{side}_vocab"] = f"vocab.{side}.json"
            text = json.dumps(model.vocab[side], ensure_ascii=False, indent=0)
            writes[name] = lambda path, text=text: path.write_text(text + "\n", encoding="utf-8")
        else:
            shared = torch.equal(models["src"], models["trg"])
            name = files[f"{side}_model"] = (
                "sentencepiece.model" if shared else f"sentencepiece.{side}.model"
            )
            data = bytes(models[side].numpy())
            writes[name] = lambda path, data=data: path.write_bytes(data)
    description = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "seq2seq_version": __version__,
        "weights": {"dtype": dtype},
        "files": files,
        "spacy": {side: model.tokenizer[side] for side in SIDES},
        "step": model.step,
        "validation": model.validation,
        "config": model.config,
        **extra,
    }
    text = json.dumps(description, ensure_ascii=False, indent=2)
    writes[CONFIG] = lambda path: path.write_text(text + "\n", encoding="utf-8")
    for name, write in writes.items():
        write(folder / name)
