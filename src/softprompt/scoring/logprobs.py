"""Log-likelihoods of target texts and greedy generation, with soft prompts, for any frozen model.

The one primitive is `target_logprobs`: per-token log-probabilities of each example's target given its
prompt and input. Training's loss and evaluation's rank classification both call it, so what is trained is
exactly what is scored. The LM head runs only at target positions: on a 49k vocabulary the head over all
P+T positions would cost more than the 30 transformer layers. Whatever every row of a batch starts with, a
shared soft prompt or a long common run of tokens (a few-shot design), runs once at batch size 1 (prefix.py).

Target tokenization: a target is tokenized as `" " + target` when the input does not end in whitespace
(label words are words that follow the input); seq2seq targets get the tokenizer's EOS as T5 does.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import replace

import torch
import torch.nn.functional as F

from softprompt.model.attach import attach_causal, attach_encoder
from softprompt.model.frozen import FrozenModel
from softprompt.model.prompt import SoftPrompt
from softprompt.scoring.inputs import (
    Encoded,
    InputTooLongError,
    PromptSpec,
    encode_pair,
    one_token_choices_row,
    pad,
    prompt_list,
)
from softprompt.scoring.prefix import forward_after_prefix, prepend_bos, run_prefix


def head_logits(fm: FrozenModel, hidden: torch.Tensor) -> torch.Tensor:
    """Hidden states [N, H] -> fp32 logits [N, V], with the model's own final softcapping if it has one."""
    logits = fm.model.get_output_embeddings()(hidden).float()
    cap = getattr(fm.model.config, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits


def target_logprobs(fm: FrozenModel, pairs: Sequence[Encoded], prompts: PromptSpec = None) -> list[torch.Tensor]:
    """Per-token log p(target token | prompt, input, previous target tokens), one [T_tgt_i] tensor per pair.

    Differentiable w.r.t. the prompts (wrap in `torch.no_grad()` to score). One forward for the batch.
    """
    shared = shared_prompt(prompts, len(pairs))
    prompt_rows = prompt_list(fm, prompts if shared is None else shared, len(pairs))
    check_fits(fm, pairs, prompt_rows)
    if fm.is_seq2seq:
        return _seq2seq_logprobs(fm, pairs, prompt_rows)
    bos = fm.tokenizer.bos_token_id if fm.adds_bos else None
    if (shared is not None and prefix_pays_off(prompt_rows[0].shape[0], pairs)
            and all(p.input_ids[:1] == [bos] for p in pairs if bos is not None)):
        return _shared_prefix_logprobs(fm, pairs, prompt_rows[0], bos)
    common = common_prefix_length(pairs) if all(p is None for p in prompt_rows) else 0
    if common >= MIN_COMMON_TOKENS:
        rest = [replace(p, input_ids=p.input_ids[common:]) for p in pairs]
        if prefix_pays_off(common, rest):
            # The shared tokens (BOS included) act as a prefix of embeddings: same ids, same states.
            prefix = fm.embed(torch.tensor([pairs[0].input_ids[:common]]))[0]
            return _shared_prefix_logprobs(fm, rest, prefix, None)
    ids, mask = pad([p.input_ids + p.target_ids for p in pairs], fm.tokenizer.pad_token_id)
    att = attach_causal(fm.embed(ids), mask.to(fm.device), prompt_rows, after_bos=fm.adds_bos)
    base = getattr(fm.model, fm.model.base_model_prefix)
    hidden = base(
        inputs_embeds=att.inputs_embeds, attention_mask=att.attention_mask, position_ids=att.position_ids,
        use_cache=False,
    ).last_hidden_state  # [B, L, H]
    # Target token j of pair b sits at input position len(input_b) + j; the state before it predicts it.
    before = [
        (att.token_index[b, len(p.input_ids): len(p.input_ids) + len(p.target_ids)] - 1).tolist()
        for b, p in enumerate(pairs)
    ]
    return logprobs_at(fm, hidden, before, pairs)


def logprobs_at(
    fm: FrozenModel, hidden: torch.Tensor, positions: Sequence[Sequence[int]], pairs: Sequence[Encoded]
) -> list[torch.Tensor]:
    """Run the LM head only on the hidden states [B, L, H] at `positions[b]` (one per target token of pair b)
    and return each target token's log-probability, one [T_tgt_b] tensor per pair ([len(read_ids)] for a
    pair with `read_ids`: those tokens, all read at its one target position)."""
    rows = [b for b, cols in enumerate(positions) for _ in cols]
    cols = [c for cols in positions for c in cols]
    picked = hidden[torch.tensor(rows, device=hidden.device), torch.tensor(cols, device=hidden.device)]  # [N, H]
    logprobs = F.log_softmax(head_logits(fm, picked), dim=-1)  # [N, V]: one row per target token
    reads = [p.read_ids or p.target_ids for p in pairs]
    starts = list(itertools.accumulate((len(c) for c in positions), initial=0))
    row_of = [starts[b] + (0 if p.read_ids else j) for b, p in enumerate(pairs) for j in range(len(reads[b]))]
    gold = [t for ids in reads for t in ids]
    token_lp = logprobs[torch.tensor(row_of, device=hidden.device), torch.tensor(gold, device=hidden.device)]
    return list(token_lp.split([len(ids) for ids in reads]))


def shared_prompt(prompts: PromptSpec, batch: int) -> SoftPrompt | torch.Tensor | None:
    """The one prompt every example uses, if there is one (then its prefix can run once per batch)."""
    if isinstance(prompts, SoftPrompt | torch.Tensor):
        return prompts
    if prompts is not None and batch and prompts[0] is not None and all(p is prompts[0] for p in prompts):
        return prompts[0]
    return None


# A common token prefix shorter than this is not worth a separate pass (zero-shot inputs share only BOS and a
# field name such as "premise:"; a few-shot design shares its instruction and every solved example).
MIN_COMMON_TOKENS = 16


def common_prefix_length(pairs: Sequence[Encoded]) -> int:
    """How many leading input tokens every pair has in common (the few-shot design text, BOS included)."""
    if not pairs:
        return 0
    first = pairs[0].input_ids
    n = min(len(p.input_ids) for p in pairs)
    for p in pairs[1:]:
        ids = p.input_ids
        n = next((i for i in range(n) if ids[i] != first[i]), n)
    return n


def prefix_pays_off(prompt_length: int, pairs: Sequence[Encoded]) -> bool:
    """Whether running the prompt once per batch saves enough to beat its extra batch-1 pass.

    The shared path saves (B-1)·P token positions but adds a separate pass through every layer, whose many
    small ops cost time of their own. Measured on a quiet 2-core CPU (bf16, P = 20, B = 8, one training step):
    128-token inputs (saving 11.6% of the tokens) 1.74 s shared vs 2.06 s plain with eager attention, 2.20 s
    shared vs 2.24 s plain with SDPA; 300-token inputs (saving 5.5%, eager) 4.48 s vs 4.42 s. Both paths give
    the same numbers (tested), so this is purely a speed choice: share when the saving is over 8%.
    """
    batch = len(pairs)
    plain = batch * prompt_length + sum(len(p.input_ids) + len(p.target_ids) for p in pairs)
    return (batch - 1) * prompt_length > 0.08 * plain


def _shared_prefix_logprobs(
    fm: FrozenModel, pairs: Sequence[Encoded], prompt: torch.Tensor, bos: int | None
) -> list[torch.Tensor]:
    """One prompt for the whole batch: run [BOS] + prompt once, then every example after it (prefix.py)."""
    skip = 0 if bos is None else 1  # BOS moves into the shared prefix
    prefix = prompt if bos is None else prepend_bos(fm, prompt)
    state = run_prefix(fm, prefix)
    ids, mask = pad([p.input_ids[skip:] + p.target_ids for p in pairs], fm.tokenizer.pad_token_id)
    hidden = forward_after_prefix(fm, state, fm.embed(ids), mask.to(fm.device))  # [B, 1+T, H]
    # Target token j of pair b is input position n_b + j (n_b = input length after the BOS moved out);
    # hidden row n_b + j holds the state just before it (row 0 is the prefix's last state).
    before = [range(len(p.input_ids) - skip, len(p.input_ids) - skip + len(p.target_ids)) for p in pairs]
    return logprobs_at(fm, hidden, before, pairs)


def _seq2seq_logprobs(
    fm: FrozenModel, pairs: Sequence[Encoded], prompt_rows: list[torch.Tensor | None]
) -> list[torch.Tensor]:
    """Encoder gets prompt + input; the decoder scores the target by teacher forcing."""
    ids, mask = pad([p.input_ids for p in pairs], fm.tokenizer.pad_token_id)
    att = attach_encoder(fm.embed(ids), mask.to(fm.device), prompt_rows)
    labels, label_mask = pad([p.target_ids for p in pairs], fm.tokenizer.pad_token_id)
    labels = labels.masked_fill(label_mask == 0, -100).to(fm.device)
    # No position_ids: T5-style encoders use relative position buckets computed from the mask layout.
    out = fm.model(
        inputs_embeds=att.inputs_embeds, attention_mask=att.attention_mask, labels=labels,
        decoder_attention_mask=label_mask.to(fm.device), use_cache=False,
    )
    logprobs = F.log_softmax(out.logits.float(), dim=-1)  # decoder positions are all targets: [B, T_tgt, V]
    token_lp = logprobs.gather(2, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return [token_lp[b, : len(p.target_ids)] for b, p in enumerate(pairs)]


def check_fits(fm: FrozenModel, pairs: Sequence[Encoded], prompt_rows: Sequence[torch.Tensor | None]) -> None:
    """Refuse sequences longer than the model's context, saying by how much."""
    limit = fm.context_size()
    if limit is None:
        return
    for pair, prompt in zip(pairs, prompt_rows, strict=True):
        p = 0 if prompt is None else prompt.shape[0]
        total = p + len(pair.input_ids) + (0 if fm.is_seq2seq else len(pair.target_ids))
        if total > limit:
            raise InputTooLongError(
                f"prompt ({p}) + input ({len(pair.input_ids)}) + target tokens = {total} > the model's context "
                f"of {limit}. Shorten the input (e.g. --max-input-tokens) or use a shorter prompt."
            )


@torch.no_grad()
def score_choices(
    fm: FrozenModel,
    inputs: Sequence[str],
    choices: Sequence[Sequence[str]],
    prompts: PromptSpec = None,
    batch_size: int = 16,
) -> list[list[float]]:
    """Summed target log-likelihood of every choice of every input: `result[i][c]` (see `score_encoded`)."""
    return score_encoded(fm, [[encode_pair(fm, inputs[i], c) for c in options] for i, options in enumerate(choices)],
                         prompts, batch_size)


def score_encoded(
    fm: FrozenModel, pairs: Sequence[Sequence[Encoded]], prompts: PromptSpec = None, batch_size: int = 16
) -> list[list[float]]:
    """Summed log-likelihood `result[i][c]` of `pairs[i][c]` (every choice c of input i, same input ids).

    Causal LMs with one prompt for all inputs (or none) score each input once for all its choices, in
    packed rows on a shared prefix (packed_scoring.py). Otherwise each (input, choice) pair is one row,
    except that all choices of an input share one row when each is one token (True/False): they share the
    input and the position that predicts them. Rows are sorted by length so batches carry little padding.
    """
    per_input = prompt_list(fm, prompts, len(pairs))
    check_fits(fm, [p for options in pairs for p in options], [r for r, o in zip(per_input, pairs, strict=True) for _ in o])
    result: list[list[float]] = [[0.0] * len(options) for options in pairs]
    todo = list(range(len(pairs)))
    if not fm.is_seq2seq and pairs:
        from softprompt.scoring.packed import score_packed

        shared = shared_prompt(prompts, len(pairs))
        if shared is not None or all(p is None for p in per_input):
            done = score_packed(fm, pairs, per_input[0] if shared is not None else None, batch_size)
            for i, scores in done.items():
                result[i] = scores
            todo = [i for i in todo if i not in done]
    rows: list[tuple[Encoded, int, list[int]]] = []  # (row, input index, the choices it scores)
    for i in todo:
        options = pairs[i]
        row = one_token_choices_row(fm, options)
        if row is not None:
            rows.append((row, i, list(range(len(options)))))
        else:
            rows += [(p, i, [c]) for c, p in enumerate(options)]
    order = sorted(range(len(rows)), key=lambda k: len(rows[k][0].input_ids) + len(rows[k][0].target_ids))
    for start in range(0, len(order), batch_size):
        chunk = order[start: start + batch_size]
        lps = target_logprobs(fm, [rows[k][0] for k in chunk], [per_input[rows[k][1]] for k in chunk])
        for k, lp in zip(chunk, lps, strict=True):
            row, i, scored = rows[k]
            # A plain row scores its one choice (summed over tokens); a read_ids row one value per choice.
            for c, value in zip(scored, [float(lp.sum())] if row.read_ids is None else lp.tolist(), strict=True):
                result[i][c] = value
    return result


@torch.no_grad()
def generate(
    fm: FrozenModel,
    inputs: Sequence[str],
    prompts: PromptSpec = None,
    max_new_tokens: int = 32,
    batch_size: int = 16,
    stop_at_newline: bool = True,
) -> list[str]:
    """Greedy continuation of each input with its prompt; the prompt stays in the KV cache throughout
    (PEFT #2123 dropped it after the first step). Stops at EOS, or a newline when `stop_at_newline`."""
    rows = prompt_list(fm, prompts, len(inputs))
    out: list[str] = []
    for start in range(0, len(inputs), batch_size):
        ids = [fm.tokenizer(text).input_ids for text in inputs[start: start + batch_size]]
        new_tokens = generate_ids(fm, ids, rows[start: start + batch_size], max_new_tokens, stop_at_newline)
        out += [fm.tokenizer.decode(t, skip_special_tokens=True).strip() for t in new_tokens]
    return out


def generate_ids(
    fm: FrozenModel, ids: list[list[int]], prompts: PromptSpec, max_new_tokens: int, stop_at_newline: bool = True
) -> list[list[int]]:
    """`generate` for one batch of tokenized inputs (BOS included as the tokenizer adds it): new token ids."""
    step = _generate_seq2seq if fm.is_seq2seq else _generate_causal
    return step(fm, ids, prompt_list(fm, prompts, len(ids)), max_new_tokens, stop_at_newline)


def generation_stopped(fm: FrozenModel, tokens: list[int], stop_at_newline: bool) -> bool:
    """Greedy decoding ends at EOS, or once the decoded text holds a newline (shared with the engine)."""
    if tokens and tokens[-1] == fm.tokenizer.eos_token_id:
        return True
    return stop_at_newline and "\n" in fm.tokenizer.decode(tokens, skip_special_tokens=True)


def trim_at_eos(fm: FrozenModel, tokens: list[int]) -> list[int]:
    """Cut at EOS; the decoded text is cut at the first newline by the caller's strip/split."""
    if fm.tokenizer.eos_token_id in tokens:
        tokens = tokens[: tokens.index(fm.tokenizer.eos_token_id)]
    return tokens


def _generate_causal(
    fm: FrozenModel, ids: list[list[int]], prompts: list[torch.Tensor | None], max_new: int, stop_nl: bool
) -> list[list[int]]:
    """Left-padded batch; the first forward fills the KV cache with prompt + input, then one token a step."""
    input_ids, mask = pad(ids, fm.tokenizer.pad_token_id)
    att = attach_causal(fm.embed(input_ids), mask.to(fm.device), prompts, after_bos=fm.adds_bos, left_pad=True)
    attention, positions = att.attention_mask, att.position_ids
    out = fm.model(
        inputs_embeds=att.inputs_embeds, attention_mask=attention, position_ids=positions, use_cache=True,
        logits_to_keep=1,
    )
    generated: list[list[int]] = [[] for _ in ids]
    done = [False] * len(ids)
    for _ in range(max_new):
        next_ids = out.logits[:, -1].argmax(dim=-1)  # [B]
        for b, tok in enumerate(next_ids.tolist()):
            if not done[b]:
                generated[b].append(tok)
                done[b] = generation_stopped(fm, generated[b], stop_nl)
        if all(done):
            break
        attention = torch.cat([attention, attention.new_ones(len(ids), 1)], dim=1)
        positions = positions[:, -1:] + 1
        out = fm.model(
            input_ids=next_ids.unsqueeze(1), attention_mask=attention, position_ids=positions,
            cache=out.cache, use_cache=True, logits_to_keep=1,
        )
    return [trim_at_eos(fm, g) for g in generated]


def _generate_seq2seq(
    fm: FrozenModel, ids: list[list[int]], prompts: list[torch.Tensor | None], max_new: int, stop_nl: bool
) -> list[list[int]]:
    """Encoder sees prompt + input once; transformers' greedy decoder loop reuses its output."""
    input_ids, mask = pad(ids, fm.tokenizer.pad_token_id)
    att = attach_encoder(fm.embed(input_ids), mask.to(fm.device), prompts)
    seqs = fm.model.generate(
        inputs_embeds=att.inputs_embeds, attention_mask=att.attention_mask, max_new_tokens=max_new,
        do_sample=False, num_beams=1,
    )
    return [trim_at_eos(fm, [t for t in row.tolist() if t != fm.tokenizer.pad_token_id]) for row in seqs]
