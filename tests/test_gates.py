"""SE and CBAM gates on the encoder outputs: shapes, values in (0, 1), padding, batch
independence, `none` leaves the model untouched, and the gate values reach the user."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import TOY_CONFIG, random_batch, tiny_model_config, toy_overrides

from seq2seq.config import load_config
from seq2seq.errors import UserError
from seq2seq.gates import CBAM, SqueezeExcitation
from seq2seq.model import Seq2Seq
from seq2seq.training import train

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


def test_none_leaves_the_model_bit_identical():
    plain_config = tiny_model_config()
    assert plain_config.encoder.gate == "none"
    torch.manual_seed(3)
    plain = Seq2Seq(plain_config, 13, 11)
    torch.manual_seed(3)
    explicit = Seq2Seq(
        plain_config.model_copy(
            update={"encoder": plain_config.encoder.model_copy(update={"gate": "none"})}
        ),
        13,
        11,
    )
    assert plain.encoder_gate is None
    assert plain.state_dict().keys() == explicit.state_dict().keys()
    assert all(
        torch.equal(plain.state_dict()[k], explicit.state_dict()[k]) for k in plain.state_dict()
    )
    assert not any("gate" in name for name in plain.state_dict())


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
