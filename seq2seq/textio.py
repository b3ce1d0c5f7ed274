"""The command line's text streams: input lines as they arrive, chunks of them, output
formats, and writing that stops quietly when the reader goes away. The path `-` is
stdin or stdout."""

from __future__ import annotations

import itertools
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

from seq2seq.corpus import STDIN, decode_line, iter_lines
from seq2seq.errors import UserError
from seq2seq.gates import GateValues
from seq2seq.translator import Translation


def input_lines(path: Path | None) -> tuple[Iterator[str], str, bool]:
    """The lines of `path`, or of stdin (None or `-`) -> (lines, name for messages,
    interactive?). A terminal on stdin is interactive: a prompt before each line."""
    if not is_standard(path):
        return iter_lines(path), str(path), False
    interactive = sys.stdin.isatty()
    numbered = enumerate(_stdin_lines(interactive), 1)
    return (decode_line(raw, f"<stdin>:{n}") for n, raw in numbered), "<stdin>", interactive


def _stdin_lines(interactive: bool) -> Iterator[bytes]:
    while True:
        if interactive:
            sys.stderr.write("> ")
            sys.stderr.flush()
        raw = sys.stdin.buffer.readline()
        if not raw:
            return
        yield raw


def is_standard(path: Path | None) -> bool:
    """True when `path` means stdin or stdout: not given, or `-`."""
    return path is None or str(path) == STDIN


def chunks(lines: Iterator[str], size: int) -> Iterator[list[str]]:
    """Translate as lines arrive, at most `size` at a time, never the whole input at once."""
    while chunk := list(itertools.islice(lines, size)):
        yield chunk


def open_output(path: Path) -> TextIO:
    try:
        return open(path, "w", encoding="utf-8")  # noqa: SIM115 (the caller closes it)
    except OSError as error:
        raise UserError(f"{path}: cannot write: {error.strerror or error}") from None


@contextmanager
def output(path: Path | None) -> Iterator[TextIO]:
    """`path` or stdout. A reader that goes away (`| head -1`) ends the output quietly;
    a failing write (disk full) is a UserError naming the file."""
    to_file = not is_standard(path)
    sink = open_output(path) if to_file else sys.stdout
    try:
        yield sink
    except BrokenPipeError:
        # Point stdout at /dev/null so that Python's flush at exit does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except OSError as error:
        raise UserError(
            f"{path if to_file else '<stdout>'}: cannot write: {error.strerror}"
        ) from None
    finally:
        if to_file:
            sink.close()


def format_candidates(
    line: int, candidates: list[Translation], nbest: int, scores: bool, as_json: bool
) -> str:
    """The output line(s) of input line number `line` (from 1)."""
    if as_json:
        record = [
            {
                "translation": c.text,
                "score": round(c.score, 4),
                "tokens": c.tokens,
                "source_tokens": c.source_tokens,
                "alignment": c.alignment(),
                **({"gates": gate_record(c.gates)} if c.gates else {}),
            }
            for c in candidates
        ]
        best = record[0] if nbest == 1 else {**record[0], "nbest": record}
        return json.dumps({"line": line, **best}, ensure_ascii=False) + "\n"
    if nbest > 1:
        return "".join(
            f"{line}\t{rank}\t{c.score:.4f}\t{c.text}\n" for rank, c in enumerate(candidates, 1)
        )
    best = candidates[0]
    return f"{best.score:.4f}\t{best.text}\n" if scores else best.text + "\n"


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
