"""A run on disk, seq2seq/run.py.

The run folder: its files are deleted only by `train --overwrite`, no other command
writes over them, its lock is a regular file, only dead writers' temp files are swept,
and a folder that cannot be written is one error line. The data-loss and lock cases run
`python -m seq2seq` as real processes; their variations run `seq2seq.cli.main()` in this
process (`cli`).

last.pt, without training a run: which config changes a resumed run takes, what last.pt
must hold, the weights, optimizer, schedule, progress and validation tracker it saves and
restores, and the random streams.

metrics.jsonl: a damaged line is skipped and named, never the end of a resume or a plot."""

from __future__ import annotations

import fcntl
import json
import math
import os
import platform
import random
import re
import shutil
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import numpy
import pytest
import torch
from conftest import ROOT, TOY_CONFIG, TOY_DATA, one_error_line, random_batch, run_cli

import seq2seq
from seq2seq import distributed
from seq2seq.checkpoint import Bundle, load_checkpoint
from seq2seq.config import Config, load_config
from seq2seq.data import Batch
from seq2seq.errors import UserError
from seq2seq.model import Seq2Seq
from seq2seq.optimization import Optimization
from seq2seq.run import (
    MetricsLog,
    RunFolder,
    TrainingState,
    check_not_run_file,
    config_changes,
    describe_changes,
    environment,
    get_rng_state,
    read_metrics,
    restore_rng,
    restore_training,
    save_last,
    set_rng_state,
)
from seq2seq.text import TextSide
from seq2seq.tokenizer import Tokenizer
from seq2seq.validation import ValidationTracker
from seq2seq.vocab import EOS, SOS, Vocabulary

# Each file that makes a folder hold a run, with stand-in contents: the checks come
# before anything reads them.
RUN_FILES = {
    "config.yaml": "seed: 1\n",
    "best.pt": "weights",
    "ckpt-step10.pt": "weights",
    "metrics.jsonl": '{"kind": "start"}\n',
    "train.log": "epoch 1 done\n",
    "curves.png": "picture",
}


def train_args(run_dir: Path, *extra: str) -> list[str]:
    """A one-step toy training into `run_dir` (were it to start)."""
    sets = [f"data.dir={TOY_DATA}", "train.device=cpu", "train.max_steps=1"]
    options = [part for item in sets for part in ("--set", item)]
    return ["train", "--config", str(TOY_CONFIG), *options, "--run-dir", str(run_dir), *extra]


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file in `folder`, hidden ones too, but the lock (which a training rewrites
    with its PID before it looks at anything)."""
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file() and p.name != ".lock"}


def fake_run(folder: Path, *names: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_text(RUN_FILES[name], encoding="utf-8")
    return folder


def dead_pid() -> int:
    """The process id of a process that has ended."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


# -- train: a run's files go only with --overwrite ----------------------------------------------


def test_resume_without_last_pt_refuses_and_keeps_the_run(tmp_path: Path) -> None:
    """A user deleted last.pt after training, to save disk: --resume must not start a new
    run over best.pt, the kept checkpoints and the logs."""
    run_dir = fake_run(tmp_path / "run", *RUN_FILES)
    before = snapshot(run_dir)
    code, out, err = run_cli(*train_args(run_dir, "--resume"))
    one_error_line(code, err, str(run_dir), "config.yaml, best.pt", "no last.pt", "--overwrite")
    assert snapshot(run_dir) == before


@pytest.mark.parametrize("name", list(RUN_FILES))
def test_any_run_file_makes_a_run(name: str, tmp_path: Path) -> None:
    """Plain train and train --resume (without last.pt) refuse a folder holding any one of
    a run's files; --overwrite takes it; a folder of only the lock, temp files and the
    user's own files holds no run, and --resume starts there."""
    folder = RunFolder(fake_run(tmp_path / "run", name))
    for resume in (False, True):
        with pytest.raises(UserError, match=re.escape(f"holds a run ({name})")):
            folder.check(overwrite=False, resume=resume)
    assert folder.check(overwrite=True, resume=False) is False
    (folder.path / name).unlink()
    (folder.path / "notes.txt").write_text("mine")
    (folder.path / f".best.pt.{os.getpid()}-0123abcd.tmp").write_text("a save in progress")
    folder.lock()
    try:
        assert folder.check(overwrite=False, resume=True) is False
        assert folder.check(overwrite=False, resume=False) is False
    finally:
        folder.unlock()


def test_train_keeps_a_run_without_config_and_last_pt(tmp_path: Path, cli) -> None:
    run_dir = fake_run(tmp_path / "run", "best.pt", "ckpt-step10.pt", "metrics.jsonl")
    before = snapshot(run_dir)
    code, out, err = cli(*train_args(run_dir))
    one_error_line(code, err, f"{run_dir} already holds a run", "pass --overwrite")
    assert "--resume" not in err  # there is no last.pt to resume from
    assert snapshot(run_dir) == before


def test_starting_a_run_removes_only_dead_writers_temp_files(tmp_path: Path) -> None:
    """A killed save leaves `.NAME.PID-HEX.tmp`; a start removes those whose writer is
    gone, and leaves a live writer's and the user's own hidden `.tmp` files."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    orphan = run_dir / f".ckpt-step10.pt.{dead_pid()}-0123abcd.tmp"
    alive = run_dir / f".best.pt.{os.getpid()}-0123abcd.tmp"
    users = [run_dir / ".notes.tmp", run_dir / ".draft.1-2.tmp", run_dir / ".x.tmp"]
    for path in (orphan, alive, *users):
        path.write_text("kept?")
    # The run starts (the folder is prepared), then stops at the missing data.
    args = train_args(run_dir, "--set", f"data.dir={tmp_path / 'nowhere'}")
    code, out, err = run_cli(*args)
    one_error_line(code, err, "data.dir")
    assert sorted(p.name for p in run_dir.glob(".*.tmp")) == sorted(p.name for p in [alive, *users])


# -- no other command writes over a run's files ------------------------------------------------


@pytest.fixture
def run_copy(toy_run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(toy_run, tmp_path / "run"))


def test_plot_refuses_to_draw_over_the_metrics(run_copy: Path, cli) -> None:
    """Only the run's own files are refused: curves.png is redrawn, other names are free."""
    before = snapshot(run_copy)
    code, out, err = run_cli("plot", run_copy, "--output", run_copy / "metrics.jsonl")
    one_error_line(code, err, str(run_copy / "metrics.jsonl"), "is the input")
    assert snapshot(run_copy) == before
    code, out, err = cli("plot", run_copy, "-o", run_copy / "curves.png")
    assert code == 0, err
    code, out, err = cli("average", run_copy / "best.pt", "-o", run_copy / "averaged.pt")
    assert code == 0, err


OVER_RUN_FILES = {
    "plot, a link to the metrics": (["plot", "run", "-o", "link.jsonl"], "is the input"),
    "plot, ./ and ..": (["plot", "./run", "-o", "./run/../run/metrics.jsonl"], "is the input"),
    "plot over the config": (["plot", "run", "-o", "run/config.yaml"], "of the run in"),
    "translate over last.pt": (["translate", "-m", "run/best.pt", "-o", "run/last.pt"],
                               "of the run in"),
    "translate over the log": (["translate", "-m", "run/best.pt", "-o", "run/train.log"],
                               "of the run in"),
    "average as a kept checkpoint": (["average", "run/best.pt", "-o", "run/ckpt-step7.pt"],
                                     "of the run in"),
    "evaluate over the config, through ..": (["evaluate", "--hyp", "hyp.en", "--ref",
                                              "hyp.en", "-o", "sub/../run/config.yaml"],
                                             "of the run in"),
}  # fmt: skip


@pytest.mark.parametrize("case", OVER_RUN_FILES, ids=list(OVER_RUN_FILES))
def test_no_command_writes_over_a_run_file(
    case: str, run_copy: Path, cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(run_copy.parent)
    Path("link.jsonl").symlink_to(run_copy / "metrics.jsonl")
    Path("sub").mkdir()
    shutil.copy(TOY_DATA / "test.en", "hyp.en")
    before = snapshot(run_copy)
    args, expected = OVER_RUN_FILES[case]
    code, out, err = cli(*args, input=b"Ein Hund.\n")
    one_error_line(code, err, str(Path(args[-1])), expected)
    assert snapshot(run_copy) == before


# -- the lock ----------------------------------------------------------------------------------


def test_a_lock_that_is_a_symlink_is_refused(tmp_path: Path) -> None:
    """Opened through the link, the lock would truncate its target."""
    victim = tmp_path / "thesis.tex"
    victim.write_text("three years of work\n", encoding="utf-8")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / ".lock").symlink_to(victim)
    code, out, err = run_cli(*train_args(run_dir))
    one_error_line(code, err, str(run_dir / ".lock"), "symbolic link")
    assert victim.read_text(encoding="utf-8") == "three years of work\n"
    assert sorted(p.name for p in run_dir.iterdir()) == [".lock"]


def test_a_lock_that_is_a_fifo_is_refused(run_copy: Path) -> None:
    """Opening a FIFO for reading would wait for a writer forever."""
    (run_copy / ".lock").unlink()
    os.mkfifo(run_copy / ".lock")
    code, out, err = run_cli("plot", run_copy, timeout=120)
    one_error_line(code, err, str(run_copy / ".lock"), "not a regular file")


@pytest.fixture
def held(tmp_path: Path):
    """A folder that another process holds with a training's lock -> (folder, its PID)."""
    folder = tmp_path / "live"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys\nfrom seq2seq.run import RunFolder\n"
         "folder = RunFolder(sys.argv[1])\nfolder.lock()\nprint('held', flush=True)\n"
         "sys.stdin.read()", folder],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=ROOT,
    )  # fmt: skip
    try:
        assert holder.stdout.readline() == b"held\n"
        yield folder, holder.pid
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)


def test_average_refuses_a_folder_that_a_training_holds(
    held: tuple[Path, int], toy_checkpoint: Path
) -> None:
    folder, pid = held
    code, out, err = run_cli("average", toy_checkpoint, "-o", folder / "averaged.pt")
    one_error_line(code, err, "in use by a training", f"PID {pid}", "write the average elsewhere")
    assert not (folder / "averaged.pt").exists()


# -- a folder that cannot be written -----------------------------------------------------------


def without_override() -> list[str]:
    """A prefix that runs a command without root's power to ignore file permissions."""
    if os.geteuid() != 0:
        return []
    prefix = ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner"]
    if shutil.which("setpriv") is None or subprocess.run([*prefix, "true"]).returncode:
        pytest.skip("root, and no setpriv to drop its override of file permissions")
    return prefix


READ_ONLY = {
    "train, a new run": (0o555, lambda run: train_args(run.parent / "fresh")),
    "train --resume": (0o444, lambda run: train_args(run, "--resume")),
    "average": (0o444, lambda run: ["average", run / "best.pt", "-o", run.parent / "mean.pt"]),
    "plot": (0o444, lambda run: ["plot", run]),
}


@pytest.mark.parametrize("case", READ_ONLY, ids=list(READ_ONLY))
def test_a_folder_that_cannot_be_written_is_one_error_line(
    case: str, run_copy: Path, tmp_path: Path
) -> None:
    """A folder without write permission (r-x), or without search permission either (r--)."""
    mode, args = READ_ONLY[case]
    (tmp_path / "fresh").mkdir()
    (tmp_path / "fresh").chmod(mode)
    run_copy.chmod(mode)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [*without_override(), sys.executable, "-m", "seq2seq", *map(str, args(run_copy))]
    try:
        result = subprocess.run(command, capture_output=True, cwd=ROOT, env=env, timeout=300)
    finally:
        for folder in (run_copy, tmp_path / "fresh"):
            folder.chmod(0o755)
    err = result.stderr.decode()
    one_error_line(result.returncode, err, "Permission denied")
    assert str(tmp_path / "fresh" if case == "train, a new run" else run_copy) in err


# -- last.pt and resuming ----------------------------------------------------------------------


# -- the folder in this process: its lock, the files it owns, the checkpoints it keeps ---------


def test_a_held_folder_names_the_training_that_holds_it(tmp_path: Path) -> None:
    (tmp_path / ".lock").write_text("a longer stale content\n", encoding="utf-8")
    holder, other = RunFolder(tmp_path), RunFolder(tmp_path)
    assert other.training() is None
    holder.lock()
    pid = str(os.getpid())
    assert (tmp_path / ".lock").read_text(encoding="utf-8") == f"{pid}\n"
    assert fcntl.fcntl(holder._lock.fileno(), fcntl.F_GETFD) & fcntl.FD_CLOEXEC
    assert other.training() == pid
    in_use = f"{tmp_path} is in use by a training (PID {pid}); "
    with pytest.raises(UserError) as refused:
        other.refuse_while_training("write elsewhere")
    assert str(refused.value) == in_use + "write elsewhere"
    with pytest.raises(UserError) as locked:
        other.lock()
    assert str(locked.value) == in_use + "wait for it to end, or choose another --run-dir"
    assert (tmp_path / ".lock").read_text(encoding="utf-8") == f"{pid}\n"  # left as it was
    holder.unlock()
    holder.unlock()  # a second time is nothing
    assert other.training() is None
    other.refuse_while_training("write elsewhere")
    other.lock()
    other.unlock()


def test_a_lock_held_before_its_holder_wrote_its_pid_names_no_pid(tmp_path: Path) -> None:
    with open(tmp_path / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        assert RunFolder(tmp_path).training() == "unknown"


def test_a_lock_file_is_made_readable_to_all(tmp_path: Path) -> None:
    previous = os.umask(0o022)
    try:
        folder = RunFolder(tmp_path / "run")
        folder.lock()
        folder.unlock()
    finally:
        os.umask(previous)
    assert (tmp_path / "run" / ".lock").stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize("kind", ["symlink", "fifo"])
def test_a_lock_that_is_not_a_regular_file_is_one_error_in_this_process(
    tmp_path: Path, kind: str
) -> None:
    lock = tmp_path / ".lock"
    target = tmp_path / "target"
    target.write_text("keep\n", encoding="utf-8")
    lock.symlink_to(target) if kind == "symlink" else os.mkfifo(lock)
    reason = {
        "symlink": "cannot open the folder's lock: it is a symbolic link; remove it",
        "fifo": "the run folder's lock is not a regular file; remove it",
    }[kind]
    for use in (RunFolder(tmp_path).training, RunFolder(tmp_path).lock):
        with pytest.raises(UserError) as refused:
            use()
        assert str(refused.value) == f"{lock}: {reason}"
    assert target.read_text(encoding="utf-8") == "keep\n"


def test_a_folder_owns_its_training_files_once_it_holds_a_run(tmp_path: Path) -> None:
    folder = RunFolder(tmp_path)
    own = ["config.yaml", "last.pt", "best.pt", "metrics.jsonl", "train.log", "ckpt-step7.pt"]
    assert not any(folder.owns(name) for name in own)  # an empty folder holds no run
    fake_run(tmp_path, "metrics.jsonl")
    assert not folder.owns("metrics.jsonl")  # the only file: another run may start here
    assert [name for name in own if not folder.owns(name)] == ["metrics.jsonl"]
    fake_run(tmp_path, "train.log")
    assert folder.owns("metrics.jsonl")
    for name in ("curves.png", "notes.txt", "ckpt-step7.txt", "best.pt.bak", "my-ckpt-step7.pt"):
        assert not folder.owns(name), name


def test_a_run_file_is_refused_as_an_output_by_any_spelling(tmp_path: Path) -> None:
    run = fake_run(tmp_path / "run", "metrics.jsonl", "best.pt")
    (tmp_path / "link.pt").symlink_to(run / "best.pt")
    for spelling in (run / "best.pt", tmp_path / "link.pt", run / ".." / "run" / "best.pt"):
        with pytest.raises(UserError) as refused:
            check_not_run_file(spelling)
        assert str(refused.value) == (
            f"{spelling}: is the best.pt of the run in {run}; write the output to another file"
        )
    check_not_run_file(run / "average.pt")
    check_not_run_file(tmp_path / "best.pt")


def test_validated_checkpoints_are_kept_and_pushed_out(tmp_path: Path) -> None:
    folder = RunFolder(tmp_path)
    payload = {"weights": torch.arange(3)}
    assert folder.save_validated(payload, 10, best=True, keep=True, dropped=[]) == [
        tmp_path / "best.pt", tmp_path / "ckpt-step10.pt"
    ]  # fmt: skip
    assert folder.save_validated(payload, 20, best=False, keep=True, dropped=[]) == [
        tmp_path / "ckpt-step20.pt"
    ]
    assert folder.save_validated(payload, 30, best=True, keep=False, dropped=[10]) == [
        tmp_path / "best.pt"
    ]
    assert folder.all_kept() == [tmp_path / "ckpt-step20.pt"]
    assert folder.save_validated(payload, 40, best=False, keep=False, dropped=[]) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt", "ckpt-step20.pt"]
    assert torch.equal(load_checkpoint(tmp_path / "ckpt-step20.pt")["weights"], torch.arange(3))


def test_check_names_what_holds_the_folder_and_what_to_pass(tmp_path: Path) -> None:
    folder = RunFolder(tmp_path)
    (tmp_path / "config.yaml").mkdir()
    with pytest.raises(UserError) as refused:
        folder.check(overwrite=True, resume=False)
    assert str(refused.value) == (
        f"{tmp_path / 'config.yaml'}: is not a regular file; move it out of the run folder"
    )
    (tmp_path / "config.yaml").rmdir()
    fake_run(tmp_path, "config.yaml", "best.pt", "metrics.jsonl")
    run = f"{tmp_path} already holds a run (config.yaml, best.pt, metrics.jsonl)"
    with pytest.raises(UserError) as refused:
        folder.check(overwrite=False, resume=False)
    assert (
        str(refused.value) == f"{run}; pass --overwrite to replace it, or choose another --run-dir"
    )
    with pytest.raises(UserError) as refused:
        folder.check(overwrite=False, resume=True)
    assert str(refused.value) == (
        f"{tmp_path} holds a run (config.yaml, best.pt, metrics.jsonl) but no last.pt to resume "
        "from; pass --overwrite to start it again (deleting them), or choose another --run-dir"
    )
    (tmp_path / "last.pt").write_text("state", encoding="utf-8")
    with pytest.raises(UserError) as refused:
        folder.check(overwrite=False, resume=False)
    assert str(refused.value) == (
        f"{tmp_path} already holds a run (config.yaml, last.pt, best.pt, ...); pass --resume "
        "to continue it, --overwrite to replace it, or choose another --run-dir"
    )
    assert folder.check(overwrite=False, resume=True) is True
    assert folder.check(overwrite=True, resume=False) is False


def test_start_deletes_a_run_only_to_replace_it_and_never_through_a_link(tmp_path: Path) -> None:
    run = fake_run(tmp_path / "run", "config.yaml", "best.pt", "ckpt-step10.pt", "train.log")
    (run / "last.pt").write_text("state", encoding="utf-8")
    (run / "tensorboard").mkdir()
    (run / "tensorboard" / "events").write_text("e", encoding="utf-8")
    (run / "notes.txt").write_text("mine", encoding="utf-8")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep").write_text("keep", encoding="utf-8")
    context = distributed.Context()
    folder = RunFolder(run)
    assert folder.start(overwrite=False, resume=True, context=context) is True
    assert len(list(run.iterdir())) == 7  # resuming deletes nothing
    assert folder.start(overwrite=True, resume=False, context=context) is False
    assert sorted(p.name for p in run.iterdir()) == ["notes.txt"]
    (run / "tensorboard").symlink_to(elsewhere, target_is_directory=True)
    (run / "best.pt").write_text("weights", encoding="utf-8")
    assert folder.start(overwrite=True, resume=False, context=context) is False
    assert sorted(p.name for p in run.iterdir()) == ["notes.txt"]
    assert (elsewhere / "keep").read_text(
        encoding="utf-8"
    ) == "keep"  # the link went, not its target


def test_a_lock_that_cannot_be_opened_says_why(tmp_path: Path) -> None:
    (tmp_path / ".lock").mkdir()
    with pytest.raises(UserError) as refused:
        RunFolder(tmp_path).lock()
    assert (
        str(refused.value) == f"{tmp_path / '.lock'}: cannot open the folder's lock: Is a directory"
    )
    RunFolder(tmp_path).unlock()  # never locked: nothing to do


def test_a_kept_checkpoint_already_gone_is_no_error(tmp_path: Path) -> None:
    folder = RunFolder(tmp_path)
    assert folder.save_validated({"w": torch.zeros(1)}, 20, best=False, keep=True, dropped=[10])
    assert folder.all_kept() == [tmp_path / "ckpt-step20.pt"]


LAST = Path("run/last.pt")
SIZES = ["model.encoder.embedding_size=8", "model.encoder.hidden_size=6",
         "model.decoder.embedding_size=7", "model.decoder.hidden_size=5"]  # fmt: skip
INVERSE_SQRT = ["train.scheduler=inverse_sqrt", "train.warmup_steps=4", "train.learning_rate=0.01"]


def toy_config(*overrides: str) -> Config:
    return load_config(TOY_CONFIG, [*SIZES, *INVERSE_SQRT, *overrides])


def bundle(config: Config, src_words: list[str] = ("ein", "hund")) -> Bundle:
    """A model of the config's sizes over tiny vocabularies (13 and 11 ids); its weights
    are drawn from torch's generator."""
    src = TextSide(Tokenizer("de"), Vocabulary.build([[*src_words, *"abcdefg"]]))
    trg = TextSide(Tokenizer("en"), Vocabulary.build([list("abcdefg")]))
    return Bundle(config, Seq2Seq(config.model, len(src.vocab), len(trg.vocab)), src, trg)


# A stand-in for what a training saves beside the optimizer: Progress's fields, the
# validation tracker's state, no random streams.
PROGRESS = {"epoch": 1, "step": 2}
TRACKER = {"best": 1.5, "bad_validations": 1, "kept": [[1.5, 1]]}


def trained_payload(config: Config, folder: Path) -> tuple[dict, Bundle, Optimization]:
    """last.pt's payload, saved into `folder` and read back, after two optimizer steps."""
    saved = bundle(config)
    optimization = Optimization(saved.model, saved.model, config.train, torch.device("cpu"))
    src, lengths = random_batch([5, 4], 13, torch.Generator().manual_seed(0))
    trg = torch.tensor([[SOS, 4, 5, 6, EOS], [SOS, 7, 8, EOS, 1]])
    for _ in range(PROGRESS["step"]):
        batch = Batch(src, lengths, trg, [0, 1])
        optimization.step([batch], batch.target_tokens, distributed=False)
    save_last(folder / "last.pt", saved, optimization, TrainingState(PROGRESS, TRACKER, []))
    return load_checkpoint(folder / "last.pt"), saved, optimization


@pytest.mark.parametrize(
    "change, expected",
    [
        ("train.epochs=20", {"train.epochs": (12, 20)}),
        ("decode.beam_size=3", {"decode.beam_size": (5, 3)}),  # a translation default
        ("train.learning_rate=0.02", {"train.learning_rate": (0.01, 0.02)}),
    ],
)
def test_a_resumed_run_takes_a_change_that_paces_it(change: str, expected: dict) -> None:
    payload = {"config": toy_config().model_dump()}
    assert config_changes(payload, toy_config(change), LAST) == expected
    assert config_changes(payload, toy_config(), LAST) == {}


@pytest.mark.parametrize(
    "change, message",
    [
        ("model.dropout=0.3", "model.dropout=0.1, this config says 0.3"),
        ("train.warmup_steps=8", "train.warmup_steps=4, this config says 8"),
        ("data.max_length=50", "data.max_length=100, this config says 50"),
        ("seed=5", "seed=1234, this config says 5"),
    ],
)
def test_a_change_that_makes_another_run_is_refused(change: str, message: str) -> None:
    payload = {"config": toy_config().model_dump()}
    with pytest.raises(UserError) as refused:
        config_changes(payload, toy_config(change), LAST)
    assert str(refused.value) == (
        f"{LAST}: the run was trained with {message}; a resumed run cannot change it: "
        "set it back, or start a new run"
    )


def test_a_last_pt_whose_config_is_not_valid_is_named(tmp_path: Path) -> None:
    payload = {"config": {**toy_config().model_dump(), "bogus": 1}}
    with pytest.raises(UserError, match=f"^{re.escape(str(LAST))}"):
        config_changes(payload, toy_config(), LAST)


def test_describe_changes() -> None:
    assert describe_changes({}) == ""
    changes = {"train.epochs": (12, 20), "train.learning_rate": (0.01, 0.02)}
    assert describe_changes(changes) == (
        "; changed: train.epochs 12 -> 20, train.learning_rate 0.01 -> 0.02"
    )


def test_restore_training_takes_weights_optimizer_schedule_and_a_new_rate(
    tmp_path: Path,
) -> None:
    """What save_last wrote: the weights, the optimizer's state, and progress and tracker
    each under its own key."""
    payload, saved, optimization = trained_payload(toy_config(), tmp_path)
    config = toy_config("train.learning_rate=0.02")
    resumed = bundle(config)  # other initial weights
    again = Optimization(resumed.model, resumed.model, config.train, torch.device("cpu"))
    state = restore_training(payload, {"train.learning_rate": (0.01, 0.02)}, resumed, again, LAST)
    assert state == TrainingState(PROGRESS, TRACKER, [])
    assert payload["step"] == PROGRESS["step"]
    for ours, theirs in zip(resumed.model.parameters(), saved.model.parameters(), strict=True):
        assert torch.equal(ours, theirs)
    assert again.optimizer.state_dict()["state"][0]["step"] == 2  # Adam's moments too
    assert torch.equal(
        again.optimizer.state_dict()["state"][0]["exp_avg"],
        optimization.optimizer.state_dict()["state"][0]["exp_avg"],
    )
    assert again.scheduler.last_epoch == 2
    assert again.learning_rate == pytest.approx(2 * optimization.learning_rate)


def test_restore_training_keeps_the_rate_without_a_change(tmp_path: Path) -> None:
    payload, _, optimization = trained_payload(toy_config(), tmp_path)
    resumed = bundle(toy_config())
    again = Optimization(resumed.model, resumed.model, toy_config().train, torch.device("cpu"))
    restore_training(payload, {}, resumed, again, LAST)
    assert again.learning_rate == optimization.learning_rate == pytest.approx(0.0075)


def test_last_pt_must_hold_training_state_and_the_same_vocabularies(tmp_path: Path) -> None:
    payload, _, _ = trained_payload(toy_config(), tmp_path)
    config = toy_config()
    model = bundle(config).model
    fresh = Optimization(model, model, config.train, torch.device("cpu"))
    other_words = bundle(config, ["ein", "katze", "hund"])
    with pytest.raises(UserError) as refused:
        restore_training(payload, {}, other_words, fresh, LAST)
    assert str(refused.value) == (
        f"{LAST}: its src vocabulary (13 tokens) does not match the one the data give now "
        "(14): the training data changed"
    )
    same = bundle(config)
    other_trg = TextSide(Tokenizer("en"), Vocabulary.build([list("abcdefgh")]))
    other_targets = Bundle(config, same.model, same.src, other_trg)
    with pytest.raises(UserError, match=f"^{LAST}: its trg vocabulary \\(11 tokens\\) does not"):
        restore_training(payload, {}, other_targets, fresh, LAST)
    weights_only = {key: value for key, value in payload.items() if key != "training"}
    with pytest.raises(UserError, match=f"^{LAST}: holds no training state"):
        restore_training(weights_only, {}, bundle(config), fresh, LAST)


def test_last_pt_must_fit_the_model(tmp_path: Path) -> None:
    payload, _, _ = trained_payload(toy_config(), tmp_path)
    config = toy_config("model.decoder.hidden_size=9")
    larger = bundle(config)
    optimization = Optimization(larger.model, larger.model, config.train, torch.device("cpu"))
    with pytest.raises(UserError, match=f"^{LAST}: does not fit this config's model \\("):
        restore_training(payload, {}, larger, optimization, LAST)


def test_an_older_last_pt_holds_the_trackers_state_among_the_progress_fields(
    tmp_path: Path,
) -> None:
    """last.pt files saved before the tracker had its own key still resume."""
    payload, _, _ = trained_payload(toy_config(), tmp_path)
    training = dict(payload["training"])
    training["progress"] = {**training["progress"], **training.pop("tracker")}
    resumed = bundle(toy_config())
    again = Optimization(resumed.model, resumed.model, toy_config().train, torch.device("cpu"))
    state = restore_training({**payload, "training": training}, {}, resumed, again, LAST)
    tracker = ValidationTracker("bleu", patience=None, keep=1)
    tracker.load_state_dict(state.tracker)
    assert tracker.state_dict() == TRACKER


def draws() -> tuple:
    """A number from each random stream a run uses."""
    return random.random(), torch.rand(3).tolist(), numpy.random.rand()


def test_the_random_streams_are_saved_and_restored() -> None:
    state = get_rng_state()
    expected = draws()
    assert draws() != expected
    set_rng_state(state)
    assert draws() == expected


def test_each_rank_takes_its_streams_or_all_reseed() -> None:
    first = get_rng_state()
    draws()
    second = get_rng_state()
    expected = draws()
    assert restore_rng([first, second], distributed.Context(rank=1, world_size=2), 7) is True
    assert draws() == expected  # rank 1's streams
    assert restore_rng([first, second], distributed.Context(), 7) is False  # two ranks saved
    reseeded = torch.rand(3).tolist()
    torch.manual_seed(7)
    assert reseeded == torch.rand(3).tolist()
    assert restore_rng([first], distributed.Context(rank=2, world_size=3), 7) is False
    reseeded = torch.rand(3).tolist()
    torch.manual_seed(7 + 2)  # seed + rank: each rank its own stream
    assert reseeded == torch.rand(3).tolist()


# -- metrics.jsonl -----------------------------------------------------------------------------


DAMAGED = [b"\xff\xfe not UTF-8", b"[1, 2]", b"3", b"not JSON"]


def test_lines_that_are_not_records_are_skipped_and_named(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """A partial last line (a kill cut it) is skipped without a word."""
    path = tmp_path / "metrics.jsonl"
    good = [{"kind": "train", "step": 5}, {"kind": "valid", "step": 10}]
    lines = [json.dumps(good[0]).encode(), *DAMAGED, json.dumps(good[1]).encode()]
    path.write_bytes(b"\n".join(lines) + b'\n{"kind": "tr')
    assert read_metrics(path) == good
    path.write_bytes(b"\n".join([lines[0], b" ", lines[-1]]) + b"\n")  # a blank line: nothing
    assert read_metrics(path) == good
    warnings = capsys.readouterr().err.splitlines()
    assert warnings == [
        f"warning: {path}:{n}: not a metrics record (a JSON object), skipped" for n in (2, 3, 4, 5)
    ]


@pytest.fixture
def damaged_run(run_copy: Path) -> Path:
    """A copy of the toy run whose metrics.jsonl has damaged lines among its records."""
    metrics = run_copy / "metrics.jsonl"
    lines = metrics.read_bytes().splitlines()
    metrics.write_bytes(b"\n".join([lines[0], *DAMAGED, *lines[1:]]) + b"\n")
    return run_copy


def test_a_damaged_metrics_line_never_stops_plot_or_resume(damaged_run: Path, cli) -> None:
    """plot draws the records; resume goes on, and its rewrite of the log leaves out the
    damaged lines."""
    metrics = damaged_run / "metrics.jsonl"
    records = read_metrics(metrics)
    code, out, err = cli("plot", damaged_run)
    assert code == 0, err
    assert out.strip() == str(damaged_run / "curves.png")
    assert f"warning: {metrics}:2: not a metrics record" in err
    code, out, err = cli("train", "--resume", "--run-dir", damaged_run)
    assert code == 0, err
    assert f"warning: {metrics}:5: not a metrics record" in err
    lines = metrics.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == records


def test_truncate_after_keeps_the_records_up_to_a_step(tmp_path: Path) -> None:
    """Records without a step (the start record) stay; NaN is still written as null."""
    folder = RunFolder(tmp_path)
    log = MetricsLog(folder)
    records = [{"kind": "start", "note": "é"}, {"kind": "train", "step": 1, "loss": math.nan},
               {"kind": "valid", "step": 2}, {"kind": "train", "step": 3}]  # fmt: skip
    for record in records:
        log.append(record)
    log.truncate_after(2)
    text = folder.metrics.read_text(encoding="utf-8")
    log.truncate_after(0)  # records without a step are from before the first
    assert folder.metrics.read_text(encoding="utf-8") == '{"kind": "start", "note": "é"}\n'
    assert text == (
        '{"kind": "start", "note": "é"}\n{"kind": "train", "step": 1, "loss": null}\n'
        '{"kind": "valid", "step": 2}\n'
    )


def test_a_run_records_the_versions_and_the_commit_of_the_code_it_ran(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Wherever the training starts: the commit of this source tree, not of the folder the
    command ran in (nor any when the source is not in a git checkout)."""
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    if head.returncode != 0:
        pytest.skip("the source tree is not a git checkout")
    monkeypatch.chdir(tmp_path)
    assert environment() == {
        "seq2seq": seq2seq.__version__, "python": platform.python_version(),
        "torch": version("torch"), "spacy": version("spacy"), "sacrebleu": version("sacrebleu"),
        "git_commit": head.stdout.strip(),
    }  # fmt: skip
