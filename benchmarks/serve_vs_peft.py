"""Mixed-task serving: our engine (cached prompt KV) vs PEFT (adapter switching) vs our uncached path.

    python benchmarks/serve_vs_peft.py            # full run, writes benchmarks/results/serve_vs_peft.json
    python benchmarks/serve_vs_peft.py --quick    # smoke run (a few requests per task), prints only

One frozen SmolLM2-135M (bf16), four tasks (SST-2, RTE, MRPC, BoolQ dev inputs), one P=100 class-label-init
prompt per task (untrained: throughput does not depend on the values), a shuffled stream of
classification requests served in batches of 16. Every system scores every label word of every request
and gets the same input text: inputs longer than --max-input-tokens (256) are cut for all systems alike
(start and end kept, as training does; only BoolQ passages are that long).

- engine: `serve.Engine.classify`, each batch mixes tasks; prefixes computed once at registration.
- uncached: the plain path, prompt + input through the model for every (request, label word) row
  (`scoring.logprobs.plain_logprobs`; one row per request when every label word is one token), rows sorted by
  length as the router sorts them. Not `score_choices`: since the scoring core's router, that packs mixed
  prompts on a per-call prefix cache too, which is the engine's path without the persistent cache.
- peft: four PEFT prompt-tuning adapters (our prompts exported with `peft_io.export_peft`) loaded with
  `PeftModel.from_pretrained` + `load_adapter`; PEFT cannot mix adapters in a batch, so each batch of 16
  is grouped by task and served with `set_adapter` per group, as PEFT's docs suggest; label words are
  scored from PEFT's full forward (logits for every position) over input + label word, one row per word.
Also: engine per-request time at P = 20, 100, 150 (flat: the prompt is cached) next to the uncached path,
and a K=5 ensemble in one pass (`ensemble.run_ensemble`) vs five separate `evaluate` passes.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from softprompt.evaluation.ensemble import run_ensemble
from softprompt.evaluation.evaluate import evaluate
from softprompt.interop.peft import export_peft
from softprompt.model.frozen import FrozenModel
from softprompt.model.loading import load_model
from softprompt.model.prompt import SoftPrompt
from softprompt.scoring import cut_input, encode_pair, pad
from softprompt.serve import Engine
from softprompt.tasks import get_task
from softprompt.training.init import make_prompt

TASKS = ("sst2", "rte", "mrpc", "boolq")
RESULT = Path(__file__).parent / "results" / "serve_vs_peft.json"


def load_stream(fm: FrozenModel, per_task: int, max_tokens: int, seed: int) -> tuple[list[tuple[str, str]], dict]:
    """(task, input text) requests, `per_task` dev inputs of each task, shuffled; inputs cut to max_tokens."""
    stream, words = [], {}
    for name in TASKS:
        task = get_task(name)
        words[name] = task.label_words
        for ex in task.examples("validation", limit=per_task):
            ids = fm.tokenizer(ex.input_text, add_special_tokens=False).input_ids
            text = ex.input_text if len(ids) <= max_tokens else fm.tokenizer.decode(cut_input(ids, max_tokens))
            stream.append((name, text))
    random.Random(seed).shuffle(stream)
    return stream, words


def make_prompts(fm: FrozenModel, length: int, words: dict, seed: int = 0) -> dict[str, SoftPrompt]:
    return {name: make_prompt(fm, length, "class-labels", labels=words[name], seed=seed, task=name) for name in TASKS}


def vllm_stream(fm: FrozenModel, seed: int) -> tuple[list[tuple[str, str]], dict[str, SoftPrompt]]:
    """serve_vs_vllm.py's default classification stream (32 dev inputs per task, cut to 256 tokens) and its
    P=100 class-label prompts: the in-process benchmarks of that stream use the same requests."""
    stream, words = load_stream(fm, 32, 256, seed)
    return stream, make_prompts(fm, 100, words, seed)


def batches(stream: list, size: int) -> list[list]:
    return [stream[i: i + size] for i in range(0, len(stream), size)]


def timed(fn: Any, stream: list, batch: int) -> tuple[float, list[list[float]]]:
    """Run `fn(batch_of_requests) -> scores` over the stream; (seconds, scores in stream order)."""
    scores: list[list[float]] = []
    start = time.perf_counter()
    for chunk in batches(stream, batch):
        scores += fn(chunk)
    return time.perf_counter() - start, scores


def engine_fn(engine: Engine) -> Any:
    return lambda chunk: engine.score(chunk)


def uncached_fn(fm: FrozenModel, prompts: dict, words: dict) -> Any:
    from softprompt.scoring import one_token_choices_row
    from softprompt.scoring.inputs import prompt_list
    from softprompt.scoring.logprobs import plain_logprobs

    def run(chunk: list) -> list[list[float]]:
        rows, owners = [], []  # every (request, word) row of the batch in one forward
        for i, (task, text) in enumerate(chunk):
            pairs = [encode_pair(fm, text, w) for w in words[task]]
            one = one_token_choices_row(fm, pairs)
            rows += [one] if one is not None else pairs
            owners += [(i, None)] if one is not None else [(i, c) for c in range(len(pairs))]
        rows_prompts = prompt_list(fm, [prompts[chunk[i][0]] for i, _ in owners], len(owners))
        order = sorted(range(len(rows)), key=lambda k: len(rows[k].input_ids) + len(rows[k].target_ids))
        lps = plain_logprobs(fm, [rows[k] for k in order], [rows_prompts[k] for k in order])
        out = [[0.0] * len(words[task]) for task, _ in chunk]
        for k, lp in zip(order, lps, strict=True):
            i, c = owners[k]
            if c is None:
                out[i] = lp.tolist()
            else:
                out[i][c] = float(lp.sum())
        return out
    return run


def peft_model(fm: FrozenModel, prompts: dict, folder: Path) -> Any:
    """Four PEFT prompt-tuning adapters on the same frozen model, loaded the documented way."""
    from peft import PeftModel

    model = None
    for name, prompt in prompts.items():
        adapter = export_peft(prompt.save(folder / f"{name}.safetensors"), folder / name)
        if model is None:
            model = PeftModel.from_pretrained(fm.model, adapter, adapter_name=name)
        else:
            model.load_adapter(adapter, adapter_name=name)
    model.eval()
    return model


def peft_fn(fm: FrozenModel, model: Any, prompts: dict, words: dict) -> Any:
    @torch.no_grad()
    def run(chunk: list) -> list[list[float]]:
        out: list[list[float] | None] = [None] * len(chunk)
        for name in dict.fromkeys(t for t, _ in chunk):  # group the batch by task: one adapter at a time
            idx = [i for i, (t, _) in enumerate(chunk) if t == name]
            pairs = [encode_pair(fm, chunk[i][1], w) for i in idx for w in words[name]]
            ids, mask = pad([p.input_ids + p.target_ids for p in pairs], fm.tokenizer.pad_token_id)
            model.set_adapter(name)
            logits = model(input_ids=ids, attention_mask=mask).logits  # [R, P + L, V]: P extra rows first
            n_virtual = prompts[name].length
            sums = []
            for r, p in enumerate(pairs):
                at = n_virtual + len(p.input_ids) - 1  # the state before the first target token
                lp = logits[r, at: at + len(p.target_ids)].float().log_softmax(-1)
                sums.append(float(lp.gather(1, torch.tensor(p.target_ids)[:, None]).sum()))
            for j, i in enumerate(idx):
                out[i] = sums[j * len(words[name]): (j + 1) * len(words[name])]
        return out  # type: ignore[return-value]
    return run


def max_diff(a: list[list[float]], b: list[list[float]]) -> float:
    return max(abs(x - y) for ra, rb in zip(a, b, strict=True) for x, y in zip(ra, rb, strict=True))


def agreement(a: list[list[float]], b: list[list[float]]) -> float:
    def arg(row: list[float]) -> int:
        return max(range(len(row)), key=row.__getitem__)
    return sum(arg(x) == arg(y) for x, y in zip(a, b, strict=True)) / len(a)


def machine() -> dict[str, Any]:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else platform.processor()
    import peft
    import transformers

    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        commit = ""
    return {"cpu": cpu, "logical_cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
            "peft": peft.__version__, "platform": platform.platform(), "git_commit": commit}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: 4 requests per task, 1 round")
    parser.add_argument("--per-task", type=int, default=None, help="dev inputs per task (default 32; quick 4)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--prompt-length", type=int, default=100)
    parser.add_argument("--lengths", default="20,100,150", help="P values for the flatness sweep")
    parser.add_argument("--max-input-tokens", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=None, help="timing rounds; best kept (default 2; quick 1)")
    parser.add_argument("--ensemble-examples", type=int, default=None, help="RTE dev inputs (default 64; quick 8)")
    parser.add_argument("--model", default="default")
    parser.add_argument("--out", type=Path, default=None, help=f"JSON output (default {RESULT}; quick: none)")
    args = parser.parse_args()
    per_task = args.per_task or (4 if args.quick else 32)
    rounds = args.rounds or (1 if args.quick else 2)
    ens_n = args.ensemble_examples or (8 if args.quick else 64)
    out_path = args.out or (None if args.quick else RESULT)
    lengths = [int(x) for x in args.lengths.split(",")]

    fm = load_model(args.model)
    stream, words = load_stream(fm, per_task, args.max_input_tokens, seed=0)
    n = len(stream)
    print(f"{n} requests ({per_task} per task × {len(TASKS)}), batch {args.batch}, P={args.prompt_length}, "
          f"model {fm.name} ({fm.dtype}), {torch.get_num_threads()} threads", flush=True)
    prompts = {p: make_prompts(fm, p, words) for p in sorted({args.prompt_length, *lengths})}
    engines = {}
    for p, by_task in prompts.items():
        engines[p] = Engine(fm, batch_size=args.batch)
        for name, prompt in by_task.items():
            engines[p].add(name, prompt)
    main_prompts = prompts[args.prompt_length]

    # 1. Main comparison at P = --prompt-length; rounds interleave systems so machine noise hits all alike.
    folder = Path(tempfile.mkdtemp(prefix="serve-bench-"))
    systems = {
        "engine": engine_fn(engines[args.prompt_length]),
        "uncached": uncached_fn(fm, main_prompts, words),
        "peft": peft_fn(fm, peft_model(fm, main_prompts, folder), main_prompts, words),
    }
    for fn in systems.values():  # warm-up: first-call allocations and lazy inits off the clock
        fn(stream[: min(4, n)])
    times: dict[str, list[float]] = {k: [] for k in systems}
    scores: dict[str, list[list[float]]] = {}
    for r in range(rounds):
        for name, fn in systems.items():
            seconds, scores[name] = timed(fn, stream, args.batch)
            times[name].append(seconds)
            print(f"  round {r + 1}: {name:<9} {seconds:7.2f} s  {n / seconds:6.2f} ex/s", flush=True)
    best = {k: min(v) for k, v in times.items()}
    main_result = {
        "requests": n, "prompt_length": args.prompt_length,
        "seconds": times, "examples_per_s": {k: n / v for k, v in best.items()},
        "engine_vs_peft": best["peft"] / best["engine"], "engine_vs_uncached": best["uncached"] / best["engine"],
        # Per round (systems run back to back): the spread shows the machine's noise, ±15% here.
        "engine_vs_peft_by_round": [p / e for e, p in zip(times["engine"], times["peft"], strict=True)],
        "max_abs_score_diff": {"engine_vs_uncached": max_diff(scores["engine"], scores["uncached"]),
                               "engine_vs_peft": max_diff(scores["engine"], scores["peft"])},
        "label_agreement": {"engine_vs_uncached": agreement(scores["engine"], scores["uncached"]),
                            "engine_vs_peft": agreement(scores["engine"], scores["peft"])},
    }
    print(f"engine {main_result['examples_per_s']['engine']:.2f} ex/s = {main_result['engine_vs_peft']:.2f}× PEFT, "
          f"{main_result['engine_vs_uncached']:.2f}× uncached; max |score diff| "
          f"{main_result['max_abs_score_diff']}, label agreement {main_result['label_agreement']}", flush=True)

    # 2. Per-request time vs P: the engine's should be flat, the uncached path's grows with P.
    sweep = {}
    for p in lengths:
        row = {}
        for name, fn, reps in (("engine", engine_fn(engines[p]), rounds),
                               ("uncached", uncached_fn(fm, prompts[p], words), 1)):  # uncached: slow, one round
            seconds = min(timed(fn, stream, args.batch)[0] for _ in range(reps))
            row[f"{name}_ms_per_request"] = 1000 * seconds / n
        sweep[str(p)] = row
        print(f"  P={p:<4} engine {row['engine_ms_per_request']:7.1f} ms/request   "
              f"uncached {row['uncached_ms_per_request']:7.1f} ms/request", flush=True)

    # 3. Ensemble of K=5 (seeds 0..4) on RTE dev: one batched pass vs five separate evaluations.
    task = get_task("rte")
    examples = task.examples("validation", limit=ens_n)
    members = [make_prompt(fm, args.prompt_length, "class-labels", labels=task.label_words, seed=s, task="rte")
               for s in range(5)]
    one, separate, same = [], [], True
    for _ in range(rounds):
        start = time.perf_counter()
        result = run_ensemble(fm, task, examples, members, batch_size=args.batch)
        one.append(time.perf_counter() - start)
        start = time.perf_counter()
        alone = [evaluate(fm, task, examples, prompt=m, batch_size=2 * args.batch, progress=False) for m in members]
        separate.append(time.perf_counter() - start)
        same = same and all(a.predictions == b for a, b in zip(alone, result.members, strict=True))
    ensemble = {"task": "rte", "k": 5, "examples": len(examples), "one_pass_seconds": one,
                "separate_seconds": separate, "one_pass_over_separate": min(one) / min(separate),
                "member_predictions_identical": same, "metrics": result.summary()}
    print(f"ensemble K=5 on {len(examples)} RTE inputs: one pass {min(one):.2f} s vs five passes "
          f"{min(separate):.2f} s (ratio {ensemble['one_pass_over_separate']:.2f}); predictions identical: {same}")

    report = {
        "benchmark": "serve_vs_peft", "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"), "machine": machine(),
        "model": fm.name, "dtype": str(fm.dtype).removeprefix("torch."), "tasks": list(TASKS),
        "batch_size": args.batch, "max_input_tokens": args.max_input_tokens, "rounds": rounds,
        "notes": ("untrained class-label-init prompts; every system scores every label word of every request on "
                  "the same (cut) input texts; best of `rounds` timings; PEFT groups each batch by task and "
                  "switches adapters (set_adapter)"),
        "mixed_task_serving": main_result, "prompt_length_sweep": sweep, "ensemble": ensemble,
    }
    if out_path is not None:
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {out_path}")


if __name__ == "__main__":
    main()
