"""Where classification serving spends its time, in process: the mixed 4-task stream of `serve_vs_vllm.py`
through `Engine.classify`, and the throughput its matmuls alone would allow.

    python benchmarks/profile_classify.py --out benchmarks/results/profile_classify.json   # ~1 min, 2 cores

The stream is `serve_vs_vllm.py`'s classification stream (32 dev inputs each of SST-2, RTE, MRPC, BoolQ,
shuffled, BoolQ passages cut to 256 tokens, P=100 class-label prompts), scored in micro-batches of 8, 16 and
32 requests (the server's `--max-batch-size` and the concurrency it sees), best of `--rounds`. One pass at
micro-batch 16 runs under `torch.profiler`: self time and GFLOP/s of `aten::mm` (every linear layer and the LM
head), of attention (`scaled_dot_product_attention`), and of the rest, next to a 2048² GEMM measured in the
same process. `mm_only_requests_per_s` is the throughput if everything but the matmuls took no time: a
ceiling for any change that leaves the matmuls as they are. Compare it with vLLM's measured throughput
(`serve_vs_vllm.json`): vLLM's prefix cache reuses the prompt rows too, so both engines run about the same
matmul FLOPs per request.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_vs_peft import vllm_stream  # noqa: E402
from train_vs_peft import machine_and_peaks, print_and_write  # noqa: E402

from softprompt.model.loading import load_model  # noqa: E402
from softprompt.serve.engine import Engine  # noqa: E402


def requests_per_s(engine: Engine, stream: list, micro: int, rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        tick = time.perf_counter()
        for start in range(0, len(stream), micro):
            engine.classify(stream[start: start + micro])
        best = min(best, time.perf_counter() - tick)
    return round(len(stream) / best, 1)


def profiled(engine: Engine, stream: list, micro: int, peak: float) -> dict[str, Any]:
    """One profiled pass: self seconds of mm, attention and the rest; mm's GFLOP/s and the mm-only ceiling."""
    with profile(activities=[ProfilerActivity.CPU], with_flops=True) as prof:
        for start in range(0, len(stream), micro):
            engine.classify(stream[start: start + micro])
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events) / 1e6
    mm = next(e for e in events if e.key == "aten::mm")
    mm_s, mm_gflop = mm.self_cpu_time_total / 1e6, mm.flops / 1e9
    attention_s = sum(e.self_cpu_time_total for e in events if "scaled_dot_product" in e.key) / 1e6
    top = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:10]
    return {
        "micro_batch": micro, "self_seconds": round(total, 3),
        "mm": {"seconds": round(mm_s, 3), "share": round(mm_s / total, 3), "gflop": round(mm_gflop, 1),
               "gflops_per_s": round(mm_gflop / mm_s, 1), "fraction_of_model_dtype_peak": round(mm_gflop / mm_s / peak, 3)},
        "attention": {"seconds": round(attention_s, 3), "share": round(attention_s / total, 3)},
        "rest_share": round((total - mm_s - attention_s) / total, 3),
        "mm_only_requests_per_s": round(len(stream) / mm_s, 1),
        "mm_at_peak_requests_per_s": round(len(stream) / (mm_gflop / peak), 1),
        "top_ops": {e.key: round(e.self_cpu_time_total / 1e6 / total, 3) for e in top},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args()
    facts = machine_and_peaks()
    fm = load_model("default", dtype="auto")
    stream, prompts = vllm_stream(fm, args.seed)
    tokens = [len(fm.tokenizer(text).input_ids) for _, text in stream]
    peak = facts["gemm_2048_peak"]["bf16" if fm.dtype == torch.bfloat16 else "fp32"]["best_gflops"]
    with tempfile.TemporaryDirectory() as tmp:
        for name, prompt in prompts.items():
            prompt.save(Path(tmp) / f"{name}.safetensors")
        engine = Engine(fm, tmp, batch_size=16, max_input_tokens=1024)
        engine.classify(stream[:16])  # warm-up
        result = {
            "benchmark": "mixed 4-task classification stream through Engine.classify in process, profiled",
            "command": " ".join(["python", *sys.argv]), "machine": facts, "threads": torch.get_num_threads(),
            "dtype": str(fm.dtype).removeprefix("torch."), "requests": len(stream), "prompt_length": 100,
            "input_tokens_mean": round(sum(tokens) / len(tokens), 1), "input_tokens_max": max(tokens),
            "requests_per_s_by_micro_batch": {str(m): requests_per_s(engine, stream, m, args.rounds) for m in (8, 16, 32)},
            "profile": profiled(engine, stream, 16, peak),
        }
    print_and_write(result, args.out)


if __name__ == "__main__":
    main()
