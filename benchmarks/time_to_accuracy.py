"""Time to accuracy: the quality of a prompt after N minutes of training, softprompt vs PEFT prompt tuning.

    python benchmarks/time_to_accuracy.py                       # SST-2, BoolQ, BANKING77; 2/5/10/20/30 min each
    python benchmarks/time_to_accuracy.py --tasks sst2 --minutes 1 2 5 --final-limit 872
    python benchmarks/time_to_accuracy.py --quick               # smoke run (~3 min): tiny budgets, no file written

Systems, each trained alone in its own subprocess on the same model (the default, SmolLM2-135M), threads and data:
- `ours`        `softprompt.train` with the default recipe (TrainConfig.recipe = "default");
- `ours-paper`  `softprompt.train --recipe paper` (Adafactor 0.3, constant lr: Lester et al. 2021);
- `ours-reparam` the default recipe with `--reparam residual-mlp` (a residual MLP over the rows while training);
- `peft`        PEFT prompt tuning as its causal-LM prompt-tuning guide shows: `PromptTuningConfig(CAUSAL_LM,
                prompt_tuning_init=TEXT, num_virtual_tokens=8)`, its own forward with `labels` (-100 on the input),
                AdamW lr 3e-2, linear decay, batch 8, left-padded to max_length 64 (longer rows: to their length);
- `peft-lr=X`   the same with lr X for each X of `--peft-lrs` (the sweep; the winner is chosen on validation).

Every system is evaluated at the same training-clock checkpoints (`--minutes`; evaluation time is not counted)
on the same validation examples, carved from the task's TRAIN split by a hash of the input text and left out of
training (`--val-n`), so nothing is chosen on the reported split. The final prompt of each system is then
evaluated once on the reported split (SST-2/BoolQ dev, BANKING77 test), `--final-limit` examples of it.
PEFT's prompt is evaluated through softprompt's scorer (its [P, H] embedding as a SoftPrompt): SmolLM2 adds no
BOS, so PEFT's layout (prompt, then input) is ours exactly (tests/test_peft_io.py checks the logits).

A linear schedule needs a step count: each system's is the steps its own step time allows in the largest
checkpoint, from probe steps that are then discarded (ours: 10, timed after the third, since its
length-bucketed batches meet new shapes at first; PEFT pads every batch to one length: 3, timed from the second). JSON -> benchmarks/results/time_to_accuracy.json, a PNG per task.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
TAG = "@@ "  # worker -> parent result lines on stdout
THREADS = 2
PEFT_DOC = {"lr": 3e-2, "batch_size": 8, "virtual_tokens": 8, "max_length": 64}
# task -> (task name or task file, split reported once at the end)
TASKS = {"sst2": ("sst2", "validation"), "boolq": ("boolq", "validation"),
         "banking77": (str(ROOT / "examples" / "banking77.yaml"), "test")}


# ------------------------------------------------------------------------------------------------- data

def load_task(name: str) -> Any:
    from softprompt.tasks import resolve_task

    spec = TASKS[name][0]
    return resolve_task(task_file=spec) if spec.endswith(".yaml") else resolve_task(spec)


def carve(examples: list[Any], val_n: int) -> tuple[list[Any], list[Any]]:
    """(train, validation): the `val_n` examples with the smallest hash of their input text are validation;
    stable across runs and processes, disjoint from what trains."""
    def key(ex: Any) -> str:
        return hashlib.sha1(f"{ex.input_text}\x00{ex.target_text}".encode()).hexdigest()

    ranked = sorted(examples, key=key)
    return ranked[val_n:], ranked[:val_n]


def task_data(args: argparse.Namespace) -> tuple[Any, list[Any], list[Any], list[Any]]:
    task = load_task(args.task)
    train, val = carve(task.examples("train", data_dir()), args.val_n)
    final = task.examples(TASKS[args.task][1], data_dir(), limit=args.final_limit)
    return task, train, val, final


def data_dir() -> str:
    return os.environ.get("SOFTPROMPT_DATA") or str(ROOT.parent / "shared" / "data")


# ------------------------------------------------------------------------------------------------- the clock

class Clock:
    """The training clock: wall time minus evaluations, from the start of the first step. A run's setup
    (tokenizing the training set, building the prompt) is reported apart, as `setup_seconds`, on both sides.
    `begin(step_seconds)` is called when the first step has ended: the clock then reads that step's time."""

    def __init__(self, minutes: list[float]) -> None:
        self.checkpoints, self.created, self.start, self.paused = sorted(minutes), time.perf_counter(), None, 0.0

    def begin(self, first_step_seconds: float) -> float:
        """Start the clock (once) as if at the first step's start; returns the setup seconds before it."""
        if self.start is None:
            self.start = time.perf_counter() - first_step_seconds
        return self.start - self.created

    @property
    def seconds(self) -> float:
        return 0.0 if self.start is None else time.perf_counter() - self.start - self.paused

    def due(self) -> bool:
        return bool(self.checkpoints) and self.seconds >= self.checkpoints[0] * 60

    def evaluate(self, fn: Any) -> tuple[list[float], Any]:
        """Run `fn()` off the clock; pops every checkpoint that is due (a step longer than the gap between two
        checkpoints passes both: they share the evaluation). (checkpoint minutes, fn's result)"""
        tick, passed = time.perf_counter(), []
        while self.due() or (not passed and self.checkpoints):
            passed.append(self.checkpoints.pop(0))
        out = fn()
        self.paused += time.perf_counter() - tick
        return passed, out


def accuracy(fm: Any, task: Any, examples: list[Any], prompt: Any) -> float:
    from softprompt.evaluation.evaluate import evaluate

    result = evaluate(fm, task, examples, prompt=prompt, batch_size=32, progress=False)
    return float(result.metrics[task.main_metric])


def emit(record: dict[str, Any]) -> None:
    print(TAG + json.dumps(record), flush=True)


def step_seconds(times: list[float]) -> float:
    """Median seconds per step from the probe's step-end times (the first step, warm-up, is not timed)."""
    return statistics.median([b - a for a, b in zip(times, times[1:], strict=False)])


def warm_step_seconds(times: list[float], warm: int) -> float:
    """Mean seconds per step after the first `warm` steps. Ours buckets batches by length, so a fresh process
    meets new shapes in its first steps (oneDNN builds kernels per shape): the first SST-2 probes here took
    7.4 s a step against 3.5 s over the run, so 3 steps planned half the schedule the time allowed."""
    return (times[-1] - times[warm - 1]) / (len(times) - warm)


class Done(Exception):
    """Raised by the step callback after the last checkpoint: training stops there."""


# ------------------------------------------------------------------------------------------------- ours

def ours_config(args: argparse.Namespace, out: str, steps: int) -> Any:
    from softprompt.training.config import TrainConfig

    spec = TASKS[args.task][0]
    where = {"task_file": spec} if spec.endswith(".yaml") else {"task": spec}
    return TrainConfig(**where, recipe=args.recipe, reparam=args.reparam, steps=steps, eval_every=0, out=out, threads=THREADS,
                       seed=args.seed, data_dir=data_dir())


def worker_ours(args: argparse.Namespace) -> None:
    """softprompt.train with a recipe; the step callback evaluates at each checkpoint and stops after the last."""
    from softprompt.model.loading import load_model
    from softprompt.training.loop import train

    fm = load_model("default")
    task, train_ex, val, final = task_data(args)
    # train() evaluates its own validation set at its last step, inside that step's time and so on the clock
    # (BANKING77's 200 x 77 label words made the probe read 20 s a step against 12): it gets one example; the
    # checkpoints evaluate `val` off the clock.
    mute = val[:1]
    with tempfile.TemporaryDirectory() as scratch:  # probe: 10 steps, timed after the third, then thrown away
        times: list[float] = []
        train(ours_config(args, f"{scratch}/probe", 10), fm=fm, task=task, train_examples=train_ex, eval_examples=mute,
              progress=False, on_step=lambda state, prompt: times.append(time.perf_counter()))
        probe = warm_step_seconds(times, 3)
        steps = max(1, round(max(args.minutes) * 60 / probe))
        cfg = ours_config(args, f"{scratch}/run", steps)
        clock, last, setup = Clock(args.minutes), {}, {}

        def on_step(state: Any, prompt: Any) -> None:
            setup.setdefault("seconds", clock.begin(probe))
            last.update(prompt=prompt, steps=state.step)
            if clock.due():
                checkpoint(clock, lambda: accuracy(fm, task, val, prompt), state.step, cfg.batch_size)
                if not clock.checkpoints:
                    raise Done
        try:
            train(cfg, fm=fm, task=task, train_examples=train_ex, eval_examples=mute, progress=False, on_step=on_step)
        except Done:
            pass
        while clock.checkpoints:  # the schedule ended before the last checkpoint: the final prompt stands for them
            checkpoint(clock, lambda: accuracy(fm, task, val, last["prompt"]), last["steps"], cfg.batch_size,
                       after_schedule=True)
        emit({"kind": "final", "split": TASKS[args.task][1], "examples": len(final), "schedule_steps": steps,
              "probe_step_seconds": round(probe, 3), "setup_seconds": round(setup["seconds"], 1),
              "accuracy": accuracy(fm, task, final, last["prompt"]),
              "recipe": {k: cfg.to_dict()[k] for k in ("recipe", "optimizer", "lr_schedule", "batch_size",
                                                       "prompt_length", "init", "weight_decay", "reparam")}
              | {"lr": cfg.learning_rate}})


def checkpoint(clock: Clock, evaluate: Any, steps: int, batch: int, after_schedule: bool = False) -> None:
    """Evaluate off the clock and emit one record per checkpoint passed."""
    passed, acc = clock.evaluate(evaluate)
    for minutes in passed:
        emit({"kind": "checkpoint", "minutes": minutes, "train_seconds": round(clock.seconds, 1), "steps": steps,
              "examples_seen": steps * batch, "val_accuracy": acc} | ({"after_schedule": True} if after_schedule else {}))


# ------------------------------------------------------------------------------------------------- PEFT

class PeftRun:
    """PEFT prompt tuning as its causal-LM guide shows (TEXT init, AdamW, linear decay, fixed-length padding)."""

    def __init__(self, fm: Any, task: Any, lr: float, seed: int) -> None:
        from peft import PromptTuningConfig, PromptTuningInit, TaskType, get_peft_model

        torch.manual_seed(seed)
        words = task.label_words or []
        init_text = (f"Classify if the text is {' or '.join(words)}:" if 1 < len(words) <= 4
                     else f"Answer the {task.name} question:")
        # PEFT loads the tokenizer for the TEXT init from the model's folder (the dequantized default's cache)
        config = PromptTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=PEFT_DOC["virtual_tokens"],
                                    prompt_tuning_init=PromptTuningInit.TEXT, prompt_tuning_init_text=init_text,
                                    tokenizer_name_or_path=fm.model.config.name_or_path)
        self.fm, self.pad = fm, fm.tokenizer.pad_token_id
        self.model = get_peft_model(fm.model, config)
        self.model.train()
        self.lr, self.initial = lr, self.embedding.detach().clone()

    def start(self, steps: int) -> None:
        """From the initial prompt: a fresh AdamW and a linear schedule over `steps` (the probe runs first)."""
        from transformers import get_linear_schedule_with_warmup

        with torch.no_grad():
            self.embedding.copy_(self.initial)
        self.optimizer = torch.optim.AdamW([p for p in self.model.parameters() if p.requires_grad], lr=self.lr)
        self.scheduler = get_linear_schedule_with_warmup(self.optimizer, num_warmup_steps=0, num_training_steps=steps)

    @property
    def embedding(self) -> torch.Tensor:
        """PEFT's prompt [P, H]."""
        return self.model.prompt_encoder["default"].embedding.weight

    def step(self, rows: list[tuple[list[int], list[int]]]) -> float:
        length = max(PEFT_DOC["max_length"], max(len(i) + len(t) for i, t in rows))
        ids, mask, labels = [], [], []
        for inp, tgt in rows:
            n = len(inp) + len(tgt)
            ids.append([self.pad] * (length - n) + inp + tgt)
            mask.append([0] * (length - n) + [1] * n)
            labels.append([-100] * (length - len(tgt)) + tgt)
        out = self.model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), labels=torch.tensor(labels))
        out.loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad()
        return float(out.loss.detach())

    def prompt(self) -> Any:
        from softprompt.model.prompt import SoftPrompt

        return SoftPrompt(self.embedding.detach().clone(), {"label_words": None})


def peft_rows(fm: Any, examples: list[Any], seed: int, max_input: int = 256) -> list[tuple[list[int], list[int]]]:
    """(input ids, label + EOS) per example, inputs cut from the left to `max_input` (as train() cuts), shuffled."""
    import random

    from softprompt.scoring import encode_pair

    rows = []
    for ex in examples:
        pair = encode_pair(fm, ex.input_text, ex.target_text, append_eos=True)
        rows.append((pair.input_ids[-max_input:], pair.target_ids))
    random.Random(seed).shuffle(rows)
    return rows


def worker_peft(args: argparse.Namespace) -> None:
    from softprompt.model.loading import load_model

    fm = load_model("default", dtype="fp32")  # as `from_pretrained(name)` gives
    task, train_ex, val, final = task_data(args)
    tick = time.perf_counter()
    rows, batch = peft_rows(fm, train_ex, args.seed), PEFT_DOC["batch_size"]
    tokenize = time.perf_counter() - tick  # its setup; ours tokenizes inside train(), before its clock starts
    torch.set_num_threads(THREADS)

    def batches():
        while True:
            for start in range(0, len(rows) - batch + 1, batch):
                yield rows[start:start + batch]

    run, times, data = PeftRun(fm, task, args.lr, args.seed), [], batches()
    run.start(10)  # probe: 3 steps, timed from the second; then the run starts again from the initial prompt
    for _ in range(3):
        run.step(next(data))
        times.append(time.perf_counter())
    probe = step_seconds(times)
    steps = max(1, round(max(args.minutes) * 60 / probe))
    run.start(steps)
    data, clock, done = batches(), Clock(args.minutes), 0
    while clock.checkpoints:
        run.step(next(data))
        done += 1
        clock.begin(probe)
        if clock.due():
            checkpoint(clock, lambda: accuracy(fm, task, val, run.prompt()), done, batch)
    emit({"kind": "final", "split": TASKS[args.task][1], "examples": len(final), "schedule_steps": steps,
          "probe_step_seconds": round(probe, 3), "setup_seconds": round(tokenize, 1),
          "accuracy": accuracy(fm, task, final, run.prompt()),
          "recipe": {"optimizer": "adamw", "lr_schedule": "linear", **PEFT_DOC, "lr": args.lr, "init": "TEXT"}})


# ------------------------------------------------------------------------------------------------- parent

def systems(args: argparse.Namespace) -> list[tuple[str, list[str]]]:
    """(name, worker flags) in run order."""
    out = [("ours", ["--side", "ours", "--recipe", "default"]), ("ours-paper", ["--side", "ours", "--recipe", "paper"]),
           ("ours-reparam", ["--side", "ours", "--recipe", "default", "--reparam", "residual-mlp"]),
           ("peft", ["--side", "peft", "--lr", str(PEFT_DOC["lr"])])]
    out += [(f"peft-lr={lr:g}", ["--side", "peft", "--lr", str(lr)]) for lr in args.peft_lrs if lr != PEFT_DOC["lr"]]
    return [s for s in out if not args.systems or s[0] in args.systems]


def run_worker(task: str, flags: list[str], args: argparse.Namespace) -> list[dict[str, Any]]:
    cmd = [sys.executable, __file__, "--worker", "--task", task, "--val-n", str(args.val_n), "--seed", str(args.seed),
           "--minutes", *map(str, args.minutes), *flags]
    if args.final_limit:
        cmd += ["--final-limit", str(args.final_limit)]
    env = {**os.environ, "OMP_NUM_THREADS": str(THREADS), "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, env=env, text=True, cwd=ROOT)
    if proc.returncode:
        raise SystemExit(f"worker failed ({proc.returncode}): {' '.join(cmd)}")
    return [json.loads(line[len(TAG):]) for line in proc.stdout.splitlines() if line.startswith(TAG)]


def compare(runs: dict[str, Any]) -> dict[str, Any]:
    """Ours minus PEFT (documented, and the swept lr that won on validation) in points, per checkpoint; and how
    much sooner ours reaches PEFT's (documented) accuracy at its last checkpoint."""
    def curve(name: str) -> dict[float, float]:
        return {c["minutes"]: c["val_accuracy"] for c in runs[name]["checkpoints"]}

    swept = [n for n in runs if n.startswith("peft")]
    out: dict[str, Any] = {}
    if "ours" not in runs or not swept:
        return out
    best = max(swept, key=lambda n: curve(n)[max(curve(n))])  # chosen on validation at the last checkpoint
    out["peft_best_swept"] = best
    for peer in {"peft", best}:
        if peer in runs:
            mine, theirs = curve("ours"), curve(peer)
            out[f"ours_minus_{peer}_pp"] = {str(m): round(100 * (mine[m] - theirs[m]), 1) for m in mine if m in theirs}
    if "peft" in runs:
        peft = curve("peft")
        last = max(peft)
        reached = [m for m, acc in sorted(curve("ours").items()) if acc >= peft[last]]
        out["peft_last_checkpoint_accuracy"] = peft[last]
        out["ours_minutes_to_reach_it"] = reached[0] if reached else None
        out["time_to_peft30_ratio"] = round(last / reached[0], 2) if reached else None
    return out


def plot(task: str, runs: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, run in runs.items():
        points = run["checkpoints"]
        ax.plot([p["train_seconds"] / 60 for p in points], [p["val_accuracy"] for p in points], marker="o", label=name)
    ax.set(xlabel="training minutes (evaluation not counted)", ylabel="validation accuracy (carved from train)",
           title=f"{task}: accuracy vs training time")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(fig)


def parent(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from train_vs_peft import machine_and_peaks  # a sibling benchmark's; imported here, not in the workers

    if args.quick:
        args.minutes, args.val_n, args.final_limit, args.peft_lrs = [0.05, 0.1], 16, 16, [3e-1]
    out = args.out or (None if args.quick else str(RESULTS / "time_to_accuracy.json"))
    result: dict[str, Any] = {
        "benchmark": "time to accuracy: softprompt vs PEFT prompt tuning, SmolLM2-135M (the default model)",
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "command": "python benchmarks/time_to_accuracy.py " + " ".join(sys.argv[1:]),
        "machine": machine_and_peaks(), "threads": THREADS, "checkpoint_minutes": args.minutes,
        "validation": f"{args.val_n} examples carved from train by hash (left out of training)",
        "peft_documented": PEFT_DOC, "tasks": {}, "complete": False,
    }
    started = time.time()
    for task in args.tasks:
        runs: dict[str, Any] = {}
        for name, flags in systems(args):
            print(f"[{task}] {name} ...", file=sys.stderr, flush=True)
            records = run_worker(task, flags, args)
            runs[name] = {"checkpoints": [r for r in records if r["kind"] == "checkpoint"],
                          "final": next(r for r in records if r["kind"] == "final")}
            print(f"[{task}] {name}: " + ", ".join(f"{c['minutes']}m {c['val_accuracy']:.3f}"
                                                    for c in runs[name]["checkpoints"])
                  + f"; final {runs[name]['final']['accuracy']:.4f}", file=sys.stderr, flush=True)
            result["tasks"][task] = {"runs": runs, **compare(runs)}
            if out:  # after every system: a kill later still leaves the figures so far
                Path(out).write_text(json.dumps(result, indent=2) + "\n")
        if out:
            plot(task, runs, Path(out).with_name(f"time_to_accuracy_{task}.png"))
    result["wall_seconds"], result["complete"] = round(time.time() - started), True
    text = json.dumps(result, indent=2)
    if out:
        Path(out).write_text(text + "\n")
    print(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=["sst2", "boolq", "banking77"], choices=sorted(TASKS))
    parser.add_argument("--minutes", nargs="+", type=float, default=[2, 5, 10, 20, 30],
                        help="training-clock checkpoints (minutes); training stops at the last")
    parser.add_argument("--systems", nargs="*", help="only these (ours, ours-paper, ours-reparam, peft, peft-lr=X)")
    parser.add_argument("--peft-lrs", nargs="*", type=float, default=[3e-3, 3e-2, 3e-1], help="PEFT's lr sweep")
    parser.add_argument("--val-n", type=int, default=200, help="validation examples carved from train")
    parser.add_argument("--final-limit", type=int, help="examples of the reported split (default: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="smoke run: seconds of training, no file written")
    parser.add_argument("--out", help="JSON path (default: benchmarks/results/time_to_accuracy.json)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--task", help=argparse.SUPPRESS)
    parser.add_argument("--side", choices=["ours", "peft"], help=argparse.SUPPRESS)
    parser.add_argument("--recipe", default="default", help=argparse.SUPPRESS)
    parser.add_argument("--reparam", default="none", help=argparse.SUPPRESS)
    parser.add_argument("--lr", type=float, default=PEFT_DOC["lr"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        torch.set_num_threads(THREADS)
        (worker_ours if args.side == "ours" else worker_peft)(args)
    else:
        parent(args)


if __name__ == "__main__":
    main()
