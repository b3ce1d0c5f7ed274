"""Resuming a run, without training one: which config changes a resumed run takes, what
last.pt must hold, the weights, optimizer and schedule it restores, and the random streams."""

from __future__ import annotations

import random
from pathlib import Path

import numpy
import pytest
import torch
from conftest import TOY_CONFIG, random_batch

from seq2seq import distributed
from seq2seq.checkpoint import Bundle
from seq2seq.config import Config, load_config
from seq2seq.data import Batch
from seq2seq.errors import UserError
from seq2seq.model import Seq2Seq
from seq2seq.optimization import Optimization
from seq2seq.resume import (
    config_changes,
    describe_changes,
    get_rng_state,
    restore_rng,
    restore_training,
    set_rng_state,
)
from seq2seq.text import TextSide
from seq2seq.tokenizer import Tokenizer
from seq2seq.vocab import EOS, SOS, Vocabulary

LAST = Path("run/last.pt")
SIZES = ["model.encoder.embedding_size=8", "model.encoder.hidden_size=6",
         "model.decoder.embedding_size=7", "model.decoder.hidden_size=5"]  # fmt: skip
INVERSE_SQRT = ["train.scheduler=inverse_sqrt", "train.warmup_steps=4", "train.learning_rate=0.01"]


def toy_config(*overrides: str) -> Config:
    return load_config(TOY_CONFIG, [*SIZES, *INVERSE_SQRT, *overrides])


def bundle(config: Config, src_words: list[str] = ("ein", "hund")) -> Bundle:
    """A model of the config's sizes over tiny vocabularies (13 and 11 ids); its weights
    are drawn from torch's generator."""
    src = TextSide(Tokenizer("de"), Vocabulary.build([[*src_words, *"abcdefg"]]))
    trg = TextSide(Tokenizer("en"), Vocabulary.build([list("abcdefg")]))
    return Bundle(config, Seq2Seq(config.model, len(src.vocab), len(trg.vocab)), src, trg)


def trained_payload(config: Config, steps: int = 2) -> tuple[dict, Bundle, Optimization]:
    """last.pt's payload after `steps` optimizer steps."""
    saved = bundle(config)
    optimization = Optimization(saved.model, saved.model, config.train, torch.device("cpu"))
    src, lengths = random_batch([5, 4], 13, torch.Generator().manual_seed(0))
    trg = torch.tensor([[SOS, 4, 5, 6, EOS], [SOS, 7, 8, EOS, 1]])
    for _ in range(steps):
        batch = Batch(src, lengths, trg, [0, 1])
        optimization.step([batch], batch.target_tokens, distributed=False)
    training = {**optimization.state_dict(), "progress": {"step": steps}, "rng": []}
    return saved.payload(steps, training=training), saved, optimization


@pytest.mark.parametrize(
    "change, expected",
    [
        ("train.epochs=20", {"train.epochs": (12, 20)}),
        ("decode.beam_size=3", {"decode.beam_size": (5, 3)}),  # a translation default
        ("train.learning_rate=0.02", {"train.learning_rate": (0.01, 0.02)}),
    ],
)
def test_a_resumed_run_takes_a_change_that_paces_it(change: str, expected: dict) -> None:
    payload = {"config": toy_config().model_dump()}
    assert config_changes(payload, toy_config(change), LAST) == expected
    assert config_changes(payload, toy_config(), LAST) == {}


@pytest.mark.parametrize(
    "change, message",
    [
        ("model.dropout=0.3", "model.dropout=0.1, this config says 0.3"),
        ("train.warmup_steps=8", "train.warmup_steps=4, this config says 8"),
        ("data.max_length=50", "data.max_length=100, this config says 50"),
        ("seed=5", "seed=1234, this config says 5"),
    ],
)
def test_a_change_that_makes_another_run_is_refused(change: str, message: str) -> None:
    payload = {"config": toy_config().model_dump()}
    with pytest.raises(UserError) as refused:
        config_changes(payload, toy_config(change), LAST)
    assert str(refused.value) == (
        f"{LAST}: the run was trained with {message}; a resumed run cannot change it: "
        "set it back, or start a new run"
    )


def test_describe_changes() -> None:
    assert describe_changes({}) == ""
    changes = {"train.epochs": (12, 20), "train.learning_rate": (0.01, 0.02)}
    assert describe_changes(changes) == (
        "; changed: train.epochs 12 -> 20, train.learning_rate 0.01 -> 0.02"
    )


def test_restore_training_takes_weights_optimizer_schedule_and_a_new_rate() -> None:
    payload, saved, optimization = trained_payload(toy_config())
    config = toy_config("train.learning_rate=0.02")
    resumed = bundle(config)  # other initial weights
    again = Optimization(resumed.model, resumed.model, config.train, torch.device("cpu"))
    state = restore_training(payload, {"train.learning_rate": (0.01, 0.02)}, resumed, again, LAST)
    assert state is payload["training"]
    for ours, theirs in zip(resumed.model.parameters(), saved.model.parameters(), strict=True):
        assert torch.equal(ours, theirs)
    assert again.optimizer.state_dict()["state"][0]["step"] == 2  # Adam's moments too
    assert torch.equal(
        again.optimizer.state_dict()["state"][0]["exp_avg"],
        optimization.optimizer.state_dict()["state"][0]["exp_avg"],
    )
    assert again.scheduler.last_epoch == 2
    assert again.learning_rate == pytest.approx(2 * optimization.learning_rate)


def test_restore_training_keeps_the_rate_without_a_change() -> None:
    payload, _, optimization = trained_payload(toy_config())
    resumed = bundle(toy_config())
    again = Optimization(resumed.model, resumed.model, toy_config().train, torch.device("cpu"))
    restore_training(payload, {}, resumed, again, LAST)
    assert again.learning_rate == optimization.learning_rate == pytest.approx(0.0075)


def test_last_pt_must_hold_training_state_and_the_same_vocabularies() -> None:
    payload, _, _ = trained_payload(toy_config())
    config = toy_config()
    model = bundle(config).model
    fresh = Optimization(model, model, config.train, torch.device("cpu"))
    other_words = bundle(config, ["ein", "katze", "hund"])
    with pytest.raises(UserError) as refused:
        restore_training(payload, {}, other_words, fresh, LAST)
    assert str(refused.value) == (
        f"{LAST}: its src vocabulary (13 tokens) does not match the one the data give now "
        "(14): the training data changed"
    )
    weights_only = {key: value for key, value in payload.items() if key != "training"}
    with pytest.raises(UserError, match=f"^{LAST}: holds no training state"):
        restore_training(weights_only, {}, bundle(config), fresh, LAST)


def test_last_pt_must_fit_the_model() -> None:
    payload, _, _ = trained_payload(toy_config())
    config = toy_config("model.decoder.hidden_size=9")
    larger = bundle(config)
    optimization = Optimization(larger.model, larger.model, config.train, torch.device("cpu"))
    with pytest.raises(UserError, match=f"^{LAST}: does not fit this config's model \\("):
        restore_training(payload, {}, larger, optimization, LAST)


def draws() -> tuple:
    """A number from each random stream a run uses."""
    return random.random(), torch.rand(3).tolist(), numpy.random.rand()


def test_the_random_streams_are_saved_and_restored() -> None:
    state = get_rng_state()
    expected = draws()
    assert draws() != expected
    set_rng_state(state)
    assert draws() == expected


def test_each_rank_takes_its_streams_or_all_reseed() -> None:
    first = get_rng_state()
    draws()
    second = get_rng_state()
    expected = draws()
    assert restore_rng([first, second], distributed.Context(rank=1, world_size=2), 7) is True
    assert draws() == expected  # rank 1's streams
    assert restore_rng([first, second], distributed.Context(), 7) is False  # two ranks saved
    reseeded = torch.rand(3).tolist()
    torch.manual_seed(7)
    assert reseeded == torch.rand(3).tolist()
