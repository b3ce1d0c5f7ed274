"""Search: turn the model's step-by-step distributions into output token ids.

Every function here decodes a whole batch as one tensor computation; the only Python
loop is over output time steps.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from seq2seq.model import Seq2Seq
from seq2seq.vocab import EOS, SOS


@dataclass
class Hypothesis:
    tokens: list[int]  # output ids, without <sos> and <eos>
    score: float  # sum of the log-probabilities of tokens and the final <eos>
    attention: Tensor  # [len(tokens) + 1, source length]: one row per emitted id, <eos> included


def max_output_lengths(src_lengths: Tensor, ratio: float, offset: int) -> Tensor:
    """[B] -> [B] longest allowed output: ratio * source tokens + offset (at least 1)."""
    source_tokens = (src_lengths - 2).clamp(min=0).float()  # without <sos>/<eos>
    return (torch.ceil(source_tokens * ratio) + offset).long().clamp(min=1)


@torch.inference_mode()
def greedy_search(
    model: Seq2Seq, src: Tensor, src_lengths: Tensor, max_lengths: Tensor
) -> list[Hypothesis]:
    """Pick the most probable token at every step, for all sentences of a batch at once.

    src [B,S], src_lengths [B], max_lengths [B]. A sentence stops at <eos> or at its
    maximum length; the loop stops when every sentence has stopped.
    """
    memory, state = model.encode(src, src_lengths)
    batch_size = src.size(0)
    max_lengths = max_lengths.to(src.device)
    tokens = torch.full((batch_size,), SOS, dtype=torch.long, device=src.device)
    finished = torch.zeros(batch_size, dtype=torch.bool, device=src.device)
    scores = torch.zeros(batch_size, device=src.device)
    emitted, attention = [], []
    for t in range(int(max_lengths.max())):
        log_probs, state, weights = model.decoder.step(tokens, state, memory)
        best, tokens = log_probs.max(dim=1)  # [B], [B]
        scores += best.masked_fill(finished, 0.0)
        emitted.append(tokens)
        attention.append(weights)
        finished |= (tokens == EOS) | (t + 1 >= max_lengths)
        if bool(finished.all()):
            break
    return _hypotheses(
        torch.stack(emitted, 1), scores, torch.stack(attention, 1), src_lengths, max_lengths
    )


def _hypotheses(
    ids: Tensor, scores: Tensor, attention: Tensor, src_lengths: Tensor, max_lengths: Tensor
) -> list[Hypothesis]:
    """ids [B,T], scores [B], attention [B,T,S], max_lengths [B] -> one Hypothesis per row,
    cut at <eos> or at the row's maximum length (a stopped row keeps emitting while others
    go on)."""
    ids_list, scores_list = ids.tolist(), scores.tolist()
    limits = max_lengths.tolist()
    attention = attention.float().cpu()
    result = []
    for row, row_ids in enumerate(ids_list):
        row_ids = row_ids[: limits[row]]
        length = row_ids.index(EOS) if EOS in row_ids else len(row_ids)
        rows = min(length + 1, len(row_ids))
        result.append(
            Hypothesis(
                row_ids[:length],
                scores_list[row],
                attention[row, :rows, : int(src_lengths[row])],
            )
        )
    return result
