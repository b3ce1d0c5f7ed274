"""Corpus reading: plain and gzipped UTF-8, split on '\\n' only, errors that name file:line;
the two layouts of a parallel corpus (two files, or one tab-separated file); `-` is stdin."""

from __future__ import annotations

import gzip
import io
import os
import sys
import threading
from pathlib import Path

import pytest
from conftest import TOY_DATA
from hypothesis import given
from hypothesis import strategies as st

from seq2seq.config import DataConfig
from seq2seq.corpus import (
    decode_line,
    read_lines,
    read_parallel,
    read_split,
    read_tsv,
    split_path,
    stdin_lines,
    tsv_path,
)
from seq2seq.errors import UserError

LINES = ["Ein Mann fährt Fahrrad.", "", "Zwei Hunde spielen im Schnee.", "Ende"]


def write_bytes(path: Path, data: bytes) -> Path:
    if path.suffix == ".gz":
        data = gzip.compress(data, mtime=0)
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("name", ["plain.txt", "zipped.txt.gz"])
def test_reads_plain_and_gzipped(tmp_path: Path, name: str) -> None:
    path = write_bytes(tmp_path / name, "\n".join(LINES).encode("utf-8") + b"\n")
    assert read_lines(path) == LINES


def test_last_line_without_newline_is_kept(tmp_path: Path) -> None:
    path = write_bytes(tmp_path / "a.txt", b"one\ntwo")
    assert read_lines(path) == ["one", "two"]


def test_empty_file_has_no_lines(tmp_path: Path) -> None:
    assert read_lines(write_bytes(tmp_path / "empty.txt", b"")) == []


def test_only_newline_splits_a_line(tmp_path: Path) -> None:
    # str.splitlines() would split at every one of these; `wc -l` counts 3 lines.
    separators = ["\u2028", "\u2029", "\u0085", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e"]
    first = "a" + "b".join(separators) + "z"
    data = f"{first}\nzwei\u2028Zeilen?\nnein\n".encode()
    path = write_bytes(tmp_path / "odd.txt", data)
    assert read_lines(path) == [first, "zwei\u2028Zeilen?", "nein"]


def test_crlf_endings_are_stripped(tmp_path: Path) -> None:
    path = write_bytes(tmp_path / "dos.txt", b"eins\r\nzwei\r\n\r\ndrei")
    assert read_lines(path) == ["eins", "zwei", "", "drei"]


def test_a_carriage_return_inside_a_line_is_kept() -> None:
    assert decode_line(b"a\rb\r\n", "x:1") == "a\rb"


@pytest.mark.parametrize("name", ["bad.txt", "bad.txt.gz"])
def test_invalid_utf8_names_file_and_line(tmp_path: Path, name: str) -> None:
    path = write_bytes(tmp_path / name, b"gut\nauch gut\nkaputt \xff\xfe hier\nnie gelesen\n")
    with pytest.raises(UserError) as caught:
        read_lines(path)
    assert str(caught.value).startswith(f"{path}:3: invalid UTF-8")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="file not found") as caught:
        read_lines(tmp_path / "missing.de")
    assert str(tmp_path / "missing.de") in str(caught.value)


@pytest.mark.parametrize(
    "data", [b"this is not gzip\n", gzip.compress(b"line\n" * 1000, mtime=0)[:-30]]
)
def test_damaged_gzip_is_a_user_error(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "damaged.de.gz"
    path.write_bytes(data)
    with pytest.raises(UserError, match="damaged gzip") as caught:
        read_lines(path)
    assert str(path) in str(caught.value)


def test_mismatched_parallel_files_name_both_files_and_counts(tmp_path: Path) -> None:
    src = write_bytes(tmp_path / "train.de", b"a\nb\nc\n")
    trg = write_bytes(tmp_path / "train.en", b"a\nb\n")
    with pytest.raises(UserError) as caught:
        read_parallel(src, trg)
    message = str(caught.value)
    assert f"{src} has 3 lines" in message and f"{trg} has 2" in message


def test_parallel_counts_lines_like_wc(tmp_path: Path) -> None:
    # A U+2028 in the source must not shift it against the target.
    src = write_bytes(tmp_path / "s.de", "eins\u2028zwei\ndrei\n".encode())
    trg = write_bytes(tmp_path / "s.en", b"one two\nthree\n")
    assert read_parallel(src, trg) == (["eins\u2028zwei", "drei"], ["one two", "three"])


def test_split_path_prefers_plain_and_falls_back_to_gz(tmp_path: Path) -> None:
    assert split_path(tmp_path, "train", "de") == tmp_path / "train.de"  # neither exists
    write_bytes(tmp_path / "train.de.gz", b"x\n")
    assert split_path(tmp_path, "train", "de") == tmp_path / "train.de.gz"
    write_bytes(tmp_path / "train.de", b"x\n")
    assert split_path(tmp_path, "train", "de") == tmp_path / "train.de"


line_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\n\r"), max_size=20
)


@given(lines=st.lists(line_text, max_size=12), gz=st.booleans(), crlf=st.booleans())
def test_lines_round_trip(tmp_path_factory: pytest.TempPathFactory, lines, gz, crlf) -> None:
    ending = "\r\n" if crlf else "\n"
    folder = tmp_path_factory.mktemp("roundtrip")
    data = "".join(line + ending for line in lines).encode()
    path = write_bytes(folder / ("c.gz" if gz else "c.txt"), data)
    assert read_lines(path) == lines


# -- one tab-separated file per split -------------------------------------------------------


@pytest.mark.parametrize("name", ["pairs.tsv", "pairs.tsv.gz"])
def test_tsv_gives_both_sides(tmp_path: Path, name: str) -> None:
    data = "Ein Hund.\tA dog.\r\n\t\nzwei\u2028Zeilen?\tno\n\tonly a target".encode()
    path = write_bytes(tmp_path / name, data)
    assert read_tsv(path) == (["Ein Hund.", "", "zwei\u2028Zeilen?", ""],
                              ["A dog.", "", "no", "only a target"])  # fmt: skip


@pytest.mark.parametrize(
    ("line", "found"), [("no tab here", "no tab"), ("a\tb\tc", "2 tabs"), ("", "no tab")]
)
def test_a_tsv_line_without_exactly_one_tab_names_file_and_line(
    tmp_path: Path, line: str, found: str
) -> None:
    path = write_bytes(tmp_path / "bad.tsv", f"a\tb\nc\td\n{line}\ne\tf\n".encode())
    with pytest.raises(UserError) as caught:
        read_tsv(path)
    assert str(caught.value) == f"{path}:3: expected source<TAB>target, found {found}"


def test_both_layouts_read_the_same_pairs(tmp_path: Path) -> None:
    """A TSV made from the two files (as `paste` makes it) is the same corpus."""
    files = DataConfig(dir=str(TOY_DATA), src_lang="de", trg_lang="en")
    src, trg = read_split(files, "train")
    lines = "".join(f"{s}\t{t}\n" for s, t in zip(src, trg, strict=True))
    write_bytes(tmp_path / "train.tsv.gz", lines.encode())
    tsv = files.model_copy(update={"dir": str(tmp_path), "format": "tsv"})
    assert read_split(tsv, "train") == (src, trg) and len(src) == 400
    assert read_split(tsv, "train.tsv.gz") == (src, trg)
    # The scripts name the data folder on their command line instead of data.dir.
    elsewhere = tsv.model_copy(update={"dir": "no/such/folder"})
    assert read_split(elsewhere, "train", folder=tmp_path) == (src, trg)


def test_tsv_path_adds_the_extension_unless_given(tmp_path: Path) -> None:
    assert tsv_path(tmp_path, "train") == tmp_path / "train.tsv"  # neither exists
    write_bytes(tmp_path / "train.tsv.gz", b"a\tb\n")
    assert tsv_path(tmp_path, "train") == tmp_path / "train.tsv.gz"
    assert tsv_path(tmp_path, "news.tsv") == tmp_path / "news.tsv"
    assert tsv_path(tmp_path, "news.tsv.gz") == tmp_path / "news.tsv.gz"


def test_dash_reads_stdin_and_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"a\tb\r\nc d\n")))
    with pytest.raises(UserError, match=r"^<stdin>:2: expected source<TAB>target"):
        read_tsv("-")
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"eins\n\xff\n")))
    with pytest.raises(UserError, match=r"^<stdin>:2: invalid UTF-8"):
        read_lines("-")


def test_stdin_prompts_before_each_line_and_reads_no_further(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A person at a terminal sees `> ` before each line they type, and each line is
    translated before the next one is read."""
    first = b"\xef\xbb\xbfeins\r\n"
    source = io.BytesIO(first + b"zwei\n")
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(source))
    lines = stdin_lines("> ")
    assert next(lines) == "eins" and capsys.readouterr().err == "> "
    assert source.tell() == len(first)
    assert list(lines) == ["zwei"] and capsys.readouterr().err == "> > "  # and the end


@pytest.mark.parametrize("name", ["fifo.txt", "fifo.txt.gz"])
def test_a_named_pipe_is_read_as_a_stream(tmp_path: Path, name: str) -> None:
    """Any readable path but a folder: a FIFO (`mkfifo`, `<(cmd)`, /dev/stdin) is read
    once, from start to end, as a file is."""
    path = tmp_path / name
    os.mkfifo(path)
    data = write_bytes(tmp_path / f"data{path.suffix}", "\n".join(LINES).encode() + b"\n")
    # A daemon: were the pipe never opened for reading, the writer would wait forever.
    threading.Thread(target=lambda: path.write_bytes(data.read_bytes()), daemon=True).start()
    assert read_lines(path) == LINES


def test_a_folder_or_closed_stdin_is_a_user_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(UserError, match=f"^{tmp_path}: cannot read: Is a directory"):
        read_lines(tmp_path)
    monkeypatch.setattr(sys, "stdin", None)  # Python's stdin when file descriptor 0 is closed
    with pytest.raises(UserError, match="^<stdin>: closed"):
        read_lines("-")
