"""`seq2seq export --onnx`: the model as two ONNX graphs for the onnxruntime path
(onnx_runtime.py has their inputs and outputs), written into the model folder with int8
copies of both.

The exporter is torch.onnx's TorchScript exporter (`dynamo=False`), opset 17: it maps
the encoder's packed bidirectional GRU to ONNX's GRU with `sequence_lens`, so each
sentence runs over its true length as in torch, in a batch of any order and size, and it
needs no package beyond onnx (the dynamo exporter also needs onnxscript). The graphs are
made from the weights as the folder stores them (rounded to its dtype), so both runtimes
translate the same model. Gated encoders (SE, CBAM) are not exported.

int8 is onnxruntime's dynamic quantization: 8-bit weights of every MatMul and Gemm,
activations quantized per call. Unsigned weights with a scale per output channel: on the
shipped model's first 300 test sentences, greedy, they gave the fp32 translation for 290
(signed per tensor, the default: 267; signed per channel: 283), and unsigned weights
cannot overflow the 16-bit sums of AVX2 CPUs without VNNI, as signed ones can. It is done
here, once, rather than each time a model is opened: it needs the onnx package, which the
onnxruntime path does without.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from seq2seq.config import Config
from seq2seq.decoder import Memory
from seq2seq.errors import UserError
from seq2seq.model import Seq2Seq
from seq2seq.model_folder import SavedModel
from seq2seq.onnx_runtime import (
    DECODER_INPUTS,
    DECODER_OUTPUTS,
    ENCODER_INPUTS,
    ENCODER_OUTPUTS,
    GRAPHS,
    ONNX,
)
from seq2seq.vocab import EOS, PAD, SOS

OPSET = 17


class EncoderGraph(nn.Module):
    """src [B,S], src_lengths [B] -> (outputs [B,S,2H], keys [B,S,D], hidden [B,D])."""

    def __init__(self, model: Seq2Seq):
        super().__init__()
        self.model = model

    def forward(self, src: Tensor, src_lengths: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        memory, hidden = self.model.encode(src, src_lengths)
        return memory.outputs, memory.keys, hidden


class DecoderGraph(nn.Module):
    """One search step: tokens [B], hidden [B,D], keys [B,S,D], outputs [B,S,2H],
    mask [B,S] -> (log-probs [B,V], next hidden [B,D], attention [B,S])."""

    def __init__(self, model: Seq2Seq):
        super().__init__()
        self.model = model

    def forward(
        self, tokens: Tensor, hidden: Tensor, keys: Tensor, outputs: Tensor, mask: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        return self.model.decoder.step(tokens, hidden, Memory(outputs, keys, mask))


def check_exportable(config: Config, model: str | Path) -> None:
    """Refuse, before anything is written, what --onnx cannot export or run."""
    gate = config.model.encoder.gate
    if gate != "none":
        raise UserError(
            f"{model}: --onnx does not export an encoder with a {gate.upper()} gate; "
            "export without --onnx (such a model translates with torch)"
        )
    for package in ("onnx", "onnxruntime"):
        if importlib.util.find_spec(package) is None:
            raise UserError(f"--onnx needs the {package} package: pip install 'seq2seq[onnx]'")


def stored_model(config: Config, saved: SavedModel, dtype: str) -> Seq2Seq:
    """The model as a folder of `dtype` weights gives it back: rounded, then float32."""
    model = Seq2Seq(config.model, len(saved.vocab["src"]), len(saved.vocab["trg"]))
    rounded = {name: w.to(getattr(torch, dtype)).float() for name, w in saved.weights.items()}
    model.load_state_dict(rounded)
    return model.eval()


def graph_files(config: Config, saved: SavedModel, dtype: str, folder: Path) -> dict[str, Any]:
    """Write the graphs of a model folder's model into `folder` -> config.json's entry."""
    return {ONNX: export_onnx(stored_model(config, saved, dtype), folder)}


def export_onnx(model: Seq2Seq, folder: Path) -> dict[str, Any]:
    """Write the graphs of `model` and their int8 copies into `folder` -> what
    config.json says of them (its `onnx` entry)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    src = torch.tensor([[SOS, 4, 5, 6, EOS], [SOS, 7, EOS, PAD, PAD]])  # any ids do
    lengths = torch.tensor([5, 3])
    with torch.no_grad():
        outputs, keys, hidden = EncoderGraph(model).eval()(src, lengths)
    step_inputs = (torch.tensor([SOS, SOS]), hidden, keys, outputs, src != PAD)
    files = GRAPHS["fp32"]
    with _quiet():
        _export(EncoderGraph(model), (src, lengths), folder / files["encoder"], True)
        _export(DecoderGraph(model), step_inputs, folder / files["decoder"], False)
        for role, name in GRAPHS["int8"].items():
            quantize_dynamic(
                folder / files[role], folder / name, per_channel=True, weight_type=QuantType.QUInt8
            )
    return {
        "exporter": f"torch.onnx TorchScript exporter, torch {torch.__version__}",
        "opset": OPSET,
        "graphs": GRAPHS,
        "int8": "onnxruntime dynamic quantization, uint8 weights per channel",
        "parameters": sum(parameter.numel() for parameter in model.parameters()),
    }


def _export(graph: nn.Module, inputs: tuple[Tensor, ...], path: Path, encoder: bool) -> None:
    names = (ENCODER_INPUTS, ENCODER_OUTPUTS) if encoder else (DECODER_INPUTS, DECODER_OUTPUTS)
    # eval() before, because the exporter sets the module back to its mode after.
    torch.onnx.export(
        graph.eval(),
        inputs,
        str(path),
        dynamo=False,
        opset_version=OPSET,
        input_names=list(names[0]),
        output_names=list(names[1]),
        dynamic_axes={name: _DYNAMIC[name] for name in (*names[0], *names[1])},
    )


# Every input and output varies in batch size, and those of [B,S,...] in source length.
_DYNAMIC = {
    name: {0: "batch", 1: "source"}
    if name in ("src", "outputs", "keys", "mask", "attention")
    else {0: "batch"}
    for name in (*ENCODER_INPUTS, *ENCODER_OUTPUTS, *DECODER_INPUTS, *DECODER_OUTPUTS)
}


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Without the exporter's warnings: Python's (the TorchScript exporter's deprecation)
    and those its C++ code writes to file descriptor 2 (shape inference of packed
    sequences, which the GRU's sequence_lens replaces). Errors still raise."""
    stderr = os.dup(2)
    try:
        with warnings.catch_warnings(), open(os.devnull, "wb") as null:
            warnings.simplefilter("ignore")
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(stderr, 2)
        os.close(stderr)
