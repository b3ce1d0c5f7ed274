"""Reading raw text: plain or gzipped UTF-8 files, one sentence per line.

Lines are split on '\\n' only (as `wc -l` counts them), so a U+2028 or U+0085 inside
a sentence never shifts the alignment between a source file and its target file. A
UTF-8 byte order mark at the start of a file is not text and is dropped.
"""

from __future__ import annotations

import codecs
import gzip
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path

from seq2seq.errors import UserError


def iter_lines(path: str | Path) -> Iterator[str]:
    """Yield the lines of a text file without their line ending; invalid UTF-8 names file:line."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    opener = gzip.open if path.suffix == ".gz" else open
    number = 0
    try:
        with opener(path, "rb") as handle:
            for number, raw in enumerate(without_bom(handle), 1):
                yield decode_line(raw, f"{path}:{number}")
    except (gzip.BadGzipFile, EOFError, zlib.error) as error:
        raise UserError(f"{path}: damaged gzip file after line {number}: {error}") from None


def without_bom(lines: Iterable[bytes]) -> Iterator[bytes]:
    """The lines with a UTF-8 byte order mark (which some Windows editors write) removed
    from the first: it would become part of the first sentence's first word."""
    lines = iter(lines)
    first = next(lines, None)
    if first is not None:
        yield first.removeprefix(codecs.BOM_UTF8)
        yield from lines


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
    if len(src_lines) != len(trg_lines):
        raise UserError(
            f"{src_path} has {len(src_lines)} lines but {trg_path} has {len(trg_lines)}: "
            "parallel files must have one line per sentence pair"
        )
    return src_lines, trg_lines
