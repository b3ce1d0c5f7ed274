"""Translations, and what both runtimes do around a search: lines -> tokens (truncated,
empty lines kept apart) -> ids in batches of similar length -> the runtime's search ->
tokens (<unk> replaced if asked) -> text. `translator.Translator` searches with torch,
`onnx_runtime.OnnxTranslator` with onnxruntime and numpy; `open_translator` picks one.

This module imports neither torch nor onnxruntime: the onnxruntime path runs without
torch, and `translate`, `evaluate` and `serve` reach their translator through here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from seq2seq.bucketing import make_batches
from seq2seq.config import DecodeConfig, Runtime
from seq2seq.errors import UserError
from seq2seq.files import strict_json
from seq2seq.search_rules import Hypothesis
from seq2seq.text import TextSide
from seq2seq.vocab import SPECIALS, UNK

if TYPE_CHECKING:
    from seq2seq.gates import GateValues  # torch: the onnxruntime path writes without it

# A runtime's search over one batch: source id rows (<sos> ... <eos>) -> per row, the
# n best hypotheses, best first.
Search = Callable[[list[list[int]]], list[list[Hypothesis]]]


@dataclass
class Translation:
    text: str  # detokenized output
    tokens: list[str]  # output tokens, without <eos>
    source_tokens: list[str]  # as translated (after truncation)
    score: float  # log-probability of the output with <eos> (/ length penalty in beams)
    # [len(tokens) + 1, len(source_tokens) + 2]: rows output (+<eos>), columns <sos>
    # source <eos>; a torch tensor (torch runtime) or a numpy array (onnxruntime)
    attention: Any
    truncated: bool = False  # the source was longer than decode.max_source_length
    gates: Any = None  # encoder gate values (gates.GateValues: channel [2H], temporal
    #                    [len(source_tokens) + 2]) when the model has a gate

    def attention_grid(self) -> tuple[list[str], list[str], Any]:
        """The attention as a heatmap shows it -> (row labels: output tokens and <eos>,
        column labels: <sos> source tokens <eos>, weights [rows, columns])."""
        columns = ["<sos>", *self.source_tokens, "<eos>"]
        rows = [*self.tokens, "<eos>"][: self.attention.shape[0]]
        return rows, columns, self.attention[: len(rows), : len(columns)]

    def alignment(self) -> list[int]:
        """For each output token, the index of the source token it attends to most."""
        if not self.source_tokens:
            return []
        weights = self.attention[: len(self.tokens), 1 : len(self.source_tokens) + 1]
        return weights.argmax(1).tolist()  # torch's dim 1 and numpy's axis 1 alike


def format_candidates(
    line: int, candidates: list[Translation], nbest: int, scores: bool, as_json: bool
) -> str:
    """The output line(s) of input line number `line` (from 1)."""
    if as_json:
        record = [translation_record(c) for c in candidates]
        best = record[0] if nbest == 1 else {**record[0], "nbest": record}
        return strict_json({"line": line, **best}) + "\n"
    if nbest > 1:
        return "".join(
            f"{line}\t{rank}\t{c.score:.4f}\t{c.text}\n" for rank, c in enumerate(candidates, 1)
        )
    best = candidates[0]
    return f"{best.score:.4f}\t{best.text}\n" if scores else best.text + "\n"


def translation_record(translation: Translation) -> dict[str, object]:
    """One translation as JSON data (`translate --json`, the server's answers)."""
    return {
        "translation": translation.text,
        "score": round(translation.score, 4),
        "tokens": translation.tokens,
        "source_tokens": translation.source_tokens,
        "alignment": translation.alignment(),
        **({"gates": gate_record(translation.gates)} if translation.gates else {}),
    }


def gate_record(gates: GateValues) -> dict[str, list[float]]:
    """Encoder gate values for --json: channel weights, and per source position (<sos>,
    tokens, <eos>) the temporal weights of a CBAM gate."""
    record = {"channel": [round(v, 4) for v in gates.channel.tolist()]}
    if gates.temporal is not None:
        record["temporal"] = [round(v, 4) for v in gates.temporal.tolist()]
    return record


def replace_unknown(tokens: list[str], source: list[str], alignment: list[int]) -> list[str]:
    """Each <unk> output token becomes the source token it attends to most."""
    return [
        source[alignment[i]] if token == SPECIALS[UNK] else token for i, token in enumerate(tokens)
    ]


class TextTranslator:
    """Lines in, translations out, around a runtime's search. A runtime subclass sets
    `runtime`, `src`, `trg`, `decode` (its defaults; each call may pass its own) and
    `device`, and gives `searching(decode)`, `no_attention()`, `members()` and
    `corpus_losses`."""

    runtime: str  # the library it searches with: torch or onnxruntime
    src: TextSide
    trg: TextSide
    decode: DecodeConfig
    device: Any

    def searching(self, decode: DecodeConfig) -> AbstractContextManager[Search]:
        """The search for `decode`'s settings, ready for batches while the block runs."""
        raise NotImplementedError

    def no_attention(self) -> Any:
        """The [1,2] zero attention of an empty line's empty translation."""
        raise NotImplementedError

    def members(self) -> list[dict[str, object]]:
        """What GET /info says of each model: parameters and model config."""
        raise NotImplementedError

    def corpus_losses(
        self, sources: list[str], references: list[str], decode: DecodeConfig
    ) -> tuple[float, float]:
        """evaluation.corpus_losses on this runtime."""
        raise NotImplementedError

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
        empty = [Translation("", [], [], 0.0, self.no_attention())]
        results: list[list[Translation]] = [empty * decode.nbest for _ in lines]
        nonempty = [i for i, tokens in enumerate(source_tokens) if tokens]
        ids = [self.src.vocab.encode(source_tokens[i]) for i in nonempty]
        with self.searching(decode) as search:
            for positions in make_batches([len(row) for row in ids], decode.batch_size):
                found = search([ids[position] for position in positions])
                for position, hypotheses in zip(positions, found, strict=True):
                    line = nonempty[position]
                    results[line] = [
                        self._finish(h, source_tokens[line], truncated[line], decode)
                        for h in hypotheses
                    ]
        return results

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


def open_translator(
    models: Sequence[str | Path],
    device: str = "auto",
    runtime: Runtime = "auto",
    precision: str | None = None,
) -> TextTranslator:
    """The translator of `models` (checkpoints, model folders, Hub ids) on `runtime`.
    `auto` takes onnxruntime for one model folder that holds ONNX files when the device
    (auto, cpu) and precision (fp32, int8) are ones it runs, else torch."""
    from seq2seq.onnx_runtime import OnnxTranslator, check_precision, onnx_folder

    folder = onnx_folder(models[0]) if len(models) == 1 and runtime != "torch" else None
    if runtime == "onnxruntime":
        _check_onnxruntime(models, folder, device)
        check_precision(precision or "fp32")
    elif folder is None or device not in ("auto", "cpu") or precision == "bf16":
        return _torch_translator(models, device)
    return OnnxTranslator.from_folder(folder)


def _check_onnxruntime(models: Sequence[str | Path], folder: Path | None, device: str) -> None:
    """`--runtime onnxruntime` with what it cannot run: one line saying what to change."""
    if len(models) > 1:
        raise UserError("--runtime onnxruntime decodes one model; ensembles need --runtime torch")
    if folder is None:
        raise UserError(
            f"{models[0]}: holds no ONNX files; write them with seq2seq export MODEL "
            "--output DIR --onnx, or use --runtime torch"
        )
    if device not in ("auto", "cpu"):
        raise UserError(f"--runtime onnxruntime runs on the CPU; --device {device} needs torch")


def _torch_translator(models: Sequence[str | Path], device: str) -> TextTranslator:
    try:
        from seq2seq.translator import Translator
    except ModuleNotFoundError as error:
        if error.name != "torch":
            raise
        raise UserError(
            "torch is not installed, and these models need it: translate with one model "
            "folder that holds ONNX files (seq2seq export --onnx), or install torch"
        ) from None
    return Translator.from_checkpoint(list(models), device)
