"""metrics.jsonl: a damaged line is skipped and named, never the end of a resume or a plot."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from seq2seq.runlog import read_metrics

DAMAGED = [b"\xff\xfe not UTF-8", b"[1, 2]", b"3", b"not JSON"]


def test_lines_that_are_not_records_are_skipped_and_named(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """A partial last line (a kill cut it) is skipped without a word."""
    path = tmp_path / "metrics.jsonl"
    good = [{"kind": "train", "step": 5}, {"kind": "valid", "step": 10}]
    lines = [json.dumps(good[0]).encode(), *DAMAGED, json.dumps(good[1]).encode()]
    path.write_bytes(b"\n".join(lines) + b'\n{"kind": "tr')
    assert read_metrics(path) == good
    warnings = capsys.readouterr().err.splitlines()
    assert warnings == [
        f"warning: {path}:{n}: not a metrics record (a JSON object), skipped" for n in (2, 3, 4, 5)
    ]


@pytest.fixture
def damaged_run(toy_run: Path, tmp_path: Path) -> Path:
    """A copy of the toy run whose metrics.jsonl has damaged lines among its records."""
    run_dir = Path(shutil.copytree(toy_run, tmp_path / "run"))
    metrics = run_dir / "metrics.jsonl"
    lines = metrics.read_bytes().splitlines()
    metrics.write_bytes(b"\n".join([lines[0], *DAMAGED, *lines[1:]]) + b"\n")
    return run_dir


def test_a_damaged_metrics_line_never_stops_plot_or_resume(damaged_run: Path, cli) -> None:
    """plot draws the records; resume goes on, and its rewrite of the log leaves out the
    damaged lines."""
    metrics = damaged_run / "metrics.jsonl"
    records = read_metrics(metrics)
    code, out, err = cli("plot", damaged_run)
    assert code == 0, err
    assert out.strip() == str(damaged_run / "curves.png")
    assert f"warning: {metrics}:2: not a metrics record" in err
    code, out, err = cli("train", "--resume", "--run-dir", damaged_run)
    assert code == 0, err
    assert f"warning: {metrics}:5: not a metrics record" in err
    lines = metrics.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == records
