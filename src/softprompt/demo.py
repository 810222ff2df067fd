"""`make demo`: train a soft prompt for SST-2 on the default model for a few minutes, then compare it with
the zero-shot model on the full SST-2 dev set, and say where the prompt file is.

Run: python -m softprompt.demo [--steps N] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from softprompt.evaluation.evaluate import evaluate
from softprompt.model.loading import load_model
from softprompt.model.prompt import SoftPrompt
from softprompt.tasks import get_task
from softprompt.training.config import TrainConfig
from softprompt.training.loop import train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=150, help="training steps (batch 16)")
    parser.add_argument("--prompt-length", type=int, default=20)
    parser.add_argument("--out", default="runs/demo-sst2")
    args = parser.parse_args()

    started = time.time()
    print("1/4 loading the default model (SmolLM2-135M-Instruct; the first load also caches it)...", flush=True)
    fm = load_model("default")
    task = get_task("sst2")
    dev = task.examples("validation")

    print(f"2/4 zero-shot baseline on the full SST-2 dev set ({len(dev)} sentences)...", flush=True)
    zero = evaluate(fm, task, dev, prompt=None, batch_size=32)

    print(f"3/4 training a {args.prompt_length}-token soft prompt for {args.steps} steps...", flush=True)
    cfg = TrainConfig(task="sst2", prompt_length=args.prompt_length, batch_size=16, steps=args.steps,
                      eval_every=max(args.steps // 3, 1), eval_limit=200, out=args.out)
    result = train(cfg, fm=fm)

    print("4/4 evaluating the best prompt on the full dev set...", flush=True)
    prompt = SoftPrompt.load(result.prompt_path, model=fm)
    tuned = evaluate(fm, task, dev, prompt=prompt, batch_size=32)

    metric = task.main_metric
    table = {
        "task": "sst2 (full dev set)",
        f"zero-shot {metric}": round(zero.metrics[metric], 4),
        f"prompt-tuned {metric}": round(tuned.metrics[metric], 4),
        "trainable parameters": prompt.num_parameters,
        "prompt file": str(Path(result.prompt_path).resolve()),
        "prompt file bytes": Path(result.prompt_path).stat().st_size,
        "training seconds": result.wall_seconds,
        "total seconds": round(time.time() - started, 1),
    }
    print(json.dumps(table, indent=2))
    print(f"\nUse it: softprompt eval --task sst2 --prompt {result.prompt_path}")


if __name__ == "__main__":
    main()
