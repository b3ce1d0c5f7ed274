"""Ensembles: the combination rule, equality with a single model, batch invariance for 2
and 3 members of different sizes, and loading members from checkpoints (toy run)."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch
from conftest import TOY_DATA, random_batch, run_cli, tiny_model
from hypothesis import given
from hypothesis import strategies as st

from seq2seq.checkpoint import load_checkpoint, save_checkpoint
from seq2seq.corpus import read_lines
from seq2seq.ensemble import Ensemble
from seq2seq.errors import UserError
from seq2seq.evaluation import evaluate
from seq2seq.search import beam_search, greedy_search, max_output_lengths
from seq2seq.translator import Translator
from seq2seq.vocab import SOS

SV, TV = 13, 11
SOURCES = read_lines(TOY_DATA / "test.de")[:12]
REFERENCES = read_lines(TOY_DATA / "test.en")[:12]


def members(count: int) -> list:
    """Members of different sizes (a mixed-up member dimension shows as a shape error)."""
    sizes = [dict(hidden=6, decoder_hidden=5), dict(hidden=4, decoder_hidden=9), dict(embedding=3)]
    return [tiny_model(SV, TV, scale=0.8, **sizes[i]) for i in range(count)]


@pytest.mark.parametrize("combine", ["probs", "log_probs"])
def test_a_step_combines_the_members_distributions(combine: str) -> None:
    models = members(3)
    src, lengths = random_batch([5, 3], SV, torch.Generator().manual_seed(0))
    tokens = torch.tensor([SOS, SOS])
    ensemble = Ensemble(models, combine)
    log_probs, _, attention = ensemble.step(tokens, ensemble.start(src, lengths))
    alone = [m.step(tokens, m.start(src, lengths)) for m in models]
    probs = torch.stack([lp.exp() for lp, _, _ in alone])  # [3,B,V]
    expected = probs.mean(0).log() if combine == "probs" else probs.log().mean(0)
    assert torch.allclose(log_probs, expected, atol=1e-6)
    assert torch.allclose(attention, torch.stack([a for _, _, a in alone]).mean(0), atol=1e-6)
    if combine == "probs":  # a distribution again
        assert torch.allclose(log_probs.exp().sum(1), torch.ones(2), atol=1e-5)


def test_the_default_combination_is_the_mean_of_log_probabilities() -> None:
    models = members(2)
    src, lengths = random_batch([5, 3], SV, torch.Generator().manual_seed(0))
    tokens = torch.tensor([SOS, SOS])
    default, mean_of_logs = Ensemble(models), Ensemble(models, "log_probs")
    assert torch.equal(
        default.step(tokens, default.start(src, lengths))[0],
        mean_of_logs.step(tokens, mean_of_logs.start(src, lengths))[0],
    )
    with pytest.raises(ValueError, match="^an ensemble needs at least one model$"):
        Ensemble([])


@pytest.mark.parametrize("combine", ["probs", "log_probs"])
def test_an_ensemble_of_one_is_that_model(combine: str) -> None:
    (model,) = members(1)
    src, lengths = random_batch([6, 2, 9, 4], SV, torch.Generator().manual_seed(1))
    limits = max_output_lengths(lengths, 1.5, 3)
    ensemble = Ensemble([model], combine)
    for ours, theirs in zip(
        greedy_search(ensemble, src, lengths, limits),
        greedy_search(model, src, lengths, limits),
        strict=True,
    ):
        assert ours.tokens == theirs.tokens and ours.score == pytest.approx(theirs.score, abs=1e-6)
        assert torch.allclose(ours.attention, theirs.attention)
    together = beam_search(ensemble, src, lengths, limits, 4, alpha=0.6, nbest=3)
    single = beam_search(model, src, lengths, limits, 4, alpha=0.6, nbest=3)
    for ours, theirs in zip(together, single, strict=True):
        assert [h.tokens for h in ours] == [h.tokens for h in theirs]
        assert [h.score for h in ours] == pytest.approx([h.score for h in theirs], abs=1e-6)


@given(
    lengths=st.lists(st.integers(2, 9), min_size=2, max_size=5),
    count=st.sampled_from([2, 3]),
    beam=st.sampled_from([1, 3]),
    seed=st.integers(0, 1000),
)
def test_an_ensemble_decodes_a_sentence_alike_alone_or_in_a_batch(
    lengths: list[int], count: int, beam: int, seed: int
) -> None:
    ensemble = Ensemble(members(count))
    src, src_lengths = random_batch(lengths, SV, torch.Generator().manual_seed(seed))
    limits = max_output_lengths(src_lengths, 1.5, 3)
    together = beam_search(ensemble, src, src_lengths, limits, beam, alpha=0.6, nbest=beam)
    for row, length in enumerate(lengths):
        alone = beam_search(
            ensemble, src[row : row + 1, :length], src_lengths[row : row + 1],
            limits[row : row + 1], beam, alpha=0.6, nbest=beam,
        )[0]  # fmt: skip
        assert [h.tokens for h in alone] == [h.tokens for h in together[row]]
        assert [h.score for h in alone] == pytest.approx([h.score for h in together[row]], abs=1e-5)


@pytest.mark.parametrize("combine", ["probs", "log_probs"])
def test_teacher_forced_scores_combine_the_members(combine: str) -> None:
    models = members(2)
    src, lengths = random_batch([7, 4], SV, torch.Generator().manual_seed(5))
    trg_in = torch.tensor([[SOS, 4, 5, 6], [SOS, 7, 8, 9]])
    with torch.no_grad():
        ours = Ensemble(models, combine).sequence_log_probs(src, lengths, trg_in, 1.0)
        alone = torch.stack([m.sequence_log_probs(src, lengths, trg_in, 1.0) for m in models])
    expected = alone.exp().mean(0).log() if combine == "probs" else alone.mean(0)
    torch.testing.assert_close(ours, expected)
    with pytest.raises(ValueError, match="^an ensemble scores with teacher forcing 1 or 0 only$"):
        Ensemble(models, combine).sequence_log_probs(src, lengths, trg_in, 0.5)


def test_free_running_scores_feed_the_ensembles_own_predictions() -> None:
    ensemble = Ensemble(members(2))
    src, lengths = random_batch([7, 4], SV, torch.Generator().manual_seed(3))
    limits = torch.tensor([6, 6])
    greedy = greedy_search(ensemble, src, lengths, limits)
    trg_in = torch.full((2, 6), 9)  # free running reads only the first column, <sos>
    trg_in[:, 0] = SOS
    with torch.no_grad():
        scored = ensemble.sequence_log_probs(src, lengths, trg_in, 0.0)  # [B,6,V]
    for row, hypothesis in enumerate(greedy):
        steps = min(len(hypothesis.tokens) + 1, 6)  # the tokens and <eos>, or the limit
        picked = scored[row].argmax(1)[: len(hypothesis.tokens)].tolist()
        assert picked == hypothesis.tokens
        total = scored[row, :steps].max(1).values.sum()
        assert float(total) == pytest.approx(hypothesis.score, abs=1e-5)


def noisy_copy(checkpoint: Path, path: Path, seed: int) -> Path:
    """Another model with the same text sides: the toy model's weights, perturbed."""
    payload = load_checkpoint(checkpoint)
    generator = torch.Generator().manual_seed(seed)
    for tensor in payload["model"].values():
        tensor.add_(0.05 * torch.randn(tensor.shape, generator=generator))
    save_checkpoint(payload, path)
    return path


def test_translator_decodes_an_ensemble_of_checkpoints(
    toy_checkpoint: Path, toy_translator: Translator, tmp_path: Path
) -> None:
    other = noisy_copy(toy_checkpoint, tmp_path / "other.pt", 0)
    same = Translator.from_checkpoint([toy_checkpoint, toy_checkpoint], "cpu")
    beam = same.decode.updated(beam_size=3)
    twice = [t.text for t in same.translate(SOURCES, beam)]
    assert twice == [t.text for t in toy_translator.translate(SOURCES, beam)]
    pair = Translator.from_checkpoint([toy_checkpoint, other], "cpu")
    assert len(pair.models) == 2
    evaluation = evaluate(pair, SOURCES, REFERENCES, beam)
    assert evaluation.scores.bleu > 10 and math.isfinite(evaluation.free_running_loss)
    assert all(t.gates is None for t in evaluation.translations)


@pytest.mark.parametrize("beam_size", [1, 3])
def test_a_translator_of_two_models_decodes_with_both(toy_translator: Translator, beam_size):
    """Each output's score is the mean of what the two members, each scoring that output
    alone with teacher forcing, give it: neither member's own score."""
    (model,) = toy_translator.models
    other = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in other.parameters():
            parameter.add_(0.3 * torch.randn(parameter.shape, generator=generator))
    src, trg = toy_translator.src, toy_translator.trg
    decode = toy_translator.decode.updated(beam_size=beam_size, alpha=0.0, combine="log_probs")
    pair = Translator([model, other], src, trg, decode, torch.device("cpu"))
    for source, result in zip(SOURCES, pair.translate(SOURCES, decode), strict=True):
        ids = src.ids(src.tokenize([source])[0]).unsqueeze(0)  # [1,S]
        output = trg.ids(result.tokens).unsqueeze(0)  # <sos> tokens <eos>
        steps = result.attention.size(0)  # the tokens and <eos>, or the length limit
        members = []
        with torch.no_grad():
            for member in (model, other):
                log_probs = member.sequence_log_probs(
                    ids, torch.tensor([ids.size(1)]), output[:, :-1], 1.0
                )[0]  # [T,V]
                scored = log_probs.gather(1, output[0, 1:].unsqueeze(1))[:steps]
                members.append(float(scored.sum()))
        assert result.score == pytest.approx(sum(members) / 2, abs=1e-4)
        assert abs(members[0] - members[1]) > 1e-3, "the members disagree"


def test_members_must_share_their_text(toy_checkpoint: Path, tmp_path: Path) -> None:
    payload = load_checkpoint(toy_checkpoint)
    payload["vocab"]["trg"][-1] = "ungesehen"
    foreign = tmp_path / "foreign.pt"
    save_checkpoint(payload, foreign)
    with pytest.raises(UserError, match="foreign.pt and .*best.pt .*target vocabulary"):
        Translator.from_checkpoint([toy_checkpoint, foreign], "cpu")
    code, out, err = run_cli("translate", "-m", toy_checkpoint, "-m", foreign, input="Ein Hund.\n")
    assert code == 2 and out == "" and err.count("\n") == 1 and "target vocabulary" in err
