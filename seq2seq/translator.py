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
from seq2seq.config import Config, DecodeConfig, config_from_dict
from seq2seq.data import collate, make_batches
from seq2seq.errors import UserError
from seq2seq.model import Seq2Seq
from seq2seq.search import greedy_search, max_output_lengths
from seq2seq.tokenizer import Tokenizer
from seq2seq.vocab import Vocabulary


@dataclass
class Translation:
    text: str  # detokenized output
    tokens: list[str]  # output tokens, without <eos>
    source_tokens: list[str]
    score: float  # log-probability of the output (with <eos>)
    attention: Tensor  # [len(tokens) + 1, len(source_tokens) + 2]: rows output (+<eos>),
    #                    columns <sos> source <eos>


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
        src_tokenizer: Tokenizer,
        trg_tokenizer: Tokenizer,
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
            tokenizer_names = payload["tokenizer"]
        except (KeyError, TypeError, ValueError, RuntimeError) as error:
            raise UserError(f"{path}: damaged seq2seq checkpoint ({error})") from None
        src_tokenizer, trg_tokenizer = make_tokenizers(config, tokenizer_names)
        model.to(torch_device).eval()
        return cls(
            model, src_vocab, trg_vocab, src_tokenizer, trg_tokenizer, config.decode, torch_device
        )

    def translate(self, lines: list[str], batch_size: int | None = None) -> list[Translation]:
        """One Translation per line, in order; an empty line gives an empty translation."""
        source_tokens = self.src_tokenizer.tokenize(lines)
        results: list[Translation | None] = [None] * len(lines)
        nonempty = [i for i, tokens in enumerate(source_tokens) if tokens]
        ids = [torch.tensor(self.src_vocab.encode(source_tokens[i])) for i in nonempty]
        was_training = self.model.training
        self.model.eval()
        batches = make_batches([len(row) for row in ids], batch_size or self.decode.batch_size)
        for positions in batches:
            batch = collate(positions, ids, None).to(self.device)
            limits = max_output_lengths(
                batch.src_lengths, self.decode.max_length_ratio, self.decode.max_length_offset
            )
            hypotheses = greedy_search(self.model, batch.src, batch.src_lengths, limits)
            for position, hypothesis in zip(positions, hypotheses, strict=True):
                line = nonempty[position]
                tokens = self.trg_vocab.decode(hypothesis.tokens)
                results[line] = Translation(
                    self.trg_tokenizer.detokenize(tokens),
                    tokens,
                    source_tokens[line],
                    hypothesis.score,
                    hypothesis.attention,
                )
        self.model.train(was_training)
        empty = Translation("", [], [], 0.0, torch.zeros(0, 0))
        return [result or empty for result in results]


def make_tokenizers(
    config: Config, names: dict[str, str] | None = None
) -> tuple[Tokenizer, Tokenizer]:
    """Source and target tokenizers; `names` (from a checkpoint) pins the spaCy pipelines."""
    data = config.data
    src_name = names["src"] if names else data.src_pipeline
    trg_name = names["trg"] if names else data.trg_pipeline
    return (
        Tokenizer(data.src_lang, src_name, data.lowercase),
        Tokenizer(data.trg_lang, trg_name, data.lowercase),
    )
