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

The clock starts when training is asked for, with the model already loaded: preparing the data (tokenizing the
training set) counts, evaluations do not. Both linear schedules decay to 0 at the last checkpoint by that clock:
ours because `max_minutes` makes softprompt's linear schedule end at the time budget (TrainConfig.lr_at), PEFT's
because the benchmark sets its lr from the same clock each step, the schedule its guide's
`get_linear_schedule_with_warmup` would give with the step count that fits. (Step counts guessed from probe steps
ended ours' decay at 68-91% of the budget and left PEFT's at 30% of its lr: SST-2 step times vary 2-12 s with the
length bucket.) JSON -> benchmarks/results/time_to_accuracy.json, a PNG per task.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_vs_peft import guide_batch, machine_and_peaks  # noqa: E402  (a sibling benchmark's)

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
    stable across runs and processes, disjoint from what trains (`softprompt.tasks.splits.hold_out`)."""
    from softprompt.tasks.splits import hold_out

    return hold_out(examples, val_n)


def task_data(args: argparse.Namespace) -> tuple[Any, list[Any], list[Any], list[Any]]:
    task = load_task(args.task)
    train, val = carve(task.examples("train", data_dir()), args.val_n)
    final = task.examples(TASKS[args.task][1], data_dir())
    if args.final_limit and args.final_limit < len(final):
        # A hash-drawn subset, not the first rows: BANKING77's test.csv is sorted by intent (its first 400
        # rows hold 10 of the 77 intents; runs before this change reported on those).
        final = carve(final, args.final_limit)[1]
    return task, train, val, final


def data_dir() -> str:
    return os.environ.get("SOFTPROMPT_DATA") or str(ROOT.parent / "shared" / "data")


# ------------------------------------------------------------------------------------------------- the clock

class Clock:
    """The training clock: wall time minus evaluations, from its creation (just before training is asked for,
    with the model loaded: data preparation counts on both sides)."""

    def __init__(self, minutes: list[float]) -> None:
        self.checkpoints, self.start, self.paused = sorted(minutes), time.perf_counter(), 0.0
        self.budget = 60.0 * self.checkpoints[-1]

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.start - self.paused

    def fraction(self) -> float:
        """How much of the budget (the last checkpoint) is spent: a linear schedule's lr is lr0 * (1 - this)."""
        return min(1.0, self.seconds / self.budget)

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


def plot_path(out: str, task: str) -> Path:
    """The PNG beside the JSON, named after it (time_to_accuracy.json -> time_to_accuracy_sst2.png), so runs
    written to different --out files do not overwrite each other's figure."""
    return Path(out).with_name(f"{Path(out).stem}_{task}.png")


def emit(record: dict[str, Any]) -> None:
    print(TAG + json.dumps(record), flush=True)


class Done(Exception):
    """Raised by the step callback after the last checkpoint: training stops there."""


# ------------------------------------------------------------------------------------------------- ours

def ours_config(args: argparse.Namespace, out: str) -> Any:
    """The recipe's config with the time budget as its only limit (steps: more than can run)."""
    from softprompt.training.config import TrainConfig

    spec = TASKS[args.task][0]
    where = {"task_file": spec} if spec.endswith(".yaml") else {"task": spec}
    return TrainConfig(**where, recipe=args.recipe, reparam=args.reparam, steps=10**6, max_minutes=max(args.minutes),
                       eval_every=0, out=out, threads=THREADS, seed=args.seed, data_dir=data_dir(), **args.ours_set)


def worker_ours(args: argparse.Namespace) -> None:
    """softprompt.train with a recipe; the step callback evaluates at each checkpoint and stops after the last."""
    from softprompt.model.loading import load_model
    from softprompt.training.averaging import PromptAverage
    from softprompt.training.loop import train

    fm = load_model("default")
    task, train_ex, val, final = task_data(args)
    # train() evaluates its own validation set at its last step, inside that step's time and so on the clock
    # (BANKING77's 200 x 77 label words take seconds): it gets one example; the
    # checkpoints evaluate `val` off the clock.
    mute = val[:1]
    with tempfile.TemporaryDirectory() as scratch:
        cfg = ours_config(args, f"{scratch}/run")
        clock, last = Clock(args.minutes), {}

        averages: list[Any] = []  # --average: the library's EMA, over the rows from step 1 on (training/averaging.py)

        def on_val(prompt: Any) -> tuple[Any, Any]:
            """(evaluate the prompt, evaluate its average or None) on the validation examples."""
            return (lambda: accuracy(fm, task, val, prompt),
                    (lambda: accuracy(fm, task, val, averages[0].prompt(prompt))) if averages else None)

        def on_step(state: Any, prompt: Any) -> None:  # train() does not charge this callback's time to its budget
            if args.average and not averages:
                averages.append(PromptAverage(prompt.embeddings, args.average))
            elif averages:
                averages[0].update(prompt.embeddings, state.step)
            last.update(prompt=prompt, steps=state.step)
            if clock.due():
                checkpoint(clock, *on_val(prompt), state.step, cfg.batch_size)
                if not clock.checkpoints:
                    raise Done
        try:
            train(cfg, fm=fm, task=task, train_examples=train_ex, eval_examples=mute, progress=False, on_step=on_step)
        except Done:
            pass
        while clock.checkpoints:  # train's own clock reached max_minutes a moment before this one did
            checkpoint(clock, *on_val(last["prompt"]), last["steps"], cfg.batch_size)
        if averages:  # both finals: which one to report is chosen on the last checkpoint's validation
            emit({"kind": "final_averaged", "split": TASKS[args.task][1], "examples": len(final), "decay": args.average,
                  "accuracy": accuracy(fm, task, final, averages[0].prompt(last["prompt"]))})
        emit({"kind": "final", "split": TASKS[args.task][1], "examples": len(final),
              "accuracy": accuracy(fm, task, final, last["prompt"]),
              "recipe": {k: cfg.to_dict()[k] for k in ("recipe", "optimizer", "lr_schedule", "batch_size",
                                                       "prompt_length", "init", "weight_decay", "reparam")}
              | {"lr": cfg.learning_rate, "schedule_ends": "at the last checkpoint (train's max_minutes)",
                 "target_eos": last["prompt"].metadata["targets_end_with_eos"]}  # what the run trained with
              | ({"task_file": TASKS[args.task][0]} if TASKS[args.task][0].endswith(".yaml") else {})
              | {k: cfg.to_dict()[k] for k in args.ours_set}})


def checkpoint(clock: Clock, evaluate: Any, evaluate_average: Any, steps: int, batch: int) -> None:
    """Evaluate off the clock and emit one record per checkpoint passed (with --average, the averaged prompt's
    accuracy too: the same run's trajectory, so a peer measured in the same run)."""
    passed, (acc, acc_avg) = clock.evaluate(lambda: (evaluate(), evaluate_average and evaluate_average()))
    for minutes in passed:
        emit({"kind": "checkpoint", "minutes": minutes, "train_seconds": round(clock.seconds, 1), "steps": steps,
              "examples_seen": steps * batch, "val_accuracy": acc}
             | ({} if acc_avg is None else {"val_accuracy_averaged": acc_avg}))


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
        self.lr = lr

        self.optimizer = torch.optim.AdamW([p for p in self.model.parameters() if p.requires_grad], lr=lr)

    @property
    def embedding(self) -> torch.Tensor:
        """PEFT's prompt [P, H]."""
        return self.model.prompt_encoder["default"].embedding.weight

    def step(self, rows: list[tuple[list[int], list[int]]], spent: float) -> float:
        """One AdamW step at lr0 * (1 - spent): `spent` is the budget's fraction used (linear decay, no warm-up)."""
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr * (1.0 - spent)
        out = self.model(**guide_batch(rows, self.pad, PEFT_DOC["max_length"]))
        out.loss.backward()
        self.optimizer.step()
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
    clock = Clock(args.minutes)  # from here, as ours: tokenizing the training set counts
    rows, batch = peft_rows(fm, train_ex, args.seed), PEFT_DOC["batch_size"]
    torch.set_num_threads(THREADS)

    def batches():
        while True:
            for start in range(0, len(rows) - batch + 1, batch):
                yield rows[start:start + batch]

    run, data, done = PeftRun(fm, task, args.lr, args.seed), batches(), 0
    while clock.checkpoints:
        run.step(next(data), clock.fraction())
        done += 1
        if clock.due():
            checkpoint(clock, lambda: accuracy(fm, task, val, run.prompt()), None, done, batch)
    emit({"kind": "final", "split": TASKS[args.task][1], "examples": len(final),
          "accuracy": accuracy(fm, task, final, run.prompt()),
          "recipe": {"optimizer": "adamw", "lr_schedule": "linear", **PEFT_DOC, "lr": args.lr, "init": "TEXT",
                     "schedule_ends": "at the last checkpoint (the benchmark's clock)"}})


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
    if args.average:  # only the ours worker reads it
        cmd += ["--average", str(args.average)]
    cmd += [f for pair in args.task_file for f in ("--task-file", pair)]
    cmd += [f for key, value in args.ours_set.items() for f in ("--ours-set", f"{key}={json.dumps(value)}")]
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
            averaged = [r for r in records if r["kind"] == "final_averaged"]
            if averaged:
                runs[name]["final_averaged"] = averaged[0]
            print(f"[{task}] {name}: " + ", ".join(f"{c['minutes']}m {c['val_accuracy']:.3f}"
                                                    for c in runs[name]["checkpoints"])
                  + f"; final {runs[name]['final']['accuracy']:.4f}", file=sys.stderr, flush=True)
            result["tasks"][task] = {"runs": runs, **compare(runs)}
            if out:  # after every system: a kill later still leaves the figures so far
                Path(out).write_text(json.dumps(result, indent=2) + "\n")
        if out:
            plot(task, runs, plot_path(out, task))
    result["wall_seconds"], result["complete"] = round(time.time() - started), True
    text = json.dumps(result, indent=2)
    if out:
        Path(out).write_text(text + "\n")
    print(text)


def _field(parser: argparse.ArgumentParser, pair: str) -> tuple[str, Any]:
    """FIELD=VALUE of --ours-set, VALUE read as YAML (16 -> int, 0.1 -> float, true -> bool)."""
    import yaml

    from softprompt.training.config import TrainConfig

    key, sep, value = pair.partition("=")
    if not sep or key not in TrainConfig.__dataclass_fields__:
        parser.error(f"--ours-set takes FIELD=VALUE with FIELD a TrainConfig field, got {pair!r}")
    return key, yaml.safe_load(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=["sst2", "boolq", "banking77"], choices=sorted(TASKS))
    parser.add_argument("--minutes", nargs="+", type=float, default=[2, 5, 10, 20, 30],
                        help="training-clock checkpoints (minutes); training stops at the last")
    parser.add_argument("--systems", nargs="*", help="only these (ours, ours-paper, ours-reparam, peft, peft-lr=X)")
    parser.add_argument("--peft-lrs", nargs="*", type=float, default=[3e-3, 3e-2, 3e-1], help="PEFT's lr sweep")
    parser.add_argument("--val-n", type=int, default=200, help="validation examples carved from train")
    parser.add_argument("--final-limit", type=int, help="examples of the reported split, drawn by hash (default: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="smoke run: seconds of training, no file written")
    parser.add_argument("--out", help="JSON path (default: benchmarks/results/time_to_accuracy.json)")
    parser.add_argument("--task-file", action="append", default=[], metavar="TASK=PATH",
                        help="train and evaluate TASK from this task file instead (recipe pilots: another template)")
    parser.add_argument("--ours-set", action="append", default=[], metavar="FIELD=VALUE",
                        help="a TrainConfig field for the ours systems (e.g. batch_size=16, lr=0.1); recorded")
    parser.add_argument("--average", type=float, metavar="DECAY",
                        help="ours: also evaluate an EMA of the prompt (e.g. 0.99) at every checkpoint")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--task", help=argparse.SUPPRESS)
    parser.add_argument("--side", choices=["ours", "peft"], help=argparse.SUPPRESS)
    parser.add_argument("--recipe", default="default", help=argparse.SUPPRESS)
    parser.add_argument("--reparam", default="none", help=argparse.SUPPRESS)
    parser.add_argument("--lr", type=float, default=PEFT_DOC["lr"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    for pair in args.task_file:
        name, _, path = pair.partition("=")
        if name not in TASKS or not Path(path).is_file():
            parser.error(f"--task-file takes TASK=PATH with TASK one of {sorted(TASKS)} and an existing file: {pair!r}")
        TASKS[name] = (str(Path(path).resolve()), TASKS[name][1])
    args.ours_set = dict(_field(parser, pair) for pair in args.ours_set)
    if args.worker:
        torch.set_num_threads(THREADS)
        (worker_ours if args.side == "ours" else worker_peft)(args)
    else:
        parent(args)


if __name__ == "__main__":
    main()
