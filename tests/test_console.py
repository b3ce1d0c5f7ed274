"""Messages on stderr (console.py, through errors.to_stderr): a broken or closed stderr
never stops the work, and never sends a message to stdout."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, changed_checkpoint


@pytest.fixture
def warns_on_every_line(tmp_path: Path, toy_checkpoint: Path) -> tuple[Path, Path]:
    """(checkpoint, source): each of the 300 lines is longer than max_source_length 3,
    so each gives a warning on stderr."""
    short = changed_checkpoint(
        toy_checkpoint,
        tmp_path / "short.pt",
        lambda p: p["config"]["decode"].update(max_source_length=3),
    )
    source = tmp_path / "in.de"
    source.write_text("Ein Hund läuft im Park.\n" * 300, encoding="utf-8")
    return short, source


def translated_every_line(out: str) -> None:
    lines = out.splitlines()
    assert len(lines) == 300 and len(set(lines)) == 1, lines[:3]
    assert "warning" not in lines[0] and lines[0]


def test_a_broken_stderr_never_stops_translation(warns_on_every_line) -> None:
    """stderr a pipe whose reader is gone: each warning fails with EPIPE, and all 300
    lines are still translated."""
    short, source = warns_on_every_line
    command = [sys.executable, "-m", "seq2seq", "translate", "-m", short, "--beam", "1",
               "-i", source]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONIOENCODING": "utf-8"}
    reader, writer = os.pipe()
    os.close(reader)
    try:
        result = subprocess.run(command, stdout=subprocess.PIPE, stderr=writer, cwd=ROOT, env=env,
                                timeout=300)  # fmt: skip
    finally:
        os.close(writer)
    assert result.returncode == 0
    translated_every_line(result.stdout.decode("utf-8"))


def test_a_closed_stderr_never_sends_messages_to_stdout(
    warns_on_every_line, tmp_path: Path, cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With file descriptor 2 closed (`2>&-`) Python sets sys.stderr to None, and
    print(file=None) would write to stdout: neither warnings nor errors may land there."""
    short, source = warns_on_every_line
    monkeypatch.setattr(sys, "stderr", None)
    code, out, err = cli("translate", "-m", short, "--beam", "1", "-i", source)
    assert code == 0
    translated_every_line(out)
    code, out, err = cli("translate", "-m", tmp_path / "missing.pt", "-i", source)
    assert (code, out) == (2, "")
