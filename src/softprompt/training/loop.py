"""The training loop, top to bottom: data -> loss at target positions -> step -> eval -> keep best -> resume.

Only the prompt [P, H] learns (fp32 master copy) while the frozen model runs in bf16; `--method
model-tuning` trains every weight instead, for the paper's comparison. Runs unchanged under
`accelerate launch` / torchrun: each rank takes its slice of every global batch and gradients are summed,
so N ranks give the same prompt as one process with the same global batch.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from softprompt.errors import SoftpromptError
from softprompt.files import atomic_write, publish_folder
from softprompt.model.attention import training_attention
from softprompt.model.frozen import FrozenModel
from softprompt.model.prompt import SoftPrompt
from softprompt.scoring.objectives import target_prefix
from softprompt.tasks.base import Example, Mode, Task
from softprompt.training.averaging import PromptAverage
from softprompt.training.batching import epoch_batches, split_micro
from softprompt.training.checkpoint import load_checkpoint, save_checkpoint
from softprompt.training.config import ConfigError, Loss, Method, Reparam, TrainConfig
from softprompt.training.curves import write_curve
from softprompt.training.init import make_prompt
from softprompt.training.optimizers import make_optimizer, set_lr
from softprompt.training.reparam import ResidualPromptMLP
from softprompt.training.report import TensorBoardReport, open_report
from softprompt.training.rows import Row, encode_rows, step_loss
from softprompt.training.rundir import RunDir
from softprompt.training.state import TrainState, check_resume_config

__all__ = ["Row", "TrainResult", "TrainState", "TrainingError", "encode_rows", "step_loss", "train"]


log = logging.getLogger("softprompt.training")


class TrainingError(SoftpromptError, RuntimeError):
    """The run cannot go on (diverged, no data); the message says what to change."""


@dataclass
class TrainResult:
    best_metric: float | None
    best_step: int | None
    steps_done: int
    wall_seconds: float
    prompt_path: Path | None
    out_dir: Path
    stopped_by: str | None = None
    """"steps", "max_minutes" or "patience": which limit ended the run."""


@dataclass
class _Run:
    """What every part of one run reads: its config, model, data, the tensors that learn, and where it writes."""

    cfg: TrainConfig
    fm: FrozenModel
    task: Task
    rows: list[Row]
    val_examples: list[Example]
    prompt: SoftPrompt | None
    named: dict[str, torch.Tensor]
    optimizer: torch.optim.Optimizer
    dir: RunDir
    rank: int
    world: int
    started: float
    autocast: bool
    report: TensorBoardReport | None = None  # rank 0, with --report-to tensorboard
    reparam: ResidualPromptMLP | None = None  # --reparam: what learns instead of the rows; `prompt` is its fold
    average: PromptAverage | None = None  # --average-decay: what is evaluated and saved instead of `prompt`

    def shown(self) -> SoftPrompt | None:
        """The prompt that is evaluated, saved and handed to on_step: the average where there is one."""
        return self.prompt if self.average is None or self.prompt is None else self.average.prompt(self.prompt)

    def saved(self) -> dict[str, torch.Tensor]:
        """The tensors a checkpoint holds besides the optimizer's: what learns, and the average."""
        return self.named if self.average is None else {**self.named, "average": self.average.rows}


def distributed() -> tuple[int, int]:
    """(rank, world size); joins the process group that `accelerate launch`/torchrun describe in env."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="gloo")  # CPU-friendly; NCCL needs GPUs
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def train(
    cfg: TrainConfig, *, fm: FrozenModel | None = None, resume: bool = False, progress: bool = True,
    task: Task | None = None, train_examples: list[Example] | None = None, eval_examples: list[Example] | None = None,
    on_step: Callable[[TrainState, SoftPrompt | None], None] | None = None,
) -> TrainResult:
    """Run one training job described by `cfg`; files go to `cfg.out` (see TrainConfig.out).

    `task`, `train_examples` and `eval_examples` replace what `cfg` names (tests train without benchmark
    files); `on_step(state, prompt)` is called after each finished step, once its log line and checkpoint are
    written, with the prompt as it is now (None for model tuning): benchmarks evaluate it at their own clock.
    The time `on_step` takes is not charged to `max_minutes` (nor to the time-bound linear schedule).
    """
    from softprompt.model.loading import load_model

    started = time.time()
    rank, world = _join(cfg)
    out = RunDir(cfg.out)
    if resume and not out.checkpoint.is_file():
        raise TrainingError(f"nothing to resume: {out.checkpoint} does not exist")
    # 0. Hold the folder for the whole run (rank 0 writes it; other ranks only read), so a second `train`
    # on the same --out is refused instead of interleaving logs; a resume must not turn into another run.
    with out.claim() if rank == 0 else nullcontext(out):
        if resume:
            check_resume_config(out.config, cfg)
        report = open_report(cfg.report_to, out.root) if rank == 0 else None  # before the slow part: fail fast

        # 1. Model, task, data. Model tuning needs fp32 master weights (bf16 would drop small updates).
        if fm is None:
            fm = load_model(cfg.model, dtype="fp32" if cfg.method is Method.MODEL_TUNING else None)
        task, train_examples, val_examples, rows = _data(cfg, fm, task, train_examples, eval_examples)

        # 2. What learns: the prompt (fp32), or every weight of the model.
        prompt, named, reparam = _learners(cfg, fm, task, train_examples)
        average = PromptAverage(prompt.embeddings, cfg.average_decay) if cfg.average_decay and prompt is not None else None
        run = _Run(cfg, fm, task, rows, val_examples, prompt, named, make_optimizer(list(named.values()), cfg),
                   out, rank, world, started, _autocast(cfg, fm), report, reparam, average)

        # 3. Fresh start or resume from the last checkpoint.
        state = _start(run, resume)

        # 4. The loop: one step, then evaluate / keep the best / checkpoint when due.
        _loop(run, state, progress, on_step)

        # 5. Summary.
        return _finish(run, state)


def _loop(
    run: _Run, state: TrainState, progress: bool, on_step: Callable[[TrainState, SoftPrompt | None], None] | None,
) -> None:
    """Steps until cfg.steps, patience or the time budget; each step logged, checkpoints when due."""
    cfg, rank = run.cfg, run.rank
    checkpoint_every = cfg.checkpoint_every or cfg.eval_every or cfg.steps
    bar = _progress(cfg.steps, state.step, enabled=progress and rank == 0)
    lengths = [r.length for r in run.rows]
    batches = epoch_batches(lengths, cfg.batch_size, cfg.seed, state.epoch)
    while state.step < cfg.steps:
        if state.batch >= len(batches):  # 4a. next epoch: a fresh order from (seed, epoch), so resume replays it
            state.epoch, state.batch = state.epoch + 1, 0
            batches = epoch_batches(lengths, cfg.batch_size, cfg.seed, state.epoch)
        record = _step(run, state, batches[state.batch])  # 4b. forward/backward, all-reduce, update
        out_of_time = cfg.max_minutes is not None and time.time() - run.started > cfg.max_minutes * 60
        if (cfg.eval_every and state.step % cfg.eval_every == 0) or state.step == cfg.steps or out_of_time:
            _evaluate_and_keep(run, state, record)  # 4c. evaluate, keep the best, count patience
        if rank == 0:  # 4d. log, and checkpoint when due (always before stopping)
            run.dir.append_metrics(record)
            if run.report is not None:
                run.report.log(record)
            if state.step % checkpoint_every == 0 or state.step == cfg.steps or state.stopped_early or out_of_time:
                state.seconds = round(time.time() - run.started, 3)
                save_checkpoint(run.dir.checkpoint, run.saved(), run.optimizer, state.to_counters())
                if run.prompt is not None:  # model tuning keeps its best weights only (they are the model's size)
                    _save_prompt(run.shown(), run.dir.last_prompt, {"step": state.step})
        bar.update(1)
        bar.set_postfix(loss=f"{record['loss']:.4f}", ex_s=f"{record['examples_per_s']:.1f}",
                        best=state.best if state.best is None else f"{state.best:.4f}", **_budget(run, state))
        if on_step is not None:  # the caller's time (e.g. its own evaluations) is not charged to --max-minutes
            called = time.time()
            on_step(state, run.shown())
            run.started += time.time() - called
        if state.stopped_early or out_of_time:  # 4e. patience or the time budget ran out
            state.stopped_by = "max_minutes" if out_of_time and not state.stopped_early else "patience"
            state.stopped_early = True
            break
    else:
        state.stopped_by = "steps"
    bar.close()


def _budget(run: _Run, state: TrainState) -> dict[str, str]:
    """With --max-minutes, the bar says which limit will stop the run and when: tqdm's own ETA counts steps
    only, so a time-capped run would show an end hours after the cap. {} without a time budget."""
    cfg = run.cfg
    if cfg.max_minutes is None:
        return {}
    spent = time.time() - run.started
    left_by_time = max(0.0, cfg.max_minutes * 60 - spent)
    per_step = spent / max(1, state.step)  # resumed runs: run.started includes the time before the checkpoint
    left_by_steps = per_step * (cfg.steps - state.step)
    limit, left = ("max-minutes", left_by_time) if left_by_time < left_by_steps else ("steps", left_by_steps)
    seconds = round(left)  # nearest second: a fresh bar reads 9:00, not 8:59
    return {"stops": f"{limit} in {seconds // 60}:{seconds % 60:02d}"}


def _join(cfg: TrainConfig) -> tuple[int, int]:
    """Join the ranks (if launched as several), check the batch splits over them, set threads and the seed."""
    from softprompt.model.loading import configure_threads, physical_cores

    rank, world = distributed()
    if cfg.batch_size % (world * cfg.grad_accum):
        raise ConfigError(f"batch_size {cfg.batch_size} must split evenly over {world} ranks × {cfg.grad_accum} micro-batches")
    # Ranks on one machine share its cores: give each its share, not all of them (oversubscription thrashes).
    local_ranks = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    configure_threads(cfg.threads or (max(1, physical_cores() // local_ranks) if local_ranks > 1 else None))
    torch.manual_seed(cfg.seed)
    return rank, world


def _target_eos(cfg: TrainConfig, task: Task) -> bool:
    """Whether this run's targets end with EOS: the rows, the prompt file and summary.json must agree."""
    return cfg.ends_targets_with_eos(task.default_mode is Mode.RANK)


def _data(
    cfg: TrainConfig, fm: FrozenModel, task: Task | None, train_examples: list[Example] | None,
    eval_examples: list[Example] | None,
) -> tuple[Task, list[Example], list[Example], list[Row]]:
    """The task, its training examples (subsampled to --train-limit), validation examples and encoded rows."""
    from softprompt.tasks import get_task, load_task_file

    if task is None:
        task = load_task_file(cfg.task_file) if cfg.task_file else get_task(cfg.task)
    if train_examples is None:
        train_examples = task.examples("train", cfg.data_dir)
    if cfg.train_limit:
        keep = torch.randperm(len(train_examples), generator=torch.Generator().manual_seed(cfg.seed))
        train_examples = [train_examples[i] for i in keep[: cfg.train_limit].tolist()]
    if len(train_examples) < cfg.batch_size:
        raise TrainingError(f"{len(train_examples)} training examples < batch size {cfg.batch_size}: lower --batch-size")
    if cfg.loss is Loss.RANK and not all(ex.choices for ex in train_examples):
        raise ConfigError(f"--loss rank needs choices for every example; {task.name} generates free text")
    if eval_examples is None:
        eval_examples = task.examples("validation", cfg.data_dir, limit=cfg.eval_limit)
    rows = encode_rows(fm, train_examples, cfg, eos=_target_eos(cfg, task))
    if cfg.min_input_tokens:
        rows = [r for r in rows if len(r.gold.input_ids) >= cfg.min_input_tokens]
        if len(rows) < cfg.batch_size:
            raise TrainingError(f"only {len(rows)} training examples have >= {cfg.min_input_tokens} input tokens "
                                f"(batch size {cfg.batch_size}): lower --min-input-tokens")
    return task, train_examples, eval_examples, rows


def _learners(
    cfg: TrainConfig, fm: FrozenModel, task: Task, train_examples: list[Example]
) -> tuple[SoftPrompt | None, dict[str, torch.Tensor], ResidualPromptMLP | None]:
    """(the prompt, or None for model tuning; name -> tensor of everything the optimizer updates; the
    reparameterization that computes the prompt's rows, or None when the rows learn themselves)."""
    if cfg.method is not Method.PROMPT_TUNING:
        for param in fm.model.parameters():
            param.requires_grad_(True)
        fm.model.train(False)  # dropout stays off: the paper's comparisons use the same deterministic forward
        return None, {name: p for name, p in fm.model.named_parameters()}, None
    init = cfg.init
    if init == "class-labels" and not task.label_words:
        init = "sampled-vocab"  # per-example choices (COPA, ReCoRD): no fixed label words to start from
    prompt = make_prompt(
        fm, cfg.prompt_length, init, labels=task.label_words, text=cfg.init_text, path=cfg.init_file,
        texts=[ex.input_text for ex in train_examples], seed=cfg.seed, task=task.name,
    )
    # Recorded so that generation can say why a classification prompt trained without EOS keeps talking.
    prompt.metadata.update(label_words=task.label_words, train_config=cfg.to_dict(),
                           targets_end_with_eos=_target_eos(cfg, task))
    if cfg.target_sentinel:  # evaluation scores and generates targets in the trained format
        prompt.metadata["target_prefix"] = target_prefix(fm)
    if cfg.reparam is Reparam.RESIDUAL_MLP:
        reparam = ResidualPromptMLP(prompt.embeddings, cfg.reparam_hidden, seed=cfg.seed)
        prompt.embeddings.requires_grad_(False)  # the fold: written after each update, never stepped itself
        return prompt, {f"reparam.{name}": p for name, p in reparam.named_parameters()}, reparam
    return prompt, {"prompt": prompt.embeddings}, None


def _autocast(cfg: TrainConfig, fm: FrozenModel) -> bool:
    """Model tuning keeps fp32 master weights but computes in bf16 where the CPU has it (speed)."""
    from softprompt.model.loading import cpu_supports_bf16

    return cfg.method is Method.MODEL_TUNING and fm.dtype == torch.float32 and cpu_supports_bf16()


def _start(run: _Run, resume: bool) -> TrainState:
    """A fresh state and a clean run folder, or the state, weights and optimizer of the last checkpoint."""
    state = TrainState()
    if resume:
        state = TrainState.from_counters(load_checkpoint(run.dir.checkpoint, run.saved(), run.optimizer))
        # --max-minutes is the run's budget, not each process's: the time up to the checkpoint stays spent.
        run.started -= state.seconds
        if run.reparam is not None and run.prompt is not None:
            run.reparam.fold_into(run.prompt)
        # A resumed run takes the lr of its config (it may lower it, e.g. after a divergence): set each step.
    if run.rank == 0:
        for path in run.dir.remove_stale_temps():  # a kill mid-write leaves them; nothing else writes here now
            log.info("removed %s, left by a killed writer", path)
        # A killed run may have logged steps after its last checkpoint: the resumed run redoes them. A fresh
        # start (step 0) in a used folder must not append to the old log.
        run.dir.restart_metrics(state.step)
        run.cfg.save(run.dir.config)
        if not resume and run.prompt is not None:
            run.prompt.save(run.dir.init_prompt)  # the untrained prompt: interpretability compares before/after
    return state


def _step(run: _Run, state: TrainState, batch: list[int]) -> dict[str, Any]:
    """One optimizer step on one global batch (this rank's slice, in micro-batches); returns its log record."""
    cfg, tick = run.cfg, time.time()
    # Normalise by the whole step (tokens for ce, examples for rank) so pieces sum to the full loss.
    norm = float(sum(len(run.rows[i].gold.target_ids) for i in batch)) if cfg.loss is Loss.CE else float(len(batch))
    run.optimizer.zero_grad(set_to_none=True)
    loss_value = 0.0
    for micro in split_micro(split_micro(batch, run.world)[run.rank], cfg.grad_accum):
        # With --reparam the loss sees the rows as computed (gradient reaches the MLP), not their folded copy.
        prompt = run.prompt if run.reparam is None else run.reparam.training_prompt(run.prompt)
        with training_attention(run.fm, cfg.attention), torch.autocast("cpu", dtype=torch.bfloat16, enabled=run.autocast):
            loss = step_loss(run.fm, [run.rows[i] for i in micro], prompt, cfg, norm)
        loss.backward()
        loss_value += float(loss.detach())
    seconds = tick - run.started  # the time-bound linear schedule's clock (TrainConfig.lr_at)
    if run.world > 1:
        for param in run.named.values():
            dist.all_reduce(param.grad, op=dist.ReduceOp.SUM)
        # Ranks add their losses; they take the mean of their clocks, so all of them step with one lr.
        total = torch.tensor([loss_value, seconds], dtype=torch.float64)
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        loss_value, seconds = float(total[0]), float(total[1]) / run.world
    # A NaN/inf loss stops the run before it can poison the prompt; the last checkpoint stays.
    if not math.isfinite(loss_value):
        raise TrainingError(
            f"loss became {loss_value} at step {state.step + 1}; the last good checkpoint is {run.dir.checkpoint}. "
            "Lower --lr or use --optimizer adamw, then --resume or start again."
        )
    lr = cfg.lr_at(state.step, seconds)
    set_lr(run.optimizer, lr)
    run.optimizer.step()
    if run.reparam is not None and run.prompt is not None:
        run.reparam.fold_into(run.prompt)  # evaluation, files and on_step read the plain prompt
    if run.average is not None and run.prompt is not None:
        run.average.update(run.prompt.embeddings, state.step + 1)
    if not all(torch.isfinite(p).all() for p in run.named.values()):
        raise TrainingError(
            f"the update at step {state.step + 1} produced NaN/inf weights (lr {cfg.learning_rate} is too "
            f"high?); the last good checkpoint is {run.dir.checkpoint}. Lower --lr, then --resume or start again."
        )
    state.step += 1
    state.batch += 1
    return {"step": state.step, "loss": loss_value, "lr": lr, "examples_per_s": len(batch) / max(time.time() - tick, 1e-9),
            "seconds": round(time.time() - run.started, 2)}  # run time so far (resumed: with the time before)


def _evaluate_and_keep(run: _Run, state: TrainState, record: dict[str, Any]) -> None:
    """Evaluate on validation, save the prompt if it is the best so far, and count evals without a new best."""
    from softprompt.evaluation.evaluate import evaluate

    result = evaluate(run.fm, run.task, run.val_examples, prompt=run.shown(), batch_size=run.cfg.eval_batch_size,
                      progress=False, target_prefix=target_prefix(run.fm, run.cfg.target_sentinel))
    metric = float(result.metrics[run.task.main_metric])
    record["eval"] = result.metrics
    if result.answers is not None:
        record["answers"] = result.answers  # one answer for every example = a collapsed prompt
    if state.best is None or metric > state.best:
        state.best, state.best_step, state.bad_evals = metric, state.step, 0
        if run.rank == 0:
            _save_best(run, {"metrics": result.metrics, "step": state.step})
    else:
        state.bad_evals += 1
    state.stopped_early = run.cfg.patience is not None and state.bad_evals >= run.cfg.patience


def _finish(run: _Run, state: TrainState) -> TrainResult:
    """Write summary.json (rank 0), leave the process group, and say where the best weights are."""
    best_path = run.dir.best_weights(prompt_tuning=run.prompt is not None)
    summary = {
        "task": run.task.name, "method": run.cfg.method.value, "main_metric": run.task.main_metric,
        "best_metric": state.best, "best_step": state.best_step, "steps_done": state.step,
        "stopped_early": state.stopped_early, "stopped_by": state.stopped_by,
        "wall_seconds": round(time.time() - run.started, 1),
        "recipe": {"recipe": run.cfg.recipe.value, "optimizer": run.cfg.optimizer.value,
                   "lr": run.cfg.learning_rate, "lr_schedule": run.cfg.lr_schedule.value,
                   "batch_size": run.cfg.batch_size, "prompt_length": run.cfg.prompt_length,
                   "average_decay": run.cfg.average_decay,
                   "target_eos": _target_eos(run.cfg, run.task)},
        "prompt_path": str(best_path), "trainable_parameters": sum(p.numel() for p in run.named.values()),
        "train_examples": len(run.rows),
    }
    if run.rank == 0:
        atomic_write(run.dir.summary, lambda tmp: Path(tmp).write_text(json.dumps(summary, indent=2)))
        write_curve(run.dir.root)  # curve.png: loss and the eval metric vs step and vs minutes
        if run.report is not None:
            run.report.close()
    if run.world > 1:
        dist.destroy_process_group()
    return TrainResult(state.best, state.best_step, state.step, summary["wall_seconds"], best_path, run.dir.root,
                       state.stopped_by)


def _save_best(run: _Run, meta: dict[str, Any]) -> None:
    """The new best: the prompt file, or for model tuning a save_pretrained folder published whole."""
    if run.prompt is not None:
        _save_prompt(run.shown(), run.dir.best_prompt, meta)
        return
    fm = run.fm

    def build(tmp: Path) -> None:
        fm.model.save_pretrained(tmp)
        fm.tokenizer.save_pretrained(tmp)

    publish_folder(build, run.dir.model)


def _save_prompt(prompt: SoftPrompt, path: Path, meta: dict[str, Any]) -> None:
    prompt.metadata.update(meta)  # what it was saved for: step, and the metrics of a best prompt
    prompt.save(path)


def _progress(total: int, initial: int, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, disable=not enabled, desc="train", unit="step", dynamic_ncols=True)
