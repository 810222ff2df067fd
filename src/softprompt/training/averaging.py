"""An exponential moving average of the prompt's rows over training steps (`--average-decay`).

The raw rows keep learning; the average is what a run evaluates, keeps as best, saves and hands to
`on_step`. With a constant or slowly decaying lr the rows jitter around where the loss is low, and the
average sits nearer its middle (Polyak averaging): it gives early the quality a decayed lr reaches late.
The decay warms up as min(d, (1+t)/(10+t)) at step t, as TensorFlow's ExponentialMovingAverage does with
`num_updates`, so the first checkpoints are not dominated by the init.
"""

from __future__ import annotations

import torch

from softprompt.model.prompt import SoftPrompt


class PromptAverage:
    """The averaged rows [P, H] (fp32) of a prompt that trains; `rows` is a plain tensor, checkpointed as is."""

    def __init__(self, rows: torch.Tensor, decay: float) -> None:
        self.decay = decay
        self.rows = rows.detach().float().clone()

    def update(self, rows: torch.Tensor, step: int) -> None:
        """Fold in the rows [P, H] after optimizer step `step` (1-based)."""
        d = min(self.decay, (1 + step) / (10 + step))
        self.rows.mul_(d).add_(rows.detach().float(), alpha=1 - d)

    def prompt(self, like: SoftPrompt) -> SoftPrompt:
        """The average as a prompt with `like`'s metadata (the same dict: what a save records lands on both)."""
        averaged = SoftPrompt(self.rows)
        averaged.metadata = like.metadata
        return averaged
