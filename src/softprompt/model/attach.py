"""Put soft prompts in front of embedded inputs: one prompt per example, any mix of lengths P.

One function does the placement for both model kinds; they differ only in where the prompt may go:
- causal LMs: right after BOS when the tokenizer adds one (the reference's `prefix_prompt_after_bos`:
  BOS keeps its role as the attention sink), else first;
- seq2seq: at the start of the encoder input only (`attach_encoder`); the decoder never sees it.

The rebuilt batch keeps the input's padding side, and position ids count real tokens only, so an example
gives the same scores alone or next to longer ones (padding invariance, PEFT #1093).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass
class Attached:
    """A batch with prompts in place.

    Attributes:
        inputs_embeds: [B, L, H] prompt rows and token embeddings, padding rows zero.
        attention_mask: [B, L] 1 for prompt and real tokens, 0 for padding.
        position_ids: [B, L] 0, 1, 2, ... over the real (unpadded) positions; padding gets 0.
        token_index: [B, T] where each input position t landed in the new sequence (-1 for padding).
    """

    inputs_embeds: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    token_index: torch.Tensor


def attach(
    embeds: torch.Tensor,
    attention_mask: torch.Tensor,
    prompts: Sequence[torch.Tensor | None],
    *,
    keep_first: bool = False,
    left_pad: bool = False,
) -> Attached:
    """Insert prompt i [P_i, H] into example i of `embeds` [B, T, H].

    Args:
        embeds: token embeddings [B, T, H] (any padding side, described by `attention_mask` [B, T]).
        prompts: one [P_i, H] tensor (already in the model's dtype) or None per example.
        keep_first: keep each example's first real token (BOS) in front of the prompt.
        left_pad: pad the result on the left (for generation) instead of the right.

    Differentiable w.r.t. `prompts`: the result is a gather over [embeds | prompt rows | a zero row].
    """
    batch, length, hidden = embeds.shape
    if len(prompts) != batch:
        raise ValueError(f"got {len(prompts)} prompts for a batch of {batch} examples")
    p_max = max((p.shape[0] for p in prompts if p is not None), default=0)
    for p in prompts:
        if p is not None and p.shape[-1] != hidden:
            raise ValueError(f"prompt width {p.shape[-1]} != model width {hidden}")
    bank = embeds.new_zeros(batch, p_max + 1, hidden)  # last row stays zero: the padding source
    if p_max:
        bank = torch.stack(
            [torch.cat([p, embeds.new_zeros(p_max + 1 - p.shape[0], hidden)]) if p is not None
             else embeds.new_zeros(p_max + 1, hidden) for p in prompts]
        )
    source = torch.cat([embeds, bank], dim=1)  # [B, T + P_max + 1, H]
    pad_row = length + p_max

    orders: list[list[int]] = []
    for b in range(batch):
        real = attention_mask[b].nonzero().flatten().tolist()
        n_prompt = 0 if prompts[b] is None else prompts[b].shape[0]
        head = real[:1] if keep_first and real else []
        orders.append(head + list(range(length, length + n_prompt)) + real[len(head):])
    new_len = max(len(o) for o in orders)

    index = torch.full((batch, new_len), pad_row, dtype=torch.long)
    mask = torch.zeros(batch, new_len, dtype=attention_mask.dtype)
    token_index = torch.full((batch, length), -1, dtype=torch.long)
    for b, order in enumerate(orders):
        start = new_len - len(order) if left_pad else 0
        index[b, start:start + len(order)] = torch.tensor(order, dtype=torch.long)
        mask[b, start:start + len(order)] = 1
        for offset, src in enumerate(order):
            if src < length:
                token_index[b, src] = start + offset
    index = index.to(embeds.device)
    gathered = source.gather(1, index.unsqueeze(-1).expand(batch, new_len, hidden))
    mask = mask.to(embeds.device)
    return Attached(gathered, mask, positions_from_mask(mask), token_index.to(embeds.device))


def attach_causal(
    embeds: torch.Tensor,
    attention_mask: torch.Tensor,
    prompts: Sequence[torch.Tensor | None],
    *,
    after_bos: bool,
    left_pad: bool = False,
) -> Attached:
    """Causal LM: the prompt goes right after BOS when the tokenizer adds one, else first."""
    return attach(embeds, attention_mask, prompts, keep_first=after_bos, left_pad=left_pad)


def attach_encoder(
    embeds: torch.Tensor, attention_mask: torch.Tensor, prompts: Sequence[torch.Tensor | None]
) -> Attached:
    """Seq2seq: the prompt goes first on the encoder input; the decoder is untouched."""
    return attach(embeds, attention_mask, prompts, keep_first=False, left_pad=False)


def positions_from_mask(mask: torch.Tensor) -> torch.Tensor:
    """Position ids [B, L] that continue across the prompt and skip padding: cumsum(mask) - 1."""
    return (mask.long().cumsum(dim=1) - 1).clamp(min=0)
