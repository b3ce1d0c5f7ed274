"""DistributedDataParallel under torchrun, on the CPU with Gloo: two ranks train like one
process on the same global batch, resume exactly, and rank 0 alone writes files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import TOY_CONFIG, TOY_DATA

from seq2seq.checkpoint import load_checkpoint
from seq2seq.translator import Translator

# Dropout 0 and teacher forcing 1: no random draws, so one process and two ranks must
# compute the same updates (the ranks' own random streams differ by design).
COMMON = [
    f"data.dir={TOY_DATA}",
    "model.dropout=0.0",
    "train.teacher_forcing=1.0",
    "train.batch_size=8",
    "train.validate_every=1000",
    "train.save_every=2",
    "train.threads=1",
    "train.device=cpu",
]


def train(run_dir: Path, ranks: int, *overrides: str, resume: bool = False) -> None:
    sets = [a for o in [*COMMON, *overrides] for a in ("--set", o)]
    args = ["-m", "seq2seq", "train", "--config", str(TOY_CONFIG), "--run-dir", str(run_dir)]
    args += [*sets, *(["--resume"] if resume else [])]
    if ranks > 1:
        launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={ranks}"]
        args = [*launcher, *args]
    result = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]


def max_difference(a: Path, b: Path) -> float:
    wa, wb = load_checkpoint(a)["model"], load_checkpoint(b)["model"]
    assert wa.keys() == wb.keys()
    return max(float((wa[k] - wb[k]).abs().max()) for k in wa)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ddp")
    folders = {name: root / name for name in ("single", "ddp", "ddp_resumed", "ddp_straight")}
    # One process, two batches per step == two ranks, one batch each.
    train(folders["single"], 1, "train.max_steps=6", "train.accumulate_steps=2")
    train(folders["ddp"], 2, "train.max_steps=6")
    train(folders["ddp_resumed"], 2, "train.max_steps=4")
    train(folders["ddp_resumed"], 2, "train.max_steps=8", resume=True)
    train(folders["ddp_straight"], 2, "train.max_steps=8")
    return folders


def test_two_ranks_equal_one_process_on_the_same_global_batch(runs):
    assert load_checkpoint(runs["ddp"] / "last.pt")["step"] == 6
    assert max_difference(runs["single"] / "last.pt", runs["ddp"] / "last.pt") < 1e-6


def test_ddp_resume_is_exact_with_the_same_ranks(runs):
    assert load_checkpoint(runs["ddp_resumed"] / "last.pt")["step"] == 8
    assert max_difference(runs["ddp_resumed"] / "last.pt", runs["ddp_straight"] / "last.pt") == 0


def test_rank_0_alone_wrote_the_run(runs):
    folder = runs["ddp"]
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["best.pt", "config.yaml", "curves.png", "last.pt", "metrics.jsonl"]
    records = [json.loads(line) for line in (folder / "metrics.jsonl").open()]
    assert [r["kind"] for r in records].count("start") == 1
    valid = [r for r in records if r["kind"] == "valid"]
    assert [r["step"] for r in valid] == [6]
    saved = load_checkpoint(folder / "last.pt")["training"]
    assert len(saved["rng"]) == 2  # one random stream per rank


def test_a_ddp_checkpoint_translates_in_one_process(runs):
    translator = Translator.from_checkpoint(runs["ddp"] / "best.pt", "cpu")
    (result,) = translator.translate(["Ein Hund läuft im Park."])  # 6 steps: barely trained
    assert result.source_tokens == ["Ein", "Hund", "läuft", "im", "Park", "."]
    assert isinstance(result.attention, torch.Tensor)
    assert result.attention.shape == (len(result.tokens) + 1, 8)
