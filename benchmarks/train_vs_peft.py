"""One prompt-tuning training step: softprompt vs PEFT prompt tuning used as its documentation shows.

    python benchmarks/train_vs_peft.py            # full run (~15-25 min on 2 cores): writes results/train_vs_peft.json
    python benchmarks/train_vs_peft.py --quick    # smoke run (~3 min), prints the JSON only

Both sides train a P=20 prompt on SmolLM2-135M (the default model) with batch 8 and the same threads.

- **PEFT** (as its prompt-tuning causal-LM guide does): `get_peft_model(model, PromptTuningConfig(
  task_type=CAUSAL_LM, num_virtual_tokens=P, prompt_tuning_init=RANDOM))` on the fp32 model, its own
  forward with `labels` (-100 on input tokens and pads), AdamW lr 3e-2 with a linear schedule, every sequence
  left-padded to a fixed `max_length` (64 for SST-2 here, the guide's value).
- **softprompt**: `target_logprobs` (the loss `train()` uses: LM head only at target positions; the shared
  prompt runs once per batch and the examples run on its keys/values) on the frozen model (bf16 where the
  CPU has native bf16, else fp32), the fp32 SoftPrompt, Adafactor with the paper's settings, dynamic padding
  (to the longest sequence of the batch).

Two input regimes: `fixed` (every input exactly 128 tokens + the 2 target tokens, no padding on either side:
apples to apples, DESIGN.md §6) and `sst2` (real SST-2 train sentences, the same random batches for both).
Each side runs in its own subprocess so its peak RSS (ru_maxrss) is its own; the phases alternate
(PEFT, ours, ours, PEFT, ...) over several rounds so that background load hits both sides alike, and every
figure is a median over all timed steps. The bf16/fp32 GEMM peak is measured in the same run.

Recipes apart from implementations: `--ours-adamw-inits class-labels random-uniform` also trains ours with
PEFT's recipe (AdamW 3e-2, linear decay); `--regimes` with no value skips the timing, e.g.

    python benchmarks/train_vs_peft.py --regimes --acc-steps 100 --eval-n 872 --ours-inits \\
        --ours-adamw-inits class-labels random-uniform --out benchmarks/results/train_vs_peft_recipes.json

Accuracy: both train for the same steps on the same SST-2 train batches, then rank-classify the same SST-2
dev subset by the summed log-likelihood of " negative" vs " positive" after the input (PEFT: its own forward).
The text format is the sst2 task's (`softprompt.tasks.glue.format_sentence`: "sentence: {s}" -> label word).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from softprompt.model.loading import cpu_supports_bf16
from softprompt.training.config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "train_vs_peft.json"
TAG = "@@ "  # worker -> parent result lines on stdout
BATCH, PROMPT_LEN, THREADS = 8, 20, 2
PEFT_LR = 3e-2  # PEFT's prompt-tuning guide: AdamW, lr 3e-2, linear schedule without warm-up
# The CPU attention kernel ours trains with: train's default ("split") unless the environment names another
# (eager | sdpa), to compare kernels with the same benchmark.
ATTENTION = os.environ.get("SOFTPROMPT_BENCH_ATTENTION") or TrainConfig.attention


# ---------------------------------------------------------------------------------------------- data

def data_dir() -> str:
    return os.environ.get("SOFTPROMPT_DATA") or str(ROOT.parent / "shared" / "data")


def sst2(split: str, limit: int | None = None) -> list[Any]:
    from softprompt.tasks import get_task

    return get_task("sst2").examples(split, data_dir(), limit=limit)


def encoded_pool(fm: Any, seed: int, max_length: int):
    """(input ids, target ids = label word + EOS) of SST-2 train examples in a seeded random order, keeping
    those that fit PEFT's max_length (its guide truncates longer sequences from the end, which would cut the
    label; we drop them instead). A generator: workers encode only what they use."""
    from softprompt.scoring import encode_pair

    examples = sst2("train")
    random.Random(seed).shuffle(examples)
    for ex in examples:
        pair = encode_pair(fm, ex.input_text, ex.target_text, append_eos=True)
        if len(pair.input_ids) + len(pair.target_ids) <= max_length:
            yield pair.input_ids, pair.target_ids


def batches(fm: Any, regime: str, count: int, seed: int, max_length: int, fixed_len: int) -> list[list[tuple]]:
    """`count` batches of (input ids, target ids); identical for both sides given the seed."""
    pool = encoded_pool(fm, seed, max_length)
    if regime == "sst2":
        return [[next(pool) for _ in range(BATCH)] for _ in range(count)]
    # fixed: real text, every input exactly `fixed_len` tokens (consecutive sentences joined), one label each.
    out = []
    for _ in range(count):
        rows = []
        for _ in range(BATCH):
            stream: list[int] = []
            target = next(pool)[1]
            while len(stream) < fixed_len:
                stream += next(pool)[0]
            rows.append((stream[:fixed_len], target))
        out.append(rows)
    return out


# ----------------------------------------------------------------------------------------- the two sides

def guide_batch(rows: list[tuple[list[int], list[int]]], pad: int, max_length: int) -> dict[str, torch.Tensor]:
    """PEFT's causal-LM prompt-tuning guide's preprocessing of (input ids, target ids) rows: input + target,
    left-padded to max(max_length, longest row), labels -100 on the input and the padding. Tensors [B, T]."""
    length = max(max_length, max(len(i) + len(t) for i, t in rows))
    ids, mask, labels = [], [], []
    for inp, tgt in rows:
        n = len(inp) + len(tgt)
        ids.append([pad] * (length - n) + inp + tgt)
        mask.append([0] * (length - n) + [1] * n)
        labels.append([-100] * (length - len(tgt)) + tgt)
    return {"input_ids": torch.tensor(ids), "attention_mask": torch.tensor(mask), "labels": torch.tensor(labels)}


class Peft:
    """PEFT prompt tuning, as in its causal-LM prompt-tuning guide."""

    def __init__(self, steps: int, seed: int, max_length: int) -> None:
        from peft import PromptTuningConfig, PromptTuningInit, TaskType, get_peft_model
        from transformers import get_linear_schedule_with_warmup

        from softprompt.model.loading import load_model

        torch.manual_seed(seed)
        self.fm = load_model("default", dtype="fp32")  # fp32, as `from_pretrained(name)` gives
        config = PromptTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=PROMPT_LEN,
                                    prompt_tuning_init=PromptTuningInit.RANDOM)
        self.model = get_peft_model(self.fm.model, config)
        self.model.train()
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=PEFT_LR)
        self.scheduler = get_linear_schedule_with_warmup(self.optimizer, num_warmup_steps=0, num_training_steps=steps)
        self.max_length = max_length
        self.pad = self.fm.tokenizer.pad_token_id

    def collate(self, rows: list[tuple], with_labels: bool = True) -> dict[str, torch.Tensor]:
        batch = guide_batch(rows, self.pad, self.max_length)
        if not with_labels:
            del batch["labels"]
        return batch

    def step(self, rows: list[tuple]) -> tuple[float, int]:
        out = self.model(**self.collate(rows))
        out.loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad()
        return float(out.loss.detach()), 0

    @torch.no_grad()
    def scores(self, rows: list[tuple]) -> list[float]:
        """Summed log p(choice tokens | prompt, input) from PEFT's own forward ([B, P + L, V] logits)."""
        self.model.eval()
        batch = self.collate(rows, with_labels=False)
        logits = self.model(**batch).logits.float()
        logprobs = torch.log_softmax(logits[:, PROMPT_LEN - 1:-1], dim=-1)  # position j predicts token j
        token_lp = logprobs.gather(2, batch["input_ids"].unsqueeze(2)).squeeze(2)
        length = batch["input_ids"].shape[1]
        return [float(token_lp[b, length - len(t):].sum()) for b, (_, t) in enumerate(rows)]


class Ours:
    """softprompt: target_logprobs on the frozen model (bf16 or fp32, as load_model picks), fp32 prompt,
    Adafactor (paper settings)."""

    def __init__(self, steps: int, seed: int, init: str = "random-uniform", optimizer: str = "adafactor") -> None:
        from transformers import get_linear_schedule_with_warmup

        from softprompt.model.loading import load_model
        from softprompt.training.init import make_prompt

        self.fm = load_model("default")  # bf16 on CPUs with native bf16
        texts = [ex.input_text for ex in sst2("train", limit=5000)] if init == "class-labels" else None
        self.prompt = make_prompt(self.fm, PROMPT_LEN, init, labels=["negative", "positive"], texts=texts, seed=seed)
        params = [self.prompt.embeddings]
        if optimizer == "adafactor":  # the paper's settings (train()'s default)
            self.optimizer = torch.optim.Adafactor(params, lr=0.3, beta2_decay=-0.8, weight_decay=1e-5)
            self.scheduler = None
        else:  # PEFT's recipe on our implementation: isolates the recipe from the implementation
            self.optimizer = torch.optim.AdamW(params, lr=PEFT_LR)
            self.scheduler = get_linear_schedule_with_warmup(self.optimizer, num_warmup_steps=0, num_training_steps=steps)

    def step(self, rows: list[tuple]) -> tuple[float, int]:
        from softprompt.model.attention import training_attention
        from softprompt.scoring import Encoded, target_logprobs

        pairs = [Encoded(list(i), list(t)) for i, t in rows]
        self.optimizer.zero_grad(set_to_none=True)
        with training_attention(self.fm, ATTENTION):  # as train(attention=...) does
            logprobs = torch.cat(target_logprobs(self.fm, pairs, self.prompt))
        loss = -logprobs.sum() / len(logprobs)  # mean over target tokens, as train.py's ce loss
        loss.backward()
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        # tokens through the transformer: the prompt once (shared prefix) + the padded batch
        return float(loss.detach()), PROMPT_LEN + len(rows) * max(len(i) + len(t) for i, t in rows)


def non_embedding_params(fm: Any) -> int:
    embed = fm.model.get_input_embeddings().weight
    head = fm.model.get_output_embeddings().weight
    return sum(p.numel() for p in fm.model.parameters() if p is not embed and p is not head)


# -------------------------------------------------------------------------------------------- workers

def rss_mb() -> dict[str, float]:
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return {"rss_mb": int(status["VmRSS"].split()[0]) / 1024, "hwm_mb": int(status["VmHWM"].split()[0]) / 1024}


def emit(record: dict[str, Any]) -> None:
    print(TAG + json.dumps(record), flush=True)


def worker_time(args: argparse.Namespace) -> None:
    """Warm-up + timed steps of one side in one regime; one line per step, then the peak RSS."""
    side = Peft(args.warmup + args.steps, args.seed, args.max_length) if args.side == "peft" else Ours(
        args.warmup + args.steps, args.seed)
    torch.set_num_threads(THREADS)
    fm = side.fm
    data = batches(fm, args.regime, args.warmup + args.steps, args.seed + args.round, args.max_length, args.fixed_len)
    loaded = rss_mb()
    for i, rows in enumerate(data):
        tick = time.perf_counter()
        loss, tokens = side.step(rows)
        seconds = time.perf_counter() - tick
        warm = i < args.warmup
        print(f"[{args.side}/{args.regime} r{args.round}] step {i} {'warm-up ' if warm else ''}{seconds:.3f}s "
              f"loss {loss:.3f}", file=sys.stderr, flush=True)
        if not warm:
            target = sum(len(t) for _, t in rows)
            emit({"kind": "step", "seconds": seconds, "tokens": tokens, "targets": target, "loss": loss})
    emit({"kind": "end", "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
          "after_load_rss_mb": loaded["rss_mb"], "after_load_peak_mb": loaded["hwm_mb"],
          "non_embedding_params": non_embedding_params(fm), "hidden": fm.hidden_size, "vocab": fm.vocab_size,
          "threads": torch.get_num_threads(), "dtype": str(fm.dtype)})


def worker_accuracy(args: argparse.Namespace) -> None:
    """Train `steps` on the same SST-2 batches, then rank-classify the same dev subset."""
    side = (Peft(args.steps, args.seed, args.max_length) if args.side == "peft"
            else Ours(args.steps, args.seed, args.init, args.optimizer))
    torch.set_num_threads(THREADS)
    data = batches(side.fm, "sst2", args.steps, args.seed, args.max_length, args.fixed_len)
    losses, tick = [], time.perf_counter()
    for i, rows in enumerate(data):
        losses.append(side.step(rows)[0])
        if i % 10 == 0:
            print(f"[acc {args.side}/{args.init}] step {i} loss {losses[-1]:.3f}", file=sys.stderr, flush=True)
    train_s = time.perf_counter() - tick
    dev = sst2("validation", limit=args.eval_n)
    tick = time.perf_counter()
    if args.side == "peft":
        from softprompt.scoring import encode_pair

        correct = 0
        for start in range(0, len(dev), 8):
            chunk = dev[start:start + 8]
            encoded = [encode_pair(side.fm, ex.input_text, c) for ex in chunk for c in ex.choices]
            rows = [(e.input_ids, e.target_ids) for e in encoded]
            flat = side.scores(rows)
            for k, ex in enumerate(chunk):
                pair = flat[2 * k: 2 * k + 2]
                correct += int(max(range(2), key=pair.__getitem__) == ex.label)
        accuracy, zero_shot = correct / len(dev), None
    else:
        from softprompt.evaluation.evaluate import evaluate
        from softprompt.tasks import get_task

        task = get_task("sst2")
        accuracy = evaluate(side.fm, task, dev, prompt=side.prompt, batch_size=32, progress=False).metrics["accuracy"]
        zero_shot = evaluate(side.fm, task, dev, prompt=None, batch_size=32, progress=False).metrics["accuracy"]
    emit({"kind": "accuracy", "accuracy": accuracy, "zero_shot_accuracy": zero_shot, "train_seconds": train_s,
          "eval_seconds": time.perf_counter() - tick, "loss_first10": statistics.mean(losses[:10]),
          "loss_last10": statistics.mean(losses[-10:]),
          "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024})


def worker_profile(args: argparse.Namespace) -> None:
    """Top ops of our training step (fixed regime) by self CPU time."""
    from torch.profiler import ProfilerActivity, profile

    side = Ours(args.steps + 2, args.seed)
    torch.set_num_threads(THREADS)
    data = batches(side.fm, args.regime, args.steps + 2, args.seed, args.max_length, args.fixed_len)
    for rows in data[:2]:
        side.step(rows)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for rows in data[2:]:
            side.step(rows)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20))


# --------------------------------------------------------------------------------------------- parent

def gemm_peak(dtype: torch.dtype, n: int = 2048, reps: int = 10) -> dict[str, float]:
    """GFLOP/s of an n×n matmul on THREADS threads: best and median of `reps`."""
    torch.set_num_threads(THREADS)
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    for _ in range(2):
        a @ b
    rates = []
    for _ in range(reps):
        tick = time.perf_counter()
        a @ b
        rates.append(2 * n**3 / (time.perf_counter() - tick) / 1e9)
    return {"best_gflops": round(max(rates), 1), "median_gflops": round(statistics.median(rates), 1)}


def run_worker(mode: str, side: str, extra: list[str], args: argparse.Namespace) -> list[dict[str, Any]]:
    cmd = [sys.executable, __file__, "--worker", mode, "--side", side, "--seed", str(args.seed),
           "--max-length", str(args.max_length), "--fixed-len", str(args.fixed_len), *extra]
    env = {**os.environ, "OMP_NUM_THREADS": str(THREADS), "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, env=env, text=True, cwd=ROOT)
    if proc.returncode:
        raise SystemExit(f"worker failed ({proc.returncode}): {' '.join(cmd)}")
    return [json.loads(line[len(TAG):]) for line in proc.stdout.splitlines() if line.startswith(TAG)]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def timing(regime: str, args: argparse.Namespace) -> dict[str, Any]:
    """Rounds of (PEFT, ours) subprocess phases, order alternating; medians over all timed steps."""
    steps: dict[str, list[dict]] = {"peft": [], "ours": []}
    ends: dict[str, list[dict]] = {"peft": [], "ours": []}
    round_ratios = []
    for r in range(args.rounds):
        order = ("peft", "ours") if r % 2 == 0 else ("ours", "peft")
        per_round = {}
        for side in order:
            extra = ["--regime", regime, "--steps", str(args.steps), "--warmup", str(args.warmup), "--round", str(r)]
            records = run_worker("time", side, extra, args)
            rows = [x for x in records if x["kind"] == "step"]
            steps[side] += rows
            ends[side] += [x for x in records if x["kind"] == "end"]
            per_round[side] = median([x["seconds"] for x in rows])
        round_ratios.append(per_round["peft"] / per_round["ours"])
        print(f"[{regime}] round {r}: peft {per_round['peft']:.3f}s ours {per_round['ours']:.3f}s "
              f"ratio {round_ratios[-1]:.2f}", file=sys.stderr, flush=True)
    peft_s, ours_s = (median([x["seconds"] for x in steps[s]]) for s in ("peft", "ours"))
    peft_rss, ours_rss = (max(e["peak_rss_mb"] for e in ends[s]) for s in ("peft", "ours"))
    info = ends["ours"][0]
    # Model FLOPs of our step: 2·N·tokens forward + 2·N·tokens for the input-gradient backward (frozen weights:
    # no weight gradients), N = non-embedding parameters, tokens = prompt once + the padded batch; plus the
    # LM head (2·H·V per target token, forward and backward). Attention score/value FLOPs are not counted.
    rates = [(4 * info["non_embedding_params"] * x["tokens"] + 4 * info["hidden"] * info["vocab"] * x["targets"])
             / x["seconds"] for x in steps["ours"]]
    return {
        "seconds_per_step": {"peft": round(peft_s, 3), "ours": round(ours_s, 3)},
        "ratio_peft_over_ours": round(peft_s / ours_s, 2),
        "ratio_median_of_rounds": round(median(round_ratios), 2),
        "round_ratios": [round(x, 2) for x in round_ratios],
        "steps_timed_per_side": len(steps["ours"]),
        "peak_rss_mb": {"peft": round(peft_rss), "ours": round(ours_rss)},
        "peak_rss_ratio_ours_over_peft": round(ours_rss / peft_rss, 2),
        "rss_after_model_load_mb": {s: round(ends[s][0]["after_load_rss_mb"]) for s in ("peft", "ours")},
        "ours_tokens_per_step_median": median([x["tokens"] for x in steps["ours"]]),
        "ours_model_gflops": round(median(rates) / 1e9, 1),
        "final_loss": {s: round(steps[s][-1]["loss"], 3) for s in ("peft", "ours")},
        "model": {"non_embedding_params": info["non_embedding_params"], "H": info["hidden"], "V": info["vocab"],
                  "ours_dtype": info["dtype"], "peft_dtype": ends["peft"][0]["dtype"]},
    }


def machine() -> dict[str, Any]:
    import peft
    import transformers

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return {"nproc": os.cpu_count(), "cpus_usable": len(os.sched_getaffinity(0)), "cpu_model": cpu,
            "torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__,
            "python": platform.python_version()}


def print_and_write(result: dict[str, Any], out: str | Path | None) -> None:
    """Print a benchmark's JSON and, with `out`, write it there too."""
    text = json.dumps(result, indent=2)
    print(text)
    if out:
        Path(out).write_text(text + "\n")


def machine_and_peaks() -> dict[str, Any]:
    """`machine()` plus whether the CPU has native bf16 and the 2048² GEMM peaks measured now (fp32, and bf16
    where native: emulated bf16 would take minutes and mean nothing), for benchmarks that report both."""
    bf16 = cpu_supports_bf16()
    peaks = {"fp32": gemm_peak(torch.float32)} | ({"bf16": gemm_peak(torch.bfloat16)} if bf16 else {})
    return machine() | {"bf16": bf16, "gemm_2048_peak": peaks}


def parent(args: argparse.Namespace) -> None:
    if args.quick:
        args.rounds, args.steps, args.warmup, args.acc_steps, args.eval_n, args.fixed_len = 2, 1, 1, 2, 8, 32
    command = "python benchmarks/train_vs_peft.py " + " ".join(sys.argv[1:])
    started, load_start = time.time(), os.getloadavg()
    print("measuring the GEMM peak ...", file=sys.stderr, flush=True)
    # The peak of the dtype ours runs in: bf16 where the CPU has native bf16 matmuls, else fp32 (emulated bf16
    # runs at ~1 GFLOP/s on an AVX2 CPU: measuring it would take many minutes and mean nothing).
    model_dtype, model_torch_dtype = ("bf16", torch.bfloat16) if cpu_supports_bf16() else ("fp32", torch.float32)
    peaks = {"fp32": gemm_peak(torch.float32)}
    if model_dtype == "bf16":
        peaks["bf16"] = gemm_peak(torch.bfloat16)
    result: dict[str, Any] = {
        "benchmark": "one prompt-tuning training step: softprompt vs PEFT (documented usage), SmolLM2-135M",
        "date": datetime.datetime.now().isoformat(timespec="seconds"), "command": command,
        "machine": machine(),
        "config": {"batch_size": BATCH, "prompt_length": PROMPT_LEN, "threads": THREADS, "rounds": args.rounds,
                   "timed_steps_per_phase": args.steps, "warmup_steps_per_phase": args.warmup,
                   "fixed_input_tokens": args.fixed_len, "target_tokens": "label word + EOS (2)",
                   "peft_max_length_sst2": args.max_length,
                   "peft": f"fp32, get_peft_model + PromptTuningConfig(RANDOM), forward with labels, AdamW lr "
                           f"{PEFT_LR} + linear schedule, left-padded to max_length",
                   "ours": f"{model_dtype} frozen model, fp32 prompt, target_logprobs (head at targets, shared prefix), "
                           "Adafactor(lr=0.3, beta2_decay=-0.8, weight_decay=1e-5), dynamic padding",
                   "ours_attention": ATTENTION,
                   "flops_counting": "4·N_nonembed·tokens + 4·H·V·targets (fwd + input-grad bwd; tokens = P once "
                                     "+ B × padded length; attention scores not counted)"},
        "gemm_2048_peak": peaks,
        "regimes": {},
        "complete": False,
    }
    out = args.out or (None if args.quick else str(RESULTS))

    def save() -> str:  # after every section: a crash or a kill later still leaves the figures so far
        text = json.dumps(result, indent=2)
        if out:
            Path(out).parent.mkdir(parents=True, exist_ok=True)
            Path(out).write_text(text + "\n")
        return text

    for regime in args.regimes:
        result["regimes"][regime] = timing(regime, args)
        gf = result["regimes"][regime]["ours_model_gflops"]
        result["regimes"][regime][f"ours_fraction_of_{model_dtype}_peak"] = round(
            gf / peaks[model_dtype]["best_gflops"], 3)
        save()
    if args.acc_steps:
        acc: dict[str, Any] = {"train_steps": args.acc_steps, "batch_size": BATCH, "dev_examples": args.eval_n,
                               "train_data": f"SST-2 train, seeded shuffle (seed {args.seed}), inputs fitting "
                                             f"max_length {args.max_length}; same batches for every run"}
        runs = [("peft", "RANDOM", "adamw")] + [("ours", init, "adafactor") for init in args.ours_inits]
        runs += [("ours", init, "adamw") for init in args.ours_adamw_inits]
        for side, init, opt in runs:
            key = f"{side}:{init}" + (":adamw" if side == "ours" and opt == "adamw" else "")
            extra = ["--steps", str(args.acc_steps), "--eval-n", str(args.eval_n), "--init", init, "--optimizer", opt]
            acc[key] = run_worker("accuracy", side, extra, args)[-1]
            print(f"[accuracy] {key} {acc[key]['accuracy']:.3f}", file=sys.stderr, flush=True)
            result["accuracy"] = acc
            save()
    result["gemm_2048_peak_at_end"] = {model_dtype: gemm_peak(model_torch_dtype)}
    result["load_average"] = {"start": [round(x, 2) for x in load_start],
                              "end": [round(x, 2) for x in os.getloadavg()]}
    result["wall_seconds"] = round(time.time() - started)
    result["complete"] = True
    print(save())
    if out:
        print(f"wrote {out}", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke run: few steps, tiny eval, no file written")
    parser.add_argument("--rounds", type=int, default=4, help="alternating (PEFT, ours) phases per regime")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per phase")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps at the start of each phase")
    parser.add_argument("--regimes", nargs="*", default=["fixed", "sst2"], choices=["fixed", "sst2"],
                        help="timing regimes (none: accuracy only)")
    parser.add_argument("--fixed-len", type=int, default=128, help="input tokens per example in the fixed regime")
    parser.add_argument("--max-length", type=int, default=64, help="PEFT's padded length for SST-2 (its guide: 64)")
    parser.add_argument("--acc-steps", type=int, default=100, help="training steps before the accuracy check (0: skip)")
    parser.add_argument("--eval-n", type=int, default=300, help="SST-2 dev examples for the accuracy check")
    parser.add_argument("--ours-inits", nargs="*", default=["class-labels", "random-uniform"],
                        help="our prompt inits for the accuracy check (PEFT's is RANDOM, as asked of it)")
    parser.add_argument("--ours-adamw-inits", nargs="*", default=[],
                        help="also train ours with PEFT's recipe (AdamW 3e-2, linear decay) from these inits")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help=f"write the JSON here (default for full runs: {RESULTS.relative_to(ROOT)})")
    parser.add_argument("--profile", action="store_true", help="print our step's top ops (torch.profiler) and exit")
    # internal: one side in a subprocess
    parser.add_argument("--worker", choices=["time", "accuracy", "profile"], help=argparse.SUPPRESS)
    parser.add_argument("--side", choices=["peft", "ours"], help=argparse.SUPPRESS)
    parser.add_argument("--regime", default="fixed", help=argparse.SUPPRESS)
    parser.add_argument("--round", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--init", default="random-uniform", help=argparse.SUPPRESS)
    parser.add_argument("--optimizer", default="adafactor", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.profile:
        args.worker, args.side, args.steps = "profile", "ours", 3
    if args.worker:
        {"time": worker_time, "accuracy": worker_accuracy, "profile": worker_profile}[args.worker](args)
    else:
        parent(args)


if __name__ == "__main__":
    main()
