"""End to end through `python -m seq2seq` on the toy data: results on stdout, one clear
line on stderr and exit status 2 for every user mistake.

Interpreter start-up (torch, spaCy) costs seconds, so the main paths run as real
processes and their variations run `seq2seq.cli.main()` in this process (`cli`)."""

from __future__ import annotations

import json
import math
import os
import random
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import sacrebleu
import spacy
import torch
import torch.nn.functional as F
import typer.main
from conftest import ROOT, TOY_CONFIG, TOY_DATA, one_error_line, run_cli, toy_overrides

import seq2seq.cli
import seq2seq.training
from seq2seq import console
from seq2seq.checkpoint import load_checkpoint
from seq2seq.config import load_config
from seq2seq.corpus import read_lines
from seq2seq.errors import UserError
from seq2seq.translator import Translator

SOURCES = read_lines(TOY_DATA / "test.de")
REFERENCES = read_lines(TOY_DATA / "test.en")
SIGNATURE = "nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:"


def sets(*overrides: str) -> list[str]:
    return [part for override in overrides for part in ("--set", override)]


def test_help_lists_the_commands() -> None:
    code, out, err = run_cli("--help")
    assert code == 0, err
    for command in ("train", "translate", "evaluate"):
        assert command in out


def test_train_writes_the_run(tmp_path: Path, cli, monkeypatch: pytest.MonkeyPatch) -> None:
    run_dir = tmp_path / "run"
    monkeypatch.chdir(tmp_path)  # paths in the config must not depend on the working folder
    code, out, err = cli(
        "train", "--config", TOY_CONFIG, *sets(*toy_overrides(run_dir, "train.max_steps=30"))
    )
    assert code == 0, err
    assert out == "", "training reports on stderr; stdout stays clean"
    for name in ("best.pt", "last.pt", "config.yaml", "metrics.jsonl", "curves.png"):
        assert (run_dir / name).is_file(), name
    assert f"done: {run_dir / 'best.pt'}" in err
    (translation,) = Translator.from_checkpoint(run_dir / "best.pt", "cpu").translate(SOURCES[:1])
    assert translation.text


TRICKY_LINES = [
    SOURCES[0],
    "",
    SOURCES[1],
    "Ein Hund\u2028läuft im Park.",  # one line for us, two for str.splitlines()
    "   ",
    SOURCES[2],
    "Ein Hund\u0085tanzt.",
]


def expected_lines(translator: Translator, lines: list[str]) -> list[str]:
    return [translator.translate([line])[0].text for line in lines]


def test_translate_stdin_one_line_out_per_line_in(toy_checkpoint: Path, toy_translator) -> None:
    text = "".join(line + "\n" for line in TRICKY_LINES)
    code, out, err = run_cli(
        "translate", "--model", toy_checkpoint, "--batch-size", "2", input=text
    )
    assert code == 0, err
    assert out.endswith("\n")
    outputs = out.split("\n")[:-1]
    assert len(outputs) == len(TRICKY_LINES)
    assert outputs[1] == "" and outputs[4] == ""
    assert all(outputs[i] for i in (0, 2, 3, 5, 6))
    assert outputs == expected_lines(toy_translator, TRICKY_LINES)


def test_translate_file_to_file(tmp_path: Path, toy_checkpoint: Path, toy_translator, cli) -> None:
    source = tmp_path / "in.de"
    # CRLF endings and no newline after the last line: still one output line per line.
    source.write_bytes("\r\n".join(TRICKY_LINES).encode("utf-8"))
    target = tmp_path / "out.en"
    code, out, err = cli(
        "translate", "--model", toy_checkpoint, "--input", source, "--output", target
    )
    assert code == 0, err
    assert out == ""
    written = target.read_text(encoding="utf-8")
    assert written.endswith("\n")
    assert written.split("\n")[:-1] == expected_lines(toy_translator, TRICKY_LINES)


def test_translate_empty_input(toy_checkpoint: Path, cli) -> None:
    assert cli("translate", "--model", toy_checkpoint, input=b"")[:2] == (0, "")


def test_evaluate_prints_scores_with_signature(toy_checkpoint: Path, tmp_path: Path, cli) -> None:
    output = tmp_path / "hyp.en"
    code, out, err = cli(
        "evaluate",
        "--model",
        toy_checkpoint,
        "--src",
        TOY_DATA / "test.de",
        "--ref",
        TOY_DATA / "test.en",
        "--output",
        output,
    )
    assert code == 0, err
    hypotheses = read_lines(output)
    assert len(hypotheses) == len(SOURCES)
    lines = out.splitlines()
    assert lines[0] == f"{len(SOURCES)} sentences translated, beam 5, alpha 0.6"
    bleu = sacrebleu.corpus_bleu(hypotheses, [REFERENCES])
    assert lines[1] == f"BLEU = {bleu.score:.2f}  ({SIGNATURE}{sacrebleu.__version__})"
    chrf = sacrebleu.corpus_chrf(hypotheses, [REFERENCES]).score
    assert lines[2].startswith(f"chrF = {chrf:.2f}  (")
    assert lines[3].startswith("tokenized BLEU = ") and lines[4].startswith("perplexity = ")


def spacy_bleu(hypotheses: list[str], references: list[str]) -> float:
    """The tutorial's measure written out: BLEU-4 over lowercased spaCy words."""
    nlp = spacy.blank("en")

    def words(line: str) -> str:
        return " ".join(token.text.lower() for token in nlp.tokenizer(line) if not token.is_space)

    hyp, ref = [words(line) for line in hypotheses], [words(line) for line in references]
    return sacrebleu.corpus_bleu(hyp, [ref], tokenize="none", force=True).score


def loss_one_by_one(checkpoint: Path) -> float:
    """Mean cross-entropy per reference token, gold previous tokens fed, one sentence at a
    time (no batching, no padding)."""
    translator = Translator.from_checkpoint(checkpoint, "cpu")
    total, tokens = 0.0, 0
    src_words = translator.src.tokenize(SOURCES)
    trg_words = translator.trg.tokenize(REFERENCES)
    with torch.no_grad():
        for source, target in zip(src_words, trg_words, strict=True):
            src = translator.src.ids(source)[None]
            trg = translator.trg.ids(target)
            logits = translator.models[0](src, torch.tensor([src.size(1)]), trg[None, :-1], 1.0)[0]
            total += float(F.cross_entropy(logits, trg[1:], reduction="sum"))
            tokens += len(trg) - 1
    return total / tokens


def test_evaluate_json(toy_checkpoint: Path, tmp_path: Path, cli) -> None:
    """The scores, recomputed from the translations the command wrote: sacreBLEU, and the
    tutorial's tokenized BLEU and perplexity written out here."""
    output = tmp_path / "hyp.en"
    code, out, err = cli(
        "evaluate",
        "--model",
        toy_checkpoint,
        "--src",
        TOY_DATA / "test.de",
        "--ref",
        TOY_DATA / "test.en",
        "--json",
        "--output",
        output,
    )
    assert code == 0, err
    assert out.count("\n") == 1, "one JSON object on one line"
    result = json.loads(out)
    assert isinstance(result, dict)
    for key in ("bleu", "chrf", "tokenized_bleu", "perplexity"):
        assert isinstance(result[key], float), key
    assert SIGNATURE in result["bleu_signature"]
    assert result["beam"] == 5 and result["sentences"] == len(SOURCES)  # the checkpoint's
    hypotheses = read_lines(output)
    # Rounded as the text report prints them: scores to 2 decimals, losses to 4.
    assert result["bleu"] == round(sacrebleu.corpus_bleu(hypotheses, [REFERENCES]).score, 2)
    assert result["chrf"] == round(sacrebleu.corpus_chrf(hypotheses, [REFERENCES]).score, 2)
    assert result["tokenized_bleu"] == round(spacy_bleu(hypotheses, REFERENCES), 2)
    loss = loss_one_by_one(toy_checkpoint)
    assert result["loss"] == pytest.approx(loss, rel=1e-4, abs=5e-5)
    assert result["loss"] == round(result["loss"], 4)
    assert result["perplexity"] == pytest.approx(math.exp(loss), abs=0.01)
    assert result["perplexity"] == round(result["perplexity"], 2)


def test_evaluate_a_hypothesis_file_with_an_independent_scorer(tmp_path: Path, cli) -> None:
    hypotheses = [line.lower().replace("a ", "the ", 1) for line in REFERENCES]
    hyp = tmp_path / "hyp.en"
    hyp.write_text("".join(line + "\n" for line in hypotheses), encoding="utf-8")
    code, out, err = cli("evaluate", "--hyp", hyp, "--ref", TOY_DATA / "test.en", "--json")
    assert code == 0, err
    result = json.loads(out)
    bleu = sacrebleu.corpus_bleu(hypotheses, [REFERENCES]).score
    assert 0 < bleu < 90 and result["bleu"] == round(bleu, 2)
    assert result["chrf"] == round(sacrebleu.corpus_chrf(hypotheses, [REFERENCES]).score, 2)
    tokenized = spacy_bleu(hypotheses, REFERENCES)
    assert tokenized > bleu and result["tokenized_bleu"] == round(tokenized, 2)  # lowercased


def test_evaluate_warns_of_empty_reference_lines(tmp_path: Path, cli) -> None:
    hyp, ref = tmp_path / "hyp.en", tmp_path / "ref.en"
    hyp.write_text("A dog.\nA man.\nA cat.\nA car.\n", encoding="utf-8")
    ref.write_text("A dog.\n\nA cat.\n  \n", encoding="utf-8")
    code, out, err = cli("evaluate", "--hyp", hyp, "--ref", ref)
    assert code == 0, err
    assert err.splitlines() == [f"warning: {ref}: 2 empty reference lines (the first: line 2)"]


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


# -- cli.main: a bug is exit 1 with a hint, Ctrl-C is exit 130 ---------------------------


@pytest.fixture
def failing_translate(monkeypatch: pytest.MonkeyPatch):
    """Make `translate` raise the given exception where it loads the model."""
    import seq2seq.translator

    def fail_with(error: BaseException) -> None:
        def load(*args, **kwargs):
            raise error

        monkeypatch.setattr(seq2seq.translator.Translator, "from_checkpoint", load)

    monkeypatch.setattr(seq2seq.cli, "_debug", False)  # --debug sets a module global
    return fail_with


def test_an_internal_error_is_exit_1_with_a_hint(failing_translate, cli) -> None:
    failing_translate(ZeroDivisionError("division by zero"))
    code, out, err = cli("translate", "-m", "model.pt", input=b"Ein Hund.\n")
    assert code == 1 and out == ""
    assert err == "internal error: ZeroDivisionError: division by zero (rerun with --debug)\n"


def test_debug_shows_the_traceback(failing_translate, monkeypatch: pytest.MonkeyPatch) -> None:
    failing_translate(ZeroDivisionError("division by zero"))
    monkeypatch.setattr(sys, "argv", ["seq2seq", "--debug", "translate", "-m", "model.pt"])
    with pytest.raises(ZeroDivisionError):
        seq2seq.cli.main()
    failing_translate(UserError("a user mistake"))
    with pytest.raises(UserError):
        seq2seq.cli.main()


def test_ctrl_c_is_exit_130(failing_translate, cli) -> None:
    failing_translate(KeyboardInterrupt())
    code, out, err = cli("translate", "-m", "model.pt", input=b"Ein Hund.\n")
    # Typer itself turns Ctrl-C into a quiet exit 130, before main() would print "interrupted".
    assert code == 130 and out == "" and err.strip() in ("", "interrupted")


def test_resume_and_overwrite_together_are_refused(tmp_path: Path, cli) -> None:
    run_dir = tmp_path / "run"
    args = ["--config", TOY_CONFIG, *sets(*toy_overrides(run_dir, "train.max_steps=1"))]
    code, out, err = cli("train", *args, "--resume", "--overwrite")
    check_mistake(code, err, ["--resume and --overwrite"])
    assert not run_dir.exists()
    code, out, err = cli("train", "--run-dir", run_dir)
    check_mistake(code, err, ["train needs --config FILE (or --resume --run-dir RUN_DIR)"])


# -- user mistakes: exit status 2, one line on stderr, no traceback ---------------------


def copy_toy_data(folder: Path) -> Path:
    shutil.copytree(TOY_DATA, folder)
    return folder


def corrupt_line(path: Path, number: int) -> None:
    lines = path.read_bytes().split(b"\n")
    lines[number - 1] = lines[number - 1] + b" \xc3\x28"
    path.write_bytes(b"\n".join(lines))


def mismatched_evaluate(tmp: Path, checkpoint: Path) -> tuple[list, str | None, list[str]]:
    src, ref = tmp / "src.de", tmp / "ref.en"
    src.write_text("Ein Hund.\nEine Frau.\nEin Mann.\n", encoding="utf-8")
    ref.write_text("A dog.\nA woman.\n", encoding="utf-8")
    args = ["evaluate", "--model", checkpoint, "--src", src, "--ref", ref]
    return args, None, [f"{src} has 3 lines", f"{ref} has 2"]


def mismatched_training_data(tmp: Path, checkpoint: Path) -> tuple[list, str | None, list[str]]:
    data = copy_toy_data(tmp / "data")
    valid = data / "val.en"
    valid.write_text("".join(line + "\n" for line in read_lines(valid)[:-1]), encoding="utf-8")
    args = [
        "train",
        "--config",
        TOY_CONFIG,
        *sets(f"train.run_dir={tmp / 'run'}", f"data.dir={data}"),
    ]
    return args, None, [f"{data / 'val.de'} has 56 lines", f"{valid} has 55"]


def missing_data_file(tmp: Path, checkpoint: Path) -> tuple[list, str | None, list[str]]:
    data = copy_toy_data(tmp / "data")
    (data / "train.en").unlink()
    args = [
        "train",
        "--config",
        TOY_CONFIG,
        *sets(f"train.run_dir={tmp / 'run'}", f"data.dir={data}"),
    ]
    return args, None, [str(data / "train.en"), "not found"]


def invalid_utf8_in_data(tmp: Path, checkpoint: Path) -> tuple[list, str | None, list[str]]:
    data = copy_toy_data(tmp / "data")
    corrupt_line(data / "train.en", 7)
    args = [
        "train",
        "--config",
        TOY_CONFIG,
        *sets(f"train.run_dir={tmp / 'run'}", f"data.dir={data}"),
    ]
    return args, None, [f"{data / 'train.en'}:7", "invalid UTF-8"]


def invalid_utf8_on_stdin(tmp: Path, checkpoint: Path) -> tuple[list, str | None, list[str]]:
    return ["translate", "--model", checkpoint], "Ein Hund.\nkaputt \udcff\n", ["<stdin>:2"]


def unknown_config_key(tmp: Path, checkpoint: Path) -> tuple[list, str | None, list[str]]:
    config = tmp / "bad.yaml"
    config.write_text("seed: 1\ntrain:\n  epoch: 3\n", encoding="utf-8")
    return ["train", "--config", config], None, [f"{config}:3", "'train.epochs'"]


def unknown_set_key(tmp: Path, checkpoint: Path) -> tuple[list, str | None, list[str]]:
    args = ["train", "--config", TOY_CONFIG, *sets("train.epoch=3")]
    return args, None, ["train.epoch=3", "did you mean 'train.epochs'?"]


def wrong_value_type(tmp: Path, checkpoint: Path) -> tuple[list, str | None, list[str]]:
    config = tmp / "bad.yaml"
    config.write_text("seed: 1\ntrain:\n  epochs: many\n", encoding="utf-8")
    return ["train", "--config", config], None, [f"{config}:3", "train.epochs"]


def foreign_checkpoint(tmp: Path, checkpoint: Path) -> tuple[list, str | None, list[str]]:
    model = tmp / "random.pt"
    # A pickle header: torch warns about the protocol, which must not reach stderr.
    model.write_bytes(b"\x80\x05" + random.Random(0).randbytes(4000))
    return ["translate", "--model", model], "Ein Hund.\n", [str(model), "not a"]


def missing_checkpoint(tmp: Path, checkpoint: Path) -> tuple[list, str | None, list[str]]:
    model = tmp / "nothing.pt"
    return ["translate", "--model", model], "Ein Hund.\n", [str(model), "not found"]


def missing_input(tmp: Path, checkpoint: Path) -> tuple[list, str | None, list[str]]:
    source = tmp / "missing.de"
    return ["translate", "--model", checkpoint, "--input", source], None, [str(source)]


def seed_beyond_64_bits(tmp: Path, checkpoint: Path) -> tuple[list, str | None, list[str]]:
    args = ["train", "--config", TOY_CONFIG, *sets(f"seed={2**70}")]
    return args, None, [f"seed={2**70}", "seed: Input should be less than"]


def existing_run(tmp: Path, checkpoint: Path) -> tuple[list, str | None, list[str]]:
    run_dir = checkpoint.parent
    args = ["train", "--config", TOY_CONFIG, *sets(*toy_overrides(run_dir))]
    return args, None, [str(run_dir), "--overwrite"]


MISTAKES: list[Callable[[Path, Path], tuple[list, str | None, list[str]]]] = [
    mismatched_evaluate,
    mismatched_training_data,
    missing_data_file,
    invalid_utf8_in_data,
    invalid_utf8_on_stdin,
    unknown_config_key,
    unknown_set_key,
    wrong_value_type,
    foreign_checkpoint,
    missing_checkpoint,
    missing_input,
    seed_beyond_64_bits,
    existing_run,
]


def check_mistake(code: int, err: str, expected: list[str]) -> None:
    assert code == 2, err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("error: ")
    for part in expected:
        assert part in err, part


@pytest.mark.parametrize("mistake", MISTAKES, ids=lambda f: f.__name__)
def test_user_mistake_is_one_line_and_status_2(
    mistake: Callable, tmp_path: Path, toy_checkpoint: Path, cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = sorted(p.name for p in toy_checkpoint.parent.iterdir())
    best = toy_checkpoint.read_bytes()
    args, stdin, expected = mistake(tmp_path, toy_checkpoint)
    monkeypatch.chdir(tmp_path)
    code, _, err = cli(*args, input=encode(stdin))
    check_mistake(code, err, expected)
    # No mistake touches the toy run.
    assert sorted(p.name for p in toy_checkpoint.parent.iterdir()) == before
    assert toy_checkpoint.read_bytes() == best


@pytest.mark.parametrize(
    ("command", "option", "value"),
    [
        ("translate", "--beam", "65"),  # decode.beam_size
        ("translate", "--nbest", "65"),
        ("evaluate", "--alpha", "11"),
        ("evaluate", "--batch-size", "5000"),
    ],
)
def test_a_decoding_setting_out_of_range_names_the_option_typed(
    command: str, option: str, value: str, toy_checkpoint: Path, cli
) -> None:
    """Past Click's checks, DecodeConfig refuses the value: the error names the option."""
    sources = ["--src", TOY_DATA / "test.de", "--ref", TOY_DATA / "test.en"]
    text = sources if command == "evaluate" else []
    code, out, err = cli(command, "-m", toy_checkpoint, option, value, *text, input=b"Ein Hund.\n")
    check_mistake(code, err, [f"error: {option}: Input should be less than or equal to "])
    assert out == ""


def test_user_mistake_in_a_real_process(tmp_path: Path, toy_checkpoint: Path) -> None:
    """The same through the interpreter: nothing else (torch's warnings...) reaches stderr."""
    args, stdin, expected = foreign_checkpoint(tmp_path, toy_checkpoint)
    code, _, err = run_cli(*args, input=encode(stdin), cwd=tmp_path)
    check_mistake(code, err, expected)


def encode(text: str | None) -> bytes | None:
    return None if text is None else text.encode("utf-8", errors="surrogateescape")


def test_output_into_a_missing_folder_is_a_user_error(
    tmp_path: Path, toy_checkpoint: Path, cli
) -> None:
    target = tmp_path / "no" / "such" / "out.en"
    code, _, err = cli("translate", "--model", toy_checkpoint, "--output", target, input=b"Hund\n")
    check_mistake(code, err, [str(target)])


# -- standard streams: closed, full, and paths that are not regular files ------------------


def run_shell(command: str, cwd: Path) -> tuple[int, str, str]:
    """`command` in bash, where `seq2seq` is `python -m seq2seq` -> (status, stdout, stderr)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONIOENCODING": "utf-8"}
    script = f'seq2seq() {{ "{sys.executable}" -m seq2seq "$@"; }}\n{command}'
    result = subprocess.run(["bash", "-c", script], capture_output=True, cwd=cwd, env=env,
                            timeout=300)  # fmt: skip
    return result.returncode, result.stdout.decode(), result.stderr.decode()


CLOSED = {
    "translate <&-": ("seq2seq translate -m M <&-", "<stdin>: closed"),
    "translate >&-": ("echo 'Ein Hund.' | seq2seq translate -m M >&-", "<stdout>: closed"),
    "evaluate --hyp - <&-": ("seq2seq evaluate --hyp - --ref ref.en <&-", "<stdin>: closed"),
    "evaluate >&-": ("seq2seq evaluate --hyp ref.en --ref ref.en >&-", "<stdout>: closed"),
    "evaluate > /dev/full": ("seq2seq evaluate --hyp ref.en --ref ref.en > /dev/full",
                             "<stdout>: cannot write: No space left on device"),
}  # fmt: skip


@pytest.mark.parametrize("case", CLOSED, ids=list(CLOSED))
def test_a_closed_or_full_standard_stream_is_one_error_line(
    case: str, tmp_path: Path, toy_checkpoint: Path
) -> None:
    """Not a crash, and not results lost without a word (exit 0)."""
    shutil.copy(TOY_DATA / "test.en", tmp_path / "ref.en")
    command, expected = CLOSED[case]
    code, out, err = run_shell(command.replace(" M", f" {toy_checkpoint}"), tmp_path)
    check_mistake(code, err, [expected])


STREAMS = {
    "-i <(cmd)": "seq2seq translate -m M -i <(head -3 src.de)",
    # (the writer gives up after a minute, were the pipe never read)
    "-i a named pipe": "mkfifo f.de; timeout 60 sh -c 'head -3 src.de > f.de' >&- 2>&- & "
                       "seq2seq translate -m M -i f.de",
    "-i /dev/stdin": "head -3 src.de | seq2seq translate -m M -i /dev/stdin",
    "-o /dev/stdout into a pipe": "head -3 src.de | seq2seq translate -m M -o /dev/stdout | cat",
    "-o >(cmd)": "head -3 src.de | seq2seq translate -m M -o >(cat)",
}  # fmt: skip


@pytest.mark.parametrize("case", STREAMS, ids=list(STREAMS))
def test_paths_that_are_not_regular_files(
    case: str, tmp_path: Path, toy_checkpoint: Path, toy_translator
) -> None:
    """Any readable path but a folder is read once as a stream; an output through a link
    to a pipe goes into the pipe."""
    shutil.copy(TOY_DATA / "test.de", tmp_path / "src.de")
    code, out, err = run_shell(STREAMS[case].replace(" M", f" {toy_checkpoint}"), tmp_path)
    assert code == 0, err
    assert out.splitlines() == [t.text for t in toy_translator.translate(SOURCES[:3])]


def test_evaluate_scores_a_hypothesis_stream(tmp_path: Path) -> None:
    shutil.copy(TOY_DATA / "test.en", tmp_path / "ref.en")
    code, out, err = run_shell("seq2seq evaluate --hyp <(cat ref.en) --ref ref.en --json", tmp_path)
    assert code == 0, err
    assert json.loads(out)["bleu"] == 100.0


# -- the command line itself: global options anywhere, help, average, the version ---------


def average_args(toy_checkpoint: Path, output: Path) -> list[str | Path]:
    """`average` of the toy run's best.pt and last.pt: it says one thing at each verbosity."""
    return ["average", toy_checkpoint, toy_checkpoint.parent / "last.pt", "-o", output]


@pytest.mark.parametrize("flag", ["--quiet", "-q", "--verbose", "-v"])
@pytest.mark.parametrize("place", ["before", "after"])
def test_global_options_go_before_or_after_the_command(
    flag: str, place: str, toy_checkpoint: Path, tmp_path: Path, cli, monkeypatch
) -> None:
    monkeypatch.setattr(console, "_verbosity", console.NORMAL)
    output = tmp_path / "avg.pt"
    command = average_args(toy_checkpoint, output)
    code, out, err = cli(*([flag, *command] if place == "before" else [*command, flag]))
    assert code == 0 and out == "", err
    done = f"averaged 2 checkpoints into {output}\n"
    assert err == ("" if flag in ("--quiet", "-q") else f"averaging 2 checkpoints\n{done}")


@pytest.mark.parametrize("place", ["before", "after"])
def test_debug_goes_before_or_after_the_command(
    place: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(seq2seq.cli, "_debug", False)  # --debug sets a module global
    command = ["average", str(tmp_path / "missing.pt"), "-o", str(tmp_path / "avg.pt")]
    argv = ["--debug", *command] if place == "before" else [*command, "--debug"]
    monkeypatch.setattr(sys, "argv", ["seq2seq", *argv])
    with pytest.raises(UserError, match="missing.pt"):  # the traceback, not one line
        seq2seq.cli.main()


def test_global_options_are_parsed_as_options(toy_checkpoint: Path, tmp_path: Path, cli) -> None:
    """Click parses them: an option's value that looks like one stays a value, and the two
    verbosities still contradict each other across the command's name."""
    code, _, err = cli("translate", "-m", toy_checkpoint, "--input", "-q")
    check_mistake(code, err, ["-q: file not found"])
    code, _, err = cli("-q", *average_args(toy_checkpoint, tmp_path / "avg.pt"), "-v")
    check_mistake(code, err, ["--quiet and --verbose contradict each other"])
    assert not (tmp_path / "avg.pt").exists()


COMMANDS = typer.main.get_command(seq2seq.cli.app).commands
# What Typer shows for a value unless told better: a Python type, a {name}, <path>.
RAW_PLACEHOLDER = re.compile(r"<list\[|\{[A-Za-z_]+\}|<(path|str|int|float|bool)\b")


def example_lines(help_text: str) -> list[str]:
    """The command lines under a command's `Example:` or `Examples:`."""
    _, found, examples = help_text.partition("Example")
    assert found, "no example"
    return [line.strip() for line in examples.splitlines()[1:] if "seq2seq" in line]


def parse_example(line: str) -> list[str]:
    """An example's arguments after `seq2seq`, parsed by the command's own parser: its
    options exist and take what it gives them. A pipe's left side and redirections go."""
    words = shlex.split(line.split("|")[-1])
    redirected = {i + 1 for i, word in enumerate(words) if word in ("<", ">")}
    args = [w for i, w in enumerate(words) if w not in ("<", ">") and i not in redirected]
    group = typer.main.get_command(seq2seq.cli.app)
    assert args[0] == "seq2seq" and args[1] in group.commands, line
    with group.make_context("seq2seq", args[1:2]) as root:
        group.commands[args[1]].make_context(args[1], args[2:], parent=root)
    return args[1:]


def test_seq2seq_alone_prints_the_help(cli) -> None:
    code, out, err = cli()
    assert (code, err) == (0, "")
    assert out == cli("--help")[1] and out.startswith("Usage: seq2seq [OPTIONS] COMMAND")


@pytest.mark.parametrize("columns", ["80", "30"])
def test_the_command_list_has_one_whole_summary_each(columns: str, cli, monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", columns)
    code, out, _ = cli("--help")
    listing = out.split("Commands:\n")[1].splitlines()
    assert [line.split()[0] for line in listing if line.startswith("  ") and
            not line.startswith("   ")] == list(COMMANDS)  # fmt: skip
    assert not [line for line in listing if line.rstrip().endswith("...")]
    if columns == "80":  # room enough: one line each
        assert len(listing) == len(COMMANDS), out


@pytest.mark.parametrize("name", list(COMMANDS))
def test_help_shows_readable_names_and_examples(name: str, cli, monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    code, out, err = cli(name, "--help")
    assert code == 0, err
    assert not RAW_PLACEHOLDER.search(out), RAW_PLACEHOLDER.search(out)
    assert max(map(len, out.splitlines())) <= 80  # examples too
    for param in COMMANDS[name].params:  # `--x / --no-x` only where unset means the config's
        assert not getattr(param, "secondary_opts", None) or param.default is None, param.name
    lines = example_lines(out)
    assert lines and all(parse_example(line)[0] == name for line in lines)
    assert "-q, --quiet" in out and "--debug" in out  # the global options, listed here too


def test_average_on_a_run_without_kept_checkpoints_says_how_to_keep_them(
    toy_checkpoint: Path, tmp_path: Path, cli
) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    for name in ("best.pt", "last.pt", "config.yaml"):
        shutil.copy(toy_checkpoint.parent / name, run_dir / name)
    code, _, err = cli("average", run_dir, "--output", tmp_path / "avg.pt")
    check_mistake(code, err, [f"{run_dir}: no ckpt-step*.pt files", "seq2seq average A.pt"])
    setting = re.search(r"--set (\S+=\d+)", err)
    assert setting, err
    assert load_config(TOY_CONFIG, [setting.group(1)]).train.keep_checkpoints >= 2
    assert not (tmp_path / "avg.pt").exists()


def test_average_of_one_checkpoint_says_one(toy_checkpoint: Path, tmp_path: Path, cli) -> None:
    output = tmp_path / "avg.pt"
    code, _, err = cli("average", toy_checkpoint, "--output", output)
    assert code == 0, err
    assert err.endswith(f"averaged 1 checkpoint into {output}\n") and "checkpoints" not in err


def test_average_of_one_file_warns(tmp_path: Path, toy_checkpoint: Path, cli) -> None:
    code, out, err = cli("average", toy_checkpoint, "-o", tmp_path / "mean.pt")
    assert code == 0, err
    assert err.splitlines()[0] == (
        f"warning: {toy_checkpoint} is the only checkpoint: the average is a copy of its weights"
    )
    assert load_checkpoint(tmp_path / "mean.pt")["averaged_from"] == [str(toy_checkpoint)]


def readme_toy_commands() -> list[str]:
    """The command lines of the README's first run on the toy data."""
    section = (ROOT / "README.md").read_text(encoding="utf-8").split("## First run")[1]
    return [line.strip() for line in section.split("\n## ")[0].splitlines()
            if line.startswith("    ") and "seq2seq" in line]  # fmt: skip


def test_the_readme_toy_run_averages_what_the_toy_config_keeps(
    tmp_path: Path, cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The README's toy commands in order, in a fresh folder; the training stops after two
    epochs (two validations: two kept checkpoints) to stay quick."""
    for name in ("configs", "data"):
        (tmp_path / name).symlink_to(ROOT / name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(seq2seq.training, "plot_run", lambda run_dir: None)  # curves.png
    commands = readme_toy_commands()
    assert [line.split("seq2seq ")[1].split()[0] for line in commands] == [
        "train", "translate", "average", "evaluate"
    ]  # fmt: skip
    outputs = []
    for line in commands:
        stdin, _, command = line.rpartition("| ")
        args = shlex.split(command)[1:]
        if args[0] == "train":
            args += sets("train.max_steps=50")  # 25 steps an epoch
        text = shlex.split(stdin)[1] + "\n" if stdin else ""
        code, out, err = cli(*args, input=text.encode())
        assert code == 0, f"{line}: {err}"
        outputs.append((out, err))
    assert len(list((tmp_path / "runs" / "toy").glob("ckpt-step*.pt"))) == 2
    assert "averaged 2 checkpoints into runs/toy/averaged.pt" in outputs[2][1]
    assert "BLEU = " in outputs[3][0]


def test_the_version_comes_from_one_place(cli) -> None:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    dynamic = project["tool"]["setuptools"]["dynamic"]["version"]
    assert dynamic == {"attr": "seq2seq.__version__"}
    code, out, _ = cli("--version")
    assert out.startswith(f"seq2seq {seq2seq.__version__} (torch ")
