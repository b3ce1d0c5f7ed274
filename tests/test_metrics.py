"""Metrics: sacreBLEU and chrF on detokenized text, tokenized BLEU, perplexity."""

from __future__ import annotations

import math

import pytest
import sacrebleu

from seq2seq.metrics import lowercased, perplexity, rounded, score_corpus, tokenized_bleu
from seq2seq.tokenizer import Tokenizer

REFERENCES = ["A man rides a bike.", "Two dogs play in the snow.", "A woman sleeps on the grass."]
TOKENS = [
    ["A", "man", "rides", "a", "bike", "."],
    ["Two", "dogs", "play", "in", "the", "snow", "."],
    ["A", "woman", "sleeps", "on", "the", "grass", "."],
]
ENGLISH = Tokenizer("en")


def test_identical_text_scores_100_with_signatures() -> None:
    scores = score_corpus(REFERENCES, REFERENCES, ENGLISH)
    assert scores.bleu == pytest.approx(100.0)
    assert scores.chrf == pytest.approx(100.0)
    assert scores.tokenized_bleu == pytest.approx(100.0)
    assert scores.bleu_signature.startswith("nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|")
    assert f"version:{sacrebleu.__version__}" in scores.bleu_signature
    assert scores.chrf_signature.startswith("nrefs:1|case:mixed|")
    assert set(scores.as_dict()) == {
        "bleu",
        "chrf",
        "tokenized_bleu",
        "bleu_signature",
        "chrf_signature",
    }


def test_bleu_is_standard_sacrebleu() -> None:
    hypotheses = ["A man rides a horse.", "Two dogs play in snow.", "A woman sleeps."]
    scores = score_corpus(hypotheses, REFERENCES, ENGLISH)
    assert scores.bleu == pytest.approx(sacrebleu.corpus_bleu(hypotheses, [REFERENCES]).score)
    assert scores.chrf == pytest.approx(sacrebleu.corpus_chrf(hypotheses, [REFERENCES]).score)
    assert 0 < scores.bleu < 100


def test_bleu_is_case_sensitive_and_tokenized_bleu_is_not() -> None:
    lowered = [r.lower() for r in REFERENCES]
    scores = score_corpus(lowered, REFERENCES, ENGLISH)
    assert scores.bleu < 100
    assert scores.tokenized_bleu == pytest.approx(100.0)  # lowercased tokens (docs/design.md)


def test_tokenized_bleu_retokenizes_with_the_model_tokenizer() -> None:
    assert ENGLISH.tokenize(REFERENCES) == TOKENS
    # The same words glued differently: BLEU over the text's own spaces would differ.
    hypotheses = [
        "a man rides a bike .",
        "Two dogs play in the snow .",
        "A woman sleeps on the grass .",
    ]
    assert score_corpus(hypotheses, REFERENCES, ENGLISH).tokenized_bleu == pytest.approx(100.0)
    assert score_corpus(["A man rides a horse."] * 3, REFERENCES, ENGLISH).tokenized_bleu < 100


def test_tokenized_bleu_uses_the_given_tokens() -> None:
    assert tokenized_bleu(TOKENS, TOKENS) == pytest.approx(100.0)
    # sacreBLEU's 13a tokenizer would split "bike." and find a perfect match; over the
    # given tokens "bike." and "bike ." differ.
    glued = [t[:-2] + [t[-2] + t[-1]] for t in TOKENS]
    assert tokenized_bleu(glued, TOKENS) < 100
    assert tokenized_bleu([["x", "y", "z", "w"]] * 3, TOKENS) == pytest.approx(0.0)


def test_tokenized_bleu_known_value() -> None:
    hypothesis = [["the", "cat", "sat", "on", "the", "mat"]]
    reference = [["the", "cat", "sat", "on", "a", "mat"]]
    # precisions 5/6, 3/5, 2/4, 1/3; same length: no brevity penalty
    expected = 100 * math.exp(sum(math.log(p) for p in (5 / 6, 3 / 5, 2 / 4, 1 / 3)) / 4)
    assert tokenized_bleu(hypothesis, reference) == pytest.approx(expected)


def test_tokenized_bleu_of_a_short_hypothesis() -> None:
    """Hypothesis and reference are not interchangeable: a hypothesis shorter than its
    reference pays the brevity penalty, and the precisions count its own n-grams."""
    hypothesis = "The cat sat on the mat."  # 7 tokens, the reference 8
    reference = "The cat sat on the red mat."
    # precisions 7/7, 5/6, 3/5, 2/4; brevity penalty exp(1 - 8/7)
    precisions = (7 / 7, 5 / 6, 3 / 5, 2 / 4)
    expected = 100 * math.exp(1 - 8 / 7) * math.exp(sum(map(math.log, precisions)) / 4)
    assert score_corpus([hypothesis], [reference], ENGLISH).tokenized_bleu == pytest.approx(
        expected
    )
    hypothesis_tokens, reference_tokens = ENGLISH.tokenize([hypothesis, reference])
    assert tokenized_bleu([hypothesis_tokens], [reference_tokens]) == pytest.approx(expected)


def test_empty_hypotheses_score_zero() -> None:
    scores = score_corpus(["", "", ""], REFERENCES, ENGLISH)
    assert scores.bleu == 0 and scores.tokenized_bleu == 0


def test_perplexity() -> None:
    assert perplexity(0.0) == 1.0
    assert perplexity(math.log(23.2)) == pytest.approx(23.2)
    assert perplexity(1e6) == perplexity(100.0) == math.exp(100.0)  # capped: never overflows


def test_tokenized_bleu_lowercases_as_python_does() -> None:
    """The tutorial's lowercasing: "Straße" stays apart from "STRASSE" (upper-casing
    would join them)."""
    hypothesis, reference = (
        [["die", "straße", "ist", "lang", "."]],
        [["die", "strasse", "ist", "lang", "."]],
    )
    assert tokenized_bleu(hypothesis, reference) < 100.0
    lines = ["Die Straße ist lang ."]
    assert lowercased(lines, Tokenizer("de")) == [["die", "straße", "ist", "lang", "."]]


def test_tokenized_bleu_does_not_warn_of_tokenized_text(caplog: pytest.LogCaptureFixture) -> None:
    """Its input is tokenized on purpose: sacreBLEU's "forgot to detokenize?" warning, which
    it gives for 100 lines ending in " .", would only confuse."""
    lines = [["a", "dog", "runs", "."]] * 100
    with caplog.at_level("WARNING"):
        assert tokenized_bleu(lines, lines) == pytest.approx(100.0)
    assert not caplog.records


def test_a_json_report_has_the_digits_of_the_text_report() -> None:
    """Scores and perplexities to 2 decimals, losses and other fractions to 4; whole
    numbers and text as they are."""
    record = {"bleu": 12.3456, "chrf": 50.0049, "perplexity": 7.12345, "loss": 1.234567,
              "alpha": 0.123456, "sentences": 3, "signature": "nrefs:1"}  # fmt: skip
    assert rounded(record) == {"bleu": 12.35, "chrf": 50.0, "perplexity": 7.12, "loss": 1.2346,
                               "alpha": 0.1235, "sentences": 3, "signature": "nrefs:1"}  # fmt: skip
