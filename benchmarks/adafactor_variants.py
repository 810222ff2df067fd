"""Is torch's Adafactor why the paper's recipe trails PEFT after 100 steps? Two other Adafactors, same run.

    python benchmarks/adafactor_variants.py hf-relative-constant   # step 0.3 * RMS(prompt), constant (no 1/sqrt(t) cap)
    python benchmarks/adafactor_variants.py hf-absolute            # T5X literally: absolute 0.3 steps, clipped

Same data, batches, init (class labels), P=20, batch 8, 100 steps and full SST-2 dev evaluation as the
accuracy part of train_vs_peft.py (its worker is reused; only the optimizer is swapped for transformers'
Adafactor with update clipping 1.0, β2 decay 0.8, weight decay 1e-5). Prints one `@@ {json}` result line.
"""
import argparse
import sys
from pathlib import Path

import torch
from transformers.optimization import Adafactor

sys.path.insert(0, str(Path(__file__).parent))
import train_vs_peft as b  # noqa: E402

VARIANTS = {
    "hf-relative-constant": True,  # scale_parameter: step = 0.3 · RMS(prompt), constant (no 1/sqrt(t) cap)
    "hf-absolute": False,  # T5X as the paper ran it: absolute 0.3 steps
}


def main() -> None:
    variant = sys.argv[1] if len(sys.argv) > 1 else ""
    if variant not in VARIANTS:
        raise SystemExit(f"usage: python benchmarks/adafactor_variants.py {{{' | '.join(VARIANTS)}}}")

    def make(params: list, lr: float, beta2_decay: float, weight_decay: float) -> torch.optim.Optimizer:
        return Adafactor(params, lr=lr, scale_parameter=VARIANTS[variant], relative_step=False, warmup_init=False,
                         decay_rate=beta2_decay, clip_threshold=1.0, weight_decay=weight_decay)

    torch.optim.Adafactor = make  # what train_vs_peft.Ours builds for the "adafactor" recipe
    args = argparse.Namespace(steps=100, seed=0, side="ours", init="class-labels", optimizer="adafactor",
                              max_length=64, fixed_len=128, eval_n=872)
    b.worker_accuracy(args)


if __name__ == "__main__":
    main()
