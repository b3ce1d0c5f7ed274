"""The command line: parses arguments, loads a config or checkpoint, calls the library.

A user mistake (UserError) prints one line on stderr and exits with status 2; any
other exception is a bug: a short message and exit 1, the traceback only with --debug.
"""

from __future__ import annotations

import itertools
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, BinaryIO, TextIO

import typer

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
    from seq2seq.training import Interrupted, resolve_run
    from seq2seq.training import train as run_training

    if resume and overwrite:
        raise UserError("--resume and --overwrite contradict each other; pick one")
    resolved, _ = resolve_run(config, set_ or [], run_dir, resume)
    try:
        folder = run_training(resolved, overwrite=overwrite, resume=resume)
    except Interrupted as stop:
        print(stop, file=sys.stderr)
        sys.exit(128 + stop.signum)
    typer.echo(f"done: {folder / 'best.pt'}", err=True)


@app.command()
def plot(run_dir: Annotated[Path, typer.Argument(help="A run folder.")]) -> None:
    """Draw a run's training curves (loss, perplexity, BLEU) into RUN_DIR/curves.png."""
    from seq2seq.plots import plot_run

    typer.echo(str(plot_run(run_dir)))


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

    paths: list[Path] = []
    for source in sources:
        if source.is_dir():
            found = sorted(source.glob("ckpt-step*.pt"))
            if not found:
                raise UserError(
                    f"{source}: no ckpt-step*.pt files (train with train.keep_checkpoints=k)"
                )
            paths.extend(found)
        else:
            paths.append(source)
    save_checkpoint(average_checkpoints(paths), output)
    typer.echo(f"averaged {len(paths)} checkpoints into {output}", err=True)


@app.command()
def translate(
    model: Annotated[
        Path, typer.Option("--model", "-m", help="Checkpoint (.pt) to translate with.")
    ],
    input: Annotated[
        Path | None, typer.Option("--input", "-i", help="Text file to translate (default: stdin).")
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Where to write (default: stdout).")
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option(min=1, help="Sentences per batch (default: decode.batch_size).")
    ] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or mps.")] = "auto",
) -> None:
    """Translate one sentence per line: exactly one output line per input line, in order."""
    from seq2seq.corpus import decode_line, iter_lines
    from seq2seq.translator import Translator

    translator = Translator.from_checkpoint(model, device)
    size = batch_size or translator.decode.batch_size
    interactive = input is None and sys.stdin.isatty()
    if input is not None:
        lines: Iterator[str] = iter_lines(input)
    else:
        lines = (
            decode_line(raw, f"<stdin>:{n}") for n, raw in enumerate(_stdin_lines(interactive), 1)
        )
    sink: TextIO = open(output, "w", encoding="utf-8") if output else sys.stdout
    try:
        for chunk in _chunks(lines, 1 if interactive else size):
            for result in translator.translate(chunk, size):
                sink.write(result.text + "\n")
            sink.flush()
    finally:
        if output:
            sink.close()


def _stdin_lines(interactive: bool) -> Iterator[bytes]:
    stream: BinaryIO = sys.stdin.buffer
    while True:
        if interactive:
            sys.stderr.write("> ")
            sys.stderr.flush()
        raw = stream.readline()
        if not raw:
            return
        yield raw


def _chunks(lines: Iterator[str], size: int) -> Iterator[list[str]]:
    """Translate as lines arrive, at most `size` at a time, never the whole input at once."""
    while chunk := list(itertools.islice(lines, size)):
        yield chunk


@app.command()
def evaluate(
    model: Annotated[Path, typer.Option("--model", "-m", help="Checkpoint (.pt) to evaluate.")],
    src: Annotated[Path, typer.Option("--src", help="Source sentences, one per line.")],
    ref: Annotated[Path, typer.Option("--ref", help="Reference translations, line-aligned.")],
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Also write the translations here.")
    ] = None,
    batch_size: Annotated[int | None, typer.Option(min=1, help="Sentences per batch.")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or mps.")] = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Translate --src and score it against --ref: sacreBLEU, chrF, tokenized BLEU, perplexity."""
    from seq2seq.corpus import read_parallel
    from seq2seq.evaluation import evaluate as run_evaluation
    from seq2seq.translator import Translator

    sources, references = read_parallel(src, ref)
    translator = Translator.from_checkpoint(model, device)
    result = run_evaluation(translator, sources, references, batch_size)
    if output:
        output.write_text("".join(t.text + "\n" for t in result.translations), encoding="utf-8")
    if as_json:
        typer.echo(json.dumps({"sentences": len(sources), **result.as_dict()}))
        return
    scores = result.scores
    typer.echo(f"BLEU = {scores.bleu:.2f}  ({scores.bleu_signature})")
    typer.echo(f"chrF = {scores.chrf:.2f}  ({scores.chrf_signature})")
    typer.echo(f"tokenized BLEU = {scores.tokenized_bleu:.2f}  (BLEU-4 over the model's tokens)")
    typer.echo(f"perplexity = {result.perplexity:.2f}  (loss {result.loss:.4f})")


def main() -> None:
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
    except BrokenPipeError:
        # The reader went away (`| head -1`): stop quietly, and keep Python's exit-time
        # flush of stdout from raising again.
        sys.stdout = open("/dev/null", "w")  # noqa: SIM115
        sys.exit(0)
    except Exception as error:  # a bug: short message, traceback with --debug
        if _debug:
            raise
        print(
            f"internal error: {type(error).__name__}: {error} (rerun with --debug)", file=sys.stderr
        )
        sys.exit(1)
