"""SE and CBAM gates on the encoder outputs: shapes, values in (0, 1), padding, batch
independence, `none` leaves the model untouched, and the gate values reach the user."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import TOY_CONFIG, random_batch, tiny_model_config, toy_overrides
from torch import nn

from seq2seq.config import load_config
from seq2seq.decoder import Decoder
from seq2seq.encoder import Encoder
from seq2seq.errors import UserError
from seq2seq.gates import CBAM, SqueezeExcitation
from seq2seq.model import Seq2Seq
from seq2seq.training import train
from seq2seq.vocab import PAD

GATES = {"se": lambda: SqueezeExcitation(12, 3), "cbam": lambda: CBAM(12, 3, 3)}


def padded_outputs(lengths: list[int], channels: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    """Random encoder outputs [B,S,C], zero on padding like the packed GRU's, and the mask."""
    mask = torch.arange(max(lengths))[None, :] < torch.tensor(lengths)[:, None]
    outputs = torch.randn(len(lengths), max(lengths), channels) * mask.unsqueeze(2)
    return outputs, mask


@pytest.mark.parametrize("kind", GATES)
def test_shapes_ranges_and_padding(kind: str):
    gate = GATES[kind]()
    outputs, mask = padded_outputs([5, 2, 4])
    gated, values = gate(outputs, mask)
    assert gated.shape == outputs.shape
    assert values.channel.shape == (3, 12)
    assert torch.all((values.channel > 0) & (values.channel < 1))
    assert torch.all(gated[~mask] == 0)  # padding stays zero
    if kind == "cbam":
        assert values.temporal.shape == (3, 5)
        assert torch.all((values.temporal[mask] > 0) & (values.temporal[mask] < 1))
        assert torch.all(values.temporal[~mask] == 0)
    else:
        assert values.temporal is None


@pytest.mark.parametrize("kind", GATES)
def test_a_sentence_is_gated_the_same_alone_and_in_a_padded_batch(kind: str):
    gate = GATES[kind]()
    outputs, mask = padded_outputs([3, 7, 5])
    gated, values = gate(outputs, mask)
    for row, length in enumerate([3, 7, 5]):
        alone, alone_values = gate(outputs[row : row + 1, :length], mask[row : row + 1, :length])
        assert torch.allclose(alone[0], gated[row, :length], atol=1e-6)
        assert torch.allclose(alone_values.channel[0], values.channel[row], atol=1e-6)
        if kind == "cbam":
            assert torch.allclose(
                alone_values.temporal[0], values.temporal[row, :length], atol=1e-6
            )


@pytest.mark.parametrize("kind", ["se", "cbam"])
def test_a_gated_model_is_batch_independent_end_to_end(kind: str):
    config = tiny_model_config(hidden=6)
    config = config.model_copy(
        update={"encoder": config.encoder.model_copy(update={"gate": kind, "gate_reduction": 3})}
    )
    torch.manual_seed(0)
    model = Seq2Seq(config, 13, 11).eval()
    src, lengths = random_batch([6, 3, 8], 13, torch.Generator().manual_seed(1))
    memory, _ = model.encode(src, lengths)
    for row, length in enumerate([6, 3, 8]):
        alone, _ = model.encode(src[row : row + 1, :length], lengths[row : row + 1])
        assert torch.allclose(alone.outputs[0], memory.outputs[row, :length], atol=1e-6)


def test_none_is_exactly_the_model_without_gate_code():
    """gate `none`: no parameters, no random draws, nothing done to the encoder outputs.
    The reference is an encoder and a decoder built, initialised (the tutorial's N(0, 0.01)
    weights, zero biases) and run without any gate code."""
    config = tiny_model_config()
    assert config.encoder.gate == "none"
    torch.manual_seed(3)
    model = Seq2Seq(config, 13, 11)
    torch.manual_seed(3)
    encoder, decoder = config.encoder, config.decoder
    reference = nn.ModuleDict(
        {
            "encoder": Encoder(
                13, encoder.embedding_size, encoder.hidden_size, decoder.hidden_size, 0.0, PAD
            ),
            "decoder": Decoder(
                11, decoder.embedding_size, decoder.hidden_size, 2 * encoder.hidden_size, 0.0, PAD
            ),
        }
    )
    for name, parameter in reference.named_parameters():
        nn.init.normal_(parameter, 0.0, 0.01) if "weight" in name else nn.init.zeros_(parameter)
    assert model.encoder_gate is None
    assert model.state_dict().keys() == reference.state_dict().keys()
    for name, tensor in reference.state_dict().items():
        assert torch.equal(model.state_dict()[name], tensor), name

    with torch.no_grad():  # larger weights, so that any change to the outputs shows
        for parameter in model.parameters():
            parameter.normal_(0.0, 0.5)
    reference.load_state_dict(model.state_dict())
    model.eval(), reference.eval()
    src, lengths = random_batch([6, 3, 8], 13, torch.Generator().manual_seed(1))
    trg_in = torch.randint(4, 11, (3, 5), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        memory, state = model.encode(src, lengths)
        outputs, expected_state = reference["encoder"](src, lengths)
        expected = reference["decoder"].prepare(outputs, src != PAD)
        logits = model(src, lengths, trg_in)
        expected_logits = reference["decoder"](trg_in, expected_state, expected)
    assert memory.gates is None
    assert torch.equal(memory.outputs, expected.outputs) and torch.equal(state, expected_state)
    assert torch.equal(logits, expected_logits)


def mlp(sequential: nn.Sequential, vector: torch.Tensor) -> torch.Tensor:
    """W2 relu(W1 v + b1) + b2, from the weights of a squeeze MLP."""
    first, second = sequential[0], sequential[2]
    hidden = torch.clamp(first.weight @ vector + first.bias, min=0.0)
    return second.weight @ hidden + second.bias


def randomized(gate: nn.Module) -> nn.Module:
    with torch.no_grad():
        for parameter in gate.parameters():
            parameter.normal_(0.0, 1.0)
    return gate


def test_se_gate_values_by_hand():
    """g = sigmoid(W2 relu(W1 mean_s h)) over the real positions; h' = h * g."""
    gate = randomized(SqueezeExcitation(12, 3))
    lengths = [5, 2, 4]
    outputs, mask = padded_outputs(lengths)
    gated, values = gate(outputs, mask)
    for row, length in enumerate(lengths):
        real = outputs[row, :length]
        g = torch.sigmoid(mlp(gate.excite, real.sum(dim=0) / length))
        assert torch.allclose(values.channel[row], g, atol=1e-6)
        assert torch.allclose(gated[row, :length], real * g, atol=1e-6)
        assert torch.all(gated[row, length:] == 0)


def test_cbam_gate_values_by_hand():
    """g = sigmoid(MLP(mean_s h) + MLP(max_s h)); u = sigmoid(conv_k([mean_c h*g; max_c h*g]))
    with zeros past the sentence's ends; h' = h * g * u."""
    kernel = 5
    gate = randomized(CBAM(12, 3, kernel))
    lengths = [6, 2, 4]
    outputs, mask = padded_outputs(lengths)
    gated, values = gate(outputs, mask)
    weight, bias = gate.temporal.weight[0], gate.temporal.bias[0]  # [2, k], []
    for row, length in enumerate(lengths):
        real = outputs[row, :length]  # [L, C]
        mean = real.sum(dim=0) / length
        largest = torch.stack([real[:, c].max() for c in range(12)])
        g = torch.sigmoid(mlp(gate.shared, mean) + mlp(gate.shared, largest))
        refined = real * g
        summary = [refined.mean(dim=1), refined.max(dim=1).values]  # 2 x [L]
        u = torch.zeros(length)
        for s in range(length):
            total = bias.clone()
            for channel in range(2):
                for i in range(kernel):
                    position = s + i - kernel // 2
                    if 0 <= position < length:
                        total = total + weight[channel, i] * summary[channel][position]
            u[s] = torch.sigmoid(total)
        assert torch.allclose(values.channel[row], g, atol=1e-6)
        assert torch.allclose(values.temporal[row, :length], u, atol=1e-6)
        assert torch.all(values.temporal[row, length:] == 0)
        assert torch.allclose(gated[row, :length], refined * u.unsqueeze(1), atol=1e-6)
        assert torch.all(gated[row, length:] == 0)


@pytest.mark.parametrize(
    "override, message",
    [
        ("model.encoder.gate_reduction=5", "must divide"),
        ("model.encoder.gate_reduction=1000", "must divide"),
        ("model.encoder.gate_kernel=4", "odd"),
    ],
)
def test_gate_settings_are_validated(override: str, message: str):
    with pytest.raises(UserError, match=message):
        load_config(TOY_CONFIG, ["model.encoder.gate=cbam", override])
    load_config(TOY_CONFIG, [override])  # without a gate these settings are unused
    with pytest.raises(UserError, match="gate"):
        load_config(TOY_CONFIG, ["model.encoder.gate=eca"])


def test_gate_values_in_json_and_pictures(tmp_path: Path, cli):
    run_dir = tmp_path / "run"
    overrides = toy_overrides(run_dir, "model.encoder.gate=cbam", "model.encoder.gate_reduction=8",
                              "train.max_steps=5")  # fmt: skip
    train(load_config(TOY_CONFIG, overrides))
    code, out, err = cli("translate", "-m", run_dir / "best.pt", "--json", "--plot-attention",
                         tmp_path / "att", input="Ein Hund läuft im Park.\n".encode())  # fmt: skip
    assert code == 0, err
    record = json.loads(out)
    assert len(record["gates"]["channel"]) == 96
    assert len(record["gates"]["temporal"]) == len(record["source_tokens"]) + 2
    assert (tmp_path / "att" / "000001.png").read_bytes().startswith(b"\x89PNG")
