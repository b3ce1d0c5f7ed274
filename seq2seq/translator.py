"""The Python API: load a checkpoint once, translate lists of strings.

    from seq2seq.translator import Translator
    translator = Translator.from_checkpoint("runs/multi30k_de_en/best.pt")
    for result in translator.translate(["Zwei Männer stehen am Strand."]):
        print(result.text, result.score)

`train` (validation), `translate` and `evaluate` all decode through this class.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from seq2seq.checkpoint import load_checkpoint
from seq2seq.config import DecodeConfig, config_from_dict
from seq2seq.data import Batch, collate, make_batches
from seq2seq.errors import UserError, is_out_of_memory
from seq2seq.gates import GateValues
from seq2seq.model import Seq2Seq
from seq2seq.search import Hypothesis, beam_search, greedy_search, max_output_lengths
from seq2seq.tokenizer import AnyTokenizer, make_tokenizers
from seq2seq.vocab import SPECIALS, UNK, Vocabulary


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
    def __init__(
        self,
        model: Seq2Seq,
        src_vocab: Vocabulary,
        trg_vocab: Vocabulary,
        src_tokenizer: AnyTokenizer,
        trg_tokenizer: AnyTokenizer,
        decode: DecodeConfig,
        device: torch.device,
    ):
        self.model = model
        self.src_vocab, self.trg_vocab = src_vocab, trg_vocab
        self.src_tokenizer, self.trg_tokenizer = src_tokenizer, trg_tokenizer
        self.decode = decode
        self.device = device

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = "auto") -> Translator:
        torch_device = resolve_device(device)
        payload = load_checkpoint(path)
        try:
            config = config_from_dict(payload["config"], source=f"{path} (config)")
            src_vocab = Vocabulary(payload["vocab"]["src"])
            trg_vocab = Vocabulary(payload["vocab"]["trg"])
            model = Seq2Seq(config.model, len(src_vocab), len(trg_vocab))
            model.load_state_dict(payload["model"])
            src_tokenizer, trg_tokenizer = make_tokenizers(config, payload["tokenizer"])
        except (KeyError, TypeError, ValueError, RuntimeError) as error:
            raise UserError(f"{path}: damaged seq2seq checkpoint ({error})") from None
        model.to(torch_device).eval()
        return cls(
            model, src_vocab, trg_vocab, src_tokenizer, trg_tokenizer, config.decode, torch_device
        )

    def translate(self, lines: list[str]) -> list[Translation]:
        """One Translation per line, in order; an empty line gives an empty translation."""
        return [candidates[0] for candidates in self.translate_nbest(lines)]

    def translate_nbest(self, lines: list[str], nbest: int = 1) -> list[list[Translation]]:
        """The `nbest` best translations of each line, best first (decoded with
        self.decode: beam size, length penalty, unknown-word replacement, limits)."""
        decode = self.decode
        if nbest > decode.beam_size:
            raise UserError(
                f"--nbest {nbest} needs a beam of at least {nbest} (got {decode.beam_size})"
            )
        source_tokens = self.src_tokenizer.tokenize(lines)
        truncated = [len(tokens) > decode.max_source_length for tokens in source_tokens]
        source_tokens = [tokens[: decode.max_source_length] for tokens in source_tokens]
        empty = [Translation("", [], [], 0.0, torch.zeros(1, 2))]
        results: list[list[Translation]] = [empty * nbest for _ in lines]
        nonempty = [i for i, tokens in enumerate(source_tokens) if tokens]
        ids = [torch.tensor(self.src_vocab.encode(source_tokens[i])) for i in nonempty]
        was_training = self.model.training
        self.model.eval()
        for positions in make_batches([len(row) for row in ids], decode.batch_size):
            batch = collate(positions, ids, None).to(self.device)
            limits = max_output_lengths(
                batch.src_lengths, decode.max_length_ratio, decode.max_length_offset
            )
            try:
                found = self._search(batch, limits, nbest)
            except (RuntimeError, MemoryError) as error:
                if not is_out_of_memory(error):
                    raise
                raise UserError(
                    f"out of memory translating {len(positions)} sentences at once; "
                    f"lower the batch size (now {decode.batch_size}, --batch-size)"
                ) from None
            for position, hypotheses in zip(positions, found, strict=True):
                line = nonempty[position]
                results[line] = [
                    self._finish(h, source_tokens[line], truncated[line]) for h in hypotheses
                ]
        self.model.train(was_training)
        return results

    def _search(self, batch: Batch, limits: Tensor, nbest: int) -> list[list[Hypothesis]]:
        """Greedy for beam size 1, else beam search: the `nbest` best per sentence."""
        decode = self.decode
        bf16 = decode.precision == "bf16"
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=bf16):
            if decode.beam_size == 1:
                hypotheses = greedy_search(self.model, batch.src, batch.src_lengths, limits)
                return [[h] for h in hypotheses]
            return beam_search(
                self.model,
                batch.src,
                batch.src_lengths,
                limits,
                decode.beam_size,
                decode.alpha,
                nbest,
            )

    def _finish(self, hypothesis: Hypothesis, source: list[str], truncated: bool) -> Translation:
        """Ids -> tokens -> text, replacing <unk> from the source if asked to."""
        tokens = self.trg_vocab.decode(hypothesis.tokens)
        translation = Translation(
            "", tokens, source, hypothesis.score, hypothesis.attention, truncated, hypothesis.gates
        )
        if self.decode.replace_unk and not self.trg_tokenizer.subword:  # pieces are never <unk>
            translation.tokens = replace_unknown(tokens, source, translation.alignment())
        translation.text = self.trg_tokenizer.detokenize(translation.tokens)
        return translation


def replace_unknown(tokens: list[str], source: list[str], alignment: list[int]) -> list[str]:
    """Each <unk> output token becomes the source token it attends to most."""
    return [
        source[alignment[i]] if token == SPECIALS[UNK] else token for i, token in enumerate(tokens)
    ]
