"""Vocabulary: tokens <-> ids, built from training data only."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

UNK, PAD, SOS, EOS = 0, 1, 2, 3
SPECIALS = ("<unk>", "<pad>", "<sos>", "<eos>")


class Vocabulary:
    def __init__(self, itos: list[str]):
        if tuple(itos[: len(SPECIALS)]) != SPECIALS:
            raise ValueError(f"a vocabulary must start with {SPECIALS}")
        self.itos = list(itos)
        self.stoi = {token: index for index, token in enumerate(self.itos)}

    @classmethod
    def build(
        cls, sentences: Iterable[list[str]], min_freq: int = 1, max_size: int | None = None
    ) -> Vocabulary:
        """Specials first, then tokens seen >= min_freq times by frequency, then alphabetically."""
        counts = Counter(token for sentence in sentences for token in sentence)
        kept = sorted(
            (token for token, n in counts.items() if n >= min_freq and token not in SPECIALS),
            key=lambda token: (-counts[token], token),
        )
        return cls([*SPECIALS, *kept[:max_size]])

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, tokens: list[str]) -> list[int]:
        """Token ids wrapped in <sos> ... <eos>; unknown tokens become <unk>."""
        return [SOS, *(self.stoi.get(token, UNK) for token in tokens), EOS]

    def decode(self, ids: Iterable[int]) -> list[str]:
        """Tokens for ids, stopping at the first <eos> and skipping <sos>/<pad>."""
        tokens = []
        for index in ids:
            if index == EOS:
                break
            if index not in (SOS, PAD):
                tokens.append(self.itos[index])
        return tokens
