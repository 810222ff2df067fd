"""The optimizer of a run: Adafactor with the paper's settings (default) or AdamW.

What torch.optim.Adafactor does with the paper's settings (lr 0.3, weight decay 1e-5, β2 decay 0.8,
factored second moments, no momentum), read from its source (torch 2.13):
- update clipping at 1.0 (`d`): the normalised update u = g / sqrt(v̂) is scaled down to RMS(u) <= 1, as
  in T5X's Adafactor, which the paper used;
- the step is relative: alpha = max(1e-3, RMS(θ)) · min(lr, 1/sqrt(t)). T5X with the paper's
  `multiply_by_parameter_scale=False` and a constant lr takes absolute steps of 0.3 instead. The two agree
  in spirit where the paper's lr was tuned: T5's embeddings have RMS ~1, so 0.3 absolute is ~0.3 of the
  embedding scale, which is what the relative step takes here at the start (SmolLM2's embeddings have RMS
  0.136: an absolute 0.3 would move every prompt value by twice the embedding scale each step). After
  step 11 the 1/sqrt(t) cap decays the rate (0.041 at step 600); the paper's schedule is constant.
"""

from __future__ import annotations

import torch

from softprompt.training.config import Optimizer, TrainConfig


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set every group's learning rate (the schedule is applied by the loop, step by step)."""
    for group in optimizer.param_groups:
        group["lr"] = lr


def make_optimizer(params: list[torch.nn.Parameter], cfg: TrainConfig) -> torch.optim.Optimizer:
    """The run's optimizer over `params` (the prompt [P, H], or every weight for model tuning)."""
    if cfg.optimizer is Optimizer.ADAFACTOR:
        return torch.optim.Adafactor(params, lr=cfg.learning_rate, beta2_decay=cfg.beta2_decay,
                                     weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
