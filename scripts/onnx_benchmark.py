"""The onnxruntime path against torch and the tutorial: one sentence through the CLI,
batch-1 and batch-64 speed, and agreement on the test split.

    python scripts/onnx_benchmark.py --model runs/multi30k_de_en_tutorial/best.pt \
        --data data/multi30k [--cli-model models/multi30k-de-en-small]

--model (a checkpoint or model folder; exported with --onnx into a temporary folder
unless it holds ONNX graphs already) is timed in the same run on both runtimes and
against the tutorial's one-sentence-at-a-time loop (scripts/tutorial_baseline.py, on the
same weights):
- CLI: `echo SENTENCE | seq2seq translate --model DIR` wall time, a fresh process each
  time, --runtime onnxruntime and torch, for --cli-model (default: the shipped subword
  model) and --model.
- batch 1: greedy and beam 5, fp32 and int8, sentences/s and the ratio to the tutorial.
- batch 64: greedy and beam 5, fp32 and int8, onnxruntime against torch (as prepared
  for the CPU, seq2seq/inference.py).
- agreement on the config's test split (test_2016_flickr): greedy lines identical to
  torch's, and sacreBLEU of both runtimes, greedy and beam 5.
Medians of --repeats runs; torch runs with --threads threads, onnxruntime with its
default (one per core).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from benchmark import median_time
from tutorial_baseline import TutorialDecoder, tutorial_translate

from seq2seq.config import Config
from seq2seq.corpus import read_split
from seq2seq.export import export
from seq2seq.metrics import score_corpus
from seq2seq.onnx_runtime import OnnxTranslator, onnx_folder
from seq2seq.translator import Translator

ROOT = Path(__file__).resolve().parents[1]
SENTENCE = "Zwei Männer stehen am Strand und schauen auf das Meer."


def exported(model: Path, work: Path) -> Path:
    """A model folder with ONNX graphs: `model` itself, or its export into `work`."""
    if onnx_folder(model) is not None:
        return model
    folder = Path(tempfile.mkdtemp(dir=work)) / model.stem
    export(model, folder, "float32", onnx=True)
    return folder


def cli_seconds(folder: Path, runtime: str, repeats: int) -> float:
    """Median wall time of `seq2seq translate` on one sentence, a new process each time."""
    command = [sys.executable, "-m", "seq2seq", "translate", "--model", str(folder)]
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run(
            [*command, "--runtime", runtime], input=SENTENCE.encode(), check=True,
            capture_output=True,
        )  # fmt: skip
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def speed_rows(
    onnx: OnnxTranslator, torch_translator: Translator, lines: list[str], repeats: int
) -> list[tuple[str, float, str]]:
    """(what, sentences/s, compared with what) of each timed run."""
    decoder = TutorialDecoder(torch_translator.models[0])
    tutorial = len(lines) / median_time(
        lambda: [tutorial_translate(decoder, torch_translator, line) for line in lines], repeats
    )
    rows = [("tutorial loop, greedy, one sentence at a time", tutorial, "")]

    def rate(translator, beam: int, batch: int, precision: str) -> float:
        decode = translator.decode.updated(beam_size=beam, batch_size=batch, precision=precision)
        translator.translate(lines[:batch], decode)  # warm-up: sessions, shapes
        return len(lines) / median_time(lambda: translator.translate(lines, decode), repeats)

    for precision in ("fp32", "int8"):
        for beam in (1, 5):
            search = "greedy" if beam == 1 else "beam 5"
            speed = rate(onnx, beam, 1, precision)
            rows.append((f"onnxruntime {search}, batch 1, {precision}", speed,
                         f"{speed / tutorial:.2f}x the tutorial loop"))  # fmt: skip
    for precision in ("fp32", "int8"):
        for beam in (1, 5):
            search = "greedy" if beam == 1 else "beam 5"
            ours, theirs = (rate(t, beam, 64, precision) for t in (onnx, torch_translator))
            rows.append((f"torch {search}, batch 64, {precision}", theirs, ""))
            rows.append((f"onnxruntime {search}, batch 64, {precision}", ours,
                         f"{ours / theirs:.2f}x torch"))  # fmt: skip
    return rows


def agreement(
    onnx: OnnxTranslator, torch_translator: Translator, config: Config, data: Path
) -> list[str]:
    """Lines of the agreement table on the config's test split."""
    sources, references = read_split(config.data, config.data.test, data)
    words = torch_translator.trg.tokenizer.words
    lines = []
    for beam, precision in ((1, "fp32"), (5, "fp32"), (1, "int8"), (5, "int8")):
        decode = onnx.decode.updated(beam_size=beam, precision=precision)
        ours = [t.text for t in onnx.translate(sources, decode)]
        theirs = [t.text for t in torch_translator.translate(sources, decode)]
        same = sum(a == b for a, b in zip(ours, theirs, strict=True))
        bleu = [score_corpus(texts, references, words).bleu for texts in (ours, theirs)]
        lines.append(
            f"  {'greedy' if beam == 1 else 'beam 5':7s} {precision}: identical lines "
            f"{100 * same / len(sources):.1f}% of {len(sources)}; sacreBLEU onnxruntime "
            f"{bleu[0]:.2f}, torch {bleu[1]:.2f} (difference {bleu[0] - bleu[1]:+.2f})"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--cli-model", type=Path, default=ROOT / "models/multi30k-de-en-small")
    parser.add_argument("--data", type=Path, default=ROOT / "data/multi30k")
    parser.add_argument("--sentences", type=int, default=1000, help="of the test split, timed")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as work:
        made: dict[Path, Path] = {}  # each model exported once
        for path in {args.cli_model.resolve(), args.model.resolve()}:
            made[path] = exported(path, Path(work))
        folders = {name: made[getattr(args, name).resolve()] for name in ("cli_model", "model")}
        onnx = OnnxTranslator.from_folder(folders["model"])
        torch_translator = Translator.from_checkpoint(folders["model"], "cpu")
        lines = read_split(onnx.config.data, onnx.config.data.test, args.data)[0]
        print(f"torch {torch.__version__} ({args.threads} threads), {folders['model'].name}")
        print("one sentence through the CLI (wall time, median of a fresh process each):")
        for folder in made.values():
            for runtime in ("onnxruntime", "torch"):
                seconds = cli_seconds(folder, runtime, args.repeats)
                print(f"  {folder.name:28s} {runtime:12s} {seconds:6.2f} s")
        print(f"translation of {args.sentences} test sentences (median of {args.repeats}):")
        for what, rate, compared in speed_rows(
            onnx, torch_translator, lines[: args.sentences], args.repeats
        ):
            print(f"  {what:48s} {rate:8.1f} sentences/s  {compared}")
        print(f"agreement with torch on all of {onnx.config.data.test}:")
        print("\n".join(agreement(onnx, torch_translator, onnx.config, args.data)))


if __name__ == "__main__":
    main()
