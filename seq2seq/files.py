"""Writes that are atomic and name the file when they fail.

Every file seq2seq writes whole (checkpoints, config.yaml, curves.png, translations,
averages) goes through `replaced_when_done`: a temp file in the same folder, unique to
this writer, renamed over the target at the end. A reader, or a second process, sees the
old file or the new one, never half of one, and two writers never share a temp file
(a writer killed with -9 leaves its temp file; the next write of that file, or the start
of a run in that folder, removes it). A failed write (disk full, read-only folder, a
directory in the way) is a `WriteFailed` naming the file: a UserError, exit 2.
"""

from __future__ import annotations

import glob
import json
import math
import os
import re
import secrets
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

from seq2seq.errors import UserError

STDIN = "-"  # the path that is stdin or stdout, wherever a text file is read or written
# A temp file of `replaced_when_done`: `.{name}.{writer pid}-{8 hex digits}.tmp`.
TEMPORARY = re.compile(r"\.(?P<name>.+)\.(?P<writer>\d+)-[0-9a-f]{8}\.tmp")


class WriteFailed(UserError):
    def __init__(self, path: Path, reason: str):
        self.path = path
        super().__init__(f"{path}: could not write: {reason}")


def write_atomic(path: str | Path, write: Callable[[BinaryIO], object], durable: bool = False):
    """`write(handle)` into a fresh temp file, then rename it to `path`. `durable` also
    flushes file and rename to the disk (checkpoints: they must survive a power cut)."""
    with replaced_when_done(Path(path), durable) as handle:
        write(handle)


@contextmanager
def replaced_when_done(path: Path, durable: bool = False) -> Iterator[BinaryIO]:
    """A binary handle on a temp file that replaces `path` when the block ends, and is
    removed if it raises: an interrupted or failed write leaves the old file as it was.
    A symlink stays one (its target is replaced); a target that is not a regular file
    (/dev/null, a FIFO, /dev/stdout on a pipe) is written directly, through the path as
    given: /dev/stdout's link names a pipe, which no path reaches."""
    target = Path(os.path.realpath(path))
    remove_orphans(target.parent, target.name)
    temporary = temporary_beside(target)
    try:
        if os.path.exists(path) and not os.path.isfile(path) and not os.path.isdir(path):
            with open(path, "wb") as handle:
                yield handle
            return
        with open(temporary, "xb") as handle:
            if target.is_file():
                shutil.copymode(target, temporary)  # keep the old file's permissions
            yield handle
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(temporary, target)
        if durable:
            fsync_folder(target.parent)
    except BaseException as error:
        temporary.unlink(missing_ok=True)
        # torch.save reports a failed write as a RuntimeError whose context is the OSError.
        cause = error if isinstance(error, OSError) else error.__context__
        if not isinstance(cause, OSError):
            raise
        kept = " (the previous one is intact)" if target.is_file() else ""
        raise WriteFailed(path, f"{cause.strerror or cause}{kept}") from None


def temporary_beside(target: Path) -> Path:
    """A hidden name next to `target`, unique to this writer (`TEMPORARY`): for a temp file,
    or a folder being written whole (model folders)."""
    return target.with_name(f".{target.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")


def remove_orphans(folder: Path, name: str | None = None) -> None:
    """Remove the temp files and folders in `folder` (of the file `name`, or of any) whose
    writer died before it could (kill -9): a temp name carries its writer's process id, and
    no such process runs. Files named otherwise, a user's own `.notes.tmp`, stay."""
    for orphan in folder.glob(f".{glob.escape(name) if name else '*'}.*-*.tmp"):
        made = TEMPORARY.fullmatch(orphan.name)
        if made and name in (None, made["name"]) and not is_running(int(made["writer"])):
            if orphan.is_dir() and not orphan.is_symlink():
                shutil.rmtree(orphan, ignore_errors=True)
            else:
                orphan.unlink(missing_ok=True)


def is_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only checks that the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


def same_file(a: str | Path, b: str | Path) -> bool:
    """Whether two paths name one file (through links, `./x` and `x`...); `-` is stdin,
    which may be a file too (`< f`)."""
    try:
        return os.path.samestat(*(os.fstat(0) if str(p) == STDIN else os.stat(p) for p in (a, b)))
    except OSError:  # one of them does not exist (yet), or stdin is closed
        return False


def make_folder(path: Path) -> None:
    """`mkdir -p` that names the folder when it cannot be made (a file in the way, no
    permission)."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"{path}: cannot create this folder: {error.strerror or error}") from None


def append_line(path: Path, line: str) -> None:
    """One whole line appended with a single write (a kill leaves at most a partial last
    line, which readers of the file skip)."""
    try:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(line + "\n")
    except OSError as error:
        raise WriteFailed(path, str(error.strerror or error)) from None


def fsync_folder(folder: Path) -> None:
    """Make a rename itself durable."""
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def strict_json(record: Any) -> str:
    """Strict JSON on one line: NaN and infinities become null (json.dumps would write
    NaN/Infinity, which JSON parsers such as jq reject)."""
    return json.dumps(finite(record), ensure_ascii=False, allow_nan=False)


def finite(value: Any) -> Any:
    """The value with NaN and infinities (nested too) as None, which JSON can carry."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [finite(item) for item in value]
    return value
