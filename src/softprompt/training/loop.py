"""The training loop, top to bottom: data -> loss at target positions -> step -> eval -> keep best -> resume.

Only the prompt [P, H] learns (fp32 master copy) while the frozen model runs in bf16; `--method
model-tuning` trains every weight instead, for the paper's comparison. Runs unchanged under
`accelerate launch` / torchrun: each rank takes its slice of every global batch and gradients are summed,
so N ranks give the same prompt as one process with the same global batch.
"""

from __future__ import annotations

import json
import math
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from softprompt.files import atomic_write
from softprompt.model.attention import training_attention
from softprompt.model.frozen import FrozenModel
from softprompt.model.prompt import SoftPrompt
from softprompt.scoring import Encoded, cut_input, encode_pair, one_token_choices_row, target_logprobs
from softprompt.scoring.objectives import target_prefix
from softprompt.training.batching import epoch_batches, split_micro
from softprompt.training.checkpoint import CHECKPOINT_NAME, load_checkpoint, save_checkpoint
from softprompt.training.config import ConfigError, Loss, Method, TrainConfig
from softprompt.training.init import make_prompt
from softprompt.training.optimizers import make_optimizer, set_lr


class TrainingError(__import__("softprompt.errors").errors.SoftpromptError, RuntimeError):
    """The run cannot go on (diverged, no data); the message says what to change."""


@dataclass
class TrainResult:
    best_metric: float | None
    best_step: int | None
    steps_done: int
    wall_seconds: float
    prompt_path: Path | None
    out_dir: Path


@dataclass
class Row:
    """One training example, tokenized once: the gold pair, and every choice for the rank loss (one row
    with `read_ids` when every choice is one token)."""

    gold: Encoded
    choices: list[Encoded]
    label: int | None

    @property
    def length(self) -> int:
        return len(self.gold.input_ids) + len(self.gold.target_ids)


def encode_rows(fm: FrozenModel, examples: list[Any], cfg: TrainConfig) -> list[Row]:
    """Tokenize every training example once (targets end in EOS so generation learns to stop; with
    `target_sentinel` they start with "<extra_id_0> ", see objectives.py)."""
    prefix = target_prefix(fm, cfg.target_sentinel)
    rows = []
    for ex in examples:
        gold = encode_pair(fm, ex.input_text, prefix + ex.target_text, append_eos=True)
        gold.input_ids = cut_input(gold.input_ids, cfg.max_input_tokens)
        choices = []
        if cfg.loss is Loss.RANK:
            for choice in ex.choices or []:
                enc = encode_pair(fm, ex.input_text, prefix + choice)
                enc.input_ids = gold.input_ids
                choices.append(enc)
            # One-token choices share one row: the rank loss then costs what cross-entropy costs, not C times it.
            merged = one_token_choices_row(fm, choices)
            choices = [merged] if merged is not None else choices
        rows.append(Row(gold, choices, ex.label))
    return rows


def distributed() -> tuple[int, int]:
    """(rank, world size); joins the process group that `accelerate launch`/torchrun describe in env."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="gloo")  # CPU-friendly; NCCL needs GPUs
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def step_loss(fm: FrozenModel, rows: list[Row], prompt: SoftPrompt | None, cfg: TrainConfig, norm: float) -> torch.Tensor:
    """Loss of one micro-batch, divided by `norm` (the whole global step's token or example count) so that
    micro-batches and ranks add up to exactly the loss of the full batch."""
    if cfg.loss is Loss.CE:
        logprobs = target_logprobs(fm, [r.gold for r in rows], prompt)
        return -torch.cat(logprobs).sum() / norm
    logprobs = iter(target_logprobs(fm, [c for r in rows for c in r.choices], prompt))
    total = torch.zeros((), device=fm.device)
    for r in rows:
        if r.choices[0].read_ids is not None:  # one row: [C] log-probabilities, one per one-token choice
            scores = next(logprobs)
        else:  # one row per choice: its tokens' log-probabilities sum to the choice's
            scores = torch.stack([next(logprobs).sum() for _ in r.choices])
        total = total - torch.log_softmax(scores, dim=0)[r.label]
    return total / norm


def train(
    cfg: TrainConfig, *, fm: FrozenModel | None = None, resume: bool = False, progress: bool = True
) -> TrainResult:
    """Run one training job described by `cfg`; files go to `cfg.out` (see TrainConfig.out)."""
    from softprompt.evaluation.evaluate import evaluate
    from softprompt.model.loading import configure_threads, cpu_supports_bf16, load_model, physical_cores
    from softprompt.tasks import get_task, load_task_file

    started = time.time()
    rank, world = distributed()
    out = Path(cfg.out)
    if cfg.batch_size % (world * cfg.grad_accum):
        raise ConfigError(f"batch_size {cfg.batch_size} must split evenly over {world} ranks × {cfg.grad_accum} micro-batches")
    # Ranks on one machine share its cores: give each its share, not all of them (oversubscription thrashes).
    local_ranks = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    configure_threads(cfg.threads or (max(1, physical_cores() // local_ranks) if local_ranks > 1 else None))
    torch.manual_seed(cfg.seed)

    # 1. Model, task, data. Model tuning needs fp32 master weights (bf16 would drop small updates).
    if fm is None:
        fm = load_model(cfg.model, dtype="fp32" if cfg.method is Method.MODEL_TUNING else None)
    task = load_task_file(cfg.task_file) if cfg.task_file else get_task(cfg.task)
    train_examples = task.examples("train", cfg.data_dir)
    if cfg.train_limit:
        keep = torch.randperm(len(train_examples), generator=torch.Generator().manual_seed(cfg.seed))
        train_examples = [train_examples[i] for i in keep[: cfg.train_limit].tolist()]
    if len(train_examples) < cfg.batch_size:
        raise TrainingError(f"{len(train_examples)} training examples < batch size {cfg.batch_size}: lower --batch-size")
    if cfg.loss is Loss.RANK and not all(ex.choices for ex in train_examples):
        raise ConfigError(f"--loss rank needs choices for every example; {task.name} generates free text")
    val_examples = task.examples("validation", cfg.data_dir, limit=cfg.eval_limit)
    rows = encode_rows(fm, train_examples, cfg)
    if cfg.min_input_tokens:
        rows = [r for r in rows if len(r.gold.input_ids) >= cfg.min_input_tokens]
        if len(rows) < cfg.batch_size:
            raise TrainingError(f"only {len(rows)} training examples have >= {cfg.min_input_tokens} input tokens "
                                f"(batch size {cfg.batch_size}): lower --min-input-tokens")
    lengths = [r.length for r in rows]

    # 2. What learns: the prompt (fp32), or every weight of the model.
    prompt: SoftPrompt | None = None
    if cfg.method is Method.PROMPT_TUNING:
        init = cfg.init
        if init == "class-labels" and not task.label_words:
            init = "sampled-vocab"  # per-example choices (COPA, ReCoRD): no fixed label words to start from
        prompt = make_prompt(
            fm, cfg.prompt_length, init, labels=task.label_words, text=cfg.init_text, path=cfg.init_file,
            texts=[ex.input_text for ex in train_examples], seed=cfg.seed, task=task.name,
        )
        prompt.metadata.update(label_words=task.label_words, train_config=cfg.to_dict())
        if cfg.target_sentinel:  # evaluation scores and generates targets in the trained format
            prompt.metadata["target_prefix"] = target_prefix(fm)
        named = {"prompt": prompt.embeddings}
    else:
        for param in fm.model.parameters():
            param.requires_grad_(True)
        fm.model.train(False)  # dropout stays off: the paper's comparisons use the same deterministic forward
        named = {name: p for name, p in fm.model.named_parameters()}
    optimizer = make_optimizer(list(named.values()), cfg)
    autocast = cfg.method is Method.MODEL_TUNING and fm.dtype == torch.float32 and cpu_supports_bf16()

    # 3. Fresh start or resume from the last checkpoint.
    counters: dict[str, Any] = {"step": 0, "epoch": 0, "batch": 0, "best": None, "best_step": None, "bad_evals": 0}
    checkpoint = out / CHECKPOINT_NAME
    if resume:
        if not checkpoint.is_file():
            raise TrainingError(f"nothing to resume: {checkpoint} does not exist")
        counters = load_checkpoint(checkpoint, named, optimizer)
        # --max-minutes is the run's budget, not each process's: the time up to the checkpoint stays spent.
        started -= counters.get("seconds", 0.0)
        # A resumed run takes the lr of its config (it may lower it, e.g. after a divergence): set each step.
        _truncate_log(out / "metrics.jsonl", counters["step"])
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        cfg.save(out / "config.yaml")
        if not resume:
            _truncate_log(out / "metrics.jsonl", 0)  # a fresh start in a used folder must not append to its log
            if prompt is not None:
                prompt.save(out / "init.safetensors")  # the untrained prompt: interpretability compares before/after
    checkpoint_every = cfg.checkpoint_every or cfg.eval_every or cfg.steps

    # 4. The loop.
    bar = _progress(cfg.steps, counters["step"], enabled=progress and rank == 0)
    batches = epoch_batches(lengths, cfg.batch_size, cfg.seed, counters["epoch"])
    kill_at = int(os.environ.get("SOFTPROMPT_KILL_AT_STEP", "0"))  # tests: SIGKILL ourselves mid-run
    stopped_early = False
    while counters["step"] < cfg.steps:
        if counters["batch"] >= len(batches):
            counters["epoch"] += 1
            counters["batch"] = 0
            batches = epoch_batches(lengths, cfg.batch_size, cfg.seed, counters["epoch"])
        batch = batches[counters["batch"]]
        tick = time.time()
        # 4a. Normalise by the whole step (tokens for ce, examples for rank) so pieces sum to the full loss.
        norm = float(sum(len(rows[i].gold.target_ids) for i in batch)) if cfg.loss is Loss.CE else float(len(batch))
        optimizer.zero_grad(set_to_none=True)
        loss_value = 0.0
        for micro in split_micro(split_micro(batch, world)[rank], cfg.grad_accum):
            with training_attention(fm, cfg.attention), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                loss = step_loss(fm, [rows[i] for i in micro], prompt, cfg, norm)
            loss.backward()
            loss_value += float(loss.detach())
        if world > 1:
            for param in named.values():
                dist.all_reduce(param.grad, op=dist.ReduceOp.SUM)
            total = torch.tensor([loss_value])
            dist.all_reduce(total, op=dist.ReduceOp.SUM)
            loss_value = float(total)
        # 4b. A NaN/inf loss stops the run before it can poison the prompt; the last checkpoint stays.
        if not math.isfinite(loss_value):
            raise TrainingError(
                f"loss became {loss_value} at step {counters['step'] + 1}; the last good checkpoint is {checkpoint}. "
                "Lower --lr or use --optimizer adamw, then --resume or start again."
            )
        lr = cfg.lr_at(counters["step"])
        set_lr(optimizer, lr)
        optimizer.step()
        if not all(torch.isfinite(p).all() for p in named.values()):
            raise TrainingError(
                f"the update at step {counters['step'] + 1} produced NaN/inf weights (lr {cfg.learning_rate} is too "
                f"high?); the last good checkpoint is {checkpoint}. Lower --lr, then --resume or start again."
            )
        counters["step"] += 1
        counters["batch"] += 1
        step = counters["step"]
        record: dict[str, Any] = {"step": step, "loss": loss_value, "lr": lr,
                                  "examples_per_s": len(batch) / max(time.time() - tick, 1e-9)}

        # 4c. Evaluate, keep the best, stop early when patience or the time budget runs out.
        out_of_time = cfg.max_minutes is not None and time.time() - started > cfg.max_minutes * 60
        if (cfg.eval_every and step % cfg.eval_every == 0) or step == cfg.steps or out_of_time:
            result = evaluate(fm, task, val_examples, prompt=prompt, batch_size=cfg.eval_batch_size, progress=False,
                              target_prefix=target_prefix(fm, cfg.target_sentinel))
            metric = float(result.metrics[task.main_metric])
            record["eval"] = result.metrics
            if result.answers is not None:
                record["answers"] = result.answers  # one answer for every example = a collapsed prompt
            if counters["best"] is None or metric > counters["best"]:
                counters.update(best=metric, best_step=step, bad_evals=0)
                if rank == 0:
                    _save_trained(fm, prompt, out, "prompt", {"metrics": result.metrics, "step": step})
            else:
                counters["bad_evals"] += 1
            stopped_early = cfg.patience is not None and counters["bad_evals"] >= cfg.patience
        if rank == 0:
            _append_log(out / "metrics.jsonl", record)
            if step % checkpoint_every == 0 or step == cfg.steps or stopped_early or out_of_time:
                counters["seconds"] = round(time.time() - started, 3)
                save_checkpoint(checkpoint, named, optimizer, counters)
                _save_trained(fm, prompt, out, "last", {"step": step})
        bar.update(1)
        bar.set_postfix(loss=f"{loss_value:.4f}", ex_s=f"{record['examples_per_s']:.1f}",
                        best=counters["best"] if counters["best"] is None else f"{counters['best']:.4f}")
        if kill_at and step == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        if stopped_early or out_of_time:
            stopped_early = True
            break
    bar.close()

    # 5. Summary.
    best_path = out / ("prompt.safetensors" if prompt is not None else "model")
    summary = {
        "task": task.name, "method": cfg.method.value, "main_metric": task.main_metric,
        "best_metric": counters["best"], "best_step": counters["best_step"], "steps_done": counters["step"],
        "stopped_early": stopped_early, "wall_seconds": round(time.time() - started, 1),
        "prompt_path": str(best_path), "trainable_parameters": sum(p.numel() for p in named.values()),
        "train_examples": len(rows),
    }
    if rank == 0:
        atomic_write(out / "summary.json", lambda tmp: Path(tmp).write_text(json.dumps(summary, indent=2)))
    if world > 1:
        dist.destroy_process_group()
    return TrainResult(counters["best"], counters["best_step"], counters["step"], summary["wall_seconds"],
                       best_path, out)


def _save_trained(fm: FrozenModel, prompt: SoftPrompt | None, out: Path, which: str, meta: dict[str, Any]) -> None:
    """Prompt tuning: `{which}.safetensors`. Model tuning: a save_pretrained dir `model/` (best only)."""
    if prompt is not None:
        prompt.metadata.update(meta)
        prompt.save(out / f"{which}.safetensors")
    elif which == "prompt":
        tmp = out / "model.tmp"
        fm.model.save_pretrained(tmp)
        fm.tokenizer.save_pretrained(tmp)
        final = out / "model"
        if final.exists():
            import shutil

            shutil.rmtree(final)
        tmp.rename(final)


def _append_log(path: Path, record: dict[str, Any]) -> None:
    with path.open("a") as handle:
        handle.write(json.dumps(record) + "\n")


def _truncate_log(path: Path, step: int) -> None:
    """A killed run may have logged steps after its last checkpoint; the resumed run redoes them."""
    if path.is_file():
        kept = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= step]
        atomic_write(path, lambda tmp: Path(tmp).write_text("".join(line + "\n" for line in kept)))


def _progress(total: int, initial: int, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, disable=not enabled, desc="train", unit="step", dynamic_ncols=True)
