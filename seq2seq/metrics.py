"""Scores: sacreBLEU BLEU and chrF on detokenized text, the tutorial's tokenized BLEU,
and perplexity."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from seq2seq.errors import UserError
from seq2seq.tokenizer import Tokenizer

try:
    from sacrebleu.metrics import BLEU, CHRF
except ModuleNotFoundError:  # the torch-free install of the onnxruntime path leaves it out
    raise UserError(
        "scoring needs sacreBLEU, which is not installed: "
        "pip install -r requirements-onnxruntime-words.txt"
    ) from None


@dataclass
class Scores:
    bleu: float  # sacreBLEU on detokenized hypotheses vs raw references
    chrf: float
    tokenized_bleu: float  # corpus BLEU-4 over lowercased spaCy tokens (tutorial-style)
    bleu_signature: str
    chrf_signature: str

    def as_dict(self) -> dict[str, float | str]:
        return asdict(self)

    def report(self) -> str:
        """The scores as `seq2seq evaluate` prints them, with their signatures."""
        return (
            f"BLEU = {self.bleu:.2f}  ({self.bleu_signature})\n"
            f"chrF = {self.chrf:.2f}  ({self.chrf_signature})\n"
            f"tokenized BLEU = {self.tokenized_bleu:.2f}  (BLEU-4 over spaCy tokens)"
        )


def score_corpus(hypotheses: list[str], references: list[str], tokenizer: Tokenizer) -> Scores:
    """Score detokenized hypotheses against raw reference lines.

    Tokenized BLEU re-tokenizes both sides with the target language's spaCy tokenizer and
    lowercases the tokens (the tutorial's measure, docs/design.md), so it is the same measure
    for any hypothesis text: a cased or lowercased word model's output, a subword
    model's, or a file of translations."""
    bleu, chrf = BLEU(), CHRF()
    return Scores(
        bleu=bleu.corpus_score(hypotheses, [references]).score,
        chrf=chrf.corpus_score(hypotheses, [references]).score,
        tokenized_bleu=tokenized_bleu(
            lowercased(hypotheses, tokenizer), lowercased(references, tokenizer)
        ),
        bleu_signature=str(bleu.get_signature()),
        chrf_signature=str(chrf.get_signature()),
    )


def lowercased(lines: list[str], tokenizer: Tokenizer) -> list[list[str]]:
    return [[token.lower() for token in tokens] for tokens in tokenizer.tokenize(lines)]


def tokenized_bleu(hypotheses: list[list[str]], references: list[list[str]]) -> float:
    """Corpus BLEU-4 over given tokens (no further tokenization), as the tutorial computes it."""
    bleu = BLEU(tokenize="none", force=True)
    return bleu.corpus_score(
        [" ".join(tokens) for tokens in hypotheses], [[" ".join(tokens) for tokens in references]]
    ).score


def perplexity(mean_loss: float) -> float:
    return math.exp(min(mean_loss, 100.0))


SCORE_KEYS = ("bleu", "chrf", "tokenized_bleu", "perplexity", "free_running_perplexity")


def rounded(record: dict[str, object]) -> dict[str, object]:
    """A record for --json with the digits the text report prints: scores and
    perplexities to 2 decimals, losses and other fractional numbers to 4."""
    return {
        key: round(value, 2 if key in SCORE_KEYS else 4) if isinstance(value, float) else value
        for key, value in record.items()
    }
