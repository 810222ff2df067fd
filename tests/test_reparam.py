"""--reparam residual-mlp: the training-time form and its fold give the same scores; gradient reaches the MLP;
files hold the plain [P, H] fold."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from test_train import config
from tiny import tiny_causal

from softprompt.model.prompt import SoftPrompt
from softprompt.scoring import encode_pair, target_logprobs
from softprompt.training.checkpoint import load_checkpoint
from softprompt.training.config import ConfigError, TrainConfig
from softprompt.training.loop import train
from softprompt.training.reparam import ResidualPromptMLP
from softprompt.training.rundir import RunDir

TEXTS = [("the movie was great", "positive"), ("dull and far too long", "negative"), ("a fine cast", "positive")]


def trained_looking(init: torch.Tensor) -> ResidualPromptMLP:
    """A reparameterization whose residual is not zero (a fresh one's LayerNorm gain is 0: rows = base)."""
    reparam = ResidualPromptMLP(init, hidden=8, seed=3)
    with torch.no_grad():
        reparam.norm.weight.uniform_(-0.5, 0.5, generator=torch.Generator().manual_seed(4))
        reparam.norm.bias.uniform_(-0.1, 0.1, generator=torch.Generator().manual_seed(5))
    return reparam


def test_folding_gives_the_same_scores_as_the_training_time_form(tmp_path):
    fm = tiny_causal()
    pairs = [encode_pair(fm, text, target) for text, target in TEXTS]
    reparam = trained_looking(torch.randn(4, fm.hidden_size, generator=torch.Generator().manual_seed(0)) * 0.1)
    folded = SoftPrompt(torch.zeros(4, fm.hidden_size), {"task": "sst2"})
    reparam.fold_into(folded)
    folded.save(tmp_path / "p.safetensors")
    loaded = SoftPrompt.load(tmp_path / "p.safetensors", model=fm)
    assert loaded.embeddings.shape == (4, fm.hidden_size)  # a plain prompt file: no MLP in it
    with torch.no_grad():
        training = target_logprobs(fm, pairs, reparam.training_prompt(folded))
        served = target_logprobs(fm, pairs, loaded)
    for a, b in zip(training, served, strict=True):
        torch.testing.assert_close(a, b, atol=0, rtol=0)  # the same rows, bit for bit
    assert not torch.equal(loaded.embeddings, reparam.base.detach())  # the residual did change the rows


def test_gradient_reaches_the_base_and_every_mlp_weight():
    fm = tiny_causal()
    pairs = [encode_pair(fm, text, target) for text, target in TEXTS]
    reparam = trained_looking(torch.randn(4, fm.hidden_size, generator=torch.Generator().manual_seed(0)) * 0.1)
    loss = -torch.cat(target_logprobs(fm, pairs, reparam.training_prompt(SoftPrompt(torch.zeros(4, fm.hidden_size))))).sum()
    loss.backward()
    for name, param in reparam.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name
    # ... and matches the gradient through the rows computed by hand (autograd of forward() is the reference)
    rows = reparam().detach().requires_grad_(True)
    (-torch.cat(target_logprobs(fm, pairs, SoftPrompt.computed(rows, {}))).sum()).backward()
    reference = torch.autograd.grad(reparam(), reparam.base, rows.grad)[0]
    reparam.zero_grad()
    loss = -torch.cat(target_logprobs(fm, pairs, reparam.training_prompt(SoftPrompt(torch.zeros(4, fm.hidden_size))))).sum()
    loss.backward()
    torch.testing.assert_close(reparam.base.grad, reference)


def test_a_fresh_reparameterization_folds_to_its_init():
    init = torch.randn(5, 16)
    folded = SoftPrompt(torch.zeros(5, 16))
    ResidualPromptMLP(init, hidden=4).fold_into(folded)
    torch.testing.assert_close(folded.embeddings.detach(), init, atol=0, rtol=0)


def test_training_with_reparam_saves_plain_prompts_that_are_the_fold(tmp_path):
    fm = tiny_causal()
    cfg = config(tmp_path, steps=6, reparam="residual-mlp", reparam_hidden=8, optimizer="adamw", lr=0.05,
                 checkpoint_every=3)
    result = train(cfg, fm=fm, progress=False)
    out = RunDir(result.out_dir)
    init = SoftPrompt.load(out.init_prompt, model=fm).embeddings
    last = SoftPrompt.load(out.last_prompt, model=fm)
    assert last.embeddings.shape == init.shape and not torch.equal(last.embeddings, init)  # it trained
    assert last.metadata["train_config"]["reparam"] == "residual-mlp"
    # the checkpoint holds the reparameterization; folding it again gives the saved last prompt
    reparam = ResidualPromptMLP(init, hidden=8)
    named = {f"reparam.{n}": p for n, p in reparam.named_parameters()}
    load_checkpoint(out.checkpoint, named, torch.optim.AdamW(list(named.values())))
    refolded = SoftPrompt(torch.zeros_like(init))
    reparam.fold_into(refolded)
    torch.testing.assert_close(refolded.embeddings.detach(), last.embeddings, atol=0, rtol=0)
    summary = json.loads(out.summary.read_text())
    assert summary["trainable_parameters"] == sum(p.numel() for p in named.values())


def test_reparam_is_refused_for_model_tuning():
    with pytest.raises(ConfigError, match="reparam"):
        TrainConfig(task="sst2", method="model-tuning", reparam="residual-mlp")
    with pytest.raises(ConfigError, match="reparam_hidden"):
        TrainConfig(task="sst2", reparam="residual-mlp", reparam_hidden=0)


def test_the_cli_takes_reparam(tmp_path: Path):
    from softprompt.cli.config_flags import train_config

    cfg = train_config(None, {"task": "sst2", "reparam": "residual-mlp", "reparam_hidden": 32})
    assert cfg.reparam.value == "residual-mlp" and cfg.reparam_hidden == 32
