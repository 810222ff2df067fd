"""The training data order (training/batching.py): full batches, length buckets, reproducible from (seed, epoch)."""

from __future__ import annotations

import pytest

from softprompt.training.batching import BUCKET_BATCHES, epoch_batches, split_micro


def test_an_epoch_is_full_batches_of_distinct_examples_and_drops_the_short_tail():
    lengths = [i % 17 for i in range(103)]
    batches = epoch_batches(lengths, batch_size=8, seed=0, epoch=0)
    assert len(batches) == 103 // 8 and all(len(b) == 8 for b in batches)
    seen = [i for b in batches for i in b]
    assert len(set(seen)) == len(seen) == 12 * 8 and set(seen) <= set(range(103))


def test_the_order_is_a_function_of_seed_and_epoch_only():
    lengths = list(range(64))
    assert epoch_batches(lengths, 4, seed=3, epoch=2) == epoch_batches(lengths, 4, seed=3, epoch=2)
    assert epoch_batches(lengths, 4, seed=3, epoch=2) != epoch_batches(lengths, 4, seed=3, epoch=3)
    assert epoch_batches(lengths, 4, seed=3, epoch=2) != epoch_batches(lengths, 4, seed=4, epoch=2)


def test_batches_group_similar_lengths_within_a_bucket_window():
    # One window (fewer than BUCKET_BATCHES batches): sorted by length, then cut, so each batch spans a
    # narrow band of lengths, and the batch order is shuffled rather than short-to-long.
    lengths = [(i * 37) % 200 for i in range(200)]  # 0..199, each once, in a scrambled order
    batches = epoch_batches(lengths, batch_size=10, seed=1, epoch=0)
    assert len(batches) == 20 < BUCKET_BATCHES
    spans = [max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches]
    assert max(spans) == 9  # 10 consecutive lengths per batch
    firsts = [min(lengths[i] for i in b) for b in batches]
    assert firsts != sorted(firsts)


def test_long_epochs_are_sorted_per_window_not_globally():
    # Three windows of BUCKET_BATCHES batches, each a random third of the data: lengths within a batch are
    # close (a random pair would differ by ~n/3 on average), yet not the neighbours a global sort would pair.
    batch_size = 2
    n = batch_size * BUCKET_BATCHES * 3
    lengths = list(range(n))
    batches = epoch_batches(lengths, batch_size, seed=0, epoch=0)
    assert len(batches) == n // batch_size
    spans = [max(b) - min(b) for b in batches]  # lengths[i] == i
    assert sum(spans) / len(spans) < n / 30
    assert any(span > 1 for span in spans)


@pytest.mark.parametrize(("parts", "expected"), [
    (1, [[0, 1, 2, 3, 4, 5, 6, 7]]),
    (2, [[0, 1, 2, 3], [4, 5, 6, 7]]),
    (4, [[0, 1], [2, 3], [4, 5], [6, 7]]),
])
def test_split_micro_cuts_equal_contiguous_parts(parts, expected):
    assert split_micro(list(range(8)), parts) == expected


def test_split_micro_nested_for_ranks_then_accumulation_covers_the_batch_once():
    """The loop splits a step's batch across DDP ranks, then each rank's share into grad-accum micro-batches."""
    batch = [5, 3, 9, 1, 7, 2, 8, 6]
    pieces = [m for share in split_micro(batch, 2) for m in split_micro(share, 2)]
    assert pieces == [[5, 3], [9, 1], [7, 2], [8, 6]]
    assert sorted(i for m in pieces for i in m) == sorted(batch)
