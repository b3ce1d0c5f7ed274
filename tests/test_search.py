"""Greedy search: stops at <eos>, keeps each sentence's length limit, batch-independent;
beam search against a reference written one sentence and one beam at a time."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import random_batch, tiny_model, tiny_model_config
from hypothesis import given, settings
from hypothesis import strategies as st

from seq2seq.model import Seq2Seq
from seq2seq.search import beam_search, greedy_search, length_penalty, max_output_lengths
from seq2seq.vocab import EOS, SOS

SV, TV = 13, 11
CONFIDENCE = 5.0
# log-probability of the scripted token: one-hot logits scaled by CONFIDENCE
STEP_LOG_PROB = CONFIDENCE - math.log(math.exp(CONFIDENCE) + TV - 1)


def script(model: Seq2Seq, monkeypatch: pytest.MonkeyPatch, rows: list[list[int]]) -> list:
    """Make the decoder emit rows[b][t] at step t for batch row b (token 4 once a row's
    script ends); returns the list of token tensors the search fed in, one per step.
    The decoder state carries each row's batch index, since stopped rows leave the batch."""
    fed: list[torch.Tensor] = []
    encode = model.encode

    def encode_with_row_ids(src: torch.Tensor, src_lengths: torch.Tensor) -> tuple:
        memory, state = encode(src, src_lengths)
        return memory, torch.arange(src.size(0)).float().unsqueeze(1).expand_as(state)

    def step(tokens: torch.Tensor, state: torch.Tensor, memory) -> tuple:
        t = len(fed)
        fed.append(tokens.clone())
        script_rows = [rows[int(b)] for b in state[:, 0]]
        ids = torch.tensor([row[t] if t < len(row) else 4 for row in script_rows])
        log_probs = torch.log_softmax(torch.nn.functional.one_hot(ids, TV) * CONFIDENCE, dim=1)
        scores = torch.zeros(memory.mask.shape).masked_fill(~memory.mask, float("-inf"))
        return log_probs, state, torch.softmax(scores, dim=1)

    monkeypatch.setattr(model, "encode", encode_with_row_ids)
    monkeypatch.setattr(model.decoder, "step", step)
    return fed


def test_stops_at_eos(monkeypatch: pytest.MonkeyPatch) -> None:
    model = tiny_model()
    fed = script(model, monkeypatch, [[5, 6, EOS, 7, 7], [8, EOS, 9]])
    src, lengths = random_batch([5, 3], SV)
    first, second = greedy_search(model, src, lengths, torch.tensor([10, 10]))
    assert first.tokens == [5, 6] and second.tokens == [8]
    assert len(fed) == 3, "the loop ends once every sentence has emitted <eos>"
    assert fed[0].tolist() == [SOS, SOS] and fed[1].tolist() == [5, 8]
    assert fed[2].tolist() == [6], "a stopped sentence leaves the batch"
    assert first.score == pytest.approx(3 * STEP_LOG_PROB)  # <eos> counted, nothing after
    assert second.score == pytest.approx(2 * STEP_LOG_PROB)
    assert first.attention.shape == (3, 5) and second.attention.shape == (2, 3)


def test_respects_each_sentences_max_length(monkeypatch: pytest.MonkeyPatch) -> None:
    model = tiny_model()
    fed = script(model, monkeypatch, [[5] * 20, [6] * 20, [7, EOS]])
    src, lengths = random_batch([4, 6, 3], SV)
    hypotheses = greedy_search(model, src, lengths, torch.tensor([2, 5, 9]))
    assert [h.tokens for h in hypotheses] == [[5, 5], [6] * 5, [7]]
    assert len(fed) == 5
    assert [h.score for h in hypotheses] == pytest.approx(
        [2 * STEP_LOG_PROB, 5 * STEP_LOG_PROB, 2 * STEP_LOG_PROB]
    )
    # Without <eos>, one attention row per emitted token.
    assert [tuple(h.attention.shape) for h in hypotheses] == [(2, 4), (5, 6), (2, 3)]


def test_eos_at_the_last_allowed_step(monkeypatch: pytest.MonkeyPatch) -> None:
    model = tiny_model()
    script(model, monkeypatch, [[5, EOS], [6, 6, 6]])
    src, lengths = random_batch([4, 4], SV)
    first, second = greedy_search(model, src, lengths, torch.tensor([2, 2]))
    assert first.tokens == [5] and second.tokens == [6, 6]
    assert first.attention.shape == (2, 4) and second.attention.shape == (2, 4)


def test_max_output_lengths() -> None:
    src_lengths = torch.tensor([2, 5, 12])  # <sos> and <eos> included
    assert max_output_lengths(src_lengths, 2.0, 10).tolist() == [10, 16, 30]
    assert max_output_lengths(src_lengths, 1.5, 0).tolist() == [1, 5, 15]


@given(
    lengths=st.lists(st.integers(2, 9), min_size=1, max_size=5),
    limits=st.lists(st.integers(1, 12), min_size=5, max_size=5),
    seed=st.integers(0, 10_000),
)
def test_batch_equals_alone_and_attention_shape(
    lengths: list[int], limits: list[int], seed: int
) -> None:
    torch.manual_seed(seed)
    model = tiny_model(src_vocab=SV, trg_vocab=TV, scale=0.8)
    src, src_lengths = random_batch(lengths, SV)
    max_lengths = torch.tensor(limits[: len(lengths)])
    batched = greedy_search(model, src, src_lengths, max_lengths)
    assert len(batched) == len(lengths)
    for row, hypothesis in enumerate(batched):
        length = lengths[row]
        (alone,) = greedy_search(
            model,
            src[row : row + 1, :length],
            src_lengths[row : row + 1],
            max_lengths[row : row + 1],
        )
        assert hypothesis.tokens == alone.tokens
        assert hypothesis.score == pytest.approx(alone.score, abs=1e-4)
        assert torch.allclose(hypothesis.attention, alone.attention, atol=1e-5)

        assert EOS not in hypothesis.tokens
        assert len(hypothesis.tokens) <= limits[row]
        # Shorter than its limit means it stopped at <eos>, which has an attention row too.
        stopped_at_eos = len(hypothesis.tokens) < limits[row]
        rows = len(hypothesis.tokens) + 1 if stopped_at_eos else len(hypothesis.tokens)
        assert hypothesis.attention.shape == (rows, length)
        assert torch.allclose(hypothesis.attention.sum(1), torch.ones(rows), atol=1e-5)
        assert hypothesis.score <= 0


def reference_beam_search(
    model: Seq2Seq, src: torch.Tensor, limit: int, beam_size: int, alpha: float
) -> list[tuple[float, list[int]]]:
    """Beam search for one sentence src [1,S], beam by beam: each step, every unfinished
    beam grows by every token and a finished one (<eos> emitted, or `limit` tokens) stays
    as it is; the `beam_size` candidates best by log-probability / length penalty go on.
    -> [(normalized score, tokens without <eos>)] of the final beams, best first."""

    def normalized(beam: tuple) -> float:
        tokens, score = beam[0], beam[1]
        return score / float(length_penalty(torch.tensor(len(tokens)), alpha))

    # (tokens emitted, <eos> included; summed log-probability; finished; decoder state)
    beams = [((), 0.0, False, model.start(src, torch.tensor([src.size(1)])))]
    while not all(finished for _, _, finished, _ in beams):
        candidates = []
        for tokens, score, finished, state in beams:
            if finished:
                candidates.append((tokens, score, True, state))
                continue
            previous = torch.tensor([tokens[-1] if tokens else SOS])
            log_probs, after, _ = model.step(previous, state)
            for token, log_prob in enumerate(log_probs[0].tolist()):
                grown = (*tokens, token)
                done = token == EOS or len(grown) >= limit
                candidates.append((grown, score + log_prob, done, after))
        beams = sorted(candidates, key=normalized, reverse=True)[:beam_size]
    return [
        (normalized(beam), [t for t in beam[0] if t != EOS])
        for beam in sorted(beams, key=normalized, reverse=True)
    ]


@settings(max_examples=20)
@given(
    lengths=st.lists(st.integers(2, 8), min_size=1, max_size=3),
    beam_size=st.integers(2, 4),
    alpha=st.sampled_from([0.0, 0.6, 2.0]),
    seed=st.integers(0, 10_000),
)
def test_beam_search_equals_a_reference_beam_by_beam(
    lengths: list[int], beam_size: int, alpha: float, seed: int
) -> None:
    """The whole final beam (every hypothesis, its score) of each sentence: pruning at
    each step ranks with the length penalty, as the final ranking does."""
    torch.manual_seed(seed)
    model = tiny_model(src_vocab=SV, trg_vocab=TV, scale=0.8)
    with torch.no_grad():  # <eos> likelier: outputs of many lengths compete
        model.decoder.output.bias[EOS] += 1.5
    src, src_lengths = random_batch(lengths, SV)
    limits = max_output_lengths(src_lengths, 1.0, 2)
    found = beam_search(model, src, src_lengths, limits, beam_size, alpha, nbest=beam_size)
    for row, length in enumerate(lengths):
        with torch.no_grad():
            expected = reference_beam_search(
                model, src[row : row + 1, :length], int(limits[row]), beam_size, alpha
            )
        assert [h.tokens for h in found[row]] == [tokens for _, tokens in expected]
        assert [h.score for h in found[row]] == pytest.approx([s for s, _ in expected], abs=1e-5)


@pytest.mark.parametrize("gate", ["se", "cbam"])
def test_each_hypothesis_carries_its_own_sentences_gate_values(gate: str) -> None:
    """Greedy and beam (n-best too): the encoder gate's values of the hypothesis's own
    sentence, channel [2H] and (CBAM) temporal over its real positions, in fp32 on the CPU."""
    config = tiny_model_config(hidden=6)
    encoder = config.encoder.model_copy(update={"gate": gate, "gate_reduction": 3})
    torch.manual_seed(0)
    model = Seq2Seq(config.model_copy(update={"encoder": encoder}), SV, TV).eval()
    src, lengths = random_batch([6, 3], SV, torch.Generator().manual_seed(4))
    with torch.no_grad():
        gates = model.start(src, lengths).gates  # channel [2,12], temporal [2,6]
        limits = max_output_lengths(lengths, 1.0, 2)
        greedy = [[hypothesis] for hypothesis in greedy_search(model, src, lengths, limits)]
        beams = beam_search(model, src, lengths, limits, 3, alpha=0.6, nbest=2)
        ungated = greedy_search(tiny_model(hidden=6), src, lengths, limits)
    assert [hypothesis.gates for hypothesis in ungated] == [None, None]
    for sentence, hypotheses in [*enumerate(greedy), *enumerate(beams)]:
        for hypothesis in hypotheses:
            values = hypothesis.gates
            assert values.channel.dtype == torch.float32 and values.channel.device.type == "cpu"
            assert torch.equal(values.channel, gates.channel[sentence])
            if gate == "se":
                assert values.temporal is None
            else:
                length = int(lengths[sentence])
                assert torch.equal(values.temporal, gates.temporal[sentence, :length])
