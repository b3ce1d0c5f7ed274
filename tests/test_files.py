"""files.py: an output replaced only when complete (the old one whole after a failure, a
kill or SIGTERM), temp files of dead writers swept by one rule, folders made with one error
line, outputs through a link to a pipe."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, one_error_line

from seq2seq.corpus import read_lines
from seq2seq.errors import UserError
from seq2seq.files import make_folder, remove_orphans, same_file, write_atomic
from seq2seq.translator import Translator


def test_only_the_temp_files_of_dead_writers_are_removed(tmp_path: Path) -> None:
    """By name (`a.txt`'s, before a write of a.txt) or all in the folder (a run's start);
    a live writer's temp file and every name that this tool does not make stay."""
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    dead, alive = ended.pid, os.getpid()
    names = {
        "a_orphan": f".a.txt.{dead}-0123abcd.tmp",
        "b_orphan": f".b.txt.{dead}-89abcdef.tmp",
        "a_alive": f".a.txt.{alive}-0123abcd.tmp",
        "dotted_orphan": f".a.txt.b.{dead}-0123abcd.tmp",  # b.txt.b's, not a.txt's
        "users": ".notes.tmp",
        "short_hex": f".a.txt.{dead}-0000.tmp",
        "no_pid": ".a.txt.x-0123abcd.tmp",
    }
    for name in names.values():
        (tmp_path / name).write_text("?")

    def left() -> set[str]:
        return {key for key, name in names.items() if (tmp_path / name).exists()}

    remove_orphans(tmp_path, "a.txt")
    assert left() == set(names) - {"a_orphan"}
    remove_orphans(tmp_path)
    assert left() == {"a_alive", "users", "short_hex", "no_pid"}


def test_a_folder_that_cannot_be_made_is_named(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("in the way")
    for folder in (blocker, blocker / "sub"):
        with pytest.raises(UserError, match=f"^{folder}: cannot create this folder: "):
            make_folder(folder)
    make_folder(tmp_path / "new" / "nested")
    assert (tmp_path / "new" / "nested").is_dir()


def test_an_output_through_a_link_to_a_pipe_is_written_into_the_pipe() -> None:
    """/dev/stdout and `>(cmd)` are links to a pipe, which no path beside them reaches."""
    reader, writer = os.pipe()
    try:
        write_atomic(f"/proc/self/fd/{writer}", lambda handle: handle.write(b"through\n"))
        assert os.read(reader, 100) == b"through\n"
    finally:
        os.close(reader)
        os.close(writer)


def test_one_file_under_two_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Through a link or `./`; a name that is no file (yet), a Hub id, is none."""
    checkpoint = tmp_path / "best.pt"
    checkpoint.write_bytes(b"x")
    (tmp_path / "link.pt").symlink_to(checkpoint)
    monkeypatch.chdir(tmp_path)
    assert same_file(checkpoint, "link.pt") and same_file("./best.pt", checkpoint)
    assert not same_file(checkpoint, tmp_path / "last.pt")
    assert not same_file("hf:org/model", checkpoint)


# -- an output is replaced only when complete; dead writers' temp files ---------------------------


def temporary_files(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]


@pytest.fixture
def old_output(tmp_path: Path) -> Path:
    """An output file from an earlier run, with its own permissions, reached by a link."""
    target = tmp_path / "out.en"
    target.write_text("old\n", encoding="utf-8")
    target.chmod(0o640)
    (tmp_path / "link.en").symlink_to(target)
    return target


def test_an_output_file_is_replaced_only_when_complete(
    tmp_path: Path, toy_checkpoint: Path, old_output: Path, cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "in.de"
    source.write_text("Ein Hund.\nEin Mann.\nEine Frau.\n", encoding="utf-8")
    translate_nbest = Translator.translate_nbest
    seen = []

    def watched(self, lines, decode=None):
        seen.append((old_output.read_text(encoding="utf-8"), len(temporary_files(tmp_path))))
        return translate_nbest(self, lines, decode)

    monkeypatch.setattr(Translator, "translate_nbest", watched)
    code, out, err = cli("translate", "-m", toy_checkpoint, "--batch-size", "1",
                         "-i", source, "-o", tmp_path / "link.en")  # fmt: skip
    assert code == 0, err
    assert seen == [("old\n", 1)] * 3  # the old file whole while the new one is written
    assert len(read_lines(old_output)) == 3
    assert (tmp_path / "link.en").is_symlink()  # written through the link, not over it
    assert old_output.stat().st_mode & 0o777 == 0o640
    assert temporary_files(tmp_path) == []


def translating_into(output: Path, checkpoint: Path) -> subprocess.Popen:
    """A translate process writing to `output`, once it has opened its temp file there;
    it waits for more lines on its stdin."""
    process = subprocess.Popen(
        [sys.executable, "-m", "seq2seq", "translate", "-m", checkpoint, "-o", output],
        stdin=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT,
    )  # fmt: skip
    process.stdin.write(b"Ein Hund.\n")
    process.stdin.flush()
    deadline = time.monotonic() + 120
    while not temporary_files(output.parent):
        assert process.poll() is None, process.stderr.read().decode()
        assert time.monotonic() < deadline, "translate never opened its output"
        time.sleep(0.05)
    return process


def test_temp_files_of_killed_writers_are_removed_by_the_next_write(
    tmp_path: Path, toy_checkpoint: Path
) -> None:
    """A translate killed with -9 cannot remove its temp file; the next write of the same
    output does, and leaves the temp files of writers still running alone."""
    output = tmp_path / "out.en"
    killed = translating_into(output, toy_checkpoint)
    killed.kill()
    killed.wait()
    (orphan,) = temporary_files(tmp_path)
    assert str(killed.pid) in orphan
    alive = tmp_path / f".out.en.{os.getpid()}-0000.tmp"  # a writer that still runs
    alive.write_text("partial")
    source = tmp_path / "in.de"
    source.write_text("Ein Mann.\n", encoding="utf-8")
    code = subprocess.run(
        [sys.executable, "-m", "seq2seq", "translate", "-m", toy_checkpoint, "-i", source,
         "-o", output], capture_output=True, cwd=ROOT, timeout=300,
    ).returncode  # fmt: skip
    assert code == 0
    assert temporary_files(tmp_path) == [alive.name]
    assert len(read_lines(output)) == 1


def test_sigterm_removes_the_temp_file_as_ctrl_c_does(
    tmp_path: Path, toy_checkpoint: Path, old_output: Path
) -> None:
    """SIGTERM while translate writes its output: exit 143 with one line, the old output
    whole, no temp file left."""
    process = translating_into(old_output, toy_checkpoint)
    process.terminate()
    assert process.wait(timeout=60) == 143
    assert process.stderr.read().decode() == "stopped by SIGTERM\n"
    process.stdin.close()
    assert old_output.read_text(encoding="utf-8") == "old\n"
    assert temporary_files(tmp_path) == []


def test_a_failed_command_leaves_the_old_output(
    tmp_path: Path, toy_checkpoint: Path, old_output: Path, cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bad input on line 3 (exit 2), then Ctrl-C on line 2 (exit 130): the first lines were
    written, yet the old output stays whole and no temporary file is left behind."""
    source = tmp_path / "in.de"
    source.write_bytes(b"Ein Hund.\nEin Mann.\nEine \xff Frau.\n")
    args = ["translate", "-m", toy_checkpoint, "--batch-size", "1", "-i", source, "-o", old_output]
    code, out, err = cli(*args)
    one_error_line(code, err, "in.de:3", "invalid UTF-8")
    translate_nbest = Translator.translate_nbest

    def interrupted(self, lines, decode=None):
        if lines == ["Ein Mann."]:
            raise KeyboardInterrupt
        return translate_nbest(self, lines, decode)

    monkeypatch.setattr(Translator, "translate_nbest", interrupted)
    assert cli(*args)[0] == 130
    assert old_output.read_text(encoding="utf-8") == "old\n"
    assert temporary_files(tmp_path) == []


def test_attention_pictures_into_an_impossible_folder(toy_checkpoint: Path, tmp_path: Path, cli):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    code, out, err = cli("translate", "-m", toy_checkpoint, "--plot-attention", blocker / "att",
                         input=b"Ein Hund.\n")  # fmt: skip
    one_error_line(code, err, "cannot create")
