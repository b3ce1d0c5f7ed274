"""Computer vision's attention, on the encoder outputs: gates that rescale features.

Where additive attention (attention.py) computes softmax weights over the source and
takes a weighted sum, these gates multiply features by sigmoid values in (0, 1):

    SE    channel gate   g = sigmoid(W2 relu(W1 mean_s h))              [B,C]
          h'  = h * g                                                  [B,S,C]
    CBAM  channel gate   g = sigmoid(MLP(mean_s h) + MLP(max_s h))      [B,C]
          temporal gate  u = sigmoid(conv1d_k([mean_c h*g ; max_c h*g])) [B,S]
          h'  = h * g * u

C = 2H channels, S source positions. Every pooling runs over the real positions only,
and padded positions stay zero, so a sentence is gated the same alone or in a batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn


@dataclass
class GateValues:
    channel: Tensor  # [B,C] in (0, 1)
    temporal: Tensor | None  # [B,S] in (0, 1) on real positions, 0 on padding (CBAM only)

    def select(self, rows: Tensor) -> GateValues:
        temporal = None if self.temporal is None else self.temporal[rows]
        return GateValues(self.channel[rows], temporal)


def masked_mean(outputs: Tensor, mask: Tensor) -> Tensor:
    """[B,S,C], [B,S] -> mean over the real positions [B,C]."""
    weights = mask.unsqueeze(2).to(outputs.dtype)
    return (outputs * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1)


def masked_max(outputs: Tensor, mask: Tensor) -> Tensor:
    """[B,S,C], [B,S] -> max over the real positions [B,C]."""
    return outputs.masked_fill(~mask.unsqueeze(2), float("-inf")).amax(dim=1)


def squeeze_mlp(channels: int, reduction: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(channels, channels // reduction),
        nn.ReLU(),
        nn.Linear(channels // reduction, channels),
    )


class SqueezeExcitation(nn.Module):
    def __init__(self, channels: int, reduction: int):
        super().__init__()
        self.excite = squeeze_mlp(channels, reduction)

    def forward(self, outputs: Tensor, mask: Tensor) -> tuple[Tensor, GateValues]:
        """outputs [B,S,C], mask [B,S] -> (gated outputs [B,S,C], gate values)."""
        channel = torch.sigmoid(self.excite(masked_mean(outputs, mask)))  # [B,C]
        return outputs * channel.unsqueeze(1), GateValues(channel, None)


class CBAM(nn.Module):
    def __init__(self, channels: int, reduction: int, kernel: int):
        super().__init__()
        self.shared = squeeze_mlp(channels, reduction)  # one MLP for both poolings
        self.temporal = nn.Conv1d(2, 1, kernel, padding=kernel // 2)

    def forward(self, outputs: Tensor, mask: Tensor) -> tuple[Tensor, GateValues]:
        """outputs [B,S,C], mask [B,S] -> (gated outputs [B,S,C], gate values)."""
        pooled = self.shared(masked_mean(outputs, mask)) + self.shared(masked_max(outputs, mask))
        channel = torch.sigmoid(pooled)  # [B,C]
        refined = outputs * channel.unsqueeze(1)  # [B,S,C], still 0 on padding
        # [B,2,S]: mean and max over channels at each position; 0 on padding, which is
        # what the convolution's own zero padding shows past the end of a lone sentence.
        summary = torch.stack([refined.mean(dim=2), refined.amax(dim=2)], dim=1)
        summary = summary.masked_fill(~mask.unsqueeze(1), 0.0)
        temporal = torch.sigmoid(self.temporal(summary).squeeze(1)).masked_fill(~mask, 0.0)
        return refined * temporal.unsqueeze(2), GateValues(channel, temporal)


def make_gate(kind: str, channels: int, reduction: int, kernel: int) -> nn.Module | None:
    """The encoder gate the config names; None for `none` (no parameters at all)."""
    if kind == "se":
        return SqueezeExcitation(channels, reduction)
    if kind == "cbam":
        return CBAM(channels, reduction, kernel)
    return None
