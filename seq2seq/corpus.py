"""Reading raw text: plain or gzipped UTF-8 files, one sentence per line.

Lines are split on '\\n' only (as `wc -l` counts them), so a U+2028 or U+0085 inside
a sentence never shifts the alignment between a source file and its target file. A
UTF-8 byte order mark at the start of a file is not text and is dropped.

A parallel corpus comes in one of two layouts (`data.format`): two line-aligned files
per split, `{split}.{src_lang}` and `{split}.{trg_lang}`, or one tab-separated file,
`{split}.tsv`, with `source<TAB>target` on every line. Training, validation, the
benchmark and the result scripts all read a split through `read_split`. The path `-`
is stdin.
"""

from __future__ import annotations

import codecs
import gzip
import io
import itertools
import os
import sys
import zlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, TextIO

from seq2seq.errors import UserError, to_stderr
from seq2seq.files import STDIN, replaced_when_done, same_file
from seq2seq.run import check_not_run_file

if TYPE_CHECKING:  # config.py reads a config from stdin through this module
    from seq2seq.config import DataConfig

TSV_SUFFIXES = (".tsv", ".tsv.gz")


def iter_lines(path: str | Path) -> Iterator[str]:
    """Yield the lines of a text file without their line ending; invalid UTF-8 names file:line.
    Any readable path but a folder is read once, from start to end: a named pipe, `<(cmd)`
    and /dev/stdin as well as a file."""
    if str(path) == STDIN:
        yield from stdin_lines()
        return
    path = Path(path)
    number = 0
    try:
        with open(path, "rb") as raw:
            handle = gzip.open(raw) if path.suffix == ".gz" else raw
            for number, line in enumerate(without_bom(handle), 1):
                yield decode_line(line, f"{path}:{number}")
    except FileNotFoundError:
        raise UserError(f"{path}: file not found") from None
    except (gzip.BadGzipFile, EOFError, zlib.error) as error:
        raise UserError(f"{path}: damaged gzip file after line {number}: {error}") from None
    except OSError as error:  # a folder, no permission, a read error
        raise UserError(f"{path}: cannot read: {error.strerror or error}") from None


def without_bom(lines: Iterable[bytes]) -> Iterator[bytes]:
    """The lines with a UTF-8 byte order mark (which some Windows editors write) removed
    from the first: it would become part of the first sentence's first word."""
    lines = iter(lines)
    first = next(lines, None)
    if first is not None:
        yield first.removeprefix(codecs.BOM_UTF8)
        yield from lines


def name(path: str | Path) -> str:
    """How messages name a file: `<stdin>` for `-`."""
    return "<stdin>" if str(path) == STDIN else str(path)


def stdin_lines(prompt: str = "") -> Iterator[str]:
    """Standard input's lines, read as `iter_lines` reads a file's, each as soon as it
    arrives; `prompt` goes to stderr before each read (a person at a terminal types them)."""
    source = stdin()

    def read() -> bytes:
        if prompt:
            to_stderr(prompt)
        return source.readline()

    for number, raw in enumerate(without_bom(iter(read, b"")), 1):
        yield decode_line(raw, f"<stdin>:{number}")


def stdin() -> BinaryIO:
    """Standard input's bytes; closed (`<&-`) is a UserError, not a crash."""
    if sys.stdin is None:
        raise UserError("<stdin>: closed; pipe the text in or name a file")
    return sys.stdin.buffer


def decode_line(raw: bytes, where: str) -> str:
    """UTF-8 bytes of one line (ending included) -> text without the ending."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise UserError(f"{where}: invalid UTF-8 at byte {error.start}") from None
    return text.rstrip("\n").removesuffix("\r")


def read_lines(path: str | Path) -> list[str]:
    return list(iter_lines(path))


def split_path(folder: str | Path, split: str, lang: str) -> Path:
    """`{folder}/{split}.{lang}`, or its `.gz` twin when only that exists."""
    plain = Path(folder) / f"{split}.{lang}"
    gzipped = plain.with_name(plain.name + ".gz")
    return gzipped if gzipped.exists() and not plain.exists() else plain


def read_parallel(src_path: Path, trg_path: Path) -> tuple[list[str], list[str]]:
    """Both sides of a parallel corpus; their line counts must agree."""
    src_lines, trg_lines = read_lines(src_path), read_lines(trg_path)
    check_aligned(src_path, src_lines, trg_path, trg_lines)
    return src_lines, trg_lines


def check_aligned(
    first: str | Path, first_lines: list[str], second: str | Path, second_lines: list[str]
) -> None:
    """Two line-aligned texts must have as many lines."""
    if len(first_lines) != len(second_lines):
        raise UserError(
            f"{name(first)} has {len(first_lines)} lines but {name(second)} has "
            f"{len(second_lines)}: "
            "parallel files must have one line per sentence pair"
        )


def read_tsv(path: str | Path) -> tuple[list[str], list[str]]:
    """Both sides of a tab-separated parallel corpus: exactly one tab on every line (an
    empty pair is a lone tab, which training skips and counts like an empty line pair)."""
    sources, targets = [], []
    for number, line in enumerate(iter_lines(path), 1):
        fields = line.split("\t")
        if len(fields) != 2:
            found = "no tab" if len(fields) == 1 else f"{len(fields) - 1} tabs"
            raise UserError(f"{name(path)}:{number}: expected source<TAB>target, found {found}")
        sources.append(fields[0])
        targets.append(fields[1])
    return sources, targets


def tsv_path(folder: str | Path, split: str) -> Path:
    """`{folder}/{split}.tsv` or its `.gz` twin; a split named with its extension as is."""
    if split.endswith(TSV_SUFFIXES):
        return Path(folder) / split
    return split_path(folder, split, "tsv")


def read_split(
    data: DataConfig, split: str, folder: str | Path | None = None
) -> tuple[list[str], list[str]]:
    """(sources, targets) of a split in the layout of `data.format`, from `folder`
    (default `data.dir`)."""
    folder = data.dir if folder is None else folder
    if data.format == "tsv":
        return read_tsv(tsv_path(folder, split))
    src, trg = (split_path(folder, split, lang) for lang in (data.src_lang, data.trg_lang))
    return read_parallel(src, trg)


# -- the commands' streams: input as it arrives, outputs that never overwrite an input --
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
