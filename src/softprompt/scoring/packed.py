"""Score every choice of many inputs on cached prefixes, each input running once for all its choices.

The rank classification behind `softprompt eval`, ensembles and the serving engine's `classify` (router.py
sends inputs here): for a causal LM,
the log-likelihood of choice c given prefix + input is read off states of one packed row (layout in
layout.py)

    [ input 1 | choice 1 tokens[:-1] | choice 2 tokens[:-1] | input 2 | ... | padding ]

in which each choice attends to its own input and its own earlier tokens only. One row per input (or
fewer: short inputs of the same prefix share a row) instead of one row per (input, choice): RTE's and
MRPC's two multi-token label words cost one input pass instead of two, CB's three one instead of three.

The segment mask is built here, so it is exact only where the model itself would not cut attention:
models with sliding-window layers (Gemma-3: 512 tokens on its local layers) take this path only for
requests whose prefix + input + choice fit inside the window (`fits_window`); the router sends the rest to
the plain path, which lets the model build its own sliding masks.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from softprompt.model.frozen import FrozenModel
from softprompt.scoring.head import head_logits
from softprompt.scoring.layout import (
    classify_layout,
    pack_rows,
    padded_prefix_cache,
    segment_mask,
    split_by_length,
)
from softprompt.scoring.prefix import PrefixState, base_model

HEAD_ROWS = 512  # scored positions per LM-head call: [512, V] fp32 logits are ~100 MB for SmolLM2


def fits_window(fm: FrozenModel, prefix: int, n_input: int, n_target: int) -> bool:
    """Whether prefix + input + target tokens fit inside every layer's attention window (then a hand-built
    mask equals the model's own, sliding or not)."""
    window = fm.attention_window()
    return window is None or prefix + n_input + n_target <= window


def packed_choice_scores(
    fm: FrozenModel,
    ids: Sequence[list[int]],
    targets: Sequence[Sequence[list[int]]],
    states: Sequence[PrefixState],
    batch_size: int,
) -> list[list[float]]:
    """Summed log-likelihood `result[i][c]` of choice tokens `targets[i][c]` after `states[i]` + `ids[i]`.

    Args:
        ids: each input's token ids (without what the prefix already holds, e.g. BOS).
        targets: each input's choices as token ids (non-empty lists).
        states: each input's prefix (inputs that share one state object may share rows).
        batch_size: rows per forward.
    """
    # Inputs of one prefix share rows (packed up to the longest request's length), and rows of similar
    # length share a forward: little padding, few forwards. Results go back to input order.
    lengths = [len(ids[i]) + sum(len(t) - 1 for t in targets[i]) for i in range(len(ids))]
    rows = pack_rows(lengths, [id(s) for s in states], capacity=max(lengths, default=1))
    groups = []
    for chunk in split_by_length([sum(lengths[i] for i in row) for row in rows], batch_size):
        packed = [rows[r] for r in chunk]
        groups.append(([i for row in packed for i in row], _scored_states(fm, packed, ids, targets, states)))
    order = [i for chunk, _ in groups for i in chunk]
    if not order:
        return []
    hidden = torch.cat([h for _, h in groups])  # [N, H]: every scored position of the call
    gold = torch.tensor([t for i in order for w in targets[i] for t in w], device=fm.device)  # [N]
    # The LM head over many forwards' positions at once: its weights ([V, H], 57 MB in bf16 for SmolLM2)
    # are read once per HEAD_ROWS positions, not once per forward; the bound keeps the fp32 logits of one
    # huge call (an HTTP job of thousands of inputs) at ~100 MB.
    token_lp: list[float] = []
    for start in range(0, len(hidden), HEAD_ROWS):
        logprobs = F.log_softmax(head_logits(fm, hidden[start: start + HEAD_ROWS]), dim=-1)  # [n, V]
        token_lp += logprobs.gather(1, gold[start: start + HEAD_ROWS, None])[:, 0].tolist()
    result: list[list[float]] = [[] for _ in ids]
    k = 0
    for i in order:
        for w in targets[i]:
            result[i].append(float(sum(token_lp[k: k + len(w)])))
            k += len(w)
    return result


def _scored_states(
    fm: FrozenModel, rows: list[list[int]], ids: Sequence[list[int]], targets: Sequence[Sequence[list[int]]],
    states: Sequence[PrefixState],
) -> torch.Tensor:
    """One forward over `rows` (input indices; the inputs of a row share one prefix): the hidden states
    [N, H] that predict every choice token, in row, input, choice, token order."""
    row_states = [states[row[0]] for row in rows]
    layout = classify_layout([[(ids[i], targets[i]) for i in row] for row in rows],
                             [s.length for s in row_states], fm.tokenizer.pad_token_id)
    cache, prefix_mask = padded_prefix_cache(fm, row_states)
    mask = segment_mask(prefix_mask, layout.owner.to(fm.device), layout.word.to(fm.device), fm.dtype)
    hidden = base_model(fm)(
        inputs_embeds=fm.embed(layout.ids), attention_mask=mask, position_ids=layout.positions.to(fm.device),
        cache=cache, use_cache=True,
    ).last_hidden_state  # [R, L, H]
    # Column 0 of each row: its prefix's last state (predicts the first token when an input is empty).
    hidden = torch.cat([torch.cat([s.last_hidden for s in row_states]), hidden], dim=1)  # [R, 1+L, H]
    picks = [(r, c) for r, words in zip(layout.request_rows, layout.before, strict=True)
             for w in words for c in w]
    index = torch.tensor(picks, device=fm.device).reshape(-1, 2)
    return hidden[index[:, 0], index[:, 1]]  # [N, H]
