"""Checkpoints: weights-only loading, foreign files refused as user errors, atomic saves."""

from __future__ import annotations

import errno
import io
import os
import pickle
import random
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from seq2seq import checkpoint
from seq2seq.checkpoint import FORMAT, FORMAT_VERSION, load_checkpoint, save_checkpoint
from seq2seq.errors import UserError


def payload() -> dict:
    return {
        "config": {"seed": 1, "model": {"dropout": 0.1}},
        "vocab": {"src": ["<unk>", "<pad>", "<sos>", "<eos>", "hund"], "trg": ["<unk>", "dog"]},
        "tokenizer": {"src": "blank:de", "trg": "blank:en"},
        "model": {"w": torch.arange(6.0).reshape(2, 3), "b": torch.zeros(3, dtype=torch.long)},
        "training": {"epoch": 3, "validation": None, "losses": [1.5, 0.25]},
    }


def refused(path: Path) -> str:
    with pytest.raises(UserError) as caught:
        load_checkpoint(path)
    message = str(caught.value)
    assert str(path) in message
    assert "\n" not in message
    return message


def test_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    save_checkpoint(payload(), path)
    loaded = load_checkpoint(path)
    assert loaded["format"] == FORMAT and loaded["format_version"] == FORMAT_VERSION
    expected = payload()
    assert torch.equal(loaded["model"]["w"], expected["model"]["w"])
    assert loaded["model"]["b"].dtype == torch.long
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
        refused(path)


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
    refused(path)


@given(data=st.binary(max_size=300), prefix=st.sampled_from([b"", b"\x80\x02", b"\x80\x05", b"PK"]))
def test_any_bytes_are_refused_as_user_errors(
    tmp_path_factory: pytest.TempPathFactory, data: bytes, prefix: bytes
) -> None:
    path = tmp_path_factory.mktemp("fuzz") / "f.pt"
    path.write_bytes(prefix + data)
    refused(path)


@pytest.mark.parametrize(
    "obj", [{"weights": torch.ones(2)}, [1, 2, 3], {"format": "other"}, torch.zeros(3)]
)
def test_torch_file_that_is_not_ours(tmp_path: Path, obj: object) -> None:
    path = tmp_path / "other.pt"
    torch.save(obj, path)
    assert "not a seq2seq checkpoint" in refused(path)


@pytest.mark.parametrize("version", [FORMAT_VERSION + 1, 99, "1", None])
def test_format_version_too_new_or_bad(tmp_path: Path, version: object) -> None:
    path = tmp_path / "future.pt"
    torch.save({"format": FORMAT, "format_version": version, "model": {}}, path)
    assert "upgrade seq2seq" in refused(path)


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
    refused(path)
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

    monkeypatch.setattr(checkpoint, "open", FillsUp, raising=False)
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
