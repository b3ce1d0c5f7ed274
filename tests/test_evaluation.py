"""Scoring a model on a corpus: the teacher-forced and free-running losses, by hand."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch
from conftest import TOY_DATA, strict

from seq2seq.corpus import read_lines
from seq2seq.evaluation import evaluate
from seq2seq.model import Seq2Seq
from seq2seq.text import TextSide
from seq2seq.translator import Translator
from seq2seq.vocab import SOS

SOURCES = read_lines(TOY_DATA / "test.de")[:10]
REFERENCES = read_lines(TOY_DATA / "test.en")[:10]


def losses_by_hand(model: Seq2Seq, src: TextSide, trg: TextSide) -> tuple[float, float]:
    """Mean -log p per reference token (<eos> included), one sentence and one step at a
    time: fed the reference's previous token, then fed the model's own previous choice."""
    totals, tokens = [0.0, 0.0], 0
    with torch.no_grad():
        for source, reference in zip(SOURCES, REFERENCES, strict=True):
            ids = src.ids(src.tokenize([source])[0]).unsqueeze(0)
            gold = trg.ids(trg.tokenize([reference])[0])[1:].tolist()  # y_1 ... <eos>
            for which, feed_gold in enumerate((True, False)):
                state, previous = model.start(ids, torch.tensor([ids.size(1)])), SOS
                for y in gold:
                    log_probs, state, _ = model.step(torch.tensor([previous]), state)
                    totals[which] -= float(log_probs[0, y])
                    previous = y if feed_gold else int(log_probs.argmax())
            tokens += len(gold)
    return totals[0] / tokens, totals[1] / tokens


def test_losses_by_hand_in_eval_mode(toy_translator: Translator) -> None:
    """A live translator (training's, whose model trains with dropout) of a perturbed toy
    model, so that its own predictions go wrong: both losses are the hand computation's,
    made without dropout, and the model is left in training mode."""
    model = copy.deepcopy(toy_translator.models[0])
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.2 * torch.randn(parameter.shape, generator=generator))
    src, trg = toy_translator.src, toy_translator.trg
    forced, free = losses_by_hand(model.eval(), src, trg)
    assert free > forced + 0.1, "the free-running model errs: the two losses differ"
    live = Translator(model.train(), src, trg, toy_translator.decode, torch.device("cpu"))
    evaluation = evaluate(live, SOURCES, REFERENCES, live.decode.updated(beam_size=1))
    assert evaluation.loss == pytest.approx(forced, rel=1e-5)
    assert evaluation.free_running_loss == pytest.approx(free, rel=1e-5)
    assert model.training


def test_evaluate_json_never_holds_nan_or_infinity(
    tmp_path: Path, toy_checkpoint: Path, cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    import seq2seq.evaluation

    monkeypatch.setattr(seq2seq.evaluation, "corpus_losses", lambda *a: (math.nan, math.inf))
    src, ref = tmp_path / "src.de", tmp_path / "ref.en"
    src.write_text("Ein Hund.\n", encoding="utf-8")
    ref.write_text("A dog.\n", encoding="utf-8")
    code, out, err = cli("evaluate", "-m", toy_checkpoint, "--src", src, "--ref", ref, "--json")
    assert code == 0, err
    record = strict(out)
    assert record["loss"] is None and record["perplexity"] is None
    assert record["free_running_loss"] is None
    assert record["free_running_perplexity"] == pytest.approx(math.exp(100.0))
