"""Which attention kernel a frozen model runs while a prompt trains.

On CPU, PyTorch's fused SDPA kernel (`_scaled_dot_product_flash_attention_for_cpu`) is fast forward but its
backward is not: in one training step of SmolLM2-135M (B = 8, 128 input tokens, P = 20, bf16, 2 cores) it
took 24% of the step (513 ms of 2.14 s, torch.profiler), against 7% for the plain matmul + softmax
("eager") attention. Measured per step on a quiet 2-core machine: 2.24 s -> 2.06 s at 128 tokens,
5.28 s -> 4.42 s at 300 tokens; at SST-2 lengths (~30 tokens) the two are equal. Forward only, SDPA stays
ahead for long inputs (300 tokens: 2.59 s vs 2.82 s per batch of 8), so evaluation and serving keep it.
Both kernels compute the same function; the choice is only about speed. On GPUs SDPA is kept throughout.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from softprompt.frozen import FrozenModel

TRAINING_ATTENTION_CPU = "eager"


@contextmanager
def training_attention(fm: FrozenModel) -> Iterator[None]:
    """Run the model with the attention kernel that is fastest forward + backward, then switch back.

    Wrap the forward of a training step (the backward replays the graph built there, whatever the config
    says by then). A no-op on GPUs, for models that cannot switch, and when the model already runs eager.
    """
    model = fm.model
    current = getattr(model.config, "_attn_implementation", None)
    switch = (
        fm.device.type == "cpu" and current not in (None, TRAINING_ATTENTION_CPU)
        and hasattr(model, "set_attn_implementation")
    )
    if switch:
        model.set_attn_implementation(TRAINING_ATTENTION_CPU)
    try:
        yield
    finally:
        if switch:
            model.set_attn_implementation(current)
