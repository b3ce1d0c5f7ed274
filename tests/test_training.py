"""Training that never loses a run: exact resume, signals, kill -9, run-folder safety,
early stopping, schedules, accumulation, logs, curves and averaging (toy data, CPU)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from seq2seq.checkpoint import load_checkpoint
from seq2seq.config import load_config
from seq2seq.errors import UserError
from seq2seq.training import train

ROOT = Path(__file__).resolve().parents[1]
TOY = ROOT / "configs" / "toy.yaml"
BASE = [
    f"data.dir={ROOT / 'data' / 'toy'}",
    "train.threads=1",
    "train.teacher_forcing=0.7",  # exercises the RNG of the teacher-forcing coin too
    "train.validate_every=1000",  # validate only at the end: keeps these tests fast
    "train.log_every=5",
    "model.encoder.hidden_size=24",
    "model.decoder.hidden_size=24",
]


def config(run_dir: Path, *overrides: str):
    return load_config(TOY, [*BASE, f"train.run_dir={run_dir}", *overrides])


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["model"]


def same_weights(a: Path, b: Path) -> bool:
    wa, wb = weights(a), weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory) -> Path:
    """An uninterrupted 40-step run that the interrupted ones must reproduce exactly."""
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    train(config(run_dir, "train.max_steps=40", "train.save_every=5"))
    return run_dir


def test_resume_is_bit_exact(reference_run: Path, tmp_path: Path):
    run_dir = tmp_path / "run"
    train(config(run_dir, "train.max_steps=17", "train.save_every=5"))
    train(config(run_dir, "train.max_steps=40", "train.save_every=5"), resume=True)
    assert load_checkpoint(run_dir / "last.pt")["step"] == 40
    assert same_weights(reference_run / "last.pt", run_dir / "last.pt")
    steps = [r["step"] for r in map(json.loads, (run_dir / "metrics.jsonl").open()) if "step" in r]
    assert steps == sorted(steps)


def test_same_seed_same_run(reference_run: Path, tmp_path: Path):
    train(config(tmp_path / "again", "train.max_steps=40", "train.save_every=5"))
    assert same_weights(reference_run / "last.pt", tmp_path / "again" / "last.pt")


def test_a_different_seed_gives_a_different_run(reference_run: Path, tmp_path: Path):
    train(config(tmp_path / "other", "train.max_steps=40", "seed=7"))
    assert not same_weights(reference_run / "last.pt", tmp_path / "other" / "last.pt")


def test_refuses_a_folder_holding_a_run(reference_run: Path):
    with pytest.raises(UserError, match="already holds a run"):
        train(config(reference_run, "train.max_steps=40"))


def test_overwrite_replaces_the_run(tmp_path: Path):
    run_dir = tmp_path / "run"
    train(config(run_dir, "train.max_steps=3", "train.keep_checkpoints=2"))
    train(config(run_dir, "train.max_steps=2"), overwrite=True)
    assert load_checkpoint(run_dir / "last.pt")["step"] == 2
    assert not list(run_dir.glob("ckpt-step*.pt"))


def test_resume_refuses_a_different_vocabulary(tmp_path: Path):
    run_dir = tmp_path / "run"
    train(config(run_dir, "train.max_steps=3"))
    with pytest.raises(UserError, match="vocabulary"):
        train(config(run_dir, "train.max_steps=6", "vocab.max_size=10"), resume=True)


def test_resume_refuses_a_different_model(tmp_path: Path):
    run_dir = tmp_path / "run"
    train(config(run_dir, "train.max_steps=3"))
    with pytest.raises(UserError, match="does not fit"):
        train(config(run_dir, "train.max_steps=6", "model.decoder.hidden_size=30"), resume=True)


def _cli(run_dir: Path, *extra: str) -> list[str]:
    sets = [item for override in BASE for item in ("--set", override)]
    return [sys.executable, "-m", "seq2seq", "train", "--config", str(TOY), *sets,
            "--run-dir", str(run_dir), *extra]  # fmt: skip


def _wait_for(path: Path, process: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, process.stderr.read() if process.stderr else ""
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


@pytest.mark.parametrize("signum, status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_saves_and_resumes_exactly(reference_run: Path, tmp_path: Path, signum, status):
    run_dir = tmp_path / "run"
    args = ["--set", "train.max_steps=40", "--set", "train.save_every=5"]
    process = subprocess.Popen(_cli(run_dir, *args), stderr=subprocess.PIPE, text=True)
    _wait_for(run_dir / "last.pt", process)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=60)
    if process.returncode == 0:
        pytest.skip("the run finished before the signal arrived")
    assert process.returncode == status
    assert "--resume" in stderr and "Traceback" not in stderr
    step = load_checkpoint(run_dir / "last.pt")["step"]
    assert 0 < step < 40
    resumed = subprocess.run(_cli(run_dir, *args, "--resume"), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert same_weights(reference_run / "last.pt", run_dir / "last.pt")


def test_kill_9_repeatedly_stays_resumable(reference_run: Path, tmp_path: Path):
    """SIGKILL at random moments (saves happen every step, so some land inside a save);
    each time the folder must resume, and the finished run equals the uninterrupted one."""
    run_dir = tmp_path / "run"
    args = ["--set", "train.max_steps=40", "--set", "train.save_every=1"]
    rng = random.Random(0)
    kills = 0
    for attempt in range(12):
        extra = ["--resume"] if attempt else []
        process = subprocess.Popen(_cli(run_dir, *args, *extra), stderr=subprocess.DEVNULL)
        if kills < 3:
            _wait_for(run_dir / "last.pt", process)
            time.sleep(rng.uniform(0.0, 1.0))
            if process.poll() is None:
                os.kill(process.pid, signal.SIGKILL)
                kills += 1
            process.wait(timeout=60)
            load_checkpoint(run_dir / "last.pt")  # always loadable
            continue
        assert process.wait(timeout=120) == 0
        break
    assert kills > 0
    assert load_checkpoint(run_dir / "last.pt")["step"] == 40
    assert same_weights(reference_run / "last.pt", run_dir / "last.pt")
    assert not list(run_dir.glob(".*.tmp"))


def test_early_stopping(tmp_path: Path):
    run_dir = tmp_path / "run"
    # At this learning rate the greedy output (and so BLEU) cannot change: stop after 2 checks.
    train(
        config(
            run_dir,
            "train.learning_rate=1e-9",
            "train.validate_every=2",
            "train.patience=2",
            "train.best_metric=bleu",
            "train.epochs=50",
        )
    )
    valid = [r for r in map(json.loads, (run_dir / "metrics.jsonl").open()) if r["kind"] == "valid"]
    assert len(valid) == 3  # the first, then two without improvement
    assert load_checkpoint(run_dir / "last.pt")["step"] == 6


def test_max_minutes_stops_validates_and_resumes(tmp_path: Path):
    run_dir = tmp_path / "run"
    train(config(run_dir, "train.max_minutes=0.00001", "train.epochs=50"))  # under 1 ms
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").open()]
    assert [r["step"] for r in records if r["kind"] == "valid"] == [1]
    assert load_checkpoint(run_dir / "last.pt")["step"] == 1 and (run_dir / "best.pt").exists()
    train(config(run_dir, "train.max_minutes=0.00001", "train.epochs=50"), resume=True)
    assert load_checkpoint(run_dir / "last.pt")["step"] == 1, "time was up: nothing more"
    train(config(run_dir, "train.max_steps=3", "train.epochs=50"), resume=True)
    assert load_checkpoint(run_dir / "last.pt")["step"] == 3, "a larger budget continues"


def test_inverse_sqrt_warmup(tmp_path: Path):
    run_dir = tmp_path / "run"
    train(
        config(
            run_dir,
            "train.scheduler=inverse_sqrt",
            "train.warmup_steps=4",
            "train.max_steps=16",
            "train.log_every=1",
            "train.learning_rate=0.01",
        )
    )
    records = [
        r for r in map(json.loads, (run_dir / "metrics.jsonl").open()) if r["kind"] == "train"
    ]
    rates = [r["lr"] for r in records]
    assert rates[:4] == pytest.approx([0.005, 0.0075, 0.01, 0.01 * (4 / 5) ** 0.5])
    assert rates[-1] == pytest.approx(0.01 * (4 / 17) ** 0.5)


def test_plateau_halves_the_rate(tmp_path: Path):
    run_dir = tmp_path / "run"
    train(
        config(
            run_dir,
            "train.learning_rate=1e-6",  # too small to change the greedy output
            "train.scheduler=plateau",
            "train.plateau_patience=0",
            "train.min_learning_rate=0",
            "train.validate_every=1",
            "train.max_steps=3",
            "train.best_metric=bleu",
        )
    )
    valid = [r for r in map(json.loads, (run_dir / "metrics.jsonl").open()) if r["kind"] == "valid"]
    assert valid[-1]["lr"] < valid[0]["lr"]


def test_gradient_accumulation_counts_steps(tmp_path: Path):
    run_dir = tmp_path / "run"
    train(config(run_dir, "train.accumulate_steps=5", "train.epochs=1"))
    assert load_checkpoint(run_dir / "last.pt")["step"] == 5  # 25 toy batches / 5


def test_metrics_log_curves_and_environment(reference_run: Path):
    records = [json.loads(line) for line in (reference_run / "metrics.jsonl").open()]
    assert records[0]["kind"] == "start" and "torch" in records[0] and "sacrebleu" in records[0]
    valid = [r for r in records if r["kind"] == "valid"]
    assert {"loss", "perplexity", "bleu", "chrf", "step", "epoch", "lr"} <= valid[-1].keys()
    train_records = [r for r in records if r["kind"] == "train"]
    assert {"loss", "lr", "tokens_per_s", "elapsed", "step", "epoch"} <= train_records[0].keys()
    png = (reference_run / "curves.png").read_bytes()
    assert png.startswith(b"\x89PNG")
    assert (reference_run / "config.yaml").exists()


def test_keep_and_average_checkpoints(tmp_path: Path):
    run_dir = tmp_path / "run"
    train(
        config(run_dir, "train.validate_every=5", "train.max_steps=20", "train.keep_checkpoints=2")
    )
    kept = sorted(run_dir.glob("ckpt-step*.pt"))
    assert len(kept) == 2
    out = tmp_path / "avg.pt"
    result = subprocess.run(
        [sys.executable, "-m", "seq2seq", "average", str(run_dir), "--output", str(out)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    averaged = load_checkpoint(out)
    assert "training" not in averaged
    a, b = (weights(path) for path in kept)
    for name, tensor in averaged["model"].items():
        assert torch.allclose(tensor, (a[name] + b[name]) / 2, atol=1e-7)


def test_plot_command(reference_run: Path):
    (reference_run / "curves.png").unlink()
    result = subprocess.run(
        [sys.executable, "-m", "seq2seq", "plot", str(reference_run)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert (reference_run / "curves.png").read_bytes().startswith(b"\x89PNG")
