"""What a person sees on stderr: messages at the chosen verbosity (`--quiet`,
`--verbose`), progress bars on a terminal or progress lines elsewhere, and a
transcript of training's messages in the run folder (train.log).

Results never go through here: they go to stdout or to a file.
"""

from __future__ import annotations

import sys
from pathlib import Path

from seq2seq.errors import to_stderr
from seq2seq.files import append_line

QUIET, NORMAL, VERBOSE = 0, 1, 2
_verbosity = NORMAL
_transcript: Path | None = None


def set_verbosity(level: int) -> None:
    global _verbosity
    _verbosity = level


def info(message: str) -> None:
    """A message for a person: on stderr unless --quiet; always in the transcript."""
    _show(message, _verbosity >= NORMAL, transcribe=True)


def detail(message: str) -> None:
    """More than a person usually wants: on stderr (and in the transcript) with --verbose."""
    shown = _verbosity >= VERBOSE
    _show(message, shown, transcribe=shown)


def record_line(kind: str, values: dict[str, object]) -> str:
    """A metrics record as one readable line: `train: step 50, loss 4.123, ...`."""
    shown = (
        f"{key} {value:.4g}" if isinstance(value, float) else f"{key} {value}"
        for key, value in values.items()
    )
    return f"{kind}: {', '.join(shown)}"


def warn(message: str) -> None:
    """Something the user should act on: shown even with --quiet."""
    _show(f"warning: {message}", True, transcribe=True)


def progress_enabled() -> bool:
    """Progress bars redraw a line, which only a terminal shows well; a log file or a
    pipe would fill with their frames."""
    return _verbosity >= NORMAL and _on_terminal()


def progress_line(message: str) -> None:
    """Where no progress bar is drawn (stderr is a file or a pipe), a line now and then
    says that the work goes on; unless --quiet. Always in the transcript."""
    _show(message, _verbosity >= NORMAL and not _on_terminal(), transcribe=True)


def _on_terminal() -> bool:
    return sys.stderr is not None and sys.stderr.isatty()


def start_transcript(path: Path) -> None:
    """Append every message from now on to `path` (a new run starts without one)."""
    global _transcript
    _transcript = path


def stop_transcript() -> None:
    global _transcript
    _transcript = None


def _show(message: str, shown: bool, transcribe: bool) -> None:
    if shown:
        to_stderr(f"{message}\n")
    if transcribe and _transcript is not None:
        append_line(_transcript, message)
