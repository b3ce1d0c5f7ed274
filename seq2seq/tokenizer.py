"""Text <-> tokens: spaCy's rule-based tokenizer and the Moses detokenizer.

Only spaCy's tokenizer runs (no tagger, no parser), over batches with `pipe`.
A trained pipeline package (e.g. de_core_news_sm) is used when installed; otherwise
`spacy.blank(lang)`, which carries the same tokenizer rules. The name actually used
is stored in checkpoints so translation tokenizes exactly like training did.
"""

from __future__ import annotations

from collections.abc import Iterable

import spacy
from sacremoses import MosesDetokenizer

BLANK_PREFIX = "blank:"


class Tokenizer:
    def __init__(self, lang: str, pipeline: str | None = None, lowercase: bool = False):
        self.lang = lang
        self.lowercase = lowercase
        self._nlp, self.name = _load_spacy(lang, pipeline)
        self._detokenizer = MosesDetokenizer(lang=lang)
        # spaCy splits 't-shirt' into 't - shirt' in some languages (en, fr, cs...) and
        # English "isn't" into "is n't"; Moses would leave both apart.
        self._joins_hyphens = len(self._nlp.tokenizer("t-shirt")) == 3
        self._joins_nt = lang == "en"

    def tokenize(self, texts: Iterable[str]) -> list[list[str]]:
        """One token list per text; whitespace tokens are dropped."""
        result = []
        for doc in self._nlp.tokenizer.pipe(texts, batch_size=1000):
            tokens = [token.text for token in doc if not token.is_space]
            result.append([t.lower() for t in tokens] if self.lowercase else tokens)
        return result

    def detokenize(self, tokens: list[str]) -> str:
        """Natural text from tokens; output of a lowercasing model starts with a capital."""
        text = self._detokenizer.detokenize(self._rejoin(tokens))
        if self.lowercase and text:
            text = text[0].upper() + text[1:]
        return text

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


def _load_spacy(lang: str, pipeline: str | None) -> tuple[spacy.language.Language, str]:
    """(nlp, name): the pipeline's tokenizer when installed, else spacy.blank(lang)."""
    if pipeline and not pipeline.startswith(BLANK_PREFIX) and spacy.util.is_package(pipeline):
        return spacy.load(pipeline), pipeline
    return spacy.blank(lang), BLANK_PREFIX + lang
