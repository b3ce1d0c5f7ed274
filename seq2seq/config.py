"""The typed configuration: the one place where every default lives.

A run is described by a YAML file validated into `Config`. Unknown keys are errors
that suggest the closest valid key; `--set section.key=value` overrides any key.
Every error names the file, the line (when the YAML has one) and the key.
"""

from __future__ import annotations

import difflib
import importlib.util
import re
from pathlib import Path
from typing import Any, Literal, NamedTuple

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from seq2seq.corpus import STDIN, stdin_lines
from seq2seq.errors import UserError
from seq2seq.files import write_atomic

Device = Literal["auto", "cpu", "cuda", "mps"]
DecodePrecision = Literal["fp32", "bf16", "int8"]
# Which library runs a translating model: `auto` takes onnxruntime for a model folder that
# holds ONNX files (seq2seq export --onnx) where it can, else torch.
Runtime = Literal["auto", "onnxruntime", "torch"]


class Section(BaseModel):
    # Infinity and NaN pass every range check (NaN compares false with any bound) and
    # would reach the optimizer, the length penalty or a timer: no setting may hold them.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


BLANK_PREFIX = "blank:"
# The spaCy names a config or a checkpoint may give, the one allow-list on the way to an
# import: spacy.load imports an installed package of the name it is given, spacy.blank
# imports spacy.lang.<lang>, and importlib.util.find_spec imports each package along a
# dotted name. A language is a plain code; a pipeline is blank:<language> or a pipeline
# package <language>_<kind>_<genre>_<size> (de_core_news_sm).
_LANGUAGE = "[a-z]{2,3}"
SPACY_NAMES = {
    "language": (re.compile(_LANGUAGE), "a code such as de"),
    "pipeline": (
        re.compile(rf"{BLANK_PREFIX}{_LANGUAGE}|{_LANGUAGE}_[a-z]+_[a-z]+_(sm|md|lg|trf)"),
        "blank:<language> or a pipeline package such as de_core_news_sm",
    ),
}


def check_spacy_name(name: object, kind: Literal["language", "pipeline"]) -> str:
    """`name` when spaCy may be given it as a `kind`; else a ValueError saying what may."""
    pattern, shapes = SPACY_NAMES[kind]
    if not (isinstance(name, str) and pattern.fullmatch(name)):
        raise ValueError(f"{name!r} is not a spaCy {kind} name ({shapes})")
    return name


class DataConfig(Section):
    dir: str = "data/multi30k"
    """Folder holding the splits, plain or gzipped (`.gz`), in the layout of `format`."""
    format: Literal["files", "tsv"] = "files"
    """`files`: two line-aligned files per split, `{split}.{src_lang}` and
    `{split}.{trg_lang}`. `tsv`: one file per split, `{split}.tsv`, a `source<TAB>target`
    pair on every line (a split named with its extension, e.g. `news.tsv.gz`, as is)."""
    dataset: Literal["multi30k"] | None = None
    """With `multi30k`, train downloads the missing Multi30k files into `dir` (verified)."""
    src_lang: str = "de"
    trg_lang: str = "en"
    train: str = "train"
    valid: str = "val"
    test: str = "test_2016_flickr"
    lowercase: bool = False
    src_pipeline: str | None = None
    """spaCy pipeline package whose tokenizer to use (e.g. de_core_news_sm), or
    blank:<language>; when it is not installed, or None, `spacy.blank(src_lang)` gives the
    same rule-based tokenizer."""
    trg_pipeline: str | None = None
    max_length: int = Field(100, gt=0)
    """Training pairs with more tokens than this on either side are skipped (and counted)."""

    @field_validator("src_lang", "trg_lang")
    @classmethod
    def _spacy_knows_language(cls, lang: str) -> str:
        check_spacy_name(lang, "language")  # before anything imports a module named by it
        if importlib.util.find_spec("spacy") is None:
            return lang  # the torch-free install, for subword models: nothing to ask
        if not (spacy_has_language_folder(lang) or spacy_finds_language(lang)):
            raise ValueError(f"spaCy has no language {lang!r}")
        return lang

    @field_validator("src_pipeline", "trg_pipeline")
    @classmethod
    def _spacy_may_load_pipeline(cls, pipeline: str | None) -> str | None:
        return None if pipeline is None else check_spacy_name(pipeline, "pipeline")

    @model_validator(mode="after")
    def _download_fits_the_format(self) -> DataConfig:
        if self.dataset == "multi30k" and self.format != "files":
            raise ValueError("dataset multi30k downloads the files layout: format must be files")
        return self


def spacy_has_language_folder(lang: str) -> bool:
    """spaCy's own languages are folders spacy/lang/<code>/: found without importing spaCy,
    which takes about a second (every config and checkpoint is validated, and a subword
    model translates without spaCy)."""
    spec = importlib.util.find_spec("spacy")
    if spec is None:
        return False
    folders = spec.submodule_search_locations or []
    return any((Path(folder) / "lang" / lang / "__init__.py").is_file() for folder in folders)


def spacy_finds_language(lang: str) -> bool:
    """Where spacy.util.get_lang_class looks (registered languages, spacy.lang.<lang>, an
    alias such as fra for fr), without importing the language: that takes seconds for
    some (French). `lang` is a plain code (check_spacy_name): find_spec imports nothing
    beyond spacy.lang."""
    import spacy.util

    return (
        lang in spacy.util.registry.languages
        or importlib.util.find_spec(f"spacy.lang.{lang}") is not None
        or spacy.util.find_matching_language(lang) is not None
    )


class VocabConfig(Section):
    type: Literal["word", "sentencepiece"] = "word"
    """`word`: spaCy tokens, rare ones become <unk>. `sentencepiece`: subword pieces from
    a SentencePiece model trained on the training split and stored in the checkpoint."""
    min_freq: int = Field(2, gt=0)
    """word: tokens seen fewer times become <unk>."""
    max_size: int | None = Field(None, gt=0)
    """word: most frequent tokens kept, not counting the four specials; None keeps all."""
    model_type: Literal["bpe", "unigram"] = "unigram"
    """sentencepiece: the segmentation algorithm."""
    size: int = Field(8000, gt=4)
    """sentencepiece: pieces per model, the four specials included (an upper bound on
    small data)."""
    joint: bool = False
    """sentencepiece: one model trained on both languages, shared by source and target."""
    model_file: str | None = None
    """sentencepiece, joint: an existing SentencePiece model used for both languages
    instead of training one (model_type and size are then the file's)."""
    src_model_file: str | None = None
    """sentencepiece, not joint: an existing model for the source side; None trains one."""
    trg_model_file: str | None = None
    """sentencepiece, not joint: an existing model for the target side; None trains one."""

    @model_validator(mode="after")
    def _model_files_fit(self) -> VocabConfig:
        # Only the combination is checked here: a checkpoint's config names files that
        # need not exist where it translates (the models travel inside the checkpoint).
        named = [key for key in MODEL_FILE_KEYS if getattr(self, key)]
        if named and self.type != "sentencepiece":
            raise ValueError(f"{named[0]} needs type: sentencepiece")
        if self.model_file and not self.joint:
            raise ValueError(
                "model_file is one model for both languages: set joint: true, or name "
                "src_model_file and trg_model_file"
            )
        if self.joint and (self.src_model_file or self.trg_model_file):
            raise ValueError("joint: true shares one model: name it with model_file")
        return self


MODEL_FILE_KEYS = ("model_file", "src_model_file", "trg_model_file")


class EncoderConfig(Section):
    embedding_size: int = Field(256, gt=0)
    hidden_size: int = Field(512, gt=0)
    """Per direction: the encoder outputs have 2 * hidden_size channels."""
    gate: Literal["none", "se", "cbam"] = "none"
    """A computer-vision gate on the encoder outputs before attention: squeeze-and-
    excitation (channels) or CBAM (channels, then positions)."""
    gate_reduction: int = Field(16, gt=0)
    """r: the gate's MLP squeezes 2 * hidden_size channels to 2 * hidden_size / r."""
    gate_kernel: int = Field(7, gt=0)
    """k: CBAM's temporal convolution width (odd, so that it is centred)."""

    @model_validator(mode="after")
    def _gate_sizes_fit(self) -> EncoderConfig:
        if self.gate == "none":
            return self
        channels = 2 * self.hidden_size
        if self.gate_reduction > channels or channels % self.gate_reduction:
            raise ValueError(
                f"gate_reduction {self.gate_reduction} must divide the {channels} encoder "
                "channels (2 * hidden_size)"
            )
        if self.gate_kernel % 2 == 0:
            raise ValueError(f"gate_kernel must be odd, not {self.gate_kernel}")
        return self


class DecoderConfig(Section):
    embedding_size: int = Field(256, gt=0)
    hidden_size: int = Field(512, gt=0)


class ModelConfig(Section):
    encoder: EncoderConfig = EncoderConfig()
    decoder: DecoderConfig = DecoderConfig()
    dropout: float = Field(0.5, ge=0.0, lt=1.0)


class TrainConfig(Section):
    run_dir: str = "runs/multi30k_de_en"
    init_from: str | None = None
    """Fine-tuning: a trained model (a .pt checkpoint, a model folder or a Hub id
    hf:ORG/NAME[@REVISION]) whose weights, tokenizers and vocabularies a new run starts
    from; its model and text settings replace this config's (said once). The optimizer,
    schedule and step count start fresh."""
    epochs: int = Field(10, gt=0)
    batch_size: int = Field(128, gt=0)
    batch_unit: Literal["sentences", "tokens"] = "sentences"
    """`tokens` makes batch_size a budget of padded tokens per batch."""
    learning_rate: float = Field(1e-3, gt=0.0)
    clip_norm: float | None = Field(1.0, gt=0.0)
    teacher_forcing: float = Field(1.0, ge=0.0, le=1.0)
    """Probability, drawn once per time step, of feeding the gold token instead of the
    model's own prediction (the tutorial uses 0.5)."""
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0)
    accumulate_steps: int = Field(1, gt=0)
    """Batches whose gradients are summed before each optimizer step."""
    max_steps: int | None = Field(None, gt=0)
    """Stop after this many optimizer steps even if epochs remain."""
    max_minutes: float | None = Field(None, gt=0.0)
    """Stop (validate, save) once this many minutes of training have passed, counted as
    the metrics log's `elapsed` (optimizer steps, validation excluded, over all sessions)."""
    best_metric: Literal["bleu", "chrf", "loss", "free_running_loss"] = "bleu"
    """Validation metric that picks best.pt, drives early stopping and the plateau schedule.
    `free_running_loss` feeds the model its own predictions, as the tutorial validates."""
    validate_every: int | None = Field(None, gt=0)
    """Validate every N optimizer steps; None validates at the end of each epoch."""
    patience: int | None = Field(None, gt=0)
    """Stop after this many validations without improvement; None never stops early."""
    save_every: int = Field(500, gt=0)
    """Save last.pt every N optimizer steps (and at every epoch end)."""
    keep_checkpoints: int = Field(0, ge=0)
    """Keep the k best validated checkpoints as ckpt-step{N}.pt, for `seq2seq average`."""
    scheduler: Literal["none", "plateau", "inverse_sqrt"] = "none"
    warmup_steps: int = Field(4000, ge=0)
    """inverse_sqrt: the learning rate rises linearly for this many steps, then decays."""
    plateau_factor: float = Field(0.5, gt=0.0, lt=1.0)
    plateau_patience: int = Field(1, ge=0)
    """plateau: multiply the rate by plateau_factor after this many validations without
    improvement beyond the first."""
    min_learning_rate: float = Field(1e-6, ge=0.0)
    log_every: int = Field(50, gt=0)
    """Append a training record to metrics.jsonl every N optimizer steps; where stderr
    is not a terminal, print a progress line as often (and at least every minute)."""
    device: Device = "auto"
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    """Mixed precision for training: bf16 (autocast) or fp16 (autocast + gradient scaler,
    CUDA only)."""
    threads: int | None = Field(None, gt=0)
    """CPU threads for torch; None keeps torch's default (one per physical core), divided
    among the processes of a machine under torchrun."""
    max_bad_steps: int = Field(5, gt=0)
    """Stop (exit 3) after this many steps in a row with non-finite gradients; each one's
    update is skipped."""
    distributed_timeout: float = Field(30.0, gt=0.0)
    """Minutes a rank waits for the others (torchrun) before the run fails instead of hanging."""


class DecodeConfig(Section):
    """How `translate` and `evaluate` decode (validation during training is greedy)."""

    # Every setting that sets how long or how wide a search runs has a generous cap: a
    # checkpoint, a --set or a request could otherwise make one sentence decode for hours
    # (the longest output is max_length_ratio * max_source_length + max_length_offset).
    beam_size: int = Field(5, gt=0, le=64)
    """1 is greedy search."""
    alpha: float = Field(0.6, ge=0.0, le=10.0)
    """GNMT length penalty ((5 + length) / 6) ** alpha; 0 ranks by summed log-probability.
    Capped where the penalty of the longest output stays a finite float32."""
    replace_unk: bool = False
    """Replace each <unk> in the output with the source token it attends to most."""
    batch_size: int = Field(64, gt=0, le=4096)
    max_length_ratio: float = Field(2.0, gt=0.0, le=5.0)
    max_length_offset: int = Field(10, ge=0, le=500)
    """A translation stops after ratio * source_tokens + offset tokens."""
    max_source_length: int = Field(250, gt=0, le=1000)
    """Longer inputs are truncated to this many tokens (with a warning)."""
    precision: DecodePrecision = "fp32"
    """bf16 runs the search under bf16 autocast: faster on GPUs and on CPUs with AMX or
    AVX512-BF16, slower elsewhere; scores can differ from fp32 in the last digits. int8
    (CPU only): int8 weights, a quarter of the bytes to read, which bound a step at small
    batches; translations can differ."""
    nbest: int = Field(1, gt=0, le=64)
    """Translations returned per sentence, best first; at most beam_size."""
    combine: Literal["probs", "log_probs"] = "log_probs"
    """Ensembles: each step's next-token scores are the mean of the members'
    log-probabilities (`log_probs`) or the log of the mean of their probabilities
    (`probs`); docs/results.md compares the two."""

    @field_validator("nbest")
    @classmethod
    def _nbest_fits_the_beam(cls, nbest: int, info: ValidationInfo) -> int:
        beam_size = info.data.get("beam_size")  # absent when itself invalid
        if beam_size is not None and nbest > beam_size:
            raise ValueError(
                f"nbest {nbest} needs a beam of at least {nbest} (the beam is {beam_size})"
            )
        return nbest

    def updated(self, **changes: object) -> DecodeConfig:
        """A validated copy with `changes` applied (None leaves a setting as it is); a bad
        value is a UserError naming the setting. The original is never modified."""
        values = {**self.model_dump(), **{k: v for k, v in changes.items() if v is not None}}
        try:
            return DecodeConfig.model_validate(values)
        except ValidationError as error:
            first = error.errors()[0]
            key = ".".join(str(part) for part in first["loc"])
            message = str(first["msg"]).removeprefix("Value error, ")
            raise SettingError(key, message) from None


class SettingError(UserError):
    """A bad decoding setting: `key` names it and `reason` says what is wrong, in words
    that suit the command line and the server alike (which reports it as a request field)."""

    def __init__(self, key: str, reason: str):
        super().__init__(f"decode.{key}: {reason}")
        self.key, self.reason = key, reason


class CallNames(NamedTuple):
    """What users type to set a decoding setting for one call: the command-line option
    (of translate, evaluate or serve) and the field of a POST /translate request, if any."""

    option: str
    field: str | None = None


# The decoding settings that one call may set, by key; the others are the model's. The
# names are not the keys (beam_size, --beam, beam) and stay as they are: scripts and
# clients type them. docs/configuration.md's table of them is checked against this.
CALL_NAMES = {
    "beam_size": CallNames("--beam", "beam"),
    "alpha": CallNames("--alpha", "alpha"),
    "nbest": CallNames("--nbest", "nbest"),
    "replace_unk": CallNames("--replace-unk"),
    "batch_size": CallNames("--batch-size"),
    "precision": CallNames("--precision"),
}


class ServeLimits(Section):
    """What `seq2seq serve` lets a client ask for; each field is the option of its name
    (`max_chars`: --max-chars), whose help is the field's description."""

    max_chars: int = Field(2000, ge=1, description="Most characters in one text.")
    max_texts: int = Field(64, ge=1, description="Most texts in one request.")
    max_beam: int = Field(10, ge=1, description="Largest beam a request may ask for.")
    max_nbest: int = Field(10, ge=1, description="Largest nbest a request may ask for.")
    # An answer's size grows with its translations (texts x nbest), with attention by up to
    # (max_source_length + 2) x (longest output + 1) weights per translation.
    max_translations: int = Field(
        256, ge=1, description="Most translations (texts x nbest) in one answer."
    )
    max_attention: int = Field(
        10, ge=1, description="Most translations in one answer with attention."
    )
    max_batch: int = Field(64, ge=1, description="Most sentences in one decoder batch.")
    max_wait_ms: float = Field(
        5.0, ge=0.0, description="How long a request waits for others to batch with."
    )
    # Counted from connecting, or from the last answer on a kept-alive connection.
    request_timeout: float = Field(
        10.0, ge=0.1, description="Seconds a client has to send a request's headers, then its body."
    )
    grace: float = Field(
        10.0, ge=0.0, description="Seconds the requests in flight have to finish after SIGTERM."
    )

    def max_body(self) -> int:
        """Bytes a request body may have: every text at its longest, each character
        written as a 6-byte JSON escape, plus room for the other fields."""
        return self.max_texts * (6 * self.max_chars + 8) + 4096


class Config(Section):
    seed: int = Field(1234, ge=0, lt=2**32)
    """Seeds every random stream (mixed with the rank, the epoch, the step: kept small
    enough that those sums fit torch's 64-bit seeds)."""
    data: DataConfig = DataConfig()
    vocab: VocabConfig = VocabConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    decode: DecodeConfig = DecodeConfig()


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read a YAML config (`-`: stdin), apply `key.path=value` overrides and validate it."""
    text, name = _config_text(path)
    try:
        root, raw = _parsed_yaml(text, name)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{name}:{mark.line + 1}:{mark.column + 1}" if mark else name
        problem = getattr(error, "problem", None) or str(error)
        raise UserError(f"{where}: YAML syntax error: {problem}") from None
    if raw is None:
        raise UserError(f"{name}: config file is empty")
    if not isinstance(raw, dict):
        raise UserError(f"{name}: a config must be a mapping of sections, not {type(raw).__name__}")
    for override in overrides:
        _apply_override(raw, override)
    return config_from_dict(raw, source=name, yaml_root=root, overrides=overrides)


def _parsed_yaml(text: str, name: str) -> tuple[yaml.Node | None, Any]:
    """(the composed document, for line numbers; its data), a key repeated in a mapping
    refused (`name` is the source that messages give)."""
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        _check_unique_keys(root, name, "", set())
        return root, None if root is None else loader.construct_document(root)
    finally:
        loader.dispose()


def _check_unique_keys(node: yaml.Node | None, name: str, prefix: str, seen: set[int]) -> None:
    """Refuse a key given twice in one mapping, at any depth: YAML would keep the last one
    without a word, and a second `train:` section would reset every key the first set.
    `seen` holds the nodes already checked (an alias repeats, or contains, its anchor)."""
    if node is None or id(node) in seen:
        return
    seen.add(id(node))
    if isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _check_unique_keys(item, name, prefix, seen)
    if not isinstance(node, yaml.MappingNode):
        return
    first: dict[tuple[str, str], int] = {}
    for key, value in node.value:
        if isinstance(key, yaml.ScalarNode) and key.tag != "tag:yaml.org,2002:merge":
            line = key.start_mark.line + 1
            if (key.tag, key.value) in first:
                raise UserError(
                    f"{name}:{line}: duplicate key '{prefix}{key.value}' "
                    f"(first at line {first[key.tag, key.value]})"
                )
            first[key.tag, key.value] = line
        _check_unique_keys(value, name, f"{prefix}{key.value}.", seen)


def _config_text(path: str | Path) -> tuple[str, str]:
    """(the YAML text, the name that messages give the file)."""
    if str(path) == STDIN:
        return "\n".join(stdin_lines()), "<stdin>"
    try:
        return Path(path).read_text(encoding="utf-8"), str(path)
    except FileNotFoundError:
        raise UserError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"{path}: cannot read config: {error}") from None


def config_from_dict(
    raw: dict[str, Any],
    source: str = "config",
    yaml_root: yaml.Node | None = None,
    overrides: list[str] | tuple[str, ...] = (),
) -> Config:
    """Validate a plain dict (from YAML or a checkpoint) into a `Config`; an error in a
    value that `overrides` set names the `--set`, not the file."""
    try:
        return Config.model_validate(raw)
    except ValidationError as error:
        first = error.errors()[0]
        key_path = [str(part) for part in first["loc"]]
        key = ".".join(key_path)
        line = _line_of(yaml_root, key_path)
        where = f"{source}:{line}" if line else source
        for override in overrides:
            dotted = override.split("=", 1)[0].strip()
            # The override set this key, or sits in the section whose check failed.
            if key == dotted or key.startswith(dotted + ".") or dotted.startswith(key + "."):
                where = f"--set {override}"
        if first["type"] == "extra_forbidden":
            hint = _closest_key(key_path)
            raise UserError(f"{where}: unknown key '{key}'{hint}") from None
        message = str(first["msg"]).removeprefix("Value error, ")
        raise UserError(f"{where}: {key}: {message}") from None


def _apply_override(raw: dict[str, Any], override: str) -> None:
    if "=" not in override:
        raise UserError(f"--set {override!r}: expected section.key=value")
    dotted, value_text = override.split("=", 1)
    parts = dotted.strip().split(".")
    node = raw
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise UserError(f"--set {override!r}: '{part}' is not a section")
        node = child
    try:
        value = _parsed_yaml(value_text, f"--set {override!r}")[1] if value_text.strip() else None
    except yaml.YAMLError:
        value = value_text
    node[parts[-1]] = _merged(node.get(parts[-1]), value)


def _merged(old: Any, new: Any) -> Any:
    """`new` over `old`: a mapping sets only the keys it names, as a file does over the
    defaults, so `--set 'train={epochs: 1}'` keeps the section's other settings."""
    if isinstance(old, dict) and isinstance(new, dict):
        return {**old, **{key: _merged(old.get(key), value) for key, value in new.items()}}
    return new


def _closest_key(key_path: list[str]) -> str:
    """' (did you mean 'train.epochs'?)' for a mistyped key, or ''."""
    model: type[BaseModel] = Config
    for part in key_path[:-1]:
        field = model.model_fields.get(part)
        annotation = field.annotation if field else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return ""
        model = annotation
    match = difflib.get_close_matches(key_path[-1], list(model.model_fields), n=1, cutoff=0.5)
    if not match:
        return f" (valid keys here: {', '.join(model.model_fields)})"
    return f" (did you mean '{'.'.join([*key_path[:-1], match[0]])}'?)"


def _line_of(node: yaml.Node | None, key_path: list[str]) -> int | None:
    """The 1-based line of a key in the composed YAML, or of its deepest existing parent."""
    line = None
    for part in key_path:
        if not isinstance(node, yaml.MappingNode):
            break
        for key_node, value_node in node.value:
            if key_node.value == part:
                line = key_node.start_mark.line + 1
                node = value_node
                break
        else:
            break
    return line


def save_config(config: Config, path: Path) -> None:
    text = yaml.safe_dump(config.model_dump(), sort_keys=False)
    write_atomic(path, lambda handle: handle.write(text.encode("utf-8")))
