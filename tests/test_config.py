"""Config: defaults, validation errors that name file, line and key, and --set overrides."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import ROOT, TOY_CONFIG
from pydantic import ValidationError

from seq2seq.config import Config, load_config, save_config
from seq2seq.errors import UserError


def write(tmp_path: Path, text: str, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def error_of(path: Path, overrides: list[str] | None = None) -> str:
    with pytest.raises(UserError) as caught:
        load_config(path, overrides or [])
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_defaults_fill_everything_a_file_leaves_out(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "seed: 7\n"))
    assert config.seed == 7
    assert config.model_dump() == Config(seed=7).model_dump()
    # The tutorial's setup is the default.
    assert (config.data.src_lang, config.data.trg_lang) == ("de", "en")
    assert config.model.encoder.embedding_size == 256
    assert config.model.encoder.hidden_size == 512
    assert config.model.dropout == 0.5
    assert config.train.epochs == 10
    assert config.train.learning_rate == 1e-3
    assert config.vocab.min_freq == 2


def test_toy_config_loads() -> None:
    config = load_config(TOY_CONFIG)
    assert config.data.dir == "data/toy"
    assert config.model.encoder.hidden_size == 48
    assert config.vocab.min_freq == 1


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_is_valid(path: Path) -> None:
    assert isinstance(load_config(path), Config)


def test_saved_config_loads_back_equal(tmp_path: Path) -> None:
    config = load_config(TOY_CONFIG, ["train.epochs=3", "data.lowercase=true"])
    save_config(config, tmp_path / "saved.yaml")
    assert load_config(tmp_path / "saved.yaml") == config


@pytest.mark.parametrize(
    ("text", "line", "unknown", "suggestion"),
    [
        ("seed: 1\ntrain:\n  epoch: 3\n", 3, "train.epoch", "train.epochs"),
        ("seed: 1\ntrian:\n  epochs: 3\n", 2, "trian", "train"),
        (
            "model:\n  encoder:\n    hiden_size: 3\n",
            3,
            "model.encoder.hiden_size",
            "model.encoder.hidden_size",
        ),
        ("vocab:\n  min_frequency: 3\n", 2, "vocab.min_frequency", "vocab.min_freq"),
    ],
)
def test_unknown_key_names_file_line_and_closest_key(
    tmp_path: Path, text: str, line: int, unknown: str, suggestion: str
) -> None:
    path = write(tmp_path, text)
    message = error_of(path)
    assert message.startswith(f"{path}:{line}:")
    assert f"'{unknown}'" in message
    assert f"did you mean '{suggestion}'?" in message


def test_unknown_key_without_a_close_match_lists_the_valid_keys(tmp_path: Path) -> None:
    message = error_of(write(tmp_path, "train:\n  zzqqxx: 3\n"))
    assert "'train.zzqqxx'" in message
    assert "valid keys here:" in message
    assert "epochs" in message and "learning_rate" in message


@pytest.mark.parametrize(
    ("text", "line", "key"),
    [
        ("seed: 1\ntrain:\n  epochs: many\n", 3, "train.epochs"),
        ("train:\n  batch_unit: words\n", 2, "train.batch_unit"),
        ("model:\n  dropout: 1.5\n", 2, "model.dropout"),
        ("train:\n  learning_rate: -1\n", 2, "train.learning_rate"),
        ("data:\n  lowercase: sometimes\n", 2, "data.lowercase"),
        ("train: 5\n", 1, "train"),
    ],
)
def test_wrong_value_names_file_line_and_key(
    tmp_path: Path, text: str, line: int, key: str
) -> None:
    path = write(tmp_path, text)
    message = error_of(path)
    assert message.startswith(f"{path}:{line}: {key}: ")


def test_set_overrides_are_typed_by_yaml(tmp_path: Path) -> None:
    path = write(tmp_path, "seed: 1\ntrain:\n  epochs: 2\n")
    config = load_config(
        path,
        [
            "train.epochs=3",
            "train.learning_rate=0.01",
            "data.lowercase=true",
            "train.clip_norm=null",
            "vocab.max_size=100",
            "data.src_pipeline=",
            "decode.batch_size=5",  # a section the file does not have
            "seed=42",
            "train.run_dir=/tmp/some where",
        ],
    )
    assert config.train.epochs == 3
    assert config.train.learning_rate == 0.01
    assert config.data.lowercase is True
    assert config.train.clip_norm is None
    assert config.vocab.max_size == 100
    assert config.data.src_pipeline is None
    assert config.decode.batch_size == 5
    assert config.seed == 42
    assert config.train.run_dir == "/tmp/some where"


def test_later_set_wins(tmp_path: Path) -> None:
    path = write(tmp_path, "train:\n  epochs: 2\n")
    assert load_config(path, ["train.epochs=3", "train.epochs=4"]).train.epochs == 4


def test_bad_set_value_names_the_set_and_the_key(tmp_path: Path) -> None:
    path = write(tmp_path, "seed: 1\ntrain:\n  epochs: 2\n")
    message = error_of(path, ["train.epochs=many"])
    assert "train.epochs" in message and "--set train.epochs=many" in message
    # The file's own line 3 is fine: the message must not blame it.
    assert f"{path}:3" not in message


def test_unknown_set_key_suggests_the_closest(tmp_path: Path) -> None:
    message = error_of(write(tmp_path, "seed: 1\n"), ["train.epoch=3"])
    assert "'train.epoch'" in message and "did you mean 'train.epochs'?" in message


@pytest.mark.parametrize(
    ("override", "expected"),
    [("train", "expected section.key=value"), ("train.epochs.x=1", "'epochs' is not a section")],
)
def test_malformed_set(tmp_path: Path, override: str, expected: str) -> None:
    message = error_of(write(tmp_path, "train:\n  epochs: 2\n"), [override])
    assert expected in message and override in message


@pytest.mark.parametrize(
    ("text", "line", "column"),
    [
        ("train:\n  epochs: [1, 2\n", 3, 1),
        ("seed: 1\ntrain:\n  epochs: 3\n   lr: 2\n", 4, 6),
        ("train:\n\tepochs: 3\n", 2, 1),
    ],
)
def test_yaml_syntax_error_gives_line_and_column(
    tmp_path: Path, text: str, line: int, column: int
) -> None:
    path = write(tmp_path, text)
    message = error_of(path)
    assert message.startswith(f"{path}:{line}:{column}: YAML syntax error")


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n"])
def test_empty_file(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, text)
    assert error_of(path) == f"{path}: config file is empty"


def test_not_a_mapping(tmp_path: Path) -> None:
    path = write(tmp_path, "- a\n- b\n")
    assert "must be a mapping" in error_of(path)


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    assert error_of(path) == f"{path}: config file not found"


def test_invalid_utf8_config(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_bytes(b"seed: 1\ndata:\n  dir: \xff\n")
    assert str(path) in error_of(path)


@pytest.mark.parametrize("key", ["src_lang", "trg_lang"])
def test_unknown_spacy_language(tmp_path: Path, key: str) -> None:
    path = write(tmp_path, f"data:\n  {key}: zz\n")
    message = error_of(path)
    assert message.startswith(f"{path}:2: data.{key}: ")
    assert re.search(r"spaCy has no language 'zz'", message)


def test_known_spacy_languages_are_accepted(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "data:\n  src_lang: en\n  trg_lang: de\n"))
    assert (config.data.src_lang, config.data.trg_lang) == ("en", "de")


def test_config_is_frozen() -> None:
    config = Config()
    with pytest.raises(ValidationError):
        config.train.epochs = 3  # type: ignore[misc]
