"""The documentation stays true to the repository: links lead somewhere, the README stays
short, nothing points outside the repository, docs/configuration.md lists exactly
the keys of the typed config with their defaults and the names a call sets them by, and
docs/serve.md gives the server's limits their defaults."""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

from seq2seq.config import CALL_NAMES, Config, DecodeConfig, ServeLimits

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
CONFIGURATION = ROOT / "docs" / "configuration.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]

LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
INLINE_CODE = re.compile(r"`[^`]*`")
KEY = re.compile(r"^(?:seed|(?:data|vocab|model|train|decode)(?:\.[a-z_]+)+)$")


def outside_code(page: Path) -> list[str]:
    """The page's lines outside code blocks (indented or fenced)."""
    lines, fenced = [], False
    for line in page.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif not fenced and not line.startswith(("    ", "\t")):
            lines.append(line)
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lowercase, punctuation dropped, spaces to hyphens."""
    text = heading.strip().lower()
    kept = "".join(c for c in text if c in " -_" or unicodedata.category(c)[0] in "LN")
    return kept.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """The anchors of the page's headings (a repeated heading gets -1, -2, ...)."""
    result: set[str] = set()
    counts: dict[str, int] = {}
    for line in outside_code(page):
        match = re.match(r"^#{1,6}\s+(.*)$", line)
        if match:
            base = slug(match.group(1))
            count = counts.get(base, 0)
            counts[base] = count + 1
            result.add(base if count == 0 else f"{base}-{count}")
    return result


def links(page: Path) -> list[str]:
    """Link and image targets, outside code blocks and inline code."""
    lines = [INLINE_CODE.sub("", line) for line in outside_code(page)]
    return [m.group(1) for line in lines for m in LINK.finditer(line)]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_point_to_existing_files_and_headings(page: Path):
    for target in links(page):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
            continue
        path_part, _, anchor = target.partition("#")
        linked = (page.parent / path_part).resolve() if path_part else page
        assert linked.exists(), f"{page.name}: link to {target!r}: no such file"
        assert ROOT in linked.parents or linked == ROOT, f"{page.name}: {target!r} leaves the repo"
        if anchor and linked.suffix == ".md":
            assert anchor in anchors(linked), f"{page.name}: {target!r}: no such heading"


def test_readme_is_short():
    lines = README.read_text(encoding="utf-8").count("\n")
    assert lines <= 250, f"README.md has {lines} lines; move detail into docs/"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_nothing_points_outside_the_repository(page: Path):
    text = page.read_text(encoding="utf-8")
    assert "../shared" not in text
    assert "/work/" not in text


def config_keys(model: type[BaseModel] = Config, prefix: str = "") -> dict[str, object]:
    """Every leaf key of the typed config, dotted, with its default."""
    keys: dict[str, object] = {}
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            keys.update(config_keys(annotation, f"{prefix}{name}."))
        else:
            keys[f"{prefix}{name}"] = field.default
    return keys


def documented_defaults() -> dict[str, str]:
    """`key` -> default cell, from the rows of docs/configuration.md's key tables."""
    rows = {}
    for line in CONFIGURATION.read_text(encoding="utf-8").splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) >= 3 and re.fullmatch(r"`[^`]+`", cells[0]):
            key = cells[0].strip("`")
            if KEY.match(key):
                assert key not in rows, f"{key} documented twice"
                rows[key] = cells[1]
    return rows


def test_every_config_key_is_documented_with_its_default():
    documented = documented_defaults()
    keys = config_keys()
    missing = sorted(set(keys) - set(documented))
    assert not missing, f"docs/configuration.md lacks a row for {missing}"
    for key, default in keys.items():
        cell = documented[key]
        assert re.fullmatch(r"`[^`]*`", cell), f"{key}: default {cell!r} should be `code`"
        assert yaml.safe_load(cell.strip("`")) == default, (
            f"{key}: docs/configuration.md says {cell}, seq2seq/config.py says {default!r}"
        )


def test_every_key_named_in_the_configuration_page_exists():
    keys = set(config_keys())
    named = {
        span.strip("`")
        for line in CONFIGURATION.read_text(encoding="utf-8").splitlines()
        for span in INLINE_CODE.findall(line)
    }
    unknown = sorted(k for k in named if KEY.match(k) and k not in keys)
    assert not unknown, f"docs/configuration.md names keys the config does not have: {unknown}"


def call_names_rows() -> list[list[str]]:
    """docs/configuration.md's table of the names a call sets decoding settings by, built
    from the code: CALL_NAMES, the commands that take each option, the request's fields."""
    import typer.main

    from seq2seq.cli import app
    from seq2seq.serve import TranslateRequest

    commands = typer.main.get_command(app).commands
    fields = set(TranslateRequest.model_fields) - {"text", "texts", "attention"}
    named = {names.field for names in CALL_NAMES.values() if names.field}
    assert named == fields, "a request field sets a decoding setting that CALL_NAMES lacks"
    rows = []
    for key, names in CALL_NAMES.items():
        assert key in DecodeConfig.model_fields, key
        taking = [
            name
            for name, command in commands.items()
            if any(names.option in param.opts for param in command.params)
        ]
        assert taking, f"no command takes {names.option}"
        field = f"`{names.field}`" if names.field else "—"
        rows.append([f"`{key}`", f"`{names.option}`", ", ".join(taking), field])
    return rows


def test_the_names_of_each_decoding_setting_are_documented_as_the_code_has_them():
    lines = CONFIGURATION.read_text(encoding="utf-8").splitlines()
    start = lines.index("| `decode` key | option | commands | request field |") + 2
    table = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        table.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    assert table == call_names_rows()


def test_the_serve_page_gives_each_limit_its_default():
    text = " ".join((ROOT / "docs" / "serve.md").read_text(encoding="utf-8").split())
    for name, field in ServeLimits.model_fields.items():
        assert f"`--{name.replace('_', '-')}` [{field.default:g}]" in text, name
