"""The Python API: load a checkpoint (or several, as an ensemble) once, translate lists
of strings.

    from seq2seq.translator import Translator
    translator = Translator.from_checkpoint("runs/multi30k_de_en/best.pt")
    for result in translator.translate(["Zwei Männer stehen am Strand."]):
        print(result.text, result.score)
    beam = translator.decode.updated(beam_size=5, nbest=3)  # validated, per call
    for candidates in translator.translate_nbest(["Ein Hund rennt."], beam): ...
    ensemble = Translator.from_checkpoint(["a.pt", "b.pt"])

`train` (validation), `translate`, `evaluate` and `serve` all decode through this class.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from seq2seq.checkpoint import Bundle, load_bundle
from seq2seq.config import DecodeConfig
from seq2seq.data import Batch, collate, make_batches
from seq2seq.ensemble import Ensemble
from seq2seq.errors import UserError, is_out_of_memory
from seq2seq.gates import GateValues
from seq2seq.inference import prepared
from seq2seq.model import Seq2Seq, evaluating
from seq2seq.search import (
    Hypothesis,
    Searchable,
    beam_search,
    greedy_search,
    max_output_lengths,
)
from seq2seq.text import TextSide
from seq2seq.vocab import SPECIALS, UNK


@dataclass
class Translation:
    text: str  # detokenized output
    tokens: list[str]  # output tokens, without <eos>
    source_tokens: list[str]  # as translated (after truncation)
    score: float  # log-probability of the output with <eos> (/ length penalty in beams)
    attention: Tensor  # [len(tokens) + 1, len(source_tokens) + 2]: rows output (+<eos>),
    #                    columns <sos> source <eos>
    truncated: bool = False  # the source was longer than decode.max_source_length
    gates: GateValues | None = None  # encoder gate values (channel [2H], temporal
    #                                  [len(source_tokens) + 2]) when the model has a gate

    def attention_grid(self) -> tuple[list[str], list[str], Tensor]:
        """The attention as a heatmap shows it -> (row labels: output tokens and <eos>,
        column labels: <sos> source tokens <eos>, weights [rows, columns])."""
        columns = ["<sos>", *self.source_tokens, "<eos>"]
        rows = [*self.tokens, "<eos>"][: self.attention.size(0)]
        return rows, columns, self.attention[: len(rows), : len(columns)]

    def alignment(self) -> list[int]:
        """For each output token, the index of the source token it attends to most."""
        if not self.source_tokens:
            return []
        return (
            (self.attention[: len(self.tokens), 1 : len(self.source_tokens) + 1])
            .argmax(dim=1)
            .tolist()
        )


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("device 'cuda' was asked for but torch sees no CUDA GPU")
    if name == "mps" and not torch.backends.mps.is_available():
        raise UserError("device 'mps' was asked for but torch sees no Apple GPU")
    return torch.device(name)


class Translator:
    """One model, or an ensemble of models that read and write the same text."""

    def __init__(
        self,
        models: Seq2Seq | list[Seq2Seq],
        src: TextSide,
        trg: TextSide,
        decode: DecodeConfig,
        device: torch.device,
        frozen: bool = False,
    ):
        self.models = [models] if isinstance(models, Seq2Seq) else list(models)
        self.src, self.trg = src, trg
        self.decode = decode  # the defaults; each call may pass its own
        self.device = device
        self.frozen = frozen  # the weights never change: prepared copies can be kept
        self._prepared: dict[str, list[Seq2Seq]] = {}  # precision -> models to decode with

    @classmethod
    def from_checkpoint(
        cls, paths: str | Path | Sequence[str | Path], device: str = "auto"
    ) -> Translator:
        """Load one checkpoint, or several as an ensemble (decode defaults: the first's)."""
        paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
        if not paths:
            raise UserError("no checkpoint given")
        torch_device = resolve_device(device)
        bundles = [load_bundle(path, torch_device) for path in paths]
        for path, bundle in zip(paths[1:], bundles[1:], strict=True):
            check_same_text(paths[0], bundles[0], path, bundle)
        first = bundles[0]
        models = [bundle.model for bundle in bundles]
        return cls(models, first.src, first.trg, first.config.decode, torch_device, frozen=True)

    def searchable(self, decode: DecodeConfig | None = None) -> Searchable:
        """The model, or the ensemble of the models combined as `decode.combine` says,
        prepared for `decode.precision` (inference.py)."""
        decode = decode or self.decode
        models = self._decoding_models(decode.precision)
        return models[0] if len(models) == 1 else Ensemble(models, decode.combine)

    def _decoding_models(self, precision: str) -> list[Seq2Seq]:
        if self.device.type != "cpu":
            if precision == "int8":
                raise UserError(
                    f"decode.precision int8 runs on the CPU only (the model is on "
                    f"{self.device.type}); use bf16 there"
                )
            return self.models
        if not self.frozen:  # training's live model: a kept copy would be stale next call
            if precision != "int8":
                return self.models
            return [prepared(m, precision) for m in self.models]
        if precision not in self._prepared:
            self._prepared[precision] = [prepared(m, precision) for m in self.models]
        return self._prepared[precision]

    def translate(self, lines: list[str], decode: DecodeConfig | None = None) -> list[Translation]:
        """One Translation per line, in order; an empty line gives an empty translation."""
        return [candidates[0] for candidates in self.translate_nbest(lines, decode)]

    def translate_nbest(
        self, lines: list[str], decode: DecodeConfig | None = None
    ) -> list[list[Translation]]:
        """The `decode.nbest` best translations of each line, best first."""
        decode = decode or self.decode
        source_tokens = self.src.tokenize(lines)
        truncated = [len(tokens) > decode.max_source_length for tokens in source_tokens]
        source_tokens = [tokens[: decode.max_source_length] for tokens in source_tokens]
        empty = [Translation("", [], [], 0.0, torch.zeros(1, 2))]
        results: list[list[Translation]] = [empty * decode.nbest for _ in lines]
        nonempty = [i for i, tokens in enumerate(source_tokens) if tokens]
        ids = [self.src.ids(source_tokens[i]) for i in nonempty]
        model = self.searchable(decode)
        with evaluating(model):
            for positions in make_batches([len(row) for row in ids], decode.batch_size):
                batch = collate(positions, ids, None).to(self.device)
                for position, hypotheses in zip(
                    positions, self._search(model, batch, decode), strict=True
                ):
                    line = nonempty[position]
                    results[line] = [
                        self._finish(h, source_tokens[line], truncated[line], decode)
                        for h in hypotheses
                    ]
        return results

    def _search(
        self, model: Searchable, batch: Batch, decode: DecodeConfig
    ) -> list[list[Hypothesis]]:
        """Greedy for beam size 1, else beam search: the `nbest` best per sentence."""
        limits = max_output_lengths(
            batch.src_lengths, decode.max_length_ratio, decode.max_length_offset
        )
        bf16 = decode.precision == "bf16"
        try:
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=bf16):
                if decode.beam_size == 1:
                    return [[h] for h in greedy_search(model, batch.src, batch.src_lengths, limits)]
                return beam_search(
                    model,
                    batch.src,
                    batch.src_lengths,
                    limits,
                    decode.beam_size,
                    decode.alpha,
                    decode.nbest,
                )
        except (RuntimeError, MemoryError) as error:
            if not is_out_of_memory(error):
                raise
            raise UserError(
                f"out of memory translating {batch.src.size(0)} sentences at once; "
                f"lower the batch size (now {decode.batch_size}, --batch-size)"
            ) from None

    def _finish(
        self, hypothesis: Hypothesis, source: list[str], truncated: bool, decode: DecodeConfig
    ) -> Translation:
        """Ids -> tokens -> text, replacing <unk> from the source if asked to."""
        tokens = self.trg.tokens(hypothesis.tokens)
        translation = Translation(
            "", tokens, source, hypothesis.score, hypothesis.attention, truncated, hypothesis.gates
        )
        if decode.replace_unk and not self.trg.tokenizer.subword:  # pieces are never <unk>
            translation.tokens = replace_unknown(tokens, source, translation.alignment())
        translation.text = self.trg.detokenize(translation.tokens)
        return translation


def check_same_text(
    first_path: str | Path, first: Bundle, path: str | Path, bundle: Bundle
) -> None:
    """Ensemble members must read and write the same text: one line naming what differs."""
    for side, name in (("src", "source"), ("trg", "target")):
        difference = getattr(first, side).difference(getattr(bundle, side))
        if difference:
            raise UserError(
                f"{path} and {first_path} cannot decode together: their {name} {difference} differ"
            )


def replace_unknown(tokens: list[str], source: list[str], alignment: list[int]) -> list[str]:
    """Each <unk> output token becomes the source token it attends to most."""
    return [
        source[alignment[i]] if token == SPECIALS[UNK] else token for i, token in enumerate(tokens)
    ]
