"""The studies' evaluation protocol (v2): select on data carved from train, report once on a split never
selected on, keep every example's score for intervals.

A study opts in with the budget key `select_n`. Then:
- training evaluates every `eval_every` steps on a *selection* split, and its best step is picked there:
  the task's own validation split when the task carves it from train (BANKING77's task file), else the
  `select_n` training examples with the smallest hash (`tasks.splits.hold_out`), removed from training;
- the chosen prompt (or tuned model) and every method that trains nothing are scored once on the *report*
  split: the task's test split when validation was carved from train, else its validation split (GLUE /
  SuperGLUE dev), first `report_limit` examples (all when unset);
- each result keeps its per-example scores (1 correct, 0 wrong for accuracy tasks) so that `stats.py` can
  bootstrap single runs and pair methods on the same examples.
Studies without `select_n` keep the v1 protocol (best of the evaluations on the validation split).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from softprompt.experiments.studies import Variant
    from softprompt.model.frozen import FrozenModel
    from softprompt.model.prompt import SoftPrompt
    from softprompt.tasks import Example, Task


def is_v2(variant: Variant) -> bool:
    return variant.budget.get("select_n") is not None


def task_of(variant: Variant) -> Task:
    """The variant's task: its task file when the study maps the name to one, else the built-in task."""
    from softprompt.tasks import get_task, load_task_file

    return load_task_file(variant.task_file) if variant.task_file else get_task(variant.task or "")


@dataclass(frozen=True)
class Splits:
    """What a v2 variant trains on, selects on and reports on (see the module doc)."""

    train: list[Example]
    select: list[Example]
    report: list[Example]
    report_split: str  # the split's name; `report` is all of it, or a hash-drawn subset of report_limit
    select_from: str  # "validation (carved from train by the task file)" or "train (hash hold-out)"


def _carved_validation(task: Task) -> bool:
    """True when the task file carves its validation split out of train (both read the same files)."""
    files = task.files
    return "validation" in files and "test" in files and files["validation"] == files.get("train")


def splits(task: Task, data_dir: str | None, budget: dict[str, Any]) -> Splits:
    from softprompt.tasks.splits import hold_out

    n, limit = int(budget["select_n"]), budget.get("report_limit")
    if _carved_validation(task):
        # BANKING77's test.csv is sorted by intent: its first 1,000 rows hold 27 of the 77 intents, so a
        # subset is drawn by hash (hold_out), never taken from the top. The same goes for selection.
        train, select, report_split = task.examples("train", data_dir), task.examples("validation", data_dir), "test"
        select, origin = hold_out(select, n)[1], "validation (carved from train)"
    else:
        train, select = hold_out(task.examples("train", data_dir), n)
        report_split, origin = "validation", "train (hash hold-out)"
    report = task.examples(report_split, data_dir)
    if limit is not None and limit < len(report):
        report = hold_out(report, int(limit))[1]
    return Splits(train, select, report, report_split, origin)


def per_example(task: Task, examples: list[Example], predictions: list[str]) -> list[float] | None:
    """Each example's score on the main metric where it is a mean over examples (accuracy); None otherwise
    (F1 over a class, the MRPC average: no per-example decomposition, so no bootstrap)."""
    if task.main_metric != "accuracy":
        return None
    return [float(task.compute_metrics([p], [ex])["accuracy"]) for p, ex in zip(predictions, examples, strict=True)]


def report(fm: FrozenModel, task: Task, sp: Splits, batch_size: int, *, prompt: SoftPrompt | None = None,
           instruction: str | None = None, shots: list[Example] | None = None) -> dict[str, Any]:
    """Score on the report split once: the `metrics` block of a v2 result, with per-example scores."""
    from softprompt.evaluation.evaluate import evaluate

    result = evaluate(fm, task, sp.report, prompt=prompt, batch_size=batch_size, progress=False,
                      instruction=instruction, shots=shots)
    return scored(task, sp, result.metrics, result.predictions, result.answers)


def scored(task: Task, sp: Splits, values: dict[str, float], predictions: list[str],
           answers: dict[str, int] | None) -> dict[str, Any]:
    """The metrics block: main metric, all metrics, the split and count, answer counts, per-example scores."""
    return {"main_metric": task.main_metric, "main": values[task.main_metric], "all": values,
            "examples": len(sp.report), "split": sp.report_split, "selected_on": sp.select_from,
            "answers": answers, "per_example": per_example(task, sp.report, predictions)}


def selection_curve(run_metrics: Path, main_metric: str) -> list[list[float]]:
    """[[step, main metric on the selection split], ...]: the run's learning curve, the pilot that shows
    whether the step budget was enough (still rising at the last step: it was not)."""
    import json

    out = []
    for line in run_metrics.read_text().splitlines():
        record = json.loads(line)
        if "eval" in record and record["eval"].get(main_metric) is not None:
            out.append([int(record.get("step", 0)), float(record["eval"][main_metric])])
    return out
