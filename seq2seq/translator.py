"""The Python API: load a checkpoint (or several, as an ensemble) once, translate lists
of strings.

    from seq2seq.translator import Translator
    translator = Translator.from_checkpoint("runs/multi30k_de_en/best.pt")
    for result in translator.translate(["Zwei Männer stehen am Strand."]):
        print(result.text, result.score)
    beam = translator.decode.updated(beam_size=5, nbest=3)  # validated, per call
    for candidates in translator.translate_nbest(["Ein Hund rennt."], beam): ...
    ensemble = Translator.from_checkpoint(["a.pt", "b.pt"])

`train` (validation) decodes through this class, and so do `translate`, `evaluate` and
`serve` on the torch runtime (translation.py has what it shares with the onnxruntime one).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch

from seq2seq.checkpoint import Bundle, load_bundle
from seq2seq.config import DecodeConfig
from seq2seq.data import Batch, collate, make_batches
from seq2seq.ensemble import Ensemble
from seq2seq.errors import UserError, is_out_of_memory
from seq2seq.inference import prepared
from seq2seq.loss import sequence_loss
from seq2seq.model import Seq2Seq, evaluating
from seq2seq.search import (
    Hypothesis,
    Searchable,
    beam_search,
    greedy_search,
    max_output_lengths,
)
from seq2seq.text import TextSide

# Where they were defined before the onnxruntime path shared them: importable from here too.
from seq2seq.translation import Search, TextTranslator
from seq2seq.translation import Translation as Translation
from seq2seq.translation import replace_unknown as replace_unknown


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("device 'cuda' was asked for but torch sees no CUDA GPU")
    if name == "mps" and not torch.backends.mps.is_available():
        raise UserError("device 'mps' was asked for but torch sees no Apple GPU")
    return torch.device(name)


class Translator(TextTranslator):
    """One model, or an ensemble of models that read and write the same text, on torch."""

    runtime = "torch"

    def __init__(
        self,
        models: Seq2Seq | list[Seq2Seq],
        src: TextSide,
        trg: TextSide,
        decode: DecodeConfig,
        device: torch.device,
        frozen: bool = False,
    ):
        self.models = [models] if isinstance(models, Seq2Seq) else list(models)
        self.src, self.trg = src, trg
        self.decode = decode  # the defaults; each call may pass its own
        self.device = device
        self.frozen = frozen  # the weights never change: prepared copies can be kept
        self._prepared: dict[str, list[Seq2Seq]] = {}  # precision -> models to decode with

    @classmethod
    def from_checkpoint(
        cls, paths: str | Path | Sequence[str | Path], device: str = "auto"
    ) -> Translator:
        """Load one checkpoint, or several as an ensemble (decode defaults: the first's)."""
        paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
        if not paths:
            raise UserError("no checkpoint given")
        torch_device = resolve_device(device)
        bundles = [load_bundle(path, torch_device) for path in paths]
        for path, bundle in zip(paths[1:], bundles[1:], strict=True):
            check_same_text(paths[0], bundles[0], path, bundle)
        first = bundles[0]
        models = [bundle.model for bundle in bundles]
        return cls(models, first.src, first.trg, first.config.decode, torch_device, frozen=True)

    def searchable(self, decode: DecodeConfig | None = None) -> Searchable:
        """The model, or the ensemble of the models combined as `decode.combine` says,
        prepared for `decode.precision` (inference.py)."""
        decode = decode or self.decode
        models = self._decoding_models(decode.precision)
        return models[0] if len(models) == 1 else Ensemble(models, decode.combine)

    def _decoding_models(self, precision: str) -> list[Seq2Seq]:
        if self.device.type != "cpu":
            if precision == "int8":
                raise UserError(
                    f"decode.precision int8 runs on the CPU only (the model is on "
                    f"{self.device.type}); use bf16 there"
                )
            return self.models
        if not self.frozen:  # training's live model: a kept copy would be stale next call
            if precision != "int8":
                return self.models
            return [prepared(m, precision) for m in self.models]
        if precision not in self._prepared:
            self._prepared[precision] = [prepared(m, precision) for m in self.models]
        return self._prepared[precision]

    @contextmanager
    def searching(self, decode: DecodeConfig) -> Iterator[Search]:
        model = self.searchable(decode)

        def search(rows: list[list[int]]) -> list[list[Hypothesis]]:
            ids = [torch.tensor(row, dtype=torch.long) for row in rows]
            return self._search(model, collate(list(range(len(ids))), ids, None), decode)

        with evaluating(model):
            yield search

    def no_attention(self) -> torch.Tensor:
        return torch.zeros(1, 2)

    def members(self) -> list[dict[str, object]]:
        return [
            {
                "parameters": sum(p.numel() for p in model.parameters()),
                "model": model.config.model_dump(),
            }
            for model in self.models
        ]

    @torch.inference_mode()
    def corpus_losses(
        self, sources: list[str], references: list[str], decode: DecodeConfig
    ) -> tuple[float, float]:
        """evaluation.corpus_losses with torch: teacher forcing 1, then 0, in batches."""
        model = self.searchable(decode)
        src, trg = self.src.encode(sources), self.trg.encode(references)
        forced_loss: list[float] = []  # summed loss of each batch
        free_loss: list[float] = []
        tokens = 0
        lengths = [max(len(s), len(t)) for s, t in zip(src, trg, strict=True)]
        with evaluating(model):
            for indices in make_batches(lengths, decode.batch_size):
                batch = collate(indices, src, trg).to(self.device)
                trg_in = batch.trg[:, :-1]
                for teacher_forcing, total in ((1.0, forced_loss), (0.0, free_loss)):
                    log_probs = model.sequence_log_probs(
                        batch.src, batch.src_lengths, trg_in, teacher_forcing
                    )
                    total.append(float(sequence_loss(log_probs, batch.trg)))
                tokens += batch.target_tokens
        return sum(forced_loss) / max(tokens, 1), sum(free_loss) / max(tokens, 1)

    def _search(
        self, model: Searchable, batch: Batch, decode: DecodeConfig
    ) -> list[list[Hypothesis]]:
        """Greedy for beam size 1, else beam search: the `nbest` best per sentence."""
        batch = batch.to(self.device)
        limits = max_output_lengths(
            batch.src_lengths, decode.max_length_ratio, decode.max_length_offset
        )
        bf16 = decode.precision == "bf16"
        try:
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=bf16):
                if decode.beam_size == 1:
                    return [[h] for h in greedy_search(model, batch.src, batch.src_lengths, limits)]
                return beam_search(
                    model,
                    batch.src,
                    batch.src_lengths,
                    limits,
                    decode.beam_size,
                    decode.alpha,
                    decode.nbest,
                )
        except (RuntimeError, MemoryError) as error:
            if not is_out_of_memory(error):
                raise
            raise UserError(
                f"out of memory translating {batch.src.size(0)} sentences at once; "
                f"lower the batch size (now {decode.batch_size}, --batch-size)"
            ) from None


def check_same_text(
    first_path: str | Path, first: Bundle, path: str | Path, bundle: Bundle
) -> None:
    """Ensemble members must read and write the same text: one line naming what differs."""
    for side, name in (("src", "source"), ("trg", "target")):
        difference = getattr(first, side).difference(getattr(bundle, side))
        if difference:
            raise UserError(
                f"{path} and {first_path} cannot decode together: their {name} {difference} differ"
            )
