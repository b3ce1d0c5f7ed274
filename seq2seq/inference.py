"""Loaded models prepared for decoding on a CPU.

At small batches (one sentence, a beam of 5, a server's dynamic batch) a search step is
bound by reading the weights: the output layer alone, V x (D + 2H + e) floats, is the
model's largest matrix and is read once per output token. Two preparations, made once
per loaded checkpoint (docs/performance.md has the measurements):

- fp32: the output layer multiplies through oneDNN, its weight kept in oneDNN's format,
  where this torch's private oneDNN linear (`torch._C._nn.mkldnn_linear`) still works
  (`onednn_linear_works`); elsewhere it stays an nn.Linear.
  MKL's GEMM, which torch uses for fp32 on the CPU, takes longer at a few rows than at
  one; oneDNN stays near the time to read the weight. Results equal MKL's up to float
  rounding (neither is bit-identical across batch sizes).
- int8 (`decode.precision: int8`): torch's dynamic quantization of every Linear, GRU and
  GRUCell: int8 weights, a quarter of the bytes to read, activations quantized per call.
  Translations can differ from fp32's (docs/translating.md gives the BLEU of both).

Training's validation never prepares its live model (its weights change between
validations), except for int8, which quantizes a copy per call.
"""

from __future__ import annotations

import copy
import functools
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
        return onednn_linear(inputs, self.weight, self.bias)


def onednn_linear(inputs: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """inputs [..., in] -> inputs W^T + b [..., out]; weight and bias in oneDNN's format."""
    return torch._C._nn.mkldnn_linear(inputs.contiguous().to_mkldnn(), weight, bias).to_dense()


@functools.cache
def onednn_linear_works() -> bool:
    """Whether `onednn_linear` computes what nn.Linear does in this torch, probed once on
    small integers (exact in any order of summation): the op is private, and an upgrade
    may rename, remove or change it."""
    if not torch.backends.mkldnn.is_available():
        return False
    inputs, weight, bias = torch.ones(2, 3), torch.arange(6.0).view(2, 3), torch.tensor([1.0, -1.0])
    try:
        computed = onednn_linear(inputs, weight.to_mkldnn(), bias.to_mkldnn())
    except (AttributeError, RuntimeError, TypeError):  # gone, or its arguments changed
        return False
    return torch.equal(computed, nn.functional.linear(inputs, weight, bias))


def prepared(model: Seq2Seq, precision: str) -> Seq2Seq:
    """The model to decode with at `precision` on a CPU (the model itself is not changed;
    the returned one shares its unchanged weights)."""
    if precision == "int8":
        return quantized(model)
    if precision == "fp32" and onednn_linear_works():
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
