"""Ensemble results for independently trained runs: members ranked on validation, the
combination rule chosen on validation, then test scores of the best k members.

    python scripts/ensemble_results.py runs/recipe/rec-seed-* --data data/multi30k \
        --device cuda --out runs/recipe/ensembles.jsonl

Each run contributes its averaged.pt (scripts/results.py writes it) or else its best.pt.
Steps, each appending JSON lines to --out as it finishes (so a cut-off run keeps what it
reached), and a Markdown table at the end on stdout:
1. every member on validation (beam 5) -> the ranking;
2. the best min(4, n) members on validation with `probs` and `log_probs` -> the rule;
3. test: ensembles of the best k = 1..4 members, beam 5 and greedy, with that rule;
4. test: the same per run-name prefix (e.g. rec-*, emb512-*) when there are several.
Scores: sacreBLEU (cased, detokenized), chrF and tokenized BLEU; sentences/s of the search.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from seq2seq.checkpoint import Bundle, load_bundle
from seq2seq.config import DecodeConfig
from seq2seq.corpus import read_split
from seq2seq.metrics import score_corpus
from seq2seq.translator import Translator, check_same_text


def member_path(run: Path) -> Path:
    averaged = run / "averaged.pt"
    return averaged if averaged.exists() else run / "best.pt"


def score(
    bundles: list[Bundle], runs: list[Path], split: tuple[list[str], list[str]], decode
) -> dict:
    """Translate the split's sources with the ensemble of `bundles`; scores and speed."""
    for run, bundle in zip(runs[1:], bundles[1:], strict=True):
        check_same_text(runs[0], bundles[0], run, bundle)
    first = bundles[0]
    device = next(first.model.parameters()).device
    translator = Translator([b.model for b in bundles], first.src, first.trg, decode, device)
    sources, references = split
    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    translations = translator.translate(sources, decode)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    scores = score_corpus([t.text for t in translations], references, first.trg.tokenizer.words)
    return {
        "members": [run.name for run in runs],
        "k": len(runs),
        "search": "greedy" if decode.beam_size == 1 else f"beam {decode.beam_size}",
        "combine": decode.combine,
        "sentences_per_s": round(len(sources) / seconds, 1),
        **{
            key: (round(v, 2) if isinstance(v, float) else v) for key, v in scores.as_dict().items()
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, nargs="+")
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    runs = [run for run in args.runs if member_path(run).exists()]
    bundles = {run: load_bundle(member_path(run), args.device) for run in runs}
    data = bundles[runs[0]].config.data
    splits = {
        name: read_split(data, split, args.data)
        for name, split in (("valid", data.valid), ("test", data.test))
    }
    beam: DecodeConfig = bundles[runs[0]].config.decode.updated(beam_size=5, nbest=1)
    greedy = beam.updated(beam_size=1)
    records = []

    def run(chosen: list[Path], split: str, decode: DecodeConfig, step: str) -> dict:
        record = {"step": step, "split": split}
        record.update(score([bundles[r] for r in chosen], chosen, splits[split], decode))
        records.append(record)
        with open(args.out, "a", encoding="utf-8") as sink:
            sink.write(json.dumps(record) + "\n")
        print(json.dumps(record), flush=True)
        return record

    valid = {r: run([r], "valid", beam, "rank")["bleu"] for r in runs}
    ranked = sorted(runs, key=lambda r: -valid[r])
    top = ranked[: min(4, len(ranked))]
    rules = {
        c: run(top, "valid", beam.updated(combine=c), "rule")["bleu"]
        for c in ("probs", "log_probs")
    }
    combine = max(rules, key=lambda c: rules[c])
    for decode in (beam.updated(combine=combine), greedy.updated(combine=combine)):
        for k in range(1, len(top) + 1):
            run(ranked[:k], "test", decode, "best-k")
    families = sorted({r.name.rsplit("-seed-", 1)[0] for r in runs})
    if len(families) > 1:
        for family in families:
            members = [r for r in ranked if r.name.rsplit("-seed-", 1)[0] == family][:4]
            for k in range(2, len(members) + 1):
                run(members[:k], "test", beam.updated(combine=combine), f"family {family}")
    print("\n| step | split | members | search | combine | sacreBLEU | chrF | tok. BLEU | sent/s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in records:
        print(
            f"| {r['step']} | {r['split']} | {', '.join(r['members'])} | {r['search']} | "
            f"{r['combine']} | {r['bleu']:.2f} | {r['chrf']:.2f} | {r['tokenized_bleu']:.2f} | "
            f"{r['sentences_per_s']} |"
        )


if __name__ == "__main__":
    main()
