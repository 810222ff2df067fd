"""Batch layouts for running requests of different tasks on top of their cached prompt keys/values.

Each example b of a batch has its own prefix (BOS + its task's prompt, P_b rows, cached per task) and its own
tokens. One forward serves the whole batch:

    cache   [B, heads, P_max, d]   example b's prefix in slots [0, P_b), slots [P_b, P_max) masked out
    tokens  [B, L]                 right-padded (classification) or left-padded (generation)
    position of token t of b:      P_b + t   (continues from b's *own* prefix, not from P_max)

Masked prefix slots change nothing (attention weight exactly 0), and positions are those the uncached path
gives, so scores match `scoring.score_choices` with the same prompts (tested).

Classification packs every label word of an example into its one row, after the input:

    [ input tokens | word 1 tokens[:-1] | word 2 tokens[:-1] | ... ]

with a 4D mask in which a label word's tokens see the prefix, the input and earlier tokens of the *same*
word only. The input runs once for all label words, and the last token of a word is never fed (only the
state before it is needed), so single-token label words cost nothing beyond the input.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import DynamicCache

from softprompt.frozen import FrozenModel
from softprompt.prefix import PrefixState


def padded_prefix_cache(fm: FrozenModel, states: Sequence[PrefixState]) -> tuple[DynamicCache, torch.Tensor]:
    """Stack per-example prefixes into one cache; returns (cache, prefix mask [B, P_max] of 0/1).

    Examples of the same task share a state object: expanded views are used when the whole batch has one
    task (no copy); otherwise each layer is one [B, heads, P_max, d] tensor, zero in masked slots.
    """
    batch = len(states)
    p_max = max(s.length for s in states)
    device = states[0].kv[0][0].device
    lengths = torch.tensor([s.length for s in states], device=device)
    mask = (torch.arange(p_max, device=device)[None] < lengths[:, None]).long()  # [B, P_max]
    cache = DynamicCache(config=fm.model.config)
    same = all(s is states[0] for s in states)
    for i, layer in enumerate(cache.layers):
        if same:
            keys = states[0].kv[i][0].expand(batch, -1, -1, -1)
            values = states[0].kv[i][1].expand(batch, -1, -1, -1)
        else:
            keys = torch.stack([_pad_slots(s.kv[i][0][0], p_max) for s in states])
            values = torch.stack([_pad_slots(s.kv[i][1][0], p_max) for s in states])
        layer.update(keys, values)
    return cache, mask


def _pad_slots(kv: torch.Tensor, p_max: int) -> torch.Tensor:
    """[heads, P, d] -> [heads, P_max, d] with zero slots at the end (they are masked, values irrelevant)."""
    extra = p_max - kv.shape[1]
    return kv if extra == 0 else torch.cat([kv, kv.new_zeros(kv.shape[0], extra, kv.shape[2])], dim=1)


@dataclass
class ClassifyLayout:
    """One classification batch, laid out as in the module docstring.

    Attributes:
        ids: token ids [B, L] (right-padded with the pad id).
        positions: position ids [B, L] (P_b + offset; padding gets P_b).
        segments: [B, L] 0 = input, c+1 = label word c, -1 = padding.
        before: per example, per label word, the row index (into [prefix state | tokens], i.e. +1) of the
            state that predicts each of the word's tokens.
        targets: per example, per label word, its token ids.
    """

    ids: torch.Tensor
    positions: torch.Tensor
    segments: torch.Tensor
    before: list[list[list[int]]]
    targets: list[list[list[int]]]


def classify_layout(
    inputs: Sequence[list[int]], words: Sequence[Sequence[list[int]]], prefix_lengths: Sequence[int], pad_id: int
) -> ClassifyLayout:
    """Lay out inputs (ids without BOS: it is in the prefix) and each example's label-word token ids."""
    seqs, segs, poss, before = [], [], [], []
    for x, targets, p in zip(inputs, words, prefix_lengths, strict=True):
        seq, seg = list(x), [0] * len(x)
        pos = [p + t for t in range(len(x))]
        rows: list[list[int]] = []
        for c, target in enumerate(targets):
            start = len(seq)
            # Token 0 is predicted by the last input state (row len(x) in [prefix state | tokens]; row 0 is
            # the prefix's own last state, used when the input is empty); token j by word token j-1.
            rows.append([len(x)] + [start + j + 1 for j in range(len(target) - 1)])
            seq += target[:-1]
            seg += [c + 1] * (len(target) - 1)
            pos += [p + len(x) + j for j in range(len(target) - 1)]
        seqs.append(seq)
        segs.append(seg)
        poss.append(pos)
        before.append(rows)
    length = max(1, max(len(s) for s in seqs))
    batch = len(seqs)
    ids = torch.full((batch, length), pad_id, dtype=torch.long)
    segments = torch.full((batch, length), -1, dtype=torch.long)
    positions = torch.tensor([[p] * length for p in prefix_lengths], dtype=torch.long)
    for b, (seq, seg, pos) in enumerate(zip(seqs, segs, poss, strict=True)):
        ids[b, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        segments[b, : len(seg)] = torch.tensor(seg, dtype=torch.long)
        positions[b, : len(pos)] = torch.tensor(pos, dtype=torch.long)
    return ClassifyLayout(ids, positions, segments, before, [list(map(list, w)) for w in words])


def segment_mask(prefix_mask: torch.Tensor, segments: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Additive attention mask [B, 1, L, P_max + L] (0 = attend, dtype min = blocked).

    Query q may see: its example's real prefix slots; input tokens k <= q; tokens k <= q of its own label
    word. Every query also sees itself, so no row is fully masked (padding rows would otherwise give NaN).
    Additive rather than boolean so both eager and SDPA attention accept it as-is.
    """
    length = segments.shape[1]
    device = segments.device
    causal = torch.ones(length, length, dtype=torch.bool, device=device).tril()  # [L, L]: k <= q
    seg_q, seg_k = segments[:, :, None], segments[:, None, :]
    same_word = (seg_k == 0) | (seg_k == seg_q)
    allowed = (causal[None] & same_word & (seg_k >= 0)) | torch.eye(length, dtype=torch.bool, device=device)[None]
    prefix = prefix_mask.bool()[:, None, :].expand(-1, length, -1)  # [B, L, P_max]
    full = torch.cat([prefix, allowed], dim=2)[:, None]  # [B, 1, L, P_max + L]
    return torch.zeros(full.shape, dtype=dtype, device=device).masked_fill(~full, torch.finfo(dtype).min)


def generate_layout(
    inputs: Sequence[list[int]], prefix_lengths: Sequence[int], pad_id: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Left-padded ids [B, T], their mask [B, T] and positions [B, T] (P_b + t) for the first decoding step.

    Left padding puts every example's last token in the last column, where the next token is read off.
    """
    length = max(1, max(len(x) for x in inputs))
    ids = torch.full((len(inputs), length), pad_id, dtype=torch.long)
    mask = torch.zeros(len(inputs), length, dtype=torch.long)
    for b, x in enumerate(inputs):
        if x:
            ids[b, length - len(x):] = torch.tensor(x, dtype=torch.long)
            mask[b, length - len(x):] = 1
    offsets = torch.tensor(prefix_lengths, dtype=torch.long)[:, None]
    positions = offsets + (mask.cumsum(dim=1) - 1).clamp(min=0)
    return ids, mask, positions


def split_by_length(lengths: Sequence[int], max_batch: int, overhead: int = 64) -> list[list[int]]:
    """Group request indices into forward passes that waste little on padding.

    A batch costs (its size × its longest row) token slots, plus `overhead` slots per forward (per-op
    dispatch; small matmuls run less efficiently). Mixed-task streams mix 10-token and 256-token inputs, so
    one padded batch can be mostly padding; over the length-sorted requests, a dynamic program picks
    the cut points that minimise the total cost, with at most `max_batch` requests per forward.
    """
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    n = len(order)
    best = [0.0] + [float("inf")] * n  # best[j]: cheapest cost of the first j sorted requests
    cut = [0] * (n + 1)
    for j in range(1, n + 1):
        longest = max(1, lengths[order[j - 1]])
        for i in range(max(0, j - max_batch), j):
            cost = best[i] + (j - i) * longest + overhead
            if cost < best[j]:
                best[j], cut[j] = cost, i
    groups, j = [], n
    while j > 0:
        groups.append(order[cut[j]: j])
        j = cut[j]
    return groups[::-1]
