"""The glibc malloc settings: applied when `train` starts, on glibc only, and never over a
setting the user made with glibc's own environment variable."""

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


@pytest.mark.parametrize(
    ("command", "applies"),
    [
        (["train", "--config", "missing.yaml"], True),
        (["translate", "--model", "missing.pt"], False),
        (["evaluate", "--model", "missing.pt", "--src", "a", "--ref", "b"], False),
        (["serve", "--model", "missing.pt"], False),
    ],
)
def test_training_applies_them_and_decoding_does_not(
    monkeypatch: pytest.MonkeyPatch, command: list[str], applies: bool
) -> None:
    """A fixed 1 MiB mmap threshold bounds training's memory but costs decoding at batch 64
    a third of its speed (every [64,V] tensor a fresh mapping): docs/performance.md, "Memory"."""
    calls = []
    monkeypatch.setattr(cli, "tune_malloc", lambda: calls.append(True) or [])
    monkeypatch.setattr(sys, "argv", ["seq2seq", *command])
    with pytest.raises(SystemExit) as stopped:
        cli.main()
    assert stopped.value.code == 2, "the missing file is refused"
    assert calls == ([True] if applies else [])
