"""The recipes' optimizers: the paper's is torch's Adafactor with its settings, update clipping on; the
default is AdamW 0.03 with a linear decay; given fields win over the recipe."""

from __future__ import annotations

import torch

from softprompt.training.config import TrainConfig
from softprompt.training.optimizers import make_optimizer


def test_paper_recipe_is_adafactor_with_the_papers_settings():
    param = torch.nn.Parameter(torch.zeros(2, 2))
    cfg = TrainConfig(task="sst2", recipe="paper")
    opt = make_optimizer([param], cfg)
    group = opt.param_groups[0]
    assert isinstance(opt, torch.optim.Adafactor)
    assert (group["lr"], group["beta2_decay"], group["weight_decay"], group["d"]) == (0.3, -0.8, 1e-5, 1.0)
    assert (cfg.prompt_length, cfg.init, cfg.batch_size, cfg.lr_schedule.value) == (100, "class-labels", 32, "constant")
    assert cfg.lr_at(999) == 0.3
    assert isinstance(make_optimizer([param], TrainConfig(task="sst2", recipe="paper", optimizer="adamw")),
                      torch.optim.AdamW)


def test_default_recipe_is_adamw_with_a_linear_decay_and_given_fields_win():
    param = torch.nn.Parameter(torch.zeros(2, 2))
    cfg = TrainConfig(task="sst2", steps=100)
    opt = make_optimizer([param], cfg)
    assert isinstance(opt, torch.optim.AdamW) and opt.param_groups[0]["lr"] == 0.03
    assert (cfg.recipe.value, cfg.lr_at(0), cfg.lr_at(50)) == ("default", 0.03, 0.015)
    mixed = TrainConfig(task="sst2", optimizer="adafactor", lr_schedule="constant")
    assert (mixed.optimizer.value, mixed.lr_schedule.value, mixed.learning_rate) == ("adafactor", "constant", 0.3)
    # the saved config names the resolved values: a run read back (resume) is the same run
    assert TrainConfig(**cfg.to_dict()) == cfg
    assert TrainConfig(**TrainConfig(task="sst2", recipe="paper").to_dict()).optimizer.value == "adafactor"


def test_a_sudden_large_gradient_moves_the_prompt_no_further_than_a_normal_one():
    """Update clipping (T5X's, which torch's Adafactor has as `d`): after small gradients, a 10,000x larger
    one still gives a step of RMS <= alpha = RMS(θ) · min(lr, 1/sqrt(t))."""
    torch.manual_seed(0)
    param = torch.nn.Parameter(torch.randn(6, 8) * 0.1)
    opt = make_optimizer([param], TrainConfig(task="sst2", recipe="paper"))
    for _ in range(20):
        param.grad = 0.01 * torch.randn(6, 8)
        opt.step()
    before = param.detach().clone()
    param.grad = 100.0 * torch.randn(6, 8)
    opt.step()
    alpha = float(before.pow(2).mean().sqrt()) * min(0.3, 21 ** -0.5)
    assert float((param.detach() - before).pow(2).mean().sqrt()) <= alpha * (1 + 1e-4)


def test_linear_decay_ends_at_whichever_limit_comes_first():
    capped = TrainConfig(task="sst2", steps=1000, max_minutes=10.0)
    # ahead of the time budget's pace: the step schedule, exactly (reproducible, resumable)
    assert capped.lr_at(500, seconds=60.0) == TrainConfig(task="sst2", steps=1000).lr_at(500) == 0.015
    # behind it (slow steps): the lr follows the clock and reaches 0 when the budget does
    assert abs(capped.lr_at(100, seconds=450.0) - 0.03 * 0.25) < 1e-12
    assert capped.lr_at(100, seconds=600.0) == capped.lr_at(100, seconds=900.0) == 0.0
    assert TrainConfig(task="sst2", steps=1000).lr_at(100, seconds=1e9) == 0.03 * 0.9  # no budget: steps only
    assert TrainConfig(task="sst2", recipe="paper", max_minutes=1.0).lr_at(5, seconds=1e9) == 0.3  # constant stays
