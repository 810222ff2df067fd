"""Decode caches that append in place: each layer's keys/values live in a buffer with room to grow.

transformers' `DynamicCache` appends a decode step's keys/values with `torch.cat`, which copies every layer's
whole cache once per generated token: 15% of a 32-row SmolLM2 decode step (bf16, 2 cores; cache ~350 slots).
`reserve(cache, room)` moves each layer into a buffer [B, heads, L + room, d] once; `update` then writes the
new slots into it and hands attention a view of the filled part, growing the buffer (by `room` again, one
copy) only when it is full. The view holds the same numbers as the concatenation, so decoding is unchanged
(tests/test_scoring.py, test_continuous.py compare tokens with the full-forward reference).

Used where a cache is decoded into token by token: the static decoder (decode.py) and the continuous batch
(continuous.py), after each prefill (it builds plain caches; `reserve` adopts them); the continuous batch's
admission writes the joined rows straight into one buffer (`stacked`), its compaction the kept rows' used slots
(`compact`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

DECODE_ROOM = 64
"""Slots a buffer grows by: one copy of the cache per 64 generated tokens instead of one per token."""


class AppendLayer(DynamicLayer):
    """A `DynamicLayer` whose `keys`/`values` ([B, heads, n, d]) are views of larger buffers."""

    def adopt(self, keys: torch.Tensor, values: torch.Tensor, room: int) -> None:
        """Hold `keys`/`values` [B, heads, n, d] with `room` free slots after them (one copy)."""
        n = keys.shape[-2]
        self.hold(stacked([keys], n, room), stacked([values], n, room), n)

    def hold(self, keys: torch.Tensor, values: torch.Tensor, filled: int) -> None:
        """Take buffers [B, heads, filled + room, d] whose first `filled` slots are the cache (no copy)."""
        self.room = keys.shape[-2] - filled
        self._keys, self._values, self._filled = keys, values, filled
        self.keys, self.values = keys[:, :, :filled], values[:, :, :filled]
        self.device, self.is_initialized = keys.device, True

    def in_step(self) -> bool:
        """Whether `keys`/`values` are still the views `update` handed out (nobody assigned new tensors)."""
        return (self.keys is not None and self.keys.shape[-2] == self._filled
                and self.keys.data_ptr() == self._keys.data_ptr() and self.values.data_ptr() == self._values.data_ptr())

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any,
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Write [B, heads, t, d] new slots after the filled ones; returns views of all filled slots."""
        end = self._filled + key_states.shape[-2]
        if end > self._keys.shape[-2]:  # full: one copy into a buffer with `room` more slots
            self.adopt(self.keys, self.values, max(self.room, key_states.shape[-2]))
        self._keys[:, :, self._filled: end] = key_states
        self._values[:, :, self._filled: end] = value_states
        self._filled = end
        self.keys, self.values = self._keys[:, :, :end], self._values[:, :, :end]
        return self.keys, self.values


def stacked(parts: Sequence[torch.Tensor], width: int, room: int) -> torch.Tensor:
    """The rows of `parts` ([B_i, heads, n_i, d], n_i <= width) one after another in a new buffer
    [sum B_i, heads, width + room, d], each right-aligned in slots [0, width) behind zeros (left padding,
    masked: zero, not garbage, so a masked weight of 0 times it stays 0). One copy of every part."""
    first = parts[0]
    buffer = first.new_empty(sum(p.shape[0] for p in parts), first.shape[1], width + room, first.shape[3])
    row = 0
    for part in parts:
        rows, n = part.shape[0], part.shape[2]
        buffer[row: row + rows, :, : width - n].zero_()
        buffer[row: row + rows, :, width - n: width] = part
        row += rows
    return buffer


def reserve(cache: DynamicCache, room: int = DECODE_ROOM) -> DynamicCache:
    """Turn every full-attention layer of `cache` into an `AppendLayer` with `room` free slots (in place;
    returns `cache`). An `AppendLayer` whose keys/values were replaced from outside (a compaction assigns
    `layer.keys`) adopts the new ones; one still in step with its buffer is left alone, as are layers of
    other kinds (sliding windows)."""
    for i, layer in enumerate(cache.layers):
        if isinstance(layer, AppendLayer) and layer.in_step():
            continue
        if type(layer) in (DynamicLayer, AppendLayer) and layer.is_initialized:
            appended = AppendLayer()
            appended.adopt(layer.keys, layer.values, room)
            cache.layers[i] = appended
    return cache


def gathered(tensor: torch.Tensor, rows: torch.Tensor, slots: torch.Tensor, room: int) -> torch.Tensor:
    """`tensor` [B, heads, L, d] at rows `rows` [B'] and, row by row, slots `slots` [B', W], in a new buffer
    [B', heads, W + room, d]: out[b, h, w] = tensor[rows[b], h, slots[b, w]] for w < W.

    One indexing pass writes the whole buffer: the `room` slots are filled with copies of slot `slots[b, 0]`
    (never read: an AppendLayer exposes only its filled slots, and `update` overwrites them before it
    does). `index_select` + `gather` + a copy into room cost three passes, and bf16 `gather` is slow on CPU:
    5x slower together on a 32-row SmolLM2 cache (2 cores).
    """
    padded = torch.cat([slots, slots[:, :1].expand(-1, room)], dim=1)  # [B', W + room]
    heads = torch.arange(tensor.shape[1], device=tensor.device)
    return tensor[rows[:, None, None], heads[None, :, None], padded[:, None, :]]


def compact(cache: DynamicCache, rows: torch.Tensor, slots: torch.Tensor, room: int = DECODE_ROOM) -> None:
    """Keep rows `rows` [B'] of every layer and, per row, slots `slots` [B', W] in that order (in place): each
    layer becomes an `AppendLayer` over a fresh buffer with `room` free slots, written in one pass."""
    width = slots.shape[1]
    for i, layer in enumerate(cache.layers):
        fresh = AppendLayer()
        fresh.hold(gathered(layer.keys, rows, slots, room), gathered(layer.values, rows, slots, room), width)
        cache.layers[i] = fresh
