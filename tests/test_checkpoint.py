"""Checkpoints: weights-only loading, foreign files refused as user errors, crafted ones
refused before they cost anything, atomic saves, averaging."""

from __future__ import annotations

import errno
import io
import math
import os
import pickle
import random
import shutil
import struct
import subprocess
import sys
import weakref
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from conftest import ROOT, changed_checkpoint, one_error_line, run_cli
from hypothesis import example, given, settings
from hypothesis import strategies as st

from seq2seq import checkpoint, files
from seq2seq.checkpoint import (
    FORMAT,
    FORMAT_VERSION,
    load_bundle,
    load_checkpoint,
    save_checkpoint,
)
from seq2seq.errors import UserError


def payload() -> dict:
    return {
        "config": {"seed": 1, "model": {"dropout": 0.1}},
        "vocab": {"src": ["<unk>", "<pad>", "<sos>", "<eos>", "hund"], "trg": ["<unk>", "dog"]},
        "tokenizer": {"src": "blank:de", "trg": "blank:en"},
        "model": {"w": torch.arange(6.0).reshape(2, 3), "b": torch.zeros(3, dtype=torch.float64)},
        "training": {"epoch": 3, "validation": None, "losses": [1.5, 0.25]},
    }


def refused(path: Path) -> str:
    with pytest.raises(UserError) as caught:
        load_checkpoint(path)
    message = str(caught.value)
    assert str(path) in message
    assert "\n" not in message
    return message


# Which check of load_checkpoint refused a file, told by its message.
NOT_A_ZIP = "not a seq2seq checkpoint (truncated, or another kind of file)"  # the zip check
PICKLE = "refused: it holds pickled Python objects"  # torch.load(weights_only=True) refused
DAMAGED = "damaged seq2seq checkpoint"  # a zip archive that torch.load cannot read
NOT_OURS = "not a seq2seq checkpoint"  # read, but not a dict of our format
VERSION = "checkpoint format"
INFLATES = "refused: its entries would inflate"  # the archive's sizes, before torch.load
TOKENIZER = "is not a spaCy pipeline name"  # read, but naming another module
NOT_FINITE = "hold NaN or infinite values"  # read, but weights that are not numbers
EXPANDED = "not stored element by element"  # read, but a view that repeats its elements
SHARED = "bytes, more than its"  # read, but views that share one storage


def branch(path: Path) -> str:
    message = refused(path)
    for name, text in (("not a zip", NOT_A_ZIP), ("pickle", PICKLE), ("damaged", DAMAGED),
                       ("version", VERSION), ("inflates", INFLATES), ("tokenizer", TOKENIZER),
                       ("not finite", NOT_FINITE), ("expanded", EXPANDED),
                       ("shared", SHARED)):  # fmt: skip
        if text in message:
            return name
    assert message.endswith(NOT_OURS), message
    return "not ours"


def rewrite_archive(path: Path, change: Callable[[dict[str, bytes]], dict[str, bytes]]) -> None:
    """Replace the members of the zip archive at `path` by change(members)."""
    with zipfile.ZipFile(path) as archive:
        members = {info.filename: archive.read(info) for info in archive.infolist()}
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        for name, data in change(members).items():
            archive.writestr(name, data)


def member(members: dict[str, bytes], suffix: str) -> str:
    (name,) = [name for name in members if name.endswith(suffix)]
    return name


def test_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    save_checkpoint(payload(), path)
    loaded = load_checkpoint(path)
    assert loaded["format"] == FORMAT and loaded["format_version"] == FORMAT_VERSION
    expected = payload()
    assert torch.equal(loaded["model"]["w"], expected["model"]["w"])
    assert loaded["model"]["b"].dtype == torch.float64
    for key in ("config", "vocab", "tokenizer", "training"):
        assert loaded[key] == expected[key]


def test_file_opens_with_plain_weights_only_torch_load(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    save_checkpoint(payload(), path)
    raw = torch.load(path, weights_only=True)
    assert raw["vocab"] == payload()["vocab"]


def test_trained_checkpoint_is_self_contained(toy_checkpoint: Path) -> None:
    raw = torch.load(toy_checkpoint, weights_only=True)
    assert raw["format"] == FORMAT and raw["format_version"] == FORMAT_VERSION
    for key in ("config", "vocab", "tokenizer", "model"):
        assert key in raw
    assert raw["vocab"]["src"][:4] == ["<unk>", "<pad>", "<sos>", "<eos>"]
    assert raw["tokenizer"] == {"src": "blank:de", "trg": "blank:en"}
    assert all(isinstance(t, torch.Tensor) for t in raw["model"].values())


def test_missing_file(tmp_path: Path) -> None:
    assert "not found" in refused(tmp_path / "nothing.pt")


def test_truncated_file(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    save_checkpoint(payload(), path)
    data = path.read_bytes()
    for size in (0, 10, len(data) // 2, len(data) - 1):
        path.write_bytes(data[:size])
        assert branch(path) == "not a zip"  # a zip's directory is at its end


@pytest.mark.parametrize(
    "data",
    [
        random.Random(0).randbytes(4096),
        b"hello world\n",
        b"\x80\x02" + random.Random(1).randbytes(200),  # looks like a pickle
        b"PK\x03\x04" + random.Random(2).randbytes(200),  # looks like a zip
    ],
    ids=["random", "text", "pickle-header", "zip-header"],
)
def test_foreign_bytes(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "foreign.pt"
    path.write_bytes(data)
    assert branch(path) == "not a zip"


@settings(max_examples=20)  # they all stop at the zip check: a few show it holds
@given(data=st.binary(max_size=300), prefix=st.sampled_from([b"", b"\x80\x02", b"\x80\x05", b"PK"]))
def test_any_bytes_are_refused_as_user_errors(
    tmp_path_factory: pytest.TempPathFactory, data: bytes, prefix: bytes
) -> None:
    path = tmp_path_factory.mktemp("fuzz") / "f.pt"
    path.write_bytes(prefix + data)
    assert branch(path) == "not a zip"


@pytest.fixture(scope="module")
def valid_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = tmp_path_factory.mktemp("valid") / "model.pt"
    save_checkpoint(payload(), path)
    return path.read_bytes()


@settings(max_examples=300)  # about 1 ms each
@given(position=st.integers(0, 10_000), value=st.integers(1, 255))
@example(position=3939, value=64)  # a central-directory entry's zip version: 6.4
def test_a_damaged_archive_is_refused_or_read_never_a_crash(
    tmp_path_factory: pytest.TempPathFactory, valid_bytes: bytes, position: int, value: int
) -> None:
    """One byte of a real checkpoint changed: the archive passes the zip check unless its
    directory was hit; whatever torch.load then meets is a UserError (or, for a byte of
    tensor data or of a field nobody reads, the checkpoint still loads)."""
    data = bytearray(valid_bytes)
    position %= len(data)
    data[position] ^= value  # never the same byte
    path = tmp_path_factory.mktemp("damaged") / "model.pt"
    path.write_bytes(bytes(data))
    try:
        loaded = load_checkpoint(path)
    except UserError:
        branch(path)
    else:
        assert loaded["format"] == FORMAT


def test_each_check_refuses_what_it_claims(tmp_path: Path, valid_bytes: bytes) -> None:
    """Real zip archives, each built to pass the checks before the one it names."""
    path = tmp_path / "model.pt"

    def archive(change: Callable[[dict[str, bytes]], dict[str, bytes]]) -> Path:
        path.write_bytes(valid_bytes)
        rewrite_archive(path, change)
        assert zipfile.is_zipfile(path)
        return path

    assert load_checkpoint(archive(lambda m: m))["format"] == FORMAT  # rewriting alone is fine
    marker = tmp_path / "pwned"
    evil = pickle.dumps({"format": FORMAT, "model": RunsCode(marker)}, protocol=2)
    assert branch(archive(lambda m: {**m, member(m, "data.pkl"): evil})) == "pickle"
    assert not marker.exists()
    harmless_but_foreign = pickle.dumps({"format": FORMAT, "path": Path("x")}, protocol=2)
    assert branch(archive(lambda m: {**m, member(m, "data.pkl"): harmless_but_foreign})) == (
        "pickle"
    )
    not_a_dict = pickle.dumps([FORMAT, 1], protocol=2)
    assert branch(archive(lambda m: {**m, member(m, "data.pkl"): not_a_dict})) == "not ours"
    without_pickle = archive(lambda m: {k: v for k, v in m.items() if not k.endswith("data.pkl")})
    assert branch(without_pickle) == "damaged"
    without_tensor = archive(lambda m: {k: v for k, v in m.items() if not k.endswith("data/0")})
    assert branch(without_tensor) == "damaged"
    short_tensor = archive(lambda m: {**m, member(m, "data/0"): m[member(m, "data/0")][:5]})
    assert branch(short_tensor) == "damaged"
    half_pickle = archive(lambda m: {**m, member(m, "data.pkl"): m[member(m, "data.pkl")][:40]})
    assert branch(half_pickle) == "damaged"
    assert branch(archive(lambda m: {"notes.txt": b"a zip, but not torch's"})) == "damaged"


def test_a_damaged_zip_end_record_is_a_user_error(tmp_path: Path, valid_bytes: bytes) -> None:
    """zipfile.is_zipfile itself raises BadZipFile when the zip64 end record claims the
    archive spans several disks."""
    locator = valid_bytes.rfind(b"PK\x06\x07")  # zip64 end of central directory locator
    assert locator > 0
    for field in (4, 16):  # the disk holding the end record, the number of disks
        data = bytearray(valid_bytes)
        struct.pack_into("<I", data, locator + field, 7)
        path = tmp_path / f"disks{field}.pt"
        path.write_bytes(bytes(data))
        assert branch(path) == "damaged"


@pytest.mark.parametrize(
    "obj", [{"weights": torch.ones(2)}, [1, 2, 3], {"format": "other"}, torch.zeros(3)]
)
def test_torch_file_that_is_not_ours(tmp_path: Path, obj: object) -> None:
    path = tmp_path / "other.pt"
    torch.save(obj, path)
    assert branch(path) == "not ours"


@pytest.mark.parametrize("version", [FORMAT_VERSION + 1, 99, "1", None])
def test_format_version_too_new_or_bad(tmp_path: Path, version: object) -> None:
    path = tmp_path / "future.pt"
    torch.save({"format": FORMAT, "format_version": version, "model": {}}, path)
    assert branch(path) == "version" and "upgrade seq2seq" in refused(path)


@pytest.mark.parametrize("version", [0, -1])
def test_format_version_below_one_is_refused(tmp_path: Path, version: int) -> None:
    path = tmp_path / "bad.pt"
    torch.save({"format": FORMAT, "format_version": version, "model": {}}, path)
    message = refused(path)
    assert f"format version {version}" in message and "upgrade" not in message


class RunsCode:
    """Unpickling this runs a shell command."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("how", ["torch.save", "legacy torch.save", "pickle.dump"])
def test_a_pickle_that_would_run_code_is_refused(tmp_path: Path, how: str) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    evil = {"format": FORMAT, "format_version": FORMAT_VERSION, "model": RunsCode(marker)}
    if how == "torch.save":
        torch.save(evil, path)
    elif how == "legacy torch.save":
        torch.save(evil, path, _use_new_zipfile_serialization=False)
    else:
        path.write_bytes(pickle.dumps(evil))
    assert not marker.exists()
    # Only torch.save's zip reaches torch.load(weights_only=True); the others are no zip.
    assert branch(path) == ("pickle" if how == "torch.save" else "not a zip")
    assert not marker.exists(), "loading the checkpoint ran code"
    # The payload really is armed: plain pickle would have run it.
    pickle.loads(pickle.dumps(RunsCode(marker)))
    assert marker.exists()


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_save_leaves_no_temporary_file(tmp_path: Path) -> None:
    save_checkpoint(payload(), tmp_path / "a.pt")
    save_checkpoint(payload(), tmp_path / "a.pt")  # replacing
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.pt"]


def test_failing_save_keeps_the_previous_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "last.pt"
    save_checkpoint(payload(), path)
    before = path.read_bytes()

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(UserError) as caught:
        save_checkpoint({**payload(), "model": {"w": torch.ones(1)}}, path)
    assert str(path) in str(caught.value) and "No space left on device" in str(caught.value)
    assert "previous one is intact" in str(caught.value)
    assert path.read_bytes() == before
    assert leftovers(tmp_path) == []
    assert load_checkpoint(path)["training"]["epoch"] == 3


def test_disk_full_in_the_middle_of_a_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """torch.save wraps the OSError of a failing write in a RuntimeError."""
    path = tmp_path / "last.pt"
    save_checkpoint(payload(), path)
    before = path.read_bytes()

    class FillsUp(io.FileIO):
        written = 0

        def write(self, data) -> int:
            FillsUp.written += len(data)
            if FillsUp.written > 100:
                raise OSError(errno.ENOSPC, "No space left on device")
            return super().write(data)

    monkeypatch.setattr(files, "open", FillsUp, raising=False)
    with pytest.raises(UserError, match="No space left on device"):
        save_checkpoint({**payload(), "model": {"w": torch.ones(10_000)}}, path)
    assert path.read_bytes() == before
    assert leftovers(tmp_path) == []


def test_save_into_a_missing_folder_is_a_user_error(tmp_path: Path) -> None:
    path = tmp_path / "no" / "such" / "folder" / "a.pt"
    with pytest.raises(UserError) as caught:
        save_checkpoint(payload(), path)
    assert str(path) in str(caught.value)


def test_interrupted_save_cleans_up_and_propagates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "a.pt"

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(payload(), path)
    assert list(tmp_path.iterdir()) == []


# -- averaging -----------------------------------------------------------------------------


def test_average_is_the_mean_of_the_weights(tmp_path: Path) -> None:
    paths = [tmp_path / "a.pt", tmp_path / "b.pt"]
    save_checkpoint(payload(), paths[0])
    shifted = payload()
    shifted["model"] = {"w": shifted["model"]["w"] + 1.0, "b": torch.full((3,), 3.0).double()}
    save_checkpoint(shifted, paths[1])
    averaged = checkpoint.average_checkpoints(paths)
    assert torch.equal(averaged["model"]["w"], torch.arange(6.0).reshape(2, 3) + 0.5)
    assert averaged["model"]["b"].dtype == torch.float64
    assert averaged["model"]["b"].tolist() == [1.5] * 3
    assert "training" not in averaged and averaged["vocab"] == payload()["vocab"]


def test_average_holds_one_checkpoint_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A running sum: each checkpoint's tensors are freed before the next one is read,
    and the mean is the same as the mean of all of them at once."""
    paths = [tmp_path / f"{i}.pt" for i in range(4)]
    for i, path in enumerate(paths):
        shifted = payload()
        shifted["model"]["w"] = shifted["model"]["w"] * (i + 1) + torch.rand(2, 3)
        save_checkpoint(shifted, path)
    open_now, most_open = set(), []
    loaded = checkpoint.load_checkpoint

    def tracked(path: Path) -> dict:
        opened = loaded(path)
        open_now.add(path)
        most_open.append(len(open_now))  # open when this one is read
        weakref.finalize(opened["model"]["w"], open_now.discard, path)
        return opened

    monkeypatch.setattr(checkpoint, "load_checkpoint", tracked)
    averaged = checkpoint.average_checkpoints(paths)
    assert max(most_open) == 1 and not open_now
    weights = torch.stack([load_checkpoint(p)["model"]["w"].double() for p in paths])
    assert torch.equal(averaged["model"]["w"], weights.mean(dim=0).float())


def test_average_of_nothing_is_refused() -> None:
    with pytest.raises(UserError, match="no checkpoints given"):
        checkpoint.average_checkpoints([])


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda p: p["vocab"]["trg"].append("cat"), "a different model or vocabulary"),
        (lambda p: p["model"].pop("b"), "a different model or vocabulary"),
        (lambda p: p["model"].update(w=torch.zeros(3)), r"w has shape \(3,\), not \(2, 3\)"),
    ],
    ids=["vocabulary", "weights", "shape"],  # a [3] tensor would broadcast onto [2, 3]
)
def test_average_refuses_checkpoints_that_do_not_match(
    tmp_path: Path, change: Callable[[dict], object], message: str
) -> None:
    first, other = tmp_path / "a.pt", tmp_path / "b.pt"
    save_checkpoint(payload(), first)
    changed = payload()
    change(changed)
    save_checkpoint(changed, other)
    with pytest.raises(UserError, match=message) as caught:
        checkpoint.average_checkpoints([first, other])
    assert str(other) in str(caught.value)


def test_average_refuses_the_same_file_twice(tmp_path: Path, toy_checkpoint: Path, cli) -> None:
    first = tmp_path / "a.pt"
    shutil.copy(toy_checkpoint, first)
    os.link(first, tmp_path / "twin.pt")
    for twice in ([first, first], [first, tmp_path / "twin.pt"]):
        code, out, err = cli("average", *twice, "-o", tmp_path / "mean.pt")
        one_error_line(code, err, f"{twice[1]}: the same file as {first}")
    assert not (tmp_path / "mean.pt").exists()


def expanded(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Each tensor a view of one element (stride 0): the file holds a few bytes of each."""
    return {name: torch.zeros(1, dtype=t.dtype).expand(t.shape) for name, t in weights.items()}


def shared(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Each tensor a contiguous view of the start of one storage, as big as the largest."""
    storage = torch.zeros(max(t.numel() for t in weights.values()))
    return {name: storage[: t.numel()].view(t.shape) for name, t in weights.items()}


@pytest.mark.parametrize(("views", "message"), [(expanded, EXPANDED), (shared, SHARED)])
def test_tensors_that_do_not_hold_their_elements_are_refused(
    tmp_path: Path, toy_checkpoint: Path, views: Callable, message: str
) -> None:
    """Shapes that agree with the config, from storage far smaller than the model they
    declare: refused before anything computes on them or copies them."""
    path = changed_checkpoint(
        toy_checkpoint, tmp_path / "views.pt", lambda p: p.update(model=views(p["model"]))
    )
    weights = load_checkpoint(toy_checkpoint)["model"].values()
    declared = sum(t.numel() * t.element_size() for t in weights)
    assert path.stat().st_size < declared
    assert message in refused(path)
    code, out, err = run_cli("translate", "-m", path, input="Ein Hund.\n")
    one_error_line(code, err, str(path), message)


@pytest.mark.parametrize(
    ("key", "value", "reason"),
    [("max_length_offset", 10**9, "less than or equal to 500"),
     ("beam_size", 10**4, "less than or equal to 64"), ("alpha", math.inf, "a finite number")],
)  # fmt: skip
def test_decode_settings_of_a_checkpoint_are_capped(
    tmp_path: Path, toy_checkpoint: Path, key: str, value: object, reason: str
) -> None:
    """A checkpoint's decode defaults pass DecodeConfig's caps like any other source."""
    path = changed_checkpoint(
        toy_checkpoint, tmp_path / "long.pt", lambda p: p["config"]["decode"].update({key: value})
    )
    with pytest.raises(UserError) as caught:
        load_bundle(path)
    assert str(caught.value) == f"{path} (config): decode.{key}: Input should be {reason}"


# Loads each checkpoint named on the command line in a fresh interpreter, then prints
# what it refused and which of the modules after `--` were imported.
IMPORTS = """
import sys
from seq2seq.errors import UserError
from seq2seq.translator import Translator
split = sys.argv.index("--")
for path in sys.argv[1:split]:
    try:
        Translator.from_checkpoint(path, "cpu").translate(["Ein Hund."])
        print("loaded", path)
    except UserError as error:
        print("refused", error)
    except Exception as error:
        print("crashed", type(error).__name__)
print("imported", sorted(set(sys.argv[split + 1:]) & set(sys.modules)))
"""


def test_no_field_of_a_checkpoint_makes_spacy_import_a_module(
    tmp_path: Path, toy_checkpoint: Path
) -> None:
    """spacy.load imports any installed package it is named (pytest is one), spacy.blank
    imports spacy.lang.<lang>: every field that reaches them passes one allow-list, with
    or without the checkpoint's tokenizer entry (then the config's pipelines are used)."""
    fields = {
        "tokenizer.src": "pytest",
        "tokenizer.trg": "this",
        "data.src_pipeline": "pytest",
        "data.trg_pipeline": "this",
        "data.src_lang": "de.examples",
        "data.trg_lang": "en.examples",
    }

    def naming(field: str) -> Callable[[dict], None]:
        def change(payload: dict) -> None:
            section, key = field.split(".")
            (payload["config"]["data"] if section == "data" else payload["tokenizer"])[key] = (
                fields[field]
            )
            if key.endswith("_pipeline"):  # no tokenizer entry: the config's pipelines count
                payload["tokenizer"] = None

        return change

    paths = [
        changed_checkpoint(toy_checkpoint, tmp_path / f"{field}.pt", naming(field))
        for field in fields
    ]
    modules = ["pytest", "this", "spacy.lang.de.examples", "spacy.lang.en.examples"]
    completed = subprocess.run(
        [sys.executable, "-c", IMPORTS, *map(str, paths), "--", *modules],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )  # fmt: skip
    lines = completed.stdout.splitlines()
    assert lines[-1] == "imported []", completed.stdout + completed.stderr
    for field, path, line in zip(fields, paths, lines[:-1], strict=True):
        assert line.startswith(f"refused {path}") and field in line, line
        assert f"{fields[field]!r} is not a spaCy " in line, line


# -- crafted checkpoints: refused before they cost anything ---------------------------------------


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
