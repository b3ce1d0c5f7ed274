"""Shared fixtures: a tiny toy run trained once per session, a CLI runner, tiny models;
and the helpers of several test files: the one-error-line check, strict JSON, changed
checkpoints, training data folders."""

from __future__ import annotations

import gzip
import io
import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, Phase, settings

from seq2seq.checkpoint import load_checkpoint, save_checkpoint
from seq2seq.config import DecoderConfig, EncoderConfig, ModelConfig, load_config
from seq2seq.model import Seq2Seq

ROOT = Path(__file__).resolve().parents[1]
TOY_CONFIG = ROOT / "configs" / "toy.yaml"
TOY_DATA = ROOT / "data" / "toy"

# Deterministic and light: one thread (the machine is shared), fixed hypothesis examples.
torch.set_num_threads(1)
settings.register_profile(
    "seq2seq",
    deadline=None,
    derandomize=True,
    database=None,
    max_examples=40,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
# scripts/mutation.sh runs the tests once per mutant: there, fewer examples and no
# shrinking of a failing one (a failure is all it needs to know).
settings.register_profile(
    "mutation",
    parent=settings.get_profile("seq2seq"),
    max_examples=10,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
)
settings.load_profile("seq2seq")
TOY_FIXTURES = {"toy_run", "toy_checkpoint", "toy_translator"}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "toy: needs the toy run (trained once per session)")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the tests that need the toy run: `-m "not toy"` leaves those that start at
    once (scripts/mutation.sh runs them once per mutant, each run in a new session)."""
    for item in items:
        if TOY_FIXTURES & set(item.fixturenames):
            item.add_marker(pytest.mark.toy)


@pytest.fixture(autouse=True)
def _seed() -> None:
    random.seed(0)
    torch.manual_seed(0)


def toy_overrides(run_dir: Path, *extra: str) -> list[str]:
    """--set overrides that train configs/toy.yaml into run_dir from any working folder."""
    return [f"train.run_dir={run_dir}", f"data.dir={TOY_DATA}", "train.device=cpu", *extra]


@pytest.fixture(scope="session")
def toy_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder with best.pt, last.pt and config.yaml from configs/toy.yaml (trained once)."""
    from seq2seq.training import train

    run_dir = tmp_path_factory.mktemp("toy") / "run"
    # Validated once, at the end (each validation also draws curves.png): half the time of
    # validating every epoch, and the model translates the toy test set as well.
    overrides = toy_overrides(run_dir, "train.validate_every=100000")
    return Path(train(load_config(TOY_CONFIG, overrides)))


@pytest.fixture(scope="session")
def toy_checkpoint(toy_run: Path) -> Path:
    return toy_run / "best.pt"


@pytest.fixture(scope="session")
def toy_translator(toy_checkpoint: Path):
    """Shared by the whole session: a test that changes its decode settings must use
    monkeypatch (checked after every test that uses it)."""
    from seq2seq.translator import Translator

    return Translator.from_checkpoint(toy_checkpoint, "cpu")


@pytest.fixture(autouse=True)
def _toy_translator_left_as_found(request: pytest.FixtureRequest):
    """Fails the test that leaves the session's translator with other decode settings or
    in training mode, instead of a later test that compares with it."""
    if "toy_translator" not in request.fixturenames:
        yield
        return
    translator = request.getfixturevalue("toy_translator")
    decode = translator.decode
    yield
    assert translator.decode == decode and not translator.models[0].training, (
        "this test changed the shared toy_translator; use monkeypatch.setattr"
    )


def run_cli(
    *args: str | Path, input: str | bytes | None = None, cwd: Path = ROOT, timeout: float = 300
) -> tuple[int, str, str]:
    """Run `python -m seq2seq ARGS` -> (returncode, stdout, stderr)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONIOENCODING": "utf-8"}
    env.pop("PYTHONWARNINGS", None)
    data = input.encode("utf-8") if isinstance(input, str) else input
    completed = subprocess.run(
        [sys.executable, "-m", "seq2seq", *map(str, args)],
        input=data,
        capture_output=True,
        cwd=cwd,
        env=env,
        timeout=timeout,
    )
    return (
        completed.returncode,
        completed.stdout.decode("utf-8"),
        completed.stderr.decode("utf-8", errors="replace"),
    )


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture):
    """Run seq2seq.cli.main() in this process (no interpreter start-up: fast) ->
    (exit status, stdout, stderr)."""
    from seq2seq.cli import main

    def run(*args: str | Path, input: bytes | None = None) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["seq2seq", *map(str, args)])
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(input or b"")))
        capsys.readouterr()
        with pytest.raises(SystemExit) as exit:
            main()
        out, err = capsys.readouterr()
        code = exit.value.code
        return (code if isinstance(code, int) else 0 if code is None else 1), out, err

    return run


def one_error_line(code: int, err: str, *expected: str) -> None:
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for text in expected:
        assert text in lines[0], lines[0]


def strict(text: str) -> object:
    def refuse(constant: str) -> None:
        raise AssertionError(f"{constant} in JSON: {text}")

    return json.loads(text, parse_constant=refuse)


def changed_checkpoint(source: Path, target: Path, change) -> Path:
    """A copy of the checkpoint at `source` with change(payload) applied."""
    payload = load_checkpoint(source)
    change(payload)
    save_checkpoint(payload, target)
    return target


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


def tiny_model_config(
    embedding: int = 8, hidden: int = 6, decoder_embedding: int = 7, decoder_hidden: int = 5
) -> ModelConfig:
    """Different sizes everywhere so that a mixed-up dimension shows as a shape error."""
    return ModelConfig(
        encoder=EncoderConfig(embedding_size=embedding, hidden_size=hidden),
        decoder=DecoderConfig(embedding_size=decoder_embedding, hidden_size=decoder_hidden),
        dropout=0.0,
    )


def tiny_model(
    src_vocab: int = 13, trg_vocab: int = 11, scale: float | None = 0.5, **sizes: int
) -> Seq2Seq:
    """A small model in eval mode; `scale` re-draws the weights (the tutorial's N(0, 0.01)
    makes every output nearly equal, which would hide mistakes)."""
    model = Seq2Seq(tiny_model_config(**sizes), src_vocab, trg_vocab)
    if scale is not None:
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.normal_(0.0, scale)
    return model.eval()


def random_batch(
    lengths: list[int], vocab_size: int, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Padded source ids <sos> w... <eos> with the given true lengths (>= 2) -> (src, lengths)."""
    from seq2seq.vocab import EOS, PAD, SOS

    src = torch.full((len(lengths), max(lengths)), PAD, dtype=torch.long)
    for row, length in enumerate(lengths):
        words = torch.randint(4, vocab_size, (length - 2,), generator=generator)
        src[row, :length] = torch.cat([torch.tensor([SOS]), words, torch.tensor([EOS])])
    return src, torch.tensor(lengths)
