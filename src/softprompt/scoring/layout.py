"""Batch layouts for running inputs on top of cached prefix keys/values (the serving engine's per-task
prompts; `softprompt eval`'s shared prompt or few-shot text, via packed_scoring.py).

Each example b of a batch has its own prefix (BOS + its task's prompt, P_b rows, cached per task) and its own
tokens. One forward serves the whole batch:

    cache   [B, heads, P_max, d]   example b's prefix in slots [0, P_b), slots [P_b, P_max) masked out
    tokens  [B, L]                 right-padded (classification) or left-padded (generation)
    position of token t of b:      P_b + t   (continues from b's *own* prefix, not from P_max)

Masked prefix slots change nothing (attention weight exactly 0), and positions are those the uncached path
gives, so scores match `scoring.score_choices` with the same prompts (tested).

Classification packs every label word of a request after its input, and several requests of the same task
into one row (one prefix per row):

    [ input 1 | word 1 tokens[:-1] | word 2 tokens[:-1] | input 2 | word 1 tokens[:-1] | ... | padding ]

with a 4D mask in which a token sees the row's prefix and earlier tokens of its *own* request only, and a
label word's tokens the input and earlier tokens of the *same* word only. The input runs once for all label
words, and the last token of a word is never fed (only the state before it is needed), so single-token
label words cost nothing beyond the input. Packing turns a mixed stream (10- to 256-token inputs) into a few
rows of similar length: little padding, and one forward where unpacked rows of very different lengths need
several.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import DynamicCache

from softprompt.model.frozen import FrozenModel
from softprompt.scoring.prefix import PrefixState


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
    """One classification forward, laid out as in the module docstring: rows of packed requests.

    Attributes:
        ids: token ids [R, L] (R rows, right-padded with the pad id).
        positions: position ids [R, L] (P_row + offset within the token's own request; padding gets P_row).
        owner: [R, L] which request of its row a token belongs to (0, 1, ...), -1 = padding.
        word: [R, L] 0 = input, c+1 = label word c.
        before: per request (row by row, in row order), per label word, the column index into
            [prefix state | row tokens] (i.e. token position + 1) of the state that predicts each word token.
        request_rows: the row of each request, in the order of `before`.
    """

    ids: torch.Tensor
    positions: torch.Tensor
    owner: torch.Tensor
    word: torch.Tensor
    before: list[list[list[int]]]
    request_rows: list[int]


def classify_layout(
    rows: Sequence[Sequence[tuple[list[int], Sequence[list[int]]]]], prefix_lengths: Sequence[int], pad_id: int
) -> ClassifyLayout:
    """Lay out rows of requests; each request is (input ids without BOS: it is in the prefix, label-word
    token ids). Every request of a row runs on the row's one prefix (length `prefix_lengths[row]`)."""
    seqs, owners, wordss, poss, before, request_rows = [], [], [], [], [], []
    for r, (requests, p) in enumerate(zip(rows, prefix_lengths, strict=True)):
        seq: list[int] = []
        own: list[int] = []
        wrd: list[int] = []
        pos: list[int] = []
        for k, (x, targets) in enumerate(requests):
            offset = len(seq)
            seq += x
            own += [k] * len(x)
            wrd += [0] * len(x)
            pos += [p + t for t in range(len(x))]
            # Token 0 of a word is predicted by the request's last input state (column offset + len(x));
            # column 0, the prefix's own last state, serves a request with an empty input (its row's prefix
            # is its own). Token j by word token j-1.
            last = offset + len(x) if x else 0
            cols: list[list[int]] = []
            for c, target in enumerate(targets):
                start = len(seq)
                cols.append([last] + [start + j + 1 for j in range(len(target) - 1)])
                seq += target[:-1]
                own += [k] * (len(target) - 1)
                wrd += [c + 1] * (len(target) - 1)
                pos += [p + len(x) + j for j in range(len(target) - 1)]
            before.append(cols)
            request_rows.append(r)
        seqs.append(seq)
        owners.append(own)
        wordss.append(wrd)
        poss.append(pos)
    length = max(1, max(len(s) for s in seqs))
    n = len(seqs)
    ids = torch.full((n, length), pad_id, dtype=torch.long)
    owner = torch.full((n, length), -1, dtype=torch.long)
    word = torch.zeros((n, length), dtype=torch.long)
    positions = torch.tensor([[p] * length for p in prefix_lengths], dtype=torch.long)
    for r in range(n):
        m = len(seqs[r])
        ids[r, :m] = torch.tensor(seqs[r], dtype=torch.long)
        owner[r, :m] = torch.tensor(owners[r], dtype=torch.long)
        word[r, :m] = torch.tensor(wordss[r], dtype=torch.long)
        positions[r, :m] = torch.tensor(poss[r], dtype=torch.long)
    return ClassifyLayout(ids, positions, owner, word, before, request_rows)


def segment_mask(prefix_mask: torch.Tensor, owner: torch.Tensor, word: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Additive attention mask [R, 1, L, P_max + L] (0 = attend, dtype min = blocked).

    Query q may see: its row's real prefix slots; tokens k <= q of its own request that are input tokens
    or tokens of its own label word. Every query also sees itself, so no row is fully masked (padding
    would otherwise give NaN). Additive rather than boolean so both eager and SDPA attention accept it.
    """
    length = owner.shape[1]
    device = owner.device
    causal = torch.ones(length, length, dtype=torch.bool, device=device).tril()  # [L, L]: k <= q
    same_request = (owner[:, None, :] == owner[:, :, None]) & (owner[:, None, :] >= 0)  # [R, L_q, L_k]
    same_word = (word[:, None, :] == 0) | (word[:, None, :] == word[:, :, None])
    allowed = (causal[None] & same_request & same_word) | torch.eye(length, dtype=torch.bool, device=device)[None]
    prefix = prefix_mask.bool()[:, None, :].expand(-1, length, -1)  # [R, L, P_max]
    full = torch.cat([prefix, allowed], dim=2)[:, None]  # [R, 1, L, P_max + L]
    return torch.zeros(full.shape, dtype=dtype, device=device).masked_fill(~full, torch.finfo(dtype).min)


def pack_rows(lengths: Sequence[int], keys: Sequence[object], capacity: int) -> list[list[int]]:
    """Pack request indices into rows of at most `capacity` tokens, only requests with equal `keys` (the
    same cached prefix) sharing a row: first-fit over the requests, longest first.

    A forward pays per token slot and per forward; packing short requests together (an SST-2 sentence is
    ~27 tokens, a BoolQ passage ~150) removes most padding and most forwards. A request longer than
    `capacity` gets a row of its own.
    """
    rows: list[list[int]] = []
    room: list[int] = []
    row_key: list[object] = []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        for r in range(len(rows)):
            if row_key[r] == keys[i] and room[r] >= lengths[i]:
                rows[r].append(i)
                room[r] -= lengths[i]
                break
        else:
            rows.append([i])
            room.append(capacity - lengths[i])
            row_key.append(keys[i])
    return rows


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


FORWARD_OVERHEAD = 64
"""What one forward costs beyond its token slots, in token slots (per-op dispatch; small matmuls run slower)."""


def split_by_length(lengths: Sequence[int], max_batch: int, overhead: int = FORWARD_OVERHEAD) -> list[list[int]]:
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
