"""Which attention kernel a frozen model runs while a prompt trains.

On CPU, PyTorch's fused SDPA kernel is fast forward but slow backward; transformers' "eager" attention
(matmul + softmax) has a cheap backward but rounds the scores and probabilities to bf16, and with the
paper's Adafactor recipe that changed where training runs went. Forward only, SDPA stays ahead for long
inputs, so evaluation and serving keep it; on GPUs SDPA is kept throughout.

Hence the default, "split" (split_attention.py): SDPA's fused forward, so the loss is SDPA's bit for bit,
and a matmul backward as cheap as eager's.

The measurements behind these choices: benchmarks/README.md, "Training attention kernel".
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
