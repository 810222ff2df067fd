"""Run study variants and write one result JSON per variant; finished variants are skipped.

The suite is meant to be resumed across sessions on a slow machine, so every unit of work is restartable:
- a variant whose result file exists with the same fingerprint is skipped;
- a variant finished by another study (same id, budget and instruction) is copied, not rerun;
- a training run killed half-way continues from its last checkpoint (runs/<variant>/checkpoint.safetensors);
- a finished training run whose result was never written is evaluated, not retrained.
Results are written atomically: a killed run never leaves a half-written result that would be skipped.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from softprompt import __version__
from softprompt.experiments import protocol
from softprompt.experiments.studies import Kind, Study, Variant
from softprompt.files import atomic_write
from softprompt.model.frozen import FrozenModel
from softprompt.training.rundir import RunDir

Loader = Callable[..., FrozenModel]
"""`loader(name, dtype=None)`: `models.load_model` by default; tests pass tiny models."""


@dataclass
class ResultPaths:
    """Where a suite's result files and run folders live. Quick (smoke-test) output never mixes with reported
    results."""

    root: Path
    quick: bool = False

    @property
    def results(self) -> Path:
        return self.root / ("results-quick" if self.quick else "results")

    @property
    def runs(self) -> Path:
        return self.root / ("runs-quick" if self.quick else "runs")

    def result_path(self, variant: Variant) -> Path:
        return self.results / variant.study / f"{variant.id}.json"


@dataclass
class RunSummary:
    """What one `run_variants` call did, by variant id."""

    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


def status(paths: ResultPaths, variant: Variant) -> str:
    """`done`, `reusable` (another study has it) or `todo`."""
    if _matching(paths.result_path(variant), variant):
        return "done"
    return "reusable" if _donor(paths, variant) else "todo"


def _matching(path: Path, variant: Variant) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None  # unreadable: rerun and overwrite
    return data if data.get("fingerprint") == variant.fingerprint else None


def _donor(paths: ResultPaths, variant: Variant) -> dict[str, Any] | None:
    for path in sorted(paths.results.glob(f"*/{variant.id}.json")):
        if path.parent.name != variant.study and (data := _matching(path, variant)):
            return data
    return None


class ModelCache:
    """Holds one frozen model at a time (two at once would not fit next to model tuning on a small machine)."""

    def __init__(self, loader: Loader) -> None:
        self.loader = loader
        self.name: str | None = None
        self.fm: FrozenModel | None = None

    def get(self, name: str) -> FrozenModel:
        if self.name != name:
            self.fm = None  # release the previous model before loading the next
            self.fm, self.name = self.loader(name), name
        assert self.fm is not None
        return self.fm


def run_variants(
    variants: Sequence[Variant], paths: ResultPaths, *, data_dir: str | None = None, loader: Loader | None = None,
    log: Callable[[str], None] | None = None,
) -> RunSummary:
    """Run every variant that has no result yet, one at a time, in order; failures are logged and skipped."""
    if loader is None:
        from softprompt.model.loading import load_model as loader  # type: ignore[assignment]
    say = log or (lambda line: print(line, file=sys.stderr, flush=True))
    models = ModelCache(loader)  # type: ignore[arg-type]
    summary = RunSummary()
    _git_commit()  # read now: results record the commit whose code this process runs
    for number, variant in enumerate(variants, 1):
        where = f"[{number}/{len(variants)}] {variant.study}/{variant.id}"
        target = paths.result_path(variant)
        if _matching(target, variant):
            summary.skipped.append(variant.id)
            continue
        if donor := _donor(paths, variant):
            _write(target, {**donor, "study": variant.study, "reused_from": donor["study"]})
            summary.reused.append(variant.id)
            say(f"{where}: reused from study {donor['study']}")
            continue
        say(f"{where}: running")
        started = time.time()
        try:
            result = RUNNERS[variant.kind](variant, paths, models, data_dir)
        except Exception as err:  # noqa: BLE001 — one bad variant must not stop a many-hour suite
            message = f"{type(err).__name__}: {err}"
            summary.failed[variant.id] = message
            say(f"{where}: FAILED {message}")
            continue
        result = _envelope(variant, result, time.time() - started)
        _write(target, result)
        summary.done.append(variant.id)
        main = result.get("metrics", {}).get("main")
        say(f"{where}: done in {result['wall_seconds']:.0f} s" + (f", {result['metrics']['main_metric']} {main:.4f}"
                                                                   if main is not None else ""))
    return summary


@functools.cache
def _git_commit() -> str | None:
    """The checkout's commit when the suite started, so a result says which code produced it (the code is
    imported once; a commit made while a long suite runs does not change it). None outside a git checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False,
                             cwd=Path(__file__).parent, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def _machine() -> dict[str, Any]:
    """What the wall-clock budgets bought on: a CPU without native bf16 runs the models in fp32, about half
    as fast (the machines of this project differ: earlier sessions reported AVX512-BF16, session 5 had AVX2)."""
    from softprompt.model.loading import cpu_supports_bf16

    return {"cpu_bf16": cpu_supports_bf16(), "cpus": os.cpu_count()}


def _envelope(variant: Variant, result: dict[str, Any], seconds: float) -> dict[str, Any]:
    return {
        "study": variant.study, "variant": variant.id, "model": variant.model, "model_label": variant.model_label,
        "task": variant.task, "method": variant.kind.value, "params": variant.knobs, "seed": variant.knobs["seed"],
        "steps": result.pop("steps", 0), "wall_seconds": round(seconds, 1), **result,
        "budget": variant.budget, "instruction": variant.instruction, "quick": variant.quick,
        "fingerprint": variant.fingerprint, "softprompt_version": __version__, "git_commit": _git_commit(),
        "machine": _machine(),
        "finished_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": f"softprompt experiments run {variant.study}" + (" --quick" if variant.quick else ""),
    }


def _write(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(data, indent=1, sort_keys=False) + "\n"))


# --- one function per kind ------------------------------------------------------------------------------


def _train_config(variant: Variant, out: Path, data_dir: str | None, method: str) -> Any:
    from softprompt.training.config import TrainConfig

    b, k = variant.budget, variant.knobs
    lr = k.get("lr") if k.get("lr") is not None else (b.get("lr_model_tuning") if method == "model-tuning" else None)
    # v1 studies test the paper's claims with its recipe, whatever train's default is; a budget may name another.
    task = {"task_file": variant.task_file} if variant.task_file else {"task": variant.task}
    return TrainConfig(
        **task, model=variant.model, method=method, recipe=variant.recipe, prompt_length=k["prompt_length"], init=k["init"],
        seed=k["seed"], lr=lr, steps=b.get("steps", 200), batch_size=b.get("batch_size", 16),
        eval_every=b.get("eval_every", 100), eval_limit=b.get("eval_limit", 300),
        eval_batch_size=b.get("eval_batch_size", 32), max_minutes=b.get("max_minutes"),
        train_limit=b.get("train_limit"), data_dir=data_dir, out=str(out),
    )


def _trained_eos(run: RunDir) -> bool:
    """Whether a finished run's targets ended in EOS (runs from before summary.json said so always did)."""
    return bool(json.loads(run.summary.read_text()).get("recipe", {}).get("target_eos", True))


def _train_once(cfg: Any, fm: FrozenModel | None, eos: bool, sp: protocol.Splits | None = None,
                task: Any = None) -> dict[str, Any]:
    """Train into cfg.out unless it already finished there with the same EOS choice (`eos`, the variant's);
    resume a run that was cut off. With `sp` (v2), train on its train split and pick the best step on its
    selection split."""
    from softprompt.training.loop import train

    run = RunDir(cfg.out)
    if run.finished and _trained_eos(run) is not eos:
        shutil.rmtree(run.root)  # trained under an older default recipe (with the EOS term): a scratch run, redone
        run = RunDir(cfg.out)
    if not run.finished:
        data = {"task": task, "train_examples": sp.train, "eval_examples": sp.select} if sp else {}
        train(cfg, fm=fm, resume=run.checkpoint.is_file(), progress=False, **data)
    summary = json.loads(run.summary.read_text())
    # The CPU attention kernel the run trained with, from its own saved config (runs made before the
    # setting existed have none: they trained with whatever that commit's default was).
    saved = yaml.safe_load(run.config.read_text()) if run.config.is_file() else {}
    summary["attention"] = (saved or {}).get("attention")
    return summary


def best_eval(run: RunDir, step: int | None) -> tuple[dict[str, float], dict[str, int] | None]:
    """The validation metrics logged at the best step (metrics.jsonl), and its answer counts if logged."""
    metrics = run.metrics
    for line in metrics.read_text().splitlines():
        record = json.loads(line)
        if record.get("step") == step and "eval" in record:
            return record["eval"], record.get("answers")
    raise RuntimeError(f"{metrics} has no evaluation at step {step}")


def _metrics(task: Any, values: dict[str, float], examples: int, answers: dict[str, int] | None = None) -> dict[str, Any]:
    out = {"main_metric": task.main_metric, "main": values[task.main_metric], "all": values, "examples": examples}
    return out if answers is None else {**out, "answers": answers}


def _evaluate(fm: FrozenModel, task_name: str, variant: Variant, data_dir: str | None, limit: int | None,
              **kwargs: Any) -> dict[str, Any]:
    from softprompt.evaluation.evaluate import evaluate
    from softprompt.tasks import get_task

    task = get_task(task_name)
    examples = task.examples("validation", data_dir, limit=limit)
    result = evaluate(fm, task, examples, batch_size=variant.budget.get("eval_batch_size", 32), progress=False, **kwargs)
    return _metrics(task, result.metrics, len(examples), result.answers)


def _in_domain(variant: Variant, run: RunDir, summary: dict[str, Any], data_dir: str | None) -> dict[str, Any]:
    from softprompt.tasks import get_task

    task = get_task(variant.task or "")
    count = len(task.examples("validation", data_dir, limit=variant.budget.get("eval_limit", 300)))
    values, answers = best_eval(run, summary["best_step"])
    return _metrics(task, values, count, answers)


def run_prompt_tuning(variant: Variant, paths: ResultPaths, models: ModelCache, data_dir: str | None) -> dict[str, Any]:
    from softprompt.evaluation.interpret import neighbors_report
    from softprompt.model.prompt import SoftPrompt

    fm = models.get(variant.model)
    run = RunDir(paths.runs / variant.train_id)  # shared by variants that differ only in their transfer targets
    v2 = _v2_splits(variant, data_dir)
    summary = _train_once(_train_config(variant, run.root, data_dir, "prompt-tuning"), fm,
                          variant.targets_end_with_eos, *v2)
    prompt = SoftPrompt.load(run.best_prompt, model=fm)
    limit = variant.budget.get("eval_limit", 300)
    result: dict[str, Any] = {"steps": summary["steps_done"], "best_step": summary["best_step"],
                              "train_attention": summary["attention"]}
    if v2:
        sp, task = v2
        result["metrics"] = protocol.report(fm, task, sp, variant.budget.get("eval_batch_size", 32), prompt=prompt)
        result |= _selection(run, summary, task)
    else:
        result["metrics"] = _in_domain(variant, run, summary, data_dir)
    if variant.eval_tasks:
        result["transfer"] = {t: _evaluate(fm, t, variant, data_dir, limit, prompt=prompt) for t in variant.eval_tasks}
    init = SoftPrompt.load(run.init_prompt, model=fm)
    result["interpretation"] = {"init": neighbors_report(fm, init), "trained": neighbors_report(fm, prompt)}
    result["prompt_file"] = str(run.best_prompt)
    return result


def run_model_tuning(variant: Variant, paths: ResultPaths, models: ModelCache, data_dir: str | None) -> dict[str, Any]:
    run = RunDir(paths.runs / variant.id)
    cfg = _train_config(variant, run.root, data_dir, "model-tuning")
    # Model tuning changes the weights: it trains its own fp32 copy (bf16 would drop small updates), never
    # the shared frozen model; a finished run needs no model at all.
    trained = run.finished
    v2 = _v2_splits(variant, data_dir)
    summary = _train_once(cfg, None if trained else models.loader(variant.model, dtype="fp32"),
                          variant.targets_end_with_eos, *v2)
    result: dict[str, Any] = {"steps": summary["steps_done"], "best_step": summary["best_step"],
                              "train_attention": summary["attention"]}
    if v2:
        sp, task = v2
        tuned = models.loader(str(run.model))  # the best checkpoint, scored once on the report split
        result["metrics"] = protocol.report(tuned, task, sp, variant.budget.get("eval_batch_size", 32))
        result |= _selection(run, summary, task)
        del tuned
    else:
        result["metrics"] = _in_domain(variant, run, summary, data_dir)
    if variant.eval_tasks:
        tuned = models.loader(str(run.model))  # the best checkpoint, not the last weights
        limit = variant.budget.get("eval_limit", 300)
        result["transfer"] = {t: _evaluate(tuned, t, variant, data_dir, limit) for t in variant.eval_tasks}
        del tuned
    # The tuned weights are the model's full size (0.5-1 GB); the result keeps the numbers, not the weights.
    shutil.rmtree(run.model, ignore_errors=True)
    return result


def _selection(run: RunDir, summary: dict[str, Any], task: Any) -> dict[str, Any]:
    """A v2 training result's selection score at its best step (what picks model tuning's lr between variants)
    and its learning curve on the selection split (the budget's pilot)."""
    values, _ = best_eval(run, summary["best_step"])
    return {"selection": values.get(task.main_metric), "curve": protocol.selection_curve(run.metrics, task.main_metric)}


def _v2_splits(variant: Variant, data_dir: str | None) -> tuple[protocol.Splits, Any] | tuple[()]:
    """(splits, task) for a v2 variant (protocol.py), () for v1."""
    if not protocol.is_v2(variant):
        return ()
    task = protocol.task_of(variant)
    return protocol.splits(task, data_dir, variant.budget), task


def run_zero_shot(variant: Variant, paths: ResultPaths, models: ModelCache, data_dir: str | None) -> dict[str, Any]:
    fm = models.get(variant.model)
    if v2 := _v2_splits(variant, data_dir):
        return {"metrics": protocol.report(fm, v2[1], v2[0], variant.budget.get("eval_batch_size", 32))}
    return {"metrics": _evaluate(fm, variant.task or "", variant, data_dir, variant.budget.get("eval_limit", 300))}


def run_few_shot(variant: Variant, paths: ResultPaths, models: ModelCache, data_dir: str | None) -> dict[str, Any]:
    from softprompt.evaluation.baselines import draw_shots
    from softprompt.tasks import get_task

    fm = models.get(variant.model)
    if v2 := _v2_splits(variant, data_dir):
        sp, task = v2
        shots = draw_shots(task, variant.knobs["shots"], variant.knobs["seed"], pool=sp.train)
        return {"metrics": protocol.report(fm, task, sp, variant.budget.get("eval_batch_size", 32),
                                           instruction=variant.instruction, shots=shots)}
    shots = draw_shots(get_task(variant.task or ""), variant.knobs["shots"], variant.knobs["seed"], data_dir)
    limit = variant.budget.get("shots_eval_limit", variant.budget.get("eval_limit", 300))
    return {"metrics": _evaluate(fm, variant.task or "", variant, data_dir, limit, instruction=variant.instruction,
                                 shots=shots)}


def run_majority(variant: Variant, paths: ResultPaths, models: ModelCache, data_dir: str | None) -> dict[str, Any]:
    """The score of always answering the training split's most common class: where a method lands on it,
    it has learned to predict one class, whatever the other metrics suggest."""
    from softprompt.evaluation.baselines import majority_index, majority_predictions
    from softprompt.evaluation.evaluate import answer_counts
    from softprompt.tasks import get_task

    if v2 := _v2_splits(variant, data_dir):
        sp, task = v2
        predictions = majority_predictions(task, sp.report, majority_index(task, examples=sp.train))
        answers = answer_counts(task, sp.report, predictions)
        metrics = protocol.scored(task, sp, task.compute_metrics(predictions, sp.report), predictions, answers)
        return {"metrics": metrics, "majority": next(iter(answers or {}), None)}
    task = get_task(variant.task or "")
    examples = task.examples("validation", data_dir, limit=variant.budget.get("eval_limit", 300))
    predictions = majority_predictions(task, examples, majority_index(task, data_dir))
    answers = answer_counts(task, examples, predictions)
    metrics = _metrics(task, task.compute_metrics(predictions, examples), len(examples), answers)
    return {"metrics": metrics, "majority": next(iter(answers or {}), None)}


def run_ensemble(variant: Variant, paths: ResultPaths, models: ModelCache, data_dir: str | None) -> dict[str, Any]:
    from softprompt.evaluation.ensemble import evaluate_ensemble
    from softprompt.tasks import get_task
    from softprompt.training.ensemble import train_ensemble

    fm = models.get(variant.model)
    out = RunDir(paths.runs / variant.id)
    cfg = _train_config(variant, out.root, data_dir, "prompt-tuning")  # train_ensemble puts member i in out.member(i)
    members = [out.member(i) for i in range(variant.knobs["k"])]
    if v2 := _v2_splits(variant, data_dir):
        sp, task = v2  # members seed .. seed + k - 1, each picking its best step on the selection split
        eos = variant.targets_end_with_eos
        for i, member in enumerate(members):
            _train_once(replace(cfg, seed=cfg.seed + i, out=str(member.root)), fm, eos, sp, task)
        examples = sp.report
    else:
        if not all(m.finished for m in members):
            train_ensemble(cfg, len(members), out.root, fm=fm, progress=False)
        task = get_task(variant.task or "")
        examples = task.examples("validation", data_dir, limit=variant.budget.get("eval_limit", 300))
    prompts = [m.best_prompt for m in members]
    report = evaluate_ensemble(fm, task, examples, prompts, variant.budget.get("eval_batch_size", 32))
    steps = sum(json.loads(m.summary.read_text())["steps_done"] for m in members)
    metrics = _metrics(task, report["majority_vote"], len(examples))
    if v2:
        metrics.update(split=v2[0].report_split, selected_on=v2[0].select_from)
    return {"steps": steps, "metrics": metrics, "ensemble": report}


def run_cost(variant: Variant, paths: ResultPaths, models: ModelCache, data_dir: str | None) -> dict[str, Any]:
    from softprompt.experiments.cost import cost_report

    return {"cost": cost_report(models.get(variant.model), variant.model_label)}


RUNNERS: dict[Kind, Callable[[Variant, ResultPaths, ModelCache, str | None], dict[str, Any]]] = {
    Kind.PROMPT_TUNING: run_prompt_tuning, Kind.MODEL_TUNING: run_model_tuning, Kind.ZERO_SHOT: run_zero_shot,
    Kind.FEW_SHOT: run_few_shot, Kind.MAJORITY: run_majority, Kind.ENSEMBLE: run_ensemble, Kind.COST: run_cost,
}


def select(studies: dict[str, Study], names: Sequence[str], *, quick: bool = False, tasks: Sequence[str] = (),
           models: Sequence[str] = (), methods: Sequence[str] = ()) -> list[Variant]:
    """The variants of the named studies ('all' = every study), optionally only some tasks / models / methods."""
    from softprompt.experiments.studies import Kind, StudyError

    bad = [m for m in methods if m not in {k.value for k in Kind}]
    if bad:
        raise StudyError(f"unknown method {', '.join(bad)}; known: {', '.join(k.value for k in Kind)}")

    wanted = list(studies) if "all" in names else list(names)
    unknown = [n for n in wanted if n not in studies]
    if unknown:
        raise StudyError(f"unknown study {', '.join(unknown)}; known: {', '.join(studies)} (or 'all')")
    out = [v for n in wanted for v in studies[n].variants(quick=quick)]
    if tasks:
        out = [v for v in out if v.task is None or v.task in tasks]
    if models:
        out = [v for v in out if v.model in models]
    if methods:
        out = [v for v in out if v.kind.value in methods]
    return out
