"""The benchmark's tutorial baseline computes exactly our model's function (a faithful
reading of the tutorial, not a strawman): same logits in training, same translations."""

from __future__ import annotations

import importlib.util
import sys

import pytest
import torch
from conftest import ROOT, random_batch, tiny_model

spec = importlib.util.spec_from_file_location("benchmark", ROOT / "scripts/benchmark.py")
benchmark = importlib.util.module_from_spec(spec)
sys.modules["benchmark"] = benchmark
spec.loader.exec_module(benchmark)


@pytest.mark.parametrize("ratio", [1.0, 0.0])
def test_tutorial_forward_equals_ours(ratio: float) -> None:
    torch.manual_seed(0)
    model = tiny_model()
    src, lengths = random_batch([7, 4, 6], 13)
    trg, _ = random_batch([6, 3, 5], 11)
    tutorial = benchmark.tutorial_forward(
        benchmark.TutorialDecoder(model), src, lengths, trg, ratio
    )
    per_step = benchmark.per_step_output_forward(model, src, lengths, trg, ratio)
    ours = model(src, lengths, trg[:, :-1], ratio)
    assert tutorial.shape == ours.shape
    torch.testing.assert_close(tutorial, ours, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(per_step, ours, rtol=1e-5, atol=1e-5)


def test_tutorial_forward_trains_the_same_parameters() -> None:
    model = tiny_model()
    src, lengths = random_batch([5, 4], 13)
    trg, _ = random_batch([4, 4], 11)
    benchmark.tutorial_forward(
        benchmark.TutorialDecoder(model), src, lengths, trg, 1.0
    ).sum().backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if "encoder_gate" not in n)


def test_tutorial_translation_equals_our_greedy_search(toy_translator, monkeypatch) -> None:
    decoder = benchmark.TutorialDecoder(toy_translator.model)
    greedy = toy_translator.decode.model_copy(update={"beam_size": 1})
    monkeypatch.setattr(toy_translator, "decode", greedy)  # the translator is shared
    sentences = ["ein mann", "zwei hunde laufen", "eine frau"]
    ours = [t.text for t in toy_translator.translate(sentences)]
    assert [benchmark.tutorial_translate(decoder, toy_translator, s) for s in sentences] == ours
