"""Models prepared for CPU decoding (seq2seq/inference.py): same translations in fp32,
with oneDNN or without it, int8 weights that still translate the toy test set, nothing
changed in the loaded model."""

from __future__ import annotations

import pytest
import torch
from conftest import TOY_DATA
from fastapi.testclient import TestClient
from torch import nn

from seq2seq.corpus import read_lines
from seq2seq.errors import UserError
from seq2seq.inference import OneDnnLinear, onednn_linear_works, prepared, quantized
from seq2seq.metrics import score_corpus
from seq2seq.serve import ServeLimits, create_app
from seq2seq.translator import Translator

SOURCES = read_lines(TOY_DATA / "test.de")
REFERENCES = read_lines(TOY_DATA / "test.en")


def plain(translator: Translator) -> Translator:
    """The same model as a live (not frozen) translator: decodes the loaded model itself."""
    return Translator(translator.models, translator.src, translator.trg, translator.decode,
                      translator.device)  # fmt: skip


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="torch built without oneDNN")
@pytest.mark.parametrize("beam_size", [1, 4])
def test_fp32_preparation_translates_as_the_loaded_model(toy_translator: Translator, beam_size):
    decode = toy_translator.decode.updated(beam_size=beam_size, batch_size=7)
    fast = toy_translator.translate_nbest(SOURCES, decode)
    reference = plain(toy_translator).translate_nbest(SOURCES, decode)
    assert isinstance(toy_translator.searchable(decode).decoder.output, OneDnnLinear)
    assert [[t.text for t in c] for c in fast] == [[t.text for t in c] for c in reference]
    for candidates, expected in zip(fast, reference, strict=True):
        for a, b in zip(candidates, expected, strict=True):
            assert a.score == pytest.approx(b.score, abs=1e-4)
            assert torch.allclose(a.attention, b.attention, atol=1e-5)


@pytest.mark.parametrize("upgrade", ["removed", "new arguments", "another result"])
def test_fp32_decodes_through_nn_linear_where_the_private_onednn_op_fails(
    toy_translator: Translator, monkeypatch: pytest.MonkeyPatch, upgrade: str
) -> None:
    """A torch whose `torch._C._nn.mkldnn_linear` is gone or changed translates as the
    loaded model does, through its nn.Linear."""
    if upgrade == "removed":
        monkeypatch.delattr(torch._C._nn, "mkldnn_linear", raising=False)
    else:
        changed = {"new arguments": lambda i, w, b, out: i, "another result": lambda i, w, b: i}
        monkeypatch.setattr(torch._C._nn, "mkldnn_linear", changed[upgrade], raising=False)
    onednn_linear_works.cache_clear()
    try:
        toy = toy_translator
        fallback = Translator(toy.models, toy.src, toy.trg, toy.decode, toy.device, frozen=True)
        decode = toy_translator.decode.updated(beam_size=4, batch_size=7)
        assert isinstance(fallback.searchable(decode).decoder.output, nn.Linear)
        fast = fallback.translate_nbest(SOURCES, decode)
    finally:
        onednn_linear_works.cache_clear()  # probed again with the real op
    reference = plain(toy_translator).translate_nbest(SOURCES, decode)
    for candidates, expected in zip(fast, reference, strict=True):
        for a, b in zip(candidates, expected, strict=True):
            assert (a.text, a.score) == (b.text, b.score)
            assert torch.equal(a.attention, b.attention)


def test_preparing_leaves_the_model_as_loaded(toy_translator: Translator) -> None:
    (model,) = toy_translator.models
    weights = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    fast = prepared(model, "fp32")
    small = quantized(model)
    assert isinstance(model.decoder.output, nn.Linear)
    assert fast is not model and small is not model
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, weights[name]), name
    # fp32: the unchanged weights are shared, not copied.
    assert fast.encoder.embedding.weight.data_ptr() == model.encoder.embedding.weight.data_ptr()
    assert fast.decoder.rnn.weight_hh.data_ptr() == model.decoder.rnn.weight_hh.data_ptr()


def test_a_frozen_translator_prepares_once_a_live_one_never(toy_translator: Translator):
    decode = toy_translator.decode
    assert toy_translator.searchable(decode) is toy_translator.searchable(decode)
    live = plain(toy_translator)
    assert live.searchable(decode) is live.models[0]
    int8 = decode.updated(precision="int8")
    assert live.searchable(int8) is not live.searchable(int8)  # a fresh copy per call


def test_int8_translates_the_toy_test_set(toy_translator: Translator) -> None:
    decode = toy_translator.decode.updated(precision="int8", beam_size=3)
    model = toy_translator.searchable(decode)
    assert isinstance(model.decoder.output, torch.ao.nn.quantized.dynamic.Linear)
    assert isinstance(model.decoder.rnn, torch.ao.nn.quantized.dynamic.GRUCell)
    assert isinstance(model.encoder.rnn, torch.ao.nn.quantized.dynamic.GRU)
    int8 = [t.text for t in toy_translator.translate(SOURCES, decode)]
    fp32 = [t.text for t in toy_translator.translate(SOURCES, decode.updated(precision="fp32"))]
    words = toy_translator.trg.tokenizer.words
    bleu_int8 = score_corpus(int8, REFERENCES, words).bleu
    bleu_fp32 = score_corpus(fp32, REFERENCES, words).bleu
    assert bleu_int8 >= bleu_fp32 - 2.0, (bleu_int8, bleu_fp32)
    assert sum(a == b for a, b in zip(int8, fp32, strict=True)) >= 0.9 * len(SOURCES)


def test_int8_is_refused_off_the_cpu(toy_translator: Translator) -> None:
    elsewhere = Translator(toy_translator.models, toy_translator.src, toy_translator.trg,
                           toy_translator.decode, torch.device("meta"))  # fmt: skip
    with pytest.raises(UserError, match="int8 runs on the CPU only"):
        elsewhere.searchable(toy_translator.decode.updated(precision="int8"))


def test_the_server_decodes_at_the_precision_asked(toy_translator: Translator) -> None:
    with TestClient(create_app(toy_translator, ServeLimits(), ["toy.pt"], "int8")) as client:
        assert client.get("/info").json()["decode"]["precision"] == "int8"
        answer = client.post("/translate", json={"texts": SOURCES[:4]}).json()
    # int8 quantizes each call's activations with one scale for the whole batch, so the
    # reference is the same four sentences in one call, as the server batches them.
    int8 = toy_translator.decode.updated(precision="int8")
    expected = toy_translator.translate(SOURCES[:4], int8)
    assert [t["translation"] for t in answer["translations"]] == [t.text for t in expected]
    scores = [t["score"] for t in answer["translations"]]
    assert scores == pytest.approx([t.score for t in expected], abs=1e-3)


def test_translate_takes_int8(cli, toy_checkpoint) -> None:
    status, out, err = cli(
        "translate", "--model", toy_checkpoint, "--precision", "int8",
        input="\n".join(SOURCES[:5]).encode() + b"\n",
    )  # fmt: skip
    assert status == 0, err
    assert len(out.splitlines()) == 5 and all(out.splitlines())
    status, out, err = cli("translate", "--model", toy_checkpoint, "--precision", "int4")
    assert status == 2 and "int4" in err and len(err.strip().splitlines()) == 1
