"""The rules every search follows, whichever arrays it runs on: torch tensors (search.py)
or numpy arrays (numpy_search.py, the onnxruntime path). Both import them from here, so
the two cannot drift apart; tests/test_onnx.py decodes with both and compares.

The functions on arrays use only Python operators (`+`, `/`, `**`, `==`, `|`, `&`, `~`),
which torch tensors and numpy arrays both read the same way. This module imports
neither, so the onnxruntime path runs without torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from seq2seq.vocab import EOS

FROZEN_SCORE = 0.0
"""What a finished beam adds to its score at each later step: it continues with <eos>
only, at no cost, so its score and its length freeze."""


@dataclass
class Hypothesis:
    tokens: list[int]  # output ids, without <sos> and <eos>
    score: float  # summed log-probability of the tokens and <eos>, / length penalty in beams
    # [len(tokens) + 1, source length]: one row per emitted id, <eos> included; a torch
    # tensor or a numpy array, as the search's arrays are
    attention: Any
    gates: Any = None  # encoder gate values (gates.GateValues): channel [C], temporal [S]


def max_output_length(source_length: int, ratio: float, offset: int) -> int:
    """The longest output allowed for a source of `source_length` ids (<sos> and <eos>
    included): ratio * source tokens + offset, at least 1."""
    return max(1, math.ceil(max(source_length - 2, 0) * ratio) + offset)


def length_penalty(lengths: Any, alpha: float) -> Any:
    """GNMT's ((5 + length) / 6) ** alpha, element by element; scores are divided by it
    (alpha 0: no penalty). Integer torch lengths give float32, as float32 numpy ones do."""
    return ((5.0 + lengths) / 6.0) ** alpha


def still_going(tokens: Any, step: int, limits: Any) -> Any:
    """Greedy search, after step `step` (from 0) emitted `tokens` [R]: the rows that go on,
    not having emitted <eos> nor reached their limit [R]."""
    return (tokens != EOS) & (step + 1 < limits)


def grown_lengths(lengths: Any, finished: Any) -> Any:
    """Beam lengths [R*K] after a step: an unfinished beam grows by its token (<eos>
    included), a finished one keeps its length."""
    return lengths + ~finished


def now_finished(was_finished: Any, tokens: Any, lengths: Any, limits: Any) -> Any:
    """A beam [R*K] has finished once it continues a finished beam, emits <eos>, or
    reaches its limit."""
    return was_finished | (tokens == EOS) | (lengths >= limits)


def best_first(scores: list[float], count: int) -> list[int]:
    """Indices of the `count` best of one sentence's final beams, by normalized score;
    among equal scores the lower beam first."""
    return sorted(range(len(scores)), key=lambda beam: -scores[beam])[:count]


def extent(ids: list[int], limit: int) -> tuple[int, int]:
    """One output row of a search (full-batch records: after a row stops, <eos> only)
    -> (its tokens before the first <eos>, its attention rows). The <eos> has an
    attention row; the steps past a row's limit have none, as when decoded alone."""
    length = ids.index(EOS) if EOS in ids else len(ids)
    return length, min(length + 1, len(ids), limit)
