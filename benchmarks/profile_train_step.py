"""What one `softprompt train` step on SST-2 spends its time on: the matmuls of the frozen model or the rest.

    python benchmarks/profile_train_step.py --out benchmarks/results/profile_train_step.json   # ~3 min, 2 cores

The step is `train()`'s own (`encode_rows` + `step_loss` + backward, default attention kernel) on the
default model, batch 32 of SST-2 train sentences with >= 15 input tokens (the best fp32 recipe,
`results/sst2_fp32_min15/`), for a 100- and a 20-vector prompt on the same batches. Printed as JSON:
median seconds per step and tokens per step (the prompt counts once: it runs once per batch, prefix.py),
then, for one profiled step, the time and GFLOP of `aten::mm` (the model's linear layers) and `aten::bmm`
(attention), their GFLOP/s next to a 2048² GEMM measured in the same process, and the ops that took the most
self time. If mm runs near the GEMM rate and takes most of the step, the step is bound by the frozen model's
FLOPs (4 · N_nonembed · tokens), and only fewer tokens, fewer steps or faster matmuls make it shorter.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_vs_peft import data_dir, machine_and_peaks, print_and_write  # noqa: E402

from softprompt.model.attention import training_attention  # noqa: E402
from softprompt.model.frozen import FrozenModel  # noqa: E402
from softprompt.model.prompt import SoftPrompt  # noqa: E402
from softprompt.training.batching import epoch_batches  # noqa: E402
from softprompt.training.config import TrainConfig  # noqa: E402
from softprompt.training.init import make_prompt  # noqa: E402
from softprompt.training.loop import Row, encode_rows, step_loss  # noqa: E402


def one_step(fm: FrozenModel, rows: list[Row], prompt: SoftPrompt, cfg: TrainConfig) -> int:
    """Forward + backward of one batch as `train()` runs it; returns the tokens it ran (prompt once)."""
    norm = float(sum(len(r.gold.target_ids) for r in rows))
    with training_attention(fm, cfg.attention):
        loss = step_loss(fm, rows, prompt, cfg, norm)
    loss.backward()
    prompt.embeddings.grad = None
    return cfg.prompt_length + len(rows) * max(r.length for r in rows)


def profile_prompt_length(
    fm: FrozenModel, rows: list[Row], batches: list[list[int]], labels: list[str], p: int, timed: int
) -> dict[str, Any]:
    cfg = TrainConfig(task="sst2", prompt_length=p)
    prompt = make_prompt(fm, p, "class-labels", labels=labels, task="sst2")
    one_step(fm, [rows[i] for i in batches[0]], prompt, cfg)  # warm-up
    seconds, tokens = [], []
    for batch in batches[1: 1 + timed]:
        tick = time.perf_counter()
        tokens.append(one_step(fm, [rows[i] for i in batch], prompt, cfg))
        seconds.append(time.perf_counter() - tick)
    with profile(activities=[ProfilerActivity.CPU], with_flops=True) as prof:
        profiled_tokens = one_step(fm, [rows[i] for i in batches[1 + timed]], prompt, cfg)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events) / 1e6
    matmuls = {}
    for e in events:
        if e.key in ("aten::mm", "aten::bmm"):
            s = e.self_cpu_time_total / 1e6
            matmuls[e.key] = {"seconds": round(s, 3), "share": round(s / total, 3), "gflop": round(e.flops / 1e9, 1),
                              "gflops_per_s": round(e.flops / 1e9 / s, 1)}
    top = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:8]
    return {
        "seconds_per_step_median": round(statistics.median(seconds), 3), "timed_steps": timed,
        "tokens_per_step_median": statistics.median(tokens),
        "profiled_step": {"tokens": profiled_tokens, "self_seconds": round(total, 3), **matmuls,
                          "top_ops": {e.key: round(e.self_cpu_time_total / 1e6 / total, 3) for e in top}},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timed", type=int, default=4, help="timed steps per prompt length")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args()

    from softprompt.model.loading import configure_threads, load_model
    from softprompt.tasks import get_task

    configure_threads(None)
    fm = load_model("default")
    task = get_task("sst2")
    examples = task.examples("train", data_dir())[:4000]  # enough sentences for a few batches
    rows = [r for r in encode_rows(fm, examples, TrainConfig(task="sst2"), eos=True) if len(r.gold.input_ids) >= 15]
    batches = epoch_batches([r.length for r in rows], 32, 0, 0)
    result: dict[str, Any] = {
        "benchmark": "one softprompt train step on SST-2 (batch 32, inputs >= 15 tokens), profiled",
        # The peak of the model's own dtype too (bf16 where the CPU has it): the fraction that matters is of that.
        "command": " ".join(["python", *sys.argv]), "machine": machine_and_peaks(), "model_dtype": str(fm.dtype),
        "threads": torch.get_num_threads(),
        "prompt_lengths": {str(p): profile_prompt_length(fm, rows, batches, task.label_words, p, args.timed) for p in (100, 20)},
    }
    peak = result["machine"]["gemm_2048_peak"]["bf16" if fm.dtype == torch.bfloat16 else "fp32"]["best_gflops"]
    for entry in result["prompt_lengths"].values():
        mm = entry["profiled_step"].get("aten::mm")
        if mm:
            mm["fraction_of_model_dtype_peak"] = round(mm["gflops_per_s"] / peak, 3)
    p100, p20 = (result["prompt_lengths"][k]["seconds_per_step_median"] for k in ("100", "20"))
    result["step_time_ratio_p100_over_p20"] = round(p100 / p20, 2)
    print_and_write(result, args.out)


if __name__ == "__main__":
    main()
