"""Your own data: a tab-separated corpus (`data.format: tsv`) for training and
`evaluate --tsv`, and existing SentencePiece models (`vocab.*model_file`) instead of
training them; bad files are one error line with exit status 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sentencepiece
from conftest import TOY_CONFIG, TOY_DATA, toy_overrides
from test_cli import check_mistake, sets

from seq2seq.checkpoint import load_checkpoint
from seq2seq.config import load_config
from seq2seq.corpus import read_lines
from seq2seq.tokenizer import make_tokenizers
from seq2seq.translator import Translator
from seq2seq.vocab import SPECIALS


def write_tsv(path: Path, split: str, extra: list[str] = ()) -> Path:
    """The toy split as one TSV, as `paste` makes it, with `extra` lines at the end."""
    src, trg = read_lines(TOY_DATA / f"{split}.de"), read_lines(TOY_DATA / f"{split}.en")
    pairs = zip(src, trg, strict=True)
    path.write_text("".join(f"{s}\t{t}\n" for s, t in pairs) + "".join(extra), encoding="utf-8")
    return path


def tsv_folder(tmp_path: Path, extra: list[str] = ()) -> Path:
    folder = tmp_path / "data"
    folder.mkdir()
    write_tsv(folder / "train.tsv", "train", extra)
    write_tsv(folder / "val.tsv", "val")
    return folder


def test_train_on_a_tsv_corpus(tmp_path: Path, cli) -> None:
    long_pair = " ".join(["Hund"] * 30) + "\tdog\n"
    folder = tsv_folder(tmp_path, ["\t\n", long_pair])  # an empty pair, a too long one
    run_dir = tmp_path / "run"
    overrides = toy_overrides(run_dir, f"data.dir={folder}", "data.format=tsv",
                              "data.max_length=20", "train.max_steps=2")  # fmt: skip
    code, out, err = cli("train", "--config", TOY_CONFIG, *sets(*overrides))
    assert code == 0, err
    assert "training pairs: 400 (2 skipped: empty or longer than 20 tokens)" in err
    assert load_checkpoint(run_dir / "best.pt")["config"]["data"]["format"] == "tsv"


def test_a_bad_tsv_line_stops_training_with_one_line(tmp_path: Path, cli) -> None:
    folder = tsv_folder(tmp_path, ["Ein Hund.\tA dog.\tEin Hund.\n"])
    overrides = toy_overrides(tmp_path / "run", f"data.dir={folder}", "data.format=tsv")
    code, _, err = cli("train", "--config", TOY_CONFIG, *sets(*overrides))
    check_mistake(code, err, [f"{folder / 'train.tsv'}:401: expected source<TAB>target"])


def test_evaluate_tsv_scores_as_src_and_ref(toy_checkpoint: Path, tmp_path: Path, cli) -> None:
    tsv = write_tsv(tmp_path / "test.tsv", "test")
    common = ["evaluate", "-m", toy_checkpoint, "--beam", "1", "--json"]
    code, by_files, err = cli(*common, "--src", TOY_DATA / "test.de", "--ref", TOY_DATA / "test.en")
    assert code == 0, err
    code, by_tsv, err = cli(*common, "--tsv", tsv)
    assert code == 0, err
    assert json.loads(by_tsv) == json.loads(by_files)
    hypotheses = tmp_path / "hyp.en"  # the references but the first line
    references = read_lines(TOY_DATA / "test.en")
    hypotheses.write_text("".join(f"{line}\n" for line in ["A dog.", *references[1:]]))
    code, out, err = cli("evaluate", "--hyp", hypotheses, "--tsv", tsv, "--json")
    assert code == 0 and 90 < json.loads(out)["bleu"] < 100, err


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--tsv", "{tsv}", "--ref", "{ref}"], "--ref FILE, or --tsv FILE"),
        (["--tsv", "{tsv}", "--src", "{src}"], "--src (with --ref) or the sources of --tsv"),
        (["--hyp", "{short}", "--tsv", "{tsv}"], "has 2 lines but"),
    ],
)
def test_evaluate_tsv_mistakes(toy_checkpoint, tmp_path: Path, cli, args, expected) -> None:
    short = tmp_path / "short.en"
    short.write_text("A dog.\nA cat.\n", encoding="utf-8")
    names = {"tsv": write_tsv(tmp_path / "test.tsv", "test"), "short": short,
             "src": TOY_DATA / "test.de", "ref": TOY_DATA / "test.en"}  # fmt: skip
    filled = [arg.format(**names) for arg in args]
    code, _, err = cli("evaluate", "-m", toy_checkpoint, *filled)
    check_mistake(code, err, [expected])


# -- existing SentencePiece models -----------------------------------------------------------


def sentencepiece_file(path: Path, *texts: Path) -> Path:
    """A model made elsewhere: SentencePiece's defaults (<unk>, <s>, </s>, no padding)."""
    sentencepiece.SentencePieceTrainer.train(
        input=",".join(map(str, texts)), model_prefix=str(path.with_suffix("")),
        vocab_size=60, hard_vocab_limit=False, minloglevel=2, num_threads=1,
    )  # fmt: skip
    return path


def test_existing_models_are_used_and_copied_into_the_checkpoint(tmp_path: Path, cli) -> None:
    src_model = sentencepiece_file(tmp_path / "de.model", TOY_DATA / "train.de")
    trg_model = sentencepiece_file(tmp_path / "en.model", TOY_DATA / "train.en")
    run_dir = tmp_path / "run"
    overrides = toy_overrides(run_dir, "vocab.type=sentencepiece", "train.max_steps=2",
                              f"vocab.src_model_file={src_model}",
                              f"vocab.trg_model_file={trg_model}")  # fmt: skip
    code, _, err = cli("train", "--config", TOY_CONFIG, *sets(*overrides))
    assert code == 0, err
    payload = load_checkpoint(run_dir / "best.pt")
    assert bytes(payload["tokenizer"]["trg_model"].numpy()) == trg_model.read_bytes()
    processor = sentencepiece.SentencePieceProcessor(model_file=str(trg_model))
    pieces = [processor.id_to_piece(i) for i in range(3, processor.get_piece_size())]
    assert payload["vocab"]["trg"] == [*SPECIALS, *pieces]  # its <s> and </s> give way to ours
    expected = processor.encode(["Two dogs run."], out_type=str)
    src_model.unlink()
    trg_model.unlink()  # the checkpoint needs neither file any more
    translator = Translator.from_checkpoint(run_dir / "best.pt", "cpu")
    assert translator.trg.tokenize(["Two dogs run."]) == expected


def test_a_joint_model_file_serves_both_sides(tmp_path: Path) -> None:
    texts = (TOY_DATA / "train.de", TOY_DATA / "train.en")
    model = sentencepiece_file(tmp_path / "joint.model", *texts)
    config = load_config(TOY_CONFIG, ["vocab.type=sentencepiece", "vocab.joint=true",
                                      f"vocab.model_file={model}"])  # fmt: skip
    src, trg = make_tokenizers(config, None, ([], []))
    assert src.model == trg.model == model.read_bytes()


def test_our_own_models_keep_their_ids(tmp_path: Path) -> None:
    """A model trained here already has our specials at our ids: its vocabulary is its
    pieces in id order, so checkpoints made before model files existed read the same."""
    config = load_config(TOY_CONFIG, ["vocab.type=sentencepiece", "vocab.size=60"])
    lines = read_lines(TOY_DATA / "train.en")
    _, trg = make_tokenizers(config, None, (lines, lines))
    processor = sentencepiece.SentencePieceProcessor(model_proto=trg.model)
    assert trg.pieces() == [processor.id_to_piece(i) for i in range(processor.get_piece_size())]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "file not found"),
        (b"", "not a SentencePiece model (empty file)"),
        (b"seed: 1\n", "not a SentencePiece model"),
    ],
)
def test_a_bad_model_file_is_one_line(tmp_path: Path, cli, content, expected) -> None:
    model = tmp_path / "en.model"
    if content is not None:
        model.write_bytes(content)
    overrides = toy_overrides(tmp_path / "run", "vocab.type=sentencepiece",
                              f"vocab.trg_model_file={model}")  # fmt: skip
    code, _, err = cli("train", "--config", TOY_CONFIG, *sets(*overrides))
    check_mistake(code, err, [f"vocab.trg_model_file: {model}: {expected}"])


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["vocab.src_model_file=de.model"], "src_model_file needs type: sentencepiece"),
        (["vocab.type=sentencepiece", "vocab.model_file=x.model"], "set joint: true"),
        (["vocab.type=sentencepiece", "vocab.joint=true", "vocab.trg_model_file=en.model"],
         "name it with model_file"),
        (["data.format=tsv", "data.dataset=multi30k"], "format must be files"),
    ],
)  # fmt: skip
def test_settings_that_do_not_fit_together(cli, overrides: list[str], expected: str) -> None:
    code, _, err = cli("train", "--config", TOY_CONFIG, *sets(*overrides))
    check_mistake(code, err, ["--set", expected])
