"""The Python API on the toy run: Translator and evaluate."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch
from conftest import TOY_DATA, one_error_line

from seq2seq.config import DecodeConfig
from seq2seq.corpus import read_lines
from seq2seq.errors import UserError
from seq2seq.evaluation import corpus_losses, evaluate
from seq2seq.translator import Translator, resolve_device

SOURCES = read_lines(TOY_DATA / "test.de")
REFERENCES = read_lines(TOY_DATA / "test.en")


def decoding(translator: Translator, **settings: int | float) -> DecodeConfig:
    """The session's translator's decode settings with some changed, for one call."""
    return translator.decode.updated(**settings)


def test_one_translation_per_line_in_order(
    toy_translator: Translator, monkeypatch: pytest.MonkeyPatch
) -> None:
    lines = [SOURCES[0], "", SOURCES[1], "   ", SOURCES[2], SOURCES[0]]
    results = toy_translator.translate(lines, decoding(toy_translator, batch_size=2))
    assert len(results) == len(lines)
    assert results[1].text == "" and results[3].text == ""
    assert results[1].tokens == [] and results[1].source_tokens == []
    alone = [toy_translator.translate([line])[0].text for line in SOURCES[:3]]
    assert [results[0].text, results[2].text, results[4].text] == alone
    assert results[5].text == results[0].text


@pytest.mark.parametrize("beam_size", [1, 4])
def test_batch_size_does_not_change_translations(
    toy_translator: Translator, monkeypatch: pytest.MonkeyPatch, beam_size: int
) -> None:
    sources = SOURCES[:20]
    results = {}
    for batch_size in (1, 7):
        decode = decoding(toy_translator, batch_size=batch_size, beam_size=beam_size)
        results[batch_size] = toy_translator.translate(sources, decode)
    assert [r.text for r in results[1]] == [r.text for r in results[7]]
    assert [r.score for r in results[1]] == pytest.approx([r.score for r in results[7]], abs=1e-4)


@pytest.mark.parametrize("beam_size", [1, 3])
def test_translation_fields(
    toy_translator: Translator, monkeypatch: pytest.MonkeyPatch, beam_size: int
) -> None:
    decode = decoding(toy_translator, beam_size=beam_size)
    (result,) = toy_translator.translate(SOURCES[:1], decode)
    assert result.source_tokens == toy_translator.src.tokenize([SOURCES[0]])[0]
    assert result.text == toy_translator.trg.detokenize(result.tokens)
    assert result.score <= 0
    rows = len(result.tokens) + 1  # <eos> too, unless stopped by the length limit
    assert result.attention.shape[0] in (rows, rows - 1)
    assert result.attention.shape[1] == len(result.source_tokens) + 2  # <sos> ... <eos>


def test_the_toy_model_learned_something(toy_translator: Translator) -> None:
    evaluation = evaluate(toy_translator, SOURCES, REFERENCES)
    assert evaluation.perplexity < 5
    assert evaluation.scores.bleu > 10
    assert len(evaluation.translations) == len(SOURCES)
    assert evaluation.perplexity == pytest.approx(math.exp(evaluation.loss))
    result = evaluation.as_dict()
    for key in ("loss", "perplexity", "free_running_perplexity", "bleu", "chrf", "tokenized_bleu"):
        assert key in result


def test_corpus_loss_ignores_batching(
    toy_translator: Translator, monkeypatch: pytest.MonkeyPatch
) -> None:
    whole = corpus_losses(
        toy_translator, SOURCES, REFERENCES, decoding(toy_translator, batch_size=64)
    )
    small = corpus_losses(
        toy_translator, SOURCES, REFERENCES, decoding(toy_translator, batch_size=3)
    )
    assert whole == pytest.approx(small, rel=1e-5)  # teacher-forced and free-running


def test_a_live_translator_decodes_in_eval_mode_and_keeps_the_models_mode(
    toy_translator: Translator,
) -> None:
    """Training's translator decodes the very model it trains, in training mode (dropout
    0.1): translations and scores are those of eval mode, and the mode stays."""
    model = copy.deepcopy(toy_translator.models[0]).eval()
    src, trg, decode = toy_translator.src, toy_translator.trg, toy_translator.decode
    live = Translator(model, src, trg, decode, torch.device("cpu"))
    for beam_size in (1, 3):
        decode = live.decode.updated(beam_size=beam_size)
        expected = [(t.text, t.score) for t in live.translate(SOURCES[:8], decode)]
        model.train()
        assert [(t.text, t.score) for t in live.translate(SOURCES[:8], decode)] == expected
        assert all(module.training for module in model.modules())
        model.eval()


def test_a_source_is_truncated_only_beyond_max_source_length(
    toy_translator: Translator,
) -> None:
    decode = decoding(toy_translator, max_source_length=4)
    exactly, longer = toy_translator.translate(["Ein Hund läuft .", "Ein Hund läuft schnell ."],
                                               decode)  # fmt: skip
    assert not exactly.truncated and exactly.source_tokens == ["Ein", "Hund", "läuft", "."]
    assert longer.truncated and longer.source_tokens == ["Ein", "Hund", "läuft", "schnell"]
    assert longer.attention.size(1) == 4 + 2  # <sos>, the 4 tokens translated, <eos>


def test_from_checkpoint_refuses_foreign_files(tmp_path: Path) -> None:
    path = tmp_path / "foreign.pt"
    torch.save({"weights": torch.ones(2)}, path)
    with pytest.raises(UserError, match="not a seq2seq checkpoint"):
        Translator.from_checkpoint(path, "cpu")


def test_from_checkpoint_reports_damaged_contents(tmp_path: Path, toy_checkpoint: Path) -> None:
    payload = torch.load(toy_checkpoint, weights_only=True)
    del payload["vocab"]
    path = tmp_path / "damaged.pt"
    torch.save(payload, path)
    with pytest.raises(UserError, match="damaged seq2seq checkpoint") as caught:
        Translator.from_checkpoint(path, "cpu")
    assert str(path) in str(caught.value)


@pytest.mark.parametrize(
    "cuda, mps, expected",
    [(True, True, "cuda"), (True, False, "cuda"), (False, True, "mps"), (False, False, "cpu")],
)
def test_auto_prefers_cuda_then_mps_then_cpu(
    monkeypatch: pytest.MonkeyPatch, cuda: bool, mps: bool, expected: str
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)
    assert resolve_device("auto") == torch.device(expected)
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.parametrize("name, message", [("cuda", "no CUDA GPU"), ("mps", "no Apple GPU")])
def test_an_absent_device_is_a_user_error(
    monkeypatch: pytest.MonkeyPatch, name: str, message: str
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(UserError, match=f"'{name}'.*{message}"):
        resolve_device(name)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert resolve_device(name) == torch.device(name)


def test_out_of_memory_in_translation_suggests_a_smaller_batch(toy_checkpoint, cli, monkeypatch):
    import seq2seq.translator

    def out_of_memory(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(seq2seq.translator, "greedy_search", out_of_memory)
    code, out, err = cli("translate", "-m", toy_checkpoint, "--beam", "1", input=b"Ein Hund.\n")
    one_error_line(code, err, "out of memory", "--batch-size")
