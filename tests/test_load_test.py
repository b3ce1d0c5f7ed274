"""scripts/load_test.py against the toy model: a few requests, so that it cannot rot."""

from __future__ import annotations

import json
from pathlib import Path

import load_test
import pytest
from conftest import TOY_DATA


def test_the_load_test_reports_a_small_run(
    toy_checkpoint: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    source, model = str(TOY_DATA / "test.de"), str(toy_checkpoint)
    arguments = ["--clients", "1", "3", "--requests", "7", "--max-seconds", "120", "--json"]
    report = load_test.main([source, "--model", model, *arguments])
    assert json.loads(capsys.readouterr().out) == report
    assert [run["clients"] for run in report["runs"]] == [1, 3]
    for run in report["runs"]:
        assert (run["requests"], run["errors"]) == (7, 0)
        assert 0 < run["p50_ms"] <= run["p99_ms"] and run["sentences_per_s"] > 0
        assert run["server_peak_rss_mb"] > 50  # torch alone takes more
    offline = report["offline_batch_64"]
    assert offline["sentences"] == 7
    assert offline["sentences_per_s"] > 0 and offline["in_order_sentences_per_s"] > 0


def test_the_load_test_stays_on_this_machine() -> None:
    with pytest.raises(SystemExit) as refused:
        load_test.main([str(TOY_DATA / "test.de"), "--url", "http://example.com:8000"])
    assert refused.value.code == 2
