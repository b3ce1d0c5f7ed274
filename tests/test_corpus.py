"""Corpus reading: plain and gzipped UTF-8, split on '\\n' only, errors that name file:line;
the two layouts of a parallel corpus (two files, or one tab-separated file); `-` is stdin;
byte order marks; the commands' streams: an output is never an input, a closed pipe."""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
from conftest import ROOT, TOY_DATA, data_folder, one_error_line, train_args
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


# -- training data read by `train`: line separators, invalid UTF-8, gzip --------------------------


def test_unicode_line_separators_do_not_split_lines(tmp_path: Path, cli):
    """U+2028, U+0085 and a lone \\r inside a line: counted as `wc -l` counts (by \\n)."""
    src = "Ein Hund\u2028läuft.\nEin Mann\x85schläft.\nEine Frau\rsitzt.\n" * 20
    trg = "A dog runs.\nA man sleeps.\nA woman sits.\n" * 20
    assert src.count("\n") == trg.count("\n") == 60
    code, out, err = cli(*train_args(tmp_path, data_folder(tmp_path, src, trg)))
    assert code == 0, err
    assert "training pairs: 60 (0 skipped" in err


def test_invalid_utf8_names_file_and_line_of_training_data(tmp_path: Path, cli):
    src = b"Ein Hund.\nEin \xff Mann.\n"
    code, out, err = cli(*train_args(tmp_path, data_folder(tmp_path, src, "A dog.\nA man.\n")))
    one_error_line(code, err, "train.de:2", "invalid UTF-8")


def test_truncated_gzip(tmp_path: Path, cli):
    folder = data_folder(tmp_path, "Ein Hund.\n" * 500, "A dog.\n" * 500, suffix=".gz")
    path = folder / "train.de.gz"
    path.write_bytes(path.read_bytes()[:-12])
    code, out, err = cli(*train_args(tmp_path, folder))
    one_error_line(code, err, "train.de.gz", "damaged gzip")


def test_a_gz_file_that_is_not_gzip(tmp_path: Path, cli):
    folder = data_folder(tmp_path, "Ein Hund.\n", "A dog.\n", suffix=".gz")
    (folder / "train.en.gz").write_bytes(b"A dog.\n")
    code, out, err = cli(*train_args(tmp_path, folder))
    one_error_line(code, err, "train.en.gz")


# -- byte order marks -----------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_a_byte_order_mark_is_not_text(tmp_path: Path, suffix: str) -> None:
    """Only at the start of a file: elsewhere U+FEFF is a (zero-width) character."""
    raw = "\ufeffEin Hund.\n\ufeffEin Mann.\n".encode()
    path = tmp_path / f"bom.de{suffix}"
    path.write_bytes(gzip.compress(raw) if suffix else raw)
    assert read_lines(path) == ["Ein Hund.", "\ufeffEin Mann."]


def test_a_byte_order_mark_on_stdin_is_not_text(toy_checkpoint: Path, cli) -> None:
    """The JSON output shows the source tokens as translated."""
    text = "Ein Hund läuft.\nEin Mann.\n".encode()
    args = ("translate", "-m", toy_checkpoint, "--beam", "1", "--json")
    code, plain, err = cli(*args, input=text)
    assert code == 0, err
    code, marked, err = cli(*args, input=b"\xef\xbb\xbf" + text)
    assert code == 0, err
    assert marked == plain
    assert json.loads(plain.splitlines()[0])["source_tokens"][0] == "Ein"


# -- the commands' streams: inputs are never outputs, stdin, a closed pipe ------------------------


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file below `folder` (links followed), to show that nothing changed."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def _inputs(tmp_path: Path, toy_checkpoint: Path) -> None:
    shutil.copy(toy_checkpoint, tmp_path / "a.pt")
    shutil.copy(toy_checkpoint, tmp_path / "b.pt")
    shutil.copy(TOY_DATA / "test.de", tmp_path / "f.de")
    shutil.copy(TOY_DATA / "test.en", tmp_path / "f.en")
    (tmp_path / "link.de").symlink_to(tmp_path / "f.de")
    (tmp_path / "sub").mkdir()
    os.link(tmp_path / "f.en", tmp_path / "hard.en")


OUTPUT_IS_INPUT = {
    "translate -i X -o X": (["translate", "-m", "a.pt", "-i", "f.de", "-o", "f.de"], "f.de"),
    "translate, -o a link to -i": (["translate", "-m", "a.pt", "-i", "f.de", "-o", "link.de"],
                                   "f.de"),
    "translate -o the model": (["translate", "-m", "a.pt", "-o", "sub/../a.pt"], "a.pt"),
    "evaluate -o the reference": (["evaluate", "--hyp", "f.de", "--ref", "f.en", "-o", "f.en"],
                                  "f.en"),
    "evaluate, -o a hard link to --src": (["evaluate", "-m", "a.pt", "--src", "f.en", "--ref",
                                           "f.de", "-o", "hard.en"], "f.en"),
    "average -o an input": (["average", "a.pt", "b.pt", "-o", "b.pt"], "b.pt"),
}  # fmt: skip


@pytest.mark.parametrize("case", OUTPUT_IS_INPUT, ids=list(OUTPUT_IS_INPUT))
def test_an_output_that_is_an_input_is_refused(
    case: str, tmp_path: Path, toy_checkpoint: Path, cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    _inputs(tmp_path, toy_checkpoint)
    before = snapshot(tmp_path)
    monkeypatch.chdir(tmp_path)
    args, source = OUTPUT_IS_INPUT[case]
    code, out, err = cli(*args, input=b"Ein Hund.\n")
    one_error_line(code, err, args[-1], source, "is the input")
    assert snapshot(tmp_path) == before


def test_an_output_that_is_the_file_on_stdin_is_refused(tmp_path: Path, toy_checkpoint: Path):
    """`translate -o in.de < in.de`: stdin is a file like any other input (by fstat)."""
    source = tmp_path / "in.de"
    source.write_text("Ein Hund.\n", encoding="utf-8")
    command = [sys.executable, "-m", "seq2seq", "translate", "-m", toy_checkpoint, "-o", "in.de"]
    with open(source, "rb") as stdin:
        result = subprocess.run(command, stdin=stdin, capture_output=True, cwd=tmp_path,
                                timeout=300)  # fmt: skip
    one_error_line(result.returncode, result.stderr.decode(), "in.de: is the input <stdin>")
    assert source.read_text(encoding="utf-8") == "Ein Hund.\n"


def test_stdin_closed_at_once(toy_checkpoint: Path, cli):
    code, out, err = cli("translate", "-m", toy_checkpoint, input=b"")
    assert code == 0 and out == "", err


def test_arbitrary_bytes_through_the_command(toy_checkpoint: Path, tmp_path: Path, cli):
    """Random UTF-8 text with every kind of line separator inside lines: the output file
    has as many lines as `wc -l` counts in the input."""
    alphabet = "ab Ü\u2028\x85\r\x00\u200f\U0001f600e\u0301.,;"
    generator = torch.Generator().manual_seed(0)
    picks = torch.randint(0, len(alphabet), (300, 30), generator=generator).tolist()
    text = "\n".join("".join(alphabet[i] for i in row) for row in picks) + "\n"
    source = tmp_path / "odd.de"
    source.write_text(text, encoding="utf-8")
    output = tmp_path / "odd.en"
    code, out, err = cli("translate", "-m", toy_checkpoint, "--beam", "1", "--input", source,
                         "--output", output)  # fmt: skip
    assert code == 0, err
    assert output.read_bytes().count(b"\n") == text.count("\n") == 300


def test_output_to_a_closed_pipe_exits_quietly(toy_checkpoint: Path):
    lines = "Ein Hund läuft im Park.\n" * 3000
    command = (
        f"{sys.executable} -m seq2seq translate -m {toy_checkpoint} --beam 1 --batch-size 8 "
        "| head -1; echo status=${PIPESTATUS[0]}"
    )
    result = subprocess.run(
        ["bash", "-c", command], input=lines.encode(), capture_output=True, cwd=ROOT
    )
    assert result.stdout.decode().splitlines() == ["A dog runs in the park.", "status=0"]
    assert result.stderr == b"", result.stderr.decode()
