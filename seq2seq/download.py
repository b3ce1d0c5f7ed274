"""Fetching Multi30k task 1 from the dataset's public repository, verified by SHA-256.

Each file is downloaded whole and verified before it is written, atomically (files.py),
so a half-downloaded or corrupted file never looks complete. Transient network failures
are retried; a file that cannot be fetched ends the command with one line naming the URL
and where to put the file by hand.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

from seq2seq import console
from seq2seq.errors import UserError
from seq2seq.files import make_folder, write_atomic

MULTI30K_URL = "https://raw.githubusercontent.com/multi30k/dataset/master/data/task1/raw"
MULTI30K_LANGUAGES = ("de", "en", "fr", "cs")
MULTI30K_SPLITS = ("train", "val", "test_2016_flickr")
MULTI30K_SHA256 = {
    "test_2016_flickr.cs.gz": "200a4a74cc9560f051924abb9803be008d1908d77f747e9141aeb86dfd2797f1",
    "test_2016_flickr.de.gz": "9204244e408ccb38d2a55cfcd344df15005fc42a07a6e55ca6c52b6ababb8cc8",
    "test_2016_flickr.en.gz": "611d361c6334bc7246101d48097c13cf5c4413c5befc793cc629934359d532d9",
    "test_2016_flickr.fr.gz": "6d326e188d259fb1d04ac19eae3af956559b3a0b93d7635e56c90987c40c8b90",
    "train.cs.gz": "a65adb8b32e3bc664f21ecba7a6e7f6950fd1f405e135f7c312faabdb6255077",
    "train.de.gz": "726e39b2fa9eb9ffb6dc763fb35a179f80fae06ffc5d28b6ace5faa883de28a6",
    "train.en.gz": "d79cfa999dd4c51d2cb42499b6796d5a882c3a8a961923c25a898c90f8bbd56f",
    "train.fr.gz": "622e75069e9f4c577425c4f277116ce66e63a2401c0a2312d90073cb12379a3c",
    "val.cs.gz": "b63226e05c4bd5dd6a42897d74b86a1b9d2c31498252c572b1ea7f7996927fcc",
    "val.de.gz": "f0cba2f995189cf5770f29a8a9a537a3ad3f51657ad873405082ff6863a5e75a",
    "val.en.gz": "14f7d25ddd868909a9213e361768460edcacdd6ab9d1e77b92560dc10c10dc28",
    "val.fr.gz": "ca3106f1a72390591d25f6c45cb4cd39dec4cd3f123e099748a3ce5256c160e9",
}
RETRY_DELAYS = (1.0, 3.0, 9.0)  # seconds before each retry of a transient failure


def multi30k_files(languages: tuple[str, ...] = MULTI30K_LANGUAGES) -> list[str]:
    unknown = sorted(set(languages) - set(MULTI30K_LANGUAGES))
    if unknown:
        raise UserError(
            f"Multi30k has no language {', '.join(unknown)} "
            f"(it has {', '.join(MULTI30K_LANGUAGES)})"
        )
    return [f"{split}.{lang}.gz" for split in MULTI30K_SPLITS for lang in languages]


def download_multi30k(
    dest: str | Path,
    languages: tuple[str, ...] = MULTI30K_LANGUAGES,
    base_url: str | None = None,
) -> list[Path]:
    """Make sure `dest` holds the verified Multi30k files of these languages; fetch the
    missing ones from `base_url` (default: $SEQ2SEQ_MULTI30K_URL, a mirror, or the
    dataset's repository). Returns their paths."""
    base_url = base_url or os.environ.get("SEQ2SEQ_MULTI30K_URL") or MULTI30K_URL
    dest = Path(dest)
    make_folder(dest)
    paths = []
    for name in multi30k_files(languages):
        path = dest / name
        if not (path.exists() and sha256(path) == MULTI30K_SHA256[name]):
            fetch(f"{base_url.rstrip('/')}/{name}", path, MULTI30K_SHA256[name])
        paths.append(path)
    return paths


def fetch(url: str, path: Path, expected_sha256: str) -> None:
    """Download `url` to `path` atomically, verified; retry transient failures."""
    for attempt, delay in enumerate((*RETRY_DELAYS, None)):
        try:
            content = _download(url, path.name)
            break
        except (urllib.error.URLError, TimeoutError, ConnectionError) as error:
            permanent = isinstance(error, urllib.error.HTTPError) and error.code < 500
            if permanent or delay is None:
                reason = getattr(error, "reason", None) or error
                raise UserError(
                    f"{url}: download failed ({reason}) after {attempt + 1} attempts; put "
                    f"{path.name} in {path.parent} by hand (from github.com/multi30k/dataset, "
                    "data/task1/raw)"
                ) from None
            time.sleep(delay)
    found = hashlib.sha256(content).hexdigest()
    if found != expected_sha256:
        raise UserError(
            f"{url}: SHA-256 is {found}, expected {expected_sha256}; the file was not kept"
        )
    write_atomic(path, lambda handle: handle.write(content), durable=True)


def _download(url: str, label: str) -> bytes:
    """The whole file, held in memory until it is verified (Multi30k's files are small)."""
    content = bytearray()
    with urllib.request.urlopen(url, timeout=60) as response:
        total = int(response.headers.get("Content-Length") or 0) or None
        with tqdm(
            total=total,
            unit="B",
            unit_scale=True,
            desc=label,
            file=sys.stderr,
            leave=False,
            disable=not console.progress_enabled(),
        ) as bar:
            while chunk := response.read(1 << 16):
                content += chunk
                bar.update(len(chunk))
    return bytes(content)


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()
