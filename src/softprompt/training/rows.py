"""Training rows: each example tokenized once, and the loss of one micro-batch of them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from softprompt.model.frozen import FrozenModel
from softprompt.model.prompt import SoftPrompt
from softprompt.scoring import Encoded, cut_input, encode_pair, one_token_choices_row, target_logprobs
from softprompt.scoring.objectives import target_prefix
from softprompt.training.config import Loss, TrainConfig


@dataclass
class Row:
    """One training example, tokenized once: the gold pair, and every choice for the rank loss (one row
    with `read_ids` when every choice is one token)."""

    gold: Encoded
    choices: list[Encoded]
    label: int | None

    @property
    def length(self) -> int:
        return len(self.gold.input_ids) + len(self.gold.target_ids)


def encode_rows(fm: FrozenModel, examples: list[Any], cfg: TrainConfig, eos: bool) -> list[Row]:
    """Tokenize every training example once (with `eos` targets end in EOS so generation learns to stop: see
    TrainConfig.ends_targets_with_eos; with `target_sentinel` they start with "<extra_id_0> ", objectives.py)."""
    prefix = target_prefix(fm, cfg.target_sentinel)
    rows = []
    for ex in examples:
        gold = encode_pair(fm, ex.input_text, prefix + ex.target_text, append_eos=eos)
        gold.input_ids = cut_input(gold.input_ids, cfg.max_input_tokens)
        choices = []
        if cfg.loss is Loss.RANK:
            for choice in ex.choices or []:
                enc = encode_pair(fm, ex.input_text, prefix + choice)
                enc.input_ids = gold.input_ids
                choices.append(enc)
            # One-token choices share one row: the rank loss then costs what cross-entropy costs, not C times it.
            merged = one_token_choices_row(fm, choices)
            choices = [merged] if merged is not None else choices
        rows.append(Row(gold, choices, ex.label))
    return rows


def step_loss(fm: FrozenModel, rows: list[Row], prompt: SoftPrompt | None, cfg: TrainConfig, norm: float) -> torch.Tensor:
    """Loss of one micro-batch, divided by `norm` (the whole global step's token or example count) so that
    micro-batches and ranks add up to exactly the loss of the full batch."""
    if cfg.loss is Loss.CE:
        logprobs = target_logprobs(fm, [r.gold for r in rows], prompt)
        return -torch.cat(logprobs).sum() / norm
    logprobs = iter(target_logprobs(fm, [c for r in rows for c in r.choices], prompt))
    total = torch.zeros((), device=fm.device)
    for r in rows:
        if r.choices[0].read_ids is not None:  # one row: [C] log-probabilities, one per one-token choice
            scores = next(logprobs)
        else:  # one row per choice: its tokens' log-probabilities sum to the choice's
            scores = torch.stack([next(logprobs).sum() for _ in r.choices])
        total = total - torch.log_softmax(scores, dim=0)[r.label]
    return total / norm
