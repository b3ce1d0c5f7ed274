"""Reliability: inputs are never outputs, an output file is replaced only when complete,
a closed stderr never stops the work, crafted checkpoints are refused before they cost
anything, byte order marks are not text, and JSON stays strict.

Each case: one line on stderr naming what is wrong (exit 2) and nothing on disk changed,
or a normal result."""

from __future__ import annotations

import gzip
import json
import math
import os
import shutil
import struct
import subprocess
import sys
import time
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from conftest import ROOT, TOY_DATA
from test_hardening import one_error_line

from seq2seq import checkpoint, textio
from seq2seq.checkpoint import load_checkpoint, save_checkpoint
from seq2seq.config import check_spacy_name
from seq2seq.corpus import read_lines
from seq2seq.errors import UserError
from seq2seq.translator import Translation, Translator


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file below `folder` (links followed), to show that nothing changed."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def temporary_files(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]


def changed_checkpoint(source: Path, target: Path, change) -> Path:
    """A copy of the checkpoint at `source` with change(payload) applied."""
    payload = load_checkpoint(source)
    change(payload)
    save_checkpoint(payload, target)
    return target


# -- inputs are never outputs -----------------------------------------------------------------


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


@pytest.fixture
def old_output(tmp_path: Path) -> Path:
    """An output file from an earlier run, with its own permissions, reached by a link."""
    target = tmp_path / "out.en"
    target.write_text("old\n", encoding="utf-8")
    target.chmod(0o640)
    (tmp_path / "link.en").symlink_to(target)
    return target


def test_an_output_file_is_replaced_only_when_complete(
    tmp_path: Path, toy_checkpoint: Path, old_output: Path, cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "in.de"
    source.write_text("Ein Hund.\nEin Mann.\nEine Frau.\n", encoding="utf-8")
    translate_nbest = Translator.translate_nbest
    seen = []

    def watched(self, lines, decode=None):
        seen.append((old_output.read_text(encoding="utf-8"), len(temporary_files(tmp_path))))
        return translate_nbest(self, lines, decode)

    monkeypatch.setattr(Translator, "translate_nbest", watched)
    code, out, err = cli("translate", "-m", toy_checkpoint, "--batch-size", "1",
                         "-i", source, "-o", tmp_path / "link.en")  # fmt: skip
    assert code == 0, err
    assert seen == [("old\n", 1)] * 3  # the old file whole while the new one is written
    assert len(read_lines(old_output)) == 3
    assert (tmp_path / "link.en").is_symlink()  # written through the link, not over it
    assert old_output.stat().st_mode & 0o777 == 0o640
    assert temporary_files(tmp_path) == []


def translating_into(output: Path, checkpoint: Path) -> subprocess.Popen:
    """A translate process writing to `output`, once it has opened its temp file there;
    it waits for more lines on its stdin."""
    process = subprocess.Popen(
        [sys.executable, "-m", "seq2seq", "translate", "-m", checkpoint, "-o", output],
        stdin=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT,
    )  # fmt: skip
    process.stdin.write(b"Ein Hund.\n")
    process.stdin.flush()
    deadline = time.monotonic() + 120
    while not temporary_files(output.parent):
        assert process.poll() is None, process.stderr.read().decode()
        assert time.monotonic() < deadline, "translate never opened its output"
        time.sleep(0.05)
    return process


def test_temp_files_of_killed_writers_are_removed_by_the_next_write(
    tmp_path: Path, toy_checkpoint: Path
) -> None:
    """A translate killed with -9 cannot remove its temp file; the next write of the same
    output does, and leaves the temp files of writers still running alone."""
    output = tmp_path / "out.en"
    killed = translating_into(output, toy_checkpoint)
    killed.kill()
    killed.wait()
    (orphan,) = temporary_files(tmp_path)
    assert str(killed.pid) in orphan
    alive = tmp_path / f".out.en.{os.getpid()}-0000.tmp"  # a writer that still runs
    alive.write_text("partial")
    source = tmp_path / "in.de"
    source.write_text("Ein Mann.\n", encoding="utf-8")
    code = subprocess.run(
        [sys.executable, "-m", "seq2seq", "translate", "-m", toy_checkpoint, "-i", source,
         "-o", output], capture_output=True, cwd=ROOT, timeout=300,
    ).returncode  # fmt: skip
    assert code == 0
    assert temporary_files(tmp_path) == [alive.name]
    assert len(read_lines(output)) == 1


def test_sigterm_removes_the_temp_file_as_ctrl_c_does(
    tmp_path: Path, toy_checkpoint: Path, old_output: Path
) -> None:
    """SIGTERM while translate writes its output: exit 143 with one line, the old output
    whole, no temp file left."""
    process = translating_into(old_output, toy_checkpoint)
    process.terminate()
    assert process.wait(timeout=60) == 143
    assert process.stderr.read().decode() == "stopped by SIGTERM\n"
    process.stdin.close()
    assert old_output.read_text(encoding="utf-8") == "old\n"
    assert temporary_files(tmp_path) == []


def test_a_failed_command_leaves_the_old_output(
    tmp_path: Path, toy_checkpoint: Path, old_output: Path, cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bad input on line 3 (exit 2), then Ctrl-C on line 2 (exit 130): the first lines were
    written, yet the old output stays whole and no temporary file is left behind."""
    source = tmp_path / "in.de"
    source.write_bytes(b"Ein Hund.\nEin Mann.\nEine \xff Frau.\n")
    args = ["translate", "-m", toy_checkpoint, "--batch-size", "1", "-i", source, "-o", old_output]
    code, out, err = cli(*args)
    one_error_line(code, err, "in.de:3", "invalid UTF-8")
    translate_nbest = Translator.translate_nbest

    def interrupted(self, lines, decode=None):
        if lines == ["Ein Mann."]:
            raise KeyboardInterrupt
        return translate_nbest(self, lines, decode)

    monkeypatch.setattr(Translator, "translate_nbest", interrupted)
    assert cli(*args)[0] == 130
    assert old_output.read_text(encoding="utf-8") == "old\n"
    assert temporary_files(tmp_path) == []


# -- stderr ------------------------------------------------------------------------------------


@pytest.fixture
def warns_on_every_line(tmp_path: Path, toy_checkpoint: Path) -> tuple[Path, Path]:
    """(checkpoint, source): each of the 300 lines is longer than max_source_length 3,
    so each gives a warning on stderr."""
    short = changed_checkpoint(
        toy_checkpoint,
        tmp_path / "short.pt",
        lambda p: p["config"]["decode"].update(max_source_length=3),
    )
    source = tmp_path / "in.de"
    source.write_text("Ein Hund läuft im Park.\n" * 300, encoding="utf-8")
    return short, source


def translated_every_line(out: str) -> None:
    lines = out.splitlines()
    assert len(lines) == 300 and len(set(lines)) == 1, lines[:3]
    assert "warning" not in lines[0] and lines[0]


def test_a_broken_stderr_never_stops_translation(warns_on_every_line) -> None:
    """stderr a pipe whose reader is gone: each warning fails with EPIPE, and all 300
    lines are still translated."""
    short, source = warns_on_every_line
    command = [sys.executable, "-m", "seq2seq", "translate", "-m", short, "--beam", "1",
               "-i", source]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONIOENCODING": "utf-8"}
    reader, writer = os.pipe()
    os.close(reader)
    try:
        result = subprocess.run(command, stdout=subprocess.PIPE, stderr=writer, cwd=ROOT, env=env,
                                timeout=300)  # fmt: skip
    finally:
        os.close(writer)
    assert result.returncode == 0
    translated_every_line(result.stdout.decode("utf-8"))


def test_a_closed_stderr_never_sends_messages_to_stdout(
    warns_on_every_line, tmp_path: Path, cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With file descriptor 2 closed (`2>&-`) Python sets sys.stderr to None, and
    print(file=None) would write to stdout: neither warnings nor errors may land there."""
    short, source = warns_on_every_line
    monkeypatch.setattr(sys, "stderr", None)
    code, out, err = cli("translate", "-m", short, "--beam", "1", "-i", source)
    assert code == 0
    translated_every_line(out)
    code, out, err = cli("translate", "-m", tmp_path / "missing.pt", "-i", source)
    assert (code, out) == (2, "")


# -- checkpoints -------------------------------------------------------------------------------


def zeros_deflated(periods: int) -> tuple[bytes, int]:
    """A raw deflate stream of zeros, written directly rather than compressed (seconds per
    gigabyte): one fixed-Huffman block of a literal 0 and then 1 + 8 * periods copies of
    258 bytes at distance 1. -> (stream, inflated size), about 1000:1."""
    bits = [1, 1, 0]  # the last block; fixed codes (type 01, least significant bit first)

    def code(value: int, width: int) -> None:  # Huffman codes go most significant bit first
        bits.extend(value >> i & 1 for i in reversed(range(width)))

    code(0b00110000, 8)  # literal 0
    for _ in range(9):
        code(0b11000101, 8)  # length 258
        code(0, 5)  # distance 1
    data = bytes(sum(b << i for i, b in enumerate(bits[k : k + 8])) for k in range(0, 128, 8))
    # 24 bits hold the block header, the literal and one copy; then 8 copies every 13
    # bytes; then the end-of-block code (7 zero bits) and padding: one zero byte.
    return data[:3] + data[3:] * periods + b"\x00", 1 + 258 * (1 + 8 * periods)


def write_zip(path: Path, entries: list[tuple[str, bytes, int, int]]) -> None:
    """A zip archive of (name, stored bytes, method, size once inflated) entries, written
    by hand: zipfile cannot store bytes that are already deflated. The CRCs of deflated
    entries are left 0: nothing may read that far."""
    with open(path, "wb") as handle:
        directory = b""
        for name, data, method, size in entries:
            encoded, offset = name.encode(), handle.tell()
            crc = zlib.crc32(data) if method == zipfile.ZIP_STORED else 0
            fields = (20, 0, method, 0, 0, crc, len(data), size, len(encoded))
            handle.write(struct.pack("<I5H3I2H", 0x04034B50, *fields, 0) + encoded + data)
            directory += struct.pack("<I6H3I5H2I", 0x02014B50, 20, *fields, 0, 0, 0, 0, 0,
                                     offset) + encoded  # fmt: skip
        start = handle.tell()
        handle.write(directory)
        count = len(entries)
        handle.write(struct.pack("<I4HIIH", 0x06054B50, 0, 0, count, count, len(directory),
                                 start, 0))  # fmt: skip


def test_a_zip_bomb_is_refused_before_torch_reads_it(
    tmp_path: Path, toy_checkpoint: Path, cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The toy checkpoint with one tensor entry replaced by 13 MB that inflate to 2 GB
    (torch.load would inflate it in memory)."""
    for periods in (0, 1, 100):  # the stream really inflates to what it claims
        stream, size = zeros_deflated(periods)
        assert zlib.decompress(stream, -15) == bytes(size)
    with zipfile.ZipFile(toy_checkpoint) as archive:
        members = [(e.filename, archive.read(e)) for e in archive.infolist()]
    stream, size = zeros_deflated(1_000_000)
    bomb = tmp_path / "bomb.pt"
    write_zip(bomb, [
        (name, stream, zipfile.ZIP_DEFLATED, size) if name.endswith("/data/0")
        else (name, data, zipfile.ZIP_STORED, len(data))
        for name, data in members
    ])  # fmt: skip
    assert bomb.stat().st_size < 15e6 and size > 2e9
    with zipfile.ZipFile(bomb) as archive:  # a well-formed archive, as zipfile sees it
        assert max(entry.file_size for entry in archive.infolist()) == size

    def never(*args, **kwargs):
        raise AssertionError("torch.load reached")

    monkeypatch.setattr(torch, "load", never)
    code, out, err = cli("translate", "-m", bomb, input=b"Ein Hund.\n")
    one_error_line(code, err, str(bomb), "would inflate to 2,064,", "stored uncompressed")


def set_key(key: str, value: object) -> Callable[[dict], None]:
    """A change that sets config key `key` (dotted) of a payload."""

    def change(payload: dict) -> None:
        *sections, name = key.split(".")
        section = payload["config"]
        for part in sections:
            section = section[part]
        section[name] = value

    return change


CONFIG_LIES = {
    "hidden size": (set_key("model.encoder.hidden_size", 8000), "model.encoder.hidden_size"),
    "embedding size": (set_key("model.decoder.embedding_size", 4096),
                       "model.decoder.embedding_size"),
    "vocabulary": (lambda p: p["vocab"]["trg"].extend(f"w{i}" for i in range(100_000)),
                   "vocab.trg size"),
    "gate kernel": (lambda p: p["config"]["model"]["encoder"].update(gate="cbam",
                                                                     gate_kernel=10**9 + 1),
                    "encoder_gate"),
    "a missing tensor": (lambda p: p["model"].pop("decoder.output.weight"),
                         "decoder.output.weight are absent"),
}  # fmt: skip


@pytest.mark.parametrize("lie", CONFIG_LIES, ids=list(CONFIG_LIES))
def test_a_config_that_lies_about_sizes_is_refused_before_allocation(
    lie: str, tmp_path: Path, toy_checkpoint: Path, cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 300 KB checkpoint whose config would build a model of gigabytes: refused, naming
    the key, having built no model anywhere but on the meta device (no memory)."""
    change, named = CONFIG_LIES[lie]
    path = changed_checkpoint(toy_checkpoint, tmp_path / "lies.pt", change)
    built = []
    model_class = checkpoint.Seq2Seq

    def recorded(*args, **kwargs):
        model = model_class(*args, **kwargs)
        built.append(next(model.parameters()).device.type)
        return model

    monkeypatch.setattr(checkpoint, "Seq2Seq", recorded)
    code, out, err = cli("translate", "-m", path, input=b"Ein Hund.\n")
    one_error_line(code, err, str(path), "refused", named)
    assert set(built) <= {"meta"}, built


@pytest.mark.parametrize("name", ["antigravity", "os", "numpy", "spacy", "de_core_news_sm.x",
                                  "../de_core_news_sm", "blank:de;x", "", 7, None])  # fmt: skip
def test_a_tokenizer_name_that_is_not_spacys_is_refused(
    name: object, tmp_path: Path, toy_checkpoint: Path
) -> None:
    """spacy.load imports the installed package it is given: only spaCy names may pass."""
    path = changed_checkpoint(
        toy_checkpoint, tmp_path / "named.pt", lambda p: p["tokenizer"].update(trg=name)
    )
    with pytest.raises(UserError) as caught:
        load_checkpoint(path)
    assert str(path) in str(caught.value) and f"tokenizer.trg {name!r}" in str(caught.value)
    assert "antigravity" not in sys.modules


def test_spacy_names_pass() -> None:
    for name in ("blank:de", "blank:grc", "de_core_news_sm", "en_core_web_trf", "xx_ent_wiki_sm"):
        assert check_spacy_name(name, "pipeline") == name


def set_weight(value: float) -> Callable[[dict], None]:
    def change(weights: dict) -> None:
        weights["decoder.rnn.weight_hh"][3, 1] = value

    return change


def integers(weights: dict) -> None:
    for name, tensor in weights.items():
        weights[name] = tensor.long()


NOT_FINITE_FLOATS = "decoder.rnn.weight_hh hold NaN or infinite values"
BAD_WEIGHTS = {
    "nan": (set_weight(math.nan), NOT_FINITE_FLOATS),
    "inf": (set_weight(math.inf), NOT_FINITE_FLOATS),
    "-inf": (set_weight(-math.inf), NOT_FINITE_FLOATS),
    "integers": (integers, "encoder.embedding.weight are int64, not floating point"),
}


@pytest.mark.parametrize("case", BAD_WEIGHTS, ids=list(BAD_WEIGHTS))
def test_weights_that_are_not_finite_floats_are_refused(
    case: str, tmp_path: Path, toy_checkpoint: Path, cli
) -> None:
    """By every command that reads a checkpoint, in one line naming the file and tensor."""
    change, message = BAD_WEIGHTS[case]
    bad = changed_checkpoint(toy_checkpoint, tmp_path / "bad.pt", lambda p: change(p["model"]))
    code, out, err = cli("translate", "-m", bad, input=b"Ein Hund.\n")
    one_error_line(code, err, str(bad), message)
    code, out, err = cli("average", toy_checkpoint, bad, "-o", tmp_path / "mean.pt")
    one_error_line(code, err, str(bad), message)
    assert not (tmp_path / "mean.pt").exists()


# -- average -----------------------------------------------------------------------------------


def test_average_refuses_the_same_file_twice(tmp_path: Path, toy_checkpoint: Path, cli) -> None:
    first = tmp_path / "a.pt"
    shutil.copy(toy_checkpoint, first)
    os.link(first, tmp_path / "twin.pt")
    for twice in ([first, first], [first, tmp_path / "twin.pt"]):
        code, out, err = cli("average", *twice, "-o", tmp_path / "mean.pt")
        one_error_line(code, err, f"{twice[1]}: the same file as {first}")
    assert not (tmp_path / "mean.pt").exists()


def test_average_of_one_file_warns(tmp_path: Path, toy_checkpoint: Path, cli) -> None:
    code, out, err = cli("average", toy_checkpoint, "-o", tmp_path / "mean.pt")
    assert code == 0, err
    assert err.splitlines()[0] == (
        f"warning: {toy_checkpoint} is the only checkpoint: the average is a copy of its weights"
    )
    assert load_checkpoint(tmp_path / "mean.pt")["averaged_from"] == [str(toy_checkpoint)]


# -- byte order marks, empty references ---------------------------------------------------------


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


def test_evaluate_warns_of_empty_reference_lines(tmp_path: Path, cli) -> None:
    hyp, ref = tmp_path / "hyp.en", tmp_path / "ref.en"
    hyp.write_text("A dog.\nA man.\nA cat.\nA car.\n", encoding="utf-8")
    ref.write_text("A dog.\n\nA cat.\n  \n", encoding="utf-8")
    code, out, err = cli("evaluate", "--hyp", hyp, "--ref", ref)
    assert code == 0, err
    assert err.splitlines() == [f"warning: {ref}: 2 empty reference lines (the first: line 2)"]


# -- strict JSON -------------------------------------------------------------------------------


def strict(text: str) -> object:
    def refuse(constant: str) -> None:
        raise AssertionError(f"{constant} in JSON: {text}")

    return json.loads(text, parse_constant=refuse)


def test_translate_json_never_holds_nan_or_infinity() -> None:
    candidates = [
        Translation("A dog.", ["A", "dog", "."], ["Ein", "Hund"], score, torch.zeros(4, 4))
        for score in (-math.inf, math.nan)
    ]
    record = strict(textio.format_candidates(0, candidates, 2, False, True))
    assert record["score"] is None and [c["score"] for c in record["nbest"]] == [None, None]
    assert record["alignment"] == [0, 0, 0]


def test_evaluate_json_never_holds_nan_or_infinity(
    tmp_path: Path, toy_checkpoint: Path, cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    import seq2seq.evaluation

    monkeypatch.setattr(seq2seq.evaluation, "corpus_losses", lambda *a: (math.nan, math.inf))
    src, ref = tmp_path / "src.de", tmp_path / "ref.en"
    src.write_text("Ein Hund.\n", encoding="utf-8")
    ref.write_text("A dog.\n", encoding="utf-8")
    code, out, err = cli("evaluate", "-m", toy_checkpoint, "--src", src, "--ref", ref, "--json")
    assert code == 0, err
    record = strict(out)
    assert record["loss"] is None and record["perplexity"] is None
    assert record["free_running_loss"] is None
    assert record["free_running_perplexity"] == pytest.approx(math.exp(100.0))
