"""Bad input never crashes a command and never loses work.

Each case: one line on stderr naming what is wrong and where, exit status 2, no
traceback, nothing on disk damaged; or, for odd but valid input, a normal result with
exactly one output line per input line."""

from __future__ import annotations

import gzip
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import ROOT, TOY_CONFIG, TOY_DATA, toy_overrides
from hypothesis import given, settings
from hypothesis import strategies as st

from seq2seq.checkpoint import load_checkpoint
from seq2seq.tokenizer import Tokenizer
from seq2seq.vocab import UNK

WORD_TOKENIZERS = [Tokenizer("de"), Tokenizer("en")]


def one_error_line(code: int, err: str, *expected: str) -> None:
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for text in expected:
        assert text in lines[0], lines[0]


def data_folder(tmp_path: Path, src: str | bytes, trg: str | bytes, suffix: str = "") -> Path:
    """A data folder whose train split is the given text and whose val split is the toy's."""
    folder = tmp_path / "data"
    folder.mkdir()
    for lang, text in (("de", src), ("en", trg)):
        raw = text.encode("utf-8") if isinstance(text, str) else text
        path = folder / f"train.{lang}{suffix}"
        path.write_bytes(gzip.compress(raw) if suffix == ".gz" else raw)
        shutil.copy(TOY_DATA / f"val.{lang}", folder / f"val.{lang}")
    return folder


def train_args(tmp_path: Path, folder: Path, *extra: str) -> list[str]:
    sets = [f"data.dir={folder}", f"train.run_dir={tmp_path / 'run'}", "train.epochs=1", *extra]
    return ["train", "--config", str(TOY_CONFIG), *[a for s in sets for a in ("--set", s)]]


# -- data --------------------------------------------------------------------------------------


def test_unicode_line_separators_do_not_split_lines(tmp_path: Path, cli):
    """U+2028, U+0085 and a lone \\r inside a line: counted as `wc -l` counts (by \\n)."""
    src = "Ein Hund\u2028läuft.\nEin Mann\x85schläft.\nEine Frau\rsitzt.\n" * 20
    trg = "A dog runs.\nA man sleeps.\nA woman sits.\n" * 20
    assert src.count("\n") == trg.count("\n") == 60
    code, out, err = cli(*train_args(tmp_path, data_folder(tmp_path, src, trg)))
    assert code == 0, err
    assert "training pairs: 60 (0 skipped" in err


def test_empty_training_files(tmp_path: Path, cli):
    code, out, err = cli(*train_args(tmp_path, data_folder(tmp_path, "", "")))
    one_error_line(code, err, "no usable training pairs")


def test_training_files_of_only_empty_lines(tmp_path: Path, cli):
    code, out, err = cli(*train_args(tmp_path, data_folder(tmp_path, "\n\n\n", "\n\n\n")))
    one_error_line(code, err, "no usable training pairs")


def test_empty_and_overlong_training_pairs_are_skipped_and_counted(tmp_path: Path, cli):
    long_line = "Hund " * 20_000  # 100,000 characters
    src = "Ein Hund läuft.\n\n" + long_line + "\n" + "Ein Mann schläft.\n" * 10
    trg = "A dog runs.\nA cat.\nA long line.\n" + "A man sleeps.\n" * 10
    code, out, err = cli(*train_args(tmp_path, data_folder(tmp_path, src, trg)))
    assert code == 0, err
    assert "training pairs: 11 (2 skipped: empty or longer than 100 tokens)" in err


def test_invalid_utf8_names_file_and_line(tmp_path: Path, cli):
    src = b"Ein Hund.\nEin \xff Mann.\n"
    code, out, err = cli(*train_args(tmp_path, data_folder(tmp_path, src, "A dog.\nA man.\n")))
    one_error_line(code, err, "train.de:2", "invalid UTF-8")


def test_truncated_gzip(tmp_path: Path, cli):
    folder = data_folder(tmp_path, "Ein Hund.\n" * 500, "A dog.\n" * 500, suffix=".gz")
    path = folder / "train.de.gz"
    path.write_bytes(path.read_bytes()[:-12])
    code, out, err = cli(*train_args(tmp_path, folder))
    one_error_line(code, err, "train.de.gz", "damaged gzip")


def test_a_gz_file_that_is_not_gzip(tmp_path: Path, cli):
    folder = data_folder(tmp_path, "Ein Hund.\n", "A dog.\n", suffix=".gz")
    (folder / "train.en.gz").write_bytes(b"A dog.\n")
    code, out, err = cli(*train_args(tmp_path, folder))
    one_error_line(code, err, "train.en.gz")


def test_data_dir_that_does_not_exist(tmp_path: Path, cli):
    code, out, err = cli(*train_args(tmp_path, tmp_path / "nowhere"))
    one_error_line(code, err, "data.dir", "nowhere")
    assert not (tmp_path / "run" / "last.pt").exists()


# -- translate ---------------------------------------------------------------------------------

ODD_LINES = [
    "Ein Hund läuft \U0001f415\U0001f3c3 im Park.",  # emoji
    "\u05d0\u05d9\u05e9 \u05d4\u05d5\u05dc\u05da \u0627\u0644\u0631\u062c\u0644",  # RTL
    "Ein Mann\u0301\u0308 schla\u0308ft.",  # combining marks
    "Ein\x00Hund\x07 mit\x1b[31m Farbe\x7f.",  # control characters
    "Ein Hund\u2028läuft\x85im\x0b Park\x0c.\r",  # line and paragraph separators
    "\u202eRechts nach links\u202c",  # bidi controls
    "Xyzzy Plugh Quuxbar",  # only unknown words
    "a",  # a single character
    "",  # an empty line
    "   \t  ",  # only whitespace
]


def test_odd_input_gives_one_line_each(toy_checkpoint: Path, cli):
    text = "\n".join(ODD_LINES) + "\n"
    code, out, err = cli("translate", "-m", toy_checkpoint, "--beam", "2", input=text.encode())
    assert code == 0, err
    assert out.count("\n") == len(ODD_LINES)
    outputs = out.split("\n")[:-1]
    assert outputs[ODD_LINES.index("")] == ""
    assert outputs[ODD_LINES.index("   \t  ")] == ""


def unknown_everywhere(translator, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every output token an <unk> replaced by the source token it attends to: the output is
    made of the input's own text, the worst case for keeping one line per line."""
    model = translator.searchable()  # the model as prepared for decoding (fp32)
    decoder_step = model.decoder.step

    def step(tokens, state, memory):
        log_probs, state, weights = decoder_step(tokens, state, memory)
        return (
            torch.log_softmax(log_probs + 50.0 * (torch.arange(log_probs.size(1)) == UNK), 1),
            state,
            weights,
        )

    monkeypatch.setattr(model.decoder, "step", step)
    decode = translator.decode.updated(beam_size=1, replace_unk=True)
    monkeypatch.setattr(translator, "decode", decode)


@settings(max_examples=300)
@given(st.text(max_size=60))
def test_no_token_holds_a_line_break(text: str):
    for tokenizer in WORD_TOKENIZERS:
        for token in tokenizer.tokenize([text])[0]:
            assert token and len(token.splitlines()) == 1 and token.strip() == token, repr(token)


@settings(max_examples=100)
@given(st.lists(st.text(max_size=40), min_size=1, max_size=8))
def test_arbitrary_unicode_never_breaks_line_alignment(
    toy_translator, monkeypatch: pytest.MonkeyPatch, lines: list[str]
):
    lines = [line.replace("\n", " ") for line in lines]  # one input line each
    with monkeypatch.context() as patch:
        unknown_everywhere(toy_translator, patch)
        results = toy_translator.translate(lines)
    assert len(results) == len(lines)
    for line, result in zip(lines, results, strict=True):
        assert (result.text == "") == (not line.split()), (line, result.text)
        assert len(result.text.splitlines()) <= 1 and "\n" not in result.text, repr(result.text)
        assert set(result.tokens) <= set(result.source_tokens)  # all copied from the input


def test_arbitrary_bytes_through_the_command(toy_checkpoint: Path, tmp_path: Path, cli):
    """Random UTF-8 text with every kind of line separator inside lines: the output file
    has as many lines as `wc -l` counts in the input."""
    alphabet = "ab Ü\u2028\x85\r\x00\u200f\U0001f600e\u0301.,;"
    generator = torch.Generator().manual_seed(0)
    picks = torch.randint(0, len(alphabet), (300, 30), generator=generator).tolist()
    text = "\n".join("".join(alphabet[i] for i in row) for row in picks) + "\n"
    source = tmp_path / "odd.de"
    source.write_text(text, encoding="utf-8")
    output = tmp_path / "odd.en"
    code, out, err = cli("translate", "-m", toy_checkpoint, "--beam", "1", "--input", source,
                         "--output", output)  # fmt: skip
    assert code == 0, err
    assert output.read_bytes().count(b"\n") == text.count("\n") == 300


def test_attention_pictures_into_an_impossible_folder(toy_checkpoint: Path, tmp_path: Path, cli):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    code, out, err = cli("translate", "-m", toy_checkpoint, "--plot-attention", blocker / "att",
                         input=b"Ein Hund.\n")  # fmt: skip
    one_error_line(code, err, "cannot create")


def test_stdin_closed_at_once(toy_checkpoint: Path, cli):
    code, out, err = cli("translate", "-m", toy_checkpoint, input=b"")
    assert code == 0 and out == "", err


def test_output_to_a_closed_pipe_exits_quietly(toy_checkpoint: Path):
    lines = "Ein Hund läuft im Park.\n" * 3000
    command = (
        f"{sys.executable} -m seq2seq translate -m {toy_checkpoint} --beam 1 --batch-size 8 "
        "| head -1; echo status=${PIPESTATUS[0]}"
    )
    result = subprocess.run(
        ["bash", "-c", command], input=lines.encode(), capture_output=True, cwd=ROOT
    )
    assert result.stdout.decode().splitlines() == ["A dog runs in the park.", "status=0"]
    assert result.stderr == b"", result.stderr.decode()


# -- resources ---------------------------------------------------------------------------------


def test_out_of_memory_in_training_saves_and_suggests_a_smaller_batch(tmp_path, monkeypatch, cli):
    """The suggested options, added to `train --run-dir RUN`, continue the run."""
    run_dir = tmp_path / "run"
    overrides = toy_overrides(run_dir, "train.save_every=1000", "train.max_steps=8")
    args = ["train", "--config", TOY_CONFIG, *[a for o in overrides for a in ("--set", o)]]
    from seq2seq.model import Seq2Seq

    forward = Seq2Seq.forward
    calls = {"n": 0}

    def failing_forward(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:
            raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried 9 GB")
        return forward(self, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(Seq2Seq, "forward", failing_forward)
        code, out, err = cli(*args)
    assert code == 2 and "Traceback" not in err, err
    error = err.split("error: ")[-1]  # after training's progress lines
    for text in ("out of memory", "train.batch_size=8", str(run_dir / "last.pt")):
        assert text in error, error
    assert load_checkpoint(run_dir / "last.pt")["step"] == 3  # the work before it is saved
    suggested = re.search(r"resume with (--resume [^(]*)\(", error).group(1)
    code, out, err = cli("train", "--run-dir", run_dir, *shlex.split(suggested))
    assert code == 0, err
    assert "resuming" in err and "at epoch 1, step 3" in err
    finished = load_checkpoint(run_dir / "last.pt")
    assert finished["config"]["train"]["batch_size"] == 8
    assert finished["config"]["train"]["accumulate_steps"] == 2
    assert "epoch 1 restarts from its first batch" in err
    assert finished["training"]["progress"]["step"] == 8


def test_out_of_memory_in_translation_suggests_a_smaller_batch(toy_checkpoint, cli, monkeypatch):
    import seq2seq.translator

    def out_of_memory(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(seq2seq.translator, "greedy_search", out_of_memory)
    code, out, err = cli("translate", "-m", toy_checkpoint, "--beam", "1", input=b"Ein Hund.\n")
    one_error_line(code, err, "out of memory", "--batch-size")


# -- evaluate ----------------------------------------------------------------------------------


def test_evaluate_hypotheses_of_another_length(tmp_path: Path, cli):
    hyp = tmp_path / "hyp.en"
    hyp.write_text("A dog runs.\n", encoding="utf-8")
    code, out, err = cli("evaluate", "--hyp", hyp, "--ref", TOY_DATA / "test.en")
    one_error_line(code, err, "hyp.en has 1 lines", "test.en has 56")


def test_evaluate_an_empty_hypothesis_file(tmp_path: Path, cli):
    hyp = tmp_path / "hyp.en"
    hyp.write_text("", encoding="utf-8")
    code, out, err = cli("evaluate", "--hyp", hyp, "--ref", TOY_DATA / "test.en")
    one_error_line(code, err, "hyp.en has 0 lines")
    code, out, err = cli("evaluate", "--hyp", hyp, "--ref", hyp)
    one_error_line(code, err, "nothing to score")


def test_evaluate_scores_a_hypothesis_file(cli):
    reference = TOY_DATA / "test.en"
    code, out, err = cli("evaluate", "--hyp", reference, "--ref", reference, "--json")
    assert code == 0, err
    assert '"bleu": 100.0' in out and '"tokenized_bleu": 100.0' in out


def test_evaluate_needs_a_model_or_hypotheses(cli):
    code, out, err = cli("evaluate", "--ref", TOY_DATA / "test.en")
    one_error_line(code, err, "--hyp")
