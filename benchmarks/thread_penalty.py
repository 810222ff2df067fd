"""What a second thread running torch ops costs: one small matmul timed on the first thread that used OpenMP and
on a later one, in the same process (serve/compute_thread.py is the fix this measured).

    python benchmarks/thread_penalty.py --out benchmarks/results/thread_penalty.json   # ~10 s

Times `F.linear` of [M, 576] by [1536, 576] (SmolLM2-135M's MLP up-projection; M = 1 is one decode step's
row, M = 640 a training micro-batch) in bf16 where the CPU has it and in fp32, best of 5 repeats of 200
(M = 1) or 20 (M = 640) calls: on the main thread, then on a worker thread started after it, then on the
main thread again. Prints JSON; the ratio `worker_over_main` is the penalty.
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_vs_peft import machine_and_peaks, print_and_write  # noqa: E402


def linear_us(dtype: torch.dtype, rows: int) -> float:
    """Best-of-5 microseconds per call of one [rows, 576] x [576, 1536] linear on the calling thread."""
    weight, x = torch.randn(1536, 576, dtype=dtype), torch.randn(rows, 576, dtype=dtype)
    calls = 200 if rows == 1 else 20
    with torch.no_grad():
        for _ in range(10):
            F.linear(x, weight)
        best = float("inf")
        for _ in range(5):
            tick = time.perf_counter()
            for _ in range(calls):
                F.linear(x, weight)
            best = min(best, (time.perf_counter() - tick) / calls * 1e6)
    return round(best, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args()
    facts = machine_and_peaks()  # runs matmuls on this (the main) thread first, as a server's model load does
    dtypes = [torch.bfloat16, torch.float32] if facts["bf16"] else [torch.float32]
    cases = {}
    for dtype in dtypes:
        for rows in (1, 640):
            main_us = linear_us(dtype, rows)
            with ThreadPoolExecutor(max_workers=1) as pool:
                worker_us = pool.submit(linear_us, dtype, rows).result()
            cases[f"{str(dtype).removeprefix('torch.')} M={rows}"] = {
                "main_us": main_us, "worker_us": worker_us, "main_again_us": linear_us(dtype, rows),
                "worker_over_main": round(worker_us / main_us, 2)}
    result = {"benchmark": "one linear on the first OpenMP thread vs a later thread",
              "command": " ".join(["python", *sys.argv]), "machine": facts,
              "threads": torch.get_num_threads(), "cases": cases}
    print_and_write(result, args.out)


if __name__ == "__main__":
    main()
