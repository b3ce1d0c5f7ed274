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
    loss: float  # mean cross-entropy per target token, gold previous tokens fed
    free_running_loss: float  # the same with the model's own greedy predictions fed
    scores: Scores
    translations: list[Translation]

    @property
    def perplexity(self) -> float:
        return perplexity(self.loss)

    @property
    def free_running_perplexity(self) -> float:
        """What the tutorial reports as perplexity (it evaluates with teacher forcing 0)."""
        return perplexity(self.free_running_loss)

    def as_dict(self) -> dict[str, float | str]:
        return {
            "loss": self.loss,
            "perplexity": self.perplexity,
            "free_running_loss": self.free_running_loss,
            "free_running_perplexity": self.free_running_perplexity,
            **self.scores.as_dict(),
        }


def evaluate(translator: Translator, sources: list[str], references: list[str]) -> Evaluation:
    """Translate `sources` and score them against the raw `references` lines."""
    loss, free_running_loss = corpus_losses(translator, sources, references)
    translations = translator.translate(sources)
    scores = score_corpus(
        [t.text for t in translations], references, translator.trg_tokenizer.words
    )
    return Evaluation(loss, free_running_loss, scores, translations)


@torch.inference_mode()
def corpus_losses(
    translator: Translator, sources: list[str], references: list[str]
) -> tuple[float, float]:
    """Mean cross-entropy per reference token (teacher forcing 1, gold previous tokens fed)
    and free-running (teacher forcing 0, the model's own previous predictions fed)."""
    model = translator.model
    src_tokens = translator.src_tokenizer.tokenize(sources)
    trg_tokens = translator.trg_tokenizer.tokenize(references)
    src = [torch.tensor(translator.src_vocab.encode(tokens)) for tokens in src_tokens]
    trg = [torch.tensor(translator.trg_vocab.encode(tokens)) for tokens in trg_tokens]
    was_training = model.training
    model.eval()
    forced, free, tokens = 0.0, 0.0, 0
    lengths = [max(len(s), len(t)) for s, t in zip(src, trg, strict=True)]
    for indices in make_batches(lengths, translator.decode.batch_size):
        batch = collate(indices, src, trg).to(translator.device)
        trg_in = batch.trg[:, :-1]
        forced += float(sequence_loss(model(batch.src, batch.src_lengths, trg_in, 1.0), batch.trg))
        free += float(sequence_loss(model(batch.src, batch.src_lengths, trg_in, 0.0), batch.trg))
        tokens += batch.target_tokens
    model.train(was_training)
    return forced / max(tokens, 1), free / max(tokens, 1)
