"""The command line's text streams: input lines as they arrive, chunks of them, output
formats, and writing that stops quietly when the reader goes away."""

from __future__ import annotations

import itertools
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

from seq2seq.corpus import decode_line, iter_lines
from seq2seq.errors import UserError
from seq2seq.gates import GateValues
from seq2seq.translator import Translation


def input_lines(path: Path | None) -> tuple[Iterator[str], str, bool]:
    """The lines of `path`, or of stdin -> (lines, name for messages, interactive?).
    A terminal on stdin is interactive: a prompt before each line."""
    if path is not None:
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
    sink = open_output(path) if path else sys.stdout
    try:
        yield sink
    except BrokenPipeError:
        # Point stdout at /dev/null so that Python's flush at exit does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except OSError as error:
        raise UserError(f"{path or '<stdout>'}: cannot write: {error.strerror}") from None
    finally:
        if path:
            sink.close()


def format_candidates(
    index: int, candidates: list[Translation], nbest: int, scores: bool, as_json: bool
) -> str:
    """The output line(s) of one input line."""
    if as_json:
        record = [translation_record(c) for c in candidates]
        best = record[0] if nbest == 1 else {**record[0], "nbest": record}
        return json.dumps({"index": index, **best}, ensure_ascii=False) + "\n"
    if nbest > 1:
        return "".join(
            f"{index}\t{rank}\t{c.score:.4f}\t{c.text}\n" for rank, c in enumerate(candidates, 1)
        )
    best = candidates[0]
    return f"{best.score:.4f}\t{best.text}\n" if scores else best.text + "\n"


def translation_record(translation: Translation) -> dict[str, object]:
    """One translation as JSON data (`translate --json`, the server's answers)."""
    return {
        "translation": translation.text,
        "score": translation.score,
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
