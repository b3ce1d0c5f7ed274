"""Token-level cross-entropy that ignores padding."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from seq2seq.vocab import PAD


def sequence_loss(logits: Tensor, trg: Tensor, label_smoothing: float = 0.0) -> Tensor:
    """logits [B,T-1,V] for targets trg[:, 1:] of trg [B,T] -> summed loss over real tokens."""
    return F.cross_entropy(
        logits.reshape(-1, logits.size(-1)),
        trg[:, 1:].reshape(-1),
        ignore_index=PAD,
        reduction="sum",
        label_smoothing=label_smoothing,
    )
