"""One language of a model: its tokenizer and vocabulary, text <-> ids.

Training, translation, evaluation and the benchmark all encode through a `TextSide`, and
training pairs pass one filter (`usable_pair`), so every path sees the same ids.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import Tensor

from seq2seq.tokenizer import AnyTokenizer
from seq2seq.vocab import Vocabulary


@dataclass(frozen=True)
class TextSide:
    tokenizer: AnyTokenizer
    vocab: Vocabulary

    def tokenize(self, lines: Iterable[str]) -> list[list[str]]:
        return self.tokenizer.tokenize(lines)

    def ids(self, tokens: list[str]) -> Tensor:
        """tokens -> [len(tokens) + 2] ids <sos> ... <eos>; unknown tokens are <unk>."""
        return torch.tensor(self.vocab.encode(tokens), dtype=torch.long)

    def encode(self, lines: Iterable[str]) -> list[Tensor]:
        """Lines -> one id tensor per line."""
        return [self.ids(tokens) for tokens in self.tokenize(lines)]

    def tokens(self, ids: Iterable[int]) -> list[str]:
        """Ids -> tokens, up to the first <eos>."""
        return self.vocab.decode(ids)

    def detokenize(self, tokens: list[str]) -> str:
        return self.tokenizer.detokenize(tokens)

    def difference(self, other: TextSide) -> str | None:
        """What makes two sides read or write text differently, or None if nothing does."""
        if self.tokenizer.identity != other.tokenizer.identity:
            return "tokenizer"
        if self.vocab.itos != other.vocab.itos:
            return f"vocabulary ({len(self.vocab)} vs {len(other.vocab)} entries)"
        return None


def usable_pair(src: list[str], trg: list[str], max_length: int) -> bool:
    """Training keeps a pair when both sides have 1 to max_length tokens."""
    return 0 < len(src) <= max_length and 0 < len(trg) <= max_length
