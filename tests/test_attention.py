"""The training attention switch: same gradients as SDPA, config restored afterwards (even on errors)."""

from __future__ import annotations

import pytest
import torch
from tiny import tiny_causal

from softprompt.model.attention import KERNELS, training_attention
from softprompt.scoring import encode_pair, target_logprobs
from softprompt.training.init import make_prompt

EAGER = "eager"  # the kernel `--attention eager` selects


def test_eager_is_an_attention_choice():
    assert EAGER in KERNELS


def prompt_grad(fm, prompt, pairs, switched: bool) -> torch.Tensor:
    prompt.embeddings.grad = None
    if switched:
        with training_attention(fm, EAGER):
            assert fm.model.config._attn_implementation == EAGER
            loss = -torch.cat(target_logprobs(fm, pairs, prompt)).sum()
    else:
        loss = -torch.cat(target_logprobs(fm, pairs, prompt)).sum()
    loss.backward()
    return prompt.embeddings.grad.clone()


def test_training_attention_gives_the_sdpa_gradients_and_switches_back():
    fm = tiny_causal()
    fm.model.set_attn_implementation("sdpa")
    prompt = make_prompt(fm, 4, "random-uniform", seed=0)
    texts = ["the movie was great", "a terrible film , boring and far too long", "fine day"]
    pairs = [encode_pair(fm, t, "positive", append_eos=True) for t in texts]
    reference = prompt_grad(fm, prompt, pairs, switched=False)
    switched = prompt_grad(fm, prompt, pairs, switched=True)
    assert fm.model.config._attn_implementation == "sdpa"
    assert reference.abs().sum() > 0
    torch.testing.assert_close(switched, reference, atol=1e-5, rtol=1e-4)


def test_the_kernel_is_restored_when_the_step_fails():
    fm = tiny_causal()
    fm.model.set_attn_implementation("sdpa")
    with pytest.raises(RuntimeError), training_attention(fm, EAGER):
        raise RuntimeError("loss exploded")
    assert fm.model.config._attn_implementation == "sdpa"


def test_no_kernel_keeps_the_models_own():
    fm = tiny_causal()
    fm.model.set_attn_implementation("sdpa")
    with training_attention(fm, None):
        assert fm.model.config._attn_implementation == "sdpa"
