"""Scoring a model on a parallel corpus: perplexity with teacher forcing, then
translation quality (sacreBLEU, chrF, tokenized BLEU) of its decoded output."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from seq2seq.data import collate, make_batches
from seq2seq.loss import sequence_loss
from seq2seq.metrics import Scores, perplexity, score_corpus
from seq2seq.translator import Translation, Translator


@dataclass
class Evaluation:
    loss: float  # mean cross-entropy per target token
    perplexity: float
    scores: Scores
    translations: list[Translation]

    def as_dict(self) -> dict[str, float | str]:
        return {"loss": self.loss, "perplexity": self.perplexity, **self.scores.as_dict()}


def evaluate(translator: Translator, sources: list[str], references: list[str]) -> Evaluation:
    """Translate `sources` and score them against the raw `references` lines."""
    loss = corpus_loss(translator, sources, references)
    translations = translator.translate(sources)
    scores = score_corpus([t.text for t in translations], references, translator.trg_tokenizer)
    return Evaluation(loss, perplexity(loss), scores, translations)


@torch.inference_mode()
def corpus_loss(translator: Translator, sources: list[str], references: list[str]) -> float:
    """Mean cross-entropy per reference token, always feeding the gold previous token."""
    model = translator.model
    src_tokens = translator.src_tokenizer.tokenize(sources)
    trg_tokens = translator.trg_tokenizer.tokenize(references)
    src = [torch.tensor(translator.src_vocab.encode(tokens)) for tokens in src_tokens]
    trg = [torch.tensor(translator.trg_vocab.encode(tokens)) for tokens in trg_tokens]
    was_training = model.training
    model.eval()
    total, tokens = 0.0, 0
    lengths = [max(len(s), len(t)) for s, t in zip(src, trg, strict=True)]
    for indices in make_batches(lengths, translator.decode.batch_size):
        batch = collate(indices, src, trg).to(translator.device)
        logits = model(batch.src, batch.src_lengths, batch.trg[:, :-1], teacher_forcing=1.0)
        total += float(sequence_loss(logits, batch.trg))
        tokens += batch.target_tokens
    model.train(was_training)
    return total / max(tokens, 1)
