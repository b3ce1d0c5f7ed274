"""The whole translator: encoder -> (optional gate) -> attention -> decoder (DESIGN.md)."""

from __future__ import annotations

from torch import Tensor, nn

from seq2seq.config import ModelConfig
from seq2seq.decoder import Decoder, Memory
from seq2seq.encoder import Encoder
from seq2seq.gates import make_gate
from seq2seq.vocab import PAD


class Seq2Seq(nn.Module):
    def __init__(self, config: ModelConfig, src_vocab_size: int, trg_vocab_size: int):
        super().__init__()
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
