"""Where the first step's loss is: label-word tokens vs the EOS that ends every training target (issue 23).

    python benchmarks/target_loss_parts.py                 # SST-2 and BANKING77, 64 training examples each
    python benchmarks/target_loss_parts.py --n 16          # faster

Training targets are "label word + EOS" (so generation learns to stop); rank classification scores the label
words only. For each task this prints the mean cross-entropy (nats) per target token at the start of training
(the default recipe's prompt: P=100, class-label init), split into the label word's first token, its other
tokens and the EOS, with the untrained model (no prompt) beside it, and what share of the summed loss
(the gradient's weight) the EOS has. JSON on stdout; `--out` writes it too.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
TASKS = {"sst2": {"task": "sst2"}, "banking77": {"task_file": str(ROOT / "examples" / "banking77.yaml")}}


def parts(fm: Any, rows: list[Any], prompt: Any) -> dict[str, float]:
    """Mean nats per token of each target part, and the EOS share of the summed loss."""
    from softprompt.scoring import target_logprobs

    first, rest, eos = [], [], []
    with torch.no_grad():
        for start in range(0, len(rows), 16):
            chunk = rows[start:start + 16]
            for lp in target_logprobs(fm, [r.gold for r in chunk], prompt):
                nats = (-lp.float()).tolist()
                first.append(nats[0])
                rest.extend(nats[1:-1])
                eos.append(nats[-1])
    total = sum(first) + sum(rest) + sum(eos)

    def mean(xs: list[float]) -> float | None:
        return round(sum(xs) / len(xs), 3) if xs else None

    return {"label_first_token": mean(first), "label_other_tokens": mean(rest), "eos": mean(eos),
            "all_target_tokens": round(total / (len(first) + len(rest) + len(eos)), 3),
            "eos_share_of_summed_loss": round(sum(eos) / total, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--n", type=int, default=64, help="training examples per task (seeded sample)")
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args()

    from softprompt.model.loading import load_model
    from softprompt.tasks import resolve_task
    from softprompt.training.config import TrainConfig
    from softprompt.training.init import make_prompt
    from softprompt.training.rows import encode_rows

    torch.set_num_threads(2)
    fm = load_model("default")
    result: dict[str, Any] = {"model": fm.name, "examples_per_task": args.n, "prompt": "P=100, class-labels init",
                              "command": "python benchmarks/target_loss_parts.py " + " ".join(sys.argv[1:]), "tasks": {}}
    for name in args.tasks:
        cfg = TrainConfig(**TASKS[name])
        task = resolve_task(cfg.task, task_file=cfg.task_file)
        examples = task.examples("train", cfg.data_dir)
        examples = random.Random(0).sample(examples, min(args.n, len(examples)))
        rows = encode_rows(fm, examples, cfg, eos=True)  # the EOS is one of the parts measured
        assert all(r.gold.target_ids[-1] == fm.tokenizer.eos_token_id for r in rows)
        prompt = make_prompt(fm, cfg.prompt_length, cfg.init, labels=task.label_words, seed=cfg.seed, task=task.name)
        result["tasks"][name] = {"with_init_prompt": parts(fm, rows, prompt), "no_prompt": parts(fm, rows, None),
                                 "target_tokens_per_example": round(sum(len(r.gold.target_ids) for r in rows) / len(rows), 2)}
        print(f"[{name}] {result['tasks'][name]}", file=sys.stderr, flush=True)
    text = json.dumps(result, indent=2)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
