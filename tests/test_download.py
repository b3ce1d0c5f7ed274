"""Multi30k download against a local HTTP server: verified by SHA-256, atomic, retried
when transient, clear when offline. The served files are the toy corpus in Multi30k's
names, with their checksums put in place of the real ones; the real files' checksums are
checked against a real copy (data/multi30k, or the folder SEQ2SEQ_MULTI30K names) when
there is one."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import os
import shutil
import threading
from pathlib import Path

import pytest
from conftest import ROOT, TOY_CONFIG, TOY_DATA

import seq2seq.download as download
from seq2seq.config import load_config
from seq2seq.download import MULTI30K_SHA256, download_multi30k, sha256
from seq2seq.errors import UserError
from seq2seq.training import train

REAL = Path(os.environ.get("SEQ2SEQ_MULTI30K", ROOT / "data" / "multi30k"))
TOY_SPLITS = {"train": "train", "val": "val", "test_2016_flickr": "test"}


@pytest.fixture
def mirror(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder of Multi30k-named gzipped files (de, en) made from the toy corpus, whose
    SHA-256 sums replace the real ones for this test."""
    folder = tmp_path / "mirror"
    folder.mkdir()
    sums = dict(MULTI30K_SHA256)
    for split, toy in TOY_SPLITS.items():
        for lang in ("de", "en"):
            data = gzip.compress((TOY_DATA / f"{toy}.{lang}").read_bytes(), mtime=0)
            (folder / f"{split}.{lang}.gz").write_bytes(data)
            sums[f"{split}.{lang}.gz"] = hashlib.sha256(data).hexdigest()
    monkeypatch.setattr(download, "MULTI30K_SHA256", sums)
    return folder


class Server:
    """Serves a folder on 127.0.0.1; `fail` maps a file name to HTTP errors to answer first."""

    def __init__(self, folder: Path, files: Path):
        self.fail: dict[str, list[int]] = {}
        self.requests: list[str] = []
        server = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, directory=str(folder), **kwargs)

            def do_GET(self):  # noqa: N802 (the http.server API)
                name = self.path.rsplit("/", 1)[-1]
                server.requests.append(name)
                codes = server.fail.get(name)
                if codes:
                    self.send_error(codes.pop(0))
                    return
                super().do_GET()

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/data/task1/raw"
        (folder / "data" / "task1").mkdir(parents=True)
        self.raw = folder / "data" / "task1" / "raw"
        shutil.copytree(files, self.raw, ignore=shutil.ignore_patterns("*.cs.gz", "*.fr.gz"))
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(tmp_path: Path, monkeypatch, mirror: Path):
    monkeypatch.setattr(download, "RETRY_DELAYS", (0.0, 0.0, 0.0))
    served = Server(tmp_path / "served", mirror)
    yield served
    served.close()


def no_partial_files(folder: Path) -> bool:
    return not list(folder.glob(".*"))  # a temp file's name is hidden (files.py)


def test_downloads_and_verifies(server: Server, tmp_path: Path):
    dest = tmp_path / "dest"
    paths = download_multi30k(dest, ("de", "en"), server.url)
    assert sorted(p.name for p in paths) == sorted(
        f"{s}.{lang}.gz" for s in ("train", "val", "test_2016_flickr") for lang in ("de", "en")
    )
    for path in paths:
        assert sha256(path) == download.MULTI30K_SHA256[path.name]
    assert no_partial_files(dest)
    # A second call finds the verified files and fetches nothing.
    server.requests.clear()
    download_multi30k(dest, ("de", "en"), server.url)
    assert server.requests == []


def test_a_corrupted_file_is_rejected_and_not_left_behind(server: Server, tmp_path: Path):
    corrupted = server.raw / "val.en.gz"
    corrupted.write_bytes(corrupted.read_bytes()[:-100] + b"x" * 100)
    dest = tmp_path / "dest"
    with pytest.raises(UserError, match=r"val\.en\.gz: SHA-256 is .* expected .* not kept"):
        download_multi30k(dest, ("en",), server.url)
    assert not (dest / "val.en.gz").exists()
    assert no_partial_files(dest)


def test_a_corrupted_local_copy_is_fetched_again(server: Server, tmp_path: Path):
    dest = tmp_path / "dest"
    download_multi30k(dest, ("de",), server.url)
    (dest / "val.de.gz").write_bytes(b"half a file")
    server.requests.clear()
    download_multi30k(dest, ("de",), server.url)
    assert server.requests == ["val.de.gz"]
    assert sha256(dest / "val.de.gz") == download.MULTI30K_SHA256["val.de.gz"]


def test_transient_failures_are_retried(server: Server, tmp_path: Path):
    server.fail["train.de.gz"] = [503, 502]
    download_multi30k(tmp_path / "dest", ("de",), server.url)
    assert server.requests.count("train.de.gz") == 3


def test_a_missing_file_is_not_retried(server: Server, tmp_path: Path):
    (server.raw / "val.de.gz").unlink()
    with pytest.raises(UserError, match=r"val\.de\.gz: download failed .* after 1 attempts"):
        download_multi30k(tmp_path / "dest", ("de",), server.url)


def test_offline_names_the_url_and_the_manual_fix(tmp_path: Path, monkeypatch, cli, mirror):
    monkeypatch.setattr(download, "RETRY_DELAYS", (0.0,))
    server = Server(tmp_path / "served", mirror)
    url = server.url
    server.close()  # nothing listens there any more
    code, out, err = cli("download", "multi30k", "--dest", tmp_path / "dest", "--url", url)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert f"{url}/train.de.gz: download failed" in err and "by hand" in err


def test_a_destination_that_is_a_file_is_one_error_line(tmp_path: Path, cli):
    dest = tmp_path / "notes.txt"
    dest.write_text("mine\n")
    for folder in (dest, dest / "sub"):
        code, out, err = cli("download", "multi30k", "--dest", folder)
        assert code == 2 and err == f"error: {folder}: cannot create this folder: " + (
            "File exists\n" if folder == dest else "Not a directory\n"
        )
    assert dest.read_text() == "mine\n"


def test_unknown_language(tmp_path: Path):
    with pytest.raises(UserError, match="no language xx"):
        download_multi30k(tmp_path, ("de", "xx"))


def test_train_fetches_a_missing_multi30k(server: Server, tmp_path: Path, monkeypatch):
    monkeypatch.setenv("SEQ2SEQ_MULTI30K_URL", server.url)
    data_dir = tmp_path / "multi30k"
    config = load_config(
        TOY_CONFIG,
        [
            "data.dataset=multi30k",
            f"data.dir={data_dir}",
            "data.valid=test_2016_flickr",
            f"train.run_dir={tmp_path / 'run'}",
            "train.max_steps=1",
            "train.threads=1",
            "model.encoder.hidden_size=8",
            "model.decoder.hidden_size=8",
            "decode.max_length_ratio=0.2",
        ],
    )
    train(config)
    assert sorted(p.name for p in data_dir.iterdir()) == sorted(
        f"{s}.{lang}.gz" for s in ("train", "val", "test_2016_flickr") for lang in ("de", "en")
    )
    assert (tmp_path / "run" / "best.pt").exists()


@pytest.mark.skipif(not REAL.is_dir(), reason="needs a copy of Multi30k: SEQ2SEQ_MULTI30K")
def test_the_real_files_have_the_known_checksums():
    for name, expected in MULTI30K_SHA256.items():
        if (REAL / name).exists() or name.split(".")[1] in ("de", "en"):
            assert sha256(REAL / name) == expected, name
