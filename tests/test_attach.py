"""Placement of prompts and padding invariance, on tiny Llama and T5 models."""

from __future__ import annotations

import pytest
import torch
from tiny import tiny_causal, tiny_gemma3, tiny_seq2seq

from softprompt.model.attach import attach, attach_causal
from softprompt.scoring import encode_pair, pad, target_logprobs
from softprompt.training.init import make_prompt

TEXTS = [
    "the movie was great",
    "a terrible film , boring and far too long and the actors were wonderful on a clear day",
    "question : is the sky blue ?",
]


def test_prompt_goes_after_bos_and_positions_continue():
    embeds = torch.arange(2 * 4, dtype=torch.float32).view(2, 4, 1)  # token t of example b has value 4b+t
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])
    prompts = [torch.full((2, 1), -1.0), torch.full((3, 1), -2.0)]
    att = attach(embeds, mask, prompts, keep_first=True)
    assert att.inputs_embeds[0, :, 0].tolist() == [0, -1, -1, 1, 2, 0, 0]
    assert att.inputs_embeds[1, :, 0].tolist() == [4, -2, -2, -2, 5, 6, 7]
    assert att.attention_mask.tolist() == [[1, 1, 1, 1, 1, 0, 0], [1] * 7]
    assert att.position_ids[0, :5].tolist() == [0, 1, 2, 3, 4]
    assert att.token_index.tolist() == [[0, 3, 4, -1], [0, 4, 5, 6]]


def test_left_padded_input_keeps_left_padding_and_bos_first():
    embeds = torch.arange(4, dtype=torch.float32).view(1, 4, 1)
    mask = torch.tensor([[0, 1, 1, 1]])
    att = attach(embeds, mask, [torch.full((2, 1), -1.0)], keep_first=True, left_pad=True)
    assert att.inputs_embeds[0, :, 0].tolist() == [1, -1, -1, 2, 3]
    assert att.position_ids[0].tolist() == [0, 1, 2, 3, 4]


def test_no_prompt_and_mixed_lengths_in_one_batch():
    embeds = torch.ones(3, 2, 1)
    mask = torch.ones(3, 2, dtype=torch.long)
    att = attach(embeds, mask, [None, torch.zeros(1, 1), torch.zeros(4, 1)])
    assert att.attention_mask.sum(dim=1).tolist() == [2, 3, 6]


def test_gradient_reaches_only_the_prompt():
    fm = tiny_causal()
    prompt = make_prompt(fm, 4, "random-uniform")
    lp = target_logprobs(fm, [encode_pair(fm, TEXTS[0], "positive")], prompt)
    lp[0].sum().backward()
    assert prompt.embeddings.grad is not None and prompt.embeddings.grad.abs().sum() > 0
    assert all(p.grad is None for p in fm.model.parameters())


@pytest.mark.parametrize("make", [lambda: tiny_causal(add_bos=True), lambda: tiny_causal(add_bos=False), tiny_seq2seq])
def test_scores_do_not_depend_on_batch_neighbours(make):
    """Each example's token log-probs are the same alone and batched with longer ones (mixed P)."""
    fm = make()
    prompts = [make_prompt(fm, p, "random-uniform", seed=p) for p in (3, 7, 1)]
    pairs = [encode_pair(fm, t, target) for t, target in zip(TEXTS, ["positive", "not_entailment", "yes"], strict=True)]
    with torch.no_grad():
        batched = target_logprobs(fm, pairs, prompts)
        for i, pair in enumerate(pairs):
            alone = target_logprobs(fm, [pair], prompts[i])[0]
            torch.testing.assert_close(batched[i], alone, atol=1e-5, rtol=0)


@pytest.mark.parametrize("add_bos", [True, False])
def test_left_and_right_padding_give_the_same_causal_logprobs(add_bos):
    """Run the model on a left-padded and a right-padded batch; real positions must agree (≤1e-5)."""
    fm = tiny_causal(add_bos=add_bos)
    prompt = make_prompt(fm, 5, "random-uniform").as_input(fm.dtype, fm.device)
    rows = [fm.tokenizer(t).input_ids for t in TEXTS]
    right_ids, right_mask = pad(rows, 0)
    width = right_ids.shape[1]
    left_ids = torch.zeros_like(right_ids)
    left_mask = torch.zeros_like(right_mask)
    for i, row in enumerate(rows):
        left_ids[i, width - len(row):] = torch.tensor(row)
        left_mask[i, width - len(row):] = 1

    def real_logprobs(ids, mask, left):
        att = attach_causal(fm.embed(ids), mask, [prompt] * len(ids), after_bos=fm.adds_bos, left_pad=left)
        with torch.no_grad():
            logits = fm.model(inputs_embeds=att.inputs_embeds, attention_mask=att.attention_mask,
                              position_ids=att.position_ids).logits.log_softmax(-1)
        return [logits[i, att.token_index[i][mask[i].bool()]] for i in range(len(ids))]

    for i, (a, b) in enumerate(zip(real_logprobs(right_ids, right_mask, False), real_logprobs(left_ids, left_mask, True), strict=True)):
        with torch.no_grad():
            single = real_logprobs(torch.tensor([rows[i]]), torch.ones(1, len(rows[i]), dtype=torch.long), False)[0]
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
        torch.testing.assert_close(a, single, atol=1e-5, rtol=0)


@pytest.mark.parametrize("model", ["llama-bos", "llama", "gemma3"])
def test_shared_prefix_path_equals_the_plain_path_in_value_and_gradient(model):
    """One prompt for the batch runs once (prefix.py); per-example copies take the gather path. Gemma-3's
    sliding window (4) is shorter than BOS + prompt, so its sliding cache layers must drop the same keys."""
    fm = tiny_gemma3() if model == "gemma3" else tiny_causal(add_bos=model == "llama-bos")
    prompt = make_prompt(fm, 6, "random-uniform", seed=2)
    pairs = [encode_pair(fm, t, "positive") for t in TEXTS]
    shared = target_logprobs(fm, pairs, prompt)
    (g_shared,) = torch.autograd.grad(torch.cat(shared).sum(), prompt.embeddings)
    copies = [prompt.embeddings.clone() for _ in pairs]  # distinct objects: no shared prefix
    plain = target_logprobs(fm, pairs, copies)
    grads = torch.autograd.grad(torch.cat(plain).sum(), copies)
    for a, b in zip(shared, plain, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    torch.testing.assert_close(g_shared, sum(grads), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("model", ["llama-bos", "llama", "gemma3"])
def test_common_text_prefix_runs_once_and_scores_like_the_plain_path(model, monkeypatch):
    """Few-shot inputs share their instruction and solved examples: those tokens run once per batch and the
    scores equal the plain path's (which scoring takes when the shared part is too short to pay off)."""
    import softprompt.scoring.router as router
    from softprompt.evaluation.baselines import design_inputs
    from softprompt.scoring.logprobs import common_prefix_length

    fm = tiny_gemma3() if model == "gemma3" else tiny_causal(add_bos=model == "llama-bos")
    design = "classify the sentence . " * 4 + "the movie was great answer : positive"
    inputs = design_inputs(TEXTS, design)
    pairs = [encode_pair(fm, t, w) for t in inputs for w in ("positive", "negative")]
    assert common_prefix_length(pairs) >= router.MIN_COMMON_TOKENS
    calls = []
    real = router.shared_prefix_logprobs
    monkeypatch.setattr(router, "shared_prefix_logprobs", lambda *a: calls.append(a[2].shape) or real(*a))
    with torch.no_grad():
        shared = target_logprobs(fm, pairs)
        monkeypatch.setattr(router, "MIN_COMMON_TOKENS", 10**6)  # forces the plain path
        plain = target_logprobs(fm, pairs)
    assert len(calls) == 1 and calls[0][0] == common_prefix_length(pairs)
    for a, b in zip(shared, plain, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_common_prefix_length_stops_at_the_first_difference():
    from softprompt.scoring import Encoded
    from softprompt.scoring.logprobs import common_prefix_length

    assert common_prefix_length([Encoded([1, 2, 3, 4], [9]), Encoded([1, 2, 5], [9]), Encoded([1, 2, 3], [8])]) == 2
    assert common_prefix_length([Encoded([1, 2], [9]), Encoded([1, 2], [8])]) == 2
    assert common_prefix_length([]) == 0
