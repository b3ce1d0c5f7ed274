"""Additive (Bahdanau) attention with masking of padded source positions.

    energy = tanh(K + W_q s)      K = W_k h + b, computed once per batch
    scores = v . energy           padded positions -> -inf
    a      = softmax(scores)
    c      = a . h                a batched matrix multiply

This equals the tutorial's tanh(W [s; h] + b) with W split into [W_q, W_k]; only the
query part depends on the decoder step, so the keys are hoisted out of the step loop.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class AdditiveAttention(nn.Module):
    def __init__(self, memory_size: int, query_size: int, attention_size: int):
        super().__init__()
        self.key_projection = nn.Linear(memory_size, attention_size)  # W_k, b
        self.query_projection = nn.Linear(query_size, attention_size, bias=False)  # W_q
        self.energy_weight = nn.Linear(attention_size, 1, bias=False)  # v

    def keys(self, memory: Tensor) -> Tensor:
        """memory [B,S,2H] -> keys [B,S,A]; once per batch, not once per step."""
        return self.key_projection(memory)

    def forward(
        self, query: Tensor, keys: Tensor, memory: Tensor, mask: Tensor
    ) -> tuple[Tensor, Tensor]:
        """query [B,D], keys [B,S,A], memory [B,S,2H], mask [B,S] (True = real token)
        -> (context [B,2H], weights [B,S])."""
        energy = torch.tanh(keys + self.query_projection(query).unsqueeze(1))  # [B,S,A]
        scores = self.energy_weight(energy).squeeze(2)  # [B,S]
        scores = scores.masked_fill(~mask, float("-inf"))
        weights = torch.softmax(scores, dim=1)  # [B,S], exactly 0 on padding
        context = torch.bmm(weights.unsqueeze(1), memory).squeeze(1)  # [B,2H]
        return context, weights
