"""DistributedDataParallel under torchrun, on the CPU with Gloo: two ranks train like one
process on the same global batch, drop the incomplete group at the end of an epoch,
resume exactly, resume in one process where they left off, and rank 0 alone writes files."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest
import torch
from conftest import ROOT, TOY_CONFIG, TOY_DATA

import seq2seq.training
from seq2seq.checkpoint import load_checkpoint
from seq2seq.config import load_config
from seq2seq.distributed import Context, launched
from seq2seq.training import train
from seq2seq.translator import Translator

# Dropout 0 and teacher forcing 1: no random draws, so one process and two ranks must
# compute the same updates (the ranks' own random streams differ by design). 400 toy
# pairs in batches of 9 make 45 batches an epoch: two ranks train 22 steps of two batches
# and drop the 45th, which would leave the second rank without a batch.
COMMON = [
    f"data.dir={TOY_DATA}",
    "model.dropout=0.0",
    "train.teacher_forcing=1.0",
    "train.batch_size=9",
    "train.epochs=1",
    "train.validate_every=1000",
    "train.keep_checkpoints=0",  # configs/toy.yaml keeps 3 (the README's `average` step)
    "train.save_every=2",
    "train.threads=1",
    "train.device=cpu",
    "train.distributed_timeout=2",  # minutes: a rank left waiting fails the run soon
]
STEPS = 22  # two ranks, one epoch


def torchrun(run_dir: Path, *overrides: str, resume: bool = False) -> None:
    sets = [a for o in [*COMMON, *overrides] for a in ("--set", o)]
    args = ["-m", "seq2seq", "train", "--config", str(TOY_CONFIG), "--run-dir", str(run_dir)]
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
    command = [sys.executable, *launcher, *args, *sets, *(["--resume"] if resume else [])]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stderr[:2000] + "\n...\n" + result.stderr[-2000:]


def in_process(run_dir: Path, *overrides: str, resume: bool = False) -> None:
    """One process, in this one (without drawing curves.png: seconds, tested elsewhere)."""
    overrides = (*COMMON, f"train.run_dir={run_dir}", *overrides)
    with mock.patch.object(seq2seq.training, "plot_run"):
        train(load_config(TOY_CONFIG, list(overrides)), resume=resume)


def max_difference(a: Path, b: Path) -> float:
    wa, wb = load_checkpoint(a)["model"], load_checkpoint(b)["model"]
    assert wa.keys() == wb.keys()
    return max(float((wa[k] - wb[k]).abs().max()) for k in wa)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ddp")
    folders = {name: root / name for name in ("ddp", "ddp_resumed", "one_resumed")}
    torchrun(folders["ddp"])  # the whole epoch
    torchrun(folders["ddp_resumed"], "train.max_steps=8")
    shutil.copytree(folders["ddp_resumed"], folders["one_resumed"])
    torchrun(folders["ddp_resumed"], resume=True)
    return folders


def test_two_ranks_equal_one_process_and_drop_the_last_odd_batch(runs, tmp_path: Path):
    """One process, two batches a step, stopped before the epoch's 45th batch == two ranks,
    one batch each, whose epoch ends after 44."""
    saved = load_checkpoint(runs["ddp"] / "last.pt")
    assert saved["step"] == STEPS
    progress = saved["training"]["progress"]
    assert (progress["epoch"], progress["batches_done"], progress["finished"]) == (2, 0, True)
    in_process(tmp_path / "single", "train.accumulate_steps=2", f"train.max_steps={STEPS}")
    assert max_difference(tmp_path / "single" / "last.pt", runs["ddp"] / "last.pt") < 1e-6


def test_ddp_resume_is_exact_with_the_same_ranks(runs):
    assert load_checkpoint(runs["ddp_resumed"] / "last.pt")["step"] == STEPS
    assert max_difference(runs["ddp_resumed"] / "last.pt", runs["ddp"] / "last.pt") == 0


def test_a_two_rank_run_resumes_in_one_process_where_it_left_off(runs, tmp_path, capsys):
    """Defined, not bit-exact: the data order and position are kept (8 steps of two
    batches done), the random streams restart (none is drawn here), one batch a step."""
    capsys.readouterr()
    in_process(runs["one_resumed"], resume=True)
    assert "last.pt: saved by another number of ranks" in capsys.readouterr().err
    saved = load_checkpoint(runs["one_resumed"] / "last.pt")
    assert saved["step"] == 8 + (45 - 16)  # no incomplete group in one process
    # The same in one process: 8 steps of two batches, then one batch a step.
    reference = tmp_path / "reference"
    in_process(reference, "train.accumulate_steps=2", "train.max_steps=8")
    in_process(reference, resume=True)
    assert max_difference(reference / "last.pt", runs["one_resumed"] / "last.pt") < 1e-5


def test_rank_0_alone_wrote_the_run(runs):
    folder = runs["ddp"]
    names = sorted(p.name for p in folder.iterdir())
    expected = [".lock", "best.pt", "config.yaml", "curves.png", "last.pt", "metrics.jsonl"]
    assert names == [*expected, "train.log"]
    assert (folder / "train.log").read_text(encoding="utf-8").count("training pairs:") == 1
    records = [json.loads(line) for line in (folder / "metrics.jsonl").open()]
    assert [r["kind"] for r in records].count("start") == 1
    valid = [r for r in records if r["kind"] == "valid"]
    assert [r["step"] for r in valid] == [STEPS]
    saved = load_checkpoint(folder / "last.pt")["training"]
    assert len(saved["rng"]) == 2  # one random stream per rank


def test_a_ddp_checkpoint_translates_in_one_process(runs):
    translator = Translator.from_checkpoint(runs["ddp"] / "best.pt", "cpu")
    (result,) = translator.translate(["Ein Hund läuft im Park."])
    assert result.source_tokens == ["Ein", "Hund", "läuft", "im", "Park", "."]
    assert isinstance(result.attention, torch.Tensor)
    assert result.attention.shape == (len(result.tokens) + 1, 8)


def test_who_torchrun_made_this_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """One reading of torchrun's variables, before any group is joined: the command line
    and the run folder's lock ask it whether this process is rank 0."""
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    assert launched() == Context() and launched().is_main
    for name, value in (("RANK", "3"), ("WORLD_SIZE", "4"), ("LOCAL_RANK", "1"),
                        ("LOCAL_WORLD_SIZE", "2")):  # fmt: skip
        monkeypatch.setenv(name, value)
    assert launched() == Context(rank=3, world_size=4, local_rank=1, local_world_size=2)
    assert not launched().is_main
