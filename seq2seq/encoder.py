"""Encoder: embeddings -> packed bidirectional GRU -> outputs and the decoder's first state."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence


class Encoder(nn.Module):
    def __init__(
        self,
        vocab_size: int,
        embedding_size: int,
        hidden_size: int,
        decoder_hidden_size: int,
        dropout: float,
        pad_id: int,
    ):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embedding_size, padding_idx=pad_id)
        self.dropout = nn.Dropout(dropout)
        self.rnn = nn.GRU(embedding_size, hidden_size, batch_first=True, bidirectional=True)
        self.init_state = nn.Linear(2 * hidden_size, decoder_hidden_size)  # W_init

    def forward(self, src: Tensor, src_lengths: Tensor) -> tuple[Tensor, Tensor]:
        """src [B,S], src_lengths [B] -> (outputs [B,S,2H] zero on padding, s0 [B,D])."""
        embedded = self.dropout(self.embedding(src))  # [B,S,E]
        # Packing runs each sentence over its true length only: the backward direction
        # starts at the last real token, not at padding.
        packed = pack_padded_sequence(
            embedded, src_lengths.cpu(), batch_first=True, enforce_sorted=False
        )
        packed_outputs, last = self.rnn(packed)  # last [2,B,H]: forward, backward
        outputs, _ = pad_packed_sequence(packed_outputs, batch_first=True, total_length=src.size(1))
        initial_state = torch.tanh(self.init_state(torch.cat([last[0], last[1]], dim=1)))
        return outputs, initial_state
