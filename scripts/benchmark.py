"""Speed benchmark: training target tokens/s and translation sentences/s, each measured
back to back against a faithful reading of the public tutorial's computation.

    python scripts/benchmark.py --config configs/multi30k_de_en_tutorial.yaml \
        --data data/multi30k --checkpoint runs/multi30k_de_en_tutorial/best.pt

Training (same model sizes, same batches, same threads, interleaved timed windows):
- tutorial: its operations one for one (TutorialDecoder below, on our weights): attention
  energy recomputed over [state; encoder output] at every step, an nn.GRU called per
  step, output projection inside the step loop, teacher forcing decided per step; fp32.
- ours: attention keys once per batch; the output projection of all steps as one matrix
  multiply after the step loop; the argmax for the next input only on steps that need
  it; in fp32 and with bf16 autocast (`train.precision: bf16`). --gates se cbam times
  gated encoders too.
Also FLOPs per target token and the fraction of the fp32 and bf16 matmul peaks that
torch reaches here with the same threads.
Translation of the config's test split, test_2016_flickr (or --sentences of it):
- tutorial: its translate_sentence, one sentence at a time, greedy (on our weights).
- ours: batched greedy and beam 5 at batch sizes 1 and 64 (through the Translator API,
  tokenization and detokenization included, like the tutorial's loop).
Prints medians of --repeats timed runs and the ratios, and the peak RSS.
"""

from __future__ import annotations

import argparse
import random
import resource
import statistics
import time
from pathlib import Path

import torch
from torch import Tensor

from seq2seq.checkpoint import load_checkpoint, saved_config
from seq2seq.config import Config, load_config
from seq2seq.corpus import read_lines, split_path
from seq2seq.data import collate, make_batches
from seq2seq.loss import sequence_loss
from seq2seq.model import Seq2Seq
from seq2seq.text import training_sides
from seq2seq.training import make_optimizer
from seq2seq.translator import Translator
from seq2seq.vocab import EOS, PAD, SOS

ROOT = Path(__file__).resolve().parents[1]


# -- the tutorial's computation, on our model's parameters ---------------------------------
# Operation for operation the tutorial's code (its Attention, Decoder, Seq2Seq.forward and
# translate_sentence): time-major tensors, the state repeated over the source and
# concatenated with every encoder output at every step, an nn.GRU called on one step,
# the output projection inside the step loop into a preallocated outputs tensor,
# teacher forcing drawn per step. Only the weights are ours (shared, not copied), so
# tests/test_benchmark.py can check that it computes exactly our model's function.


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
    decoder: TutorialDecoder, src: Tensor, lengths: Tensor, trg: Tensor, ratio: float
) -> Tensor:
    """The tutorial's Seq2Seq.forward (batch-major in, logits [B,T-1,V] out)."""
    decoder.join_attention_weight()
    encoder_outputs, hidden = decoder.model.encoder(src, lengths)
    encoder_outputs = encoder_outputs.transpose(0, 1)  # the tutorial's [S,B,2H]
    trg = trg.t()  # [T,B]
    trg_len, batch_size = trg.shape
    outputs = torch.zeros(trg_len, batch_size, decoder.decoder.output.out_features)
    mask = src != PAD
    input = trg[0, :]
    for t in range(1, trg_len):
        output, hidden, _ = decoder(input, hidden, encoder_outputs, mask)
        outputs[t] = output
        teacher_force = random.random() < ratio
        top1 = output.argmax(1)
        input = trg[t] if teacher_force else top1
    return outputs[1:].transpose(0, 1)


def per_step_output_forward(
    model: Seq2Seq, src: Tensor, lengths: Tensor, trg: Tensor, ratio: float
) -> Tensor:
    """Ours but with the output layer inside the step loop (one step of the speed-up
    undone, to measure it): keys hoisted, GRUCell, logits projected at every step."""
    memory, state = model.encode(src, lengths)
    decoder, token, predictions = model.decoder, trg[:, 0], []
    for t in range(1, trg.size(1)):
        embedded = decoder.embed(token)
        state, context, _ = decoder.recur(embedded, state, memory)
        logits = decoder.logits(state, context, embedded)
        predictions.append(logits)
        token = trg[:, t] if random.random() < ratio else logits.argmax(1)
    return torch.stack(predictions, dim=1)


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


# -- measurements ----------------------------------------------------------------------------


def median_time(run, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def training_batches(config: Config, data: Path, count: int):
    """The first `count` batches of epoch 1, encoded as training encodes them."""
    src_lines = read_lines(split_path(data, config.data.train, config.data.src_lang))
    trg_lines = read_lines(split_path(data, config.data.train, config.data.trg_lang))
    src, trg, corpus = training_sides(config, src_lines, trg_lines)
    generator = torch.Generator().manual_seed(config.seed)
    order = make_batches(
        corpus.lengths, config.train.batch_size, config.train.batch_unit, generator
    )
    batches = [collate(indices, corpus.src, corpus.trg) for indices in order[:count]]
    return batches, len(src.vocab), len(trg.vocab), corpus.target_tokens, len(order)


def training_flops(config: Config, batches, trg_vocab_size: int) -> float:
    """Forward + backward floating-point operations of the useful work (padding excluded)
    in `batches`: 2 FLOPs per multiply-add, backward = 2 x forward.

    Per source token: the bidirectional GRU (2 directions x 3H x (E + H)) and the
    attention keys (2H x A). Per target step: the attention query (D x A), energies and
    scores (S x A), context (S x 2H), the decoder GRU (3D x (E + 2H + D)) and the output
    layer (V x (D + 2H + E)); with teacher forcing below 1 the steps that feed back a
    prediction compute that output layer once more, forward only.
    """
    m = config.model
    E, H = m.encoder.embedding_size, m.encoder.hidden_size
    e, D = m.decoder.embedding_size, m.decoder.hidden_size
    A, V = D, trg_vocab_size
    source = target = pairs = 0
    for batch in batches:
        src_lengths = batch.src_lengths.tolist()
        trg_lengths = (batch.trg != PAD).sum(dim=1).sub(1).tolist()  # predicted tokens
        source += sum(src_lengths)
        target += sum(trg_lengths)
        pairs += sum(s * t for s, t in zip(src_lengths, trg_lengths, strict=True))
    per_source = 2 * 3 * H * (E + H) + 2 * H * A
    per_step = D * A + 3 * D * (e + 2 * H + D) + V * (D + 2 * H + e)
    per_pair = A + 2 * H  # energy + score per source position, context
    forward = source * per_source + target * per_step + pairs * per_pair
    feedback = (1 - config.train.teacher_forcing) * target * V * (D + 2 * H + e)
    return 2 * (3 * forward + feedback)


def matmul_peak(threads: int, dtype: torch.dtype, size: int = 2048, repeats: int = 5) -> float:
    """Matrix-multiply FLOP/s that torch reaches here with these threads in this dtype."""
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    a @ b  # warm-up
    seconds = median_time(lambda: a @ b, repeats)
    return 2 * size**3 / seconds


def benchmark_training(
    config: Config, data: Path, windows: int, window_batches: int, gates: list[str]
) -> None:
    batches, src_size, trg_size, epoch_tokens, epoch_batches = training_batches(
        config, data, window_batches
    )
    ratio = config.train.teacher_forcing

    def trainable(gate: str) -> tuple[Seq2Seq, torch.optim.Optimizer]:
        torch.manual_seed(config.seed)
        model_config = config.model.model_copy(
            update={"encoder": config.model.encoder.model_copy(update={"gate": gate})}
        )
        model = Seq2Seq(model_config, src_size, trg_size).train()
        return model, make_optimizer(model, config.train.learning_rate, torch.device("cpu"))

    def window(model: Seq2Seq, optimizer, forward, dtype: torch.dtype | None) -> float:
        tokens = 0
        started = time.perf_counter()
        for batch in batches:
            with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
                logits = forward(model, batch)
                loss = sequence_loss(logits, batch.trg) / batch.target_tokens
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            tokens += batch.target_tokens
        return tokens / (time.perf_counter() - started)

    def ours(model: Seq2Seq, b) -> Tensor:
        return model(b.src, b.src_lengths, b.trg[:, :-1], ratio)

    model, optimizer = trainable("none")
    tutorial_optimizer = torch.optim.Adam(model.parameters(), lr=config.train.learning_rate)
    decoder = TutorialDecoder(model)

    def tutorial(model: Seq2Seq, b) -> Tensor:
        return tutorial_forward(decoder, b.src, b.src_lengths, b.trg, ratio)

    def per_step_output(model: Seq2Seq, b) -> Tensor:
        return per_step_output_forward(model, b.src, b.src_lengths, b.trg, ratio)

    # The tutorial trains in fp32 with the default Adam. The steps to ours: attention keys
    # once per batch (with the tutorial's Adam), then the output layer after the loop,
    # then fused Adam, then bf16 autocast, which runs the matrix multiplies on the
    # AMX/AVX512-BF16 units.
    variants = {
        "tutorial": (model, tutorial_optimizer, tutorial, None),
        "keys once": (model, tutorial_optimizer, per_step_output, None),
        "+out after": (model, tutorial_optimizer, ours, None),
        "ours fp32": (model, optimizer, ours, None),
        "ours bf16": (model, optimizer, ours, torch.bfloat16),
    }
    for gate in gates:  # encoder gates: their own models, ours in bf16
        variants[f"{gate} bf16"] = (*trainable(gate), ours, torch.bfloat16)
    for variant in variants.values():
        window(*variant)  # warm-up
    results: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(windows):  # interleaved, so drift in machine speed hits all alike
        for name, variant in variants.items():
            results[name].append(window(*variant))
    print(f"training ({window_batches} batches x {windows} windows, teacher forcing {ratio}):")
    baseline = statistics.median(results["tutorial"])
    for name, rates in results.items():
        rate = statistics.median(rates)
        runs = ", ".join(f"{r:.0f}" for r in rates)
        print(
            f"  {name:10s} {rate:8.0f} target tokens/s {rate / baseline:5.2f}x (median of {runs})"
            f" -> {epoch_tokens / rate:.0f} s per epoch of {epoch_batches} batches, "
            f"{sum(p.numel() for p in variants[name][0].parameters()):,} parameters"
        )
    tokens = sum(batch.target_tokens for batch in batches)
    flops_per_token = training_flops(config, batches, trg_size) / tokens
    threads = torch.get_num_threads()
    peaks = {
        name: matmul_peak(threads, dtype)
        for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16))
    }
    print(
        f"  {flops_per_token / 1e6:.1f} MFLOP per target token; matmul peak here "
        f"({threads} threads): fp32 {peaks['fp32'] / 1e9:.0f} GFLOP/s, "
        f"bf16 {peaks['bf16'] / 1e9:.0f} GFLOP/s"
    )
    for name in ("tutorial", "ours fp32", "ours bf16"):
        achieved = statistics.median(results[name]) * flops_per_token
        peak = peaks["bf16" if name.endswith("bf16") else "fp32"]
        print(
            f"  {name:10s} {achieved / 1e9:6.1f} GFLOP/s = {achieved / peak:.0%} of the "
            f"{'bf16' if name.endswith('bf16') else 'fp32'} peak, "
            f"{achieved / peaks['fp32']:.0%} of the fp32 peak"
        )


def benchmark_translation(checkpoint: Path, data: Path, sentences: int, repeats: int) -> None:
    translator = Translator.from_checkpoint(checkpoint, "cpu")
    decoder = TutorialDecoder(translator.models[0])
    settings = saved_config(load_checkpoint(checkpoint), str(checkpoint)).data
    lines = read_lines(split_path(data, settings.test, settings.src_lang))[:sentences]

    def ours(beam: int, batch: int, precision: str = "fp32"):
        decode = translator.decode.updated(beam_size=beam, batch_size=batch, precision=precision)

        def run():
            translator.translate(lines, decode)

        return run

    runs = {
        "tutorial greedy, one sentence at a time": lambda: [
            tutorial_translate(decoder, translator, line) for line in lines
        ],
        "greedy, batch 1": ours(1, 1),
        "greedy, batch 64": ours(1, 64),
        "greedy, batch 64, bf16": ours(1, 64, "bf16"),
        "beam 5, batch 1": ours(5, 1),
        "beam 5, batch 64": ours(5, 64),
        "beam 5, batch 64, bf16": ours(5, 64, "bf16"),
    }
    print(f"translation of {len(lines)} sentences (median of {repeats}):")
    baseline = None
    for name, run in runs.items():
        rate = len(lines) / median_time(run, repeats)
        baseline = baseline or rate
        print(f"  {name:40s} {rate:7.1f} sentences/s  {rate / baseline:5.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_config = ROOT / "configs/multi30k_de_en_tutorial.yaml"
    parser.add_argument("--config", type=Path, default=default_config)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared/data/multi30k")
    parser.add_argument("--checkpoint", type=Path, help="a trained model, for translation speed")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--windows", type=int, default=3, help="timed training windows")
    parser.add_argument("--window-batches", type=int, default=5)
    parser.add_argument("--sentences", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-training", action="store_true")
    parser.add_argument(
        "--gates", nargs="*", default=[], choices=["se", "cbam"], help="also time gated encoders"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    random.seed(0)
    print(f"torch {torch.__version__}, {args.threads} threads")
    if not args.skip_training:
        benchmark_training(
            load_config(args.config), args.data, args.windows, args.window_batches, args.gates
        )
    if args.checkpoint:
        benchmark_translation(args.checkpoint, args.data, args.sentences, args.repeats)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS: {peak:.0f} MB")


if __name__ == "__main__":
    main()
