"""scripts/memory.py: the phases it reads from a training's log, and the peaks it reports."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import memory
import pytest
from conftest import ROOT, TOY_CONFIG, toy_overrides

import seq2seq.training
from seq2seq import console
from seq2seq.config import load_config
from seq2seq.training import train


def test_the_training_log_names_each_phase(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(seq2seq.training, "plot_run", lambda run_dir: None)
    monkeypatch.setattr(console, "_verbosity", console.VERBOSE)  # phase lines are details
    train(load_config(TOY_CONFIG, toy_overrides(tmp_path / "run", "train.max_steps=2")))
    recording = memory.Recording()
    memory.follow_stderr(io.StringIO(capsys.readouterr().err), recording, 0.0)
    assert [phase.name for phase in recording.phases] == [
        "tokenizing, vocabularies",
        "model, optimizer",
        "epoch 1",
        "validation at step 2",
        "saving best/kept, curves",  # best.pt, then curves.png
        "epoch 1",
        "epoch 1",  # last.pt saved
        "finishing",
    ]


CHILD = """
import sys, time
print("tokenizing 1 training pairs", file=sys.stderr, flush=True)
block = b"x" * 300_000_000  # written: resident
time.sleep(1.0)
del block
print("model: 1 parameters", file=sys.stderr, flush=True)
time.sleep(0.5)
"""


def test_the_peak_is_found_in_its_phase(tmp_path: Path) -> None:
    out = tmp_path / "rss.png"
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "memory.py"), "--out", str(out), "--",
         sys.executable, "-c", CHILD],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    rows = {line[:32].strip(): line.split() for line in result.stderr.splitlines()}
    assert float(rows["tokenizing, vocabularies"][-2]) > 300  # peak MB of the phase
    assert float(rows["epoch 1"][-2]) < 300
    kbytes = int(result.stderr.split("MB (")[-1].split()[0])  # ru_maxrss
    assert kbytes * 1024 > 300e6 and out.stat().st_size > 10_000
