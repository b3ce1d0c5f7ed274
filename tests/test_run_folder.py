"""A run folder: its files are deleted only by `train --overwrite`, no other command
writes over them, its lock is a regular file, only dead writers' temp files are swept,
and a folder that cannot be written is one error line.

The data-loss and lock cases run `python -m seq2seq` as real processes; their variations
run `seq2seq.cli.main()` in this process (`cli`)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, TOY_CONFIG, TOY_DATA, run_cli
from test_hardening import one_error_line

from seq2seq.errors import UserError
from seq2seq.run_folder import RunFolder

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
        [sys.executable, "-c", "import sys\nfrom seq2seq.run_folder import RunFolder\n"
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
