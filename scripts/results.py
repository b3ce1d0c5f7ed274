"""Results-table rows for a run folder: test scores of best.pt (greedy and beam) and, when
the run kept checkpoints, of their average; training epochs and time from metrics.jsonl.

    python scripts/results.py runs/multi30k_de_en_tutorial --data data/multi30k

Prints one Markdown row per decoding setting:
| run | model | decoding | test ppl | free-running ppl | tokenized BLEU | sacreBLEU | chrF |
| epochs | training time | machine |
and the sacreBLEU and chrF signatures below the rows.
"""

from __future__ import annotations

import argparse
import platform
from pathlib import Path

import torch

from seq2seq.checkpoint import average_checkpoints, load_checkpoint, save_checkpoint, saved_config
from seq2seq.corpus import read_split
from seq2seq.evaluation import evaluate
from seq2seq.run import RunFolder, read_metrics
from seq2seq.translator import Translator


def machine(device: str) -> str:
    if device == "cuda":
        return f"{torch.cuda.get_device_name()}, torch {torch.__version__}"
    return f"{platform.machine()} CPU, {torch.get_num_threads()} threads, torch {torch.__version__}"


def rows(run_dir: Path, data: Path, beams: list[int], alpha: float, device: str) -> list[str]:
    folder = RunFolder(run_dir)
    valid = [r for r in read_metrics(folder.metrics) if r["kind"] == "valid"]
    epochs = max(r["epoch"] for r in valid) if valid else 0
    minutes = (valid[-1]["elapsed"] / 60) if valid else 0.0
    models = {"best.pt": folder.best}
    kept = folder.all_kept()
    if len(kept) > 1:
        averaged = run_dir / "averaged.pt"
        save_checkpoint(average_checkpoints(kept), averaged)
        models[f"average of {len(kept)}"] = averaged
    best = folder.best
    settings = saved_config(load_checkpoint(best), str(best)).data
    sources, references = read_split(settings, settings.test, data)
    lines, signatures = [], set()
    for name, path in models.items():
        translator = Translator.from_checkpoint(path, device)
        for beam in beams:
            decode = translator.decode.updated(beam_size=beam, alpha=alpha if beam > 1 else 0.0)
            result = evaluate(translator, sources, references, decode)
            s = result.scores
            search = "greedy" if beam == 1 else f"beam {beam}, alpha {alpha}"
            lines.append(
                f"| {run_dir.name} | {name} | {search} | {result.perplexity:.2f} | "
                f"{result.free_running_perplexity:.2f} | {s.tokenized_bleu:.2f} | {s.bleu:.2f} | "
                f"{s.chrf:.2f} | {epochs} | {minutes:.1f} min | {machine(device)} |"
            )
            signatures.update({f"BLEU {s.bleu_signature}", f"chrF {s.chrf_signature}"})
    return [*lines, "", *sorted(signatures)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--data", type=Path, required=True, help="folder with the test split")
    parser.add_argument("--beams", type=int, nargs="+", default=[1, 5])
    parser.add_argument("--alpha", type=float, default=0.6)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    args = parser.parse_args()
    print("\n".join(rows(args.run_dir, args.data, args.beams, args.alpha, args.device)))


if __name__ == "__main__":
    main()
