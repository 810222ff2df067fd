"""What the frozen model reads: token ids of (input, target) pairs, padding, input cutting, the BOS rule,
and prompts normalised to one [P, H] tensor per example.

Target tokenization: a target is tokenized as `" " + target` when the input does not end in whitespace
(label words are words that follow the input); seq2seq targets get the tokenizer's EOS as T5 does.

The BOS rule, in one place: a causal tokenizer that adds BOS puts it first, and the prompt goes right after
it (`FrozenModel.adds_bos`); paths that run BOS + prompt as a cached prefix take the input without its BOS
(`strip_bos`) and the plain path takes it back (`with_bos`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from softprompt.errors import UsageError
from softprompt.model.frozen import FrozenModel
from softprompt.model.prompt import SoftPrompt

PromptSpec = SoftPrompt | torch.Tensor | Sequence[SoftPrompt | torch.Tensor | None] | None


@dataclass
class Encoded:
    """Token ids of one (input, target) pair: `input_ids` [T_in] (with BOS/EOS as the tokenizer adds)
    and `target_ids` [T_tgt].

    `read_ids` (causal LMs, one-token targets): read the log-probabilities of these tokens at the target's
    position instead of the target's own, so one row scores every one-token choice of its input.
    """

    input_ids: list[int]
    target_ids: list[int]
    read_ids: list[int] | None = None


class InputTooLongError(UsageError):
    """Prompt + input + target do not fit the model's context; the message says by how much."""


def encode_pair(fm: FrozenModel, input_text: str, target: str, *, append_eos: bool = False) -> Encoded:
    """Tokenize one pair as the model sees it. `append_eos` adds EOS to causal targets (training uses it
    so that generation learns to stop); seq2seq targets always end in EOS."""
    tok = fm.tokenizer
    input_ids = tok(input_text).input_ids
    if fm.is_seq2seq:
        return Encoded(input_ids, tok(target).input_ids)
    needs_space = input_text and not input_text[-1].isspace() and not target[:1].isspace()
    target_ids = tok((" " if needs_space else "") + target, add_special_tokens=False).input_ids
    if append_eos and tok.eos_token_id is not None:
        target_ids = target_ids + [tok.eos_token_id]
    return Encoded(input_ids, target_ids)


def per_input(prompts: PromptSpec, batch: int) -> list[SoftPrompt | torch.Tensor | None]:
    """None / one prompt / one per example -> one entry per example (the objects themselves, unconverted)."""
    if prompts is None or isinstance(prompts, SoftPrompt | torch.Tensor):
        return [prompts] * batch
    if len(prompts) != batch:
        raise ValueError(f"got {len(prompts)} prompts for {batch} examples")
    return list(prompts)


def prompt_list(fm: FrozenModel, prompts: PromptSpec, batch: int) -> list[torch.Tensor | None]:
    """Normalise None / one prompt / one per example into a list of [P_i, H] tensors in the model dtype.

    Each distinct prompt object is converted once, so examples that share a prompt share one tensor object
    (the router recognises a batch-wide prompt by that identity) and its gradient sums over them.
    """
    converted: dict[int, torch.Tensor | None] = {}
    out: list[torch.Tensor | None] = []
    for p in per_input(prompts, batch):
        if id(p) not in converted:
            if isinstance(p, SoftPrompt):
                converted[id(p)] = p.as_input(fm.dtype, fm.device)
            else:
                converted[id(p)] = None if p is None else p.to(device=fm.device, dtype=fm.dtype)
        out.append(converted[id(p)])
    return out


def pad(rows: Sequence[Sequence[int]], value: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad id lists -> ids [B, T] and mask [B, T]."""
    length = max(len(r) for r in rows)
    ids = torch.full((len(rows), length), value, dtype=torch.long)
    mask = torch.zeros(len(rows), length, dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, : len(row)] = 1
    return ids, mask


def cut_input(ids: list[int], limit: int) -> list[int]:
    """Keep the start and the end of an over-long input (question and cue survive), drop the middle."""
    if len(ids) <= limit:
        return ids
    tail = min(16, limit // 2)
    return ids[: limit - tail] + ids[-tail:]


def strip_bos(fm: FrozenModel, ids: list[int]) -> list[int]:
    """Input ids without the tokenizer's BOS: a cached prefix (BOS + prompt) already holds it."""
    if fm.adds_bos and ids[:1] == [fm.tokenizer.bos_token_id]:
        return ids[1:]
    return ids


def with_bos(fm: FrozenModel, ids: list[int]) -> list[int]:
    """Input ids as the plain (uncached) path takes them: BOS back in front, where the tokenizer puts it."""
    return [fm.tokenizer.bos_token_id, *ids] if fm.adds_bos else ids


@torch.no_grad()
def one_token_choices_row(fm: FrozenModel, options: Sequence[Encoded]) -> Encoded | None:
    """One row for all choices of one input when each is one token (negative/positive, True/False) on a
    causal LM: they are predicted at the same position, so the row reads every choice's log-probability
    there (`read_ids`) instead of one row per choice. None when a choice has more tokens (or for seq2seq)."""
    if fm.is_seq2seq or len(options) < 2 or any(len(p.target_ids) != 1 for p in options):
        return None
    return Encoded(options[0].input_ids, options[0].target_ids, read_ids=[p.target_ids[0] for p in options])
