"""Decoder: one GRU step per target token, attending over the encoder outputs.

At step t, with previous token y_{t-1} and state s_{t-1}:

    e_t      = dropout(Embedding(y_{t-1}))          [B,E]
    c_t, a_t = attention(s_{t-1}, encoder outputs)  [B,2H], [B,S]
    s_t      = GRU([e_t ; c_t], s_{t-1})            [B,D]
    logits_t = W_out [s_t ; c_t ; e_t]              [B,V]

The output layer does not feed the recurrence, so training collects s_t, c_t and e_t
over all steps and projects them with one large matrix multiply after the loop.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from seq2seq.attention import AdditiveAttention
from seq2seq.gates import GateValues


@dataclass
class Memory:
    """What the decoder attends to, prepared once per batch."""

    outputs: Tensor  # [B,S,2H] encoder outputs (gated, with an encoder gate)
    keys: Tensor  # [B,S,A] attention keys W_k h + b
    mask: Tensor  # [B,S] True on real source tokens
    gates: GateValues | None = None  # the encoder gate's values, if the model has one

    def select(self, rows: Tensor) -> Memory:
        """The memory of the given batch rows (beam search reorders and repeats rows)."""
        gates = None if self.gates is None else self.gates.select(rows)
        return Memory(self.outputs[rows], self.keys[rows], self.mask[rows], gates)


class Decoder(nn.Module):
    def __init__(
        self,
        vocab_size: int,
        embedding_size: int,
        hidden_size: int,
        memory_size: int,
        dropout: float,
        pad_id: int,
    ):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embedding_size, padding_idx=pad_id)
        self.dropout = nn.Dropout(dropout)
        self.attention = AdditiveAttention(memory_size, hidden_size, hidden_size)
        self.rnn = nn.GRUCell(embedding_size + memory_size, hidden_size)
        self.output = nn.Linear(hidden_size + memory_size + embedding_size, vocab_size)

    def prepare(self, outputs: Tensor, mask: Tensor, gates: GateValues | None = None) -> Memory:
        return Memory(outputs, self.attention.keys(outputs), mask, gates)

    def embed(self, tokens: Tensor) -> Tensor:
        """tokens [...] -> dropout(embeddings) [..., E]."""
        return self.dropout(self.embedding(tokens))

    def recur(
        self, embedded: Tensor, state: Tensor, memory: Memory
    ) -> tuple[Tensor, Tensor, Tensor]:
        """One step: e_t [B,E], s_{t-1} [B,D] -> (s_t [B,D], c_t [B,2H], a_t [B,S])."""
        context, weights = self.attention(state, memory.keys, memory.outputs, memory.mask)
        state = self.rnn(torch.cat([embedded, context], dim=1), state)
        return state, context, weights

    def logits(self, state: Tensor, context: Tensor, embedded: Tensor) -> Tensor:
        """[..., D], [..., 2H], [..., E] -> [..., V]."""
        return self.output(torch.cat([state, context, embedded], dim=-1))

    def step(self, tokens: Tensor, state: Tensor, memory: Memory) -> tuple[Tensor, Tensor, Tensor]:
        """For search: y_{t-1} [B], s_{t-1} [B,D] -> (log-probs [B,V], s_t [B,D], a_t [B,S])."""
        embedded = self.embed(tokens)
        state, context, weights = self.recur(embedded, state, memory)
        logits = self.logits(state, context, embedded)
        # fp32 log-probs also under bf16 autocast: search sums them over many steps.
        return torch.log_softmax(logits, dim=-1, dtype=torch.float32), state, weights

    def forward(
        self, trg_in: Tensor, state: Tensor, memory: Memory, teacher_forcing: float = 1.0
    ) -> Tensor:
        """Training: inputs <sos> y_1 ... [B,T], s0 [B,D] -> logits [B,T,V].

        With probability `teacher_forcing`, drawn once per step for the whole batch (as
        the tutorial does), step t+1 is fed the gold token, otherwise the model's own
        greedy prediction at step t.
        """
        steps = trg_in.size(1)
        gold = self.embed(trg_in)  # [B,T,E], all steps at once
        # T coin flips, as Python bools so the step loop reads them without tensor ops;
        # drawn only for a ratio strictly between 0 and 1: evaluation (ratio 1 or 0)
        # never touches the RNG.
        if teacher_forcing >= 1.0:
            forced = [True] * steps
        elif teacher_forcing <= 0.0:
            forced = [False] * steps
        else:
            forced = (torch.rand(steps) < teacher_forcing).tolist()
        states, contexts, inputs = [], [], []
        embedded = gold[:, 0]
        for t in range(steps):
            state, context, _ = self.recur(embedded, state, memory)
            states.append(state)
            contexts.append(context)
            inputs.append(embedded)
            if t + 1 == steps:
                break
            if forced[t + 1]:
                embedded = gold[:, t + 1]
            else:
                with torch.no_grad():  # the prediction only picks the next input
                    prediction = self.logits(state, context, embedded).argmax(dim=-1)
                embedded = self.embed(prediction)
        # [B,T,D+2H+E] @ [D+2H+E,V]: one matrix multiply for all steps.
        return self.logits(
            torch.stack(states, dim=1), torch.stack(contexts, dim=1), torch.stack(inputs, dim=1)
        )
