"""Decode caches that append in place: each layer's keys/values live in a buffer with room to grow.

transformers' `DynamicCache` appends a decode step's keys/values with `torch.cat`, which copies every layer's
whole cache once per generated token: 15% of a 32-row SmolLM2 decode step (bf16, 2 cores; cache ~350 slots).
`reserve(cache, room)` moves each layer into a buffer [B, heads, L + room, d] once; `update` then writes the
new slots into it and hands attention a view of the filled part, growing the buffer (by `room` again, one
copy) only when it is full. The view holds the same numbers as the concatenation, so decoding is unchanged
(tests/test_scoring.py, test_continuous.py compare tokens with the full-forward reference).

Used where a cache is decoded into token by token: the static decoder (decode.py) and the continuous batch
(continuous.py), after each prefill, admission or compaction (they build plain caches; `reserve` adopts them).
"""

from __future__ import annotations

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
        self.room = room
        self._keys, self._values = _with_room(keys, room), _with_room(values, room)
        self._filled = keys.shape[-2]
        self.keys, self.values = self._keys[:, :, : self._filled], self._values[:, :, : self._filled]
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


def _with_room(states: torch.Tensor, room: int) -> torch.Tensor:
    """[B, heads, n, d] -> a new [B, heads, n + room, d] buffer holding `states` in its first n slots."""
    buffer = states.new_empty(*states.shape[:2], states.shape[2] + room, states.shape[3])
    buffer[:, :, : states.shape[2]] = states
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
