"""What is released: the changelog starts with the version the package reports (the
built wheel itself is tried in a fresh environment by scripts/check_wheel.sh, in CI)."""

from __future__ import annotations

import re
from pathlib import Path

import seq2seq

ROOT = Path(__file__).resolve().parents[1]


def test_the_changelog_starts_with_this_version():
    text = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    versions = re.findall(r"^## (\S+)", text, re.MULTILINE)
    assert versions and versions[0] == seq2seq.__version__
