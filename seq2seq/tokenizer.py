"""Text <-> tokens, for words (spaCy + Moses) or subwords (SentencePiece).

Words: only spaCy's tokenizer runs (no tagger, no parser), over batches with `pipe`.
A trained pipeline package (e.g. de_core_news_sm) is used when installed; otherwise
`spacy.blank(lang)`, which carries the same tokenizer rules; a process says so once for
each pipeline it names but lacks. Detokenization is the Moses detokenizer's (sacremoses).

Subwords: a SentencePiece model (BPE or unigram) trained on the training split only, or
an existing model read from a file (`vocab.model_file`, `src_model_file`,
`trg_model_file`); its pieces are the vocabulary, with our four specials at their fixed
ids, and its own decoder detokenizes exactly.

A checkpoint stores what the tokenizers need (`tokenizer_state`): the spaCy pipelines
actually used and the SentencePiece models' bytes, so translation tokenizes exactly like
training did.

spaCy and sacremoses are slow to import; they are imported when a word
tokenizer first runs, so that a subword model translates without them.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sentencepiece

from seq2seq import console
from seq2seq.config import BLANK_PREFIX, Config, VocabConfig, check_spacy_name
from seq2seq.errors import UserError
from seq2seq.vocab import EOS, PAD, SOS, SPECIALS, UNK

if TYPE_CHECKING:
    import spacy

# The pipelines named but not installed that this process has said it replaces.
_FALLBACKS_SAID: set[str] = set()


class Tokenizer:
    """Words: spaCy tokens in, natural text out."""

    subword = False

    def __init__(self, lang: str, pipeline: str | None = None, lowercase: bool = False):
        self.lang = lang
        self.lowercase = lowercase
        self._pipeline = pipeline
        self._joins_nt = lang == "en"

    @cached_property
    def _spacy(self) -> tuple[spacy.language.Language, str]:
        return _load_spacy(self.lang, self._pipeline)

    @property
    def _nlp(self) -> spacy.language.Language:
        return self._spacy[0]

    @property
    def name(self) -> str:
        """The spaCy pipeline used: a package name, or blank:<lang>."""
        return self._spacy[1]

    @cached_property
    def _detokenizer(self) -> Any:
        from sacremoses import MosesDetokenizer

        return MosesDetokenizer(lang=self.lang)

    @cached_property
    def _joins_hyphens(self) -> bool:
        # spaCy splits 't-shirt' into 't - shirt' in some languages (en, fr, cs...) and
        # English "isn't" into "is n't"; Moses would leave both apart.
        return len(self._nlp.tokenizer("t-shirt")) == 3

    @property
    def words(self) -> Tokenizer:
        """The word tokenizer that tokenized BLEU uses: this one."""
        return self

    @property
    def identity(self) -> tuple[object, ...]:
        """Equal for two tokenizers exactly when they split every text the same way."""
        return ("words", self.lang, self.name, self.lowercase)

    def tokenize(self, texts: Iterable[str]) -> list[list[str]]:
        """One token list per text; whitespace tokens are dropped."""
        result = []
        for doc in self._nlp.tokenizer.pipe(texts, batch_size=1000):
            tokens = [token.text for token in doc if not token.is_space]
            result.append([t.lower() for t in tokens] if self.lowercase else tokens)
        return result

    def detokenize(self, tokens: list[str]) -> str:
        """Natural text from tokens; output of a lowercasing model starts with a capital."""
        return _capitalized(self._detokenizer.detokenize(self._rejoin(tokens)), self.lowercase)

    def _rejoin(self, tokens: list[str]) -> list[str]:
        """Undo the splits Moses does not know: 't - shirt' -> 't-shirt', 'is n't' -> "isn't"."""
        joined: list[str] = []
        position = 0
        while position < len(tokens):
            token = tokens[position]
            following = tokens[position + 1] if position + 1 < len(tokens) else ""
            if (
                self._joins_hyphens
                and token == "-"
                and joined
                and joined[-1][-1:].isalnum()
                and following[:1].isalnum()
            ):
                joined[-1] += token + following
                position += 2
                continue
            if self._joins_nt and token.lower() == "n't" and joined:
                joined[-1] += token
            else:
                joined.append(token)
            position += 1
        return joined


class SubwordTokenizer:
    """Subwords: SentencePiece pieces in, SentencePiece's exact decoding out."""

    subword = True

    def __init__(self, lang: str, model: bytes, lowercase: bool, words: Tokenizer):
        self.lang = lang
        self.lowercase = lowercase
        self.model = model
        self.words = words  # spaCy words of the same language, for tokenized BLEU
        self._processor = sentencepiece.SentencePieceProcessor(model_proto=model)

    @property
    def identity(self) -> tuple[object, ...]:
        return ("pieces", self.lang, self.model, self.lowercase)

    def pieces(self) -> list[str]:
        """The vocabulary: our four specials, then the model's pieces in id order without
        its own unknown and control pieces. A model trained here has our specials as
        exactly those pieces, at our ids, so its ids are the vocabulary's; a model made
        elsewhere (`<s>`, `</s>`, no padding piece) gets ours in their place."""
        processor = self._processor
        kept = [
            processor.id_to_piece(i)
            for i in range(processor.get_piece_size())
            if not (processor.is_unknown(i) or processor.is_control(i))
        ]
        return [*SPECIALS, *(piece for piece in kept if piece not in SPECIALS)]

    def tokenize(self, texts: Iterable[str]) -> list[list[str]]:
        lowered = [text.lower() if self.lowercase else text for text in texts]
        return self._processor.encode(lowered, out_type=str)

    def detokenize(self, tokens: list[str]) -> str:
        return _capitalized(self._processor.decode_pieces(tokens), self.lowercase)


AnyTokenizer = Tokenizer | SubwordTokenizer


def train_sentencepiece(texts: Iterable[str], vocab: VocabConfig, lowercase: bool) -> bytes:
    """A SentencePiece model of the training text, with our specials at our ids."""
    lines = [text.lower() if lowercase else text for text in texts if text.strip()]
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_writer=model,
        model_type=vocab.model_type,
        vocab_size=vocab.size,
        hard_vocab_limit=False,  # small corpora may not have `size` pieces
        character_coverage=1.0,
        unk_id=UNK,
        pad_id=PAD,
        bos_id=SOS,
        eos_id=EOS,
        unk_piece=SPECIALS[UNK],
        pad_piece=SPECIALS[PAD],
        bos_piece=SPECIALS[SOS],
        eos_piece=SPECIALS[EOS],
        num_threads=1,  # the same model from the same text, every time
        minloglevel=2,
    )
    return model.getvalue()


def read_sentencepiece(key: str, path: str) -> bytes:
    """The bytes of an existing SentencePiece model that the config's `key` names."""
    try:
        model = Path(path).read_bytes()
    except FileNotFoundError:
        raise UserError(f"vocab.{key}: {path}: file not found") from None
    except OSError as error:
        raise UserError(f"vocab.{key}: {path}: cannot read: {error.strerror or error}") from None
    if not model:  # empty bytes would load as "no model", which logs C++ errors on use
        raise UserError(f"vocab.{key}: {path}: not a SentencePiece model (empty file)")
    try:
        sentencepiece.SentencePieceProcessor(model_proto=model)
    except RuntimeError:
        raise UserError(f"vocab.{key}: {path}: not a SentencePiece model") from None
    return model


def sentencepiece_model(
    key: str, texts: Iterable[str], vocab: VocabConfig, lowercase: bool
) -> bytes:
    """The model that the config's `key` names, or one trained on `texts`."""
    path = getattr(vocab, key)
    return read_sentencepiece(key, path) if path else train_sentencepiece(texts, vocab, lowercase)


def tokenizer_state(src: AnyTokenizer, trg: AnyTokenizer) -> dict[str, Any]:
    """What a checkpoint needs to rebuild both tokenizers: the spaCy pipelines used, and
    the SentencePiece models as byte tensors (weights_only-loadable)."""
    import torch  # here: the onnxruntime path makes tokenizers without torch

    state: dict[str, Any] = {"src": src.words.name, "trg": trg.words.name}
    for side, tokenizer in (("src", src), ("trg", trg)):
        if isinstance(tokenizer, SubwordTokenizer):
            state[f"{side}_model"] = torch.frombuffer(bytearray(tokenizer.model), dtype=torch.uint8)
    return state


def make_tokenizers(
    config: Config,
    saved: dict[str, Any] | None = None,
    training_text: tuple[list[str], list[str]] | None = None,
) -> tuple[AnyTokenizer, AnyTokenizer]:
    """Source and target tokenizers: rebuilt from a checkpoint's `tokenizer_state` (its
    SentencePiece models as byte tensors or bytes), or made from the config
    (SentencePiece models are then read from the files it names, or trained on
    `training_text`)."""
    data, vocab = config.data, config.vocab
    src_words = Tokenizer(
        data.src_lang, saved["src"] if saved else data.src_pipeline, data.lowercase
    )
    trg_words = Tokenizer(
        data.trg_lang, saved["trg"] if saved else data.trg_pipeline, data.lowercase
    )
    if vocab.type == "word":
        return src_words, trg_words
    if saved is not None:
        src_model, trg_model = (_model_bytes(saved[f"{side}_model"]) for side in ("src", "trg"))
    elif training_text is None:
        raise ValueError("SentencePiece models are trained on the training text")
    elif vocab.joint:
        both = [*training_text[0], *training_text[1]]
        src_model = trg_model = sentencepiece_model("model_file", both, vocab, data.lowercase)
    else:
        src_model, trg_model = (
            sentencepiece_model(key, texts, vocab, data.lowercase)
            for key, texts in zip(("src_model_file", "trg_model_file"), training_text, strict=True)
        )
    return (
        SubwordTokenizer(data.src_lang, src_model, data.lowercase, src_words),
        SubwordTokenizer(data.trg_lang, trg_model, data.lowercase, trg_words),
    )


def _model_bytes(saved: Any) -> bytes:
    """A saved SentencePiece model: a checkpoint's byte tensor, or the bytes that the
    onnxruntime path reads from a model folder."""
    return saved if isinstance(saved, bytes) else bytes(saved.numpy())


def _capitalized(text: str, lowercase: bool) -> str:
    """Output of a lowercasing model starts with a capital."""
    return text[0].upper() + text[1:] if lowercase and text else text


def _load_spacy(lang: str, pipeline: str | None) -> tuple[spacy.language.Language, str]:
    """(nlp, name): the pipeline's tokenizer when installed, else spacy.blank(lang).
    Both names pass the allow-list here, where spaCy would import a module named by them,
    whichever path (config, checkpoint, model folder, the Python API) they came by."""
    check_spacy_name(lang, "language")
    if pipeline is not None:
        check_spacy_name(pipeline, "pipeline")
    try:
        import spacy
    except ModuleNotFoundError:  # the torch-free install of the onnxruntime path
        raise UserError(
            "spaCy is not installed, and words are tokenized with it: "
            "pip install -r requirements-onnxruntime-words.txt"
        ) from None

    named = pipeline is not None and not pipeline.startswith(BLANK_PREFIX)
    if named and spacy.util.is_package(pipeline):
        return spacy.load(pipeline), pipeline
    nlp = spacy.blank(lang)
    if named and pipeline not in _FALLBACKS_SAID:  # every tokenizer of it, one message
        _FALLBACKS_SAID.add(pipeline)
        console.info(
            f"{pipeline} is not installed; using spaCy's rule-based "
            f"{type(nlp).__name__} tokenizer (same tokenization rules)"
        )
    return nlp, BLANK_PREFIX + lang
