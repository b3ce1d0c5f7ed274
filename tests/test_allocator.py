"""The glibc malloc settings: applied at the command line's start-up on glibc only, and
never over a setting the user made with glibc's own environment variable."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from seq2seq import allocator, cli

ON_GLIBC = platform.libc_ver()[0] == "glibc"
PROBE = "from seq2seq.allocator import tune_malloc; print(' '.join(tune_malloc()))"


def applied(**env: str) -> list[str]:
    """What tune_malloc applies in a fresh process with these environment variables."""
    clean = {k: v for k, v in os.environ.items() if k not in allocator.SETTINGS}
    result = subprocess.run(
        [sys.executable, "-c", PROBE], env={**clean, **env}, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


@pytest.mark.skipif(not ON_GLIBC, reason="glibc's mallopt")
def test_every_setting_is_applied_on_glibc() -> None:
    assert allocator.glibc() is not None
    assert applied() == list(allocator.SETTINGS)


@pytest.mark.skipif(not ON_GLIBC, reason="glibc's mallopt")
def test_a_setting_the_user_made_is_kept() -> None:
    assert applied(MALLOC_MMAP_THRESHOLD_="4194304") == ["MALLOC_TRIM_THRESHOLD_"]


def test_nothing_is_applied_without_glibc(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(allocator, "glibc", lambda: None)
    assert allocator.tune_malloc() == []


def test_the_command_line_applies_them_at_start_up(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    monkeypatch.setattr(cli, "tune_malloc", lambda: calls.append(True) or [])
    monkeypatch.setattr(sys, "argv", ["seq2seq", "--help"])
    with pytest.raises(SystemExit):
        cli.main()
    assert calls == [True]
