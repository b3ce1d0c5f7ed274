"""Length bucketing: sentence indices -> batches of similar length, which keep padding
small. Training shuffles with a torch.Generator; translation sorts the whole input. This
module imports torch only when given a generator (then torch is loaded already), so the
onnxruntime path batches with it too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

POOL_BATCHES = 50
"""Bucketing sorts pools of this many batches by length: little padding, random order."""


def make_batches(
    lengths: list[int],
    batch_size: int,
    unit: str = "sentences",
    generator: torch.Generator | None = None,
) -> list[list[int]]:
    """Group sentence indices into batches of similar length.

    `lengths[i]` is the longer side of pair i. With a generator, the corpus is shuffled,
    sorted by length inside pools of POOL_BATCHES batches, and the batches are shuffled;
    without one, the whole corpus is sorted (for evaluation). `unit="tokens"` makes
    batch_size a budget of padded tokens (longest length x sentences).
    """
    order = list(range(len(lengths)))
    if generator is None:
        pools = [order]
    else:
        order = generator_permutation(len(lengths), generator)
        mean_length = max(1.0, sum(lengths) / max(1, len(lengths)))  # 1.0 for an empty corpus
        per_batch = batch_size if unit == "sentences" else max(1, int(batch_size / mean_length))
        pool_size = POOL_BATCHES * per_batch
        pools = [order[start : start + pool_size] for start in range(0, len(order), pool_size)]
    batches: list[list[int]] = []
    for pool in pools:
        batches.extend(_cut(sorted(pool, key=lambda i: lengths[i]), lengths, batch_size, unit))
    if generator is not None:
        batches = [batches[i] for i in generator_permutation(len(batches), generator)]
    return batches


def _cut(sorted_indices: list[int], lengths: list[int], size: int, unit: str) -> list[list[int]]:
    batches, current, longest = [], [], 0
    for index in sorted_indices:
        longest_with = max(longest, lengths[index])
        cost = len(current) + 1 if unit == "sentences" else longest_with * (len(current) + 1)
        if current and cost > size:
            batches.append(current)
            current, longest_with = [], lengths[index]
        current.append(index)
        longest = longest_with
    if current:
        batches.append(current)
    return batches


def generator_permutation(size: int, generator: torch.Generator) -> list[int]:
    """A random order of range(size), drawn from `generator` (training's RNG stream)."""
    import torch

    return torch.randperm(size, generator=generator).tolist()
