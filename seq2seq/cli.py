"""The command line: parses arguments, loads a config or checkpoint, calls the library.

A user mistake (UserError) prints one line on stderr and exits with status 2; any
other exception is a bug: a short message and exit 1, the traceback only with --debug.
"""

from __future__ import annotations

import itertools
import json
import os
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
    resolved = resolve_run(config, set_ or [], run_dir, resume)
    main_rank = os.environ.get("RANK", "0") == "0"  # under torchrun, rank 0 speaks
    try:
        folder = run_training(resolved, overwrite=overwrite, resume=resume)
    except Interrupted as stop:
        if main_rank:
            print(stop, file=sys.stderr)
        sys.exit(128 + stop.signum)
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
    from seq2seq.corpus import decode_line, iter_lines

    translator, decode = _translator(
        model, device, beam, alpha, replace_unk, batch_size, precision, nbest
    )
    interactive = input is None and sys.stdin.isatty()
    name = str(input) if input is not None else "<stdin>"
    if input is not None:
        lines: Iterator[str] = iter_lines(input)
    else:
        numbered = enumerate(_stdin_lines(interactive), 1)
        lines = (decode_line(raw, f"<stdin>:{n}") for n, raw in numbered)
    if plot_attention:
        try:
            plot_attention.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise UserError(f"{plot_attention}: cannot create: {error.strerror or error}") from None
    sink = _open_output(output) if output else sys.stdout
    index = 0
    try:
        for chunk in _chunks(lines, 1 if interactive else decode.batch_size):
            for candidates in translator.translate_nbest(chunk, decode):
                best = candidates[0]
                if best.truncated:
                    print(
                        f"warning: {name}:{index + 1}: longer than "
                        f"{decode.max_source_length} tokens, truncated",
                        file=sys.stderr,
                    )
                sink.write(_format(index, candidates, nbest, scores, as_json))
                if plot_attention and best.source_tokens:
                    from seq2seq.plots import plot_attention as draw

                    draw(best, plot_attention / f"{index + 1:06d}.png")
                index += 1
            sink.flush()
    except BrokenPipeError:
        # The reader went away (`| head -1`): stop quietly, with stdout pointed at
        # /dev/null so that Python's flush at exit does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except OSError as error:  # e.g. the disk is full
        raise UserError(f"{output or '<stdout>'}: cannot write: {error.strerror}") from None
    finally:
        if output:
            sink.close()


def _format(index: int, candidates, nbest: int, scores: bool, as_json: bool) -> str:
    """The output line(s) of one input line."""
    if as_json:
        record = [
            {
                "translation": c.text,
                "score": c.score,
                "tokens": c.tokens,
                "source_tokens": c.source_tokens,
                "alignment": c.alignment(),
                **({"gates": _gate_record(c.gates)} if c.gates else {}),
            }
            for c in candidates
        ]
        best = record[0] if nbest == 1 else {**record[0], "nbest": record}
        return json.dumps({"index": index, **best}, ensure_ascii=False) + "\n"
    if nbest > 1:
        return "".join(
            f"{index}\t{rank}\t{c.score:.4f}\t{c.text}\n" for rank, c in enumerate(candidates, 1)
        )
    best = candidates[0]
    return f"{best.score:.4f}\t{best.text}\n" if scores else best.text + "\n"


def _gate_record(gates) -> dict[str, list[float]]:
    """Encoder gate values for --json: channel weights, and per source position (<sos>,
    tokens, <eos>) the temporal weights of a CBAM gate."""
    record = {"channel": [round(v, 4) for v in gates.channel.tolist()]}
    if gates.temporal is not None:
        record["temporal"] = [round(v, 4) for v in gates.temporal.tolist()]
    return record


def _open_output(path: Path) -> TextIO:
    try:
        return open(path, "w", encoding="utf-8")  # noqa: SIM115 (the caller closes it)
    except OSError as error:
        raise UserError(f"{path}: cannot write: {error.strerror or error}") from None


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
    record: dict[str, object] = {"sentences": len(references)}
    if hyp is not None:
        from seq2seq.metrics import score_corpus
        from seq2seq.tokenizer import Tokenizer

        tokenizer = translator.trg.tokenizer.words if translator else Tokenizer(lang)
        scores = score_corpus(lines, references, tokenizer)
        record.update(scores.as_dict())
    else:
        from seq2seq.evaluation import evaluate as run_evaluation

        result = run_evaluation(translator, lines, references, decode)
        scores = result.scores
        record.update({"beam": decode.beam_size, "alpha": decode.alpha, **result.as_dict()})
        if output:
            with _open_output(output) as sink:
                sink.writelines(t.text + "\n" for t in result.translations)
    if as_json:
        typer.echo(json.dumps(record))
        return
    if "beam" in record:
        beam_size = record["beam"]
        search = "greedy" if beam_size == 1 else f"beam {beam_size}, alpha {record['alpha']}"
        typer.echo(f"{len(references)} sentences translated, {search}")
    typer.echo(f"BLEU = {scores.bleu:.2f}  ({scores.bleu_signature})")
    typer.echo(f"chrF = {scores.chrf:.2f}  ({scores.chrf_signature})")
    typer.echo(f"tokenized BLEU = {scores.tokenized_bleu:.2f}  (BLEU-4 over spaCy tokens)")
    if "perplexity" in record:
        typer.echo(f"perplexity = {record['perplexity']:.2f}  (loss {record['loss']:.4f})")
        typer.echo(
            f"free-running perplexity = {record['free_running_perplexity']:.2f}  "
            "(own greedy predictions fed back, as the tutorial reports it)"
        )


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
    except Exception as error:  # a bug: short message, traceback with --debug
        if _debug:
            raise
        print(
            f"internal error: {type(error).__name__}: {error} (rerun with --debug)", file=sys.stderr
        )
        sys.exit(1)
