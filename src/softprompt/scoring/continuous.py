"""Continuous (iteration-level) batching for greedy decoding: requests join and leave a running batch between
decode steps, so a request that arrives mid-decode starts at the next step and a short one never waits for a
long one (static batching decodes each batch to its longest request, and arrivals wait for the whole batch).

    running state   cache [B, heads, L, d] per layer, mask [B, L] (0 = padding), next position [B], last hidden [B, H]
    admit(rows)     prefill the new rows on their cached prefixes (decode.fill_cached) in groups of similar
                    length (layout.split_by_length: a prefill pays full matmul FLOPs for every padded slot, and
                    a mixed stream's inputs run from 10 to 256 tokens), then left-pad every cache to the longest
                    and concatenate along B, the running rows' cache copied once per admission
    step()          one token for every row (decode.take_token: EOS, newline, limit, watcher); finished rows
                    leave (index_select on B) and the rest are compacted: each row's used slots move to
                    the right end, so the width is the longest remaining row's

Each row attends to its own keys only (padding is masked), so a row computes what it would in a static batch:
the tokens equal `generate_ids`' (tests/test_continuous.py). Decoder-only models with full attention only: a
sliding-window layer would count the padding slots as tokens (`RunningBatch.supports`). The serving batcher
(serve/batcher.py) drives it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from transformers import DynamicCache

from softprompt.model.frozen import FrozenModel
from softprompt.scoring.decode import StopRule, Watcher, fill_cached, take_token, trim_at_eos
from softprompt.scoring.head import head_logits
from softprompt.scoring.kv_buffer import DECODE_ROOM, AppendLayer, compact, reserve, stacked
from softprompt.scoring.layout import split_by_length
from softprompt.scoring.prefix import PrefixState, base_model


@dataclass(eq=False)
class DecodeRow:
    """One request in a running batch: its input ids (without BOS: it is in the prefix), its prefix state, its
    token limit and stop rule; `tokens` fills as it decodes; `on_done(tokens)` is called when it leaves."""

    ids: list[int]
    state: PrefixState
    limit: int
    stop: StopRule = StopRule()
    watcher: Watcher | None = None
    on_done: Callable[[list[int]], None] | None = None
    tokens: list[int] = field(default_factory=list)


class RunningBatch:
    """The rows decoding now and their KV cache; `admit` adds rows, `step` decodes one token for all of them."""

    def __init__(self, fm: FrozenModel) -> None:
        self.fm = fm
        self.rows: list[DecodeRow] = []
        self._cache: DynamicCache | None = None
        self._mask = torch.zeros(0, 0, dtype=torch.long)  # [B, L]
        self._pos = torch.zeros(0, dtype=torch.long)  # [B]
        self._hidden: torch.Tensor | None = None  # [B, H]: the state that predicts each row's next token

    @staticmethod
    def supports(fm: FrozenModel) -> bool:
        """Decoder-only, and no attention window (padding slots would count against it)."""
        return not fm.is_seq2seq and fm.attention_window() is None

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def width(self) -> int:
        """L, the cache's slots per row (the longest row's prefix + input + tokens so far)."""
        return self._mask.shape[1]

    @torch.no_grad()
    def admit(self, rows: Sequence[DecodeRow]) -> list[DecodeRow]:
        """Prefill `rows` and add them; rows with a limit of 0 finish at once. Returns the finished ones."""
        finished = [r for r in rows if r.limit <= 0]
        rows = [r for r in rows if r.limit > 0]
        if rows:
            # Each group's prefill pads to its own longest input (its prefix slots included), not the call's.
            groups = split_by_length([r.state.length + len(r.ids) for r in rows], len(rows))
            parts = [fill_cached(self.fm, [rows[i].ids for i in g], [rows[i].state for i in g]) for g in groups]
            if self._cache is not None and self.rows:
                assert self._hidden is not None
                parts.insert(0, (self._hidden, self._cache, self._mask, self._pos))
            hidden, caches, masks, positions = zip(*parts, strict=True)
            self._cache = reserve(caches[0] if len(parts) == 1 else _concat(self.fm, caches, [m.shape[1] for m in masks]))
            self._mask = torch.cat(_left_pad(masks), dim=0)
            self._pos, self._hidden = torch.cat(positions), torch.cat(hidden)
            self.rows.extend(rows[i] for g in groups for i in g)  # the order of the concatenated caches
        for r in finished:
            self._finish(r)
        return finished

    @torch.no_grad()
    def step(self) -> list[DecodeRow]:
        """One token for every row; returns the rows that finished (they have left the batch)."""
        if not self.rows:
            return []
        assert self._cache is not None and self._hidden is not None
        logits = head_logits(self.fm, self._hidden)  # [B, V]
        next_ids = logits.argmax(dim=-1)  # [B]
        done = [take_token(self.fm, r.tokens, tok, r.limit, r.stop, r.watcher, logits[b])
                for b, (r, tok) in enumerate(zip(self.rows, next_ids.tolist(), strict=True))]
        finished = [r for r, d in zip(self.rows, done, strict=True) if d]
        if finished:
            keep = [b for b, d in enumerate(done) if not d]
            self.rows = [self.rows[b] for b in keep]
            if not keep:
                self._cache, self._hidden = None, None
                self._mask, self._pos = self._mask[:0, :0], self._pos[:0]
            else:
                self._select(torch.tensor(keep, device=self._mask.device))
                next_ids = next_ids[keep]
        if self.rows:
            self._mask = torch.cat([self._mask, self._mask.new_ones(len(self.rows), 1)], dim=1)
            self._hidden = base_model(self.fm)(
                inputs_embeds=self.fm.embed(next_ids[:, None]), attention_mask=self._mask,
                position_ids=self._pos[:, None], cache=self._cache, use_cache=True).last_hidden_state[:, -1]
            self._pos = self._pos + 1
        for r in finished:
            self._finish(r)
        return finished

    def _finish(self, row: DecodeRow) -> None:
        """EOS dropped where it stopped the row (as generate_ids does), then the row's callback."""
        if row.stop.eos:
            row.tokens = trim_at_eos(self.fm, row.tokens)
        if row.on_done is not None:
            row.on_done(row.tokens)

    def _select(self, keep: torch.Tensor) -> None:
        """Keep rows `keep` [B'] and compact their caches: each row's used slots move, in order, to the right
        end, so the width becomes the longest remaining row's (a departed long row's slots and the prefix
        padding go). Moving slots is exact: keys carry their rotary positions, and the next token attends to
        every unmasked slot whatever its column."""
        assert self._cache is not None and self._hidden is not None
        mask = self._mask.index_select(0, keep)  # [B', L]
        width = int(mask.sum(dim=1).max())
        order = torch.sort(mask, dim=1, stable=True).indices[:, -width:]  # [B', W]: unused slots first, then used
        compact(self._cache, keep, order)  # one pass per layer, into buffers with room again (kv_buffer.py)
        self._mask, self._pos, self._hidden = mask.gather(1, order), self._pos[keep], self._hidden.index_select(0, keep)


def _left_pad(masks: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """[B_i, L_i] masks left-padded with 0 to the longest L."""
    width = max(m.shape[1] for m in masks)
    return [torch.nn.functional.pad(m, (width - m.shape[1], 0)) for m in masks]


def _concat(fm: FrozenModel, caches: Sequence[DynamicCache], widths: Sequence[int]) -> DynamicCache:
    """The caches' rows one after another, each left-padded with zero slots to the widest (masked, so unused),
    written once into buffers with room to decode into (kv_buffer.stacked)."""
    width = max(widths)
    out = DynamicCache(config=fm.model.config)
    for i, parts in enumerate(zip(*(c.layers for c in caches), strict=True)):
        layer = AppendLayer()
        layer.hold(stacked([p.keys for p in parts], width, DECODE_ROOM),
                   stacked([p.values for p in parts], width, DECODE_ROOM), width)
        out.layers[i] = layer
    return out
