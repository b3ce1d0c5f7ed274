"""files.py: temp files of dead writers swept by one rule, folders made with one error
line, outputs through a link to a pipe."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from seq2seq.errors import UserError
from seq2seq.files import make_folder, remove_orphans, same_file, write_atomic


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
