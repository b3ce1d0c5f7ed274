"""Training that never loses a run: exact resume, signals, kill -9, run-folder safety,
the validation metric's direction (best.pt, early stopping, plateau, kept checkpoints),
schedules, accumulation, label smoothing, bf16, logs, curves and averaging (toy data, CPU);
training data that gives no pairs, and out of memory."""

from __future__ import annotations

import copy
import errno
import json
import math
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import (
    TOY_CONFIG,
    data_folder,
    one_error_line,
    run_cli,
    toy_overrides,
    train_args,
)

import seq2seq.training
from seq2seq import console
from seq2seq.checkpoint import load_checkpoint
from seq2seq.config import TrainConfig, load_config
from seq2seq.data import collate, make_batches
from seq2seq.errors import UserError
from seq2seq.evaluation import Evaluation
from seq2seq.loss import sequence_loss
from seq2seq.metrics import Scores
from seq2seq.training import (
    Interrupted,
    Progress,
    Trainer,
    Window,
    end_line,
    limits_reached,
    train,
)
from seq2seq.vocab import PAD

ROOT = Path(__file__).resolve().parents[1]
TOY = ROOT / "configs" / "toy.yaml"
BASE = [
    f"data.dir={ROOT / 'data' / 'toy'}",
    "train.threads=1",
    "train.teacher_forcing=0.7",  # exercises the RNG of the teacher-forcing coin too
    "train.validate_every=1000",  # validate only at the end: keeps these tests fast
    "train.keep_checkpoints=0",  # configs/toy.yaml keeps 3 (the README's `average` step)
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


@pytest.fixture
def no_plots(monkeypatch: pytest.MonkeyPatch) -> None:
    """Skip drawing curves.png at each validation (a second or more each): for tests about
    something else."""
    monkeypatch.setattr(seq2seq.training, "plot_run", lambda run_dir: None)


def test_resume_is_bit_exact(reference_run: Path, tmp_path: Path):
    run_dir = tmp_path / "run"
    train(config(run_dir, "train.max_steps=17", "train.save_every=5"))
    train(config(run_dir, "train.max_steps=40", "train.save_every=5"), resume=True)
    assert load_checkpoint(run_dir / "last.pt")["step"] == 40
    assert same_weights(reference_run / "last.pt", run_dir / "last.pt")
    steps = [r["step"] for r in map(json.loads, (run_dir / "metrics.jsonl").open()) if "step" in r]
    assert steps == sorted(steps)


def test_same_seed_same_run(reference_run: Path, tmp_path: Path, no_plots):
    train(config(tmp_path / "again", "train.max_steps=40", "train.save_every=5"))
    assert same_weights(reference_run / "last.pt", tmp_path / "again" / "last.pt")


def test_a_different_seed_gives_a_different_run(reference_run: Path, tmp_path: Path, no_plots):
    train(config(tmp_path / "other", "train.max_steps=40", "seed=7"))
    assert not same_weights(reference_run / "last.pt", tmp_path / "other" / "last.pt")


def test_refuses_a_folder_holding_a_run(reference_run: Path):
    with pytest.raises(UserError, match="already holds a run"):
        train(config(reference_run, "train.max_steps=40"))


def test_overwrite_replaces_the_run(tmp_path: Path, no_plots):
    run_dir = tmp_path / "run"
    train(config(run_dir, "train.max_steps=3", "train.keep_checkpoints=2"))
    train(config(run_dir, "train.max_steps=2"), overwrite=True)
    assert load_checkpoint(run_dir / "last.pt")["step"] == 2
    assert not list(run_dir.glob("ckpt-step*.pt"))


@pytest.mark.parametrize(
    "change, message",
    [
        ("vocab.max_size=10", "vocab.max_size=None, this config says 10"),
        ("model.decoder.hidden_size=30", "model.decoder.hidden_size=24, this config says 30"),
        ("vocab.type=sentencepiece", "vocab.type='word', this config says 'sentencepiece'"),
        ("train.label_smoothing=0.1", "train.label_smoothing=0.0, this config says 0.1"),
        ("seed=5", "seed=1234, this config says 5"),
    ],
)
def test_resume_refuses_a_change_that_makes_another_run(tmp_path, no_plots, change, message):
    run_dir = tmp_path / "run"
    train(config(run_dir, "train.max_steps=3"))
    files = [run_dir / name for name in ("metrics.jsonl", "config.yaml", "last.pt")]
    before = [path.read_bytes() for path in files]
    with pytest.raises(UserError, match=re.escape(message)):
        train(config(run_dir, "train.max_steps=6", change), resume=True)
    assert [path.read_bytes() for path in files] == before


def test_resume_refuses_changed_training_data(tmp_path: Path, no_plots):
    data = tmp_path / "data"
    shutil.copytree(ROOT / "data" / "toy", data)
    run_dir = tmp_path / "run"
    train(config(run_dir, "train.max_steps=3", f"data.dir={data}"))
    (data / "train.de").write_text("völlig neue Wörter\n" * 400, encoding="utf-8")
    with pytest.raises(UserError, match="src vocabulary .* the training data changed"):
        train(config(run_dir, "train.max_steps=6", f"data.dir={data}"), resume=True)


def test_resume_applies_a_new_learning_rate(tmp_path: Path, no_plots):
    run_dir = tmp_path / "run"
    train(config(run_dir, "train.max_steps=3", "train.log_every=1"))
    train(config(run_dir, "train.max_steps=6", "train.log_every=1", "train.learning_rate=0.0003"),
          resume=True)  # fmt: skip
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").open()]
    rates = [r["lr"] for r in records if r["kind"] == "train"]
    assert rates == pytest.approx([1e-2] * 3 + [3e-4] * 3)  # the toy config's rate is 0.01
    assert "learning_rate: 0.0003" in (run_dir / "config.yaml").read_text()


def test_resume_with_a_new_batch_size_restarts_the_epoch(tmp_path: Path, no_plots, capsys):
    run_dir = tmp_path / "run"
    train(config(run_dir, "train.max_steps=3", "train.batch_size=16"))  # 48 of 400 pairs seen
    train(config(run_dir, "train.epochs=1", "train.batch_size=8"), resume=True)
    err = capsys.readouterr().err
    assert "epoch 1 restarts from its first batch" in err
    # All 400 pairs of the epoch in batches of 8 after the 3 steps of 16: none skipped.
    assert load_checkpoint(run_dir / "last.pt")["step"] == 3 + 400 // 8
    assert err.splitlines()[-1] == (  # the epochs, not the first session's max_steps
        "finished after 53 steps (1 epoch done): train.epochs=1 reached; resume with: "
        f"{shlex.join(['seq2seq', 'train', '--resume', '--run-dir', str(run_dir)])} "
        "--set train.epochs=2"
    )


def _cli(run_dir: Path, *extra: str) -> list[str]:
    sets = [item for override in BASE for item in ("--set", override)]
    return ["train", "--config", str(TOY), *sets, "--run-dir", str(run_dir), *extra]


def _start(args: list[str], prelude: str = "", **kwargs) -> subprocess.Popen:
    """`python -m seq2seq ARGS` as a real process, or the same after running `prelude`."""
    if not prelude:
        return subprocess.Popen([sys.executable, "-m", "seq2seq", *args], cwd=ROOT, **kwargs)
    code = f"{prelude}\nimport sys\nfrom seq2seq.cli import main\nsys.argv[0] = 'seq2seq'\nmain()"
    return subprocess.Popen([sys.executable, "-c", code, *args], cwd=ROOT, **kwargs)


def _wait_for(found, process: subprocess.Popen, what: str, timeout: float = 60.0):
    """Poll found() every 5 ms until it returns something true; the process must live."""
    deadline = time.monotonic() + timeout
    while not (result := found()):
        assert process.poll() is None, f"the process ended before {what}"
        assert time.monotonic() < deadline, f"{what} never happened"
        time.sleep(0.005)
    return result


@pytest.mark.parametrize("signum, status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_saves_and_resumes_exactly(
    reference_run: Path, tmp_path: Path, cli, signum: int, status: int
):
    """The signal arrives at the first save of a 40-step run (step 2); the run stops with
    128 + signum after saving, and the command it prints resumes it exactly."""
    run_dir = tmp_path / "run"
    args = _cli(run_dir, "--set", "train.max_steps=40", "--set", "train.save_every=2")
    process = _start(args, stderr=subprocess.PIPE, text=True)
    _wait_for(lambda: (run_dir / "last.pt").exists(), process, "the first save")
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == status, stderr[-3000:]  # an ignored signal finishes: 0
    assert "Traceback" not in stderr
    step = load_checkpoint(run_dir / "last.pt")["step"]
    assert 2 <= step < 40
    command = re.search(r"resume with: seq2seq (.*)$", stderr, re.MULTILINE).group(1)
    assert command == f"train --resume --run-dir {run_dir}"  # no --config: the folder's own
    code, out, err = cli(*shlex.split(command))
    assert code == 0, err
    assert f"resuming {run_dir} at epoch 1, step {step}" in err
    assert same_weights(reference_run / "last.pt", run_dir / "last.pt")


# In the process killed inside a save, every fsync of a file takes half a second: the save
# is in progress from the moment its temporary file appears until well after the kill.
SLOW_SAVES = """
import os, stat, time
fsync = os.fsync
def slow_fsync(fd):
    if stat.S_ISREG(os.fstat(fd).st_mode):
        time.sleep(0.5)
    fsync(fd)
os.fsync = slow_fsync
"""


def test_kill_9_inside_a_save_and_while_training_stays_resumable(
    reference_run: Path, tmp_path: Path, cli
):
    """SIGKILL (1) inside a save of last.pt, (2) while a resumed process trains, just after
    it saved; each time last.pt opens, and the run then resumed with the command that
    Ctrl-C prints equals the uninterrupted one bit for bit."""
    run_dir = tmp_path / "run"
    args = _cli(run_dir, "--set", "train.max_steps=40", "--set", "train.save_every=3")

    def temporaries() -> list[Path]:
        return list(run_dir.glob(".last.pt.*.tmp"))

    process = _start(args, prelude=SLOW_SAVES, stderr=subprocess.DEVNULL)
    _wait_for(lambda: (run_dir / "last.pt").exists(), process, "the first save (step 3)")
    _wait_for(temporaries, process, "the second save (step 6)")
    process.kill()
    process.wait(timeout=60)
    (left,) = temporaries()  # killed inside the save: its temporary file is still there
    assert load_checkpoint(run_dir / "last.pt")["step"] == 3  # the previous save, whole

    process = _start([*args, "--resume"], stderr=subprocess.DEVNULL)
    first = (run_dir / "last.pt").stat().st_ino
    _wait_for(lambda: (run_dir / "last.pt").stat().st_ino != first, process, "a new save")
    time.sleep(0.02)  # 20 ms after its first save: training the next steps
    process.kill()
    process.wait(timeout=60)
    assert not left.exists(), "the resumed run removed the killed save's temporary file"
    assert load_checkpoint(run_dir / "last.pt")["step"] >= 6

    code, out, err = cli("train", "--resume", "--run-dir", run_dir)
    assert code == 0, err
    assert load_checkpoint(run_dir / "last.pt")["step"] == 40
    assert same_weights(reference_run / "last.pt", run_dir / "last.pt")
    assert not temporaries()
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").open()]
    steps = [r["step"] for r in records if r["kind"] == "train"]
    assert steps == list(range(5, 41, 5)), "work lost by a kill is logged once, when redone"


def test_a_training_holds_its_run_folder(tmp_path: Path, cli, monkeypatch):
    """While a training runs, a second train, --resume or --overwrite on its folder exits 2
    naming its PID and changes nothing; plot draws outside the folder; after kill -9 the
    lock is gone with the process and the run resumes."""
    run_dir = tmp_path / "run"
    sets = ["train.max_steps=100000", "train.validate_every=2", "train.save_every=2"]
    process = _start(_cli(run_dir, *[a for s in sets for a in ("--set", s)]))
    try:
        _wait_for(lambda: (run_dir / "curves.png").exists(), process, "the first validation")
        before = {p.name: p.read_bytes() for p in run_dir.glob("*.yaml")}
        for extra in ([], ["--resume"], ["--overwrite"]):
            code, out, err = cli(*_cli(run_dir, *extra))
            assert code == 2 and f"in use by a training (PID {process.pid})" in err, err
        assert {p.name: p.read_bytes() for p in run_dir.glob("*.yaml")} == before
        monkeypatch.chdir(tmp_path)
        code, out, err = cli("plot", run_dir)
        assert code == 0 and out.strip() == "run-curves.png", err
        assert (tmp_path / "run-curves.png").read_bytes().startswith(b"\x89PNG")
        assert process.poll() is None, "the training goes on"
    finally:
        process.kill()
        process.wait(timeout=60)
    step = load_checkpoint(run_dir / "last.pt")["step"]
    code, out, err = cli(*_cli(run_dir, "--resume", "--set", f"train.max_steps={step + 1}"))
    assert code == 0, err


@pytest.mark.parametrize(
    "validate_every, reason, saved",
    [(1000, "step 1", []), (1, "the validation at step 1", [])],
)
def test_divergence_stops_with_exit_3(tmp_path: Path, validate_every, reason, saved):
    """A learning rate of 1e38 blows the weights up at the first step: its save, or its
    validation, finds them non-finite. Exit 3, one error line, nothing non-finite saved,
    valid JSON in the log."""
    run_dir = tmp_path / "run"
    sets = ["train.learning_rate=1e38", f"train.validate_every={validate_every}"]
    sets += ["train.save_every=1", "train.max_steps=40"]
    process = _start(_cli(run_dir, *[a for s in sets for a in ("--set", s)]),
                     stderr=subprocess.PIPE, text=True)  # fmt: skip
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 3 and "Traceback" not in stderr, stderr[-2000:]
    assert f"error: training diverged: {reason} gave non-finite" in stderr
    assert sorted(p.name for p in run_dir.glob("*.pt")) == saved

    def no_constants(name: str):
        raise AssertionError(f"{name} in metrics.jsonl")

    for line in (run_dir / "metrics.jsonl").open():
        json.loads(line, parse_constant=no_constants)


@pytest.mark.parametrize("bad_batches", [2, 5])
def test_non_finite_steps_are_skipped_until_max_bad_steps(tmp_path, cli, monkeypatch, bad_batches):
    """The loss of steps 4.. 3 + bad_batches is NaN: those updates are skipped (the weights
    stay finite); 2 in a row are survived, the 5th (step 8) stops the run (exit 3) with
    last.pt at its last save (step 6, finite: skipped steps change nothing)."""
    import seq2seq.optimization

    real_loss, calls = seq2seq.optimization.sequence_loss, {"n": 0}

    def loss_nan_for_a_while(*args, **kwargs):
        calls["n"] += 1
        poisoned = 3 < calls["n"] <= 3 + bad_batches
        return real_loss(*args, **kwargs) * (math.nan if poisoned else 1.0)

    monkeypatch.setattr(seq2seq.optimization, "sequence_loss", loss_nan_for_a_while)
    sets = ["train.max_steps=10", "train.save_every=2", "train.log_every=1"]
    code, out, err = cli(*_cli(tmp_path / "run", *[a for s in sets for a in ("--set", s)]))
    assert err.count("non-finite gradients, update skipped") == bad_batches
    last = load_checkpoint(tmp_path / "run" / "last.pt")
    assert all(w.isfinite().all() for w in last["model"].values())
    if bad_batches == 5:
        assert code == 3 and "error: training diverged: 5 steps in a row" in err
        assert last["step"] == 6
    else:
        assert code == 0 and last["step"] == 10
        records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
        assert [r["step"] for r in records if r["kind"] == "train"] == [1, 2, 3, 6, 7, 8, 9, 10]


def test_a_failed_write_saves_last_pt_first(tmp_path: Path, cli, monkeypatch, no_plots):
    """The disk fills up while metrics.jsonl is appended to at step 4: one line naming the
    file, exit 2, and last.pt saved at step 4 first."""
    import seq2seq.files

    run_dir = tmp_path / "run"
    real_open = open

    def disk_full_for_metrics(path, *args, **kwargs):
        if Path(path).name == "metrics.jsonl" and metrics_lines(run_dir) >= 4:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(seq2seq.files, "open", disk_full_for_metrics, raising=False)
    sets = ["train.log_every=1", "train.save_every=1000", "train.max_steps=10"]
    code, out, err = cli(*_cli(run_dir, *[a for s in sets for a in ("--set", s)]))
    assert code == 2 and "Traceback" not in err
    error = err.strip().splitlines()[-1]
    assert error == (
        f"error: {run_dir / 'metrics.jsonl'}: could not write: No space left on device "
        f"(saved {run_dir / 'last.pt'} at step 4)"
    )
    assert load_checkpoint(run_dir / "last.pt")["step"] == 4


def metrics_lines(run_dir: Path) -> int:
    path = run_dir / "metrics.jsonl"
    return len(path.read_text().splitlines()) if path.exists() else 0


def test_a_failed_config_write_leaves_no_empty_config(tmp_path: Path, cli, monkeypatch):
    import seq2seq.files

    real_open = open

    def read_only(path, *args, **kwargs):
        if Path(path).name.startswith(".config.yaml"):
            raise OSError(errno.EROFS, "Read-only file system")
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(seq2seq.files, "open", read_only, raising=False)
    code, out, err = cli(*_cli(tmp_path / "run"))
    assert code == 2
    assert f"{tmp_path / 'run' / 'config.yaml'}: could not write: Read-only file system" in err
    assert not (tmp_path / "run" / "config.yaml").exists()


@pytest.mark.parametrize("name", ["best.pt", "last.pt", "metrics.jsonl"])
def test_a_directory_in_place_of_a_run_file_is_found_first(tmp_path: Path, cli, name):
    (tmp_path / "run" / name).mkdir(parents=True)
    code, out, err = cli(*_cli(tmp_path / "run"))
    assert code == 2 and f"{tmp_path / 'run' / name}: is not a regular file" in err
    assert not (tmp_path / "run" / "config.yaml").exists()


def test_early_stopping(tmp_path: Path, no_plots, capsys, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(console, "_verbosity", console.NORMAL)  # a CLI test may have left it
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
    last = capsys.readouterr().err.splitlines()[-1]
    assert last == (
        "finished after 6 steps (0 epochs done): early stopping, bleu did not improve for 2 "
        "validations (train.patience=2)"
    )


def test_max_minutes_stops_validates_and_resumes(tmp_path: Path, no_plots):
    run_dir = tmp_path / "run"
    train(config(run_dir, "train.max_minutes=0.00001", "train.epochs=50"))  # under 1 ms
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").open()]
    assert [r["step"] for r in records if r["kind"] == "valid"] == [1]
    assert load_checkpoint(run_dir / "last.pt")["step"] == 1 and (run_dir / "best.pt").exists()
    train(config(run_dir, "train.max_minutes=0.00001", "train.epochs=50"), resume=True)
    assert load_checkpoint(run_dir / "last.pt")["step"] == 1, "time was up: nothing more"
    train(config(run_dir, "train.max_steps=3", "train.epochs=50"), resume=True)
    assert load_checkpoint(run_dir / "last.pt")["step"] == 3, "a larger budget continues"


RUN = Path("runs/my run")
RESUME = "resume with: seq2seq train --resume --run-dir 'runs/my run'"


@pytest.mark.parametrize(
    "settings, where, spent, early, line",
    [
        ({}, (13, 300), False, False,
         f"finished after 300 steps (12 epochs done): train.epochs=12 reached; {RESUME} "
         "--set train.epochs=24"),
        ({"max_steps": 40}, (4, 40), False, False,
         f"finished after 40 steps (3 epochs done): train.max_steps=40 reached; {RESUME} "
         "--set train.max_steps=80"),
        ({"max_minutes": 5}, (2, 161), True, False,
         "finished after 161 steps (1 epoch done): the time budget train.max_minutes=5.0 is "
         f"spent; {RESUME} --set train.max_minutes=10.0"),
        ({"max_steps": 10, "max_minutes": 5}, (1, 10), False, False,
         f"finished after 10 steps (0 epochs done): train.max_steps=10 reached; {RESUME} "
         "--set train.max_steps=20"),
        ({"epochs": 2, "max_steps": 50, "max_minutes": 0.5}, (3, 50), True, False,
         "finished after 50 steps (2 epochs done): train.epochs=2 reached and "
         "train.max_steps=50 reached and the time budget train.max_minutes=0.5 is spent; "
         f"{RESUME} --set train.epochs=4 --set train.max_steps=100 --set train.max_minutes=1.0"),
        ({"patience": 3, "best_metric": "chrf", "max_steps": 1}, (2, 1), False, True,
         "finished after 1 step (1 epoch done): early stopping, chrf did not improve for 3 "
         "validations (train.patience=3)"),
    ],
)  # fmt: skip
def test_the_last_line_says_why_a_run_stopped_and_how_it_goes_on(
    settings, where: tuple[int, int], spent: bool, early: bool, line: str
):
    """Every limit reached is named, and raised in the command that goes on; early stopping
    (the model stopped improving) has none."""
    train_config = TrainConfig(**{"epochs": 12, **settings})
    progress = Progress(epoch=where[0], step=where[1])
    reached = limits_reached(train_config, progress, spent)
    assert end_line(train_config, progress, reached, early, RUN) == line


def test_a_signal_names_itself_and_the_command_that_resumes():
    assert str(Interrupted(signal.SIGTERM, RUN)) == (
        f"stopped by SIGTERM after saving {RUN / 'last.pt'}; {RESUME}"
    )


ENDING = re.compile(
    r"^finished after (\d+) steps? \(\d+ epochs? done\): (.*); resume with: (.*)$", re.MULTILINE
)


@pytest.mark.parametrize(
    "limit, raised, reasons",
    [
        ("train.max_steps=3", "train.max_steps=6",
         ["train.max_steps=3 reached", "train.max_steps=6 reached"]),
        ("train.max_minutes=0.005", "train.max_minutes=0.01",
         ["the time budget train.max_minutes=0.005 is spent",
          "the time budget train.max_minutes=0.01 is spent"]),
    ],
)  # fmt: skip
def test_a_finished_run_says_why_and_its_command_goes_on(
    tmp_path: Path, cli, no_plots, limit: str, raised: str, reasons: list[str]
):
    """A training process ends on a limit with one line naming it and the command that
    continues; that command, as printed, trains on until the doubled limit."""
    run_dir = tmp_path / "a run"
    code, out, err = run_cli(*_cli(run_dir, "--set", limit))
    assert code == 0, err[-3000:]
    first = ENDING.search(err)
    assert first is not None and first.group(2) == reasons[0], err[-3000:]
    command = shlex.split(first.group(3))
    assert command == ["seq2seq", "train", "--resume", "--run-dir", str(run_dir), "--set", raised]
    code, out, err = cli(*command[1:])
    assert code == 0, err
    second = ENDING.search(err)
    assert second is not None and second.group(2) == reasons[1], err
    steps = int(first.group(1)), int(second.group(1))
    assert load_checkpoint(run_dir / "last.pt")["step"] == steps[1] > steps[0]
    if "max_steps" in limit:  # time is not that exact
        assert steps[1] == 2 * steps[0]


def test_inverse_sqrt_warmup(tmp_path: Path, no_plots):
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


def test_plateau_halves_the_rate_down_to_the_floor(tmp_path: Path, no_plots):
    run_dir = tmp_path / "run"
    train(
        config(
            run_dir,
            "train.learning_rate=1e-6",  # too small to change the greedy output
            "train.scheduler=plateau",
            "train.plateau_patience=0",
            "train.min_learning_rate=3e-7",
            "train.validate_every=1",
            "train.max_steps=4",
            "train.best_metric=bleu",
        )
    )
    valid = [r for r in map(json.loads, (run_dir / "metrics.jsonl").open()) if r["kind"] == "valid"]
    assert len({r["bleu"] for r in valid}) == 1
    assert [r["lr"] for r in valid] == pytest.approx([1e-6, 5e-7, 3e-7, 3e-7], rel=1e-9)


def test_gradient_accumulation_counts_steps(tmp_path: Path, no_plots):
    run_dir = tmp_path / "run"
    train(config(run_dir, "train.accumulate_steps=5", "train.epochs=1"))
    assert load_checkpoint(run_dir / "last.pt")["step"] == 5  # 25 toy batches / 5


def test_gradient_accumulation_equals_one_large_batch(tmp_path: Path):
    """Three accumulated batches give the gradients of one batch holding their sentences:
    the mean over every target token of the step."""
    exact = ["model.dropout=0.0", "train.teacher_forcing=1.0", "train.clip_norm=null"]
    accumulating = Trainer(config(tmp_path / "a", *exact, "train.accumulate_steps=3"), False, False)
    whole = Trainer(config(tmp_path / "b", *exact), False, False)  # the same initial weights
    generator = torch.Generator().manual_seed(1)
    group = make_batches(accumulating.corpus.lengths, 16, "sentences", generator)[:3]  # one step's
    loss, tokens, _ = accumulating._step(group)
    whole_loss, whole_tokens, _ = whole._step([sum(group, [])])
    assert tokens == whole_tokens and loss == pytest.approx(whole_loss, rel=1e-5)
    for (name, a), b in zip(accumulating.model.named_parameters(), whole.model.parameters(),
                            strict=True):  # fmt: skip
        assert torch.allclose(a.grad, b.grad, rtol=1e-4, atol=1e-7), name


def smoothed_loss(logits: torch.Tensor, trg: torch.Tensor, smoothing: float) -> torch.Tensor:
    """Summed over real target tokens: (1 - e) * -log p(y) + e * mean over the vocabulary of
    -log p(v), written out."""
    total = torch.zeros((), dtype=torch.float64)
    for row in range(trg.size(0)):
        for t in range(trg.size(1) - 1):
            gold = int(trg[row, t + 1])
            if gold == PAD:
                continue
            scores = logits[row, t].double()
            log_p = scores - torch.log(torch.exp(scores).sum())
            total += (1 - smoothing) * -log_p[gold] + smoothing * -log_p.mean()
    return total


def test_label_smoothing_by_hand(tmp_path: Path):
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 9) * 3
    trg = torch.tensor([[2, 4, 5, 7, 3], [2, 8, 3, PAD, PAD]])
    for smoothing in (0.0, 0.1, 0.3):
        expected = smoothed_loss(logits, trg, smoothing)
        assert float(sequence_loss(logits, trg, smoothing)) == pytest.approx(float(expected))
    # ... and the trainer's step uses the configured value.
    settings = ["model.dropout=0.0", "train.teacher_forcing=1.0", "train.label_smoothing=0.2"]
    trainer = Trainer(config(tmp_path / "run", *settings), False, False)
    with torch.no_grad():  # confident predictions: smoothing then changes the loss a lot
        for parameter in trainer.model.parameters():
            parameter.normal_(0.0, 0.3)
    batch = collate(list(range(8)), trainer.corpus.src, trainer.corpus.trg)
    with torch.no_grad():
        logits = trainer.model(batch.src, batch.src_lengths, batch.trg[:, :-1], 1.0)
    loss, tokens, _ = trainer._step([list(range(8))])
    assert tokens == batch.target_tokens
    assert loss == pytest.approx(float(smoothed_loss(logits, batch.trg, 0.2)), rel=1e-5)
    assert abs(loss - float(smoothed_loss(logits, batch.trg, 0.0))) > 0.01 * loss


def test_bf16_training_on_the_cpu(tmp_path: Path, no_plots):
    """bf16 autocast in the training forward, float32 weights, a finite run that resumes."""
    trainer = Trainer(config(tmp_path / "bf16", "train.precision=bf16", "train.max_steps=3"),
                      False, False)  # fmt: skip
    output_dtypes = []
    trainer.model.decoder.output.register_forward_hook(
        lambda module, inputs, output: output_dtypes.append((module.training, output.dtype))
    )
    trainer.run()
    assert (True, torch.bfloat16) in output_dtypes  # training steps
    assert (False, torch.float32) in output_dtypes  # validation runs in float32
    saved = load_checkpoint(tmp_path / "bf16" / "last.pt")
    assert saved["step"] == 3
    assert all(
        t.dtype == torch.float32 and torch.isfinite(t).all() for t in saved["model"].values()
    )
    train(config(tmp_path / "fp32", "train.max_steps=3"))
    assert not same_weights(tmp_path / "bf16" / "last.pt", tmp_path / "fp32" / "last.pt")
    train(config(tmp_path / "bf16", "train.precision=bf16", "train.max_steps=5"), resume=True)
    assert load_checkpoint(tmp_path / "bf16" / "last.pt")["step"] == 5


def test_resume_from_a_checkpoint_without_training_state(tmp_path: Path, no_plots):
    run_dir = tmp_path / "run"
    train(config(run_dir, "train.max_steps=2"))
    (run_dir / "last.pt").write_bytes((run_dir / "best.pt").read_bytes())  # weights only
    with pytest.raises(UserError, match="last.pt: holds no training state"):
        train(config(run_dir, "train.max_steps=4"), resume=True)


# -- the validation metric's direction ---------------------------------------------------------

LOWER_IS_BETTER = [5.0, 3.0, 4.0, 2.0, 6.0, 7.0, 1.0, 1.0]
HIGHER_IS_BETTER = [10.0, 30.0, 20.0, 40.0, 5.0, 1.0, 50.0, 50.0]
# Either way: best at validation 4; with patience 2, validations 5 and 6 stop the run
# before the better 7th; with plateau patience 0, validations 3, 5 and 6 halve the rate.


def scripted(monkeypatch: pytest.MonkeyPatch, metric: str, values: list[float], seen: list):
    """Validation i (one per step) scores `values[i]` on `metric`; the other metrics stay
    constant, so that a run ranking by another metric keeps its first checkpoint. seen[i]
    gets the kept checkpoints' steps when validation i starts."""
    run_dirs: list[Path] = []

    def evaluate(translator, sources, references) -> Evaluation:
        index = len(seen)
        seen.append(sorted(int(p.stem[9:]) for p in run_dirs[0].glob("ckpt-step*.pt")))
        metrics = {"loss": 1.0, "free_running_loss": 1.0, "bleu": 0.0, "chrf": 0.0}
        metrics[metric] = values[index]
        scores = Scores(metrics["bleu"], metrics["chrf"], 0.0, "bleu", "chrf")
        return Evaluation(metrics["loss"], metrics["free_running_loss"], scores, [])

    monkeypatch.setattr(seq2seq.training, "evaluate", evaluate)
    monkeypatch.setattr(seq2seq.training, "plot_run", lambda run_dir: None)
    return run_dirs


@pytest.mark.parametrize("metric", ["loss", "free_running_loss", "bleu", "chrf"])
def test_best_checkpoint_early_stopping_and_plateau_follow_the_metric(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, metric: str
):
    values = LOWER_IS_BETTER if metric.endswith("loss") else HIGHER_IS_BETTER
    run_dir = tmp_path / "run"
    scripted(monkeypatch, metric, values, []).append(run_dir)
    train(
        config(
            run_dir,
            f"train.best_metric={metric}",
            "train.validate_every=1",
            "train.patience=2",
            "train.scheduler=plateau",
            "train.plateau_patience=0",
            "train.min_learning_rate=0",
            "train.learning_rate=0.004",
        )
    )
    best = load_checkpoint(run_dir / "best.pt")
    assert best["step"] == 4 and best["validation"][metric] == values[3]
    assert load_checkpoint(run_dir / "last.pt")["step"] == 6  # stopped early
    valid = [r for r in map(json.loads, (run_dir / "metrics.jsonl").open()) if r["kind"] == "valid"]
    assert [r[metric] for r in valid] == values[:6]
    assert [r["lr"] for r in valid] == pytest.approx([0.004, 0.004, 0.002, 0.002, 0.001, 0.0005])


@pytest.mark.parametrize(
    "metric, values",
    [("bleu", [10.0, 30.0, 20.0, 30.0, 5.0, 35.0]), ("loss", [5.0, 3.0, 4.0, 3.0, 6.0, 2.0])],
)
def test_the_k_best_checkpoints_are_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, metric: str, values: list[float]
):
    """k = 2, ranked by the metric, a tie going to the later step; a checkpoint pushed out
    of the k best is deleted at once."""
    run_dir, seen = tmp_path / "run", []
    scripted(monkeypatch, metric, values, seen).append(run_dir)
    train(config(run_dir, f"train.best_metric={metric}", "train.validate_every=1",
                 "train.max_steps=6", "train.keep_checkpoints=2"))  # fmt: skip
    final = sorted(int(p.stem[9:]) for p in run_dir.glob("ckpt-step*.pt"))
    assert [*seen, final] == [[], [1], [1, 2], [2, 3], [2, 4], [2, 4], [4, 6]]
    for step in final:
        assert (
            load_checkpoint(run_dir / f"ckpt-step{step}.pt")["validation"][metric]
            == (values[step - 1])
        )
    signed = [v if metric == "bleu" else -v for v in (values[5], values[3])]
    assert load_checkpoint(run_dir / "last.pt")["training"]["tracker"]["kept"] == [
        [signed[0], 6],
        [signed[1], 4],
    ]


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


def test_keep_and_average_checkpoints(tmp_path: Path, cli, no_plots):
    run_dir = tmp_path / "run"
    train(
        config(run_dir, "train.validate_every=5", "train.max_steps=20", "train.keep_checkpoints=2")
    )
    valid = [r for r in map(json.loads, (run_dir / "metrics.jsonl").open()) if r["kind"] == "valid"]
    assert [r["step"] for r in valid] == [5, 10, 15, 20]
    best_two = sorted(valid, key=lambda r: (-r["bleu"], -r["step"]))[:2]  # ties: the later
    kept = sorted(run_dir.glob("ckpt-step*.pt"))
    assert sorted(p.name for p in kept) == sorted(f"ckpt-step{r['step']}.pt" for r in best_two)
    for path in kept:
        assert load_checkpoint(path)["validation"]["bleu"] in [r["bleu"] for r in best_two]
    out = tmp_path / "avg.pt"
    code, _, err = cli("average", run_dir, "--output", out)
    assert code == 0, err
    averaged = load_checkpoint(out)
    assert "training" not in averaged
    a, b = (weights(path) for path in kept)
    for name, tensor in averaged["model"].items():
        assert torch.allclose(tensor, (a[name] + b[name]) / 2, atol=1e-7)


def test_average_of_a_folder_without_kept_checkpoints(reference_run: Path, tmp_path: Path, cli):
    code, _, err = cli("average", reference_run, "--output", tmp_path / "avg.pt")
    assert code == 2 and "no ckpt-step*.pt files" in err and "keep_checkpoints" in err


def test_plot_command(reference_run: Path, cli):
    (reference_run / "curves.png").unlink()
    code, out, err = cli("plot", reference_run)
    assert code == 0, err
    assert out == f"{reference_run / 'curves.png'}\n"
    assert (reference_run / "curves.png").read_bytes().startswith(b"\x89PNG")


# -- what a step minimizes and logs, the batch order, bad steps, a resumed schedule ------------


def test_a_step_follows_and_logs_the_mean_loss_per_target_token(tmp_path: Path):
    """The update's gradients are those of the mean cross-entropy over the step's target
    tokens (PyTorch's own cross-entropy, on a copy of the model), so a long sentence weighs
    more than a short one; the training record logs that mean."""
    exact = ["model.dropout=0.0", "train.teacher_forcing=1.0", "train.clip_norm=null"]
    trainer = Trainer(config(tmp_path / "run", *exact, "train.log_every=1"), False, False)
    indices = list(range(8))
    batch = collate(indices, trainer.corpus.src, trainer.corpus.trg)
    assert len({int(length) for length in (batch.trg != PAD).sum(1)}) > 1
    reference = copy.deepcopy(trainer.model)
    logits = reference(batch.src, batch.src_lengths, batch.trg[:, :-1], 1.0)
    mean = F.cross_entropy(logits.flatten(0, 1), batch.trg[:, 1:].flatten(), ignore_index=PAD)
    mean.backward()
    trainer._train_step([indices], 1, Window())
    record = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["kind"] == "train" and record["loss"] == pytest.approx(mean.item(), rel=1e-5)
    for (name, ours), theirs in zip(trainer.model.named_parameters(), reference.parameters(),
                                    strict=True):  # fmt: skip
        assert torch.allclose(ours.grad, theirs.grad, rtol=1e-4, atol=1e-8), name


def small_corpus(folder: Path, pairs: int) -> Path:
    """The first `pairs` toy training pairs, and 4 validation pairs."""
    folder.mkdir()
    for split, count in (("train", pairs), ("val", 4)):
        for lang in ("de", "en"):
            lines = (ROOT / "data" / "toy" / f"{split}.{lang}").read_text(encoding="utf-8")
            (folder / f"{split}.{lang}").write_text(
                "".join(f"{line}\n" for line in lines.splitlines()[:count]), encoding="utf-8"
            )
    return folder


def test_every_epoch_has_its_own_batch_order(tmp_path: Path, monkeypatch, no_plots):
    """Two epochs of 24 pairs in batches of 4: each sees every pair once, in another order."""
    seen, real_collate = [], seq2seq.training.collate

    def recording(indices: list[int], src, trg):
        seen.append(list(indices))
        return real_collate(indices, src, trg)

    monkeypatch.setattr(seq2seq.training, "collate", recording)
    data = small_corpus(tmp_path / "data", 24)
    train(config(tmp_path / "run", f"data.dir={data}", "train.batch_size=4", "train.epochs=2"))
    first, second = seen[:6], seen[6:]
    assert len(second) == 6
    assert sorted(sum(first, [])) == sorted(sum(second, [])) == list(range(24))
    assert first != second


def test_non_finite_steps_stop_a_run_only_in_a_row(tmp_path: Path, monkeypatch, no_plots, capsys):
    """train.max_bad_steps 2: bad steps 2 and 4, each followed by a good one, are survived."""
    import seq2seq.optimization

    real_loss, calls = seq2seq.optimization.sequence_loss, {"n": 0}

    def nan_at_steps_2_and_4(*args, **kwargs):
        calls["n"] += 1
        return real_loss(*args, **kwargs) * (math.nan if calls["n"] in (2, 4) else 1.0)

    monkeypatch.setattr(seq2seq.optimization, "sequence_loss", nan_at_steps_2_and_4)
    run_dir = tmp_path / "run"
    train(config(run_dir, "train.max_steps=5", "train.max_bad_steps=2"))
    assert capsys.readouterr().err.count("non-finite gradients, update skipped") == 2
    assert load_checkpoint(run_dir / "last.pt")["step"] == 5


def test_resume_continues_the_warmup_at_a_new_learning_rate(tmp_path: Path, no_plots):
    """inverse_sqrt, warm-up 4 steps: 3 steps at 0.01, then resumed at 0.02; the logged rate
    (the next step's) keeps rising and decaying as one uninterrupted run would, scaled."""
    run_dir = tmp_path / "run"
    schedule = ["train.scheduler=inverse_sqrt", "train.warmup_steps=4", "train.log_every=1"]
    train(config(run_dir, *schedule, "train.max_steps=3"))
    train(config(run_dir, *schedule, "train.max_steps=6", "train.learning_rate=0.02"), resume=True)
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").open()]
    rates = [r["lr"] for r in records if r["kind"] == "train"]
    expected = [0.01 * 2 / 4, 0.01 * 3 / 4, 0.01] + [0.02 * (4 / n) ** 0.5 for n in (5, 6, 7)]
    assert rates == pytest.approx(expected)


@pytest.fixture(scope="module")
def toy_folder(toy_checkpoint: Path, tmp_path_factory) -> Path:
    """The toy model exported as a model folder."""
    from seq2seq.export import export

    folder = tmp_path_factory.mktemp("fine_tuning") / "toy"
    export(toy_checkpoint, folder, "float32")
    return folder


def validations(run_dir: Path) -> list[dict]:
    records = map(json.loads, (run_dir / "metrics.jsonl").open())
    return [record for record in records if record["kind"] == "valid"]


def test_a_fine_tuning_run_takes_the_model_and_first_scores_it_as_given(
    toy_folder: Path, toy_checkpoint: Path, tmp_path: Path, no_plots, capsys
):
    """The run's first validation (step 0) is the model's own greedy score on the data;
    the run takes the model's sizes and vocabularies (not those of its smaller data) and
    says which settings changed."""
    from seq2seq.checkpoint import load_bundle
    from seq2seq.evaluation import evaluate
    from seq2seq.translator import Translator

    run_dir, data = tmp_path / "run", small_corpus(tmp_path / "data", 24)
    train(config(run_dir, f"train.init_from={toy_folder}", f"data.dir={data}", "train.max_steps=3"))
    said = "sets the model and text settings: model.encoder.hidden_size 24 -> 48"
    assert said in capsys.readouterr().err
    model = load_bundle(toy_checkpoint)
    decode = model.config.decode.updated(beam_size=1, nbest=1)  # as training validates
    translator = Translator(model.model, model.src, model.trg, decode, torch.device("cpu"))
    valid = [(data / f"val.{lang}").read_text("utf-8").splitlines() for lang in ("de", "en")]
    expected = evaluate(translator, *valid).as_dict()
    first = validations(run_dir)[0]
    assert first["step"] == 0
    assert {key: first[key] for key in expected} == expected
    saved = load_checkpoint(run_dir / "last.pt")
    assert saved["vocab"] == load_checkpoint(toy_checkpoint)["vocab"]
    assert saved["config"]["model"]["encoder"]["hidden_size"] == 48
    assert saved["step"] == 3  # the step count started afresh


def shifted_toy_data(folder: Path) -> Path:
    """The toy data in a new "domain": its English says plays where it said runs, and runs
    where it said plays (words the toy model knows, in other places)."""
    swap = {"runs": "plays", "plays": "runs", "run": "play", "play": "run"}
    folder.mkdir()
    for split in ("train", "val"):
        shutil.copy(ROOT / "data" / "toy" / f"{split}.de", folder / f"{split}.de")
        lines = (ROOT / "data" / "toy" / f"{split}.en").read_text("utf-8").splitlines()
        shifted = [" ".join(swap.get(word, word) for word in line.split()) for line in lines]
        (folder / f"{split}.en").write_text("\n".join(shifted) + "\n", encoding="utf-8")
    return folder


def test_fine_tuning_on_shifted_data_improves_on_the_model(
    toy_checkpoint: Path, tmp_path: Path, no_plots
):
    data = shifted_toy_data(tmp_path / "shifted")
    run_dir = tmp_path / "run"
    settings = [f"data.dir={data}", f"train.init_from={toy_checkpoint}", "train.epochs=2"]
    train(config(run_dir, *settings, "train.teacher_forcing=1.0"))
    before, after = (record["bleu"] for record in validations(run_dir))
    assert after > before + 10, (before, after)


def test_resuming_a_fine_tuning_run_is_exact(toy_folder: Path, tmp_path: Path, no_plots):
    settings = [f"train.init_from={toy_folder}", "train.save_every=4"]
    train(config(tmp_path / "straight", *settings, "train.max_steps=12"))
    train(config(tmp_path / "resumed", *settings, "train.max_steps=5"))
    train(config(tmp_path / "resumed", *settings, "train.max_steps=12"), resume=True)
    assert same_weights(tmp_path / "straight" / "last.pt", tmp_path / "resumed" / "last.pt")


def test_a_run_folder_overwritten_by_fine_tuning_its_own_model(
    toy_run: Path, tmp_path: Path, no_plots
):
    """The model is read before --overwrite clears the folder that holds it."""
    run_dir = tmp_path / "run"
    shutil.copytree(toy_run, run_dir)
    train(config(run_dir, f"train.init_from={run_dir / 'best.pt'}", "train.max_steps=2"), True)
    assert load_checkpoint(run_dir / "last.pt")["step"] == 2


def test_a_bad_init_from_is_one_line(tmp_path: Path, cli):
    missing = tmp_path / "missing.pt"
    code, _, err = cli("train", "--config", TOY, "--set", f"train.run_dir={tmp_path / 'run'}",
                       "--init-from", missing)  # fmt: skip
    assert code == 2 and err == f"error: train.init_from: {missing}: checkpoint not found\n"
    assert not (tmp_path / "run" / "config.yaml").exists()


def test_progress_lines_when_stderr_is_a_file(tmp_path: Path):
    """Stderr to a file (nohup, a cluster job): no bar frames, but a progress line every
    train.log_every steps with the loss, the pace, the time spent and what is left."""
    run_dir, log = tmp_path / "run", tmp_path / "stderr.txt"
    with log.open("w") as stderr:
        process = _start(_cli(run_dir, "--set", "train.max_steps=10"), stderr=stderr)
        assert process.wait(timeout=300) == 0, log.read_text()
    lines = [line for line in log.read_text().splitlines() if ", step " in line]
    assert [line.split(":")[0] for line in lines] == ["epoch 1, step 5", "epoch 1, step 10"]
    assert re.fullmatch(
        r"epoch 1, step 5: loss \d+\.\d{3}, [\d,]+ target tokens/s, lr 0\.01, elapsed \d+s, "
        r"epoch ETA \d+s, budget ETA \d+s",
        lines[0],
    ), lines[0]
    assert "\r" not in log.read_text() and "batch/s" not in log.read_text()


# -- training data that gives no training; out of memory ------------------------------------------


def test_empty_training_files(tmp_path: Path, cli):
    code, out, err = cli(*train_args(tmp_path, data_folder(tmp_path, "", "")))
    one_error_line(code, err, "no usable training pairs")


def test_training_files_of_only_empty_lines(tmp_path: Path, cli):
    code, out, err = cli(*train_args(tmp_path, data_folder(tmp_path, "\n\n\n", "\n\n\n")))
    one_error_line(code, err, "no usable training pairs")


def test_data_dir_that_does_not_exist(tmp_path: Path, cli):
    code, out, err = cli(*train_args(tmp_path, tmp_path / "nowhere"))
    one_error_line(code, err, "data.dir", "nowhere")
    assert not (tmp_path / "run" / "last.pt").exists()


def test_out_of_memory_in_training_saves_and_suggests_a_smaller_batch(tmp_path, monkeypatch, cli):
    """The suggested options, added to `train --run-dir RUN`, continue the run."""
    run_dir = tmp_path / "run"
    overrides = toy_overrides(run_dir, "train.save_every=1000", "train.max_steps=8")
    args = ["train", "--config", TOY_CONFIG, *[a for o in overrides for a in ("--set", o)]]
    from seq2seq.model import Seq2Seq

    forward = Seq2Seq.forward
    calls = {"n": 0}

    def failing_forward(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:
            raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried 9 GB")
        return forward(self, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(Seq2Seq, "forward", failing_forward)
        code, out, err = cli(*args)
    assert code == 2 and "Traceback" not in err, err
    error = err.split("error: ")[-1]  # after training's progress lines
    for text in ("out of memory", "train.batch_size=8", str(run_dir / "last.pt")):
        assert text in error, error
    assert load_checkpoint(run_dir / "last.pt")["step"] == 3  # the work before it is saved
    suggested = re.search(r"resume with (--resume [^(]*)\(", error).group(1)
    code, out, err = cli("train", "--run-dir", run_dir, *shlex.split(suggested))
    assert code == 0, err
    assert "resuming" in err and "at epoch 1, step 3" in err
    finished = load_checkpoint(run_dir / "last.pt")
    assert finished["config"]["train"]["batch_size"] == 8
    assert finished["config"]["train"]["accumulate_steps"] == 2
    assert "epoch 1 restarts from its first batch" in err
    assert finished["training"]["progress"]["step"] == 8
