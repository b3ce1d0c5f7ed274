"""The command line's conventions: --version, shell completion, `-` for stdin and stdout,
choices for enumerated options, one error style, --quiet and --verbose, progress bars
only on a terminal, train.log, rounded JSON, help wrapped between words; and code prose
without measured figures."""

from __future__ import annotations

import ast
import io
import re
import sys
import tokenize
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path

import pytest
from conftest import ROOT, TOY_CONFIG, TOY_DATA, run_cli, toy_overrides
from test_cli import check_mistake, sets

from seq2seq import console
from seq2seq.config import load_config
from seq2seq.errors import UserError

SOURCES = "Ein Hund läuft im Park.\n\nZwei Männer tanzen im Schnee.\n".encode()


def test_version_names_the_packages(cli) -> None:
    code, out, err = cli("--version")
    assert code == 0, err
    assert out.startswith("seq2seq 0.1.0 (") and out.count("\n") == 1
    for name, package in (("torch", "torch"), ("spaCy", "spacy"), ("sacreBLEU", "sacrebleu")):
        assert f"{name} {version(package)}" in out


def test_shell_completion_is_offered(cli, monkeypatch: pytest.MonkeyPatch) -> None:
    code, out, _ = cli("--help")
    assert code == 0 and "--install-completion" in out and "--show-completion" in out
    # The shell as named: Typer otherwise detects it from the parent processes, and a
    # process started in the background may have no shell among them.
    monkeypatch.setenv("_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION", "1")
    code, out, err = run_cli("--show-completion", "bash")
    assert code == 0 and "complete " in out, err


def test_dash_is_stdin_and_stdout(toy_checkpoint: Path, tmp_path: Path, cli) -> None:
    code, plain, err = cli("translate", "-m", toy_checkpoint, input=SOURCES)
    assert code == 0, err
    assert cli("translate", "-m", toy_checkpoint, "-i", "-", "-o", "-", input=SOURCES) == (
        0, plain, "",
    )  # fmt: skip
    assert not Path("-").exists()
    references = (TOY_DATA / "test.en").read_bytes()
    code, out, err = cli("evaluate", "--hyp", "-", "--ref", TOY_DATA / "test.en", input=references)
    assert code == 0 and "BLEU = 100.00" in out, err


def test_a_config_from_stdin(monkeypatch: pytest.MonkeyPatch) -> None:
    """Read as every stdin is (corpus.stdin_lines): bytes, CRLF endings and a BOM too."""
    text = TOY_CONFIG.read_bytes()
    for piped in (text, b"\xef\xbb\xbf" + text.replace(b"\n", b"\r\n")):
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(piped)))
        assert load_config("-", ["seed=7"]) == load_config(TOY_CONFIG, ["seed=7"])
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(text + b"seed: [1\n")))
    with pytest.raises(Exception, match=r"^<stdin>:\d+:\d+: YAML syntax error"):
        load_config("-")
    monkeypatch.setattr(sys, "stdin", None)  # `<&-`
    with pytest.raises(UserError, match=r"^<stdin>: closed"):
        load_config("-")


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["evaluate", "--src", "-", "--ref", "-"], "--src and --ref cannot both read stdin"),
        (["evaluate", "--hyp", "h", "--ref", "r", "-o", "-"], "stdout holds the scores"),
        (["average", "a.pt", "-o", "-"], "a checkpoint is binary"),
    ],
)
def test_where_dash_cannot_be(cli, args: list[str], expected: str) -> None:
    code, _, err = cli(*args)
    check_mistake(code, err, [expected])


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["translate", "-m", "x.pt", "--device", "tpu"],
         "error: Invalid value for '--device': 'tpu' is not one of 'auto', 'cpu', 'cuda', 'mps'."),
        (["evaluate", "--hyp", "h", "--ref", "r", "--precision", "fp16"],
         "error: Invalid value for '--precision': 'fp16' is not one of 'fp32', 'bf16', 'int8'."),
        (["download", "imagenet", "--dest", "data"],
         "error: Invalid value for 'DATASET': 'imagenet' is not one of 'multi30k'."),
        (["translate", "-m", "x.pt", "--bogus"], "error: No such option: --bogus"),
        (["translate"], "error: Missing option '--model'"),
        (["translate", "-m", "x.pt", "--beam", "0"], "error: Invalid value for '--beam'"),
        (["trian"], "error: No such command 'trian'"),
        (["--quiet", "--verbose", "plot", "run"], "error: --quiet and --verbose contradict"),
    ],
)  # fmt: skip
def test_usage_errors_are_one_line(cli, args: list[str], expected: str) -> None:
    """Click's usage errors look like every other user error: no box, no usage block."""
    code, out, err = cli(*args)
    check_mistake(code, err, [expected])
    assert out == "" and "│" not in err and "Usage:" not in err


def test_help_is_wrapped_between_words(cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    code, out, err = cli("translate", "--help")
    assert code == 0, err
    assert max(map(len, out.splitlines())) <= 80 and "…" not in out and "│" not in out
    flowing = " ".join(out.split())
    for sentence in (
        "Replace <unk> with the source token it attends to most (default: decode.replace_unk).",
        "Write an attention heatmap per sentence into this folder (000001.png...).",
        "Where to run the model.",
    ):
        assert sentence in flowing


def test_json_numbers_are_rounded(tmp_path: Path, cli) -> None:
    """Identical text scores 100.00000000000004 in sacreBLEU; JSON says 100.0."""
    code, out, err = cli(
        "evaluate", "--hyp", TOY_DATA / "test.en", "--ref", TOY_DATA / "test.en", "--json"
    )
    assert code == 0, err
    assert re.search(r'"bleu": 100\.0,', out) and '"chrf": 100.0,' in out


def test_progress_bars_only_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(console, "_verbosity", console.NORMAL)
    for terminal in (True, False):
        monkeypatch.setattr(sys.stderr, "isatty", lambda terminal=terminal: terminal)
        assert console.progress_enabled() is terminal
    monkeypatch.setattr(console, "_verbosity", console.QUIET)
    assert not console.progress_enabled()


def test_quiet_verbose_and_train_log(tmp_path: Path, cli, monkeypatch: pytest.MonkeyPatch):
    """--verbose adds every metrics record; --quiet shows nothing; train.log keeps the
    messages of both sessions, without progress bars."""
    monkeypatch.setattr(console, "_verbosity", console.NORMAL)  # restored after the test
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)  # bars would be drawn
    run_dir = tmp_path / "run"
    args = ["train", "--config", TOY_CONFIG, *sets(*toy_overrides(run_dir, "train.log_every=1"))]
    code, out, err = cli("--verbose", *args, *sets("train.max_steps=2"))
    assert code == 0 and out == "", err
    assert "train: step 1, epoch 1, elapsed " in err and "valid: step 2, " in err
    first = (run_dir / "train.log").read_text(encoding="utf-8")
    assert first.startswith("tokenizing 400 training pairs\ntraining pairs: 400")  # a detail, then
    assert "train: step 2, " in first
    assert "\r" not in first and "batch/s" not in first and "epoch 1:" not in first
    assert "epoch 1:" in err  # the terminal did show the bar
    code, out, err = cli("--quiet", *args, *sets("train.max_steps=3"), "--resume")
    assert (code, out, err) == (0, "", "")
    log = (run_dir / "train.log").read_text(encoding="utf-8")
    assert log.startswith(first) and "resuming" in log and "finished after 3 steps" in log
    assert "train: step 3" not in log  # a detail, and this session was not verbose


def test_warnings_survive_quiet(toy_checkpoint: Path, cli) -> None:
    text = "Ein Hund.\n" + "Ein Hund " * 200 + "\n"
    code, out, err = cli("--quiet", "translate", "-m", toy_checkpoint, "--beam", "1",
                         input=text.encode())  # fmt: skip
    assert code == 0 and len(out.splitlines()) == 2
    assert err == "warning: <stdin>:2: longer than 250 tokens, truncated\n"


# A measured figure: a speed-up (2.3x, 3-5x), a share (10%), a time (40 ms, 0.75 s), a
# decimal size (42 MB; limits are binary, 32 MiB), a score (37.45 BLEU) or a rate.
NUMBER = r"(?<![\w.-])\d+(\.\d+)?(-\d+(\.\d+)?)?"  # 2, 0.75, 3-5; not the 8 of UTF-8
MEASURED = re.compile(
    rf"{NUMBER}( ?%|(x| (ms|s|min|bytes|BLEU|chrF)| ?(kB|KB|MB|GB))\b)"
    r"|\b(sentences|tokens|requests|steps)/s\b"
)


def prose(path: Path) -> Iterator[tuple[int, str]]:
    """(line, text) of every comment and docstring of a module (a string statement,
    pydantic's field docstrings too); a docstring line by line."""
    source = path.read_text(encoding="utf-8")
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            yield token.start[0], token.string
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            if isinstance(node.value.value, str):
                for offset, line in enumerate(node.value.value.splitlines()):
                    yield node.lineno + offset, line


def test_code_prose_says_why_not_how_fast() -> None:
    """Comments and docstrings carry no measured figure: it would be wrong after the next
    optimization; docs/performance.md holds the figures, each with its command."""
    found = [
        f"seq2seq/{path.name}:{line}: {text.strip()}"
        for path in sorted((ROOT / "seq2seq").glob("*.py"))
        for line, text in prose(path)
        if MEASURED.search(text)
    ]
    assert found == []
