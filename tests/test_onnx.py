"""The onnxruntime path: `seq2seq export --onnx` graphs translate as torch does (greedy,
beam, n-best, --replace-unk, attention, losses), the numpy search finds what the torch
search finds, the path runs without torch, int8 agrees with fp32, and a bad or foreign
graph, a gated model or a setting onnxruntime cannot run is one line with status 2.
The toy model and the shipped one are each exported once for the whole file."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT, TOY_DATA, random_batch, run_cli, tiny_model

from seq2seq import numpy_search, search
from seq2seq.checkpoint import load_checkpoint, save_checkpoint
from seq2seq.evaluation import evaluate
from seq2seq.model import Seq2Seq
from seq2seq.onnx_runtime import OnnxTranslator
from seq2seq.translation import open_translator
from seq2seq.translator import Translator

SHIPPED = ROOT / "models" / "multi30k-de-en-small"
SENTENCES = [
    *(TOY_DATA / "test.de").read_text(encoding="utf-8").splitlines(),
    *(TOY_DATA / "val.de").read_text(encoding="utf-8").splitlines(),
]


def export(model: Path, folder: Path, *options: str) -> Path:
    code, _, err = run_cli("export", model, "--output", folder, "--onnx", *options)
    assert code == 0, err
    return folder


@pytest.fixture(scope="module")
def toy_folder(toy_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export(toy_checkpoint, tmp_path_factory.mktemp("onnx") / "toy")


@pytest.fixture(scope="module")
def shipped_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export(SHIPPED, tmp_path_factory.mktemp("onnx") / "small", "--dtype", "float16")


@pytest.mark.parametrize(
    "settings",
    [
        {"beam_size": 1},
        {"beam_size": 1, "replace_unk": True, "batch_size": 7},
        {"beam_size": 5, "alpha": 0.6, "nbest": 3},
        {"beam_size": 3, "alpha": 0.0, "nbest": 3, "batch_size": 5},
    ],
)
def test_the_graphs_translate_as_torch_does(toy_folder: Path, settings: dict) -> None:
    onnx = OnnxTranslator.from_folder(toy_folder)
    torch_translator = Translator.from_checkpoint(toy_folder, "cpu")
    decode = onnx.decode.updated(**settings)
    lines = [*SENTENCES, "", "Ein Zebra mit Hut."]  # an empty line, unknown words
    found = onnx.translate_nbest(lines, decode)
    expected = torch_translator.translate_nbest(lines, decode)
    for ours, theirs in zip(found, expected, strict=True):
        assert [t.text for t in ours] == [t.text for t in theirs]
        assert [t.score for t in ours] == pytest.approx([t.score for t in theirs], abs=1e-4)
        for a, b in zip(ours, theirs, strict=True):
            assert isinstance(a.attention, np.ndarray)
            np.testing.assert_allclose(a.attention, b.attention.numpy(), atol=1e-5)
            assert a.alignment() == b.alignment()


def test_evaluate_scores_alike_on_both_runtimes(toy_folder: Path) -> None:
    sources = (TOY_DATA / "test.de").read_text(encoding="utf-8").splitlines()
    references = (TOY_DATA / "test.en").read_text(encoding="utf-8").splitlines()
    ours = evaluate(OnnxTranslator.from_folder(toy_folder), sources, references)
    theirs = evaluate(Translator.from_checkpoint(toy_folder, "cpu"), sources, references)
    assert ours.scores.bleu == pytest.approx(theirs.scores.bleu, abs=1e-6)
    assert ours.loss == pytest.approx(theirs.loss, rel=1e-5)
    assert ours.free_running_loss == pytest.approx(theirs.free_running_loss, rel=1e-5)


class NumpyFacade:
    """A torch model behind numpy arrays: the numpy search then runs the same model as
    the torch search, so any difference is the searches' own."""

    def __init__(self, model: Seq2Seq):
        self.model = model

    def start(self, src: np.ndarray, src_lengths: np.ndarray) -> NumpyState:
        return NumpyState(self.model.start(torch.from_numpy(src), torch.from_numpy(src_lengths)))

    def step(self, tokens: np.ndarray, state: NumpyState) -> tuple:
        log_probs, after, attention = self.model.step(torch.from_numpy(tokens), state.state)
        return log_probs.numpy(), NumpyState(after), attention.numpy()


class NumpyState:
    def __init__(self, state):
        self.state = state

    def select(self, rows: np.ndarray) -> NumpyState:
        return NumpyState(self.state.select(torch.from_numpy(rows)))

    def reorder(self, rows: np.ndarray) -> NumpyState:
        return NumpyState(self.state.reorder(torch.from_numpy(rows)))


@pytest.mark.parametrize("seed", range(6))
def test_the_numpy_search_finds_what_the_torch_search_finds(seed: int) -> None:
    """Greedy and beam (each sentence's whole n-best list, its scores and attention),
    with length limits that cut some hypotheses short and <eos> likely enough that
    beams finish at different steps."""
    torch.manual_seed(seed)
    model = tiny_model(src_vocab=13, trg_vocab=11, scale=0.8)
    with torch.no_grad():
        model.decoder.output.bias[3] += 1.0  # <eos>
    src, lengths = random_batch([7, 3, 5, 2], 13)
    limits = search.max_output_lengths(lengths, 1.0, 2)
    facade, arrays = NumpyFacade(model), (src.numpy(), lengths.numpy(), limits.numpy())
    assert limits.tolist() == numpy_search.max_output_lengths(arrays[1], 1.0, 2).tolist()
    with torch.inference_mode():
        greedy = search.greedy_search(model, src, lengths, limits)
        pairs = [
            ([[h] for h in greedy], [[h] for h in numpy_search.greedy_search(facade, *arrays)])
        ]
        for beam, alpha in ((4, 0.6), (3, 2.0)):
            expected = search.beam_search(model, src, lengths, limits, beam, alpha, nbest=beam)
            found = numpy_search.beam_search(facade, *arrays, beam, alpha, nbest=beam)
            pairs.append((expected, found))
    for expected, found in pairs:
        for theirs, ours in zip(expected, found, strict=True):
            assert [h.tokens for h in ours] == [h.tokens for h in theirs]
            assert [h.score for h in ours] == pytest.approx([h.score for h in theirs], abs=1e-6)
            for a, b in zip(ours, theirs, strict=True):
                np.testing.assert_allclose(a.attention, b.attention.numpy(), atol=1e-6)


def test_translate_runs_without_torch(shipped_folder: Path) -> None:
    """In a fresh interpreter, `seq2seq translate` on an exported folder takes the
    onnxruntime path by itself and never imports torch; nor needs spaCy, sacremoses or
    sacreBLEU, which requirements-onnxruntime.txt leaves out (hidden here)."""
    program = (
        "import sys\n"
        "sys.modules.update(spacy=None, sacremoses=None, sacrebleu=None)  # not installed\n"
        "from seq2seq.cli import main\n"
        f"sys.argv = ['seq2seq', 'translate', '--model', {str(shipped_folder)!r}]\n"
        "try:\n    main()\n"
        "finally:\n"
        "    print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch'), file=sys.stderr)\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", program], input=b"Ein Hund l\xc3\xa4uft im Park.\n",
        capture_output=True, cwd=ROOT, timeout=120,
    )  # fmt: skip
    err = completed.stderr.decode()
    assert completed.returncode == 0, err
    assert completed.stdout.decode() == "A dog walks in the park.\n"
    assert err.strip().splitlines()[-1] == "[]", "torch was imported"


def test_evaluate_without_sacrebleu_is_one_line(shipped_folder: Path, tmp_path: Path) -> None:
    """The torch-free install leaves sacreBLEU out: scoring says what to install."""
    text = tmp_path / "one.txt"
    text.write_text("Ein Hund.\n", encoding="utf-8")
    program = (
        "import sys\n"
        "sys.modules.update(sacrebleu=None)  # not installed\n"
        "from seq2seq.cli import main\n"
        f"sys.argv = ['seq2seq', 'evaluate', '--model', {str(shipped_folder)!r},"
        f" '--src', {str(text)!r}, '--ref', {str(text)!r}]\n"
        "main()\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, cwd=ROOT, timeout=120
    )
    err = completed.stderr.decode()
    assert completed.returncode == 2, err
    assert err.splitlines() == [
        "error: scoring needs sacreBLEU, which is not installed: "
        "pip install -r requirements-onnxruntime-words.txt"
    ]


def test_int8_agrees_with_fp32(shipped_folder: Path) -> None:
    """int8 graphs: the fp32 translation for at least 90% of the sentences (110 of 112
    when they were written), on the shipped model."""
    translator = OnnxTranslator.from_folder(shipped_folder)
    fp32 = translator.translate(SENTENCES, translator.decode.updated(beam_size=1))
    int8 = translator.translate(SENTENCES, translator.decode.updated(beam_size=1, precision="int8"))
    assert sum(a.text == b.text for a, b in zip(fp32, int8, strict=True)) >= 0.9 * len(SENTENCES)
    assert any(a.score != b.score for a, b in zip(fp32, int8, strict=True)), "not int8 graphs"


def test_the_folder_records_how_its_graphs_were_made(toy_folder: Path) -> None:
    entry = json.loads((toy_folder / "config.json").read_text(encoding="utf-8"))["onnx"]
    assert entry["opset"] == 17 and "TorchScript" in entry["exporter"]
    files = [name for graphs in entry["graphs"].values() for name in graphs.values()]
    assert sorted(files) == sorted(p.name for p in toy_folder.glob("*.onnx"))


def test_a_damaged_or_foreign_graph_is_one_line(
    toy_folder: Path, shipped_folder: Path, tmp_path: Path, cli
) -> None:
    damaged = shutil.copytree(toy_folder, tmp_path / "damaged")
    (damaged / "decoder.onnx").write_bytes(b"not a graph")
    foreign = shutil.copytree(toy_folder, tmp_path / "foreign")
    shutil.copy(shipped_folder / "encoder.onnx", foreign / "encoder.onnx")
    for folder, message in (
        (damaged, f"error: {damaged / 'decoder.onnx'}: not a readable ONNX graph"),
        (foreign, f"error: {foreign / 'encoder.onnx'}: not this model's graph: its outputs"),
    ):
        code, out, err = cli("translate", "--model", folder, input=b"Ein Hund.\n")
        assert (code, out) == (2, "")
        assert err.startswith(message) and err.count("\n") == 1, err


def test_a_gated_model_is_refused_before_anything_is_written(
    toy_checkpoint: Path, tmp_path: Path, cli
) -> None:
    payload = load_checkpoint(toy_checkpoint)
    payload["config"]["model"]["encoder"]["gate"] = "cbam"
    save_checkpoint(payload, tmp_path / "gated.pt")
    code, _, err = cli("export", tmp_path / "gated.pt", "--output", tmp_path / "out", "--onnx")
    assert code == 2 and "--onnx does not export an encoder with a CBAM gate" in err
    assert err.count("\n") == 1 and not (tmp_path / "out").exists()


def test_settings_that_onnxruntime_cannot_run(toy_folder: Path, toy_checkpoint: Path, cli) -> None:
    """Named runtime: one line saying what to change; auto: torch takes over."""
    refused = {
        (toy_checkpoint,): "holds no ONNX files",
        (toy_folder, toy_folder): "ensembles need --runtime torch",
    }
    for models, message in refused.items():
        options = [item for model in models for item in ("--model", model)]
        code, _, err = cli("translate", *options, "--runtime", "onnxruntime", input=b"Ein Hund.\n")
        assert code == 2 and message in err and err.count("\n") == 1, err
    code, _, err = cli(
        "translate", "-m", toy_folder, "--runtime", "onnxruntime", "--precision", "bf16"
    )
    assert code == 2 and "precision bf16 needs --runtime torch" in err
    assert isinstance(open_translator([toy_folder]), OnnxTranslator)
    assert isinstance(open_translator([toy_folder], precision="bf16"), Translator)
    assert isinstance(open_translator([toy_folder, toy_folder]), Translator)
    assert isinstance(open_translator([toy_folder], runtime="torch"), Translator)


def test_the_server_answers_from_the_graphs(toy_folder: Path) -> None:
    from fastapi.testclient import TestClient

    from seq2seq.serve import ServeLimits, create_app

    translator = OnnxTranslator.from_folder(toy_folder)
    with TestClient(create_app(translator, ServeLimits(max_batch=8), ["toy"])) as client:
        info = client.get("/info").json()
        request = {"texts": SENTENCES[:3], "beam": 3, "nbest": 2, "attention": True}
        answer = client.post("/translate", json=request).json()
    assert info["runtime"] == "onnxruntime" and info["parameters"] > 0
    expected = Translator.from_checkpoint(toy_folder, "cpu").translate_nbest(
        SENTENCES[:3], translator.decode.updated(beam_size=3, nbest=2)
    )
    for result, candidates in zip(answer["translations"], expected, strict=True):
        assert [c["translation"] for c in result["nbest"]] == [c.text for c in candidates]
        weights = np.array(result["attention"]["weights"])
        assert np.allclose(weights.sum(axis=1), 1.0, atol=1e-3)


def test_the_torch_free_requirements_are_the_packages_own() -> None:
    """requirements-onnxruntime*.txt: torch-free, and each line exactly as pyproject.toml
    asks for it (its dependencies or the onnx extra), so the two cannot drift apart."""
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    declared = {*project["dependencies"], *project["optional-dependencies"]["onnx"]}
    for name in ("requirements-onnxruntime.txt", "requirements-onnxruntime-words.txt"):
        lines = (ROOT / name).read_text(encoding="utf-8").splitlines()
        wanted = [line for line in lines if line and not line.startswith(("#", "-r "))]
        assert wanted and set(wanted) <= declared, name
        assert not any(line.startswith(("torch", "matplotlib")) for line in wanted)
