"""The onnxruntime path: a model folder's ONNX graphs (written by `seq2seq export --onnx`,
onnx_export.py) decoded with onnxruntime and the numpy search, without torch.

    encoder.onnx  src [B,S] int64, src_lengths [B] int64
                  -> outputs [B,S,2H], keys [B,S,D], hidden [B,D]       (float32)
    decoder.onnx  tokens [B] int64, hidden [B,D], keys [B,S,D], outputs [B,S,2H],
                  mask [B,S] bool -> log_probs [B,V] float32, next_hidden [B,D],
                  attention [B,S]

One decoder call is one search step (docs/design.md has the equations). int8 copies of
both graphs (`decode.precision: int8`) are written at export, so this path needs
onnxruntime alone. The folder's config.json names the graphs under `onnx`, with the
exporter and opset that made them; the tokenizers and vocabularies are the folder's own.
This module imports no torch, and onnxruntime only when a model is opened.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from seq2seq.bucketing import make_batches
from seq2seq.config import Config, DecodeConfig, config_from_dict
from seq2seq.errors import UserError
from seq2seq.model_folder import (
    CONFIG,
    folder_path,
    is_model_folder,
    member,
    read_description,
    read_text_files,
)
from seq2seq.numpy_search import beam_search, greedy_search, max_output_lengths
from seq2seq.search_rules import Hypothesis
from seq2seq.text import TextSide
from seq2seq.tokenizer import make_tokenizers
from seq2seq.translation import Search, TextTranslator
from seq2seq.vocab import PAD, Vocabulary

ONNX = "onnx"  # config.json's key for the graphs
ENCODER_INPUTS = ("src", "src_lengths")
ENCODER_OUTPUTS = ("outputs", "keys", "hidden")
DECODER_INPUTS = ("tokens", "hidden", "keys", "outputs", "mask")
DECODER_OUTPUTS = ("log_probs", "next_hidden", "attention")
# The graphs' files for each decode.precision this path runs.
GRAPHS = {
    "fp32": {"encoder": "encoder.onnx", "decoder": "decoder.onnx"},
    "int8": {"encoder": "encoder.int8.onnx", "decoder": "decoder.int8.onnx"},
}


@dataclass
class OnnxState:
    """One decoder batch during search (model.SearchState's numpy twin)."""

    outputs: np.ndarray  # [B,S,2H] encoder outputs
    keys: np.ndarray  # [B,S,D] attention keys
    mask: np.ndarray  # [B,S] True on real source tokens
    hidden: np.ndarray  # [B,D] decoder state

    def select(self, rows: np.ndarray) -> OnnxState:
        return OnnxState(self.outputs[rows], self.keys[rows], self.mask[rows], self.hidden[rows])

    def reorder(self, rows: np.ndarray) -> OnnxState:
        """Rows that take the decoder state of another row of their sentence: the
        memory, equal within a sentence, stays."""
        return OnnxState(self.outputs, self.keys, self.mask, self.hidden[rows])


class OnnxModel:
    """The encoder and decoder graphs of one model, as search's start and step."""

    def __init__(self, encoder: Path, decoder: Path, config: Config, trg_vocab: int):
        memory, hidden = 2 * config.model.encoder.hidden_size, config.model.decoder.hidden_size
        self.encoder = _session(
            encoder,
            {"src": [], "src_lengths": []},
            {"outputs": [memory], "keys": [hidden], "hidden": [hidden]},
        )
        self.decoder = _session(
            decoder,
            {"tokens": [], "hidden": [hidden], "keys": [hidden], "outputs": [memory], "mask": []},
            {"log_probs": [trg_vocab], "next_hidden": [hidden], "attention": []},
        )

    def start(self, src: np.ndarray, src_lengths: np.ndarray) -> OnnxState:
        outputs, keys, hidden = self.encoder.run(None, {"src": src, "src_lengths": src_lengths})
        return OnnxState(outputs, keys, src != PAD, hidden)

    def step(
        self, tokens: np.ndarray, state: OnnxState
    ) -> tuple[np.ndarray, OnnxState, np.ndarray]:
        """y_{t-1} [B] -> (float32 log-probs [B,V], the next state, attention [B,S])."""
        inputs = {
            "tokens": tokens, "hidden": state.hidden, "keys": state.keys,
            "outputs": state.outputs, "mask": state.mask,
        }  # fmt: skip
        log_probs, hidden, attention = self.decoder.run(None, inputs)
        return log_probs, OnnxState(state.outputs, state.keys, state.mask, hidden), attention


def _session(path: Path, inputs: dict[str, list[int]], outputs: dict[str, list[int]]) -> Any:
    """An onnxruntime session of the graph at `path`, once its inputs and outputs are the
    names (and last dimensions, where fixed) that this model's graph has: a damaged file
    or another model's graph is one line naming the file."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # errors only: its warnings are not the user's to act on
    try:
        session = onnxruntime.InferenceSession(
            str(path), options, providers=["CPUExecutionProvider"]
        )
    except Exception as error:  # onnxruntime's own kinds: InvalidProtobuf, Fail, InvalidGraph
        reason = str(error).strip().splitlines()[0][:200] if str(error).strip() else "unreadable"
        raise UserError(f"{path}: not a readable ONNX graph ({reason})") from None
    for kind, expected, found in (
        ("inputs", inputs, session.get_inputs()),
        ("outputs", outputs, session.get_outputs()),
    ):
        names = [node.name for node in found]
        if names != list(expected):
            raise UserError(
                f"{path}: not this model's graph: its {kind} are {', '.join(names)}, "
                f"not {', '.join(expected)}"
            )
        for node in found:
            fixed = expected[node.name]
            if fixed and node.shape[-len(fixed) :] != fixed:
                raise UserError(
                    f"{path}: not this model's graph: its {node.name} has shape {node.shape}, "
                    f"where {CONFIG} makes the last dimensions {fixed}"
                )
    return session


def check_precision(precision: str) -> None:
    """Refuse a decode.precision that has no graphs here (bf16 is torch's autocast)."""
    if precision not in GRAPHS:
        raise UserError(
            f"precision {precision} needs --runtime torch; onnxruntime runs fp32 or int8"
        )


def onnx_folder(model: str | Path) -> Path | None:
    """The folder of `model` when it is a model folder (or Hub id) with ONNX graphs."""
    if not is_model_folder(model):
        return None
    folder = folder_path(model)
    return folder if ONNX in read_description(folder) else None


class OnnxTranslator(TextTranslator):
    """A model folder's ONNX graphs on onnxruntime, on the CPU; one model, no ensembles."""

    runtime = "onnxruntime"
    device = "cpu"

    def __init__(
        self, folder: Path, onnx: dict[str, Any], config: Config, src: TextSide, trg: TextSide
    ):
        self.folder, self.onnx, self.config = folder, onnx, config  # onnx: config.json's entry
        self.src, self.trg = src, trg
        # bf16 is torch's autocast; a model saved with it decodes fp32 here.
        bf16 = config.decode.precision == "bf16"
        self.decode = config.decode.updated(precision="fp32") if bf16 else config.decode
        self._models: dict[str, OnnxModel] = {}  # precision -> its graphs, opened once

    @classmethod
    def from_folder(cls, model: str | Path) -> OnnxTranslator:
        """The ONNX graphs, tokenizers and vocabularies of a model folder (or Hub id)."""
        folder = folder_path(model)
        description = read_description(folder)
        source = f"{folder / CONFIG} (config)"
        try:
            onnx = description[ONNX]
            config = config_from_dict(description["config"], source=source)
        except (KeyError, TypeError) as error:
            raise UserError(f"{folder / CONFIG}: damaged model folder config ({error!r})") from None
        tokenizer, vocab = read_text_files(folder, description)
        src_tokenizer, trg_tokenizer = make_tokenizers(config, tokenizer)
        src = TextSide(src_tokenizer, Vocabulary(vocab["src"]))
        trg = TextSide(trg_tokenizer, Vocabulary(vocab["trg"]))
        return cls(folder, onnx, config, src, trg)

    def model(self, precision: str) -> OnnxModel:
        """The graphs for `precision`, opened at their first use."""
        check_precision(precision)
        if precision not in self._models:
            try:
                files = {role: self.onnx["graphs"][precision][role] for role in GRAPHS[precision]}
            except (KeyError, TypeError) as error:
                raise UserError(
                    f"{self.folder / CONFIG}: damaged onnx entry ({error!r}); export again"
                ) from None
            self._models[precision] = OnnxModel(
                member(self.folder, files["encoder"]),
                member(self.folder, files["decoder"]),
                self.config,
                len(self.trg.vocab),
            )
        return self._models[precision]

    @contextmanager
    def searching(self, decode: DecodeConfig) -> Iterator[Search]:
        model = self.model(decode.precision)

        def search(rows: list[list[int]]) -> list[list[Hypothesis]]:
            src, lengths = padded(rows)
            limits = max_output_lengths(lengths, decode.max_length_ratio, decode.max_length_offset)
            if decode.beam_size == 1:
                return [[h] for h in greedy_search(model, src, lengths, limits)]
            beam, alpha, nbest = decode.beam_size, decode.alpha, decode.nbest
            return beam_search(model, src, lengths, limits, beam, alpha, nbest)

        yield search

    def no_attention(self) -> np.ndarray:
        return np.zeros((1, 2), dtype=np.float32)

    def members(self) -> list[dict[str, object]]:
        return [
            {"parameters": self.onnx.get("parameters"), "model": self.config.model.model_dump()}
        ]

    def corpus_losses(
        self, sources: list[str], references: list[str], decode: DecodeConfig
    ) -> tuple[float, float]:
        """evaluation.corpus_losses with the decoder graph, a step at a time: gold
        previous tokens fed, then the model's own greedy predictions."""
        model = self.model(decode.precision)
        src = [self.src.vocab.encode(tokens) for tokens in self.src.tokenize(sources)]
        trg = [self.trg.vocab.encode(tokens) for tokens in self.trg.tokenize(references)]
        totals, tokens = [0.0, 0.0], 0
        lengths = [max(len(s), len(t)) for s, t in zip(src, trg, strict=True)]
        for indices in make_batches(lengths, decode.batch_size):
            source, source_lengths = padded([src[i] for i in indices])
            gold, _ = padded([trg[i] for i in indices])  # [B,T] <sos> ... <eos>
            for which, forced in enumerate((True, False)):
                totals[which] += sequence_loss(model, source, source_lengths, gold, forced)
            tokens += int((gold[:, 1:] != PAD).sum())
        return totals[0] / max(tokens, 1), totals[1] / max(tokens, 1)


def padded(rows: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """Id rows -> (ids [B,S] int64 padded with PAD, lengths [B] int64)."""
    lengths = np.array([len(row) for row in rows], dtype=np.int64)
    ids = np.full((len(rows), int(lengths.max())), PAD, dtype=np.int64)
    for index, row in enumerate(rows):
        ids[index, : len(row)] = row
    return ids, lengths


def sequence_loss(
    model: OnnxModel, src: np.ndarray, src_lengths: np.ndarray, gold: np.ndarray, forced: bool
) -> float:
    """Summed cross-entropy of the targets gold[:, 1:] [B,T-1] (padding counts 0), each
    step fed the gold previous token (`forced`) or the model's own greedy prediction."""
    state, tokens, total = model.start(src, src_lengths), gold[:, 0], 0.0
    rows = np.arange(len(gold))
    for t in range(1, gold.shape[1]):
        log_probs, state, _ = model.step(tokens, state)  # [B,V]
        target = gold[:, t]
        total -= float(np.where(target != PAD, log_probs[rows, target], 0.0).sum())
        tokens = target if forced else log_probs.argmax(axis=1)
    return total
