"""The command line: parses arguments, loads a config or checkpoint, calls the library.

A user mistake (UserError, or a usage error that Click finds: an unknown option, a value
outside its choices) prints one line on stderr and exits with status 2; any other
exception is a bug: a short message and exit 1, the traceback only with --debug.
Messages go through `console` (--quiet, --verbose); results go to stdout or a file.
"""

from __future__ import annotations

import inspect
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, NoReturn

import typer
from typer.core import TyperArgument, TyperCommand

from seq2seq import console, versions
from seq2seq.allocator import tune_malloc
from seq2seq.config import CALL_NAMES, DecodePrecision, Device, Runtime, ServeLimits, SettingError
from seq2seq.errors import Terminated, UserError, raise_terminated, to_stderr

if TYPE_CHECKING:
    from typer._click import HelpFormatter

    from seq2seq.config import DecodeConfig
    from seq2seq.translation import TextTranslator

app = typer.Typer(
    help="Train, run and score attention-based GRU neural machine translation models.\n\n"
    "--debug, --quiet and --verbose go before or after the command's name.",
    # Plain Click help, wrapped between words, and no boxed error panels: main() prints
    # every error as one line.
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
)
_debug = False
# The options of `seq2seq` itself (`_options`) that every command takes too, after its name.
GLOBAL_OPTIONS = ("debug", "quiet", "verbose")


class Command(TyperCommand):
    """Every command: Click's names for its arguments in its help (`RUN_DIR`, `SOURCE...`,
    where Typer writes `{run_dir}` and `<list[Path]>`), and the global options after its
    name as well as before it."""

    def get_params(self, ctx: typer.Context) -> list[Any]:
        # The root's own --debug, --quiet and --verbose: declared once, shown in every
        # command's help, and parsed by Click wherever they stand, so `--input -q` still
        # names a file. Moving them in argv before Click parses it would take a second
        # parser that knows which options take a value.
        shared = [p for p in ctx.find_root().command.params if p.name in GLOBAL_OPTIONS]
        help_option = self.get_help_option(ctx)
        return [*self.params, *shared, *([help_option] if help_option else [])]

    def invoke(self, ctx: typer.Context) -> Any:
        before = ctx.find_root().params  # those given before the command's name
        after = {name: ctx.params.pop(name) for name in GLOBAL_OPTIONS}
        _apply_options(**{name: before[name] or after[name] for name in GLOBAL_OPTIONS})
        return super().invoke(ctx)

    def collect_usage_pieces(self, ctx: typer.Context) -> list[str]:
        arguments = [p for p in self.get_params(ctx) if isinstance(p, TyperArgument)]
        options = [self.options_metavar] if self.options_metavar else []
        return [*options, *map(_argument_name, arguments)]

    def format_options(self, ctx: typer.Context, formatter: HelpFormatter) -> None:
        titles = ("Arguments", "Options", "Global options")
        sections: dict[str, list[tuple[str, str]]] = {title: [] for title in titles}
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is None:
                continue
            if isinstance(param, TyperArgument):
                sections["Arguments"].append((_argument_name(param), record[1]))
            else:
                global_option = param.name in GLOBAL_OPTIONS
                sections["Global options" if global_option else "Options"].append(record)
        for title, records in sections.items():
            if records:
                with formatter.section(title):
                    formatter.write_dl(records)


def _argument_name(argument: TyperArgument) -> str:
    """`RUN_DIR`, `SOURCE...` (repeatable), `[FILE]` (optional)."""
    name = (argument.metavar or argument.name or "").upper()
    name += "..." if argument.nargs != 1 else ""
    return name if argument.required else f"[{name}]"


def command(*examples: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Register a command. The first paragraph of its docstring is its summary in
    `seq2seq --help`, given whole (Click would cut it to fit the terminal, with "...");
    the examples end its --help, one per line as typed."""

    def register(function: Callable[..., None]) -> Callable[..., None]:
        summary = " ".join((inspect.getdoc(function) or "").split("\n\n")[0].split())
        title = "Examples:" if len(examples) > 1 else "Example:"
        lines = "\n".join(f"  {example}" for example in examples)
        epilog = f"{title}\n\n\b\n{lines}"  # \b: Click keeps the paragraph's lines as they are
        return app.command(cls=Command, short_help=summary, epilog=epilog)(function)

    return register


def _option(metavar: str, help: str, *names: str, **checks: Any) -> Any:
    """An option that takes a value, shown as `--name METAVAR` in --help (FILE, N, ...)."""
    return typer.Option(*names, metavar=metavar, help=help, **checks)


def _print_versions(asked: bool) -> None:
    if asked:
        typer.echo(version_line())
        raise typer.Exit()


def version_line() -> str:
    """`seq2seq 0.1.0 (torch 2.13.0, spaCy 3.8.18, sacreBLEU 2.6.0, Python 3.11.2)`."""
    names = {"torch": "torch", "spacy": "spaCy", "sacrebleu": "sacreBLEU"}
    found = versions(*names)
    packages = ", ".join(f"{name} {found[package]}" for package, name in names.items())
    return f"seq2seq {found['seq2seq']} ({packages}, Python {found['python']})"


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
    _apply_options(debug, quiet, verbose)
    if context.invoked_subcommand is None:  # `seq2seq` alone: what it can do
        typer.echo(context.get_help())
        raise typer.Exit()


def _apply_options(debug: bool, quiet: bool, verbose: bool) -> None:
    global _debug
    _debug = debug
    if quiet and verbose:
        raise UserError("--quiet and --verbose contradict each other; pick one")
    console.set_verbosity(
        console.QUIET if quiet else console.VERBOSE if verbose else console.NORMAL
    )


@command(
    "seq2seq train --config configs/toy.yaml",
    "seq2seq train --run-dir runs/toy --resume --set train.epochs=20",
)
def train(
    config: Annotated[Path | None, _option("FILE", "YAML config file.", "--config", "-c")] = None,
    set_: Annotated[
        list[str] | None,
        _option("KEY=VALUE", "Override a config key, as in train.epochs=20 (repeatable).", "--set"),
    ] = None,
    run_dir: Annotated[
        Path | None, _option("RUN_DIR", "Run folder (overrides train.run_dir).", "--run-dir")
    ] = None,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="Continue the run in the run folder from its last.pt, exactly where it stopped; "
            "without --config, the folder's own config.yaml is used.",
        ),
    ] = False,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace a run already in the run folder.")
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
    """Train a model from a YAML config into a run folder.

    The run folder gets best.pt, last.pt, config.yaml, metrics.jsonl, train.log and
    curves.png; --resume continues a run where it stopped."""
    tune_malloc()  # before torch starts its threads; training only: docs/performance.md#memory
    from seq2seq.distributed import launched
    from seq2seq.training import Diverged, Interrupted, resolve_run
    from seq2seq.training import train as run_training

    if resume and overwrite:
        raise UserError("--resume and --overwrite contradict each other; pick one")
    resolved = resolve_run(config, set_ or [], run_dir, resume, init_from)
    main_rank = launched().is_main  # under torchrun, rank 0 speaks
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


@command("seq2seq download multi30k --dest data/multi30k")
def download(
    dataset: Annotated[
        Literal["multi30k"], typer.Argument(metavar="DATASET", help="The dataset: multi30k.")
    ],
    dest: Annotated[Path, _option("DIR", "Folder to put the files in.", "--dest")],
    lang: Annotated[
        list[str] | None,
        _option("LANG", "A language to fetch, repeatable (default: all four).", "--lang"),
    ] = None,
    url: Annotated[str | None, _option("URL", "Base URL of a mirror of data/task1/raw.")] = None,
) -> None:
    """Fetch Multi30k task 1, each file SHA-256 checked.

    Its train, val and test_2016_flickr splits, in German, English, French and Czech
    (de, en, fr, cs)."""
    from seq2seq.download import MULTI30K_LANGUAGES, download_multi30k

    paths = download_multi30k(dest, tuple(lang or MULTI30K_LANGUAGES), url)
    console.info(f"{len(paths)} verified files in {dest}")


@command("seq2seq plot runs/toy")
def plot(
    run_dir: Annotated[Path, typer.Argument(metavar="RUN_DIR", help="A run folder.")],
    output: Annotated[
        Path | None, _option("FILE", "The PNG (default: RUN_DIR/curves.png).", "--output", "-o")
    ] = None,
) -> None:
    """Draw a run's training curves: loss, perplexity, BLEU.

    Into RUN_DIR/curves.png; while the run trains (and redraws that file itself), into
    RUN_NAME-curves.png in the current folder."""
    from seq2seq import corpus
    from seq2seq.plots import plot_run
    from seq2seq.run import RunFolder

    folder = RunFolder(run_dir)
    corpus.check_output(output, [folder.metrics])
    if output is None and folder.training():
        output = Path(f"{run_dir.resolve().name}-curves.png")
    corpus.print_result(str(plot_run(run_dir, output)))


@command("seq2seq average runs/toy --output runs/toy/averaged.pt")
def average(
    sources: Annotated[
        list[Path],
        typer.Argument(
            metavar="RUN_DIR|MODEL",
            help="A run folder (the checkpoints it kept: train.keep_checkpoints), checkpoint "
            "files, model folders or Hub ids (hf:ORG/NAME[@REVISION]).",
        ),
    ],
    output: Annotated[
        Path, _option("CKPT", "Averaged checkpoint to write (a file).", "--output", "-o")
    ],
) -> None:
    """Average the weights of checkpoints into one checkpoint.

    The average is self-contained: translate, evaluate, serve and export take it like any
    other checkpoint."""
    from seq2seq import corpus
    from seq2seq.checkpoint import average_checkpoints, save_checkpoint
    from seq2seq.run import RunFolder

    if corpus.is_standard(output):
        raise UserError("--output -: a checkpoint is binary and goes to a file, not stdout")
    paths = [path for source in sources for path in _checkpoints_of(source)]
    corpus.check_output(output, paths)
    RunFolder(Path(os.path.realpath(output)).parent).refuse_while_training(
        "write the average elsewhere"
    )
    if len(paths) == 1:
        console.warn(f"{paths[0]} is the only checkpoint: the average is a copy of its weights")
    checkpoints = _count(len(paths), "checkpoint")
    console.detail(f"averaging {checkpoints}")  # with --verbose: scripts/memory.py
    save_checkpoint(average_checkpoints(paths), output)
    console.info(f"averaged {checkpoints} into {output}")


def _checkpoints_of(source: Path) -> list[Path]:
    """What `average` reads for one source: a run folder's kept checkpoints, a Hub id's
    folder in the cache (the same-file check compares paths), or the path itself."""
    from seq2seq.hub import is_hub_id, local_folder
    from seq2seq.model_folder import CONFIG
    from seq2seq.run import RunFolder

    if is_hub_id(source):
        return [local_folder(source)]
    if not source.is_dir() or (source / CONFIG).is_file():
        return [source]
    kept = RunFolder(source).all_kept()
    if not kept:
        raise UserError(
            f"{source}: no ckpt-step*.pt files to average; train with --set "
            "train.keep_checkpoints=5 to keep the 5 best validated checkpoints (a resumed "
            "run keeps them from then on), or average checkpoint files: seq2seq average "
            "A.pt B.pt --output avg.pt"
        )
    return kept


def _count(number: int, noun: str) -> str:
    """`1 checkpoint`, `3 checkpoints`."""
    return f"{number} {noun}{'' if number == 1 else 's'}"


@command("seq2seq export runs/toy/averaged.pt --output models/toy --evaluate")
def export(
    model: Annotated[
        Path,
        typer.Argument(
            metavar="MODEL", help="Checkpoint (.pt), model folder or Hub id hf:ORG/NAME."
        ),
    ],
    output: Annotated[Path, _option("DIR", "The model folder to write.", "--output", "-o")],
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
        Path | None, _option("DIR", "Where the test split is (default: the model's data.dir).")
    ] = None,
    license: Annotated[
        str | None, _option("ID", "The model card's license id (default: other; see the card).")
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace a model folder already at --output.")
    ] = False,
    onnx: Annotated[
        bool,
        typer.Option(
            "--onnx",
            help="Also write the model as ONNX graphs (fp32 and int8), which translate, "
            "evaluate and serve run on onnxruntime, without torch.",
        ),
    ] = False,
) -> None:
    """Write a model as a folder, with a model card, to share it.

    The folder holds config.json, model.safetensors, the tokenizer files and a Hugging Face
    model card (README.md); --model takes it wherever it takes a .pt."""
    from seq2seq.corpus import is_standard
    from seq2seq.export import export as run_export

    if is_standard(output):
        raise UserError("--output -: a model folder is a folder, not stdout")
    run_export(model, output, dtype, evaluate, data_dir, license, overwrite, onnx)


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
    _option("N", "Beam size; 1 is greedy (default: decode.beam_size).", "--beam", min=1),
]
AlphaOption = Annotated[
    float | None,
    _option("ALPHA", "Length penalty alpha (default: decode.alpha).", "--alpha", min=0.0),
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
    _option("N", "Sentences per batch (default: decode.batch_size).", "--batch-size", min=1),
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
RuntimeOption = Annotated[
    Runtime,
    typer.Option(
        "--runtime",
        help="What runs the model: onnxruntime (no torch; a model folder exported with "
        "--onnx, CPU, fp32 or int8) or torch; auto takes onnxruntime where it can.",
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
        metavar="DIR",
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
    runtime: Runtime = "auto",
):
    """Load the checkpoint(s) -> (translator, its decode settings with the command line's
    options applied and validated)."""
    from seq2seq.translation import open_translator

    translator = open_translator(models, device, runtime, precision)
    options = {
        "beam_size": beam,
        "alpha": alpha,
        "replace_unk": replace_unk,
        "batch_size": batch_size,
        "precision": precision,
        "nbest": nbest,
    }
    try:
        decode = translator.decode.updated(**options)
    except SettingError as error:  # name the option typed, not the config key
        if options.get(error.key) is None:
            raise
        raise UserError(f"{CALL_NAMES[error.key].option}: {error.reason}") from None
    sizes = f"vocabularies {len(translator.src.vocab)} / {len(translator.trg.vocab)}"
    where = f"{translator.runtime} on {translator.device}"
    console.detail(f"models: {', '.join(map(str, models))}; {sizes}; {where}")
    console.detail(f"decoding: {decode.model_dump()}")
    return translator, decode


@command(
    "seq2seq translate --model models/multi30k-de-en-small < in.de > out.en",
    "echo 'Zwei Hunde spielen.' | seq2seq translate -m runs/toy/best.pt --nbest 3",
)
def translate(
    model: ModelOption,
    input: Annotated[
        Path | None, _option("FILE", "Text to translate (default, -: stdin).", "-i", "--input")
    ] = None,
    output: Annotated[
        Path | None, _option("FILE", "Where to write (default, -: stdout).", "-o", "--output")
    ] = None,
    beam: BeamOption = None,
    alpha: AlphaOption = None,
    nbest: Annotated[
        int, _option("N", "Write the N best: line<TAB>rank<TAB>score<TAB>text.", min=1)
    ] = 1,
    scores: Annotated[bool, typer.Option("--scores", help="Write score<TAB>text.")] = False,
    as_json: JsonLinesOption = False,
    replace_unk: ReplaceUnkOption = None,
    plot_attention: PlotOption = None,
    batch_size: BatchOption = None,
    device: DeviceOption = "auto",
    precision: PrecisionOption = None,
    runtime: RuntimeOption = "auto",
) -> None:
    """Translate one sentence per line, from stdin or a file.

    Exactly one output line per input line, in order (N lines with --nbest N); reads and
    writes in batches as lines arrive."""
    from seq2seq import corpus
    from seq2seq.files import STDIN, make_folder
    from seq2seq.translation import format_candidates

    corpus.check_output(output, [input or Path(STDIN), *model])
    translator, decode = _translator(
        model, device, beam, alpha, replace_unk, batch_size, precision, nbest, runtime
    )
    lines, name, interactive = corpus.input_lines(input)
    if plot_attention:
        make_folder(plot_attention)
    number = 0  # of the input line, from 1 as editors and messages count
    with corpus.output(output) as sink:
        for chunk in corpus.chunks(lines, 1 if interactive else decode.batch_size):
            for candidates in translator.translate_nbest(chunk, decode):
                number += 1
                if candidates[0].truncated:
                    limit = decode.max_source_length
                    console.warn(f"{name}:{number}: longer than {limit} tokens, truncated")
                sink.write(format_candidates(number, candidates, nbest, scores, as_json))
                if plot_attention and candidates[0].source_tokens:
                    from seq2seq.plots import plot_attention as draw

                    draw(candidates[0], plot_attention / f"{number:06d}.png")
            sink.flush()


@command(
    "seq2seq evaluate -m runs/toy/best.pt --src test.de --ref test.en",
    "seq2seq evaluate --hyp out.en --ref test.en --json",
)
def evaluate(
    ref: Annotated[Path | None, _option("FILE", "Reference translations, one per line.")] = None,
    tsv: Annotated[Path | None, _option("FILE", "Source<TAB>reference lines.")] = None,
    model: Annotated[
        list[Path] | None,
        _option(
            "MODEL",
            "Checkpoint (.pt), model folder or Hub id to translate the sources "
            "with; repeat it for an ensemble.",
            "--model",
            "-m",
        ),
    ] = None,  # fmt: skip
    src: Annotated[Path | None, _option("FILE", "Source sentences, aligned with --ref.")] = None,
    hyp: Annotated[Path | None, _option("FILE", "Translations to score, not to make.")] = None,
    lang: Annotated[
        str, _option("LANG", "Target language for tokenized BLEU of --hyp without --model.")
    ] = "en",
    output: Annotated[
        Path | None, _option("FILE", "Also write the translations here.", "--output", "-o")
    ] = None,
    beam: BeamOption = None,
    alpha: AlphaOption = None,
    replace_unk: ReplaceUnkOption = None,
    batch_size: BatchOption = None,
    device: DeviceOption = "auto",
    precision: PrecisionOption = None,
    runtime: RuntimeOption = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Score translations: BLEU, chrF, tokenized BLEU, perplexity.

    Against references (--ref, or --tsv), sacreBLEU's scores with their signatures.
    Translates the sources (--src, or --tsv) with --model, or scores the lines of --hyp.
    Any one file may be - (stdin)."""
    from seq2seq import corpus
    from seq2seq.files import strict_json
    from seq2seq.metrics import rounded

    if output is not None and corpus.is_standard(output):
        raise UserError("--output -: stdout holds the scores; write the translations to a file")
    corpus.check_output(output, [ref, src, hyp, tsv, *(model or [])])
    lines, references = _evaluation_text(src, ref, tsv, hyp, translating=hyp is None)
    if hyp is None and not model:
        raise UserError("evaluate needs --model to translate the sources, or --hyp to score")
    translator = decode = None
    if model:
        translator, decode = _translator(
            model, device, beam, alpha, replace_unk, batch_size, precision, runtime=runtime
        )
    if hyp is not None:
        scores = _score_file(lines, references, translator, lang)
        record, report = {"sentences": len(references), **scores.as_dict()}, scores.report()
    else:
        record, report = _translate_and_score(translator, decode, lines, references, output)
    corpus.print_result(strict_json(rounded(record)) if as_json else report)


def _translate_and_score(
    translator: TextTranslator,
    decode: DecodeConfig,
    lines: list[str],
    references: list[str],
    output: Path | None,
) -> tuple[dict[str, object], str]:
    """evaluate --model: the sources translated (and written to `output`) and scored ->
    (the JSON record, the text report)."""
    from seq2seq import corpus
    from seq2seq.evaluation import evaluate as run_evaluation

    result = run_evaluation(translator, lines, references, decode)
    beam_alpha = {"beam": decode.beam_size, "alpha": decode.alpha}
    record = {"sentences": len(references), **beam_alpha, **result.as_dict()}
    if output:
        with corpus.output(output) as sink:
            sink.writelines(t.text + "\n" for t in result.translations)
    return record, result.report(decode)


def _evaluation_text(
    src: Path | None, ref: Path | None, tsv: Path | None, hyp: Path | None, translating: bool
) -> tuple[list[str], list[str]]:
    """(the sources to translate or the translations to score, the references)."""
    from seq2seq.corpus import check_aligned, is_standard, read_lines, read_parallel, read_tsv

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


def _limit(name: str, metavar: str = "N") -> Any:
    """The `serve` option that sets ServeLimits' field `name`, with its default and help."""
    field = ServeLimits.model_fields[name]
    return typer.Option(field.default, metavar=metavar, help=field.description)


@command("seq2seq serve --model models/multi30k-de-en-small --port 8000")
def serve(
    model: ModelOption,
    host: Annotated[
        str, _option("HOST", "Address to listen on; the default answers this machine only.")
    ] = "127.0.0.1",
    port: Annotated[int, _option("PORT", "Port; 0 picks a free one (printed).")] = 8000,
    device: DeviceOption = "auto",
    max_batch: int = _limit("max_batch"),
    max_wait_ms: float = _limit("max_wait_ms", "MS"),
    max_chars: int = _limit("max_chars"),
    max_texts: int = _limit("max_texts"),
    max_beam: int = _limit("max_beam"),
    max_nbest: int = _limit("max_nbest"),
    max_translations: int = _limit("max_translations"),
    max_attention: int = _limit("max_attention"),
    request_timeout: float = _limit("request_timeout", "SECONDS"),
    grace: float = _limit("grace", "SECONDS"),
    precision: PrecisionOption = None,
    runtime: RuntimeOption = "auto",
) -> None:
    """Serve translations over HTTP, with a page at /.

    POST /translate, GET /health, GET /info. Concurrent requests are decoded together in
    batches; SIGTERM or Ctrl-C stops the server once the requests in flight are answered,
    or --grace seconds have passed."""
    from pydantic import ValidationError

    from seq2seq.serve import run

    try:
        limits = ServeLimits(
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
    except ValidationError as error:  # name the option typed: --max-chars for max_chars
        first = error.errors()[0]
        raise UserError(f"--{str(first['loc'][0]).replace('_', '-')}: {first['msg']}") from None
    run(model, host, port, device, limits, precision, runtime)


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
