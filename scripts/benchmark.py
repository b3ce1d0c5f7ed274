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
  tokenization and detokenization included, like the tutorial's loop), in fp32 as
  loaded ("unprepared") and as prepared for the CPU (seq2seq/inference.py), bf16, int8.
Prints medians of --repeats timed runs and the ratios, and the peak RSS.
"""

from __future__ import annotations

import argparse
import random
import resource
import statistics
import time
from functools import partial
from pathlib import Path

import torch
from tutorial_baseline import (
    Computed,
    TutorialDecoder,
    per_step_output_forward,
    tutorial_forward,
    tutorial_translate,
)

from seq2seq.allocator import tune_malloc
from seq2seq.checkpoint import load_checkpoint, saved_config
from seq2seq.config import Config, load_config
from seq2seq.corpus import read_split
from seq2seq.data import collate, make_batches
from seq2seq.model import Seq2Seq
from seq2seq.optimization import Optimization
from seq2seq.text import training_sides
from seq2seq.translator import Translator
from seq2seq.vocab import PAD

ROOT = Path(__file__).resolve().parents[1]


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
    src_lines, trg_lines = read_split(config.data, config.data.train, data)
    src, trg, corpus = training_sides(config, src_lines, trg_lines)
    generator = torch.Generator().manual_seed(config.seed)
    order = make_batches(
        corpus.lengths, config.train.batch_size, config.train.batch_unit, generator
    )
    batches = [collate(indices, corpus.src, corpus.trg) for indices in order[:count]]
    return batches, len(src.vocab), len(trg.vocab), corpus.target_tokens, len(order)


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
    ratio, cpu = config.train.teacher_forcing, torch.device("cpu")

    def model_with(gate: str) -> Seq2Seq:
        torch.manual_seed(config.seed)
        encoder = config.model.encoder.model_copy(update={"gate": gate})
        return Seq2Seq(config.model.model_copy(update={"encoder": encoder}), src_size, trg_size)

    shared = model_with("none").train()  # the variants without a gate train one model

    def variant(model=shared, forward=None, precision="fp32", fused=True) -> Optimization:
        """Training steps as `seq2seq train` takes them (loss, label smoothing, clipping
        and optimizer from the config) on a model computed by `forward` (default: ours)."""
        trainable = Computed(model, forward(model)) if forward else model
        train = config.train.model_copy(update={"precision": precision})
        return Optimization(model.train(), trainable, train, cpu, fused)

    def window(optimization: Optimization) -> float:
        started = time.perf_counter()
        for batch in batches:
            optimization.step([batch], batch.target_tokens, distributed=False)
        return sum(b.target_tokens for b in batches) / (time.perf_counter() - started)

    def tutorial(model: Seq2Seq):
        return partial(tutorial_forward, TutorialDecoder(model))

    # The tutorial trains in fp32 with the default Adam. The steps to ours: attention keys
    # once per batch (with the tutorial's Adam), then the output layer after the loop,
    # then fused Adam, then bf16 autocast, which runs the matrix multiplies on the
    # AMX/AVX512-BF16 units.
    variants = {
        "tutorial": variant(forward=tutorial, fused=False),
        "keys once": variant(forward=lambda m: partial(per_step_output_forward, m), fused=False),
        "+out after": variant(fused=False),
        "ours fp32": variant(),
        "ours bf16": variant(precision="bf16"),
    }
    for gate in gates:  # encoder gates: their own models, ours in bf16
        variants[f"{gate} bf16"] = variant(model_with(gate), precision="bf16")
    for optimization in variants.values():
        window(optimization)  # warm-up
    results: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(windows):  # interleaved, so drift in machine speed hits all alike
        for name, optimization in variants.items():
            results[name].append(window(optimization))
    print(f"training ({window_batches} batches x {windows} windows, teacher forcing {ratio}):")
    baseline = statistics.median(results["tutorial"])
    for name, rates in results.items():
        rate = statistics.median(rates)
        runs = ", ".join(f"{r:.0f}" for r in rates)
        print(
            f"  {name:10s} {rate:8.0f} target tokens/s {rate / baseline:5.2f}x (median of {runs})"
            f" -> {epoch_tokens / rate:.0f} s per epoch of {epoch_batches} batches, "
            f"{sum(p.numel() for p in variants[name].model.parameters()):,} parameters"
        )
    print_peak_fraction(variants["ours fp32"].model, batches, ratio, results)


def training_flops(
    model: Seq2Seq, src_lengths: list[int], trg_lengths: list[int], teacher_forcing: float
) -> float:
    """Forward + backward floating-point operations of one training batch, padding
    excluded (trg_lengths: predicted tokens per pair); 2 FLOPs per multiply-add,
    backward = 2 x forward. The gates' few operations are left out.

    Per source token: the bidirectional GRU (2 directions x 3H x (E + H)) and the
    attention keys (2H x D). Per target step: the query (D x D), energies and scores
    (S x D), context (S x 2H), the decoder GRU (3D x (e + 2H + D)) and the output
    layer (V x (D + 2H + e)); steps that feed back a prediction (teacher forcing below
    1) compute that output layer once more, forward only."""
    E, H = model.config.encoder.embedding_size, model.config.encoder.hidden_size
    e, D = model.config.decoder.embedding_size, model.config.decoder.hidden_size
    output = model.trg_vocab_size * (D + 2 * H + e)
    per_source = 2 * 3 * H * (E + H) + 2 * H * D
    per_step = D * D + 3 * D * (e + 2 * H + D) + output
    pairs = sum(s * t for s, t in zip(src_lengths, trg_lengths, strict=True))
    forward = sum(src_lengths) * per_source + sum(trg_lengths) * per_step + pairs * (D + 2 * H)
    feedback = (1 - teacher_forcing) * sum(trg_lengths) * output
    return 2 * (3 * forward + feedback)


def print_peak_fraction(model: Seq2Seq, batches, ratio: float, results: dict) -> None:
    """FLOPs per target token (training_flops) and the fraction of the matmul peak."""
    flops = sum(
        training_flops(
            model, b.src_lengths.tolist(), (b.trg != PAD).sum(dim=1).sub(1).tolist(), ratio
        )
        for b in batches
    )
    flops_per_token = flops / sum(b.target_tokens for b in batches)
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
    lines = read_split(settings, settings.test, data)[0][:sentences]

    # The loaded model as it is, without seq2seq/inference.py's preparation (the "before").
    unprepared = Translator(translator.models, translator.src, translator.trg,
                            translator.decode, translator.device)  # fmt: skip

    def ours(beam: int, batch: int, precision: str = "fp32", prepared: bool = True):
        decode = translator.decode.updated(beam_size=beam, batch_size=batch, precision=precision)
        chosen = translator if prepared else unprepared

        def run():
            chosen.translate(lines, decode)

        return run

    runs = {
        "tutorial greedy, one sentence at a time": lambda: [
            tutorial_translate(decoder, translator, line) for line in lines
        ],
        "greedy, batch 1, unprepared fp32": ours(1, 1, prepared=False),
        "greedy, batch 1": ours(1, 1),
        "greedy, batch 1, int8": ours(1, 1, "int8"),
        "beam 5, batch 1, unprepared fp32": ours(5, 1, prepared=False),
        "beam 5, batch 1": ours(5, 1),
        "beam 5, batch 1, int8": ours(5, 1, "int8"),
        "greedy, batch 64, unprepared fp32": ours(1, 64, prepared=False),
        "greedy, batch 64": ours(1, 64),
        "greedy, batch 64, bf16": ours(1, 64, "bf16"),
        "greedy, batch 64, int8": ours(1, 64, "int8"),
        "beam 5, batch 64": ours(5, 64),
        "beam 5, batch 64, bf16": ours(5, 64, "bf16"),
        "beam 5, batch 64, int8": ours(5, 64, "int8"),
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
    parser.add_argument("--data", type=Path, default=ROOT / "data/multi30k")
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
    # Each with the allocator its command runs with (docs/performance.md, "Memory"):
    # translation with glibc's default, training with `tune_malloc`'s settings, which last
    # to the exit.
    if args.checkpoint:
        benchmark_translation(args.checkpoint, args.data, args.sentences, args.repeats)
    if not args.skip_training:
        tune_malloc()
        benchmark_training(
            load_config(args.config), args.data, args.windows, args.window_batches, args.gates
        )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS: {peak:.0f} MB")


if __name__ == "__main__":
    main()
