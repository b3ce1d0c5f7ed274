"""The command line: parses arguments, loads a config or checkpoint, calls the library.

A user mistake (UserError) prints one line on stderr and exits with status 2; any
other exception is a bug: a short message and exit 1, the traceback only with --debug.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from seq2seq.allocator import tune_malloc
from seq2seq.errors import UserError

app = typer.Typer(
    help="Train, run and score attention-based GRU neural machine translation models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
_debug = False


@app.callback()
def _options(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.")] = False,
) -> None:
    global _debug
    _debug = debug


@app.command()
def train(
    config: Annotated[Path | None, typer.Option("--config", "-c", help="YAML config file.")] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override a config key: section.key=value (repeatable)."),
    ] = None,
    run_dir: Annotated[
        Path | None, typer.Option("--run-dir", help="Run folder (overrides train.run_dir).")
    ] = None,
    resume: Annotated[
        bool,
        typer.Option(
            help="Continue the run in the run folder from its last.pt, exactly where it stopped; "
            "without --config, the folder's own config.yaml is used."
        ),
    ] = False,
    overwrite: Annotated[
        bool, typer.Option(help="Replace a run already in the run folder.")
    ] = False,
) -> None:
    """Train a model: best.pt, last.pt, config.yaml, metrics.jsonl, curves.png in the run folder."""
    from seq2seq.training import Diverged, Interrupted, resolve_run
    from seq2seq.training import train as run_training

    if resume and overwrite:
        raise UserError("--resume and --overwrite contradict each other; pick one")
    resolved = resolve_run(config, set_ or [], run_dir, resume)
    main_rank = os.environ.get("RANK", "0") == "0"  # under torchrun, rank 0 speaks
    try:
        folder = run_training(resolved, overwrite=overwrite, resume=resume)
    except Interrupted as stop:
        if main_rank:
            print(stop, file=sys.stderr)
        sys.exit(128 + stop.signum)
    except Diverged as stop:
        if main_rank:
            print(f"error: {stop}", file=sys.stderr)
        sys.exit(3)
    if main_rank:
        typer.echo(f"done: {folder / 'best.pt'}", err=True)


@app.command()
def download(
    dataset: Annotated[str, typer.Argument(help="The dataset: multi30k.")],
    dest: Annotated[Path, typer.Option("--dest", help="Folder to put the files in.")],
    lang: Annotated[
        list[str] | None, typer.Option("--lang", help="Languages to fetch (default: all four).")
    ] = None,
    url: Annotated[str | None, typer.Option(help="Base URL of a mirror of data/task1/raw.")] = None,
) -> None:
    """Fetch Multi30k task 1 (train, val, test_2016_flickr; de, en, fr, cs), SHA-256 checked."""
    from seq2seq.download import MULTI30K_LANGUAGES, download_multi30k

    if dataset != "multi30k":
        raise UserError(f"unknown dataset {dataset!r}; known: multi30k")
    paths = download_multi30k(dest, tuple(lang or MULTI30K_LANGUAGES), url)
    typer.echo(f"{len(paths)} verified files in {dest}", err=True)


@app.command()
def plot(
    run_dir: Annotated[Path, typer.Argument(help="A run folder.")],
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="The PNG (default: RUN_DIR/curves.png).")
    ] = None,
) -> None:
    """Draw a run's training curves (loss, perplexity, BLEU) into RUN_DIR/curves.png; while
    the run trains (and redraws that file itself), into RUN_NAME-curves.png here."""
    from seq2seq.plots import plot_run
    from seq2seq.run_folder import RunFolder

    if output is None and RunFolder(run_dir).training():
        output = Path(f"{run_dir.resolve().name}-curves.png")
    typer.echo(str(plot_run(run_dir, output)))


@app.command()
def average(
    sources: Annotated[
        list[Path],
        typer.Argument(help="A run folder (its kept ckpt-step*.pt files) or checkpoint files."),
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="Averaged checkpoint to write.")],
) -> None:
    """Average the weights of several checkpoints into one self-contained checkpoint."""
    from seq2seq.checkpoint import average_checkpoints, save_checkpoint
    from seq2seq.run_folder import RunFolder

    paths: list[Path] = []
    for source in sources:
        if source.is_dir():
            found = RunFolder(source).all_kept()
            if not found:
                raise UserError(
                    f"{source}: no ckpt-step*.pt files (train with train.keep_checkpoints=k)"
                )
            paths.extend(found)
        else:
            paths.append(source)
    typer.echo(f"averaging {len(paths)} checkpoints", err=True)
    save_checkpoint(average_checkpoints(paths), output)
    typer.echo(f"averaged {len(paths)} checkpoints into {output}", err=True)


ModelOption = Annotated[
    list[Path],
    typer.Option(
        "--model", "-m", help="Checkpoint (.pt) to use; repeat it to decode with an ensemble."
    ),
]
BeamOption = Annotated[
    int | None,
    typer.Option("--beam", min=1, help="Beam size; 1 is greedy (default: decode.beam_size)."),
]
AlphaOption = Annotated[
    float | None,
    typer.Option("--alpha", min=0.0, help="Length penalty alpha (default: decode.alpha)."),
]
ReplaceUnkOption = Annotated[
    bool | None,
    typer.Option(
        "--replace-unk/--no-replace-unk",
        help="Replace <unk> with the source token it attends to most "
        "(default: decode.replace_unk).",
    ),
]
BatchOption = Annotated[
    int | None,
    typer.Option("--batch-size", min=1, help="Sentences per batch (default: decode.batch_size)."),
]
DeviceOption = Annotated[str, typer.Option("--device", help="auto, cpu, cuda or mps.")]
PrecisionOption = Annotated[
    str | None,
    typer.Option(
        "--precision",
        help="fp32, or bf16 (faster on AMX CPUs and GPUs; default: decode.precision).",
    ),
]


def _translator(
    models: list[Path],
    device: str,
    beam: int | None,
    alpha: float | None,
    replace_unk: bool | None,
    batch_size: int | None,
    precision: str | None,
    nbest: int | None = None,
):
    """Load the checkpoint(s) -> (translator, its decode settings with the command line's
    options applied and validated)."""
    from seq2seq.translator import Translator

    if precision not in (None, "fp32", "bf16"):
        raise UserError(f"--precision must be fp32 or bf16, not {precision!r}")
    translator = Translator.from_checkpoint(models, device)
    decode = translator.decode.updated(
        beam_size=beam,
        alpha=alpha,
        replace_unk=replace_unk,
        batch_size=batch_size,
        precision=precision,
        nbest=nbest,
    )
    return translator, decode


@app.command()
def translate(
    model: ModelOption,
    input: Annotated[
        Path | None, typer.Option("--input", "-i", help="Text file to translate (default: stdin).")
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Where to write (default: stdout).")
    ] = None,
    beam: BeamOption = None,
    alpha: AlphaOption = None,
    nbest: Annotated[
        int,
        typer.Option(min=1, help="Write the N best: index<TAB>rank<TAB>score<TAB>text lines."),
    ] = 1,
    scores: Annotated[bool, typer.Option("--scores", help="Write score<TAB>text.")] = False,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help="One JSON object per line: translation, score, tokens, source tokens, "
            "alignment (per output token, the source token index it attends to most).",
        ),
    ] = False,
    replace_unk: ReplaceUnkOption = None,
    plot_attention: Annotated[
        Path | None,
        typer.Option("--plot-attention", help="Write one attention heatmap PNG per sentence here."),
    ] = None,
    batch_size: BatchOption = None,
    device: DeviceOption = "auto",
    precision: PrecisionOption = None,
) -> None:
    """Translate one sentence per line: exactly one output line per input line, in order
    (N lines with --nbest N). Reads and writes in batches as lines arrive."""
    from seq2seq import textio

    translator, decode = _translator(
        model, device, beam, alpha, replace_unk, batch_size, precision, nbest
    )
    lines, name, interactive = textio.input_lines(input)
    if plot_attention:
        try:
            plot_attention.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise UserError(f"{plot_attention}: cannot create: {error.strerror or error}") from None
    index = 0
    with textio.output(output) as sink:
        for chunk in textio.chunks(lines, 1 if interactive else decode.batch_size):
            for candidates in translator.translate_nbest(chunk, decode):
                if candidates[0].truncated:
                    limit = decode.max_source_length
                    _warn(f"{name}:{index + 1}: longer than {limit} tokens, truncated")
                sink.write(textio.format_candidates(index, candidates, nbest, scores, as_json))
                if plot_attention and candidates[0].source_tokens:
                    from seq2seq.plots import plot_attention as draw

                    draw(candidates[0], plot_attention / f"{index + 1:06d}.png")
                index += 1
            sink.flush()


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


@app.command()
def evaluate(
    ref: Annotated[Path, typer.Option("--ref", help="Reference translations, one per line.")],
    model: Annotated[
        list[Path] | None,
        typer.Option(
            "--model",
            "-m",
            help="Checkpoint (.pt) to translate --src with; repeat it for an ensemble.",
        ),
    ] = None,
    src: Annotated[
        Path | None, typer.Option("--src", help="Source sentences, line-aligned with --ref.")
    ] = None,
    hyp: Annotated[
        Path | None,
        typer.Option("--hyp", help="Score these translations instead of translating --src."),
    ] = None,
    lang: Annotated[
        str, typer.Option(help="Target language for tokenized BLEU of --hyp without --model.")
    ] = "en",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Also write the translations here.")
    ] = None,
    beam: BeamOption = None,
    alpha: AlphaOption = None,
    replace_unk: ReplaceUnkOption = None,
    batch_size: BatchOption = None,
    device: DeviceOption = "auto",
    precision: PrecisionOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Score translations against --ref: sacreBLEU BLEU and chrF (with signatures), tokenized
    BLEU, and perplexity. Translates --src with --model, or scores the lines of --hyp."""
    from seq2seq.corpus import read_parallel

    if hyp is None and (not model or src is None):
        raise UserError("evaluate needs --model and --src (to translate), or --hyp (to score)")
    translator = decode = None
    if model:
        translator, decode = _translator(
            model, device, beam, alpha, replace_unk, batch_size, precision
        )
    lines, references = read_parallel(hyp or src, ref)
    if not references:
        raise UserError(f"{ref}: no lines, nothing to score")
    if hyp is not None:
        scores = _score_file(lines, references, translator, lang)
        record, report = {"sentences": len(references), **scores.as_dict()}, scores.report()
    else:
        from seq2seq import textio
        from seq2seq.evaluation import evaluate as run_evaluation

        result = run_evaluation(translator, lines, references, decode)
        beam_alpha = {"beam": decode.beam_size, "alpha": decode.alpha}
        record = {"sentences": len(references), **beam_alpha, **result.as_dict()}
        report = result.report(decode)
        if output:
            with textio.output(output) as sink:
                sink.writelines(t.text + "\n" for t in result.translations)
    typer.echo(json.dumps(record) if as_json else report)


def _score_file(lines: list[str], references: list[str], translator, lang: str):
    """Scores of a file of translations, tokenized BLEU with the model's target words or
    with spaCy's `lang` tokenizer."""
    from seq2seq.metrics import score_corpus
    from seq2seq.tokenizer import Tokenizer

    tokenizer = translator.trg.tokenizer.words if translator else Tokenizer(lang)
    return score_corpus(lines, references, tokenizer)


def main() -> None:
    tune_malloc()  # before torch starts its threads: docs/memory.md
    try:
        app()
    except UserError as error:
        if _debug:
            raise
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as error:  # a bug: short message, traceback with --debug
        if _debug:
            raise
        print(
            f"internal error: {type(error).__name__}: {error} (rerun with --debug)", file=sys.stderr
        )
        sys.exit(1)
