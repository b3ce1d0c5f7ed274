"""Search: turn the model's step-by-step distributions into output token ids.

Every function here decodes a whole batch as one tensor computation; the only Python
loop is over output time steps. The rules it shares with the numpy search of the
onnxruntime path (length penalty, longest output, when a beam finishes, n-best ranking)
are in search_rules.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor

from seq2seq.gates import GateValues
from seq2seq.search_rules import (
    FROZEN_SCORE,
    Hypothesis,
    best_first,
    extent,
    grown_lengths,
    length_penalty,
    max_output_length,
    now_finished,
    still_going,
)
from seq2seq.vocab import EOS, SOS


class Searchable(Protocol):
    """What search sees of a model (`Seq2Seq`, `Ensemble`). The state keeps, drops or
    repeats rows with `select(rows)`, lets a beam take another beam's decoder state with
    `reorder(rows)`, and holds the encoder's `gates` (None for an ensemble)."""

    def start(self, src: Tensor, src_lengths: Tensor) -> Any:
        """src [B,S], src_lengths [B] -> the state of B rows."""

    def step(self, tokens: Tensor, state: Any) -> tuple[Tensor, Any, Tensor]:
        """y_{t-1} [B] -> (fp32 log-probs [B,V], the next state, attention [B,S])."""


def max_output_lengths(src_lengths: Tensor, ratio: float, offset: int) -> Tensor:
    """[B] -> [B] longest allowed output (search_rules.max_output_length)."""
    limits = [max_output_length(n, ratio, offset) for n in src_lengths.tolist()]
    return torch.tensor(limits, dtype=torch.long)


@torch.inference_mode()
def greedy_search(
    model: Searchable, src: Tensor, src_lengths: Tensor, max_lengths: Tensor
) -> list[Hypothesis]:
    """Pick the most probable token at every step, for all sentences of a batch at once.

    src [B,S], src_lengths [B], max_lengths [B]. A sentence stops at <eos> or at its
    maximum length and leaves the decoder batch, so later steps compute only the R
    sentences still running; the loop stops when none is.
    """
    state = model.start(src, src_lengths)
    gates = state.gates  # of the whole batch (the state shrinks to the running rows)
    batch_size, device = src.size(0), src.device
    max_lengths = max_lengths.to(device)
    running = torch.arange(batch_size, device=device)  # [R] batch row of each running row
    limits = max_lengths  # [R]
    tokens = torch.full((batch_size,), SOS, dtype=torch.long, device=device)  # [R]
    scores = torch.zeros(batch_size, device=device)
    emitted, attention = [], []
    for t in range(int(max_lengths.max())):
        log_probs, state, weights = model.step(tokens, state)  # [R,V]
        best, tokens = log_probs.max(dim=1)  # [R], [R]
        scores.index_add_(0, running, best)
        # Full-batch records: a stopped sentence only repeats <eos> (cut off later).
        emitted.append(
            torch.full_like(scores, EOS, dtype=torch.long).index_copy_(0, running, tokens)
        )
        attention.append(
            weights.new_zeros(batch_size, weights.size(1)).index_copy_(0, running, weights)
        )
        going = still_going(tokens, t, limits)  # [R]
        if not bool(going.all()):
            if not bool(going.any()):
                break
            keep = going.nonzero().squeeze(1)
            running, limits, tokens = running[keep], limits[keep], tokens[keep]
            state = state.select(keep)
    return _hypotheses(
        torch.stack(emitted, 1),
        scores,
        torch.stack(attention, 1),
        src_lengths,
        max_lengths,
        gates,
    )


@dataclass
class Beams:
    """The R sentences still searching, K beams each: beam j of running sentence r is row
    r*K + j of every [R*K] tensor and of the decoder state."""

    sentences: Tensor  # [R] batch index of each running sentence
    rows: Tensor  # [R*K] full-batch row (b*K + j) of each beam
    scores: Tensor  # [R,K] summed log-probabilities
    lengths: Tensor  # [R*K] tokens emitted, <eos> included
    finished: Tensor  # [R*K] the beam has emitted <eos> or reached its limit
    limits: Tensor  # [R*K] longest output allowed
    tokens: Tensor  # [R*K] the token each beam emitted last
    state: Any  # the model's SearchState (or EnsembleState) of the R*K rows

    def select(self, keep: Tensor) -> Beams:
        """Only the sentences `keep` [R'] (indices into the running ones)."""
        size = self.scores.size(1)
        rows = (keep.unsqueeze(1) * size + torch.arange(size, device=keep.device)).view(-1)
        return Beams(
            self.sentences[keep],
            self.rows[rows],
            self.scores[keep],
            self.lengths[rows],
            self.finished[rows],
            self.limits[rows],
            self.tokens[rows],
            self.state.select(rows),
        )


@torch.inference_mode()
def beam_search(
    model: Searchable,
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
    with exactly one continuation, <eos> at no cost, so its score and length freeze.
    A sentence whose beams have all finished leaves the decoder batch; the search ends
    when every sentence has. Returns, per sentence, the `nbest` best hypotheses, best first.
    """
    if not 1 <= nbest <= beam_size:
        raise ValueError(f"nbest must be between 1 and the beam size, got {nbest}")
    state = model.start(src, src_lengths)
    gates = state.gates
    batch_size, device = src.size(0), src.device
    rows = torch.arange(batch_size * beam_size, device=device)  # [B*K]
    limits = max_lengths.to(device).repeat_interleave(beam_size)  # [B*K]
    scores = torch.full((batch_size, beam_size), float("-inf"), device=device)
    scores[:, 0] = 0.0  # one live beam at the start, so the first step picks K distinct tokens
    no = torch.zeros(batch_size * beam_size, dtype=torch.bool, device=device)
    beams = Beams(
        torch.arange(batch_size, device=device), rows, scores, torch.zeros_like(rows), no,
        limits, torch.full_like(rows, SOS), state.select(rows // beam_size),
    )  # fmt: skip
    final_scores, final_lengths = torch.empty_like(scores), torch.empty_like(rows)
    emitted, origins, attention = [], [], []  # full-batch records of each step
    # Every step lengthens each unfinished beam, so all have finished by the last step.
    for _ in range(int(limits.max())):
        beams, previous, weights = _advance(model, beams, alpha)
        # Rows of sentences that left repeat <eos> from themselves.
        emitted.append(torch.full_like(rows, EOS).index_copy_(0, beams.rows, beams.tokens))
        origins.append(rows.clone().index_copy_(0, beams.rows, beams.rows[previous]))
        attention.append(
            weights.new_zeros(len(rows), weights.size(1)).index_copy_(0, beams.rows, weights)
        )
        stopped = beams.finished.view(-1, beam_size).all(dim=1)  # [R]
        if bool(stopped.any()):
            leaving = beams.select(stopped.nonzero().squeeze(1))
            final_scores[leaving.sentences] = leaving.scores
            final_lengths[leaving.rows] = leaving.lengths
            if bool(stopped.all()):
                break
            beams = beams.select((~stopped).nonzero().squeeze(1))
    normalized = final_scores.view(-1) / length_penalty(final_lengths, alpha)  # [B*K]
    return _best(emitted, origins, attention, normalized, src_lengths, limits, gates, nbest)


def _advance(model: Searchable, beams: Beams, alpha: float) -> tuple[Beams, Tensor, Tensor]:
    """One step: every beam's K best continuations, the K best of those per sentence.
    -> (the beams after the step, the running row each extends [R*K], its attention)."""
    log_probs, state, weights = model.step(beams.tokens, beams.state)  # [R*K,V]
    count, size = beams.scores.shape
    # A beam's continuations share its score and length penalty, so they rank as their
    # log-probs do: the K best of a sentence are among its beams' K best each (ranking
    # K*K candidates instead of K*V).
    candidates, ids = log_probs.topk(min(size, log_probs.size(1)), dim=1)  # [R*K,K]
    # A finished beam's only continuation is <eos> at no cost.
    frozen = torch.full_like(candidates[0], float("-inf"))
    frozen[0] = FROZEN_SCORE
    ended = beams.finished.unsqueeze(1)
    candidates = torch.where(ended, frozen, candidates)
    ids = torch.where(ended, EOS, ids)
    grown = grown_lengths(beams.lengths, beams.finished)  # [R*K] lengths after this step
    totals = beams.scores.view(-1, 1) + candidates  # [R*K,K] summed log-probs
    ranked = (totals / length_penalty(grown, alpha).unsqueeze(1)).view(count, -1)
    best = ranked.topk(size, dim=1).indices  # [R,K] into the sentence's K*K candidates
    first = (torch.arange(count, device=best.device) * size).unsqueeze(1)  # [R,1]
    previous = (best // candidates.size(1) + first).view(-1)  # [R*K] running row extended
    tokens = ids.view(count, -1).gather(1, best).view(-1)
    lengths = grown[previous]
    finished = now_finished(beams.finished[previous], tokens, lengths, beams.limits)
    scores = totals.view(count, -1).gather(1, best)
    advanced = Beams(
        beams.sentences, beams.rows, scores, lengths, finished, beams.limits, tokens,
        state.reorder(previous),
    )  # fmt: skip
    return advanced, previous, weights[previous]


def _best(
    emitted: list[Tensor],
    origins: list[Tensor],
    attention: list[Tensor],
    normalized: Tensor,
    src_lengths: Tensor,
    limits: Tensor,
    gates: GateValues | None,
    nbest: int,
) -> list[list[Hypothesis]]:
    """Follow the back-pointers from the final beams to the first step; the `nbest` best
    of each sentence by normalized score [B*K]."""
    batch_size = src_lengths.size(0)
    beam_size = normalized.size(0) // batch_size
    row = torch.arange(normalized.size(0), device=normalized.device)
    ids, alignments = [], []
    for step in reversed(range(len(emitted))):
        ids.append(emitted[step][row])
        alignments.append(attention[step][row])
        row = origins[step][row]
    ids_tensor = torch.stack(ids[::-1], dim=1)  # [B*K,T]
    attention_tensor = torch.stack(alignments[::-1], dim=1)  # [B*K,T,S]
    scores = normalized.view(batch_size, beam_size).tolist()
    picked = torch.tensor(
        [b * beam_size + j for b in range(batch_size) for j in best_first(scores[b], nbest)],
        device=row.device,
    )  # [B*nbest]
    flat = _hypotheses(
        ids_tensor[picked],
        normalized[picked],
        attention_tensor[picked],
        src_lengths.repeat_interleave(nbest),
        limits[picked],
        None if gates is None else gates.select(picked // beam_size),
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
        length, rows = extent(row_ids, limits[row])
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
