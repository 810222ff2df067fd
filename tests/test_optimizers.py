"""The default optimizer is torch's Adafactor with the paper's settings, update clipping on."""

from __future__ import annotations

import torch

from softprompt.training.config import TrainConfig
from softprompt.training.optimizers import make_optimizer


def test_default_is_adafactor_with_the_papers_settings():
    param = torch.nn.Parameter(torch.zeros(2, 2))
    opt = make_optimizer([param], TrainConfig(task="sst2"))
    group = opt.param_groups[0]
    assert isinstance(opt, torch.optim.Adafactor)
    assert (group["lr"], group["beta2_decay"], group["weight_decay"], group["d"]) == (0.3, -0.8, 1e-5, 1.0)
    assert isinstance(make_optimizer([param], TrainConfig(task="sst2", optimizer="adamw")), torch.optim.AdamW)


def test_a_sudden_large_gradient_moves_the_prompt_no_further_than_a_normal_one():
    """Update clipping (T5X's, which torch's Adafactor has as `d`): after small gradients, a 10,000x larger
    one still gives a step of RMS <= alpha = RMS(θ) · min(lr, 1/sqrt(t))."""
    torch.manual_seed(0)
    param = torch.nn.Parameter(torch.randn(6, 8) * 0.1)
    opt = make_optimizer([param], TrainConfig(task="sst2"))
    for _ in range(20):
        param.grad = 0.01 * torch.randn(6, 8)
        opt.step()
    before = param.detach().clone()
    param.grad = 100.0 * torch.randn(6, 8)
    opt.step()
    alpha = float(before.pow(2).mean().sqrt()) * min(0.3, 21 ** -0.5)
    assert float((param.detach() - before).pow(2).mean().sqrt()) <= alpha * (1 + 1e-4)
