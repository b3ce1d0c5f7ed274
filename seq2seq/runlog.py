"""The run folder's metrics log: one JSON object per line in metrics.jsonl.

Records have a "kind": "start" (versions, commit), "train" (every log_every steps) or
"valid" (every validation). Each line is written with one write() and flushed, so a
kill leaves at most one partial last line, which readers skip and resume removes.
Non-finite numbers (a diverged loss) are written as null: the file stays valid JSON.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from seq2seq import console
from seq2seq.files import append_line, write_atomic
from seq2seq.run_folder import RunFolder
from seq2seq.textio import strict_json


class MetricsLog:
    def __init__(self, folder: RunFolder):
        self.path = folder.metrics
        self._writer = None
        try:
            from torch.utils.tensorboard import SummaryWriter  # optional extra

            self._writer = SummaryWriter(str(folder.tensorboard))
        except ImportError:
            pass

    def append(self, record: dict[str, Any]) -> None:
        append_line(self.path, strict_json(record))
        if self._writer is not None and "step" in record:
            for key, value in record.items():
                if isinstance(value, float) and key not in ("step", "epoch"):
                    self._writer.add_scalar(f"{record['kind']}/{key}", value, record["step"])
            self._writer.flush()

    def truncate_after(self, step: int) -> None:
        """Drop records written after `step` (work lost by a kill, about to be redone)."""
        kept = [r for r in read_metrics(self.path) if r.get("step", 0) <= step]
        text = "".join(strict_json(r) + "\n" for r in kept)
        write_atomic(self.path, lambda handle: handle.write(text.encode("utf-8")))


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """All complete records of a metrics.jsonl. A partial last line (a kill) is skipped;
    so is any other line that is not a JSON object (not UTF-8, not JSON, a list), with a
    warning naming it: a damaged line never stops a resume or a plot."""
    if not path.exists():
        return []
    lines = path.read_bytes().split(b"\n")  # the last is b"" after a complete line
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            record = None
        if isinstance(record, dict):
            records.append(record)
        elif number < len(lines):  # not the last, which lacks its "\n" when a kill cut it
            console.warn(f"{path}:{number}: not a metrics record (a JSON object), skipped")
    return records


def environment() -> dict[str, str | None]:
    """Versions of what produced the run, and the git commit of this source tree if any."""
    import seq2seq

    info = seq2seq.versions("torch", "spacy", "sacrebleu")
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(seq2seq.__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
        if commit.returncode == 0:
            info["git_commit"] = commit.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return info
