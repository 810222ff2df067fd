"""The split training kernel: SDPA's forward bit for bit, gradients equal to SDPA's."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from tiny import tiny_causal, tiny_gemma3

import softprompt.scoring.router as router
from softprompt.model.attention import training_attention
from softprompt.model.split_attention import _FlashForwardMatmulBackward
from softprompt.scoring import encode_pair, target_logprobs
from softprompt.training.init import make_prompt

TEXTS = ["the movie was great", "a terrible film , boring and far too long", "fine day"]


def loss_and_grad(fm, prompt, pairs, kernel: str | None) -> tuple[torch.Tensor, torch.Tensor]:
    prompt.embeddings.grad = None
    with training_attention(fm, kernel):
        loss = -torch.cat(target_logprobs(fm, pairs, prompt)).sum()
    loss.backward()
    return loss.detach(), prompt.embeddings.grad.clone()


@pytest.mark.parametrize("shared_prefix", [False, True], ids=["plain", "shared-prefix"])
def test_split_gives_sdpas_loss_and_gradients(monkeypatch, shared_prefix):
    # Plain path: one padded batch, causal + padding mask. Shared prefix: inputs on top of a cached prompt
    # (more keys than queries). Both must match SDPA in fp32.
    monkeypatch.setattr(router, "prefix_pays_off", lambda *a, **k: shared_prefix)
    fm = tiny_causal()
    fm.model.set_attn_implementation("sdpa")
    prompt = make_prompt(fm, 4, "random-uniform", seed=0)
    pairs = [encode_pair(fm, t, "positive", append_eos=True) for t in TEXTS]
    ref_loss, ref_grad = loss_and_grad(fm, prompt, pairs, None)
    loss, grad = loss_and_grad(fm, prompt, pairs, "split")
    assert fm.model.config._attn_implementation == "sdpa"  # switched back
    assert ref_grad.abs().sum() > 0
    torch.testing.assert_close(loss, ref_loss, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(grad, ref_grad, atol=1e-5, rtol=1e-4)


def test_split_forward_is_sdpas_bit_for_bit_in_bf16():
    fm = tiny_causal(dtype=torch.bfloat16)
    fm.model.set_attn_implementation("sdpa")
    prompt = make_prompt(fm, 4, "random-uniform", seed=0)
    pairs = [encode_pair(fm, t, "positive", append_eos=True) for t in TEXTS]
    ref_loss, ref_grad = loss_and_grad(fm, prompt, pairs, None)
    loss, grad = loss_and_grad(fm, prompt, pairs, "split")
    assert torch.equal(loss, ref_loss)
    # bf16 backward: not bit-equal, but close (eager's forward is already off by 0.02 in this loss).
    assert (grad - ref_grad).norm() / ref_grad.norm() < 0.05


@pytest.mark.parametrize("causal", [False, True])
def test_kernel_gradients_match_sdpa_on_random_tensors(causal):
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 6, 8, requires_grad=True) for _ in range(3))
    mask = None
    if not causal:  # an additive mask that blocks some keys of some queries, as transformers builds them
        blocked = torch.rand(2, 1, 6, 6) < 0.3
        blocked[..., 0] = False
        mask = torch.zeros(2, 1, 6, 6).masked_fill(blocked, torch.finfo(torch.float32).min)
    grad_out = torch.randn(2, 3, 6, 8)
    ours = _FlashForwardMatmulBackward.apply(q, k, v, mask, 0.3, causal)
    grads = torch.autograd.grad(ours, (q, k, v), grad_out)
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal, scale=0.3)
    ref_grads = torch.autograd.grad(ref, (q, k, v), grad_out)
    torch.testing.assert_close(ours, ref, atol=1e-6, rtol=1e-5)
    for a, b in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_without_gradients_it_is_plain_sdpa(monkeypatch):
    calls = []
    monkeypatch.setattr(_FlashForwardMatmulBackward, "apply", lambda *a: calls.append(a))
    fm = tiny_causal()
    fm.model.set_attn_implementation("sdpa")
    prompt = make_prompt(fm, 4, "random-uniform", seed=0)
    pairs = [encode_pair(fm, t, "positive") for t in TEXTS]
    with torch.no_grad(), training_attention(fm, "split"):
        target_logprobs(fm, pairs, prompt)
    assert calls == []


def test_gemma3_sliding_window_and_padding_match_sdpa():
    # Gemma-3 (the second model family): sliding-window layers, one KV head, its own query scaling.
    from softprompt.model.split_attention import KERNEL_NAME

    model = tiny_gemma3(sliding_window=4).model
    embeds = torch.randn(2, 10, 32, requires_grad=True)
    mask = torch.ones(2, 10, dtype=torch.long)
    mask[1, 7:] = 0  # right padding
    results = []
    for kernel in ("sdpa", KERNEL_NAME):
        model.set_attn_implementation(kernel)
        embeds.grad = None
        logits = model(inputs_embeds=embeds, attention_mask=mask).logits
        (logits[0].sum() + logits[1, :7].sum()).backward()
        results.append((logits[0].detach(), logits[1, :7].detach(), embeds.grad.clone()))
    for ours, ref in zip(results[1], results[0], strict=True):
        torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-4)


def test_under_cpu_autocast_it_matches_sdpa_on_an_fp32_model():
    # Model tuning trains an fp32 copy under bf16 autocast, where q/k and v can reach attention in different
    # dtypes; SDPA is autocast to bf16, and the split kernel must do the same (it once raised instead).
    fm = tiny_causal()
    fm.model.set_attn_implementation("sdpa")
    pairs = [encode_pair(fm, t, "positive", append_eos=True) for t in TEXTS]
    losses, grads = [], []
    for kernel in (None, "split"):
        fm.model.zero_grad(set_to_none=True)
        for p in fm.model.parameters():
            p.requires_grad_(True)
        with training_attention(fm, kernel), torch.autocast("cpu", dtype=torch.bfloat16):
            loss = -torch.cat(target_logprobs(fm, pairs, None)).sum()
        loss.backward()
        losses.append(loss.detach())
        grads.append(fm.model.model.layers[0].self_attn.q_proj.weight.grad.clone())
    assert torch.equal(losses[0], losses[1])
    assert (grads[1] - grads[0]).norm() / grads[0].norm() < 0.05
