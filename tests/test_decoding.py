"""Beam search, n-best, unknown-word replacement, attention pictures and the translate
command's output modes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import ROOT, random_batch, run_cli, tiny_model
from hypothesis import given
from hypothesis import strategies as st

from seq2seq.search import beam_search, greedy_search, length_penalty, max_output_lengths
from seq2seq.translator import Translation, replace_unknown
from seq2seq.vocab import EOS


def _batch(lengths: list[int], vocab: int = 13, seed: int = 0):
    return random_batch(lengths, vocab, torch.Generator().manual_seed(seed))


@given(st.lists(st.integers(2, 9), min_size=1, max_size=6), st.integers(0, 3))
def test_beam_of_one_is_greedy(lengths: list[int], seed: int):
    model = tiny_model(scale=0.8)
    src, src_lengths = _batch(lengths, seed=seed)
    limits = max_output_lengths(src_lengths, 1.5, 3)
    greedy = greedy_search(model, src, src_lengths, limits)
    beam = beam_search(model, src, src_lengths, limits, beam_size=1)
    for g, (b,) in zip(greedy, beam, strict=True):
        assert g.tokens == b.tokens
        assert g.score == pytest.approx(b.score, abs=1e-5)
        assert torch.allclose(g.attention, b.attention, atol=1e-6)


def test_beam_result_does_not_depend_on_the_batch():
    model = tiny_model(scale=0.8)
    src, src_lengths = _batch([3, 9, 5, 7, 2, 8], seed=1)
    limits = max_output_lengths(src_lengths, 1.5, 4)
    together = beam_search(model, src, src_lengths, limits, beam_size=4, alpha=0.6, nbest=4)
    for row in range(len(src_lengths)):
        length = int(src_lengths[row])
        alone = beam_search(
            model, src[row : row + 1, :length], src_lengths[row : row + 1], limits[row : row + 1],
            beam_size=4, alpha=0.6, nbest=4,
        )[0]  # fmt: skip
        assert [h.tokens for h in alone] == [h.tokens for h in together[row]]
        assert [h.score for h in alone] == pytest.approx([h.score for h in together[row]], abs=1e-5)


def test_nbest_is_sorted_distinct_and_beats_greedy():
    model = tiny_model(scale=0.8)
    src, src_lengths = _batch([6, 8, 4], seed=2)
    limits = max_output_lengths(src_lengths, 1.5, 4)
    greedy = greedy_search(model, src, src_lengths, limits)
    beams = beam_search(model, src, src_lengths, limits, beam_size=5, alpha=0.0, nbest=5)
    for row, (g, hypotheses) in enumerate(zip(greedy, beams, strict=True)):
        scores = [h.score for h in hypotheses]
        assert scores == sorted(scores, reverse=True)
        assert len({tuple(h.tokens) for h in hypotheses}) == len(hypotheses)
        # Without length penalty beam search ranks by log-probability: never below greedy.
        assert hypotheses[0].score >= g.score - 1e-5
        for h in hypotheses:
            assert h.attention.shape[1] == src_lengths[row]
            assert EOS not in h.tokens


def test_beam_respects_max_lengths():
    model = tiny_model(scale=0.8)
    src, src_lengths = _batch([6, 6], seed=3)
    limits = torch.tensor([1, 3])
    beams = beam_search(model, src, src_lengths, limits, beam_size=3, nbest=3)
    assert all(len(h.tokens) <= 1 for h in beams[0])
    assert all(len(h.tokens) <= 3 for h in beams[1])


def test_finished_sentences_leave_the_decoder_batch(monkeypatch: pytest.MonkeyPatch):
    model = tiny_model(scale=0.8)
    rows_per_step = []
    step = model.decoder.step

    def counting_step(tokens, state, memory):
        rows_per_step.append(tokens.size(0))
        return step(tokens, state, memory)

    monkeypatch.setattr(model.decoder, "step", counting_step)
    src, src_lengths = _batch([6, 6], seed=3)
    beam_search(model, src, src_lengths, torch.tensor([1, 4]), beam_size=3)
    assert rows_per_step == [6, 3, 3, 3], "sentence 0 stops after one token, its 3 beams leave"
    rows_per_step.clear()
    greedy_search(model, src, src_lengths, torch.tensor([1, 4]))
    assert rows_per_step == [2, 1, 1, 1]


def test_length_penalty_is_gnmt():
    lengths = torch.tensor([1, 5, 10])
    assert torch.allclose(length_penalty(lengths, 0.0), torch.ones(3))
    assert torch.allclose(length_penalty(lengths, 1.0), (5 + lengths.float()) / 6)


def test_replace_unknown_copies_the_attended_source_token():
    source = ["Herr", "Schmidt", "fährt", "nach", "Wuppertal", "."]
    output = ["Mr", "<unk>", "drives", "to", "<unk>", "."]
    # Attention rows (output + <eos>) over columns <sos>, source..., <eos>.
    attention = torch.zeros(7, 8)
    for out_position, src_position in enumerate([0, 1, 2, 3, 4, 5, 5]):
        attention[out_position, src_position + 1] = 0.9
        attention[out_position, 0] = 0.1
    translation = Translation("", output, source, 0.0, attention)
    assert translation.alignment() == [0, 1, 2, 3, 4, 5]
    replaced = replace_unknown(output, source, translation.alignment())
    assert replaced == ["Mr", "Schmidt", "drives", "to", "Wuppertal", "."]


def test_translator_replaces_unknown_words(toy_translator):
    decode = toy_translator.decode.updated(beam_size=1, replace_unk=True)
    (result,) = toy_translator.translate(["Ein Mann läuft im Park."], decode)
    assert "<unk>" not in result.tokens


def test_translator_nbest_and_api(toy_translator):
    decode = toy_translator.decode.updated(beam_size=4, nbest=3)
    lines = ["Ein Hund läuft im Park.", "", "Zwei Männer tanzen im Schnee."]
    results = toy_translator.translate_nbest(lines, decode)
    assert [len(r) for r in results] == [3, 3, 3]
    assert results[1][0].text == ""
    assert results[0][0].text == "A dog runs in the park."
    assert results[0][0].attention.shape == (len(results[0][0].tokens) + 1, 8)
    assert abs(results[0][0].attention.sum(dim=1) - 1).max() < 1e-5


def test_translate_output_modes(toy_checkpoint: Path, tmp_path: Path):
    text = "Ein Hund läuft im Park.\n\nZwei Männer tanzen im Schnee.\n"
    code, out, err = run_cli("translate", "-m", toy_checkpoint, "--nbest", "2", input=text)
    assert code == 0, err
    rows = [line.split("\t") for line in out.splitlines()]
    assert [(r[0], r[1]) for r in rows] == [("0", "1"), ("0", "2"), ("1", "1"), ("1", "2"),
                                            ("2", "1"), ("2", "2")]  # fmt: skip
    assert rows[0][3] == "A dog runs in the park."
    code, out, err = run_cli(
        "translate", "-m", toy_checkpoint, "--scores", "--beam", "1", input=text
    )
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == 3 and lines[0].split("\t")[1] == "A dog runs in the park."
    float(lines[0].split("\t")[0])
    code, out, err = run_cli(
        "translate",
        "-m",
        toy_checkpoint,
        "--json",
        "--plot-attention",
        tmp_path / "att",
        input=text,
    )
    assert code == 0, err
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["index"] for r in records] == [0, 1, 2]
    assert records[0]["translation"] == "A dog runs in the park."
    assert len(records[0]["alignment"]) == len(records[0]["tokens"])
    assert records[1]["translation"] == ""
    pictures = sorted(p.name for p in (tmp_path / "att").iterdir())
    assert pictures == ["000001.png", "000003.png"]  # none for the empty line
    assert (tmp_path / "att" / "000001.png").read_bytes().startswith(b"\x89PNG")


def test_translate_truncates_long_lines_with_a_warning(toy_checkpoint: Path):
    text = "Ein Hund läuft im Park.\n" + "Ein Hund " * 200 + "\n"
    code, out, err = run_cli("translate", "-m", toy_checkpoint, "--beam", "1", input=text, cwd=ROOT)
    assert code == 0, err
    assert len(out.splitlines()) == 2
    assert "<stdin>:2" in err and "truncated" in err
    assert "<stdin>:1" not in err


def test_nbest_larger_than_beam_is_refused(toy_checkpoint: Path):
    code, out, err = run_cli("translate", "-m", toy_checkpoint, "--beam", "2", "--nbest", "3",
                             input="Ein Hund.\n")  # fmt: skip
    assert code == 2 and "--nbest" in err and "Traceback" not in err


def test_evaluate_with_beam(toy_checkpoint: Path):
    args = ["evaluate", "-m", toy_checkpoint, "--src", ROOT / "data/toy/test.de",
            "--ref", ROOT / "data/toy/test.en", "--json"]  # fmt: skip
    code, out, err = run_cli(*args, "--beam", "5")
    assert code == 0, err
    beam = json.loads(out)
    assert beam["beam"] == 5 and beam["bleu"] > 90
    code, out, err = run_cli(*args, "--beam", "1")
    greedy = json.loads(out)
    assert greedy["beam"] == 1 and greedy["perplexity"] == pytest.approx(beam["perplexity"])


@pytest.mark.parametrize("beam", [1, 4])
def test_bf16_decoding_translates_like_fp32(toy_translator, beam: int):
    lines = ["Ein Hund läuft im Park.", "", "Zwei Männer tanzen im Schnee."]
    fp32 = toy_translator.translate(lines, toy_translator.decode.updated(beam_size=beam))
    bf16 = toy_translator.translate(
        lines, toy_translator.decode.updated(beam_size=beam, precision="bf16")
    )
    assert [t.text for t in bf16] == [t.text for t in fp32]
    assert [t.score for t in bf16] == pytest.approx([t.score for t in fp32], abs=0.05)


def test_translate_precision_option(toy_checkpoint: Path):
    code, out, err = run_cli("translate", "-m", toy_checkpoint, "--precision", "bf16",
                             input="Ein Hund läuft im Park.\n")  # fmt: skip
    assert code == 0, err
    assert out == "A dog runs in the park.\n"
    code, out, err = run_cli("translate", "-m", toy_checkpoint, "--precision", "fp16",
                             input="Ein Hund.\n")  # fmt: skip
    assert code == 2 and "--precision" in err and "Traceback" not in err
