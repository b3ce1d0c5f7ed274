"""Ensembles: several independently trained models decode as one.

At every step each member advances its own state by the same token and the members'
next-token distributions are combined, so greedy search, beam search, n-best lists and
the length penalty work unchanged (search.py sees the `Seq2Seq.start/step` interface):

    probs       log p(y) = log (1/k sum_m p_m(y))     (the mean of the probabilities)
    log_probs   log p(y) = 1/k sum_m log p_m(y)       (the mean of the log-probabilities)

`log_probs` is the default (decode.combine); docs/results.md compares the two. The
attention shown is the members' mean; encoder gate values are a single model's and are
not shown for an ensemble. Members may differ in size and gate; the caller (the bundle
loader) checks that they read and write the same text.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from seq2seq.gates import GateValues
from seq2seq.model import SearchState, Seq2Seq

Combine = Literal["probs", "log_probs"]


@dataclass
class EnsembleState:
    members: list[SearchState]  # one per member, rows aligned

    def select(self, rows: Tensor) -> EnsembleState:
        return EnsembleState([state.select(rows) for state in self.members])

    def reorder(self, rows: Tensor) -> EnsembleState:
        return EnsembleState([state.reorder(rows) for state in self.members])

    @property
    def gates(self) -> GateValues | None:
        return None


class Ensemble(nn.Module):
    def __init__(self, members: list[Seq2Seq], combine: Combine = "log_probs"):
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one model")
        self.members = nn.ModuleList(members)
        self.combine = combine

    def _combine(self, log_probs: list[Tensor]) -> Tensor:
        """k x [..., V] fp32 log-probs -> [..., V]."""
        stacked = torch.stack(log_probs)
        if self.combine == "log_probs":
            return stacked.mean(dim=0)
        return torch.logsumexp(stacked, dim=0) - math.log(len(log_probs))

    def start(self, src: Tensor, src_lengths: Tensor) -> EnsembleState:
        return EnsembleState([member.start(src, src_lengths) for member in self.members])

    def step(self, tokens: Tensor, state: EnsembleState) -> tuple[Tensor, EnsembleState, Tensor]:
        """y_{t-1} [B] -> (combined log-probs [B,V], next state, mean attention [B,S])."""
        outputs = [
            member.step(tokens, member_state)
            for member, member_state in zip(self.members, state.members, strict=True)
        ]
        log_probs = self._combine([log_probs for log_probs, _, _ in outputs])
        attention = torch.stack([weights.float() for _, _, weights in outputs]).mean(dim=0)
        return log_probs, EnsembleState([s for _, s, _ in outputs]), attention

    def sequence_log_probs(
        self, src: Tensor, src_lengths: Tensor, trg_in: Tensor, teacher_forcing: float
    ) -> Tensor:
        """trg_in [B,T] -> combined log-probs [B,T,V]. Teacher forcing 1 feeds the gold
        tokens to every member; 0 feeds the ensemble's own greedy predictions."""
        if teacher_forcing >= 1.0:
            return self._combine(
                [m.sequence_log_probs(src, src_lengths, trg_in, 1.0) for m in self.members]
            )
        if teacher_forcing > 0.0:
            raise ValueError("an ensemble scores with teacher forcing 1 or 0 only")
        state, tokens, steps = self.start(src, src_lengths), trg_in[:, 0], []
        for _ in range(trg_in.size(1)):
            log_probs, state, _ = self.step(tokens, state)
            steps.append(log_probs)
            tokens = log_probs.argmax(dim=1)
        return torch.stack(steps, dim=1)
