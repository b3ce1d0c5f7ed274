"""Greedy and beam search over numpy arrays: the search of the onnxruntime path, which
runs without torch. It follows search.py step for step (read that module's docstrings
for the why) and takes its rules from search_rules.py; tests/test_onnx.py checks that
both find the same translations.

A model here is anything with `start(src [B,S], src_lengths [B]) -> state` and
`step(tokens [R], state) -> (float32 log-probs [R,V], state, attention [R,S])`, whose
state offers `select(rows)` (keep, drop or repeat rows) and `reorder(rows)` (a beam
takes the decoder state of another beam of its sentence).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

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


class SearchState(Protocol):
    def select(self, rows: np.ndarray) -> SearchState: ...
    def reorder(self, rows: np.ndarray) -> SearchState: ...


class StepModel(Protocol):
    def start(self, src: np.ndarray, src_lengths: np.ndarray) -> SearchState: ...
    def step(
        self, tokens: np.ndarray, state: Any
    ) -> tuple[np.ndarray, SearchState, np.ndarray]: ...


def max_output_lengths(src_lengths: np.ndarray, ratio: float, offset: int) -> np.ndarray:
    """[B] -> [B] longest allowed output (search_rules.max_output_length)."""
    return np.array([max_output_length(int(n), ratio, offset) for n in src_lengths])


def greedy_search(
    model: StepModel, src: np.ndarray, src_lengths: np.ndarray, max_lengths: np.ndarray
) -> list[Hypothesis]:
    """The most probable token at every step, for all sentences at once; a sentence that
    has stopped leaves the decoder batch (src [B,S], src_lengths [B], max_lengths [B])."""
    state = model.start(src, src_lengths)
    batch_size = len(src)
    running = np.arange(batch_size)  # [R] batch row of each running row
    limits = max_lengths  # [R]
    tokens = np.full(batch_size, SOS, dtype=np.int64)  # [R]
    scores = np.zeros(batch_size, dtype=np.float32)
    emitted, attention = [], []
    for t in range(int(max_lengths.max())):
        log_probs, state, weights = model.step(tokens, state)  # [R,V]
        tokens = log_probs.argmax(axis=1)
        scores[running] += log_probs[np.arange(len(tokens)), tokens]
        # Full-batch records: a stopped sentence only repeats <eos> (cut off later).
        emitted.append(_spread(tokens, running, batch_size, EOS))
        attention.append(_spread(weights, running, batch_size, 0.0))
        going = still_going(tokens, t, limits)  # [R]
        if not going.all():
            if not going.any():
                break
            keep = np.flatnonzero(going)
            running, limits, tokens = running[keep], limits[keep], tokens[keep]
            state = state.select(keep)
    return _hypotheses(
        np.stack(emitted, 1), scores, np.stack(attention, 1), src_lengths, max_lengths
    )


def _spread(values: np.ndarray, rows: np.ndarray, size: int, fill: float) -> np.ndarray:
    """values [R,...] at `rows` of a [size,...] array filled with `fill` elsewhere."""
    full = np.full((size, *values.shape[1:]), fill, dtype=values.dtype)
    full[rows] = values
    return full


@dataclass
class Beams:
    """The R sentences still searching, K beams each: beam j of running sentence r is row
    r*K + j of every [R*K] array and of the decoder state (search.Beams' layout)."""

    sentences: np.ndarray  # [R] batch index of each running sentence
    rows: np.ndarray  # [R*K] full-batch row (b*K + j) of each beam
    scores: np.ndarray  # [R,K] float32 summed log-probabilities
    lengths: np.ndarray  # [R*K] tokens emitted, <eos> included
    finished: np.ndarray  # [R*K] bool
    limits: np.ndarray  # [R*K] longest output allowed
    tokens: np.ndarray  # [R*K] the token each beam emitted last
    state: Any

    def select(self, keep: np.ndarray) -> Beams:
        """Only the sentences `keep` [R'] (indices into the running ones)."""
        size = self.scores.shape[1]
        rows = (keep[:, None] * size + np.arange(size)).reshape(-1)
        return Beams(
            self.sentences[keep], self.rows[rows], self.scores[keep], self.lengths[rows],
            self.finished[rows], self.limits[rows], self.tokens[rows], self.state.select(rows),
        )  # fmt: skip


def beam_search(
    model: StepModel,
    src: np.ndarray,
    src_lengths: np.ndarray,
    max_lengths: np.ndarray,
    beam_size: int,
    alpha: float = 0.0,
    nbest: int = 1,
) -> list[list[Hypothesis]]:
    """All sentences and beams of a batch as rows of one decoder batch; per sentence the
    `nbest` best hypotheses by log-probability / length penalty, best first."""
    if not 1 <= nbest <= beam_size:
        raise ValueError(f"nbest must be between 1 and the beam size, got {nbest}")
    state = model.start(src, src_lengths)
    batch_size = len(src)
    rows = np.arange(batch_size * beam_size)  # [B*K]
    limits = np.repeat(max_lengths, beam_size)  # [B*K]
    scores = np.full((batch_size, beam_size), -np.inf, dtype=np.float32)
    scores[:, 0] = 0.0  # one live beam at the start: the first step picks K distinct tokens
    beams = Beams(
        np.arange(batch_size), rows, scores, np.zeros_like(rows),
        np.zeros(len(rows), dtype=bool), limits, np.full_like(rows, SOS),
        state.select(rows // beam_size),
    )  # fmt: skip
    final_scores, final_lengths = np.empty_like(scores), np.empty_like(rows)
    emitted, origins, attention = [], [], []  # full-batch records of each step
    for _ in range(int(limits.max())):
        beams, previous, weights = _advance(model, beams, alpha)
        emitted.append(_spread(beams.tokens, beams.rows, len(rows), EOS))
        origins.append(rows.copy())
        origins[-1][beams.rows] = beams.rows[previous]
        attention.append(_spread(weights, beams.rows, len(rows), 0.0))
        stopped = beams.finished.reshape(-1, beam_size).all(axis=1)  # [R]
        if stopped.any():
            leaving = beams.select(np.flatnonzero(stopped))
            final_scores[leaving.sentences] = leaving.scores
            final_lengths[leaving.rows] = leaving.lengths
            if stopped.all():
                break
            beams = beams.select(np.flatnonzero(~stopped))
    penalty = length_penalty(final_lengths.astype(np.float32), alpha)
    normalized = final_scores.reshape(-1) / penalty  # [B*K]
    return _best(emitted, origins, attention, normalized, src_lengths, limits, nbest)


def _advance(model: StepModel, beams: Beams, alpha: float) -> tuple[Beams, np.ndarray, Any]:
    """One step: every beam's K best continuations, the K best of those per sentence
    -> (the beams after the step, the running row each extends [R*K], its attention)."""
    log_probs, state, weights = model.step(beams.tokens, beams.state)  # [R*K,V]
    count, size = beams.scores.shape
    candidates, ids = _top(log_probs, min(size, log_probs.shape[1]))  # [R*K,k]
    frozen = np.full(candidates.shape[1], -np.inf, dtype=candidates.dtype)
    frozen[0] = FROZEN_SCORE
    ended = beams.finished[:, None]
    candidates = np.where(ended, frozen, candidates)
    ids = np.where(ended, EOS, ids)
    grown = grown_lengths(beams.lengths, beams.finished)  # [R*K]
    totals = beams.scores.reshape(-1, 1) + candidates  # [R*K,k]
    penalty = length_penalty(grown.astype(np.float32), alpha)[:, None]
    ranked = (totals / penalty).reshape(count, -1)
    best = np.argsort(-ranked, axis=1, kind="stable")[:, :size]  # [R,K]
    previous = (best // candidates.shape[1] + np.arange(count)[:, None] * size).reshape(-1)
    tokens = np.take_along_axis(ids.reshape(count, -1), best, 1).reshape(-1)
    lengths = grown[previous]
    finished = now_finished(beams.finished[previous], tokens, lengths, beams.limits)
    scores = np.take_along_axis(totals.reshape(count, -1), best, 1)
    advanced = Beams(
        beams.sentences, beams.rows, scores, lengths, finished, beams.limits, tokens,
        state.reorder(previous),
    )  # fmt: skip
    return advanced, previous, weights[previous]


def _top(values: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k largest of each row, largest first: (values [N,k], their columns [N,k])."""
    columns = np.argpartition(values, -k, axis=1)[:, -k:]
    found = np.take_along_axis(values, columns, 1)
    order = np.argsort(-found, axis=1, kind="stable")
    return np.take_along_axis(found, order, 1), np.take_along_axis(columns, order, 1)


def _best(
    emitted: list[np.ndarray],
    origins: list[np.ndarray],
    attention: list[np.ndarray],
    normalized: np.ndarray,
    src_lengths: np.ndarray,
    limits: np.ndarray,
    nbest: int,
) -> list[list[Hypothesis]]:
    """Back-pointers from the final beams to the first step; the `nbest` best of each
    sentence by normalized score [B*K]."""
    batch_size = len(src_lengths)
    beam_size = len(normalized) // batch_size
    row = np.arange(len(normalized))
    ids, alignments = [], []
    for step in reversed(range(len(emitted))):
        ids.append(emitted[step][row])
        alignments.append(attention[step][row])
        row = origins[step][row]
    scores = normalized.reshape(batch_size, beam_size).tolist()
    picked = np.array(
        [b * beam_size + j for b in range(batch_size) for j in best_first(scores[b], nbest)]
    )  # [B*nbest]
    flat = _hypotheses(
        np.stack(ids[::-1], 1)[picked],
        normalized[picked],
        np.stack(alignments[::-1], 1)[picked],
        np.repeat(src_lengths, nbest),
        limits[picked],
    )
    return [flat[i * nbest : (i + 1) * nbest] for i in range(batch_size)]


def _hypotheses(
    ids: np.ndarray,
    scores: np.ndarray,
    attention: np.ndarray,
    src_lengths: np.ndarray,
    max_lengths: np.ndarray,
) -> list[Hypothesis]:
    """ids [B,T], scores [B], attention [B,T,S], max_lengths [B] -> one Hypothesis per
    row, cut by search_rules.extent."""
    ids_list, scores_list, limits = ids.tolist(), scores.tolist(), max_lengths.tolist()
    result = []
    for row, row_ids in enumerate(ids_list):
        length, rows = extent(row_ids, limits[row])
        source = int(src_lengths[row])
        result.append(
            Hypothesis(row_ids[:length], scores_list[row], attention[row, :rows, :source])
        )
    return result
