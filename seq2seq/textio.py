"""The command line's text streams: input lines as they arrive, chunks of them, output
formats, outputs that never overwrite an input and replace a file only once complete,
writing that stops quietly when the reader goes away, and warnings that a closed stderr
cannot stop. The path `-` is stdin or stdout."""

from __future__ import annotations

import io
import itertools
import json
import math
import os
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from seq2seq.corpus import STDIN, iter_lines, name, stdin, stdin_lines
from seq2seq.errors import UserError
from seq2seq.files import replaced_when_done, same_file
from seq2seq.run import check_not_run_file
from seq2seq.translation import Translation

if TYPE_CHECKING:
    from seq2seq.gates import GateValues  # torch: the onnxruntime path writes without it


def input_lines(path: Path | None) -> tuple[Iterator[str], str, bool]:
    """The lines of `path`, or of stdin (None or `-`) -> (lines, name for messages,
    interactive?). A terminal on stdin is interactive: a prompt before each line."""
    if not is_standard(path):
        return iter_lines(path), str(path), False
    interactive = stdin().isatty()
    return stdin_lines("> " if interactive else ""), "<stdin>", interactive


def is_standard(path: Path | None) -> bool:
    """True when `path` means stdin or stdout: not given, or `-`."""
    return path is None or str(path) == STDIN


def chunks(lines: Iterator[str], size: int) -> Iterator[list[str]]:
    """Translate as lines arrive, at most `size` at a time, never the whole input at once."""
    while chunk := list(itertools.islice(lines, size)):
        yield chunk


def check_output(path: Path | None, inputs: Iterable[Path | None]) -> None:
    """Refuse an output that is one of the inputs (`-i f.de -o f.de`, `-o f.de < f.de`,
    `-o` a checkpoint): it would be emptied before it is read; or one of a run's own
    files; or stdout when it is closed. `-` among the inputs is stdin; None is no input.
    Called before anything is opened."""
    if is_standard(path):
        stdout()
        return
    for source in inputs:
        if source is not None and same_file(path, source):
            raise UserError(
                f"{path}: is the input {name(source)}; write the output to another file"
            )
    check_not_run_file(path)


def stdout() -> TextIO:
    """Standard output; closed (`>&-`) is a UserError, not results lost in silence."""
    if sys.stdout is None:
        raise UserError("<stdout>: closed; the results are written there")
    return sys.stdout


@contextmanager
def output(path: Path | None) -> Iterator[TextIO]:
    """`path` (a file is replaced only once complete) or stdout (None or `-`). A reader
    that goes away (`| head -1`) ends the output quietly; a failing write (disk full) is a
    UserError naming the file."""
    to_file = not is_standard(path)
    opened = _replaced_when_done(path) if to_file else nullcontext(stdout())
    try:
        with opened as sink:
            yield sink
    except OSError as error:
        if not to_file:  # so that Python's flush of stdout at exit does not fail again
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        if isinstance(error, BrokenPipeError):
            return
        where = path if to_file else "<stdout>"
        raise UserError(f"{where}: cannot write: {error.strerror or error}") from None


def print_result(text: str) -> None:
    """One result on stdout (a report, a path), under `output`'s rules."""
    with output(None) as sink:
        sink.write(text + "\n")
        sink.flush()  # here, where a failure is reported, not at exit


@contextmanager
def _replaced_when_done(path: Path) -> Iterator[TextIO]:
    """Text written to a temp file that replaces `path` at the end (files.py)."""
    with replaced_when_done(path, durable=True) as raw:
        sink = io.TextIOWrapper(raw, encoding="utf-8")
        try:
            yield sink
        finally:
            sink.detach()  # flushes; the raw handle stays open for replaced_when_done


def strict_json(record: Any) -> str:
    """Strict JSON on one line: NaN and infinities become null (json.dumps would write
    NaN/Infinity, which JSON parsers such as jq reject)."""
    return json.dumps(finite(record), ensure_ascii=False, allow_nan=False)


def finite(value: Any) -> Any:
    """The value with NaN and infinities (nested too) as None, which JSON can carry."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [finite(item) for item in value]
    return value


def format_candidates(
    line: int, candidates: list[Translation], nbest: int, scores: bool, as_json: bool
) -> str:
    """The output line(s) of input line number `line` (from 1)."""
    if as_json:
        record = [translation_record(c) for c in candidates]
        best = record[0] if nbest == 1 else {**record[0], "nbest": record}
        return strict_json({"line": line, **best}) + "\n"
    if nbest > 1:
        return "".join(
            f"{line}\t{rank}\t{c.score:.4f}\t{c.text}\n" for rank, c in enumerate(candidates, 1)
        )
    best = candidates[0]
    return f"{best.score:.4f}\t{best.text}\n" if scores else best.text + "\n"


def translation_record(translation: Translation) -> dict[str, object]:
    """One translation as JSON data (`translate --json`, the server's answers)."""
    return {
        "translation": translation.text,
        "score": round(translation.score, 4),
        "tokens": translation.tokens,
        "source_tokens": translation.source_tokens,
        "alignment": translation.alignment(),
        **({"gates": gate_record(translation.gates)} if translation.gates else {}),
    }


def gate_record(gates: GateValues) -> dict[str, list[float]]:
    """Encoder gate values for --json: channel weights, and per source position (<sos>,
    tokens, <eos>) the temporal weights of a CBAM gate."""
    record = {"channel": [round(v, 4) for v in gates.channel.tolist()]}
    if gates.temporal is not None:
        record["temporal"] = [round(v, 4) for v in gates.temporal.tolist()]
    return record


SCORE_KEYS = ("bleu", "chrf", "tokenized_bleu", "perplexity", "free_running_perplexity")


def rounded(record: dict[str, object]) -> dict[str, object]:
    """A record for --json with the digits the text report prints: scores and
    perplexities to 2 decimals, losses and other fractional numbers to 4."""
    return {
        key: round(value, 2 if key in SCORE_KEYS else 4) if isinstance(value, float) else value
        for key, value in record.items()
    }
