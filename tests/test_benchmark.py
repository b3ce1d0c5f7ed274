"""The benchmark's tutorial baseline computes exactly our model's function (a faithful
reading of the tutorial, not a strawman): same logits in training, same translations."""

from __future__ import annotations

import pytest
import torch
import tutorial_baseline as baseline
from conftest import random_batch, tiny_model


@pytest.mark.parametrize("ratio", [1.0, 0.0])
def test_tutorial_forward_equals_ours(ratio: float) -> None:
    torch.manual_seed(0)
    model = tiny_model()
    src, lengths = random_batch([7, 4, 6], 13)
    trg, _ = random_batch([6, 3, 5], 11)
    tutorial = baseline.tutorial_forward(
        baseline.TutorialDecoder(model), src, lengths, trg[:, :-1], ratio
    )
    per_step = baseline.per_step_output_forward(model, src, lengths, trg[:, :-1], ratio)
    ours = model(src, lengths, trg[:, :-1], ratio)
    assert tutorial.shape == ours.shape
    torch.testing.assert_close(tutorial, ours, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(per_step, ours, rtol=1e-5, atol=1e-5)


def test_tutorial_forward_trains_the_same_parameters() -> None:
    model = tiny_model()
    src, lengths = random_batch([5, 4], 13)
    trg, _ = random_batch([4, 4], 11)
    baseline.tutorial_forward(
        baseline.TutorialDecoder(model), src, lengths, trg[:, :-1], 1.0
    ).sum().backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if "encoder_gate" not in n)


def test_tutorial_translation_equals_our_greedy_search(toy_translator) -> None:
    (model,) = toy_translator.models
    decoder = baseline.TutorialDecoder(model)
    sentences = ["ein mann", "zwei hunde laufen", "eine frau"]
    ours = [
        t.text
        for t in toy_translator.translate(sentences, toy_translator.decode.updated(beam_size=1))
    ]
    assert [baseline.tutorial_translate(decoder, toy_translator, s) for s in sentences] == ours
