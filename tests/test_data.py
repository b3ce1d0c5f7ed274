"""Batching: every sentence exactly once, budgets kept, padding with PAD, reproducible."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from seq2seq.data import Batch, IdRows, collate, make_batches
from seq2seq.vocab import PAD

lengths_strategy = st.lists(st.integers(1, 60), max_size=300)
units = st.sampled_from(["sentences", "tokens"])
seeds = st.none() | st.integers(0, 2**31 - 1)


def generator_for(seed: int | None) -> torch.Generator | None:
    return None if seed is None else torch.Generator().manual_seed(seed)


@given(lengths=lengths_strategy, batch_size=st.integers(1, 400), unit=units, seed=seeds)
def test_every_index_exactly_once_and_budget_kept(
    lengths: list[int], batch_size: int, unit: str, seed: int | None
) -> None:
    batches = make_batches(lengths, batch_size, unit, generator_for(seed))
    assert sorted(i for batch in batches for i in batch) == list(range(len(lengths)))
    assert all(batches), "no empty batch"
    for batch in batches:
        if unit == "sentences":
            assert len(batch) <= batch_size
        elif len(batch) > 1:  # a single over-long sentence may exceed the budget, alone
            assert max(lengths[i] for i in batch) * len(batch) <= batch_size


@given(lengths=lengths_strategy, batch_size=st.integers(1, 400), unit=units)
def test_without_generator_the_corpus_is_sorted_by_length(
    lengths: list[int], batch_size: int, unit: str
) -> None:
    batches = make_batches(lengths, batch_size, unit)
    flat = [lengths[i] for batch in batches for i in batch]
    assert flat == sorted(flat)


def test_sentence_batches_are_full_except_the_last() -> None:
    batches = make_batches([5] * 10, 4)
    assert [len(b) for b in batches] == [4, 4, 2]


def test_token_budget_packs_as_many_as_fit() -> None:
    # longest x count <= 20: [2,2,3,3,3,3] fits 6 x 3 = 18, then 10 and 30 alone.
    lengths = [3, 2, 10, 3, 3, 2, 3, 30]
    batches = make_batches(lengths, 20, "tokens")
    assert [[lengths[i] for i in b] for b in batches] == [[2, 2, 3, 3, 3, 3], [10], [30]]


def test_an_over_long_sentence_is_alone() -> None:
    lengths = [1, 50, 1, 1]
    for seed in range(5):
        for batch in make_batches(lengths, 10, "tokens", torch.Generator().manual_seed(seed)):
            if any(lengths[i] == 50 for i in batch):
                assert batch == [1]


def test_same_seed_same_batches_other_seed_other_order() -> None:
    lengths = [(i * 7) % 23 + 1 for i in range(500)]
    first = make_batches(lengths, 16, "sentences", torch.Generator().manual_seed(3))
    again = make_batches(lengths, 16, "sentences", torch.Generator().manual_seed(3))
    other = make_batches(lengths, 16, "sentences", torch.Generator().manual_seed(4))
    assert first == again
    assert first != other
    assert sorted(map(sorted, first)) != first  # shuffled, not in corpus order


def test_bucketing_keeps_padding_small() -> None:
    generator = torch.Generator().manual_seed(0)
    lengths = torch.randint(3, 40, (2000,), generator=generator).tolist()
    batches = make_batches(lengths, 32, "sentences", torch.Generator().manual_seed(1))
    padded = sum(max(lengths[i] for i in b) * len(b) for b in batches)
    # Random batches of 32 would pad to ~(39 x 2000); pools sorted by length stay close to
    # the real total.
    assert padded < 1.1 * sum(lengths)


@pytest.mark.parametrize("unit", ["sentences", "tokens"])
def test_empty_corpus(unit: str) -> None:
    assert make_batches([], 8, unit) == []
    assert make_batches([], 8, unit, torch.Generator().manual_seed(0)) == []


def test_collate_pads_with_pad_and_keeps_lengths() -> None:
    src = [torch.tensor([2, 5, 3]), torch.tensor([2, 6, 7, 8, 3]), torch.tensor([2, 3])]
    trg = [torch.tensor([2, 9, 3]), torch.tensor([2, 3]), torch.tensor([2, 4, 4, 4, 4, 3])]
    batch = collate([1, 2], src, trg)
    assert batch.indices == [1, 2]
    assert batch.src.tolist() == [[2, 6, 7, 8, 3], [2, 3, PAD, PAD, PAD]]
    assert batch.src_lengths.tolist() == [5, 2]
    assert batch.src_lengths.dtype == torch.long
    assert batch.trg is not None
    assert batch.trg.tolist() == [[2, 3, PAD, PAD, PAD, PAD], [2, 4, 4, 4, 4, 3]]
    assert batch.target_tokens == 1 + 5  # everything after <sos> that is not padding


@given(rows=st.lists(st.lists(st.integers(0, 9000), max_size=12), max_size=30))
def test_id_rows_hold_each_row_in_one_tensor(rows: list[list[int]]) -> None:
    stored = IdRows(rows)
    assert len(stored) == len(rows) and stored.lengths() == [len(row) for row in rows]
    assert [row.tolist() for row in stored] == rows
    assert all(row.dtype == torch.long for row in stored)
    if rows:  # one storage for the corpus, no tensor per sentence
        assert len({row.untyped_storage().data_ptr() for row in stored}) == 1
        one = [torch.tensor(row, dtype=torch.long) for row in rows]
        indices = list(range(len(rows)))[::-1]
        padded, expected = collate(indices, stored, stored), collate(indices, one, one)
        assert torch.equal(padded.src, expected.src) and torch.equal(padded.trg, expected.trg)


def test_collate_without_targets() -> None:
    src = [torch.tensor([2, 5, 3]), torch.tensor([2, 3])]
    batch = collate([0, 1], src, None)
    assert batch.trg is None
    assert batch.src.shape == (2, 3)


def test_batch_to_keeps_lengths_on_the_cpu() -> None:
    src = [torch.tensor([2, 5, 3])]
    moved = collate([0], src, src).to(torch.device("cpu"))
    assert isinstance(moved, Batch)
    assert moved.src_lengths.device.type == "cpu"
    assert moved.indices == [0]


def test_a_batch_without_targets_moves_without_them() -> None:
    """Translation batches have no targets."""
    src = torch.tensor([[1, 4, 2]])
    moved = Batch(src, torch.tensor([3]), None, [0]).to(torch.device("cpu"))
    assert moved.trg is None and torch.equal(moved.src, src) and moved.indices == [0]
