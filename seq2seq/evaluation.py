"""Scoring a model on a parallel corpus: perplexity with teacher forcing, then
translation quality (sacreBLEU, chrF, tokenized BLEU) of its decoded output."""

from __future__ import annotations

from dataclasses import dataclass

from seq2seq.config import DecodeConfig
from seq2seq.metrics import Scores, perplexity, score_corpus
from seq2seq.translation import TextTranslator, Translation


@dataclass
class Evaluation:
    loss: float  # mean cross-entropy per target token, gold previous tokens fed
    free_running_loss: float  # the same with the model's own greedy predictions fed
    scores: Scores
    translations: list[Translation]

    @property
    def perplexity(self) -> float:
        return perplexity(self.loss)

    @property
    def free_running_perplexity(self) -> float:
        """What the tutorial reports as perplexity (it evaluates with teacher forcing 0)."""
        return perplexity(self.free_running_loss)

    def summary(self) -> str:
        """One line for a training log."""
        s = self.scores
        return (
            f"loss {self.loss:.3f} ppl {self.perplexity:.2f} (free-running "
            f"{self.free_running_perplexity:.2f}) BLEU {s.bleu:.2f} chrF {s.chrf:.2f} "
            f"tokenized BLEU {s.tokenized_bleu:.2f}"
        )

    def report(self, decode: DecodeConfig) -> str:
        """What `seq2seq evaluate` prints: the search, the scores, the perplexities."""
        search = (
            "greedy" if decode.beam_size == 1 else f"beam {decode.beam_size}, alpha {decode.alpha}"
        )
        return (
            f"{len(self.translations)} sentences translated, {search}\n{self.scores.report()}\n"
            f"perplexity = {self.perplexity:.2f}  (loss {self.loss:.4f})\n"
            f"free-running perplexity = {self.free_running_perplexity:.2f}  "
            "(own greedy predictions fed back, as the tutorial reports it)"
        )

    def as_dict(self) -> dict[str, float | str]:
        return {
            "loss": self.loss,
            "perplexity": self.perplexity,
            "free_running_loss": self.free_running_loss,
            "free_running_perplexity": self.free_running_perplexity,
            **self.scores.as_dict(),
        }


def evaluate(
    translator: TextTranslator,
    sources: list[str],
    references: list[str],
    decode: DecodeConfig | None = None,
) -> Evaluation:
    """Translate `sources` (with `decode`, default the translator's) and score them
    against the raw `references` lines."""
    decode = decode or translator.decode
    loss, free_running_loss = corpus_losses(translator, sources, references, decode)
    translations = translator.translate(sources, decode)
    scores = score_corpus(
        [t.text for t in translations], references, translator.trg.tokenizer.words
    )
    return Evaluation(loss, free_running_loss, scores, translations)


def corpus_losses(
    translator: TextTranslator, sources: list[str], references: list[str], decode: DecodeConfig
) -> tuple[float, float]:
    """Mean cross-entropy per reference token (teacher forcing 1, gold previous tokens fed)
    and free-running (teacher forcing 0, the model's own previous predictions fed), as the
    translator's runtime computes them."""
    return translator.corpus_losses(sources, references, decode)
