"""A reparameterized prompt while training, folded into a plain [P, H] prompt for everything else.

Residual prompt tuning (Razdaibiedina et al. 2023, "Residual Prompt Tuning"): the optimizer does not move the
prompt rows directly but a base matrix and a small residual MLP shared by all rows,

    rows = base + LayerNorm(W_up · ReLU(W_down · base + b_down) + b_up)      base, rows: [P, H]; W_down: [R, H]

so one update to the MLP moves every row together (the paper reports faster, more stable training than plain
prompt tuning). Only training sees this form: evaluation, `last`/best prompt files, the step callback and
serving read the folded rows, a plain SoftPrompt, so files stay PEFT/vLLM-compatible and nothing else changes.

The LayerNorm's gain starts at zero (the paper's starts at one): SmolLM2's embeddings have RMS 0.14, and a
unit-variance residual at step 0 would bury the class-label init. With gain 0 the folded prompt at step 0 *is*
the init; the first update moves the gain, and from then on the MLP's weights get gradient too.
"""

from __future__ import annotations

import torch
from torch import nn

from softprompt.model.prompt import SoftPrompt


class ResidualPromptMLP(nn.Module):
    """rows = base + LayerNorm(MLP(base)); `forward()` -> rows [P, H] (fp32, differentiable)."""

    def __init__(self, init: torch.Tensor, hidden: int, seed: int = 0) -> None:
        """init: [P, H], the prompt's starting rows; hidden: R, the MLP's bottleneck width."""
        super().__init__()
        width = init.shape[1]
        generator = torch.Generator().manual_seed(seed)
        self.base = nn.Parameter(init.detach().to(torch.float32).clone())
        self.down = nn.Linear(width, hidden)
        self.up = nn.Linear(hidden, width)
        self.norm = nn.LayerNorm(width)
        with torch.no_grad():  # seeded, so a run (and its resume) is reproducible whatever torch's global RNG did
            for layer in (self.down, self.up):
                bound = layer.in_features ** -0.5  # nn.Linear's own default range
                layer.weight.uniform_(-bound, bound, generator=generator)
                layer.bias.uniform_(-bound, bound, generator=generator)
            self.norm.weight.zero_()  # see the module docstring: step 0 is the init

    def forward(self) -> torch.Tensor:
        """The prompt rows [P, H] this parameterization stands for."""
        return self.base + self.norm(self.up(torch.relu(self.down(self.base))))

    def training_prompt(self, folded: SoftPrompt) -> SoftPrompt:
        """A prompt whose rows are `forward()` (gradient flows to base and MLP), with `folded`'s metadata."""
        return SoftPrompt.computed(self(), folded.metadata)

    @torch.no_grad()
    def fold_into(self, prompt: SoftPrompt) -> None:
        """Write the rows into the plain prompt in place: what is evaluated, saved and served."""
        prompt.embeddings.copy_(self())
