"""The model: shapes, masking, packing, the hoisted attention, teacher forcing, learning."""

from __future__ import annotations

import pytest
import torch
from conftest import TOY_DATA, random_batch, tiny_model, tiny_model_config
from hypothesis import given
from hypothesis import strategies as st

from seq2seq.attention import AdditiveAttention
from seq2seq.corpus import read_lines
from seq2seq.data import collate
from seq2seq.ensemble import Ensemble
from seq2seq.loss import sequence_loss
from seq2seq.metrics import tokenized_bleu
from seq2seq.model import Seq2Seq, evaluating
from seq2seq.search import greedy_search
from seq2seq.tokenizer import Tokenizer
from seq2seq.vocab import EOS, PAD, SOS, Vocabulary

# tiny_model(): E=8, H=6 (outputs 2H=12), decoder E=7, D=5; source V=13, target V=11.
E, H, DE, D, SV, TV = 8, 6, 7, 5, 13, 11


def test_encoder_shapes_and_zero_padding() -> None:
    model = tiny_model()
    src, lengths = random_batch([5, 3, 4], SV)
    outputs, state = model.encoder(src, lengths)
    assert outputs.shape == (3, 5, 2 * H)
    assert state.shape == (3, D)
    assert torch.all(outputs[1, 3:] == 0) and torch.all(outputs[2, 4:] == 0)
    assert torch.all(outputs[0] != 0)
    assert torch.all(state.abs() <= 1)  # tanh


def test_a_batch_padded_beyond_its_longest_sentence_encodes_alike() -> None:
    """The outputs are as wide as the source, [B,S,2H] like the attention mask, also when
    every sentence is shorter than S."""
    model = tiny_model()
    src, lengths = random_batch([5, 3], SV)
    outputs, state = model.encoder(src, lengths)
    wider = torch.cat([src, torch.full((2, 2), PAD)], dim=1)  # [2,7]
    wide_outputs, wide_state = model.encoder(wider, lengths)
    assert wide_outputs.shape == (2, 7, 2 * H)
    assert torch.equal(wide_outputs[:, :5], outputs) and not wide_outputs[:, 5:].any()
    assert torch.equal(wide_state, state)


def test_decoder_step_and_model_shapes() -> None:
    model = tiny_model()
    src, lengths = random_batch([6, 2], SV)
    memory, state = model.encode(src, lengths)
    assert memory.outputs.shape == (2, 6, 2 * H)
    assert memory.keys.shape == (2, 6, D)
    assert memory.mask.tolist() == [[True] * 6, [True, True] + [False] * 4]
    log_probs, new_state, weights = model.decoder.step(torch.tensor([SOS, SOS]), state, memory)
    assert log_probs.shape == (2, TV) and new_state.shape == (2, D) and weights.shape == (2, 6)
    assert torch.allclose(log_probs.exp().sum(1), torch.ones(2))
    trg_in = torch.randint(4, TV, (2, 7))
    assert model(src, lengths, trg_in).shape == (2, 7, TV)


def test_a_step_under_bf16_autocast_gives_fp32_log_probs() -> None:
    """Search sums a step's log-probs over many steps: fp32 also when decoding in bf16
    (CPU autocast leaves log_softmax of bf16 logits in bf16)."""
    model = tiny_model()
    state = model.start(*random_batch([5, 3], SV))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        log_probs, _, _ = model.step(torch.tensor([SOS, SOS]), state)
    assert log_probs.dtype == torch.float32
    assert torch.allclose(log_probs.exp().sum(1), torch.ones(2))


def test_sequence_log_probs_are_each_steps_distribution_in_fp32() -> None:
    """Scoring a corpus: log_softmax over the vocabulary of each step's logits; free
    running (teacher forcing 0) reads only <sos> of the targets; fp32 under bf16 autocast."""
    model = tiny_model()
    src, lengths = random_batch([6, 4], SV, torch.Generator().manual_seed(2))
    trg_in = torch.tensor([[SOS, 4, 5, 6], [SOS, 7, 8, 9]])
    other = torch.cat([trg_in[:, :1], torch.full((2, 3), 10)], dim=1)
    with torch.no_grad():
        forced = model.sequence_log_probs(src, lengths, trg_in, 1.0)  # [B,T,V]
        torch.testing.assert_close(forced, torch.log_softmax(model(src, lengths, trg_in), -1))
        assert not torch.allclose(forced, model.sequence_log_probs(src, lengths, other, 1.0))
        free = model.sequence_log_probs(src, lengths, trg_in, 0.0)
        assert torch.equal(free, model.sequence_log_probs(src, lengths, other, 0.0))
        assert not torch.allclose(free, forced)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert model.sequence_log_probs(src, lengths, trg_in, 1.0).dtype == torch.float32


def test_weights_start_as_the_tutorials_normal_0_001_and_biases_at_zero() -> None:
    torch.manual_seed(0)
    model = Seq2Seq(tiny_model_config(embedding=64, hidden=64), 200, 200)
    weights = torch.cat(
        [p.detach().flatten() for n, p in model.named_parameters() if "weight" in n]
    )
    biases = [p for n, p in model.named_parameters() if "weight" not in n]
    assert abs(float(weights.mean())) < 1e-3 and float(weights.std()) == pytest.approx(
        0.01, rel=0.05
    )
    assert biases and all(not b.any() for b in biases)


def test_memory_select_reorders_rows() -> None:
    """Every field takes the rows asked for, the encoder gate's values too (CBAM: channel
    [B,2H] and temporal [B,S])."""
    config = tiny_model_config()
    gated = config.encoder.model_copy(update={"gate": "cbam", "gate_reduction": 3})
    model = Seq2Seq(config.model_copy(update={"encoder": gated}), SV, TV).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0.0, 0.5)
    src, lengths = random_batch([4, 3], SV)
    memory, _ = model.encode(src, lengths)
    picked = memory.select(torch.tensor([1, 1, 0]))
    fields = {
        "outputs": (picked.outputs, memory.outputs),
        "keys": (picked.keys, memory.keys),
        "mask": (picked.mask, memory.mask),
        "channel gate": (picked.gates.channel, memory.gates.channel),
        "temporal gate": (picked.gates.temporal, memory.gates.temporal),
    }
    for name, (rows, original) in fields.items():
        assert torch.equal(rows, torch.stack([original[1], original[1], original[0]])), name


@given(
    lengths=st.lists(st.integers(1, 9), min_size=1, max_size=6),
    seed=st.integers(0, 10_000),
)
def test_attention_is_zero_on_padding_and_sums_to_one(lengths: list[int], seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    batch, steps = len(lengths), max(lengths)
    attention = AdditiveAttention(memory_size=12, query_size=5, attention_size=7)
    with torch.no_grad():
        for parameter in attention.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 3)
    memory = torch.randn(batch, steps, 12, generator=generator)
    query = torch.randn(batch, 5, generator=generator)
    mask = torch.arange(steps)[None, :] < torch.tensor(lengths)[:, None]
    context, weights = attention(query, attention.keys(memory), memory, mask)
    assert context.shape == (batch, 12) and weights.shape == (batch, steps)
    assert torch.all(weights[~mask] == 0.0)  # exactly zero, not merely small
    assert torch.all(weights[mask] >= 0)
    assert torch.allclose(weights.sum(1), torch.ones(batch), atol=1e-6)
    expected = torch.stack([weights[b] @ memory[b] for b in range(batch)])
    assert torch.allclose(context, expected, atol=1e-5)


def test_hoisted_keys_equal_the_tutorial_formula() -> None:
    """energy = tanh(W [s; h] + b) with W = [W_q, W_k]: the tutorial computes it per step."""
    attention = AdditiveAttention(memory_size=12, query_size=5, attention_size=7).double()
    with torch.no_grad():
        for parameter in attention.parameters():
            parameter.normal_(0.0, 1.0)
    memory = torch.randn(3, 4, 12, dtype=torch.double)  # h
    query = torch.randn(3, 5, dtype=torch.double)  # s
    mask = torch.tensor([[True] * 4, [True, True, True, False], [True, False, False, False]])
    context, weights = attention(query, attention.keys(memory), memory, mask)

    W = torch.cat([attention.query_projection.weight, attention.key_projection.weight], dim=1)
    b = attention.key_projection.bias
    v = attention.energy_weight.weight.squeeze(0)
    s_h = torch.cat([query.unsqueeze(1).expand(-1, 4, -1), memory], dim=2)  # [B,S,D+2H]
    energy = torch.tanh(s_h @ W.T + b)  # [B,S,A]
    scores = (energy @ v).masked_fill(~mask, float("-inf"))
    expected_weights = torch.softmax(scores, dim=1)
    expected_context = torch.einsum("bs,bsh->bh", expected_weights, memory)
    assert torch.allclose(weights, expected_weights, atol=1e-12)
    assert torch.allclose(context, expected_context, atol=1e-12)


@given(
    length=st.integers(2, 7),
    others=st.lists(st.integers(2, 12), min_size=1, max_size=4),
    position=st.integers(0, 4),
    seed=st.integers(0, 10_000),
)
def test_packed_encoder_ignores_padding(
    length: int, others: list[int], position: int, seed: int
) -> None:
    """A sentence alone and inside a padded batch of longer sentences: same outputs."""
    torch.manual_seed(seed)
    model = tiny_model()
    position = min(position, len(others))
    lengths = [*others[:position], length, *others[position:]]
    src, src_lengths = random_batch(lengths, SV)
    alone_src = src[position : position + 1, :length]
    with torch.no_grad():
        outputs, state = model.encoder(src, src_lengths)
        alone_outputs, alone_state = model.encoder(alone_src, torch.tensor([length]))
    assert torch.allclose(outputs[position, :length], alone_outputs[0], atol=1e-6)
    assert torch.all(outputs[position, length:] == 0)
    assert torch.allclose(state[position], alone_state[0], atol=1e-6)


def test_padding_changes_nothing_in_the_loss() -> None:
    model = tiny_model()
    src, lengths = random_batch([5, 3], SV)
    trg = torch.tensor([[SOS, 4, 5, 6, EOS], [SOS, 7, EOS, PAD, PAD]])
    with torch.no_grad():
        batched = sequence_loss(model(src, lengths, trg[:, :-1]), trg)
        first = sequence_loss(model(src[:1], lengths[:1], trg[:1, :-1]), trg[:1])
        second = sequence_loss(model(src[1:, :3], lengths[1:], trg[1:, :2]), trg[1:, :3])
    assert torch.allclose(batched, first + second, atol=1e-5)


def test_training_forward_equals_step_by_step() -> None:
    """With gold inputs, the one-matmul-after-the-loop logits equal per-step search logits."""
    model = tiny_model()
    src, lengths = random_batch([6, 4], SV)
    trg_in = torch.tensor([[SOS, 4, 5, 6, 7], [SOS, 8, 9, 10, 4]])
    with torch.no_grad():
        logits = model(src, lengths, trg_in, teacher_forcing=1.0)
        memory, state = model.encode(src, lengths)
        for t in range(trg_in.size(1)):
            log_probs, state, _ = model.decoder.step(trg_in[:, t], state, memory)
            assert torch.allclose(torch.log_softmax(logits[:, t], -1), log_probs, atol=1e-5)


def gru(x: torch.Tensor, h: torch.Tensor, cell: torch.nn.Module, suffix: str = "") -> torch.Tensor:
    """PyTorch's GRU update (torch.nn.GRU), written out for one vector x and state h:
    r = sigmoid(W_ir x + b_ir + W_hr h + b_hr), z = sigmoid(W_iz x + b_iz + W_hz h + b_hz),
    n = tanh(W_in x + b_in + r * (W_hn h + b_hn)), h' = (1 - z) * n + z * h."""
    W_ir, W_iz, W_in = getattr(cell, f"weight_ih{suffix}").chunk(3)
    W_hr, W_hz, W_hn = getattr(cell, f"weight_hh{suffix}").chunk(3)
    b_ir, b_iz, b_in = getattr(cell, f"bias_ih{suffix}").chunk(3)
    b_hr, b_hz, b_hn = getattr(cell, f"bias_hh{suffix}").chunk(3)
    r = torch.sigmoid(W_ir @ x + b_ir + W_hr @ h + b_hr)
    z = torch.sigmoid(W_iz @ x + b_iz + W_hz @ h + b_hz)
    n = torch.tanh(W_in @ x + b_in + r * (W_hn @ h + b_hn))
    return (1 - z) * n + z * h


def by_hand(model: Seq2Seq, sentence: list[int], inputs: list[int]) -> list[tuple]:
    """docs/design.md's equations for one sentence, one vector at a time, from the weights:
    per decoder input y_{t-1}, (log-probs [V], attention a_t [S], state s_t [D])."""
    encoder, decoder, attention = model.encoder, model.decoder, model.decoder.attention
    x = [encoder.embedding.weight[i] for i in sentence]
    h, forward = torch.zeros(H, dtype=torch.double), []
    for x_t in x:
        forward.append(h := gru(x_t, h, encoder.rnn, "_l0"))
    h, backward = torch.zeros(H, dtype=torch.double), []
    for x_t in reversed(x):
        backward.insert(0, h := gru(x_t, h, encoder.rnn, "_l0_reverse"))
    out = [torch.cat([f, b]) for f, b in zip(forward, backward, strict=True)]  # S x [2H]
    last = torch.cat([forward[-1], backward[0]])  # both directions' final states
    s = torch.tanh(encoder.init_state.weight @ last + encoder.init_state.bias)  # s_0
    W_k, b = attention.key_projection.weight, attention.key_projection.bias
    W_q, v = attention.query_projection.weight, attention.energy_weight.weight[0]
    steps = []
    for y in inputs:
        e = decoder.embedding.weight[y]
        energies = torch.stack([v @ torch.tanh(W_k @ h_j + b + W_q @ s) for h_j in out])
        a = torch.softmax(energies, dim=0)
        c = sum(a_j * h_j for a_j, h_j in zip(a, out, strict=True))
        s = gru(torch.cat([e, c]), s, decoder.rnn)  # the context joins the embedding first
        logits = decoder.output.weight @ torch.cat([s, c, e]) + decoder.output.bias
        steps.append((torch.log_softmax(logits, dim=0), a, s))
    return steps


def test_a_step_computed_by_hand_from_the_weights() -> None:
    """Encoder, initial state, attention and decoder steps against the equations, on a
    padded batch: search steps and the training forward both."""
    model = tiny_model().double()
    src, lengths = random_batch([6, 3, 5], SV, torch.Generator().manual_seed(2))
    trg_in = torch.tensor([[SOS, 4, 5, 6], [SOS, 7, 8, 9], [SOS, 10, 4, 7]])
    with torch.no_grad():
        state = model.start(src, lengths)
        searched = []
        for t in range(trg_in.size(1)):
            log_probs, state, weights = model.step(trg_in[:, t], state)
            searched.append((log_probs, weights, state.hidden))
        trained = torch.log_softmax(model(src, lengths, trg_in, teacher_forcing=1.0), dim=-1)
        for row, length in enumerate(lengths.tolist()):
            expected = by_hand(model, src[row, :length].tolist(), trg_in[row].tolist())
            for t, (log_probs, attention, hidden) in enumerate(expected):
                ours, weights, state = (tensor[row] for tensor in searched[t])
                # search's log-probs are float32 whatever the model's precision
                torch.testing.assert_close(ours.double(), log_probs, rtol=0, atol=1e-6)
                torch.testing.assert_close(trained[row, t], log_probs, rtol=0, atol=1e-12)
                torch.testing.assert_close(weights[:length], attention, rtol=0, atol=1e-12)
                assert not weights[length:].any()  # padding gets no attention
                torch.testing.assert_close(state, hidden, rtol=0, atol=1e-12)


def test_teacher_forcing_zero_feeds_the_models_own_predictions() -> None:
    model = tiny_model()
    src, lengths = random_batch([6, 4], SV)
    trg_in = torch.tensor([[SOS, 4, 5, 6, 7], [SOS, 8, 9, 10, 4]])
    with torch.no_grad():
        logits = model(src, lengths, trg_in, teacher_forcing=0.0)
        memory, state = model.encode(src, lengths)
        tokens = trg_in[:, 0]
        for t in range(trg_in.size(1)):
            log_probs, state, _ = model.decoder.step(tokens, state, memory)
            assert torch.allclose(torch.log_softmax(logits[:, t], -1), log_probs, atol=1e-5)
            tokens = log_probs.argmax(1)


@pytest.mark.parametrize("teacher_forcing", [0.0, 1.0])
def test_teacher_forcing_0_or_1_draws_no_random_number(teacher_forcing: float) -> None:
    """Scoring a corpus (teacher forcing 1, then 0) in the middle of a training run leaves
    the run's random stream as it was: training goes on as it would without it."""
    model = tiny_model()
    src, lengths = random_batch([5, 3], SV)
    trg_in = torch.randint(4, TV, (2, 6))
    before = torch.get_rng_state()
    model(src, lengths, trg_in, teacher_forcing)
    assert torch.equal(torch.get_rng_state(), before)


@pytest.mark.parametrize("teacher_forcing", [0.0, 0.5, 1.0])
def test_teacher_forcing_ratios_train(teacher_forcing: float) -> None:
    model = tiny_model(scale=None).train()
    model.decoder.dropout.p = model.encoder.dropout.p = 0.3
    src, lengths = random_batch([6, 4, 3], SV)
    trg = torch.randint(4, TV, (3, 6))
    trg[:, 0] = SOS
    logits = model(src, lengths, trg[:, :-1], teacher_forcing)
    assert logits.shape == (3, 5, TV)
    loss = sequence_loss(logits, trg)
    loss.backward()
    assert torch.isfinite(loss)
    gradients = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in gradients)
    assert model.encoder.embedding.weight.grad.abs().sum() > 0


def test_evaluating_restores_every_modules_own_mode() -> None:
    """Eval mode inside the block; afterwards each module's own mode, also when the block
    raises: an ensemble made for one call leaves its members as they were."""
    loaded, training = tiny_model(), tiny_model().train()
    ensemble = Ensemble([loaded, training])
    with pytest.raises(RuntimeError, match="decoding failed"), evaluating(ensemble):
        assert not any(module.training for module in ensemble.modules())
        raise RuntimeError("decoding failed")
    assert not any(module.training for module in loaded.modules())
    assert all(module.training for module in training.modules())


def test_tutorial_initialisation() -> None:
    torch.manual_seed(0)
    model = Seq2Seq(tiny_model_config(embedding=64, hidden=64), 500, 500)
    for name, parameter in model.named_parameters():
        if "weight" in name:
            assert 0.008 < float(parameter.detach().std()) < 0.012, name
        else:
            assert torch.all(parameter == 0), name


def test_padding_embedding_is_not_trained() -> None:
    model = tiny_model(scale=None).train()
    src, lengths = random_batch([5, 2], SV)
    trg = torch.tensor([[SOS, 4, 5, EOS], [SOS, 6, EOS, PAD]])
    sequence_loss(model(src, lengths, trg[:, :-1]), trg).backward()
    assert torch.all(model.encoder.embedding.weight.grad[PAD] == 0)
    assert torch.all(model.decoder.embedding.weight.grad[PAD] == 0)


@pytest.mark.parametrize("gate", ["none", "se", "cbam"])
def test_a_tiny_model_learns_a_few_pairs_by_heart(gate: str) -> None:
    sources = read_lines(TOY_DATA / "train.de")[:6]
    targets = read_lines(TOY_DATA / "train.en")[:6]
    src_tokens = Tokenizer("de").tokenize(sources)
    trg_tokens = Tokenizer("en").tokenize(targets)
    src_vocab, trg_vocab = Vocabulary.build(src_tokens), Vocabulary.build(trg_tokens)
    src_ids = [torch.tensor(src_vocab.encode(t)) for t in src_tokens]
    trg_ids = [torch.tensor(trg_vocab.encode(t)) for t in trg_tokens]
    batch = collate(list(range(6)), src_ids, trg_ids)
    assert batch.trg is not None

    torch.manual_seed(0)
    config = tiny_model_config(embedding=24, hidden=32, decoder_embedding=24, decoder_hidden=32)
    encoder = config.encoder.model_copy(update={"gate": gate, "gate_reduction": 4})
    config = config.model_copy(update={"encoder": encoder})
    model = Seq2Seq(config, len(src_vocab), len(trg_vocab))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    model.train()
    for _ in range(400):
        logits = model(batch.src, batch.src_lengths, batch.trg[:, :-1])
        loss = sequence_loss(logits, batch.trg) / batch.target_tokens
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if loss.item() < 0.01:
            break
    assert loss.item() < 0.05

    model.eval()
    hypotheses = greedy_search(model, batch.src, batch.src_lengths, torch.full((6,), 20))
    outputs = [trg_vocab.decode(h.tokens) for h in hypotheses]
    assert outputs == trg_tokens
    assert tokenized_bleu(outputs, trg_tokens) > 90
