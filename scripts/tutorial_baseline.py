"""The public tutorial's computation on our model's parameters: the baseline that
scripts/benchmark.py times ours against, and that tests/test_benchmark.py proves computes
exactly our model's function (a faithful reading of the tutorial, not a strawman).

Operation for operation the tutorial's code (its Attention, Decoder, Seq2Seq.forward and
translate_sentence): time-major tensors, the state repeated over the source and
concatenated with every encoder output at every step, an nn.GRU called on one step, the
output projection inside the step loop into a preallocated outputs tensor, teacher
forcing drawn per step. Only the weights are ours (shared, not copied).
"""

from __future__ import annotations

import random
from collections.abc import Callable

import torch
from torch import Tensor, nn

from seq2seq.model import Seq2Seq
from seq2seq.translator import Translator
from seq2seq.vocab import EOS, PAD, SOS


class TutorialDecoder:
    def __init__(self, model: Seq2Seq):
        decoder = model.decoder
        self.model, self.decoder = model, decoder
        self.join_attention_weight()
        cell = decoder.rnn
        self.rnn = torch.nn.GRU(cell.input_size, cell.hidden_size)
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            setattr(self.rnn, f"{name}_l0", getattr(cell, name))  # shared parameters

    def join_attention_weight(self) -> None:
        """The tutorial's attn = Linear(D + 2H, D) over cat(hidden, outputs) is our W_q and
        W_k side by side; joined once per batch (after each optimizer step)."""
        attention = self.decoder.attention
        weights = [attention.query_projection.weight, attention.key_projection.weight]
        self.attn_weight = torch.cat(weights, dim=1)

    def attention(self, hidden: Tensor, encoder_outputs: Tensor, mask: Tensor) -> Tensor:
        """hidden [B,D], encoder_outputs [S,B,2H], mask [B,S] -> [B,S] (tutorial's Attention)."""
        src_len = encoder_outputs.shape[0]
        hidden = hidden.unsqueeze(1).repeat(1, src_len, 1)
        encoder_outputs = encoder_outputs.permute(1, 0, 2)
        energy = torch.tanh(
            torch.nn.functional.linear(
                torch.cat((hidden, encoder_outputs), dim=2),
                self.attn_weight,
                self.decoder.attention.key_projection.bias,
            )
        )
        attention = self.decoder.attention.energy_weight(energy).squeeze(2)
        attention = attention.masked_fill(mask == 0, -1e10)
        return torch.softmax(attention, dim=1)

    def __call__(self, input: Tensor, hidden: Tensor, encoder_outputs: Tensor, mask: Tensor):
        """The tutorial's Decoder.forward: one step for tokens [B], state [B,D]."""
        input = input.unsqueeze(0)
        embedded = self.decoder.dropout(self.decoder.embedding(input))  # [1,B,E]
        a = self.attention(hidden, encoder_outputs, mask).unsqueeze(1)  # [B,1,S]
        weighted = torch.bmm(a, encoder_outputs.permute(1, 0, 2)).permute(1, 0, 2)  # [1,B,2H]
        rnn_input = torch.cat((embedded, weighted), dim=2)
        output, hidden = self.rnn(rnn_input, hidden.unsqueeze(0))
        embedded, output, weighted = embedded.squeeze(0), output.squeeze(0), weighted.squeeze(0)
        prediction = self.decoder.output(torch.cat((output, weighted, embedded), dim=1))
        return prediction, hidden.squeeze(0), a.squeeze(1)


def tutorial_forward(
    decoder: TutorialDecoder, src: Tensor, lengths: Tensor, trg_in: Tensor, ratio: float
) -> Tensor:
    """The tutorial's Seq2Seq.forward: inputs <sos> y_1 ... [B,T] -> logits [B,T,V]."""
    decoder.join_attention_weight()
    encoder_outputs, hidden = decoder.model.encoder(src, lengths)
    encoder_outputs = encoder_outputs.transpose(0, 1)  # the tutorial's [S,B,2H]
    trg = trg_in.t()  # [T,B]
    steps, batch_size = trg.shape
    outputs = torch.zeros(steps, batch_size, decoder.decoder.output.out_features)
    mask = src != PAD
    input = trg[0, :]
    for t in range(steps):
        output, hidden, _ = decoder(input, hidden, encoder_outputs, mask)
        outputs[t] = output
        teacher_force = random.random() < ratio
        top1 = output.argmax(1)
        if t + 1 < steps:
            input = trg[t + 1] if teacher_force else top1
    return outputs.transpose(0, 1)


def per_step_output_forward(
    model: Seq2Seq, src: Tensor, lengths: Tensor, trg_in: Tensor, ratio: float
) -> Tensor:
    """Ours but with the output layer inside the step loop (one step of the speed-up
    undone, to measure it): keys hoisted, GRUCell, logits projected at every step."""
    memory, state = model.encode(src, lengths)
    decoder, token, predictions = model.decoder, trg_in[:, 0], []
    for t in range(trg_in.size(1)):
        embedded = decoder.embed(token)
        state, context, _ = decoder.recur(embedded, state, memory)
        logits = decoder.logits(state, context, embedded)
        predictions.append(logits)
        if t + 1 < trg_in.size(1):
            token = trg_in[:, t + 1] if random.random() < ratio else logits.argmax(1)
    return torch.stack(predictions, dim=1)


class Computed(nn.Module):
    """A model's parameters with another forward computation (src, lengths, trg_in,
    teacher forcing) -> logits, so that Optimization trains it like the model itself."""

    def __init__(self, model: Seq2Seq, forward: Callable[..., Tensor]):
        super().__init__()
        self.model, self.compute = model, forward

    def forward(self, src: Tensor, lengths: Tensor, trg_in: Tensor, ratio: float) -> Tensor:
        return self.compute(src, lengths, trg_in, ratio)


def tutorial_translate(decoder: TutorialDecoder, translator: Translator, sentence: str) -> str:
    """The tutorial's translate_sentence (one sentence, greedy, max_len 50), with our
    tokenizer and detokenizer around it."""
    max_len = 50
    tokens = translator.src.tokenize([sentence])[0]
    src_indexes = translator.src.vocab.encode(tokens)
    src_tensor = torch.LongTensor(src_indexes).unsqueeze(0)
    src_len = torch.LongTensor([len(src_indexes)])
    with torch.no_grad():
        encoder_outputs, hidden = decoder.model.encoder(src_tensor, src_len)
    encoder_outputs = encoder_outputs.transpose(0, 1)
    mask = src_tensor != PAD
    trg_indexes = [SOS]
    attentions = torch.zeros(max_len, 1, len(src_indexes))
    for i in range(max_len):
        trg_tensor = torch.LongTensor([trg_indexes[-1]])
        with torch.no_grad():
            output, hidden, attention = decoder(trg_tensor, hidden, encoder_outputs, mask)
        attentions[i] = attention
        pred_token = output.argmax(1).item()
        trg_indexes.append(pred_token)
        if pred_token == EOS:
            break
    ids = trg_indexes[1:-1] if trg_indexes[-1] == EOS else trg_indexes[1:]
    return translator.trg.detokenize(translator.trg.tokens(ids))
