"""Model folders (config.json, model.safetensors, tokenizer files, a model card) written
by `seq2seq export`, read without unpickling by every command that takes --model, and
Hugging Face Hub ids resolved through a real huggingface_hub cache (no network)."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import (
    TOY_CONFIG,
    TOY_DATA,
    one_error_line,
    run_cli,
    tiny_model_config,
    toy_overrides,
)
from hypothesis import given
from hypothesis import strategies as st
from load_test import start_server

import seq2seq
from seq2seq.checkpoint import Bundle, load_bundle, load_checkpoint, save_checkpoint
from seq2seq.config import load_config
from seq2seq.corpus import read_lines, read_split
from seq2seq.errors import UserError
from seq2seq.evaluation import evaluate
from seq2seq.export import export
from seq2seq.model import Seq2Seq
from seq2seq.text import training_sides
from seq2seq.translator import Translator

TEST_DE = read_lines(TOY_DATA / "test.de")
TEST_EN = read_lines(TOY_DATA / "test.en")


@pytest.fixture(scope="module")
def exported(toy_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The toy model as `seq2seq export --evaluate` (a real process) writes it."""
    folder = tmp_path_factory.mktemp("export") / "toy-de-en"
    code, _, err = run_cli("export", toy_checkpoint, "--output", folder, "--evaluate")
    assert code == 0, err
    return folder


def subword_checkpoint(path: Path, joint: bool, *settings: str) -> Path:
    """A tiny subword model with SentencePiece models of the toy data and random weights
    (seeded): its translations are nonsense, but always the same ones."""
    config = load_config(
        TOY_CONFIG,
        [*toy_overrides(path.parent / "run"), "vocab.type=sentencepiece", "vocab.size=60",
         f"vocab.joint={joint}", *settings],
    )  # fmt: skip
    config = config.model_copy(update={"model": tiny_model_config()})
    src, trg, _ = training_sides(config, *read_split(config.data, config.data.train))
    torch.manual_seed(3)
    model = Seq2Seq(config.model, len(src.vocab), len(trg.vocab))
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0.0, 0.5)
    save_checkpoint(Bundle(config, model, src, trg).payload(step=7), path)
    return path


def same_translations(a: Translator, b: Translator, lines: list[str]) -> None:
    for beam in (1, 5):
        decode = a.decode.updated(beam_size=beam, nbest=min(beam, 3))
        for mine, theirs in zip(
            a.translate_nbest(lines, decode), b.translate_nbest(lines, decode), strict=True
        ):
            assert [(t.text, t.score) for t in mine] == [(t.text, t.score) for t in theirs]
            assert all(
                torch.equal(x.attention, y.attention) for x, y in zip(mine, theirs, strict=True)
            )


def test_export_writes_the_files_and_a_config_that_rebuilds_the_model(
    exported: Path, toy_checkpoint: Path
) -> None:
    assert {path.name for path in exported.iterdir()} == {
        "config.json", "model.safetensors", "vocab.src.json", "vocab.trg.json", "README.md"
    }  # fmt: skip
    description = json.loads((exported / "config.json").read_text("utf-8"))
    payload = load_checkpoint(toy_checkpoint)
    assert description["format"] == "seq2seq-model" and description["format_version"] == 1
    assert description["seq2seq_version"] == seq2seq.__version__
    assert description["weights"] == {"dtype": "float32"}
    assert description["spacy"] == payload["tokenizer"] == {"src": "blank:de", "trg": "blank:en"}
    assert description["config"] == payload["config"]  # sizes, gate, languages, decode...
    assert (description["step"], description["validation"]) == (
        payload["step"], payload["validation"]
    )  # fmt: skip
    for side in ("src", "trg"):
        vocab = json.loads((exported / f"vocab.{side}.json").read_text("utf-8"))
        assert vocab == payload["vocab"][side]


def test_a_folder_is_read_without_unpickling_anything(
    exported: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("unpickling")

    for module, name in ((torch, "load"), (pickle, "load"), (pickle, "loads"),
                         (pickle, "Unpickler")):  # fmt: skip
        monkeypatch.setattr(module, name, refuse)
    bundle = load_bundle(exported)
    assert bundle.model.decoder.output.weight.dtype == torch.float32


def test_a_float32_folder_translates_exactly_as_its_checkpoint(
    exported: Path, toy_translator: Translator
) -> None:
    folder = Translator.from_checkpoint(exported, "cpu")
    mine, theirs = folder.models[0].state_dict(), toy_translator.models[0].state_dict()
    assert all(torch.equal(mine[name], theirs[name]) for name in theirs)
    same_translations(folder, toy_translator, TEST_DE)


@pytest.mark.parametrize(
    ("joint", "files"),
    [
        (True, {"sentencepiece.model"}),
        (False, {"sentencepiece.src.model", "sentencepiece.trg.model"}),
    ],
)
def test_a_subword_folder_holds_its_sentencepiece_models(
    tmp_path: Path, joint: bool, files: set[str]
) -> None:
    checkpoint = subword_checkpoint(tmp_path / "sub.pt", joint)
    export(checkpoint, tmp_path / "folder", "float32")
    written = {path.name for path in (tmp_path / "folder").iterdir()}
    assert written == {"config.json", "model.safetensors", "README.md", *files}
    original, folder = load_checkpoint(checkpoint), load_checkpoint(tmp_path / "folder")
    assert folder["vocab"] == original["vocab"]  # the pieces, as training made them
    for side in ("src", "trg"):
        assert torch.equal(
            folder["tokenizer"][f"{side}_model"], original["tokenizer"][f"{side}_model"]
        )
    lines = TEST_DE[:12]
    same_translations(
        Translator.from_checkpoint(tmp_path / "folder", "cpu"),
        Translator.from_checkpoint(checkpoint, "cpu"),
        lines,
    )


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_folders_are_read_as_float32_and_score_as_float32(
    exported: Path, toy_translator: Translator, tmp_path: Path, dtype: str
) -> None:
    export(exported, tmp_path / dtype, dtype)  # a folder exports like a .pt
    header = (tmp_path / dtype / "model.safetensors").read_bytes()
    size = struct.unpack("<Q", header[:8])[0]
    stored = {entry["dtype"] for name, entry in json.loads(header[8 : 8 + size]).items()
              if name != "__metadata__"}  # fmt: skip
    assert stored == {"F16" if dtype == "float16" else "BF16"}
    half = Translator.from_checkpoint(tmp_path / dtype, "cpu")
    for name, tensor in toy_translator.models[0].state_dict().items():
        loaded = half.models[0].state_dict()[name]
        assert loaded.dtype == torch.float32
        assert torch.equal(loaded, tensor.to(getattr(torch, dtype)).float())
    greedy = toy_translator.decode.updated(beam_size=1)
    full_score = evaluate(toy_translator, TEST_DE, TEST_EN, greedy).scores.bleu
    half_score = evaluate(half, TEST_DE, TEST_EN, greedy).scores.bleu
    assert abs(half_score - full_score) <= 0.1


def test_a_float16_card_states_its_agreement_with_float32(
    toy_checkpoint: Path, toy_translator: Translator, tmp_path: Path
) -> None:
    export(toy_checkpoint, tmp_path / "f16", "float16", evaluate=True)
    beam = toy_translator.decode.updated(beam_size=5)
    full = [t.text for t in toy_translator.translate(TEST_DE, beam)]
    half = Translator.from_checkpoint(tmp_path / "f16", "cpu").translate(TEST_DE, beam)
    same = sum(a == b.text for a, b in zip(full, half, strict=True))
    text = (tmp_path / "f16" / "README.md").read_text("utf-8")
    assert f"give the same translation for {same} of its {len(TEST_DE)} sentences" in text


def test_the_model_card_has_hub_metadata_scores_commands_config_and_limits(
    exported: Path, toy_translator: Translator
) -> None:
    from huggingface_hub import ModelCard

    card = ModelCard.load(exported / "README.md")
    data = card.data
    assert data.language == ["de", "en"] and data.library_name == "seq2seq"
    assert data.tags == ["translation"] and data.pipeline_tag == "translation"
    assert data.license == "other" and data.metrics == ["bleu", "chrf"]
    folder = Translator.from_checkpoint(exported, "cpu")
    results = {(r.metric_type, r.metric_name): r for r in data.eval_results}
    for beam, search in ((1, "greedy"), (5, "beam 5, alpha 0.6")):
        scores = evaluate(folder, TEST_DE, TEST_EN, folder.decode.updated(beam_size=beam)).scores
        for metric, name in (("bleu", "BLEU"), ("chrf", "chrF")):
            result = results[(metric, f"{name} ({search})")]
            assert result.metric_value == round(getattr(scores, metric), 2)
            assert result.metric_args == {"signature": getattr(scores, f"{metric}_signature")}
            assert result.dataset_split == "test" and result.task_type == "translation"
    text = card.text
    assert f"seq2seq translate --model {exported}" in text
    assert f"seq2seq serve --model {exported}" in text
    assert f"--src {TOY_DATA / 'test.de'} --ref {TOY_DATA / 'test.en'}" in text
    first = folder.translate(TEST_DE[:1], folder.decode)[0].text
    assert f"# prints: {first}" in text
    config = text.split("```yaml\n", 1)[1].split("```", 1)[0]
    assert yaml.safe_load(config) == load_checkpoint(exported)["config"]
    assert "## Limits" in text and "<unk>" in text


def test_a_multi30k_model_card_states_the_data_terms(tmp_path: Path) -> None:
    checkpoint = subword_checkpoint(tmp_path / "m.pt", True, "data.dataset=multi30k")
    export(checkpoint, tmp_path / "folder", "float32", license=None)
    from huggingface_hub import ModelCard

    card = ModelCard.load(tmp_path / "folder" / "README.md")
    assert card.data.license == "other" and card.data.license_name == "multi30k"
    assert card.data.datasets == ["bentrevett/multi30k"]
    assert card.data.eval_results is None  # no --evaluate: no scores claimed
    assert "non-commercial research and education" in card.text


def rewrite_json(path: Path, change) -> None:
    data = json.loads(path.read_text("utf-8"))
    change(data)
    path.write_text(json.dumps(data), encoding="utf-8")


def nan_weights(folder: Path) -> None:
    from safetensors.torch import load_file, save_file

    weights = load_file(folder / "model.safetensors")
    weights["decoder.output.bias"][0] = float("nan")
    save_file(weights, folder / "model.safetensors")


BAD_FOLDERS = {
    "missing weights": (
        lambda f: (f / "model.safetensors").unlink(),
        "model.safetensors: missing from the model folder",
    ),
    "newer format": (
        lambda f: rewrite_json(f / "config.json", lambda d: d.update(format_version=2)),
        "config.json: model folder format 2 is newer than this seq2seq reads (1); upgrade",
    ),
    "shapes disagree": (
        lambda f: rewrite_json(
            f / "config.json", lambda d: d["config"]["model"]["encoder"].update(hidden_size=64)
        ),
        "model.encoder.hidden_size is 64 but its weights encoder.rnn.weight_hh_l0 have 48",
    ),
    "truncated weights": (
        lambda f: (f / "model.safetensors").write_bytes(
            (f / "model.safetensors").read_bytes()[:-9]
        ),
        "model.safetensors: not a readable safetensors file",
    ),
    "config not JSON": (
        lambda f: (f / "config.json").write_text("{", encoding="utf-8"),
        "config.json: cannot read",
    ),
    "another format": (
        lambda f: rewrite_json(f / "config.json", lambda d: d.update(format="bert")),
        "config.json: not a seq2seq model folder's config.json",
    ),
    "vocabulary not a list": (
        lambda f: (f / "vocab.trg.json").write_text('{"a": 1}', encoding="utf-8"),
        "vocab.trg.json: not a vocabulary",
    ),
    "a file outside the folder": (
        lambda f: rewrite_json(f / "config.json", lambda d: d["files"].update(weights="../x")),
        "'../x' is not the name of a file in the folder",
    ),
    "no config.json": (
        lambda f: (f / "config.json").unlink(),
        "not a seq2seq model folder (no config.json",
    ),
    "NaN weights": (nan_weights, "refused: its weights decoder.output.bias hold NaN"),
    "tokenizer name": (
        lambda f: rewrite_json(f / "config.json", lambda d: d["spacy"].update(src="json")),
        "'json'",
    ),
}


@pytest.mark.parametrize("case", BAD_FOLDERS)
def test_a_bad_folder_is_one_line_and_exit_2(exported: Path, tmp_path: Path, cli, case: str):
    folder = tmp_path / "bad"
    shutil.copytree(exported, folder)
    damage, expected = BAD_FOLDERS[case]
    damage(folder)
    code, out, err = cli("translate", "--model", folder, input=b"Ein Hund.\n")
    one_error_line(code, err, expected)
    assert out == ""


def test_a_subword_folder_whose_model_file_is_not_sentencepiece(tmp_path: Path, cli) -> None:
    export(subword_checkpoint(tmp_path / "s.pt", False), tmp_path / "folder", "float32")
    (tmp_path / "folder" / "sentencepiece.trg.model").write_bytes(b"\x00not a model")
    code, _, err = cli("translate", "--model", tmp_path / "folder", input=b"Ein Hund.\n")
    one_error_line(code, err, "sentencepiece.trg.model: not a SentencePiece model")


@given(position=st.integers(0, 400), value=st.integers(0, 255))
def test_any_damaged_weights_file_is_read_or_refused_as_a_user_error(
    exported: Path, tmp_path: Path, position: int, value: int
) -> None:
    folder = tmp_path / "fuzzed"
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(exported, folder)
    data = bytearray((folder / "model.safetensors").read_bytes())
    data[position] = value
    (folder / "model.safetensors").write_bytes(bytes(data))
    try:
        load_bundle(folder)
    except UserError as error:
        assert "\n" not in str(error)


def test_export_replaces_only_a_model_folder_and_only_when_asked(
    exported: Path, toy_checkpoint: Path, tmp_path: Path, cli
) -> None:
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "todo.txt").write_text("keep me", encoding="utf-8")
    code, _, err = cli("export", toy_checkpoint, "--output", notes, "--overwrite")
    one_error_line(code, err, f"{notes}: a folder that is not a model folder")
    assert [p.name for p in notes.iterdir()] == ["todo.txt"]
    code, _, err = cli("export", toy_checkpoint, "--output", "-")
    one_error_line(code, err, "--output -: a model folder is a folder, not stdout")
    target = tmp_path / "model"
    shutil.copytree(exported, target)
    code, _, err = cli("export", subword_checkpoint(tmp_path / "s.pt", True), "-o", target)
    one_error_line(code, err, f"{target}: already holds a model; pass --overwrite")
    assert (target / "vocab.src.json").exists()
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()  # an export of `target` killed with -9 left its half-written folder
    (tmp_path / f".model.{ended.pid}-0123abcd.tmp").mkdir()
    (tmp_path / f".model.{ended.pid}-0123abcd.tmp" / "model.safetensors").write_bytes(b"?")
    code, _, err = cli("export", tmp_path / "s.pt", "-o", target, "--overwrite")
    assert code == 0, err
    assert not (target / "vocab.src.json").exists() and (target / "sentencepiece.model").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no leftovers


def test_float16_export_refuses_weights_beyond_its_range(
    toy_checkpoint: Path, tmp_path: Path, cli
) -> None:
    payload = load_checkpoint(toy_checkpoint)
    payload["model"]["decoder.output.bias"][0] = 1e6
    save_checkpoint(payload, tmp_path / "big.pt")
    code, _, err = cli("export", tmp_path / "big.pt", "-o", tmp_path / "f16", "--dtype", "float16")
    one_error_line(code, err, "weights decoder.output.bias do not fit in float16")
    assert not (tmp_path / "f16").exists()


def test_average_and_ensembles_take_folders_beside_checkpoints(
    exported: Path, toy_checkpoint: Path, tmp_path: Path, cli
) -> None:
    code, _, err = cli("average", exported, toy_checkpoint, "--output", tmp_path / "avg.pt")
    assert code == 0, err
    averaged, original = load_checkpoint(tmp_path / "avg.pt"), load_checkpoint(toy_checkpoint)
    assert all(torch.equal(averaged["model"][k], v) for k, v in original["model"].items())
    text = "\n".join(TEST_DE[:8]).encode("utf-8") + b"\n"
    _, alone, _ = cli("translate", "--model", toy_checkpoint, input=text)
    code, together, err = cli("translate", "-m", exported, "-m", toy_checkpoint, input=text)
    assert code == 0, err
    assert together == alone  # two copies of one model decode as that model


def hub_cache(root: Path, repo: str, commits: dict[str, Path], refs: dict[str, str]) -> Path:
    """A huggingface_hub cache as the library lays it out: models--ORG--NAME/blobs holds
    each file once under its hash, snapshots/COMMIT/ links to the blobs, refs/NAME holds
    a commit."""
    repo_folder = root / f"models--{repo.replace('/', '--')}"
    (repo_folder / "blobs").mkdir(parents=True)
    (repo_folder / "refs").mkdir()
    for commit, folder in commits.items():
        snapshot = repo_folder / "snapshots" / commit
        snapshot.mkdir(parents=True)
        for file in folder.iterdir():
            data = file.read_bytes()
            blob = hashlib.sha256(data).hexdigest()
            (repo_folder / "blobs" / blob).write_bytes(data)
            os.symlink(f"../../blobs/{blob}", snapshot / file.name)
    for name, commit in refs.items():
        (repo_folder / "refs" / name).write_text(commit, encoding="ascii")
    return root


@pytest.fixture(scope="module")
def hub(exported: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """An offline huggingface_hub cache holding org/toy: main is the toy model; tag v1, an
    earlier commit, a tiny subword model. -> the environment that points at it."""
    root = tmp_path_factory.mktemp("hub")
    earlier = export_subword(root / "work")
    first, second = "1" * 40, "2" * 40
    cache = hub_cache(
        root / "cache", "org/toy", {first: earlier, second: exported}, {"main": second, "v1": first}
    )
    return {"HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}


def export_subword(folder: Path) -> Path:
    folder.mkdir()
    export(subword_checkpoint(folder / "s.pt", True), folder / "model", "float32")
    return folder / "model"


def test_hub_ids_resolve_through_the_cache_offline_with_revisions(
    hub: dict[str, str], exported: Path, cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub

    # What HF_HUB_CACHE and HF_HUB_OFFLINE set when huggingface_hub is imported (the
    # server test below sets the variables themselves).
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", hub["HF_HUB_CACHE"])
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    text = ("\n".join(TEST_DE[:6]) + "\n").encode("utf-8")
    snapshot = Path(hub["HF_HUB_CACHE"]) / "models--org--toy" / "snapshots" / ("1" * 40)
    main, earlier = (cli("translate", "-m", m, input=text)[1] for m in (exported, snapshot))
    assert main != earlier
    revisions = {"": main, "@main": main, "@v1": earlier, f"@{'1' * 40}": earlier}
    for revision, wanted in revisions.items():
        code, out, err = cli("translate", "--model", f"hf:org/toy{revision}", input=text)
        assert (code, out) == (0, wanted), err
    code, _, err = cli("translate", "--model", "hf:org/missing", input=text)
    one_error_line(code, err, "hf:org/missing: not in the Hugging Face cache", "HF_HUB_OFFLINE")
    code, _, err = cli("translate", "--model", "hf:org/toy@v9", input=text)
    one_error_line(code, err, "hf:org/toy@v9: not in the Hugging Face cache")
    code, _, err = cli("average", "hf:org/toy", exported, "-o", exported.parent / "a.pt")
    assert code == 0, err  # the Hub's copy and the folder are two files of one model


def test_serve_takes_a_hub_id(
    hub: dict[str, str], toy_translator: Translator, tmp_path: Path, monkeypatch
) -> None:
    import httpx

    for name, value in hub.items():
        monkeypatch.setenv(name, value)
    process, url = start_server([Path("hf:org/toy")], [], tmp_path / "serve.log")
    try:
        answer = httpx.post(f"{url}/translate", json={"text": TEST_DE[0]}, timeout=60).json()
    finally:
        process.terminate()
        process.wait(30)
    expected = toy_translator.translate(TEST_DE[:1])[0]
    assert answer["translations"][0]["translation"] == expected.text
