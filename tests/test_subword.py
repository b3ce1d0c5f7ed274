"""SentencePiece vocabularies: trained on the training split, stored in the checkpoint,
and everything else (beam search, unknown words, plots, resume, averaging) unchanged."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import sacrebleu
import torch
from conftest import TOY_CONFIG, TOY_DATA, toy_overrides

from seq2seq.checkpoint import average_checkpoints, load_checkpoint, save_checkpoint
from seq2seq.config import VocabConfig, load_config
from seq2seq.corpus import read_lines
from seq2seq.errors import UserError
from seq2seq.metrics import score_corpus
from seq2seq.tokenizer import Tokenizer, make_tokenizers, train_sentencepiece
from seq2seq.training import train
from seq2seq.translator import Translator
from seq2seq.vocab import SPECIALS

LINES = (TOY_DATA / "train.en").read_text(encoding="utf-8").splitlines()


@pytest.mark.parametrize("model_type", ["bpe", "unigram"])
def test_sentencepiece_model_has_our_specials_and_round_trips(model_type: str):
    config = load_config(TOY_CONFIG, ["vocab.type=sentencepiece", f"vocab.model_type={model_type}",
                                      "vocab.size=60"])  # fmt: skip
    src, trg = make_tokenizers(
        config, None, ((TOY_DATA / "train.de").read_text().splitlines(), LINES)
    )
    assert tuple(trg.pieces()[:4]) == SPECIALS
    assert len(trg.pieces()) <= 60
    pieces = trg.tokenize(["A dog runs in the park.", "Two men dance in the snow."])
    assert all(len(p) > 1 for p in pieces)
    assert trg.detokenize(pieces[0]) == "A dog runs in the park."  # exact, not Moses
    assert trg.words.tokenize(["A dog runs."]) == [["A", "dog", "runs", "."]]


def test_a_lowercasing_subword_model_capitalizes_its_output():
    config = load_config(TOY_CONFIG, ["vocab.type=sentencepiece", "vocab.size=60",
                                      "data.lowercase=true"])  # fmt: skip
    _, trg = make_tokenizers(
        config, None, ((TOY_DATA / "train.de").read_text().splitlines(), LINES)
    )
    pieces = trg.tokenize(["A dog runs in the park."])[0]
    assert "".join(pieces).replace("\u2581", " ").strip() == "a dog runs in the park."
    assert trg.detokenize(pieces) == "A dog runs in the park."


def test_training_the_same_text_gives_the_same_model():
    vocab = VocabConfig(type="sentencepiece", size=50)
    assert train_sentencepiece(LINES, vocab, False) == train_sentencepiece(LINES, vocab, False)


def test_joint_model_is_shared():
    config = load_config(
        TOY_CONFIG, ["vocab.type=sentencepiece", "vocab.joint=true", "vocab.size=90"]
    )
    src_text = (TOY_DATA / "train.de").read_text().splitlines()
    src, trg = make_tokenizers(config, None, (src_text, LINES))
    assert src.model == trg.model
    assert src.tokenize(["Ein Hund"]) and trg.tokenize(["A dog"])


def test_tokenized_bleu_uses_spacy_words_for_subword_models():
    config = load_config(TOY_CONFIG, ["vocab.type=sentencepiece", "vocab.size=60"])
    _, trg = make_tokenizers(config, None, (LINES, LINES))
    references = ["A dog runs in the park."]
    hypotheses = ["a DOG runs in the park ."]
    assert trg.tokenize(hypotheses) != trg.tokenize(references), "other pieces"
    scores = score_corpus(hypotheses, references, trg.words)
    assert scores.tokenized_bleu == pytest.approx(100.0)  # the same lowercased spaCy words
    assert scores.bleu == pytest.approx(sacrebleu.corpus_bleu(hypotheses, [references]).score)
    assert scores.bleu < 70  # sacreBLEU itself keeps the case


@pytest.fixture(scope="module")
def subword_run(tmp_path_factory) -> Path:
    """Trained until it translates the toy test set (BLEU 98.8): 6 epochs at a higher rate,
    validated (and a checkpoint kept) twice."""
    run_dir = tmp_path_factory.mktemp("subword") / "run"
    overrides = toy_overrides(
        run_dir, "vocab.type=sentencepiece", "vocab.model_type=bpe", "vocab.size=80",
        "train.keep_checkpoints=2", "train.epochs=6", "train.learning_rate=0.02",
        "train.validate_every=75",
    )  # fmt: skip
    train(load_config(TOY_CONFIG, overrides))
    return run_dir


def test_a_subword_checkpoint_is_self_contained(subword_run: Path, tmp_path: Path):
    payload = load_checkpoint(subword_run / "best.pt")
    assert payload["tokenizer"]["src_model"].dtype == torch.uint8
    moved = tmp_path / "elsewhere.pt"  # no other file travels with it
    moved.write_bytes((subword_run / "best.pt").read_bytes())
    translator = Translator.from_checkpoint(moved, "cpu")
    assert translator.trg.tokenizer.subword
    (result,) = translator.translate(["Ein Hund läuft im Park."])
    assert result.text == "A dog runs in the park."
    assert len(result.tokens) > 6  # pieces, not words
    assert result.attention.shape == (len(result.tokens) + 1, len(result.source_tokens) + 2)


def test_a_subword_model_translates_without_importing_spacy(subword_run: Path):
    """spaCy takes about a second to import: translating with a subword model from the
    command line must not pay it (checked in a fresh interpreter)."""
    completed = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "seq2seq", "translate", "--model",
         subword_run / "best.pt"],
        input=b"Ein Hund l\xc3\xa4uft im Park.\n", capture_output=True, timeout=300,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr.decode()
    assert completed.stdout.decode() == "A dog runs in the park.\n"
    imported = {line.split("|")[-1].strip() for line in completed.stderr.decode().splitlines()}
    assert "spacy" not in imported and "sacremoses" not in imported


def test_beam_nbest_and_unknown_word_replacement(subword_run: Path, cli, tmp_path: Path):
    checkpoint = subword_run / "best.pt"
    text = "Ein Hund läuft im Park.\n\nZwei Männer tanzen im Schnee.\n".encode()
    args = ["translate", "-m", checkpoint, "--beam", "4", "--nbest", "2", "--json"]
    code, out, err = cli(*args, "--replace-unk", "--plot-attention", tmp_path / "att", input=text)
    assert code == 0, err
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["line"] for r in records] == [1, 2, 3]
    assert records[0]["translation"] == "A dog runs in the park."
    assert len(records[0]["nbest"]) == 2
    assert sorted(p.name for p in (tmp_path / "att").iterdir()) == ["000001.png", "000003.png"]
    code, out, err = cli(*args, "--no-replace-unk", input=text)
    assert code == 0, err
    assert [json.loads(line) for line in out.splitlines()] == records  # pieces are never <unk>


def test_evaluate_subword_model(subword_run: Path, cli, tmp_path: Path):
    """Tokenized BLEU of a subword model is over spaCy words, recomputed here from the
    translations the command wrote."""
    output = tmp_path / "hyp.en"
    code, out, err = cli("evaluate", "-m", subword_run / "best.pt", "--src", TOY_DATA / "test.de",
                         "--ref", TOY_DATA / "test.en", "--json", "--output", output)  # fmt: skip
    assert code == 0, err
    result = json.loads(out)
    hypotheses = read_lines(output)
    references = read_lines(TOY_DATA / "test.en")
    assert result["bleu"] == round(sacrebleu.corpus_bleu(hypotheses, [references]).score, 2)
    words = Tokenizer("en")
    lowered = [[[t.lower() for t in line] for line in words.tokenize(side)]
               for side in (hypotheses, references)]  # fmt: skip
    expected = sacrebleu.corpus_bleu(
        [" ".join(line) for line in lowered[0]],
        [[" ".join(line) for line in lowered[1]]],
        tokenize="none",
        force=True,
    ).score
    assert result["tokenized_bleu"] == round(expected, 2)
    assert result["bleu"] > 90 and result["tokenized_bleu"] > 90  # it learned


def test_averaging_subword_checkpoints(subword_run: Path, tmp_path: Path):
    kept = sorted(subword_run.glob("ckpt-step*.pt"))
    assert [p.name for p in kept] == ["ckpt-step150.pt", "ckpt-step75.pt"]
    averaged = tmp_path / "avg.pt"
    save_checkpoint(average_checkpoints(kept), averaged)
    translator = Translator.from_checkpoint(averaged, "cpu")
    assert translator.translate(["Ein Hund läuft im Park."])[0].text


def test_resume_a_subword_run(tmp_path: Path):
    run_dir = tmp_path / "run"
    sets = ["vocab.type=sentencepiece", "vocab.size=70", "train.validate_every=1000"]
    train(load_config(TOY_CONFIG, toy_overrides(run_dir, *sets, "train.max_steps=3")))
    train(load_config(TOY_CONFIG, toy_overrides(run_dir, *sets, "train.max_steps=6")), resume=True)
    assert load_checkpoint(run_dir / "last.pt")["step"] == 6
    with pytest.raises(UserError, match="vocab.size=70, this config says 50"):
        changed = toy_overrides(run_dir, *sets, "vocab.size=50", "train.max_steps=9")
        train(load_config(TOY_CONFIG, changed), resume=True)


def test_word_tokenizer_is_its_own_word_tokenizer():
    tokenizer = Tokenizer("en")
    assert tokenizer.words is tokenizer and not tokenizer.subword
