"""Translations and their output formats (translation.py): one translation per input
line, whatever the text, and JSON records that hold no NaN or infinity."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from conftest import strict
from hypothesis import given, settings
from hypothesis import strategies as st

from seq2seq.translation import Translation, format_candidates
from seq2seq.vocab import UNK

ODD_LINES = [
    "Ein Hund läuft \U0001f415\U0001f3c3 im Park.",  # emoji
    "\u05d0\u05d9\u05e9 \u05d4\u05d5\u05dc\u05da \u0627\u0644\u0631\u062c\u0644",  # RTL
    "Ein Mann\u0301\u0308 schla\u0308ft.",  # combining marks
    "Ein\x00Hund\x07 mit\x1b[31m Farbe\x7f.",  # control characters
    "Ein Hund\u2028läuft\x85im\x0b Park\x0c.\r",  # line and paragraph separators
    "\u202eRechts nach links\u202c",  # bidi controls
    "Xyzzy Plugh Quuxbar",  # only unknown words
    "a",  # a single character
    "",  # an empty line
    "   \t  ",  # only whitespace
]


def test_odd_input_gives_one_line_each(toy_checkpoint: Path, cli):
    text = "\n".join(ODD_LINES) + "\n"
    code, out, err = cli("translate", "-m", toy_checkpoint, "--beam", "2", input=text.encode())
    assert code == 0, err
    assert out.count("\n") == len(ODD_LINES)
    outputs = out.split("\n")[:-1]
    assert outputs[ODD_LINES.index("")] == ""
    assert outputs[ODD_LINES.index("   \t  ")] == ""


def unknown_everywhere(translator, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every output token an <unk> replaced by the source token it attends to: the output is
    made of the input's own text, the worst case for keeping one line per line."""
    model = translator.searchable()  # the model as prepared for decoding (fp32)
    decoder_step = model.decoder.step

    def step(tokens, state, memory):
        log_probs, state, weights = decoder_step(tokens, state, memory)
        return (
            torch.log_softmax(log_probs + 50.0 * (torch.arange(log_probs.size(1)) == UNK), 1),
            state,
            weights,
        )

    monkeypatch.setattr(model.decoder, "step", step)
    decode = translator.decode.updated(beam_size=1, replace_unk=True)
    monkeypatch.setattr(translator, "decode", decode)


@settings(max_examples=100)
@given(st.lists(st.text(max_size=40), min_size=1, max_size=8))
def test_arbitrary_unicode_never_breaks_line_alignment(
    toy_translator, monkeypatch: pytest.MonkeyPatch, lines: list[str]
):
    lines = [line.replace("\n", " ") for line in lines]  # one input line each
    with monkeypatch.context() as patch:
        unknown_everywhere(toy_translator, patch)
        results = toy_translator.translate(lines)
    assert len(results) == len(lines)
    for line, result in zip(lines, results, strict=True):
        assert (result.text == "") == (not line.split()), (line, result.text)
        assert len(result.text.splitlines()) <= 1 and "\n" not in result.text, repr(result.text)
        assert set(result.tokens) <= set(result.source_tokens)  # all copied from the input


def test_translate_json_never_holds_nan_or_infinity() -> None:
    candidates = [
        Translation("A dog.", ["A", "dog", "."], ["Ein", "Hund"], score, torch.zeros(4, 4))
        for score in (-math.inf, math.nan)
    ]
    record = strict(format_candidates(0, candidates, 2, False, True))
    assert record["score"] is None and [c["score"] for c in record["nbest"]] == [None, None]
    assert record["alignment"] == [0, 0, 0]
