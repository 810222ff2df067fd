"""Per-token log-probabilities of target texts: the three exact ways to run a batch of (input, target) rows.

    plain          [BOS] prompt input target    every row in full (`attach_causal`), one forward
    shared prefix  ([BOS] prompt) once at batch size 1, then every row on its keys/values (prefix.py):
                   one prompt for the batch, or a long common run of tokens (a few-shot design)
    seq2seq        the encoder reads prompt + input, the decoder scores the target by teacher forcing

All three are differentiable w.r.t. the prompt and give the same numbers (tested in value and gradient);
which one runs is decided in router.py. Training's loss and rank classification both end here, so what is
trained is exactly what is scored.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from softprompt.model.attach import attach_causal, attach_encoder
from softprompt.model.frozen import FrozenModel
from softprompt.model.prompt import SoftPrompt
from softprompt.scoring.head import logprobs_at
from softprompt.scoring.inputs import Encoded, PromptSpec, pad
from softprompt.scoring.prefix import base_model, forward_after_prefix, prepend_bos, run_prefix

# A common token prefix shorter than this is not worth a separate pass (zero-shot inputs share only BOS and a
# field name such as "premise:"; a few-shot design shares its instruction and every solved example).
MIN_COMMON_TOKENS = 16


def shared_prompt(prompts: PromptSpec, batch: int) -> SoftPrompt | torch.Tensor | None:
    """The one prompt every example uses, if there is one (then its prefix can run once per batch)."""
    if isinstance(prompts, SoftPrompt | torch.Tensor):
        return prompts
    if prompts is not None and batch and prompts[0] is not None and all(p is prompts[0] for p in prompts):
        return prompts[0]
    return None


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
    small ops cost time of their own; it pays off once the saving is over 8% of the plain path's tokens
    (measurements: benchmarks/README.md). Both paths give the same numbers (tested): a speed choice only.
    """
    batch = len(pairs)
    plain = batch * prompt_length + sum(len(p.input_ids) + len(p.target_ids) for p in pairs)
    return (batch - 1) * prompt_length > 0.08 * plain


def plain_logprobs(fm: FrozenModel, pairs: Sequence[Encoded], prompt_rows: list[torch.Tensor | None]) -> list[torch.Tensor]:
    """Every row in full: [BOS] + its prompt [P_b, H] + input + target, right-padded, one forward."""
    ids, mask = pad([p.input_ids + p.target_ids for p in pairs], fm.tokenizer.pad_token_id)
    att = attach_causal(fm.embed(ids), mask.to(fm.device), prompt_rows, after_bos=fm.adds_bos)
    hidden = base_model(fm)(
        inputs_embeds=att.inputs_embeds, attention_mask=att.attention_mask, position_ids=att.position_ids,
        use_cache=False,
    ).last_hidden_state  # [B, L, H]
    # Target token j of pair b sits at input position len(input_b) + j; the state before it predicts it.
    before = [
        (att.token_index[b, len(p.input_ids): len(p.input_ids) + len(p.target_ids)] - 1).tolist()
        for b, p in enumerate(pairs)
    ]
    return logprobs_at(fm, hidden, before, pairs)


def shared_prefix_logprobs(
    fm: FrozenModel, pairs: Sequence[Encoded], prompt: torch.Tensor, bos: int | None
) -> list[torch.Tensor]:
    """One prefix [P', H] for the whole batch: run ([BOS] +) prefix once, then every row after it.

    `bos` given: the rows' inputs start with it and it moves into the prefix, before the prompt. None: the
    prefix is already complete (a prompt without BOS, or the embedded common tokens, BOS included).
    """
    skip = 0 if bos is None else 1
    prefix = prompt if bos is None else prepend_bos(fm, prompt)
    state = run_prefix(fm, prefix)
    ids, mask = pad([p.input_ids[skip:] + p.target_ids for p in pairs], fm.tokenizer.pad_token_id)
    hidden = forward_after_prefix(fm, state, fm.embed(ids), mask.to(fm.device))  # [B, 1+T, H]
    # Target token j of pair b is input position n_b + j (n_b = input length after the BOS moved out);
    # hidden row n_b + j holds the state just before it (row 0 is the prefix's last state).
    before = [range(len(p.input_ids) - skip, len(p.input_ids) - skip + len(p.target_ids)) for p in pairs]
    return logprobs_at(fm, hidden, before, pairs)


def seq2seq_logprobs(
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
