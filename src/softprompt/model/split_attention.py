"""SDPA's fused forward with a matmul backward: the training attention kernel for CPUs.

PyTorch's CPU flash-attention kernel is fast forward and slow backward: in a SmolLM2-135M training step
(B = 8, 128 input tokens, P = 20, bf16, 2 cores) its backward took 24% of the step, where the backward of
transformers' "eager" attention (matmul + softmax) takes 7%. Eager changes the forward too (its scores and
probabilities are rounded to bf16), which changed the loss trajectory of two runs (attention.py). This
kernel keeps SDPA's forward bit for bit — the same call, so the same loss — and computes the backward
with the standard attention gradient, recomputing the probabilities:

    P  = softmax(Q Kᵀ·s + M)              (recomputed in fp32, never stored between forward and backward)
    dV = Pᵀ dO      dS = P ∘ (dO Vᵀ - rowsum(dO ∘ O))      dQ = dS K·s      dK = dSᵀ Q·s

Registered with transformers' AttentionInterface as "softprompt_split"; `training_attention(fm, "split")`
switches a model to it. Falls back to plain SDPA when no gradient is needed, with dropout, or for features it
does not implement (soft-capping, position biases, sinks).
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

KERNEL_NAME = "softprompt_split"


class _FlashForwardMatmulBackward(torch.autograd.Function):
    """out [B, h, L, d] = softmax(q kᵀ·scale + mask) v, forward by the fused CPU kernel; `causal` (only with
    mask None and L == S) is the kernel's own causal flag, as SDPA passes it."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, scale: float,
        causal: bool,
    ) -> torch.Tensor:
        out, _lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
            q, k, v, 0.0, causal, attn_mask=mask, scale=scale
        )  # out [B, h, L, d], lse [B, h, L] fp32
        ctx.save_for_backward(q, k, v, mask, out)  # lse unused: the backward renormalises (see there)
        ctx.scale, ctx.causal = scale, causal
        return out

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        q, k, v, mask, out = ctx.saved_tensors
        scale = ctx.scale
        # In-place fp32 elementwise work: the [B, h, L, S] tensors are the backward's only large ones.
        scores = torch.matmul(q, k.transpose(-1, -2)).float().mul_(scale)  # [B, h, L, S]
        if mask is not None:
            scores.add_(mask)
        if ctx.causal:
            scores.masked_fill_(torch.ones(scores.shape[-2:], dtype=torch.bool, device=q.device).triu(1), -torch.inf)
        # softmax, not exp(scores - lse): the same probabilities, but torch.exp takes a slow path on the
        # masked -3.4e38 entries (4 ms instead of 0.6 on [8, 9, 129, 150]); softmax's own exp does not.
        probs = torch.softmax(scores, dim=-1)  # [B, h, L, S] fp32
        grad_out = grad_out.to(q.dtype)
        grad_v = torch.matmul(probs.to(q.dtype).transpose(-1, -2), grad_out)  # [B, h, S, d]
        row = (grad_out.float() * out.float()).sum(-1, keepdim=True)  # [B, h, L, 1]
        grad_scores = torch.matmul(grad_out, v.transpose(-1, -2)).float().sub_(row).mul_(probs).to(q.dtype)
        grad_q = torch.matmul(grad_scores, k).mul_(scale)  # [B, h, L, d]
        grad_k = torch.matmul(grad_scores.transpose(-1, -2), q).mul_(scale)  # [B, h, S, d]
        return grad_q, grad_k, grad_v, None, None, None


def split_attention_forward(
    module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
    attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
    is_causal: bool | None = None, **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """transformers attention-interface signature: query [B, h, L, d], key/value [B, h_kv, S, d], mask
    [B, 1, L, S] (additive or boolean) or None; returns ([B, L, h, d], None) like `sdpa_attention_forward`."""
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (query, key, value))
    unsupported = (dropout > 0.0 or query.device.type != "cpu" or kwargs.get("softcap") is not None
                   or kwargs.get("position_bias") is not None or kwargs.get("s_aux") is not None)
    if not needs_grad or unsupported:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, is_causal=is_causal, **kwargs)
    # Under CPU autocast (model tuning trains an fp32 copy) q/k may come out of the rotary embedding in fp32
    # and v in bf16: F.scaled_dot_product_attention is autocast to one dtype, the raw kernel below is not.
    dtype = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else query.dtype
    query, key, value = query.to(dtype), key.to(dtype), value.to(dtype)
    groups = getattr(module, "num_key_value_groups", 1)
    key, value = repeat_kv(key, groups), repeat_kv(value, groups)
    q_len, kv_len = query.shape[2], key.shape[2]
    mask = attention_mask
    # As in sdpa_attention_forward: the kernel's causal flag when there is no mask (same forward, same bits).
    causal = (is_causal if is_causal is not None else getattr(module, "is_causal", True)) and q_len > 1
    causal = causal and mask is None
    if causal and q_len != kv_len:  # queries are the last q_len of kv_len keys: an explicit mask says so
        mask = torch.ones(q_len, kv_len, dtype=torch.bool, device=query.device).tril(kv_len - q_len)[None, None]
        causal = False
    if mask is not None:
        if mask.dtype == torch.bool:
            mask = torch.zeros(mask.shape, dtype=query.dtype, device=query.device).masked_fill(
                ~mask, torch.finfo(query.dtype).min)
        mask = mask[:, :, :, :kv_len].to(query.dtype)
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    out = _FlashForwardMatmulBackward.apply(query, key, value, mask, scale, causal)
    return out.transpose(1, 2).contiguous(), None


AttentionInterface.register(KERNEL_NAME, split_attention_forward)
AttentionMaskInterface.register(KERNEL_NAME, sdpa_mask)  # the masks SDPA gets (unregistered names get none)
