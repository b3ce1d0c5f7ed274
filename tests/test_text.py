"""A language's text side and the training text path: its one filter keeps the pairs of
1 to data.max_length tokens a side, and the vocabularies count the kept pairs only."""

from __future__ import annotations

from pathlib import Path

from conftest import TOY_CONFIG, data_folder, train_args

from seq2seq.config import load_config
from seq2seq.text import training_sides


def test_training_keeps_pairs_of_up_to_max_length_tokens() -> None:
    config = load_config(TOY_CONFIG, ["data.max_length=3"])
    sources = ["ein roter Hund", "ein Hund bellt laut", "Hund", "", "zwei Katzen schlafen"]
    targets = ["a red dog", "a dog", "one dog barks loudly", "a cat", "cats"]
    src, trg, corpus = training_sides(config, sources, targets)
    assert corpus.skipped == 3  # a side of 4 tokens, an empty side
    pairs = zip(corpus.src, corpus.trg, strict=True)
    kept = [(src.tokens(s.tolist()), trg.tokens(t.tolist())) for s, t in pairs]
    assert kept == [
        (["ein", "roter", "Hund"], ["a", "red", "dog"]),
        (["zwei", "Katzen", "schlafen"], ["cats"]),
    ]
    assert "bellt" not in src.vocab.stoi and "barks" not in trg.vocab.stoi


def test_empty_and_overlong_training_pairs_are_skipped_and_counted(tmp_path: Path, cli):
    long_line = "Hund " * 20_000  # 100,000 characters
    src = "Ein Hund läuft.\n\n" + long_line + "\n" + "Ein Mann schläft.\n" * 10
    trg = "A dog runs.\nA cat.\nA long line.\n" + "A man sleeps.\n" * 10
    code, out, err = cli(*train_args(tmp_path, data_folder(tmp_path, src, trg)))
    assert code == 0, err
    assert "training pairs: 11 (2 skipped: empty or longer than 100 tokens)" in err
