"""Loaded models prepared for decoding on a CPU.

At small batches (one sentence, a beam of 5, a server's dynamic batch) a search step is
bound by reading the weights: the output layer alone is V x (D + 2H + e) floats, 42 MB
for the tutorial's model, read once per output token. Two preparations, made once per
loaded checkpoint (docs/performance.md has the measurements):

- fp32: the output layer multiplies through oneDNN, its weight kept in oneDNN's format.
  MKL's GEMM, which torch uses for fp32 on the CPU, took 3-5x longer at 2-16 rows than at
  one on an AVX2 CPU; oneDNN stays near the time to read the weight. Results equal
  MKL's up to float rounding (neither is bit-identical across batch sizes).
- int8 (`decode.precision: int8`): torch's dynamic quantization of every Linear, GRU and
  GRUCell: int8 weights, a quarter of the bytes to read, activations quantized per call.
  Translations can differ from fp32's (docs/translating.md gives the BLEU of both).

Training's validation never prepares its live model (its weights change between
validations), except for int8, which quantizes a copy per call.
"""

from __future__ import annotations

import copy
import warnings

import torch
from torch import Tensor, nn

from seq2seq.errors import UserError
from seq2seq.model import Seq2Seq


class OneDnnLinear(nn.Module):
    """A frozen nn.Linear computed by oneDNN: x [..., in] -> x W^T + b [..., out]."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        # Plain attributes, not buffers: oneDNN tensors have no storage to save or move.
        self.weight = linear.weight.detach().to_mkldnn()
        self.bias = linear.bias.detach().to_mkldnn()

    def forward(self, inputs: Tensor) -> Tensor:
        onednn_inputs = inputs.contiguous().to_mkldnn()
        return torch._C._nn.mkldnn_linear(onednn_inputs, self.weight, self.bias).to_dense()


def prepared(model: Seq2Seq, precision: str) -> Seq2Seq:
    """The model to decode with at `precision` on a CPU (the model itself is not changed;
    the returned one shares its unchanged weights)."""
    if precision == "int8":
        return quantized(model)
    if precision == "fp32" and torch.backends.mkldnn.is_available():
        shared = {id(tensor): tensor for tensor in [*model.parameters(), *model.buffers()]}
        fast = copy.deepcopy(model, memo=shared)  # new modules, the same weight tensors
        fast.decoder.output = OneDnnLinear(model.decoder.output)
        return fast
    return model


def quantized(model: Seq2Seq) -> Seq2Seq:
    """A copy with int8 weights in every Linear, GRU and GRUCell (dynamic quantization)."""
    engines = torch.backends.quantized.supported_engines
    if "fbgemm" not in engines and "x86" not in engines:
        raise UserError("decode.precision int8 needs an x86 CPU (torch's fbgemm); use fp32")
    with warnings.catch_warnings():  # torch.ao.quantization announces its move to torchao
        warnings.simplefilter("ignore")
        from torch.ao.quantization import quantize_dynamic

        return quantize_dynamic(model, {nn.Linear, nn.GRU, nn.GRUCell}, dtype=torch.qint8)
