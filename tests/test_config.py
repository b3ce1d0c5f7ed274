"""Config: defaults, validation errors that name file, line and key, and --set overrides."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import ROOT, TOY_CONFIG, run_cli
from pydantic import ValidationError

from seq2seq.config import (
    Config,
    DecodeConfig,
    SettingError,
    check_spacy_name,
    load_config,
    save_config,
)
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


DUPLICATES = {
    "a section": ("train:\n  epochs: 3\n  batch_size: 8\nmodel:\n  dropout: 0.1\ntrain:\n"
                  "  epochs: 4\n", "6: duplicate key 'train' (first at line 1)"),
    "a key": ("train:\n  epochs: 3\n  learning_rate: 0.1\n  epochs: 4\n",
              "4: duplicate key 'train.epochs' (first at line 2)"),
    "a deeper key": ("model:\n  encoder:\n    hidden_size: 8\n\n    hidden_size: 9\n",
                     "5: duplicate key 'model.encoder.hidden_size' (first at line 3)"),
}  # fmt: skip


@pytest.mark.parametrize("case", DUPLICATES, ids=list(DUPLICATES))
def test_a_key_given_twice_is_refused_with_both_lines(tmp_path: Path, case: str) -> None:
    """YAML keeps the last one without a word: a second `train:` would reset the first's."""
    text, where = DUPLICATES[case]
    path = write(tmp_path, text)
    assert error_of(path) == f"{path}:{where}"


def test_a_merged_anchor_is_not_a_duplicate(tmp_path: Path) -> None:
    """`<<: *anchor` then one of the anchor's keys is YAML's own override, not a repeat
    (a guard on the check above); the same key in two sections is two keys."""
    text = (
        "model:\n  encoder: &sizes\n    embedding_size: 12\n    hidden_size: 16\n"
        "  decoder:\n    <<: *sizes\n    hidden_size: 20\n"
    )
    decoder = load_config(write(tmp_path, text)).model.decoder
    assert (decoder.embedding_size, decoder.hidden_size) == (12, 20)


def test_set_a_whole_section_merges_into_it(tmp_path: Path) -> None:
    """A mapping value sets the keys it names and keeps the others, at any depth, as
    separate --set would: replacing the section would reset them to their defaults."""
    path = write(
        tmp_path,
        "train:\n  epochs: 2\n  batch_size: 8\n  learning_rate: 0.01\n"
        "model:\n  encoder:\n    hidden_size: 16\n    embedding_size: 12\n",
    )
    config = load_config(path, ['train={"epochs": 1}', "model={encoder: {hidden_size: 20}}"])
    assert (config.train.epochs, config.train.batch_size) == (1, 8)
    assert config.train.learning_rate == 0.01
    assert (config.model.encoder.hidden_size, config.model.encoder.embedding_size) == (20, 12)
    assert config == load_config(path, ["train.epochs=1", "model.encoder.hidden_size=20"])


@pytest.mark.parametrize(
    "override",
    ["train.learning_rate=.inf", "model.dropout=.nan", "train.max_minutes=.inf",
     "train.clip_norm=.nan", "train.distributed_timeout=.inf", "decode.alpha=.inf",
     "decode.max_length_ratio=.nan", "train.min_learning_rate=.inf"],
)  # fmt: skip
def test_a_number_that_is_not_finite_is_refused(tmp_path: Path, override: str) -> None:
    """NaN passes every range check (it compares false with any bound)."""
    message = error_of(write(tmp_path, "seed: 1\n"), [override])
    key = override.split("=")[0]
    assert message == f"--set {override}: {key}: Input should be a finite number"


# Each decoding setting that sets how long or how wide a search runs: its cap.
DECODE_CAPS = {
    "beam_size": 64,
    "nbest": 64,
    "batch_size": 4096,
    "alpha": 10.0,
    "max_length_ratio": 5.0,
    "max_length_offset": 500,
    "max_source_length": 1000,
}


@pytest.mark.parametrize("key", DECODE_CAPS)
def test_decode_settings_are_capped(tmp_path: Path, key: str) -> None:
    """In DecodeConfig, which every source goes through: a file, --set, a checkpoint's
    config, the command line's options and HTTP requests (DecodeConfig.updated)."""
    cap = DECODE_CAPS[key]
    wide = {"beam_size": cap} if key == "nbest" else {}
    assert getattr(DecodeConfig().updated(**wide, **{key: cap}), key) == cap
    with pytest.raises(SettingError) as caught:
        DecodeConfig().updated(**wide, **{key: cap + 1})
    assert (caught.value.key, str(caught.value)) == (
        key,
        f"decode.{key}: Input should be less than or equal to {cap:g}",
    )
    message = error_of(write(tmp_path, f"decode:\n  {key}: {cap + 1}\n"))
    assert message.startswith(f"{tmp_path / 'config.yaml'}:2: decode.{key}: ")


@pytest.mark.parametrize("alpha", ["inf", "nan", "1e9"])
def test_an_absurd_alpha_on_the_command_line_is_one_line(toy_checkpoint: Path, alpha: str) -> None:
    code, out, err = run_cli("translate", "-m", toy_checkpoint, "--alpha", alpha,
                             input="Ein Hund.\n")  # fmt: skip
    assert (code, out) == (2, "")
    assert err.startswith("error: ") and "alpha" in err and err.count("\n") == 1


@pytest.mark.parametrize(
    ("key", "value"),
    [("src_pipeline", "pytest"), ("trg_pipeline", "this"), ("src_pipeline", "de_core_news_sm.x"),
     ("trg_lang", "en.examples"), ("src_lang", "de.x"), ("trg_lang", "")],
)  # fmt: skip
def test_a_name_spacy_would_import_must_be_spacys(tmp_path: Path, key: str, value: str) -> None:
    """spacy.load imports an installed package of the name it is given (pytest is one),
    spacy.blank and find_spec import spacy.lang.<lang> and each package on the way."""
    path = write(tmp_path, f"data:\n  {key}: {value!r}\n")
    message = error_of(path)
    assert message.startswith(f"{path}:2: data.{key}: {value!r} is not a spaCy ")


def test_spacy_names_pass(tmp_path: Path) -> None:
    text = "data:\n  src_pipeline: de_core_news_sm\n  trg_pipeline: blank:en\n  trg_lang: grc\n"
    config = load_config(write(tmp_path, text))
    assert (config.data.src_pipeline, config.data.trg_pipeline) == ("de_core_news_sm", "blank:en")


def test_spacy_names_pass_check_spacy_name() -> None:
    for name in ("blank:de", "blank:grc", "de_core_news_sm", "en_core_web_trf", "xx_ent_wiki_sm"):
        assert check_spacy_name(name, "pipeline") == name
