"""One optimizer step: mixed precision, gradient accumulation (exchanged once under DDP),
clipping, Adam and the learning-rate schedule."""

from __future__ import annotations

import math
from contextlib import nullcontext
from typing import Any

import torch
from torch import nn
from torch.optim import Adam

from seq2seq.config import TrainConfig
from seq2seq.data import Batch
from seq2seq.loss import sequence_loss

AUTOCAST = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def make_optimizer(
    model: nn.Module, learning_rate: float, device: torch.device, fused: bool = True
) -> Adam:
    """Adam; the fused kernel on CPU and CUDA, where it exists: one pass over all
    parameters per step, where the default multi-tensor Adam makes one per operation."""
    fused = fused and device.type in ("cpu", "cuda")
    return Adam(model.parameters(), lr=learning_rate, fused=fused)


def make_scheduler(optimizer: torch.optim.Optimizer, train: TrainConfig) -> Any:
    """The learning-rate schedule; `none` is a constant LambdaLR so every run saves one."""
    if train.scheduler == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer,
            mode="max",  # validation scores are signed so that higher is better
            factor=train.plateau_factor,
            patience=train.plateau_patience,
            min_lr=train.min_learning_rate,
        )
    if train.scheduler == "inverse_sqrt":
        warmup = max(train.warmup_steps, 1)
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: min((step + 1) / warmup, math.sqrt(warmup / (step + 1)))
        )
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)


class Optimization:
    """Owns the optimizer, the schedule and the gradient scaler of a training."""

    def __init__(
        self,
        model: nn.Module,
        trainable: nn.Module,
        train: TrainConfig,
        device: torch.device,
        fused: bool = True,
    ):
        """`trainable` computes the logits: the model, its DDP wrapper, or (the benchmark)
        another computation on its parameters."""
        self.model, self.trainable, self.train, self.device = model, trainable, train, device
        self.optimizer = make_optimizer(model, train.learning_rate, device, fused)
        self.scheduler = make_scheduler(self.optimizer, train)
        self.autocast_dtype = AUTOCAST[train.precision]
        self.scaler = torch.amp.GradScaler(device.type, enabled=train.precision == "fp16")

    @property
    def learning_rate(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def step(self, batches: list[Batch], per_rank: float, distributed: bool) -> tuple[float, bool]:
        """Accumulate the gradients of `batches`, each loss divided by `per_rank` (target
        tokens of the global batch / ranks), then clip and step -> (summed loss, whether
        the gradients were finite). Non-finite gradients skip the update: one bad batch
        must not turn every weight into NaN."""
        total = 0.0
        self.optimizer.zero_grad(set_to_none=True)
        for index, batch in enumerate(batches):
            last = index == len(batches) - 1
            # Gradients are exchanged once per step, after the last micro-batch.
            exchange = nullcontext() if last or not distributed else self.trainable.no_sync()
            autocast = torch.autocast(
                self.device.type,
                dtype=self.autocast_dtype,
                enabled=self.autocast_dtype is not None,
            )
            with exchange:
                with autocast:
                    logits = self.trainable(
                        batch.src, batch.src_lengths, batch.trg[:, :-1], self.train.teacher_forcing
                    )
                    loss = sequence_loss(logits, batch.trg, self.train.label_smoothing)
                # Backward needs the log-softmax the loss saved, not the logits [B,T,V]
                # themselves: freed now, they are not held beside their gradients.
                del logits
                self.scaler.scale(loss / per_rank).backward()
            total += loss.item()
        self.scaler.unscale_(self.optimizer)
        # The norm of the gradients all ranks share (after DDP's exchange): every rank
        # takes the same decision. An infinite clip_norm measures without clipping.
        norm = torch.nn.utils.clip_grad_norm_(
            self.model.parameters(), self.train.clip_norm or math.inf
        )
        finite = bool(torch.isfinite(norm))
        if finite or self.scaler.is_enabled():  # the fp16 scaler skips the update itself
            self.scaler.step(self.optimizer)
        self.scaler.update()
        if finite and self.train.scheduler == "inverse_sqrt":
            self.scheduler.step()
        return total, finite

    def change_learning_rate(self, old: float, new: float) -> None:
        """A resumed run's new train.learning_rate: a warmup or decay keeps its shape,
        scaled by new / old; under the plateau schedule the rate starts again at `new`."""
        plateau = self.train.scheduler == "plateau"
        for group in self.optimizer.param_groups:
            group["lr"] = new if plateau else group["lr"] * new / old
            group["initial_lr"] = new
        if not plateau:
            self.scheduler.base_lrs = [new] * len(self.optimizer.param_groups)

    def after_validation(self, signed_score: float) -> None:
        """The plateau schedule steps on validation scores (signed: higher is better)."""
        if self.train.scheduler == "plateau":
            self.scheduler.step(signed_score)

    def zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def state_dict(self) -> dict[str, Any]:
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])
