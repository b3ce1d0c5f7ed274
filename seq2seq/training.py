"""The training loop: teacher-forced cross-entropy, Adam, gradient clipping,
validation every epoch, `best.pt` and `last.pt` in the run folder."""

from __future__ import annotations

import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from seq2seq.checkpoint import save_checkpoint
from seq2seq.config import Config, save_config
from seq2seq.corpus import read_parallel, split_path
from seq2seq.data import collate, make_batches
from seq2seq.errors import UserError
from seq2seq.evaluation import Evaluation, evaluate
from seq2seq.loss import sequence_loss
from seq2seq.model import Seq2Seq
from seq2seq.tokenizer import Tokenizer
from seq2seq.translator import Translator, make_tokenizers, resolve_device
from seq2seq.vocab import Vocabulary

CHECKPOINT_NAMES = ("best.pt", "last.pt")


@dataclass
class TokenizedSplit:
    src_lines: list[str]
    trg_lines: list[str]
    src_tokens: list[list[str]]
    trg_tokens: list[list[str]]


def load_split(
    config: Config, split: str, src_tokenizer: Tokenizer, trg_tokenizer: Tokenizer
) -> TokenizedSplit:
    data = config.data
    src_lines, trg_lines = read_parallel(
        split_path(data.dir, split, data.src_lang), split_path(data.dir, split, data.trg_lang)
    )
    return TokenizedSplit(
        src_lines, trg_lines, src_tokenizer.tokenize(src_lines), trg_tokenizer.tokenize(trg_lines)
    )


def log(message: str) -> None:
    tqdm.write(message, file=sys.stderr)


def train(config: Config, overwrite: bool = False) -> Path:
    """Train a model as the config says; returns the run folder."""
    run_dir = Path(config.train.run_dir)
    existing = [name for name in CHECKPOINT_NAMES if (run_dir / name).exists()]
    if existing and not overwrite:
        raise UserError(
            f"{run_dir} already holds a run ({', '.join(existing)}); "
            "pass --overwrite to replace it or choose another train.run_dir"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(config, run_dir / "config.yaml")

    random.seed(config.seed)
    torch.manual_seed(config.seed)
    if config.train.threads:
        torch.set_num_threads(config.train.threads)
    device = resolve_device(config.train.device)

    src_tokenizer, trg_tokenizer = make_tokenizers(config)
    train_split = load_split(config, config.data.train, src_tokenizer, trg_tokenizer)
    valid_split = load_split(config, config.data.valid, src_tokenizer, trg_tokenizer)
    pairs = [
        (s, t)
        for s, t in zip(train_split.src_tokens, train_split.trg_tokens, strict=True)
        if s and t and len(s) <= config.data.max_length and len(t) <= config.data.max_length
    ]
    skipped = len(train_split.src_tokens) - len(pairs)
    if not pairs:
        raise UserError(f"{config.data.dir}: no usable training pairs in split '{config.data.train}'")
    src_vocab = Vocabulary.build((s for s, _ in pairs), config.vocab.min_freq, config.vocab.max_size)
    trg_vocab = Vocabulary.build((t for _, t in pairs), config.vocab.min_freq, config.vocab.max_size)
    log(
        f"training pairs: {len(pairs)} ({skipped} skipped: empty or longer than "
        f"{config.data.max_length} tokens); vocabulary: {len(src_vocab)} {config.data.src_lang}, "
        f"{len(trg_vocab)} {config.data.trg_lang}; device: {device}"
    )
    src_ids = [torch.tensor(src_vocab.encode(s)) for s, _ in pairs]
    trg_ids = [torch.tensor(trg_vocab.encode(t)) for _, t in pairs]
    lengths = [max(len(s), len(t)) for s, t in zip(src_ids, trg_ids, strict=True)]

    model = Seq2Seq(config.model, len(src_vocab), len(trg_vocab)).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.train.learning_rate)
    translator = Translator(
        model, src_vocab, trg_vocab, src_tokenizer, trg_tokenizer, config.decode, device
    )
    parameters = sum(p.numel() for p in model.parameters())
    log(f"model: {parameters:,} parameters")

    def checkpoint(evaluation: Evaluation | None, epoch: int) -> dict:
        return {
            "config": config.model_dump(),
            "vocab": {"src": src_vocab.itos, "trg": trg_vocab.itos},
            "tokenizer": {"src": src_tokenizer.name, "trg": trg_tokenizer.name},
            "model": model.state_dict(),
            "training": {
                "epoch": epoch,
                "validation": evaluation.as_dict() if evaluation else None,
            },
        }

    best: float | None = None
    sign = -1.0 if config.train.best_metric == "loss" else 1.0
    for epoch in range(1, config.train.epochs + 1):
        model.train()
        generator = torch.Generator().manual_seed(config.seed + epoch)
        batches = make_batches(lengths, config.train.batch_size, config.train.batch_unit, generator)
        started = time.perf_counter()
        loss_sum, token_count = 0.0, 0
        bar = tqdm(
            batches,
            desc=f"epoch {epoch}",
            unit="batch",
            file=sys.stderr,
            dynamic_ncols=True,
            mininterval=0.1 if sys.stderr.isatty() else 30.0,  # keep logs short
        )
        for indices in bar:
            batch = collate(indices, src_ids, trg_ids).to(device)
            logits = model(batch.src, batch.src_lengths, batch.trg[:, :-1], config.train.teacher_forcing)
            tokens = batch.target_tokens
            loss = sequence_loss(logits, batch.trg, config.train.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            (loss / tokens).backward()
            if config.train.clip_norm:
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.train.clip_norm)
            optimizer.step()
            loss_sum += loss.item()
            token_count += tokens
            mean_loss = loss_sum / token_count
            bar.set_postfix(
                loss=f"{mean_loss:.3f}",
                ppl=f"{torch.tensor(mean_loss).exp():.1f}",
                tok_s=f"{token_count / (time.perf_counter() - started):.0f}",
                refresh=False,
            )
        bar.close()
        seconds = time.perf_counter() - started
        evaluation = evaluate(translator, valid_split.src_lines, valid_split.trg_lines)
        log(
            f"epoch {epoch}: train loss {loss_sum / token_count:.3f} | valid loss "
            f"{evaluation.loss:.3f} ppl {evaluation.perplexity:.2f} BLEU {evaluation.scores.bleu:.2f} "
            f"chrF {evaluation.scores.chrf:.2f} tokenized BLEU {evaluation.scores.tokenized_bleu:.2f} "
            f"| {seconds:.0f} s, {token_count / seconds:.0f} target tokens/s"
        )
        payload = checkpoint(evaluation, epoch)
        save_checkpoint(payload, run_dir / "last.pt")
        score = sign * float(evaluation.as_dict()[config.train.best_metric])
        if best is None or score > best:
            best = score
            save_checkpoint(payload, run_dir / "best.pt")
            log(f"new best {config.train.best_metric}: saved {run_dir / 'best.pt'}")
    return run_dir
