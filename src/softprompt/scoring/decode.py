"""The one greedy decoder: `softprompt eval --mode generate`, ensembles and the serving engine all use it.

Two ways to fill the KV cache before the first new token, then one loop (`_greedy`) one token a step:

    plain   [BOS] prompt input, left-padded, in one forward (`attach_causal`): prompts need no cache
    cached  each example's prefix state (BOS + prompt, run once per prompt, `PrefixCache`) stacked into
            one cache (layout.py), then only the inputs run: request cost is the input's tokens, whatever P

The cached fill builds its own masks, so it is taken only when the whole padded batch, generated tokens
included, fits inside the model's attention window (Gemma-3's 512-token local layers). The prompt stays in
the cache for every step (PEFT #2123 dropped it after the first). Seq2seq models use transformers' greedy
loop: the encoder sees prompt + input once. Decoding stops at EOS, at a newline when asked, at the
request's token limit, or when the example's `Watcher` says so (stop strings, streaming: serve/completions.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from transformers import DynamicCache

from softprompt.model.attach import attach_causal, attach_encoder
from softprompt.model.frozen import FrozenModel
from softprompt.scoring.head import head_logits
from softprompt.scoring.inputs import PromptSpec, pad, per_input, prompt_list, strip_bos
from softprompt.scoring.kv_buffer import DECODE_ROOM, reserve
from softprompt.scoring.layout import FORWARD_OVERHEAD, generate_layout, padded_prefix_cache, split_by_length
from softprompt.scoring.packed import fits_window
from softprompt.scoring.prefix import PrefixCache, PrefixState, base_model
from softprompt.scoring.router import check_context


@dataclass(frozen=True)
class StopRule:
    """When greedy decoding ends an example, besides its token limit."""

    newline: bool = True  # once the decoded text holds a newline (task generation: answers are one line)
    eos: bool = True  # at EOS, which is then dropped; False is vLLM's `ignore_eos` (fixed-length outputs)


class Watcher(Protocol):
    """Sees each new token of one example as it is chosen; returns True to stop that example there.

    `logprob` is log p(token) under the model (fp32), `top` the `top_k` most likely (token, logprob) pairs of
    that step (empty when top_k is 0). Called on the decoding thread, in token order.
    """

    top_k: int

    def __call__(self, token: int, logprob: float, top: list[tuple[int, float]]) -> bool: ...


@torch.no_grad()
def generate(
    fm: FrozenModel,
    inputs: Sequence[str],
    prompts: PromptSpec = None,
    max_new_tokens: int = 32,
    batch_size: int = 16,
    stop_at_newline: bool = True,
    prefixes: PrefixCache | None = None,
) -> list[str]:
    """Greedy continuation of each input with its prompt, as text (see `generate_ids`)."""
    ids = [fm.tokenizer(text).input_ids for text in inputs]
    tokens = generate_ids(fm, ids, prompts, max_new_tokens, stop_at_newline, batch_size=batch_size, prefixes=prefixes)
    return [fm.tokenizer.decode(t, skip_special_tokens=True).strip() for t in tokens]


@torch.no_grad()
def generate_ids(
    fm: FrozenModel, ids: Sequence[list[int]], prompts: PromptSpec, max_new_tokens: int | Sequence[int],
    stop_at_newline: bool = True, *, batch_size: int | None = None, prefixes: PrefixCache | None = None,
    watchers: Sequence[Watcher | None] | None = None, stop_at_eos: bool = True,
) -> list[list[int]]:
    """New token ids for tokenized inputs (BOS included as the tokenizer adds it), one limit for all or each.

    With `prefixes` (a cache of prompt prefix states), causal batches are grouped by length and run on the
    cached prefixes where they fit the attention window; otherwise (and for seq2seq) in input order, plain.
    `batch_size` None: one batch per token limit. `watchers` (one per input, or None): see `Watcher`; the
    tokens returned end where a watcher stopped (that token included). Seq2seq models take no watchers.
    `stop_at_eos` False decodes past EOS to each limit and keeps the EOS tokens (decoder-only models).
    """
    stop = StopRule(newline=stop_at_newline, eos=stop_at_eos)
    if fm.is_seq2seq and not stop.eos:
        raise ValueError("decoding past EOS (ignore_eos) needs a decoder-only model")
    specs = per_input(prompts, len(ids))
    rows = prompt_list(fm, specs, len(ids))
    limits = [max_new_tokens] * len(ids) if isinstance(max_new_tokens, int) else list(max_new_tokens)
    check_context(fm, [0 if r is None else r.shape[0] for r in rows], [len(x) for x in ids], limits, "new")
    size = batch_size or max(1, len(ids))
    out: list[list[int]] = [[] for _ in ids]
    watch = list(watchers) if watchers is not None else [None] * len(ids)
    if fm.is_seq2seq and any(w is not None for w in watch):
        raise ValueError("token watchers (stop strings, logprobs, streaming) need a decoder-only model")
    if fm.is_seq2seq or prefixes is None:
        return _plain(fm, ids, rows, limits, stop, size, list(range(len(ids))), out, watch)
    bare, has_bos = cached_inputs(fm, ids)
    # A group pays one forward per new token, and a decode step costs about one forward's fixed overhead
    # whatever its row count (its weights are read once for all rows): so the cost model charges every group
    # its decode steps too, which keeps mixed-length requests in fewer, wider groups despite more padding.
    steps = max(limits, default=0)
    for chunk in split_by_length([len(b) for b in bare], size, overhead=FORWARD_OVERHEAD * (1 + steps)):
        states = [prefixes.get(specs[i]) if specs[i] is not None and has_bos[i] else None for i in chunk]
        # The padded cache's slots count against a sliding window as if they were tokens: cached only when
        # the whole padded batch, generated tokens included, fits inside it.
        if all(s is not None for s in states) and fits_window(
                fm, max(s.length for s in states) + max(len(bare[i]) for i in chunk) + max(limits[i] for i in chunk), 0, 0):
            tokens = _greedy(fm, *fill_cached(fm, [bare[i] for i in chunk], states), [limits[i] for i in chunk],
                             stop, [watch[i] for i in chunk])
            for i, t in zip(chunk, tokens, strict=True):
                out[i] = t
        else:
            _plain(fm, ids, rows, limits, stop, size, chunk, out, watch)
    return out


def cached_inputs(fm: FrozenModel, ids: Sequence[list[int]]) -> tuple[list[list[int]], list[bool]]:
    """Inputs as they run on a cached prompt prefix (which holds BOS + prompt): each without its BOS, and
    whether it may run there — True when it had the BOS the prefix supplies, or the tokenizer adds none.
    The one rule for the static decoder above and the continuous batch (serve/engine.py)."""
    bare = [strip_bos(fm, list(x)) for x in ids]
    return bare, [len(b) < len(x) or not fm.adds_bos for b, x in zip(bare, ids, strict=True)]


def generation_stopped(fm: FrozenModel, tokens: list[int], stop: StopRule) -> bool:
    """Greedy decoding ends at EOS (unless `stop.eos` is off), or once the decoded text holds a newline."""
    if stop.eos and tokens and tokens[-1] == fm.tokenizer.eos_token_id:
        return True
    return stop.newline and "\n" in fm.tokenizer.decode(tokens, skip_special_tokens=True)


def trim_at_eos(fm: FrozenModel, tokens: list[int]) -> list[int]:
    """Cut at EOS; the decoded text is cut at the first newline by the caller's strip/split."""
    if fm.tokenizer.eos_token_id in tokens:
        tokens = tokens[: tokens.index(fm.tokenizer.eos_token_id)]
    return tokens


def _plain(
    fm: FrozenModel, ids: Sequence[list[int]], rows: list[torch.Tensor | None], limits: list[int], stop: StopRule,
    size: int, which: list[int], out: list[list[int]], watch: list[Watcher | None],
) -> list[list[int]]:
    """The uncached path for inputs `which`, in order, `size` inputs per call (seq2seq: one call per distinct
    limit; a decoder-only batch stops each row at its own limit). Fills `out` and returns it."""
    groups = [[i for i in which if limits[i] == limit] for limit in sorted({limits[i] for i in which})] \
        if fm.is_seq2seq else [list(which)]
    for same in groups:
        for start in range(0, len(same), size):
            idx = same[start: start + size]
            batch, prompts = [ids[i] for i in idx], [rows[i] for i in idx]
            if fm.is_seq2seq:
                tokens = _seq2seq(fm, batch, prompts, limits[idx[0]])
            else:
                tokens = _greedy(fm, *_fill_plain(fm, batch, prompts), [limits[i] for i in idx], stop,
                                 [watch[i] for i in idx])
            for i, t in zip(idx, tokens, strict=True):
                out[i] = t
    return out


Filled = tuple[torch.Tensor, DynamicCache, torch.Tensor, torch.Tensor]  # last hidden [B, H], cache, mask [B, L], next position [B]


def _fill_plain(fm: FrozenModel, ids: list[list[int]], prompts: list[torch.Tensor | None]) -> Filled:
    """Prompt + input, left-padded so every example's last token is in the last column, in one forward."""
    input_ids, mask = pad(ids, fm.tokenizer.pad_token_id)
    att = attach_causal(fm.embed(input_ids), mask.to(fm.device), prompts, after_bos=fm.adds_bos, left_pad=True)
    cache = DynamicCache(config=fm.model.config)
    hidden = base_model(fm)(inputs_embeds=att.inputs_embeds, attention_mask=att.attention_mask,
                            position_ids=att.position_ids, cache=cache, use_cache=True).last_hidden_state[:, -1]
    return hidden, cache, att.attention_mask, att.position_ids[:, -1] + 1


def fill_cached(fm: FrozenModel, ids: list[list[int]], states: list[PrefixState]) -> Filled:
    """Inputs (without BOS: it is in the prefix) on their stacked prefix states (layout.py), one forward."""
    tokens, mask, positions = generate_layout(ids, [s.length for s in states], fm.tokenizer.pad_token_id)
    cache, prefix_mask = padded_prefix_cache(fm, states)
    attention = torch.cat([prefix_mask, mask.to(fm.device)], dim=1)
    hidden = base_model(fm)(inputs_embeds=fm.embed(tokens), attention_mask=attention,
                            position_ids=positions.to(fm.device), cache=cache,
                            use_cache=True).last_hidden_state[:, -1]  # [B, H]: left padding, last column
    empty = torch.tensor([not x for x in ids], device=fm.device)
    if empty.any():  # no input tokens: the prefix's own last state predicts the first token
        hidden = torch.where(empty[:, None], torch.cat([s.last_hidden[:, 0] for s in states]), hidden)
    next_pos = torch.tensor([s.length + len(x) for s, x in zip(states, ids, strict=True)], device=fm.device)
    return hidden, cache, attention, next_pos


def _greedy(
    fm: FrozenModel, hidden: torch.Tensor, cache: DynamicCache, attention: torch.Tensor, next_pos: torch.Tensor,
    limits: list[int], stop: StopRule, watch: list[Watcher | None],
) -> list[list[int]]:
    """From a filled cache: argmax, feed it back, until every example stopped or reached its limit."""
    # Each step writes into room made once (kv_buffer.py); long limits grow it in chunks rather than all upfront.
    reserve(cache, min(max(limits, default=0), 4 * DECODE_ROOM))
    generated: list[list[int]] = [[] for _ in limits]
    done = [limit <= 0 for limit in limits]
    for _ in range(max(limits, default=0)):
        logits = head_logits(fm, hidden)  # [B, V]
        next_ids = logits.argmax(dim=-1)  # [B]
        for b, tok in enumerate(next_ids.tolist()):
            if not done[b]:
                done[b] = take_token(fm, generated[b], tok, limits[b], stop, watch[b], logits[b])
        if all(done):
            break
        attention = torch.cat([attention, attention.new_ones(len(limits), 1)], dim=1)
        hidden = base_model(fm)(inputs_embeds=fm.embed(next_ids[:, None]), attention_mask=attention,
                                position_ids=next_pos[:, None], cache=cache, use_cache=True).last_hidden_state[:, -1]
        next_pos = next_pos + 1
    return [trim_at_eos(fm, g) for g in generated] if stop.eos else generated


def take_token(
    fm: FrozenModel, tokens: list[int], token: int, limit: int, stop: StopRule, watcher: Watcher | None,
    logits: torch.Tensor,
) -> bool:
    """Append one example's chosen `token` (its step's logits [V]) to `tokens`; whether the example is done."""
    tokens.append(token)
    done = generation_stopped(fm, tokens, stop) or len(tokens) >= limit
    if watcher is not None:  # after the built-in checks: a watcher sees EOS too, then it stops
        done = _notify(watcher, logits, token) or done
    return done


def _notify(watcher: Watcher, logits: torch.Tensor, token: int) -> bool:
    """Hand one example's chosen token [V] logits -> (token, logprob, top-k) to its watcher; its stop verdict."""
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    top: list[tuple[int, float]] = []
    if watcher.top_k > 0:
        values, indices = logprobs.topk(watcher.top_k)
        top = list(zip(indices.tolist(), values.tolist(), strict=True))
    return bool(watcher(token, float(logprobs[token]), top))


def _seq2seq(fm: FrozenModel, ids: list[list[int]], prompts: list[torch.Tensor | None], max_new: int) -> list[list[int]]:
    """Encoder sees prompt + input once; transformers' greedy decoder loop reuses its output."""
    input_ids, mask = pad(ids, fm.tokenizer.pad_token_id)
    att = attach_encoder(fm.embed(input_ids), mask.to(fm.device), prompts)
    seqs = fm.model.generate(
        inputs_embeds=att.inputs_embeds, attention_mask=att.attention_mask, max_new_tokens=max_new,
        do_sample=False, num_beams=1,
    )
    return [trim_at_eos(fm, [t for t in row.tolist() if t != fm.tokenizer.pad_token_id]) for row in seqs]
