"""Ensemble decoding cost: sentences/s and peak RSS for 1..K members of a config's size.

    python scripts/ensemble_speed.py --config configs/multi30k_de_en.yaml --members 4

Each member count runs in a fresh process (so that peak RSS is its own). The members are
freshly initialised models of the config's sizes and vocabularies of --vocab entries:
an untrained model almost never emits <eos>, so every sentence runs to its length limit
and each member count does exactly the same number of decoder steps, which makes the
time per member comparable (the target: k members cost at most 1.1 x k times one).
Sources are random ids with the lengths of a Multi30k batch (8-24 tokens).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch

from seq2seq.config import load_config
from seq2seq.ensemble import Ensemble
from seq2seq.model import Seq2Seq
from seq2seq.search import beam_search, greedy_search, max_output_lengths
from seq2seq.vocab import EOS, PAD, SOS


def measure(args: argparse.Namespace) -> dict:
    torch.manual_seed(0)
    config = load_config(args.config).model
    members = [Seq2Seq(config, args.vocab, args.vocab).eval() for _ in range(args.count)]
    model = members[0] if args.count == 1 else Ensemble(members)
    lengths = torch.randint(8, 25, (args.batch,))
    src = torch.full((args.batch, int(lengths.max())), PAD)
    for row, length in enumerate(lengths.tolist()):
        src[row, 0], src[row, length - 1] = SOS, EOS
        src[row, 1 : length - 1] = torch.randint(4, args.vocab, (length - 2,))
    limits = max_output_lengths(lengths, 1.0, 2)

    def run() -> None:
        if args.beam == 1:
            greedy_search(model, src, lengths, limits)
        else:
            beam_search(model, src, lengths, limits, args.beam, 0.6)

    run()  # warm-up
    times = []
    for _ in range(args.repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "members": args.count,
        "sentences_per_s": args.batch / statistics.median(times),
        "peak_rss_mb": peak_kb / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--members", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=8000)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--beam", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--count", type=int, help=argparse.SUPPRESS)  # one measurement
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.count:
        print(json.dumps(measure(args)))
        return
    rows = []
    for count in range(1, args.members + 1):
        command = [sys.executable, *sys.argv, "--count", str(count)]
        rows.append(json.loads(subprocess.run(command, capture_output=True, check=True).stdout))
    single = rows[0]["sentences_per_s"]
    search = "greedy" if args.beam == 1 else f"beam {args.beam}"
    print(f"{search}, batch {args.batch}, {args.threads} threads, torch {torch.__version__}")
    print("| members | sentences/s | cost / (k x one model) | peak RSS |")
    print("|---|---|---|---|")
    for row in rows:
        ratio = single / row["sentences_per_s"] / row["members"]
        print(
            f"| {row['members']} | {row['sentences_per_s']:.1f} | {ratio:.2f} | "
            f"{row['peak_rss_mb']:.0f} MB |"
        )


if __name__ == "__main__":
    main()
