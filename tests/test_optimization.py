"""One optimizer step on a tiny model: gradient clipping, teacher forcing at the configured
rate, and the learning-rate schedule (warm-up, skipped updates, a restored schedule, a
resumed run's new rate)."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from conftest import random_batch, tiny_model

from seq2seq.config import TrainConfig
from seq2seq.data import Batch
from seq2seq.loss import sequence_loss
from seq2seq.model import Seq2Seq
from seq2seq.optimization import Optimization, make_optimizer
from seq2seq.vocab import EOS, PAD, SOS

SV, TV = 13, 11
CPU = torch.device("cpu")


def batch(target_lengths: list[int], seed: int = 0) -> Batch:
    """Random pairs: sources of 3 to 7 ids, targets <sos> w... <eos> of the given lengths."""
    generator = torch.Generator().manual_seed(seed)
    src, src_lengths = random_batch([3 + i % 5 for i in range(len(target_lengths))], SV, generator)
    trg = torch.full((len(target_lengths), max(target_lengths)), PAD)
    for row, length in enumerate(target_lengths):
        words = torch.randint(4, TV, (length - 2,), generator=generator)
        trg[row, :length] = torch.cat([torch.tensor([SOS]), words, torch.tensor([EOS])])
    return Batch(src, src_lengths, trg, list(range(len(target_lengths))))


def optimization(model: Seq2Seq, **train: object) -> Optimization:
    return Optimization(model, model, TrainConfig(**train), CPU)


def step(optimizer: Optimization, pairs: Batch, finite: bool = True) -> None:
    """One update on `pairs`, its loss per target token; with finite=False a zero divisor
    makes every gradient infinite, as an overflowing batch would."""
    divisor = pairs.target_tokens if finite else 0.0
    assert optimizer.step([pairs], divisor, distributed=False)[1] is finite


def gradient_norm(model: torch.nn.Module) -> float:
    return float(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters()])))


def test_gradients_are_clipped_to_clip_norm() -> None:
    model, pairs = tiny_model().train(), batch([6, 4, 5])
    reference = copy.deepcopy(model)
    logits = reference(pairs.src, pairs.src_lengths, pairs.trg[:, :-1])
    (sequence_loss(logits, pairs.trg) / pairs.target_tokens).backward()
    unclipped = gradient_norm(reference)
    assert unclipped > 0.05 * 4, "the test needs gradients well above the clip norm"
    step(optimization(model, clip_norm=0.05), pairs)
    assert gradient_norm(model) == pytest.approx(0.05, rel=1e-4)
    for clipped, full in zip(model.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(clipped.grad, full.grad * (0.05 / unclipped))


def test_without_clip_norm_the_gradients_are_left_whole() -> None:
    model, pairs = tiny_model().train(), batch([6, 4, 5])
    reference = copy.deepcopy(model)
    logits = reference(pairs.src, pairs.src_lengths, pairs.trg[:, :-1])
    (sequence_loss(logits, pairs.trg) / pairs.target_tokens).backward()
    step(optimization(model, clip_norm=None), pairs)
    for trained, full in zip(model.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(trained.grad, full.grad)


@pytest.mark.parametrize("ratio", [0.0, 0.3, 0.7, 1.0])
def test_teacher_forcing_feeds_gold_tokens_at_the_configured_rate(ratio: float) -> None:
    """Each fed-back prediction is one call of the target embedding on a [B] tensor; the
    gold inputs are embedded once, as [B,T]."""
    model, pairs = tiny_model().train(), batch([301])
    fed_back = []
    model.decoder.embedding.register_forward_hook(
        lambda module, inputs, output: fed_back.append(inputs[0].dim() == 1)
    )
    step(optimization(model, teacher_forcing=ratio), pairs)
    steps = pairs.trg.size(1) - 2  # inputs after <sos> of trg[:, :-1]
    forced = 1 - sum(fed_back) / steps
    assert forced == pytest.approx(ratio, abs=0.08)
    assert fed_back[0] is False  # the gold inputs, embedded first


def warmup(step_count: int, rate: float = 0.01, steps: int = 4) -> float:
    """inverse_sqrt after `step_count` updates: a linear rise over `steps`, then 1/sqrt."""
    return rate * min((step_count + 1) / steps, math.sqrt(steps / (step_count + 1)))


def test_inverse_sqrt_counts_only_the_updates_made() -> None:
    model, pairs = tiny_model().train(), batch([6, 4, 5])
    optimizer = optimization(model, scheduler="inverse_sqrt", warmup_steps=4, learning_rate=0.01)
    assert optimizer.learning_rate == pytest.approx(warmup(0))
    rates = []
    for finite in (True, False, True, True, False, True, True):
        before = copy.deepcopy(model.state_dict())
        step(optimizer, pairs, finite)
        unchanged = all(torch.equal(before[k], v) for k, v in model.state_dict().items())
        assert unchanged is not finite, "a skipped update leaves the weights as they were"
        rates.append(optimizer.learning_rate)
    assert rates == pytest.approx([warmup(n) for n in (1, 1, 2, 3, 3, 4, 5)])


def trained(scheduler: str, steps: int = 2) -> tuple[Seq2Seq, Optimization]:
    model = tiny_model().train()
    optimizer = optimization(
        model, scheduler=scheduler, warmup_steps=4, learning_rate=0.01, min_learning_rate=0.0
    )
    for seed in range(steps):
        step(optimizer, batch([6, 4, 5], seed))
    return model, optimizer


def resumed(model: Seq2Seq, optimizer: Optimization, **train: object) -> Optimization:
    """A new Optimization of a copy of `model`, from `optimizer`'s saved state."""
    settings = dict(scheduler=optimizer.train.scheduler, warmup_steps=4, learning_rate=0.01)
    again = optimization(copy.deepcopy(model), **{**settings, "min_learning_rate": 0.0, **train})
    again.load_state_dict(copy.deepcopy(optimizer.state_dict()))
    return again


def test_a_restored_schedule_continues_where_it_was() -> None:
    model, optimizer = trained("inverse_sqrt")
    again = resumed(model, optimizer)
    for seed in (5, 6, 7):
        step(optimizer, batch([5, 7], seed))
        step(again, batch([5, 7], seed))
        assert again.learning_rate == optimizer.learning_rate
    assert optimizer.learning_rate == pytest.approx(warmup(5))
    for ours, theirs in zip(again.model.parameters(), model.parameters(), strict=True):
        assert torch.equal(ours, theirs)


@pytest.mark.parametrize(
    "scheduler, expected",
    [
        ("none", [0.02, 0.02]),
        ("inverse_sqrt", [2 * warmup(2), 2 * warmup(3)]),  # the warm-up's shape, scaled
        ("plateau", [0.02, 0.02]),  # the plateau rate starts again at the new one
    ],
)
def test_a_new_learning_rate_applies_from_the_next_update(scheduler: str, expected: list) -> None:
    model, optimizer = trained(scheduler)
    again = resumed(model, optimizer, learning_rate=0.02)
    again.change_learning_rate(0.01, 0.02)
    assert again.learning_rate == pytest.approx(expected[0])  # what the next update uses
    assert all(group["lr"] == again.learning_rate for group in again.optimizer.param_groups)
    step(again, batch([5, 7], 9))
    assert again.learning_rate == pytest.approx(expected[1])


def test_a_new_learning_rate_restarts_a_cut_plateau_and_becomes_the_schedules_base() -> None:
    cut = optimization(tiny_model(), scheduler="plateau", learning_rate=0.01,
                       plateau_factor=0.5, plateau_patience=0)  # fmt: skip
    cut.after_validation(1.0)
    cut.after_validation(0.5)  # no gain: the rate is cut to 0.005
    assert cut.learning_rate == pytest.approx(0.005)
    decaying = optimization(tiny_model(), scheduler="inverse_sqrt", learning_rate=0.01)
    for optimizer in (cut, decaying):
        optimizer.change_learning_rate(0.01, 0.02)
        assert [group["initial_lr"] for group in optimizer.optimizer.param_groups] == [0.02]
    assert cut.learning_rate == 0.02  # starts again at the new rate, not 0.005 scaled
    assert decaying.scheduler.base_lrs == [0.02]


def test_the_plateau_schedule_steps_on_validation_scores_higher_is_better() -> None:
    """Signed scores (a loss negated): the rate is cut after plateau_patience validations
    without a higher score, and only under the plateau schedule."""
    plateau = optimization(tiny_model(), scheduler="plateau", learning_rate=0.02,
                           plateau_factor=0.5, plateau_patience=1)  # fmt: skip
    constant = optimization(tiny_model(), learning_rate=0.02)
    rates = []
    for score in (-3.0, -2.0, -2.5, -2.6):  # better, then two validations without gain
        for optimizer in (plateau, constant):
            optimizer.after_validation(score)
        rates.append(plateau.optimizer.param_groups[0]["lr"])
    assert rates == [0.02, 0.02, 0.02, 0.01]
    assert constant.optimizer.param_groups[0]["lr"] == 0.02


def test_zero_grad_leaves_no_gradient() -> None:
    model, pairs = tiny_model().train(), batch([6, 4])
    optimizer = optimization(model)
    step(optimizer, pairs)
    assert all(p.grad is not None for p in model.parameters())
    optimizer.zero_grad()
    assert all(p.grad is None for p in model.parameters())


def test_adam_is_fused_on_a_cpu_and_a_gpu_only() -> None:
    model = tiny_model()
    assert make_optimizer(model, 0.1, CPU).defaults["fused"] is True
    assert not make_optimizer(model, 0.1, CPU, fused=False).defaults["fused"]
    assert not make_optimizer(model, 0.1, torch.device("xpu")).defaults["fused"]
    assert optimization(model).optimizer.defaults["fused"] is True
    assert not Optimization(model, model, TrainConfig(), CPU, False).optimizer.defaults["fused"]


def test_precision_sets_autocast_and_only_fp16_scales_the_loss() -> None:
    assert optimization(tiny_model()).autocast_dtype is None
    assert optimization(tiny_model(), precision="bf16").autocast_dtype is torch.bfloat16
    assert not optimization(tiny_model()).scaler.is_enabled()


def test_the_plateau_rate_never_falls_below_min_learning_rate() -> None:
    plateau = optimization(tiny_model(), scheduler="plateau", learning_rate=0.02,
                           plateau_factor=0.5, plateau_patience=0,
                           min_learning_rate=0.015)  # fmt: skip
    for score in (1.0, 0.5, 0.4):
        plateau.after_validation(score)
    assert plateau.learning_rate == pytest.approx(0.015)


def test_inverse_sqrt_without_warmup_starts_at_the_full_rate() -> None:
    assert optimization(tiny_model(), scheduler="inverse_sqrt", warmup_steps=0,
                        learning_rate=0.01).learning_rate == pytest.approx(0.01)  # fmt: skip
