"""The continuous batch in process: where a 32-request generation stream's time goes (prefill, decode steps, the
compactions when rows leave), against static batching of the same requests in the same run.

    python benchmarks/continuous_decode.py --out benchmarks/results/continuous_decode.json   # ~2 min

The stream is `serve_vs_vllm.py`'s generation stream without HTTP: the first 32 requests of the mixed 4-task
dev stream (P=100 class-label prompts), 16-32 new tokens each (seeded), EOS and newlines ignored. Every
request joins one `RunningBatch` at once and leaves when its limit is reached, so the batch is compacted each
time rows leave (up to 17 times). Static batching (`Engine.generate`: one batch decoded to its longest request)
is the peer. Also times one compaction of the real 32-row cache two ways: `kv_buffer.compact` (one indexing
pass per tensor) and the plain path (index_select, gather, copy into a buffer with room), with the same result.
Best of `--rounds` rounds each; bf16 where the CPU has it.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_vs_peft import vllm_stream  # noqa: E402
from train_vs_peft import machine_and_peaks, print_and_write  # noqa: E402

from softprompt.model.loading import load_model  # noqa: E402
from softprompt.scoring import continuous  # noqa: E402
from softprompt.scoring.continuous import DecodeRow, RunningBatch  # noqa: E402
from softprompt.scoring.decode import StopRule  # noqa: E402
from softprompt.scoring.inputs import strip_bos  # noqa: E402
from softprompt.scoring.kv_buffer import DECODE_ROOM, compact, reserve  # noqa: E402
from softprompt.scoring.prefix import PrefixCache  # noqa: E402
from softprompt.serve.engine import Engine, GenerateRequest  # noqa: E402


def plain_compact(cache, rows: torch.Tensor, slots: torch.Tensor) -> None:
    """The three-pass peer of kv_buffer.compact: index_select the rows, gather the slots, copy into room."""
    for layer in cache.layers:
        index = slots[:, None, :, None].expand(-1, layer.keys.shape[1], -1, layer.keys.shape[3])
        layer.keys = layer.keys.index_select(0, rows).gather(2, index)
        layer.values = layer.values.index_select(0, rows).gather(2, index)
    reserve(cache, DECODE_ROOM)


def run_continuous(fm, rows_of) -> dict[str, float]:
    """One pass of the stream through a RunningBatch: seconds in prefill, in decode steps, in compaction."""
    spent = {"compaction": 0.0}
    select = RunningBatch._select

    def timed(self, keep):  # noqa: ANN001, ANN202  (wraps the method for this run only)
        tick = time.perf_counter()
        select(self, keep)
        spent["compaction"] += time.perf_counter() - tick

    continuous.RunningBatch._select = timed
    try:
        batch = RunningBatch(fm)
        tick = time.perf_counter()
        batch.admit(rows_of())
        spent["prefill"] = time.perf_counter() - tick
        steps, tick = 0, time.perf_counter()
        while len(batch):
            batch.step()
            steps += 1
        spent["decode"], spent["steps"] = time.perf_counter() - tick, steps
    finally:
        continuous.RunningBatch._select = select
    return spent


def compaction_peer(fm, rows_of, rounds: int) -> dict[str, float]:
    """One compaction of the real 32-row cache after its prefill (drop rows 3 and 17), both ways, best of rounds."""
    batch = RunningBatch(fm)
    batch.admit(rows_of())
    keep = torch.tensor([b for b in range(len(batch)) if b not in (3, 17)])
    mask = batch._mask.index_select(0, keep)
    slots = torch.sort(mask, dim=1, stable=True).indices[:, -int(mask.sum(dim=1).max()):]
    cache = batch._cache
    results, times = {}, {}
    for name, fn in (("one_pass", compact), ("plain", plain_compact)):
        best = float("inf")
        for _ in range(rounds):
            trial = type(cache)(config=fm.model.config)  # fresh layers over the same tensors: both ways assign
            for i, layer in enumerate(cache.layers):
                trial.layers[i].update(layer.keys, layer.values)
            tick = time.perf_counter()
            fn(trial, keep, slots)
            best = min(best, time.perf_counter() - tick)
        times[name], results[name] = best, [layer.keys for layer in trial.layers]
    same = all(torch.equal(a, b) for a, b in zip(results["one_pass"], results["plain"], strict=True))
    return {"rows": len(batch), "slots": int(cache.layers[0].keys.shape[2]), "kept_slots": int(slots.shape[1]),
            "one_pass_ms": round(1000 * times["one_pass"], 1), "plain_ms": round(1000 * times["plain"], 1),
            "plain_over_one_pass": round(times["plain"] / times["one_pass"], 2), "identical": same}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args()
    facts = machine_and_peaks()
    fm = load_model("default", dtype="auto")
    stream, prompts = vllm_stream(fm, args.seed)
    rng = random.Random(args.seed + 1)
    gen = stream[: args.requests]
    lengths = [rng.randint(16, 32) for _ in gen]  # serve_vs_vllm.py's generation lengths (same seed)
    prefixes = PrefixCache(fm)

    def rows_of() -> list[DecodeRow]:
        return [DecodeRow(strip_bos(fm, fm.tokenizer(text).input_ids), prefixes.get(prompts[task]), n,
                          StopRule(newline=False, eos=False)) for (task, text), n in zip(gen, lengths, strict=True)]

    runs = [run_continuous(fm, rows_of) for _ in range(args.rounds + 1)][1:]  # the first warms up
    best = min(runs, key=lambda r: r["prefill"] + r["decode"])
    with tempfile.TemporaryDirectory() as tmp:
        for name, prompt in prompts.items():
            prompt.save(Path(tmp) / f"{name}.safetensors")
        engine = Engine(fm, tmp, batch_size=args.requests, max_input_tokens=1024)
        requests = [GenerateRequest(task, text, n, stop_at_newline=False, stop_at_eos=False)
                    for (task, text), n in zip(gen, lengths, strict=True)]
        static = float("inf")
        for _ in range(args.rounds):
            tick = time.perf_counter()
            engine.generate_tokens(requests)
            static = min(static, time.perf_counter() - tick)
    tokens = sum(lengths)
    total = best["prefill"] + best["decode"]
    result = {
        "benchmark": "continuous batch in process: prefill, decode steps, compaction; static batching as the peer",
        "command": " ".join(["python", *sys.argv]), "machine": facts, "threads": torch.get_num_threads(),
        "dtype": str(fm.dtype).removeprefix("torch."), "requests": len(gen), "new_tokens": tokens,
        "continuous": {"prefill_s": round(best["prefill"], 3), "decode_s": round(best["decode"], 3),
                       "steps": best["steps"], "ms_per_step": round(1000 * best["decode"] / best["steps"], 1),
                       "compaction_s": round(best["compaction"], 3),
                       "compaction_share_of_decode": round(best["compaction"] / best["decode"], 3),
                       "tokens_per_s": round(tokens / total, 1)},
        "static": {"seconds": round(static, 3), "tokens_per_s": round(tokens / static, 1)},
        "continuous_over_static": round(static / total, 2),
        "one_compaction": compaction_peer(fm, rows_of, args.rounds),
    }
    print_and_write(result, args.out)


if __name__ == "__main__":
    main()
