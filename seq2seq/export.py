"""`seq2seq export`: any model (a `.pt` checkpoint, a model folder, a Hub id) -> a model
folder (model_folder.py) with its model card, README.md: Hugging Face metadata in YAML
front matter (language, license, library_name, tags, pipeline_tag, datasets, metrics, and
a model-index of the test scores with their sacreBLEU signatures), then what the model
is, how to use it (the commands), its scores, how it was trained (its config) and its
limits.

The card's scores are the checkpoint's last validation and, with `--evaluate`, the
model's own test split (the config's `data.test`) translated by the exported folder
itself, greedy and with the config's beam: a float16 folder is scored as float16.
With `--onnx` the folder also holds the model as ONNX graphs (onnx_export.py).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import yaml

from seq2seq import console
from seq2seq.checkpoint import load_checkpoint, saved_config, saved_model
from seq2seq.config import Config
from seq2seq.files import write_atomic
from seq2seq.metrics import Scores
from seq2seq.model_folder import CARD, SavedModel, write_model_folder


@dataclass(frozen=True)
class DataTerms:
    """A known training corpus: its Hub dataset id and the terms its models inherit."""

    name: str
    hub_id: str
    terms: str
    link: str


MULTI30K = DataTerms(
    "Multi30k",
    "bentrevett/multi30k",
    "non-commercial research and education use (Elliott et al. 2016, partly derived "
    "from Flickr30K)",
    "https://github.com/multi30k/dataset",
)


@dataclass
class TestScores:
    """One search over the test split."""

    beam: int
    alpha: float
    scores: Scores
    texts: list[str]  # the translations

    @property
    def search(self) -> str:
        return "greedy" if self.beam == 1 else f"beam {self.beam}, alpha {self.alpha}"


def export(
    model: Path,
    output: Path,
    dtype: str,
    evaluate: bool = False,
    data_dir: Path | None = None,
    license: str | None = None,
    overwrite: bool = False,
    onnx: bool = False,
) -> None:
    """Write `model` as the model folder `output`; with `evaluate`, score the written
    folder on its test split and put the scores in its card; with `onnx`, add its ONNX
    graphs."""
    payload = load_checkpoint(model)
    config = saved_config(payload, f"{model} (config)")
    saved = saved_model(payload)
    del payload
    graphs = None
    if onnx:  # refused now, before anything is written, if it cannot be exported
        from seq2seq.onnx_export import check_exportable, graph_files

        check_exportable(config, model)
        graphs = partial(graph_files, config, saved, dtype)

    test = None
    if evaluate:  # read before anything is written: a missing file leaves no folder
        from seq2seq.corpus import read_split

        test = read_split(config.data, config.data.test, data_dir)
    card = Card(output, config, saved, dtype, license, onnx)
    if test is not None:
        card.test_files = _test_files(config, data_dir)
    write_model_folder(output, saved, dtype, card.text(), overwrite, graphs)
    also = ", ONNX graphs fp32 and int8" * onnx
    console.info(f"exported {model} into {output} ({dtype} weights{also})")
    if test is not None:
        card.tests, card.example = _test_scores(output, config, *test)
        if dtype != "float32":
            card.agreement = _agreement(model, card.tests[-1], config, *test)
        write_atomic(output / CARD, lambda handle: handle.write(card.text().encode("utf-8")))
        for result in card.tests:
            scores = _row(result.scores.as_dict(), ", ")
            console.info(
                f"{config.data.test}, {result.search}: BLEU, chrF, tokenized BLEU {scores}"
            )
        if card.agreement:
            console.info(card.agreement)


def _test_scores(
    folder: Path, config: Config, sources: list[str], references: list[str]
) -> tuple[list[TestScores], tuple[str, str]]:
    """The folder's scores on the test split, greedy and with the config's beam, and its
    first sentence with the beam's translation."""
    from seq2seq.evaluation import evaluate
    from seq2seq.translator import Translator

    translator = Translator.from_checkpoint(folder, "cpu")
    results = []
    for beam in sorted({1, config.decode.beam_size}):
        decode = config.decode.updated(beam_size=beam, nbest=1)
        console.info(f"translating {config.data.test} ({len(sources)} sentences), beam {beam}")
        evaluation = evaluate(translator, sources, references, decode)
        texts = [translation.text for translation in evaluation.translations]
        results.append(TestScores(beam, decode.alpha, evaluation.scores, texts))
    return results, (sources[0], results[-1].texts[0])


def _agreement(
    model: Path, folder: TestScores, config: Config, sources: list[str], references: list[str]
) -> str:
    """How the smaller weights of the folder translate the test split compared with the
    float32 weights they came from (`folder`: the folder's scores with the same search)."""
    from seq2seq.evaluation import evaluate
    from seq2seq.translator import Translator

    console.info(f"translating {config.data.test} with the float32 weights of {model}")
    decode = config.decode.updated(beam_size=folder.beam, nbest=1)
    full = evaluate(Translator.from_checkpoint(model, "cpu"), sources, references, decode)
    same = sum(a.text == b for a, b in zip(full.translations, folder.texts, strict=True))
    return (
        f"The weights it was exported from, as float32, score BLEU {full.scores.bleu:.2f}, chrF "
        f"{full.scores.chrf:.2f} on {config.data.test} ({folder.search}); the exported "
        f"weights give the same translation for {same} of its {len(sources)} sentences."
    )


def _test_files(config: Config, data_dir: Path | None) -> str:
    """`evaluate`'s options that name the test split's files."""
    from seq2seq.corpus import split_path, tsv_path

    data = config.data
    folder = data.dir if data_dir is None else data_dir
    if data.format == "tsv":
        return f"--tsv {shlex.quote(str(tsv_path(folder, data.test)))}"
    src, trg = (
        shlex.quote(str(split_path(folder, data.test, lang)))
        for lang in (data.src_lang, data.trg_lang)
    )
    return f"--src {src} --ref {trg}"


class Card:
    """The model card of a folder; `tests` and `example` come with `--evaluate`."""

    def __init__(
        self,
        folder: Path,
        config: Config,
        model: SavedModel,
        dtype: str,
        license: str | None,
        onnx: bool = False,
    ):
        self.folder, self.config, self.model, self.dtype = folder, config, model, dtype
        self.onnx = onnx  # the folder holds ONNX graphs
        self.terms = MULTI30K if config.data.dataset == "multi30k" else None
        self.license = license
        self.tests: list[TestScores] = []
        self.example: tuple[str, str] | None = None
        self.test_files = "--src FILE --ref FILE"  # the test split's, once known
        self.agreement = ""  # how half-precision weights compare with float32, when measured

    def text(self) -> str:
        sections = (self._about(), self._use(), self._scores(), self._training(), self._limits())
        return f"---\n{self._metadata()}\n---\n\n" + "\n".join(sections)

    def _metadata(self) -> str:
        from huggingface_hub import EvalResult, ModelCardData

        data, terms = self.config.data, self.terms
        results = [
            EvalResult(
                task_type="translation",
                task_name=f"Translation {data.src_lang}-{data.trg_lang}",
                dataset_type=terms.hub_id if terms else Path(data.dir).name,
                dataset_name=f"{terms.name if terms else Path(data.dir).name} {data.test}",
                dataset_split=data.test,
                dataset_config=f"{data.src_lang}-{data.trg_lang}",
                metric_type=metric,
                metric_value=round(getattr(test.scores, metric), 2),
                metric_name=f"{'BLEU' if metric == 'bleu' else 'chrF'} ({test.search})",
                metric_args={"signature": getattr(test.scores, f"{metric}_signature")},
            )
            for test in self.tests
            for metric in ("bleu", "chrf")
        ]
        license = self.license or "other"
        named = license == "other" and terms is not None
        card = ModelCardData(
            model_name=self.folder.name,
            language=[data.src_lang, data.trg_lang],
            license=license,
            license_name=terms.name.lower() if named else None,
            license_link=terms.link if named else None,
            library_name="seq2seq",
            tags=["translation"],
            pipeline_tag="translation",
            datasets=[terms.hub_id] if terms else None,
            metrics=["bleu", "chrf"],
            eval_results=results or None,
        )
        return card.to_yaml()

    def _about(self) -> str:
        config, model = self.config, self.model
        data, encoder, decoder = config.data, config.model.encoder, config.model.decoder
        parameters = sum(tensor.numel() for tensor in model.weights.values())
        vocab = "spaCy words" if config.vocab.type == "word" else "SentencePiece pieces"
        gate = f", a {encoder.gate.upper()} gate on the encoder outputs" * (encoder.gate != "none")
        return (
            f"# {self.folder.name}\n\n"
            f"A {data.src_lang} -> {data.trg_lang} translation model made with seq2seq, a "
            "command-line toolkit for the attention-based GRU model of the PyTorch seq2seq "
            "tutorial (Ben Trevett, pytorch-seq2seq, notebook 3): a bidirectional GRU "
            f"encoder ({encoder.hidden_size} per direction, embeddings "
            f"{encoder.embedding_size}) and a GRU decoder ({decoder.hidden_size}, embeddings "
            f"{decoder.embedding_size}) with additive (Bahdanau) attention{gate}; "
            f"{parameters:,} parameters stored as {self.dtype} (read back as float32). "
            f"Vocabularies: {vocab}, {len(model.vocab['src']):,} {data.src_lang} and "
            f"{len(model.vocab['trg']):,} {data.trg_lang} entries"
            f"{', lowercased text' if data.lowercase else ''}.\n"
        )

    def _use(self) -> str:
        where = shlex.quote(str(self.folder))
        example = ""
        if self.example is not None:
            sentence, translation = self.example
            example = (
                f"    echo {shlex.quote(sentence)} | seq2seq translate --model {where}"
                f"  # prints: {translation}\n"
            )
        return (
            "## Use\n\nWith seq2seq installed (`pip install -e .` in its repository):\n\n"
            f"{example}"
            f"    seq2seq translate --model {where} --input FILE --output FILE --beam 5\n"
            f"    seq2seq evaluate --model {where} {self.test_files}\n"
            f"    seq2seq serve --model {where}\n\n"
            "From Python:\n\n"
            "    from seq2seq.translator import Translator\n"
            f"    translator = Translator.from_checkpoint({str(self.folder)!r})\n"
            "    for result in translator.translate(sentences):  # a list of strings\n"
            "        print(result.text)\n\n"
            f"Published on the Hugging Face Hub (`hf upload ORG/NAME {where}`), "
            f"`--model hf:ORG/NAME` works wherever `--model {where}` does.\n"
            + (
                "\nThe folder also holds the model as ONNX graphs (fp32 and int8): "
                "`translate`, `evaluate` and `serve` run them on onnxruntime, which needs "
                "no torch (see docs/translating.md in seq2seq's repository).\n"
            )
            * self.onnx
        )

    def _scores(self) -> str:
        rows = [
            f"| {self.config.data.test} | {test.search} | {_row(test.scores.as_dict())} |"
            for test in self.tests
        ]
        validation, step = self.model.validation, self.model.step
        if validation and "bleu" in validation:  # training validates greedily
            at = f" (step {step})" if step is not None else ""
            rows.append(f"| {self.config.data.valid}{at} | greedy | {_row(validation)} |")
        if not rows:
            return "## Scores\n\nNot measured: `seq2seq export --evaluate` scores the test split.\n"
        signatures = ""
        if self.tests:
            scores = self.tests[0].scores
            signatures = (
                f"\nsacreBLEU signatures: BLEU `{scores.bleu_signature}`, chrF "
                f"`{scores.chrf_signature}`. Tokenized BLEU is the tutorial's measure: "
                "BLEU-4 over lowercased spaCy tokens.\n"
            )
        header = "| data | search | BLEU | chrF | tokenized BLEU |\n|---|---|---|---|---|\n"
        agreement = f"\n{self.agreement}\n" if self.agreement else ""
        return "## Scores\n\n" + header + "\n".join(rows) + "\n" + signatures + agreement

    def _training(self) -> str:
        data, terms = self.config.data, self.terms
        corpus = f"{terms.name} ({terms.link}; terms: {terms.terms})" if terms else data.dir
        steps = f" for {self.model.step:,} optimizer steps" if self.model.step else ""
        text = yaml.safe_dump(self.config.model_dump(), sort_keys=False, allow_unicode=True)
        return (
            f"## Training\n\nTrained{steps} on the `{data.train}` split of {corpus}, "
            f"validated on `{data.valid}`. Its resolved configuration (also `config` in "
            "config.json) follows; to train it again, save it as config.yaml and run "
            "`seq2seq train --config config.yaml`.\n\n```yaml\n" + text + "```\n"
        )

    def _limits(self) -> str:
        config, terms = self.config, self.terms
        data, decode = config.data, config.decode
        limits = [
            f"It translates {data.src_lang} into {data.trg_lang} only, one sentence per "
            "line, and has seen only its training data's kind of text"
            + (" (short image descriptions)" if terms else "")
            + ": expect lower quality on other domains and longer sentences.",
            f"Training skipped pairs longer than {data.max_length} tokens; inputs longer "
            f"than {decode.max_source_length} tokens are truncated (with a warning).",
        ]
        if data.lowercase:
            limits.append(
                "It reads and writes lowercased text; each output's first letter is capitalized."
            )
        if config.vocab.type == "word":
            limits.append(
                "Words outside its vocabulary come out as `<unk>` (`--replace-unk` copies "
                "the source word it attends to instead)."
            )
        limits.append(
            f"Its training data's terms apply to it: {terms.terms}."
            if terms
            else "Its training data's license applies to it (state it with "
            "`seq2seq export --license`)."
        )
        return "## Limits\n\n" + "".join(f"- {limit}\n" for limit in limits)


def _row(scores: dict[str, Any], separator: str = " | ") -> str:
    """BLEU, chrF and tokenized BLEU: a table row's cells, or a line's."""
    return separator.join(f"{scores[key]:.2f}" for key in ("bleu", "chrf", "tokenized_bleu"))
