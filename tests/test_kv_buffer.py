"""Decode caches that append in place (scoring/kv_buffer.py) hold exactly what concatenation would, grow when
full, re-adopt tensors a compaction assigned, compact rows and slots in one pass, and never write into the tensors they adopted (a shared prefix)."""

from __future__ import annotations

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from softprompt.scoring.kv_buffer import AppendLayer, compact, reserve, stacked


def plain_layer(keys: torch.Tensor, values: torch.Tensor) -> DynamicLayer:
    layer = DynamicLayer()
    layer.update(keys, values)
    return layer


def test_appends_equal_concatenation_through_growth_and_leave_the_adopted_tensors_alone():
    torch.manual_seed(0)
    keys, values = torch.randn(2, 3, 5, 4), torch.randn(2, 3, 5, 4)
    kept_keys, kept_values = keys.clone(), values.clone()
    cache = DynamicCache()
    cache.layers = [plain_layer(keys, values)]
    reserve(cache, room=3)
    layer = cache.layers[0]
    assert isinstance(layer, AppendLayer)
    want_k, want_v = keys, values
    for step in range(8):  # 8 new slots through a room of 3: grows twice
        new_k, new_v = torch.randn(2, 3, 1 + step % 2, 4), torch.randn(2, 3, 1 + step % 2, 4)
        got_k, got_v = layer.update(new_k, new_v)
        want_k, want_v = torch.cat([want_k, new_k], dim=2), torch.cat([want_v, new_v], dim=2)
        assert torch.equal(got_k, want_k) and torch.equal(got_v, want_v)
        assert layer.get_seq_length() == want_k.shape[2]
    assert torch.equal(keys, kept_keys) and torch.equal(values, kept_values)


def test_reserve_readopts_a_layer_whose_tensors_were_replaced_and_skips_one_in_step():
    cache = DynamicCache()
    cache.layers = [plain_layer(torch.randn(1, 2, 4, 3), torch.randn(1, 2, 4, 3))]
    layer = reserve(cache).layers[0]
    assert reserve(cache).layers[0] is layer and layer.in_step()  # nothing to do
    layer.keys, layer.values = layer.keys[:, :, 1:].clone(), layer.values[:, :, 1:].clone()  # a compaction
    assert not layer.in_step()
    fresh = reserve(cache).layers[0]
    assert fresh is not layer and fresh.get_seq_length() == 3
    new = torch.randn(1, 2, 1, 3)
    got_k, _ = fresh.update(new, new)
    assert torch.equal(got_k, torch.cat([layer.keys, new], dim=2))


def test_stacked_right_aligns_each_part_behind_zeros_and_leaves_room():
    a, b = torch.randn(2, 3, 4, 5), torch.randn(1, 3, 6, 5)
    buffer = stacked([a, b], 6, room=2)
    assert buffer.shape == (3, 3, 8, 5)
    assert torch.equal(buffer[:2, :, 2:6], a) and torch.equal(buffer[:2, :, :2], torch.zeros(2, 3, 2, 5))
    assert torch.equal(buffer[2:, :, :6], b)
    layer = AppendLayer()
    layer.hold(buffer, buffer.clone(), 6)
    assert layer.in_step() and layer.get_seq_length() == 6 and layer.room == 2


def test_compact_keeps_rows_and_slots_in_order_with_room_to_append():
    torch.manual_seed(1)
    cache = DynamicCache()
    cache.layers = [plain_layer(torch.randn(4, 3, 6, 5), torch.randn(4, 3, 6, 5)) for _ in range(2)]
    reserve(cache, room=2)
    before = [(layer.keys.clone(), layer.values.clone()) for layer in cache.layers]
    rows = torch.tensor([3, 0, 2])
    slots = torch.tensor([[1, 2, 5, 0], [0, 1, 2, 3], [5, 4, 3, 2]])  # any slots, any order, per row
    compact(cache, rows, slots, room=3)
    index = slots[:, None, :, None].expand(-1, 3, -1, 5)
    for layer, (keys, values) in zip(cache.layers, before, strict=True):
        assert isinstance(layer, AppendLayer) and layer.in_step() and layer.room == 3
        assert torch.equal(layer.keys, keys.index_select(0, rows).gather(2, index))
        assert torch.equal(layer.values, values.index_select(0, rows).gather(2, index))
        new = torch.randn(3, 3, 3, 5)  # fills the room exactly: no growth, the kept slots unchanged
        got_k, got_v = layer.update(new, new)
        assert torch.equal(got_k, torch.cat([keys.index_select(0, rows).gather(2, index), new], dim=2))
        assert got_k.data_ptr() == layer._keys.data_ptr()
