"""The whole translator: encoder -> (optional gate) -> attention -> decoder
(docs/design.md has the equations).

Search (search.py) sees a model through three calls, which an ensemble (ensemble.py)
offers too: `start` encodes a batch into a `SearchState`, `step` advances it by one
token, and `SearchState.select` keeps, reorders or repeats its rows.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from seq2seq.config import ModelConfig
from seq2seq.decoder import Decoder, Memory
from seq2seq.encoder import Encoder
from seq2seq.gates import GateValues, make_gate
from seq2seq.vocab import PAD


@dataclass
class SearchState:
    """One decoder batch during search: what it attends to and where the GRU is."""

    memory: Memory  # encoder outputs, keys and mask of each row
    hidden: Tensor  # [B,D] decoder state s_t

    def select(self, rows: Tensor) -> SearchState:
        """The state of the given rows (search drops finished rows, beams repeat them)."""
        return SearchState(self.memory.select(rows), self.hidden[rows])

    def reorder(self, rows: Tensor) -> SearchState:
        """Rows that each take the decoder state of a row of the same sentence (a beam
        continuing another beam): the memory, equal within a sentence, stays as it is."""
        return SearchState(self.memory, self.hidden[rows])

    @property
    def gates(self) -> GateValues | None:
        return self.memory.gates


class Seq2Seq(nn.Module):
    def __init__(self, config: ModelConfig, src_vocab_size: int, trg_vocab_size: int):
        super().__init__()
        self.config, self.trg_vocab_size = config, trg_vocab_size
        memory_size = 2 * config.encoder.hidden_size
        self.encoder = Encoder(
            src_vocab_size,
            config.encoder.embedding_size,
            config.encoder.hidden_size,
            config.decoder.hidden_size,
            config.dropout,
            PAD,
        )
        self.decoder = Decoder(
            trg_vocab_size,
            config.decoder.embedding_size,
            config.decoder.hidden_size,
            memory_size,
            config.dropout,
            PAD,
        )
        # None for gate `none`: no parameters, so the model is exactly the plain one.
        self.encoder_gate = make_gate(
            config.encoder.gate,
            memory_size,
            config.encoder.gate_reduction,
            config.encoder.gate_kernel,
        )
        self._init_weights()

    def _init_weights(self) -> None:
        """The tutorial's initialisation: weights ~ N(0, 0.01), biases 0."""
        for name, parameter in self.named_parameters():
            if "weight" in name:
                nn.init.normal_(parameter, mean=0.0, std=0.01)
            else:
                nn.init.zeros_(parameter)

    def encode(self, src: Tensor, src_lengths: Tensor) -> tuple[Memory, Tensor]:
        """src [B,S], src_lengths [B] -> (memory for attention, decoder state s0 [B,D])."""
        outputs, state = self.encoder(src, src_lengths)  # [B,S,2H], [B,D]
        mask = src != PAD
        gates = None
        if self.encoder_gate is not None:
            outputs, gates = self.encoder_gate(outputs, mask)
        return self.decoder.prepare(outputs, mask, gates), state

    def forward(
        self, src: Tensor, src_lengths: Tensor, trg_in: Tensor, teacher_forcing: float = 1.0
    ) -> Tensor:
        """src [B,S], trg_in [B,T] (<sos> y_1 ... y_{T-1}) -> logits [B,T,V] for y_1 ... y_T."""
        memory, state = self.encode(src, src_lengths)
        return self.decoder(trg_in, state, memory, teacher_forcing)

    def start(self, src: Tensor, src_lengths: Tensor) -> SearchState:
        memory, hidden = self.encode(src, src_lengths)
        return SearchState(memory, hidden)

    def step(self, tokens: Tensor, state: SearchState) -> tuple[Tensor, SearchState, Tensor]:
        """y_{t-1} [B] -> (fp32 log-probs [B,V], the next state, attention a_t [B,S])."""
        log_probs, hidden, weights = self.decoder.step(tokens, state.hidden, state.memory)
        return log_probs, SearchState(state.memory, hidden), weights

    def sequence_log_probs(
        self, src: Tensor, src_lengths: Tensor, trg_in: Tensor, teacher_forcing: float
    ) -> Tensor:
        """Scoring a corpus: trg_in [B,T] -> fp32 log-probs [B,T,V] of y_1 ... y_T."""
        logits = self(src, src_lengths, trg_in, teacher_forcing)
        return torch.log_softmax(logits, dim=-1, dtype=torch.float32)


@contextmanager
def evaluating(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode (no dropout) inside the block; afterwards every submodule's own previous
    mode, also when the block raises (validation runs in the middle of training; an
    ensemble made for one call holds models loaded in eval mode)."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training
