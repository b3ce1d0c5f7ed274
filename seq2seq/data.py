"""Token ids -> padded tensors: length-bucketed batches that keep padding small.

Each sentence is stored once as a 1-D tensor of ids (<sos> ... <eos>); a training corpus
keeps all of them in one tensor (`IdRows`). Batches are index lists; `collate` pads them
and keeps the true lengths for packing.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.nn.utils.rnn import pad_sequence

from seq2seq.vocab import PAD

POOL_BATCHES = 50
"""Bucketing sorts pools of this many batches by length: little padding, random order."""


@dataclass
class Batch:
    src: Tensor  # [B, S] source ids, padded
    src_lengths: Tensor  # [B] true source lengths (on the CPU, as packing wants)
    trg: Tensor | None  # [B, T] target ids <sos> ... <eos>, padded; None when translating
    indices: list[int]  # position of each row in the corpus

    def to(self, device: torch.device) -> Batch:
        """The batch on `device`; to a GPU through pinned memory, copied asynchronously."""

        def move(tensor: Tensor) -> Tensor:
            if device.type == "cuda":
                tensor = tensor.pin_memory()
            return tensor.to(device, non_blocking=True)

        trg = None if self.trg is None else move(self.trg)
        return Batch(move(self.src), self.src_lengths, trg, self.indices)

    @property
    def target_tokens(self) -> int:
        """Tokens the model predicts: everything after <sos> that is not padding."""
        assert self.trg is not None
        return int((self.trg[:, 1:] != PAD).sum())


class IdRows(Sequence[Tensor]):
    """Id sequences end to end in one int64 tensor; row i is a view. A tensor per sentence
    costs some 670 bytes besides its ids: 0.39 GB for 290k pairs (docs/memory.md)."""

    def __init__(self, rows: Iterable[list[int]]):
        ids, self._offsets = array("q"), array("q", [0])
        for row in rows:
            ids.extend(row)
            self._offsets.append(len(ids))
        self._ids = (
            torch.frombuffer(ids, dtype=torch.long) if ids else torch.zeros(0, dtype=torch.long)
        )

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def __getitem__(self, index: int) -> Tensor:  # type: ignore[override]
        return self._ids[self._offsets[index] : self._offsets[index + 1]]

    def lengths(self) -> list[int]:
        offsets = self._offsets
        return [offsets[i + 1] - offsets[i] for i in range(len(self))]


def collate(indices: list[int], src: Sequence[Tensor], trg: Sequence[Tensor] | None) -> Batch:
    src_rows = [src[i] for i in indices]
    lengths = torch.tensor([len(row) for row in src_rows], dtype=torch.long)
    padded_src = pad_sequence(src_rows, batch_first=True, padding_value=PAD)
    padded_trg = None
    if trg is not None:
        padded_trg = pad_sequence([trg[i] for i in indices], batch_first=True, padding_value=PAD)
    return Batch(padded_src, lengths, padded_trg, list(indices))


def make_batches(
    lengths: list[int],
    batch_size: int,
    unit: str = "sentences",
    generator: torch.Generator | None = None,
) -> list[list[int]]:
    """Group sentence indices into batches of similar length.

    `lengths[i]` is the longer side of pair i. With a generator, the corpus is shuffled,
    sorted by length inside pools of POOL_BATCHES batches, and the batches are shuffled;
    without one, the whole corpus is sorted (for evaluation). `unit="tokens"` makes
    batch_size a budget of padded tokens (longest length x sentences).
    """
    order = list(range(len(lengths)))
    if generator is None:
        pools = [order]
    else:
        order = torch.randperm(len(lengths), generator=generator).tolist()
        mean_length = max(1.0, sum(lengths) / max(1, len(lengths)))  # 1.0 for an empty corpus
        per_batch = batch_size if unit == "sentences" else max(1, int(batch_size / mean_length))
        pool_size = POOL_BATCHES * per_batch
        pools = [order[start : start + pool_size] for start in range(0, len(order), pool_size)]
    batches: list[list[int]] = []
    for pool in pools:
        batches.extend(_cut(sorted(pool, key=lambda i: lengths[i]), lengths, batch_size, unit))
    if generator is not None:
        batches = [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]
    return batches


def _cut(sorted_indices: list[int], lengths: list[int], size: int, unit: str) -> list[list[int]]:
    batches, current, longest = [], [], 0
    for index in sorted_indices:
        longest_with = max(longest, lengths[index])
        cost = len(current) + 1 if unit == "sentences" else longest_with * (len(current) + 1)
        if current and cost > size:
            batches.append(current)
            current, longest_with = [], lengths[index]
        current.append(index)
        longest = longest_with
    if current:
        batches.append(current)
    return batches
