"""Search: turn the model's step-by-step distributions into output token ids.

Every function here decodes a whole batch as one tensor computation; the only Python
loop is over output time steps.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from seq2seq.gates import GateValues
from seq2seq.model import Seq2Seq
from seq2seq.vocab import EOS, SOS


@dataclass
class Hypothesis:
    tokens: list[int]  # output ids, without <sos> and <eos>
    score: float  # summed log-probability of the tokens and <eos>, / length penalty in beams
    attention: Tensor  # [len(tokens) + 1, source length]: one row per emitted id, <eos> included
    gates: GateValues | None = None  # encoder gate values: channel [C], temporal [source length]


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
        tokens = tokens.masked_fill(finished, EOS)  # a stopped sentence only repeats <eos>
        scores += best.masked_fill(finished, 0.0)
        emitted.append(tokens)
        attention.append(weights)
        finished |= (tokens == EOS) | (t + 1 >= max_lengths)
        if bool(finished.all()):
            break
    return _hypotheses(
        torch.stack(emitted, 1),
        scores,
        torch.stack(attention, 1),
        src_lengths,
        max_lengths,
        memory.gates,
    )


def length_penalty(lengths: Tensor, alpha: float) -> Tensor:
    """GNMT's ((5 + length) / 6) ** alpha; scores are divided by it (alpha 0: no penalty)."""
    return ((5.0 + lengths.float()) / 6.0) ** alpha


@torch.inference_mode()
def beam_search(
    model: Seq2Seq,
    src: Tensor,
    src_lengths: Tensor,
    max_lengths: Tensor,
    beam_size: int,
    alpha: float = 0.0,
    nbest: int = 1,
) -> list[list[Hypothesis]]:
    """Beam search over all sentences and all beams of a batch as one tensor computation.

    The B*K beams are rows of one decoder batch. Candidates are ranked by their summed
    log-probability divided by the length penalty. A finished beam stays in the beam
    with exactly one continuation, <eos> at no cost, so its score and length freeze;
    the search ends when every beam of every sentence has finished. Returns, per
    sentence, the `nbest` best hypotheses, best first.
    """
    if not 1 <= nbest <= beam_size:
        raise ValueError(f"nbest must be between 1 and the beam size, got {nbest}")
    memory, state = model.encode(src, src_lengths)
    batch_size, device = src.size(0), src.device
    rows = torch.arange(batch_size, device=device).repeat_interleave(beam_size)  # [B*K]
    memory, state = memory.select(rows), state[rows]
    max_lengths = max_lengths.to(device)[rows]  # [B*K]
    tokens = torch.full((batch_size * beam_size,), SOS, dtype=torch.long, device=device)
    scores = torch.full((batch_size, beam_size), float("-inf"), device=device)
    scores[:, 0] = 0.0  # one live beam at the start, so the first step picks K distinct tokens
    lengths = torch.zeros(batch_size * beam_size, dtype=torch.long, device=device)
    finished = torch.zeros(batch_size * beam_size, dtype=torch.bool, device=device)
    first_row = (torch.arange(batch_size, device=device) * beam_size).unsqueeze(1)  # [B,1]
    frozen = None  # [V] log-probs of a finished beam: 0 for <eos>, -inf elsewhere
    emitted, origins, attention = [], [], []
    for _ in range(int(max_lengths.max())):
        log_probs, state, weights = model.decoder.step(tokens, state, memory)  # [B*K,V]
        vocab_size = log_probs.size(1)
        if frozen is None:
            frozen = torch.full((vocab_size,), float("-inf"), device=device)
            frozen[EOS] = 0.0
        log_probs = torch.where(finished.unsqueeze(1), frozen, log_probs)
        grown = lengths + (~finished).long()  # [B*K] lengths after this step
        totals = scores.view(-1, 1) + log_probs  # [B*K,V] summed log-probs
        ranked = (totals / length_penalty(grown, alpha).unsqueeze(1)).view(batch_size, -1)
        best = ranked.topk(beam_size, dim=1).indices  # [B,K] into the K*V candidates
        previous = (best // vocab_size + first_row).view(-1)  # [B*K] row each beam extends
        tokens = (best % vocab_size).view(-1)
        scores = totals.view(batch_size, -1).gather(1, best)
        state, lengths = state[previous], grown[previous]
        finished = finished[previous] | (tokens == EOS) | (lengths >= max_lengths)
        emitted.append(tokens)
        origins.append(previous)
        attention.append(weights[previous])
        if bool(finished.all()):
            break
    # Follow the back-pointers from the final beams to the first step.
    row = torch.arange(batch_size * beam_size, device=device)
    ids, alignments = [], []
    for step in reversed(range(len(emitted))):
        ids.append(emitted[step][row])
        alignments.append(attention[step][row])
        row = origins[step][row]
    ids_tensor = torch.stack(ids[::-1], dim=1)  # [B*K,T]
    attention_tensor = torch.stack(alignments[::-1], dim=1)  # [B*K,T,S]
    normalized = scores.view(-1) / length_penalty(lengths, alpha)  # [B*K]
    order = normalized.view(batch_size, beam_size).argsort(dim=1, descending=True)[:, :nbest]
    picked = (order + first_row).view(-1)  # [B*nbest]
    flat = _hypotheses(
        ids_tensor[picked],
        normalized[picked],
        attention_tensor[picked],
        src_lengths.repeat_interleave(nbest),
        max_lengths[picked],
        None if memory.gates is None else memory.gates.select(picked),
    )
    return [flat[i * nbest : (i + 1) * nbest] for i in range(batch_size)]


def _hypotheses(
    ids: Tensor,
    scores: Tensor,
    attention: Tensor,
    src_lengths: Tensor,
    max_lengths: Tensor,
    gates: GateValues | None,
) -> list[Hypothesis]:
    """ids [B,T], scores [B], attention [B,T,S], max_lengths [B] -> one Hypothesis per row,
    cut at the first <eos> (a row stopped by its length limit continues with <eos> only;
    the attention of those steps past the limit is dropped, as when decoded alone)."""
    ids_list, scores_list, limits = ids.tolist(), scores.tolist(), max_lengths.tolist()
    attention = attention.float().cpu()
    result = []
    for row, row_ids in enumerate(ids_list):
        length = row_ids.index(EOS) if EOS in row_ids else len(row_ids)
        rows = min(length + 1, len(row_ids), limits[row])
        source = int(src_lengths[row])
        row_gates = None
        if gates is not None:
            temporal = (
                None if gates.temporal is None else gates.temporal[row, :source].float().cpu()
            )
            row_gates = GateValues(gates.channel[row].float().cpu(), temporal)
        result.append(
            Hypothesis(
                row_ids[:length], scores_list[row], attention[row, :rows, :source], row_gates
            )
        )
    return result
