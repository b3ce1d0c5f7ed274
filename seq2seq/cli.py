"""The command line: parses arguments, loads a config or checkpoint, calls the library.

A user mistake (UserError, or a usage error that Click finds: an unknown option, a value
outside its choices) prints one line on stderr and exits with status 2; any other
exception is a bug: a short message and exit 1, the traceback only with --debug.
Messages go through `console` (--quiet, --verbose); results go to stdout or a file.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Annotated, Literal, NoReturn

import typer

from seq2seq import console
from seq2seq.allocator import tune_malloc
from seq2seq.config import DecodePrecision, Device, SettingError
from seq2seq.errors import Terminated, UserError, raise_terminated, to_stderr

app = typer.Typer(
    help="Train, run and score attention-based GRU neural machine translation models.",
    # Plain Click help, wrapped between words, and no boxed error panels: main() prints
    # every error as one line.
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
)
_debug = False


def _print_versions(asked: bool) -> None:
    if asked:
        typer.echo(versions())
        raise typer.Exit()


def versions() -> str:
    """`seq2seq 0.1.0 (torch 2.13.0, spaCy 3.8.18, sacreBLEU 2.6.0, Python 3.11.2)`,
    read from the installed packages' metadata (no slow imports)."""
    import platform
    from importlib.metadata import version

    import seq2seq

    names = {"torch": "torch", "spaCy": "spacy", "sacreBLEU": "sacrebleu"}
    found = ", ".join(f"{name} {version(package)}" for name, package in names.items())
    return f"seq2seq {seq2seq.__version__} ({found}, Python {platform.python_version()})"


@app.callback(invoke_without_command=True)
def _options(
    context: typer.Context,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.")] = False,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="Only warnings and errors on stderr.")
    ] = False,
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose",
            "-v",
            help="Also details on stderr: the models and decoding settings used, every "
            "metrics record while training.",
        ),
    ] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_print_versions,
            is_eager=True,
            help="Print the versions of seq2seq, torch, spaCy, sacreBLEU and Python.",
        ),
    ] = False,
) -> None:
    global _debug
    _debug = debug
    if quiet and verbose:
        raise UserError("--quiet and --verbose contradict each other; pick one")
    console.set_verbosity(
        console.QUIET if quiet else console.VERBOSE if verbose else console.NORMAL
    )
    if context.invoked_subcommand is None:
        raise UserError("no command given; seq2seq --help lists them")


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
    init_from: Annotated[
        str | None,
        typer.Option(
            "--init-from",
            metavar="MODEL",
            help="Fine-tune: start from this model's weights, tokenizers and vocabularies "
            "(a .pt, a model folder or hf:ORG/NAME; overrides train.init_from).",
        ),
    ] = None,
) -> None:
    """Train a model: best.pt, last.pt, config.yaml, metrics.jsonl, curves.png in the run folder."""
    tune_malloc()  # before torch starts its threads; training only: docs/memory.md
    from seq2seq.training import Diverged, Interrupted, resolve_run
    from seq2seq.training import train as run_training

    if resume and overwrite:
        raise UserError("--resume and --overwrite contradict each other; pick one")
    resolved = resolve_run(config, set_ or [], run_dir, resume, init_from)
    main_rank = os.environ.get("RANK", "0") == "0"  # under torchrun, rank 0 speaks
    try:
        folder = run_training(resolved, overwrite=overwrite, resume=resume)
    except Interrupted as stop:
        if main_rank:
            to_stderr(f"{stop}\n")
        sys.exit(128 + stop.signum)
    except Diverged as stop:
        if main_rank:
            to_stderr(f"error: {stop}\n")
        sys.exit(3)
    if main_rank:
        console.info(f"done: {folder / 'best.pt'}")


@app.command()
def download(
    dataset: Annotated[Literal["multi30k"], typer.Argument(help="The dataset.")],
    dest: Annotated[Path, typer.Option("--dest", help="Folder to put the files in.")],
    lang: Annotated[
        list[str] | None, typer.Option("--lang", help="Languages to fetch (default: all four).")
    ] = None,
    url: Annotated[str | None, typer.Option(help="Base URL of a mirror of data/task1/raw.")] = None,
) -> None:
    """Fetch Multi30k task 1 (train, val, test_2016_flickr; de, en, fr, cs), SHA-256 checked."""
    from seq2seq.download import MULTI30K_LANGUAGES, download_multi30k

    paths = download_multi30k(dest, tuple(lang or MULTI30K_LANGUAGES), url)
    console.info(f"{len(paths)} verified files in {dest}")


@app.command()
def plot(
    run_dir: Annotated[Path, typer.Argument(help="A run folder.")],
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="The PNG (default: RUN_DIR/curves.png).")
    ] = None,
) -> None:
    """Draw a run's training curves (loss, perplexity, BLEU) into RUN_DIR/curves.png; while
    the run trains (and redraws that file itself), into RUN_NAME-curves.png here."""
    from seq2seq import textio
    from seq2seq.plots import plot_run
    from seq2seq.run_folder import RunFolder

    folder = RunFolder(run_dir)
    textio.check_output(output, [folder.metrics])
    if output is None and folder.training():
        output = Path(f"{run_dir.resolve().name}-curves.png")
    textio.print_result(str(plot_run(run_dir, output)))


@app.command()
def average(
    sources: Annotated[
        list[Path],
        typer.Argument(
            help="A run folder (its kept ckpt-step*.pt files), checkpoint files, model "
            "folders or Hub ids (hf:ORG/NAME[@REVISION])."
        ),
    ],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Averaged checkpoint to write (a file).")
    ],
) -> None:
    """Average the weights of several checkpoints into one self-contained checkpoint."""
    from seq2seq import textio
    from seq2seq.checkpoint import average_checkpoints, save_checkpoint
    from seq2seq.hub import is_hub_id, local_folder
    from seq2seq.model_folder import CONFIG
    from seq2seq.run_folder import RunFolder
    from seq2seq.textio import is_standard

    if is_standard(output):
        raise UserError("--output -: a checkpoint is binary and goes to a file, not stdout")
    paths: list[Path] = []
    for source in sources:
        if is_hub_id(source):  # its folder in the cache: the same-file check compares paths
            paths.append(local_folder(source))
        elif source.is_dir() and not (source / CONFIG).is_file():
            found = RunFolder(source).all_kept()
            if not found:
                raise UserError(
                    f"{source}: no ckpt-step*.pt files (train with train.keep_checkpoints=k)"
                )
            paths.extend(found)
        else:
            paths.append(source)
    textio.check_output(output, paths)
    RunFolder(Path(os.path.realpath(output)).parent).refuse_while_training(
        "write the average elsewhere"
    )
    if len(paths) == 1:
        console.warn(f"{paths[0]} is the only checkpoint: the average is a copy of its weights")
    console.detail(f"averaging {len(paths)} checkpoints")  # with --verbose: scripts/memory.py
    save_checkpoint(average_checkpoints(paths), output)
    console.info(f"averaged {len(paths)} checkpoints into {output}")


@app.command()
def export(
    model: Annotated[
        Path, typer.Argument(help="Checkpoint (.pt), model folder or Hub id hf:ORG/NAME.")
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="The model folder to write.")],
    dtype: Annotated[
        Literal["float32", "float16", "bfloat16"],
        typer.Option(help="How the weights are stored (they are read back as float32)."),
    ] = "float32",
    evaluate: Annotated[
        bool,
        typer.Option(
            "--evaluate",
            help="Score the written folder on the model's test split (data.test), greedy "
            "and with its beam, and put the scores in the model card.",
        ),
    ] = False,
    data_dir: Annotated[
        Path | None,
        typer.Option(help="Where the test split is (default: the model's data.dir)."),
    ] = None,
    license: Annotated[
        str | None,
        typer.Option(help="The model card's license id (default: other; see the card)."),
    ] = None,
    overwrite: Annotated[
        bool, typer.Option(help="Replace a model folder already at --output.")
    ] = False,
) -> None:
    """Write a model as a folder: config.json, model.safetensors, tokenizer files and a
    Hugging Face model card (README.md); --model takes the folder wherever it takes a .pt."""
    from seq2seq.export import export as run_export
    from seq2seq.textio import is_standard

    if is_standard(output):
        raise UserError("--output -: a model folder is a folder, not stdout")
    run_export(model, output, dtype, evaluate, data_dir, license, overwrite)


ModelOption = Annotated[
    list[Path],
    typer.Option(
        "--model",
        "-m",
        metavar="MODEL",
        help="Checkpoint (.pt), model folder or Hub id (hf:ORG/NAME[@REVISION]) to use; "
        "repeat it to decode with an ensemble.",
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
DeviceOption = Annotated[Device, typer.Option("--device", help="Where to run the model.")]
PrecisionOption = Annotated[
    DecodePrecision | None,
    typer.Option(
        "--precision",
        help="bf16: faster on AMX CPUs and GPUs; int8: faster on any x86 CPU, output can "
        "differ (default: decode.precision).",
    ),
]


JsonLinesOption = Annotated[
    bool,
    typer.Option(
        "--json",
        help="One JSON object per input line: line number, translation, score, tokens, "
        "source tokens, alignment (per output token, the index from 0 of the source token "
        "it attends to most).",
    ),
]
PlotOption = Annotated[
    Path | None,
    typer.Option(
        "--plot-attention",
        help="Write an attention heatmap per sentence into this folder (000001.png...).",
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

    translator = Translator.from_checkpoint(models, device)
    options = {"beam_size": beam, "alpha": alpha, "replace_unk": replace_unk,
               "batch_size": batch_size, "precision": precision, "nbest": nbest}
    try:
        decode = translator.decode.updated(**options)
    except SettingError as error:  # name the option typed, not the config key
        if options.get(error.key) is None:
            raise
        flag = "--beam" if error.key == "beam_size" else f"--{error.key.replace('_', '-')}"
        raise UserError(f"{flag}: {error.reason}") from None
    sizes = f"vocabularies {len(translator.src.vocab)} / {len(translator.trg.vocab)}"
    console.detail(f"models: {', '.join(map(str, models))}; {sizes}; {translator.device}")
    console.detail(f"decoding: {decode.model_dump()}")
    return translator, decode


@app.command()
def translate(
    model: ModelOption,
    input: Annotated[
        Path | None, typer.Option("-i", "--input", help="Text to translate (default, -: stdin).")
    ] = None,
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="Where to write (default, -: stdout).")
    ] = None,
    beam: BeamOption = None,
    alpha: AlphaOption = None,
    nbest: Annotated[
        int, typer.Option(min=1, help="Write the N best: line<TAB>rank<TAB>score<TAB>text.")
    ] = 1,
    scores: Annotated[bool, typer.Option("--scores", help="Write score<TAB>text.")] = False,
    as_json: JsonLinesOption = False,
    replace_unk: ReplaceUnkOption = None,
    plot_attention: PlotOption = None,
    batch_size: BatchOption = None,
    device: DeviceOption = "auto",
    precision: PrecisionOption = None,
) -> None:
    """Translate one sentence per line: exactly one output line per input line, in order
    (N lines with --nbest N). Reads and writes in batches as lines arrive."""
    from seq2seq import textio
    from seq2seq.corpus import STDIN
    from seq2seq.files import make_folder

    textio.check_output(output, [input or Path(STDIN), *model])
    translator, decode = _translator(
        model, device, beam, alpha, replace_unk, batch_size, precision, nbest
    )
    lines, name, interactive = textio.input_lines(input)
    if plot_attention:
        make_folder(plot_attention)
    number = 0  # of the input line, from 1 as editors and messages count
    with textio.output(output) as sink:
        for chunk in textio.chunks(lines, 1 if interactive else decode.batch_size):
            for candidates in translator.translate_nbest(chunk, decode):
                number += 1
                if candidates[0].truncated:
                    limit = decode.max_source_length
                    console.warn(f"{name}:{number}: longer than {limit} tokens, truncated")
                sink.write(textio.format_candidates(number, candidates, nbest, scores, as_json))
                if plot_attention and candidates[0].source_tokens:
                    from seq2seq.plots import plot_attention as draw

                    draw(candidates[0], plot_attention / f"{number:06d}.png")
            sink.flush()


@app.command()
def evaluate(
    ref: Annotated[Path | None, typer.Option(help="Reference translations, one per line.")] = None,
    tsv: Annotated[Path | None, typer.Option(help="Source<TAB>reference lines.")] = None,
    model: Annotated[
        list[Path] | None,
        typer.Option(
            "--model",
            "-m",
            metavar="MODEL",
            help="Checkpoint (.pt), model folder or Hub id to translate the sources with; "
            "repeat it for an ensemble.",
        ),
    ] = None,
    src: Annotated[Path | None, typer.Option(help="Source sentences, aligned with --ref.")] = None,
    hyp: Annotated[Path | None, typer.Option(help="Translations to score, not to make.")] = None,
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
    """Score translations against references (--ref, or --tsv): sacreBLEU BLEU and chrF
    (with signatures), tokenized BLEU, perplexity. Translates the sources (--src, or
    --tsv) with --model, or scores the lines of --hyp. Any one file may be - (stdin)."""
    from seq2seq import textio

    if output is not None and textio.is_standard(output):
        raise UserError("--output -: stdout holds the scores; write the translations to a file")
    textio.check_output(output, [ref, src, hyp, tsv, *(model or [])])
    lines, references = _evaluation_text(src, ref, tsv, hyp, translating=hyp is None)
    if hyp is None and not model:
        raise UserError("evaluate needs --model to translate the sources, or --hyp to score")
    translator = decode = None
    if model:
        translator, decode = _translator(
            model, device, beam, alpha, replace_unk, batch_size, precision
        )
    if hyp is not None:
        scores = _score_file(lines, references, translator, lang)
        record, report = {"sentences": len(references), **scores.as_dict()}, scores.report()
    else:
        from seq2seq.evaluation import evaluate as run_evaluation

        result = run_evaluation(translator, lines, references, decode)
        beam_alpha = {"beam": decode.beam_size, "alpha": decode.alpha}
        record = {"sentences": len(references), **beam_alpha, **result.as_dict()}
        report = result.report(decode)
        if output:
            with textio.output(output) as sink:
                sink.writelines(t.text + "\n" for t in result.translations)
    textio.print_result(textio.strict_json(textio.rounded(record)) if as_json else report)


def _evaluation_text(
    src: Path | None, ref: Path | None, tsv: Path | None, hyp: Path | None, translating: bool
) -> tuple[list[str], list[str]]:
    """(the sources to translate or the translations to score, the references)."""
    from seq2seq.corpus import check_aligned, read_lines, read_parallel, read_tsv
    from seq2seq.textio import is_standard

    given = {"--src": src, "--ref": ref, "--tsv": tsv, "--hyp": hyp}
    from_stdin = [option for option, path in given.items() if path and is_standard(path)]
    if len(from_stdin) > 1:
        raise UserError(f"{' and '.join(from_stdin)} cannot both read stdin (-)")
    if (ref is None) == (tsv is None):
        raise UserError("evaluate needs the references: --ref FILE, or --tsv FILE")
    if translating and (src is None) != (ref is None):
        raise UserError("evaluate translates --src (with --ref) or the sources of --tsv, or --hyp")
    if tsv is None:
        lines, references = read_parallel(hyp or src, ref)
    else:
        lines, references = read_tsv(tsv)
        if hyp is not None:
            lines = read_lines(hyp)
            check_aligned(hyp, lines, tsv, references)
    if not references:
        raise UserError(f"{ref or tsv}: no lines, nothing to score")
    empty = [number for number, line in enumerate(references, 1) if not line.strip()]
    if empty:  # scores any translation of its line as wrong
        first = f"the first: line {empty[0]}"
        console.warn(f"{ref or tsv}: {len(empty)} empty reference lines ({first})")
    return lines, references


@app.command()
def serve(
    model: ModelOption,
    host: Annotated[
        str, typer.Option(help="Address to listen on; the default answers this machine only.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port; 0 picks a free one (printed).")] = 8000,
    device: DeviceOption = "auto",
    max_batch: Annotated[
        int, typer.Option(min=1, help="Most sentences in one decoder batch.")
    ] = 64,
    max_wait_ms: Annotated[
        float, typer.Option(min=0.0, help="How long a request waits for others to batch with.")
    ] = 5.0,
    max_chars: Annotated[int, typer.Option(min=1, help="Most characters in one text.")] = 2000,
    max_texts: Annotated[int, typer.Option(min=1, help="Most texts in one request.")] = 64,
    max_beam: Annotated[int, typer.Option(min=1, help="Largest beam a request may ask for.")] = 10,
    max_nbest: Annotated[
        int, typer.Option(min=1, help="Largest nbest a request may ask for.")
    ] = 10,
    max_translations: Annotated[
        int, typer.Option(min=1, help="Most translations (texts x nbest) in one answer.")
    ] = 256,
    max_attention: Annotated[
        int, typer.Option(min=1, help="Most translations in one answer with attention.")
    ] = 10,
    request_timeout: Annotated[
        float,
        typer.Option(
            min=0.1, help="Seconds a client has to send a request's headers, then its body."
        ),
    ] = 10.0,
    grace: Annotated[
        float,
        typer.Option(min=0.0, help="Seconds the requests in flight have to finish after SIGTERM."),
    ] = 10.0,
    precision: PrecisionOption = None,
) -> None:
    """Serve translations over HTTP: POST /translate, GET /health, GET /info, a page at /.
    Concurrent requests are decoded together in batches; SIGTERM or Ctrl-C stops the server
    once the requests in flight are answered, or --grace seconds have passed."""
    from seq2seq.serve import Limits, run

    limits = Limits(
        max_chars=max_chars,
        max_texts=max_texts,
        max_beam=max_beam,
        max_nbest=max_nbest,
        max_translations=max_translations,
        max_attention=max_attention,
        max_batch=max_batch,
        max_wait_ms=max_wait_ms,
        request_timeout=request_timeout,
        grace=grace,
    )
    run(model, host, port, device, limits, precision)


def _score_file(lines: list[str], references: list[str], translator, lang: str):
    """Scores of a file of translations, tokenized BLEU with the model's target words or
    with spaCy's `lang` tokenizer."""
    from seq2seq.metrics import score_corpus
    from seq2seq.tokenizer import Tokenizer

    tokenizer = translator.trg.tokenizer.words if translator else Tokenizer(lang)
    return score_corpus(lines, references, tokenizer)


def main() -> None:
    previous = signal.signal(signal.SIGTERM, raise_terminated)
    try:
        _run()
    finally:  # main() called in a process that goes on (tests) leaves it as it was
        signal.signal(signal.SIGTERM, previous)


def _run() -> NoReturn:
    """The command, and its exit status: 2 for a user error, 1 for a bug, 128 + signal."""
    try:
        code = app(standalone_mode=False)
    except UserError as error:
        if _debug:
            raise
        _fail(str(error))
    except typer.TyperException as error:  # Click's usage errors: unknown option, bad value
        context = getattr(error, "ctx", None)
        hint = f" (see {context.command_path} --help)" if context else ""
        # Typer checks values with pydantic, whose messages start with "Value error, ".
        _fail(error.format_message().replace("Value error, ", "") + hint)
    except (KeyboardInterrupt, typer.Abort):
        to_stderr("interrupted\n")
        sys.exit(130)
    except Terminated:
        to_stderr("stopped by SIGTERM\n")
        sys.exit(128 + signal.SIGTERM)
    except Exception as error:  # a bug: short message, traceback with --debug
        if _debug:
            raise
        if isinstance(error, OSError) and error.filename is not None:
            # the system refused a file: no permission, a read-only disk: not a bug
            _fail(f"{error.filename}: {error.strerror or error}")
        to_stderr(f"internal error: {type(error).__name__}: {error} (rerun with --debug)\n")
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)


def _fail(message: str) -> NoReturn:
    """Every user error: one line on stderr, status 2."""
    to_stderr(f"error: {message}\n")
    sys.exit(2)
