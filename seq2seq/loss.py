"""Token-level cross-entropy that ignores padding.

The loss of a batch is the largest tensor of a training step: [B*T, V] float32. PyTorch's
cross-entropy keeps three of them alive at once in backward (the saved log-softmax, its
gradient, the logits' gradient); this one turns the saved log-softmax into the logits'
gradient in place, so that a batch holds one (docs/performance.md, "Memory").
"""

from __future__ import annotations

import torch
from torch import Tensor

from seq2seq.vocab import PAD


class _CrossEntropy(torch.autograd.Function):
    """Summed cross-entropy of logits [N,V] against targets [N] (PAD rows count 0), with
    label smoothing as PyTorch defines it: (1 - e) * nll + e * mean over V of -log p."""

    @staticmethod
    def forward(ctx, logits: Tensor, targets: Tensor, smoothing: float) -> Tensor:
        log_probs = torch.log_softmax(logits, dim=-1, dtype=torch.float32)  # [N,V]
        real = (targets != PAD).to(torch.float32)  # [N]
        nll = -(log_probs.gather(1, targets.unsqueeze(1)).squeeze(1) * real).sum()
        loss = (1.0 - smoothing) * nll
        if smoothing:
            loss = loss - smoothing / logits.size(1) * (log_probs.sum(dim=1) * real).sum()
        ctx.save_for_backward(log_probs, targets, real)
        ctx.smoothing, ctx.dtype = smoothing, logits.dtype
        return loss

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None]:
        """d loss / d logits = softmax - (1 - e) * one-hot - e / V on real rows, 0 on PAD;
        computed in the saved log-softmax's memory (the graph is backwarded once)."""
        log_probs, targets, real = ctx.saved_tensors
        smoothing = ctx.smoothing
        gradient = log_probs.exp_()  # softmax, in place
        if smoothing:
            gradient.sub_(smoothing / gradient.size(1))
        hit = torch.full_like(real, smoothing - 1.0).unsqueeze(1)  # [N,1]
        gradient.scatter_add_(1, targets.unsqueeze(1), hit)
        gradient.mul_((real * grad).unsqueeze(1))
        return gradient.to(ctx.dtype), None, None


def sequence_loss(logits: Tensor, trg: Tensor, label_smoothing: float = 0.0) -> Tensor:
    """logits [B,T-1,V] for targets trg[:, 1:] of trg [B,T] -> summed loss over real tokens."""
    return _CrossEntropy.apply(
        logits.reshape(-1, logits.size(-1)), trg[:, 1:].reshape(-1), label_smoothing
    )
