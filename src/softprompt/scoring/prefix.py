"""Run a shared prefix (BOS + prompt) once, then every example of a batch on top of its keys/values.

In a causal LM the prompt's hidden states never see the input (it comes first), so they are identical for
every example. Running them once at batch size 1 instead of B times removes (B-1)·P tokens of work from
each forward *and* backward; with P = 100 and short inputs that is most of the compute. Gradients flow
back through the cached keys/values into the prompt, summed over the batch: the result equals the
plain path (tested). `PrefixCache` keeps one state per prompt: the serving registry's tasks, an ensemble's
members.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from transformers import DynamicCache

from softprompt.model.frozen import FrozenModel
from softprompt.model.prompt import SoftPrompt
from softprompt.scoring.inputs import prompt_list


@dataclass
class PrefixState:
    """Keys/values of a prefix for every layer ([1, heads, P', d] each) and its last hidden state [1, 1, H].

    `length` is P' (BOS included when the prefix has it). Tensors keep their autograd graph when built with
    gradients enabled, so one state can serve one training step's micro-batches.
    """

    kv: list[tuple[torch.Tensor, torch.Tensor]]
    last_hidden: torch.Tensor
    length: int


def base_model(fm: FrozenModel) -> torch.nn.Module:
    """The transformer body without the LM head (e.g. LlamaForCausalLM.model)."""
    return getattr(fm.model, fm.model.base_model_prefix)


def prepend_bos(fm: FrozenModel, rows: torch.Tensor) -> torch.Tensor:
    """[BOS embedding; rows]: [1+P, H] from [P, H] (a prompt goes right after BOS when the tokenizer adds one)."""
    bos = torch.tensor([[fm.tokenizer.bos_token_id]], device=rows.device)
    return torch.cat([fm.embed(bos)[0], rows])


def run_prefix(fm: FrozenModel, prefix: torch.Tensor) -> PrefixState:
    """Forward a prefix [P', H] (model dtype) at batch size 1 and keep its per-layer keys/values."""
    cache = DynamicCache(config=fm.model.config)
    out = base_model(fm)(
        inputs_embeds=prefix.unsqueeze(0), position_ids=torch.arange(prefix.shape[0], device=prefix.device)[None],
        cache=cache, use_cache=True,
    )
    kv = [(layer.keys, layer.values) for layer in cache.layers]
    return PrefixState(kv, out.last_hidden_state[:, -1:], prefix.shape[0])


def batch_cache(fm: FrozenModel, state: PrefixState, batch: int) -> DynamicCache:
    """A fresh cache holding the prefix for `batch` examples (expanded views: no copy until appended to)."""
    cache = DynamicCache(config=fm.model.config)
    for layer, (keys, values) in zip(cache.layers, state.kv, strict=True):
        layer.update(keys.expand(batch, -1, -1, -1), values.expand(batch, -1, -1, -1))
    return cache


def forward_after_prefix(
    fm: FrozenModel, state: PrefixState, embeds: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """Right-padded inputs [B, T, H] with mask [B, T] run after the prefix; returns hidden states [B, 1+T, H]
    where row 0 is the prefix's last state (it predicts the first input token)."""
    batch = embeds.shape[0]
    full_mask = torch.cat([mask.new_ones(batch, state.length), mask], dim=1)
    positions = state.length + (mask.long().cumsum(dim=1) - 1).clamp(min=0)
    out = base_model(fm)(
        inputs_embeds=embeds, attention_mask=full_mask, position_ids=positions,
        cache=batch_cache(fm, state, batch), use_cache=True,
    )
    return torch.cat([state.last_hidden.expand(batch, -1, -1), out.last_hidden_state], dim=1)


def prompt_prefix(fm: FrozenModel, rows: torch.Tensor) -> PrefixState:
    """The prefix a prompt [P, H] (model dtype) runs as: BOS + prompt when the tokenizer adds BOS (the
    prompt goes right after it), else the prompt alone."""
    return run_prefix(fm, prepend_bos(fm, rows) if fm.adds_bos else rows)


class PrefixCache:
    """Prefix states of prompts, each run once: the serving registry keeps one for every loaded task, an
    ensemble one for its members, `score_encoded` a fresh one per call.

    Keyed by the prompt object (a `SoftPrompt` or a [P, H] tensor), which the cache holds on to so its id
    cannot be reused by another object while cached. States are built without gradients: scoring only.
    """

    def __init__(self, fm: FrozenModel) -> None:
        self.fm = fm
        self._states: dict[int, tuple[object, PrefixState]] = {}

    def get(self, prompt: SoftPrompt | torch.Tensor) -> PrefixState:
        """The prompt's prefix state, running BOS + prompt the first time it is asked for."""
        hit = self._states.get(id(prompt))
        if hit is not None and hit[0] is prompt:
            return hit[1]
        with torch.no_grad():
            state = prompt_prefix(self.fm, prompt_list(self.fm, prompt, 1)[0])
        self._states = {**self._states, id(prompt): (prompt, state)}  # swapped, never mutated: readers in other threads
        return state

    def retain(self, prompts: Iterable[object]) -> None:
        """Forget every state but those of `prompts` (the registry's tasks after a reload)."""
        keep = {id(p) for p in prompts}
        self._states = {k: v for k, v in self._states.items() if k in keep}
