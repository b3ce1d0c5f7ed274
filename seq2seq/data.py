"""Token ids -> padded tensors: length-bucketed batches that keep padding small.

Each sentence is stored once as a 1-D tensor of ids (<sos> ... <eos>); a training corpus
keeps all of them in one tensor (`IdRows`). Batches are index lists (bucketing.py, which
this module re-exports); `collate` pads them and keeps the true lengths for packing.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.nn.utils.rnn import pad_sequence

from seq2seq.bucketing import make_batches as make_batches
from seq2seq.vocab import PAD


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
    """Id sequences end to end in one int64 tensor; row i is a view made when it is read,
    so a corpus costs its ids, not a tensor object and a storage per sentence."""

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
