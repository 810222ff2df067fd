"""The training data order: seeded, length-bucketed, and reproducible from (seed, epoch) alone.

Because an epoch's batches are a pure function of (seed, epoch), a resumed run needs only the epoch and
the batch index to continue exactly where it stopped — no sampler state to save.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

BUCKET_BATCHES = 50  # sort within windows of 50 batches: little padding, still well shuffled


def epoch_batches(lengths: Sequence[int], batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """Batches of example indices for one epoch.

    Shuffle all examples, sort each window of `BUCKET_BATCHES` batches by length (similar lengths share a
    batch, so dynamic padding wastes little), cut into batches, then shuffle the batch order. The last,
    short batch is dropped so every step sees `batch_size` examples.
    """
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    order = torch.randperm(len(lengths), generator=generator).tolist()
    window = batch_size * BUCKET_BATCHES
    batches: list[list[int]] = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start: start + window], key=lambda i: lengths[i])
        batches += [chunk[i: i + batch_size] for i in range(0, len(chunk) - batch_size + 1, batch_size)]
    shuffle = torch.randperm(len(batches), generator=generator).tolist()
    return [batches[i] for i in shuffle]


def split_micro(batch: list[int], parts: int) -> list[list[int]]:
    """Cut a step's batch into `parts` equal micro-batches (gradient accumulation / DDP ranks)."""
    size = len(batch) // parts
    return [batch[i * size: (i + 1) * size] for i in range(parts)]
