"""The padded cross-entropy: PyTorch's loss and gradient, in one [N,V] buffer."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from seq2seq.loss import sequence_loss
from seq2seq.vocab import PAD


def logits_and_targets(dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    logits = (torch.randn(3, 6, 11) * 3).to(dtype).requires_grad_()
    trg = torch.randint(4, 11, (3, 7))
    trg[1, 4:] = trg[2, 2:] = PAD  # padded rows: no loss, no gradient
    return logits, trg


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_loss_and_gradient_are_pytorchs(dtype: torch.dtype, smoothing: float) -> None:
    logits, trg = logits_and_targets(dtype)
    ours = sequence_loss(logits, trg, smoothing)
    ours.backward(torch.tensor(0.7))
    gradient, logits.grad = logits.grad, None
    theirs = F.cross_entropy(
        logits.reshape(-1, 11).float(), trg[:, 1:].reshape(-1), ignore_index=PAD,
        reduction="sum", label_smoothing=smoothing,
    )  # fmt: skip
    theirs.backward(torch.tensor(0.7))
    torch.testing.assert_close(ours, theirs)
    assert gradient.dtype == dtype
    torch.testing.assert_close(gradient, logits.grad, rtol=1e-6, atol=1e-6)
    assert not gradient[2, 1:].any()  # the padded positions of row 2


def test_no_label_smoothing_by_default() -> None:
    logits, trg = logits_and_targets(torch.float32)
    theirs = F.cross_entropy(logits.reshape(-1, 11), trg[:, 1:].reshape(-1), ignore_index=PAD,
                             reduction="sum")  # fmt: skip
    torch.testing.assert_close(sequence_loss(logits, trg), theirs)


def test_the_gradient_is_made_in_the_saved_log_softmax() -> None:
    """Backward allocates no [N,V] tensor of its own: the logits' gradient lives in the
    memory the forward saved."""
    logits, trg = logits_and_targets(torch.float32)
    saved: list[int] = []

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        if tensor.dim() == 2:
            saved.append(tensor.data_ptr())
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss = sequence_loss(logits, trg)
    gradients: list[int] = []
    logits.register_hook(lambda grad: gradients.append(grad.data_ptr()))
    loss.backward()
    assert gradients and gradients[0] in saved
