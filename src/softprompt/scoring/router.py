"""The one place that decides how a batch is scored: context checked once, then the cheapest exact path.

    target_logprobs   per-token log-probabilities, differentiable (training's loss):
                      seq2seq | shared prefix (one prompt, or a long common token run) | plain rows
    score_encoded     summed log-likelihood of every choice of every input (rank classification, the
                      serving engine, ensembles): causal inputs whose prefix is cached and that fit the
                      attention window go to packed rows (packed.py), every other one to the rows above

Every path gives the same numbers (parity tests in tests/test_scoring.py, test_attach.py, test_engine.py);
the choice is about speed only. Prefix states come from a `PrefixCache` (the engine's registry keeps one
across requests; otherwise each call builds its own).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import torch

from softprompt.model.frozen import FrozenModel
from softprompt.model.prompt import SoftPrompt
from softprompt.scoring.inputs import (
    Encoded,
    InputTooLongError,
    PromptSpec,
    encode_pair,
    one_token_choices_row,
    per_input,
    prompt_list,
)
from softprompt.scoring.logprobs import (
    MIN_COMMON_TOKENS,
    common_prefix_length,
    plain_logprobs,
    prefix_pays_off,
    seq2seq_logprobs,
    shared_prefix_logprobs,
    shared_prompt,
)
from softprompt.scoring.packed import fits_window, packed_choice_scores
from softprompt.scoring.prefix import PrefixCache, PrefixState, run_prefix


def check_context(
    fm: FrozenModel, prompt_lengths: Sequence[int], input_lengths: Sequence[int], extra_lengths: Sequence[int],
    what: str = "target",
) -> None:
    """Refuse prompt + input (+ target or new tokens, causal models) beyond the model's context, saying by how much.

    Input lengths count BOS as the tokenizer adds it (a cached prefix holds it instead: same total)."""
    limit = fm.context_size()
    if limit is None:
        return
    for p, n, k in zip(prompt_lengths, input_lengths, extra_lengths, strict=True):
        extra = 0 if fm.is_seq2seq else k
        if p + n + extra > limit:
            raise InputTooLongError(
                f"prompt ({p}) + input ({n}) + {what} ({extra}) tokens = {p + n + extra} > the model's context of "
                f"{limit}. Shorten the input (--max-input-tokens; Engine(max_input_tokens=...)) or use a shorter prompt."
            )


def check_fits(fm: FrozenModel, pairs: Sequence[Encoded], prompt_rows: Sequence[torch.Tensor | None]) -> None:
    """`check_context` for (input, target) pairs with their prompt rows [P_i, H]."""
    check_context(fm, [0 if r is None else r.shape[0] for r in prompt_rows], [len(p.input_ids) for p in pairs],
                  [len(p.target_ids) for p in pairs])


def target_logprobs(fm: FrozenModel, pairs: Sequence[Encoded], prompts: PromptSpec = None) -> list[torch.Tensor]:
    """Per-token log p(target token | prompt, input, previous target tokens), one [T_tgt_i] tensor per pair.

    Differentiable w.r.t. the prompts (wrap in `torch.no_grad()` to score). One forward for the batch.
    """
    prompt_rows = prompt_list(fm, prompts, len(pairs))
    check_fits(fm, pairs, prompt_rows)
    return rows_logprobs(fm, pairs, prompt_rows)


def rows_logprobs(fm: FrozenModel, pairs: Sequence[Encoded], prompt_rows: list[torch.Tensor | None]) -> list[torch.Tensor]:
    """`target_logprobs` after the context check: pick seq2seq, a shared prefix, or plain rows."""
    if fm.is_seq2seq:
        return seq2seq_logprobs(fm, pairs, prompt_rows)
    shared = shared_prompt(prompt_rows, len(pairs))  # one tensor object for every row: prompt_list converts once
    bos = fm.tokenizer.bos_token_id if fm.adds_bos else None
    if (shared is not None and prefix_pays_off(shared.shape[0], pairs)
            and all(p.input_ids[:1] == [bos] for p in pairs if bos is not None)):
        return shared_prefix_logprobs(fm, pairs, shared, bos)
    common = common_prefix_length(pairs) if all(p is None for p in prompt_rows) else 0
    if common >= MIN_COMMON_TOKENS:
        rest = [replace(p, input_ids=p.input_ids[common:]) for p in pairs]
        if prefix_pays_off(common, rest):
            # The shared tokens (BOS included) act as a prefix of embeddings: same ids, same states.
            prefix = fm.embed(torch.tensor([pairs[0].input_ids[:common]]))[0]
            return shared_prefix_logprobs(fm, rest, prefix, None)
    return plain_logprobs(fm, pairs, prompt_rows)


@torch.no_grad()
def score_choices(
    fm: FrozenModel,
    inputs: Sequence[str],
    choices: Sequence[Sequence[str]],
    prompts: PromptSpec = None,
    batch_size: int = 16,
    prefixes: PrefixCache | None = None,
) -> list[list[float]]:
    """Summed target log-likelihood of every choice of every input: `result[i][c]` (see `score_encoded`)."""
    return score_encoded(fm, [[encode_pair(fm, inputs[i], c) for c in options] for i, options in enumerate(choices)],
                         prompts, batch_size, prefixes)


@torch.no_grad()
def score_encoded(
    fm: FrozenModel, pairs: Sequence[Sequence[Encoded]], prompts: PromptSpec = None, batch_size: int = 16,
    prefixes: PrefixCache | None = None,
) -> list[list[float]]:
    """Summed log-likelihood `result[i][c]` of `pairs[i][c]` (every choice c of input i, same input ids).

    Causal inputs with a prompt (its prefix from `prefixes`, or a cache built for this call), or all without
    one (then the leading tokens they share are the prefix), are scored once for all their choices in packed
    rows; the rest as rows, one per (input, choice) or one per input when every choice is one token
    (True/False: they share the input and the position that predicts them), sorted by length so batches
    carry little padding.
    """
    specs = per_input(prompts, len(pairs))
    rows_of = prompt_list(fm, specs, len(pairs))
    check_fits(fm, [p for options in pairs for p in options], [r for r, o in zip(rows_of, pairs, strict=True) for _ in o])
    result: list[list[float]] = [[0.0] * len(options) for options in pairs]
    done = {} if fm.is_seq2seq or not pairs else _score_packed(fm, pairs, specs, prefixes or PrefixCache(fm), batch_size)
    for i, scores in done.items():
        result[i] = scores
    rows: list[tuple[Encoded, int, list[int]]] = []  # (row, input index, the choices it scores)
    for i in (i for i in range(len(pairs)) if i not in done):
        row = one_token_choices_row(fm, pairs[i])
        if row is not None:
            rows.append((row, i, list(range(len(pairs[i])))))
        else:
            rows += [(p, i, [c]) for c, p in enumerate(pairs[i])]
    order = sorted(range(len(rows)), key=lambda k: len(rows[k][0].input_ids) + len(rows[k][0].target_ids))
    for start in range(0, len(order), batch_size):
        chunk = order[start: start + batch_size]
        lps = rows_logprobs(fm, [rows[k][0] for k in chunk], [rows_of[rows[k][1]] for k in chunk])
        for k, lp in zip(chunk, lps, strict=True):
            row, i, scored = rows[k]
            # A plain row scores its one choice (summed over tokens); a read_ids row one value per choice.
            for c, value in zip(scored, [float(lp.sum())] if row.read_ids is None else lp.tolist(), strict=True):
                result[i][c] = value
    return result


def _score_packed(
    fm: FrozenModel, pairs: Sequence[Sequence[Encoded]], specs: list[SoftPrompt | torch.Tensor | None],
    prefixes: PrefixCache, batch_size: int,
) -> dict[int, list[float]]:
    """Score the inputs that the packed path takes: {input index: scores per choice}."""
    states, skip = _input_prefixes(fm, [options[0] for options in pairs], specs, prefixes)
    chosen = [i for i, options in enumerate(pairs) if states[i] is not None and fits_window(
        fm, states[i].length, len(options[0].input_ids) - skip, max(len(p.target_ids) for p in options))]
    scores = packed_choice_scores(fm, [pairs[i][0].input_ids[skip:] for i in chosen],
                                  [[p.target_ids for p in pairs[i]] for i in chosen], [states[i] for i in chosen],
                                  batch_size)
    return dict(zip(chosen, scores, strict=True))


def _input_prefixes(
    fm: FrozenModel, firsts: Sequence[Encoded], specs: list[SoftPrompt | torch.Tensor | None], prefixes: PrefixCache,
) -> tuple[list[PrefixState | None], int]:
    """Each input's prefix state (None: not on a cached prefix) and how many of its leading ids it holds.

    With prompts: BOS + prompt (the BOS rule: the input must start with BOS, which moves into the prefix).
    With no prompt at all: the leading tokens every input shares (BOS, a field name, a few-shot design).
    """
    if all(s is None for s in specs):
        skip = common_prefix_length(firsts)
        if skip == 0:
            return [None] * len(firsts), 0
        state = run_prefix(fm, fm.embed(torch.tensor([firsts[0].input_ids[:skip]]))[0])  # same ids, same states
        return [state] * len(firsts), skip
    skip = 1 if fm.adds_bos else 0
    bos = fm.tokenizer.bos_token_id
    return [None if s is None or (skip and p.input_ids[:1] != [bos]) else prefixes.get(s)
            for p, s in zip(firsts, specs, strict=True)], skip
