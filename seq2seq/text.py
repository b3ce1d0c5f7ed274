"""One language of a model: its tokenizer and vocabulary, text <-> ids.

Training, translation, evaluation and the benchmark all encode through a `TextSide`, and
training text takes one path (`training_sides`: tokenizers, one filter, vocabularies,
ids), so every user of a corpus sees the same ids. Translation reads text here on the
onnxruntime path too, so this module imports torch only where it makes tensors.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from seq2seq.config import Config, VocabConfig
from seq2seq.tokenizer import AnyTokenizer, SubwordTokenizer, make_tokenizers
from seq2seq.vocab import Vocabulary

if TYPE_CHECKING:
    from torch import Tensor

    from seq2seq.data import IdRows


@dataclass(frozen=True)
class TextSide:
    tokenizer: AnyTokenizer
    vocab: Vocabulary

    def tokenize(self, lines: Iterable[str]) -> list[list[str]]:
        return self.tokenizer.tokenize(lines)

    def ids(self, tokens: list[str]) -> Tensor:
        """tokens -> [len(tokens) + 2] ids <sos> ... <eos>; unknown tokens are <unk>."""
        import torch  # here: the onnxruntime path reads text through this module without it

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


@dataclass
class ParallelIds:
    """A corpus as id tensors: pair i is (src[i], trg[i]), each <sos> ... <eos>."""

    src: IdRows
    trg: IdRows
    skipped: int = 0  # pairs the training filter dropped

    @property
    def lengths(self) -> list[int]:
        """The longer side of each pair, which batching sorts by."""
        return [max(s, t) for s, t in zip(self.src.lengths(), self.trg.lengths(), strict=True)]

    @property
    def target_tokens(self) -> int:
        """Tokens a model predicts over the corpus: each target after <sos>."""
        return sum(self.trg.lengths()) - len(self.trg)


def usable_pair(src: list[str], trg: list[str], max_length: int) -> bool:
    """Training keeps a pair when both sides have 1 to max_length tokens."""
    return 0 < len(src) <= max_length and 0 < len(trg) <= max_length


def training_sides(
    config: Config,
    sources: list[str],
    targets: list[str],
    saved_tokenizers: dict[str, Any] | None = None,
    report: Callable[[str], None] = lambda message: None,
    vocabularies: tuple[Vocabulary, Vocabulary] | None = None,
) -> tuple[TextSide, TextSide, ParallelIds]:
    """The training text path: tokenizers (SentencePiece models trained on these lines,
    or rebuilt from a checkpoint's), tokens, the one filter, vocabularies from the kept
    pairs only (or a fine-tuned model's own), ids. `report` gets a line as each long
    phase starts."""
    from seq2seq.data import IdRows  # torch: imported by training, not by translation

    if config.vocab.type == "sentencepiece" and saved_tokenizers is None:
        report(f"training SentencePiece models ({config.vocab.size} pieces)")
    src_tokenizer, trg_tokenizer = make_tokenizers(config, saved_tokenizers, (sources, targets))
    report(f"tokenizing {len(sources)} training pairs")
    limit = config.data.max_length
    tokens = zip(src_tokenizer.tokenize(sources), trg_tokenizer.tokenize(targets), strict=True)
    pairs = [(s, t) for s, t in tokens if usable_pair(s, t, limit)]
    src_vocab, trg_vocab = vocabularies or make_vocabularies(
        src_tokenizer, trg_tokenizer, pairs, config.vocab
    )
    src, trg = TextSide(src_tokenizer, src_vocab), TextSide(trg_tokenizer, trg_vocab)
    ids = ParallelIds(
        IdRows(src.vocab.encode(s) for s, _ in pairs),
        IdRows(trg.vocab.encode(t) for _, t in pairs),
        len(sources) - len(pairs),
    )
    return src, trg, ids


def make_vocabularies(
    src_tokenizer: AnyTokenizer,
    trg_tokenizer: AnyTokenizer,
    pairs: list[tuple[list[str], list[str]]],
    vocab: VocabConfig,
) -> tuple[Vocabulary, Vocabulary]:
    """Subword vocabularies are their SentencePiece models' pieces; word vocabularies
    count the tokens of the training pairs."""
    if isinstance(src_tokenizer, SubwordTokenizer):
        assert isinstance(trg_tokenizer, SubwordTokenizer)
        return Vocabulary(src_tokenizer.pieces()), Vocabulary(trg_tokenizer.pieces())
    return (
        Vocabulary.build((s for s, _ in pairs), vocab.min_freq, vocab.max_size),
        Vocabulary.build((t for _, t in pairs), vocab.min_freq, vocab.max_size),
    )
