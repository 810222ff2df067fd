"""Which attention kernel a frozen model runs while a prompt trains.

On CPU, PyTorch's fused SDPA kernel (`_scaled_dot_product_flash_attention_for_cpu`) is fast forward but its
backward is not: in one training step of SmolLM2-135M (B = 8, 128 input tokens, P = 20, bf16, 2 cores) it
took 24% of the step (513 ms of 2.14 s, torch.profiler), against 7% for transformers' "eager" attention
(matmul + softmax). Forward only, SDPA stays ahead for long inputs (300 tokens: 2.59 s vs 2.82 s per batch
of 8), so evaluation and serving keep it; on GPUs SDPA is kept throughout.

Precision: eager rounds the scores and probabilities to bf16 where SDPA keeps them in fp32. We measured
whether that matters: the prompt gradient of a QQP batch has cosine 0.9992 with SDPA's for eager and
0.9991 for a matmul attention kept in fp32 (tried and dropped: it was no more faithful, and the train
benchmark ran 2.6x PEFT with it against 3.17x with eager). The bf16 noise elsewhere in the model dominates.
That noise is not harmless with the paper's Adafactor recipe: two QQP runs that differed only in the
kernel went apart after ~5 steps and the eager one sat at loss ~10 for 150 steps, and the real-model test
(SST-2, P=20, 40 steps) reached 0.44 dev accuracy with eager against > 0.46 with SDPA. Two cases are not
proof of a bias, but they are enough not to train with eager's forward by default.

Hence the default, "split" (split_attention.py): SDPA's fused forward, so the loss is SDPA's bit for bit,
and a matmul backward as cheap as eager's (one 128-token step: SDPA 2.12 s, split 1.77 s, eager 1.76 s).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from softprompt.model.frozen import FrozenModel

KERNELS = ("split", "sdpa", "eager")  # --attention choices; "split" (default) = SDPA forward + matmul backward


def _implementation(kernel: str) -> str:
    """The transformers attention-implementation name of a kernel choice."""
    if kernel == "split":
        from softprompt.model.split_attention import KERNEL_NAME  # importing registers it with transformers

        return KERNEL_NAME
    return kernel


@contextmanager
def training_attention(fm: FrozenModel, kernel: str | None) -> Iterator[None]:
    """Run the training forward with attention `kernel` (one of KERNELS; None keeps the model's own), then
    switch back (also on errors). The backward replays the graph built here, whatever the config says by
    then. A no-op on GPUs and for models that cannot switch.
    """
    model = fm.model
    current = getattr(model.config, "_attn_implementation", None)
    wanted = _implementation(kernel) if kernel is not None else None
    switch = (
        wanted is not None and fm.device.type == "cpu" and current not in (None, wanted)
        and hasattr(model, "set_attn_implementation")
    )
    if switch:
        model.set_attn_implementation(wanted)
    try:
        yield
    finally:
        if switch:
            model.set_attn_implementation(current)
