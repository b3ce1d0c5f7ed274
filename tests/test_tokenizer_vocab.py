"""Tokenizer (spaCy + Moses detokenizer) and vocabulary (tokens <-> ids)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import seq2seq.tokenizer
from seq2seq import console
from seq2seq.tokenizer import Tokenizer
from seq2seq.vocab import EOS, PAD, SOS, SPECIALS, UNK, Vocabulary


@pytest.fixture(scope="module")
def english() -> Tokenizer:
    return Tokenizer("en")


@pytest.fixture(scope="module")
def german() -> Tokenizer:
    return Tokenizer("de")


def test_tokenize_splits_punctuation(english: Tokenizer) -> None:
    assert english.tokenize(["A man rides a bike."]) == [["A", "man", "rides", "a", "bike", "."]]


def test_detokenize_gives_natural_text(english: Tokenizer) -> None:
    assert english.detokenize(["A", "man", "rides", "a", "bike", "."]) == "A man rides a bike."


@pytest.mark.parametrize(
    "text",
    [
        "A man rides a bike.",
        "Two dogs (brown) play in the snow, don't they?",
        'He said "hello" to me.',
        "A woman's dog isn't happy; it can't swim.",
        "A 5-year-old boy in a black t-shirt plays tug-of-war.",
        "It costs $5.50, right?",
        "People at the U.S. border: 100% fun!",
    ],
)
def test_english_round_trip(english: Tokenizer, text: str) -> None:
    (tokens,) = english.tokenize([text])
    assert english.detokenize(tokens) == text


@pytest.mark.parametrize(
    "text",
    [
        "Ein Mann fährt Fahrrad.",
        "Zwei Hunde (braun) spielen im Schnee.",
        'Er sagt: "Hallo!"',
        "Ein 5-jähriger Junge springt, der Hund bellt.",
        "Die Frau z.B. liest.",
    ],
)
def test_german_round_trip(german: Tokenizer, text: str) -> None:
    (tokens,) = german.tokenize([text])
    assert german.detokenize(tokens) == text


# Words that spaCy splits and the detokenizer joins again (t - shirt, is n't), words it must
# leave apart (is not, no), and dashes beside punctuation, which stay spaced.
ENGLISH_WORDS = ["a", "man", "is", "not", "no", "nothing", "now", "isn't", "don't", "can't",
                 "t-shirt", "well-known", "n-gram", "x-ray"]  # fmt: skip
AFTER_A_WORD = ["", ",", ", -", ":", ": -", " -,", " -:"]


@given(st.lists(st.tuples(st.sampled_from(ENGLISH_WORDS), st.sampled_from(AFTER_A_WORD)),
                min_size=1, max_size=8))  # fmt: skip
def test_english_word_round_trip(english: Tokenizer, words: list[tuple[str, str]]) -> None:
    text = " ".join(word + after for word, after in words) + "."
    (tokens,) = english.tokenize([text])
    assert english.detokenize(tokens) == text


@pytest.mark.parametrize(
    "tokens, text",
    [
        (["A", "man", "in", "a", "t", "-", "shirt"], "A man in a t-shirt"),  # at the end too
        (["An", "A&E", "-", "style", "show", "."], "An A&E-style show."),  # E beside it
        (["An", "all", "-", "A&E", "lineup", "."], "An all-A&E lineup."),  # A beside it
        (["Dogs", "&", "-", "cats", "."], "Dogs & - cats."),  # & beside it: a spaced dash
    ],
)
def test_a_hyphen_joins_the_tokens_whose_characters_beside_it_are_letters_or_digits(
    english: Tokenizer, tokens: list[str], text: str
) -> None:
    assert english.detokenize(tokens) == text


def test_a_spaced_dash_in_german_stays_spaced(german: Tokenizer) -> None:
    # German keeps 't-shirt' whole, so a lone '-' token was a spaced dash.
    assert german.detokenize(["Ein", "Mann", "-", "müde", "."]) == "Ein Mann - müde."


def test_lowercase_option() -> None:
    tokenizer = Tokenizer("en", lowercase=True)
    (tokens,) = tokenizer.tokenize(["A Man in New York."])
    assert tokens == ["a", "man", "in", "new", "york", "."]
    assert tokenizer.detokenize(tokens) == "A man in new york."
    assert tokenizer.detokenize([]) == ""


def test_whitespace_is_dropped(english: Tokenizer) -> None:
    assert english.tokenize(["", "   ", "\t", "a  \t b"]) == [[], [], [], ["a", "b"]]


def test_one_token_list_per_text_in_order(german: Tokenizer) -> None:
    texts = [f"Satz {i} endet hier." for i in range(50)]
    assert german.tokenize(texts) == [["Satz", str(i), "endet", "hier", "."] for i in range(50)]


def test_missing_pipeline_falls_back_to_blank_and_says_so_once(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """One line per pipeline named but not installed, however many tokenizers (sides,
    models, texts) use it; none when no pipeline was named."""
    monkeypatch.setattr(seq2seq.tokenizer, "_FALLBACKS_SAID", set())  # a fresh process
    monkeypatch.setattr(console, "_verbosity", console.NORMAL)
    tokenizers = [Tokenizer("de", "de_nosuch_news_sm") for _ in range(2)]
    tokenizers += [Tokenizer("en", "en_nosuch_web_sm"), Tokenizer("de", None)]
    tokenizers.append(Tokenizer("de", "blank:de"))
    for tokenizer in tokenizers:
        assert tokenizer.tokenize(["Ein Hund.", "Zwei Hunde."])[1] == ["Zwei", "Hunde", "."]
    assert [t.name for t in tokenizers] == ["blank:de", "blank:de", "blank:en", *["blank:de"] * 2]
    assert capsys.readouterr().err == (
        "de_nosuch_news_sm is not installed; using spaCy's rule-based German tokenizer (same "
        "tokenization rules)\n"
        "en_nosuch_web_sm is not installed; using spaCy's rule-based English tokenizer (same "
        "tokenization rules)\n"
    )


# Tokenizes with each language,pipeline given on the command line in a fresh interpreter,
# then prints which of the modules they would make spaCy import were imported.
TOKENIZE = """
import sys
from seq2seq.tokenizer import Tokenizer
for argument in sys.argv[1:]:
    lang, pipeline = argument.split(",")
    try:
        Tokenizer(lang, pipeline or None).tokenize(["Ein Hund."])
    except Exception as error:
        print(type(error).__name__, error)
print(sorted({"pytest", "spacy.lang.de.examples"} & set(sys.modules)))
"""


def test_spacy_is_never_given_a_name_outside_the_allow_list() -> None:
    """Where spaCy would import a module (spacy.load, spacy.blank), whatever made the
    tokenizer: the Python API has no config or checkpoint check in front of it."""
    pairs = ["de,pytest", "de.examples,", "en,blank:en;x"]
    completed = subprocess.run(
        [sys.executable, "-c", TOKENIZE, *pairs], capture_output=True, text=True, timeout=300
    )
    lines = completed.stdout.splitlines()
    assert lines == [
        "ValueError 'pytest' is not a spaCy pipeline name (blank:<language> or a pipeline "
        "package such as de_core_news_sm)",
        "ValueError 'de.examples' is not a spaCy language name (a code such as de)",
        "ValueError 'blank:en;x' is not a spaCy pipeline name (blank:<language> or a pipeline "
        "package such as de_core_news_sm)",
        "[]",
    ], completed.stdout + completed.stderr


# -- vocabulary ----------------------------------------------------------------------------


def test_specials_have_fixed_ids() -> None:
    assert (UNK, PAD, SOS, EOS) == (0, 1, 2, 3)
    vocab = Vocabulary.build([["b", "a"]])
    assert vocab.itos[:4] == ["<unk>", "<pad>", "<sos>", "<eos>"] == list(SPECIALS)
    assert [vocab.stoi[s] for s in SPECIALS] == [0, 1, 2, 3]


def test_order_is_frequency_then_alphabetical() -> None:
    sentences = [["b", "a", "c", "c"], ["d", "a", "c"], ["b", "e"]]
    vocab = Vocabulary.build(sentences)
    # c: 3; a, b: 2; d, e: 1
    assert vocab.itos[4:] == ["c", "a", "b", "d", "e"]


def test_min_freq_and_max_size() -> None:
    sentences = [["x", "x", "x", "y", "y", "z"], ["w", "w", "w", "w"]]
    assert Vocabulary.build(sentences, min_freq=2).itos[4:] == ["w", "x", "y"]
    assert Vocabulary.build(sentences, min_freq=3).itos[4:] == ["w", "x"]
    assert Vocabulary.build(sentences, min_freq=1, max_size=2).itos[4:] == ["w", "x"]
    assert len(Vocabulary.build(sentences, max_size=2)) == 6  # specials not counted


def test_specials_in_the_data_are_not_added_twice() -> None:
    vocab = Vocabulary.build([["<unk>", "<pad>", "a"]])
    assert vocab.itos == [*SPECIALS, "a"]


def test_encode_wraps_and_maps_unknown_to_unk() -> None:
    vocab = Vocabulary.build([["ein", "hund"]])
    assert vocab.encode(["ein", "katze", "hund"]) == [
        SOS,
        vocab.stoi["ein"],
        UNK,
        vocab.stoi["hund"],
        EOS,
    ]
    assert vocab.encode([]) == [SOS, EOS]


def test_decode_stops_at_eos_and_skips_sos_and_pad() -> None:
    vocab = Vocabulary.build([["a", "b"]])
    a, b = vocab.stoi["a"], vocab.stoi["b"]
    assert vocab.decode([SOS, a, PAD, b, EOS, a, a]) == ["a", "b"]
    assert vocab.decode([a, UNK]) == ["a", "<unk>"]
    assert vocab.decode([EOS, a]) == []


def test_vocabulary_must_start_with_the_specials() -> None:
    with pytest.raises(ValueError):
        Vocabulary(["a", "b"])
    with pytest.raises(ValueError):
        Vocabulary(["<pad>", "<unk>", "<sos>", "<eos>", "a"])


def test_vocabulary_from_itos_is_the_same() -> None:
    vocab = Vocabulary.build([["x", "y", "y"]])
    again = Vocabulary(vocab.itos)
    assert again.itos == vocab.itos and again.stoi == vocab.stoi


words = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Z", "C")), min_size=1).filter(
    lambda w: w not in SPECIALS
)
corpora = st.lists(st.lists(words, max_size=8), min_size=1, max_size=8)


@given(corpus=corpora)
def test_vocab_round_trip(corpus: list[list[str]]) -> None:
    vocab = Vocabulary.build(corpus)
    assert len(set(vocab.itos)) == len(vocab.itos)
    for sentence in corpus:
        ids = vocab.encode(sentence)
        assert ids[0] == SOS and ids[-1] == EOS
        assert all(4 <= i < len(vocab) for i in ids[1:-1])
        assert vocab.decode(ids) == sentence


@given(corpus=corpora, unseen=st.lists(words, max_size=5), min_freq=st.integers(1, 3))
def test_vocab_keeps_exactly_the_frequent_tokens(
    corpus: list[list[str]], unseen: list[str], min_freq: int
) -> None:
    vocab = Vocabulary.build(corpus, min_freq=min_freq)
    counts: dict[str, int] = {}
    for token in (t for sentence in corpus for t in sentence):
        counts[token] = counts.get(token, 0) + 1
    assert set(vocab.itos[4:]) == {t for t, n in counts.items() if n >= min_freq}
    frequencies = [counts[t] for t in vocab.itos[4:]]
    assert frequencies == sorted(frequencies, reverse=True)
    for token in unseen:
        expected = vocab.stoi[token] if token in vocab.stoi else UNK
        assert vocab.encode([token]) == [SOS, expected, EOS]


WORD_TOKENIZERS = [Tokenizer("de"), Tokenizer("en")]


@settings(max_examples=300)
@given(st.text(max_size=60))
def test_no_token_holds_a_line_break(text: str):
    for tokenizer in WORD_TOKENIZERS:
        for token in tokenizer.tokenize([text])[0]:
            assert token and len(token.splitlines()) == 1 and token.strip() == token, repr(token)
