"""Study configs (experiments/studies/*.yaml) expanded into concrete variants, one result file each.

A study file names its models, its budget, and a list of variant groups. In a group, a value given as a
list is a grid axis (every combination becomes a variant); `eval_tasks` (transfer targets) and
`instructions` are never expanded. Each variant gets a stable id built from everything that changes its
result, so a finished variant is recognised across sessions and shared between studies (the SST-2 prompt
at P=100 with class-label init is one run, whether the methods, length or init study asks for it).

    study: length
    models: [default]
    budget: {steps: 200, batch_size: 16, eval_every: 100, eval_limit: 300, max_minutes: 8}
    variants:
      - {task: [sst2, rte], method: prompt-tuning, prompt_length: [1, 5, 20, 100, 150]}
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml

from softprompt.errors import UsageError


class Kind(StrEnum):
    """What a variant runs."""

    PROMPT_TUNING = "prompt-tuning"
    MODEL_TUNING = "model-tuning"
    ZERO_SHOT = "zero-shot"
    FEW_SHOT = "few-shot"
    MAJORITY = "majority"  # no model: every example gets the training split's most common class
    ENSEMBLE = "ensemble"
    COST = "cost"


TRAINED = {Kind.PROMPT_TUNING, Kind.MODEL_TUNING, Kind.ENSEMBLE}  # kinds whose result depends on the recipe
SHORT = {Kind.PROMPT_TUNING: "pt", Kind.MODEL_TUNING: "mt", Kind.ZERO_SHOT: "zero-shot",
         Kind.FEW_SHOT: "few-shot", Kind.MAJORITY: "majority", Kind.ENSEMBLE: "ensemble", Kind.COST: "cost"}
MODEL_LABELS = {"default": "SmolLM2-135M", "gemma-3-270m": "Gemma-3-270M"}
# Knobs a variant may set, with their defaults (the paper's recipe where it has one).
KNOBS: dict[str, Any] = {"prompt_length": 100, "init": "class-labels", "seed": 0, "shots": 4, "k": 5, "lr": None}
GROUP_KEYS = {"task", "method", "models", "eval_tasks", *KNOBS}
STUDY_KEYS = {"study", "title", "description", "models", "budget", "hours", "instructions", "variants", "task_files"}
# select_n / report_limit: the v2 protocol (protocol.py); recipe: the prompt-tuning recipe (paper or default).
BUDGET_KEYS = {"steps", "batch_size", "eval_every", "eval_limit", "max_minutes", "train_limit", "lr_model_tuning",
               "eval_batch_size", "shots_eval_limit", "select_n", "report_limit", "recipe"}
# Quick mode (CI smoke test): the same code paths on a sliver of the work. Its numbers are never reported.
QUICK_BUDGET = {"steps": 2, "batch_size": 4, "eval_every": 0, "eval_limit": 8, "max_minutes": None,
                "train_limit": 32, "shots_eval_limit": 8}
QUICK_KNOBS = {"k": 2, "shots": 1}
QUICK_V2 = {"select_n": 8, "report_limit": 8}


class StudyError(UsageError):
    """A study file that cannot be read or expanded; the message names the file and the key."""


@dataclass(frozen=True)
class Variant:
    """One concrete run: a model, a task, a kind and its knobs, under the study's budget."""

    study: str
    model: str
    task: str | None
    kind: Kind
    knobs: dict[str, Any]
    budget: dict[str, Any]
    eval_tasks: tuple[str, ...] = ()
    instruction: str | None = None
    quick: bool = False
    task_file: str | None = None  # the task file the study maps `task` to (None: a built-in task)

    @property
    def id(self) -> str:
        """Stable name, e.g. `default__sst2__pt__p100__class-labels__s0` (the result file's stem)."""
        parts = [self.model] + ([self.task] if self.task else []) + [SHORT[self.kind]]
        k = self.knobs
        if self.kind in (Kind.PROMPT_TUNING, Kind.ENSEMBLE):
            parts += [f"p{k['prompt_length']}", str(k["init"])]
        if self.kind is Kind.ENSEMBLE:
            parts.append(f"k{k['k']}")
        if self.kind is Kind.FEW_SHOT:
            parts.append(f"k{k['shots']}")
        if self.kind in (Kind.PROMPT_TUNING, Kind.MODEL_TUNING, Kind.FEW_SHOT, Kind.ENSEMBLE):
            parts.append(f"s{k['seed']}")
        if k.get("lr") is not None:
            parts.append(f"lr{k['lr']:g}")
        if self.eval_tasks:
            parts.append("to-" + "-".join(self.eval_tasks))
        return "__".join(parts)

    @property
    def train_id(self) -> str:
        """The id without the transfer targets: variants that differ only in where they are evaluated share
        one training run."""
        return self.id.split("__to-")[0]

    @property
    def fingerprint(self) -> str:
        """Hash of everything that determines the result (not the study): equal fingerprints may share results."""
        data = {"id": self.id, "budget": self.budget, "instruction": self.instruction, "quick": self.quick}
        if self.task_file:  # only when set: fingerprints of built-in-task variants stay what they were
            data["task_file"] = Path(self.task_file).name
        if self.kind in TRAINED and not self.targets_end_with_eos:
            # Only when off: every run before the default recipe dropped the EOS term trained with it, so those
            # fingerprints stand, while results made under the old default no longer match the new one.
            data["target_eos"] = False
        return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]

    @property
    def recipe(self) -> str:
        """The training recipe its budget names; the paper's when it names none."""
        return str(self.budget.get("recipe", "paper"))

    @functools.cached_property  # fingerprint reads it for every status check; a task file is parsed once
    def targets_end_with_eos(self) -> bool:
        """Whether this variant's training targets end in EOS under its budget's recipe (`TrainConfig`)."""
        from softprompt.tasks import Mode, get_task
        from softprompt.tasks.custom import task_file_mode
        from softprompt.training.config import TrainConfig

        # A task file's mode comes from its fields alone: `plan` works where its data files are not at hand.
        mode = task_file_mode(self.task_file) if self.task_file else get_task(self.task or "").default_mode
        cfg = TrainConfig(task=self.task, recipe=self.recipe)
        return cfg.ends_targets_with_eos(ranked=mode is Mode.RANK)

    @property
    def model_label(self) -> str:
        return MODEL_LABELS.get(self.model, self.model)


@dataclass
class Study:
    """A parsed study file."""

    name: str
    path: Path
    title: str
    description: str
    models: list[str]
    budget: dict[str, Any]
    hours: float | None
    instructions: dict[str, str]
    groups: list[dict[str, Any]] = field(default_factory=list)
    task_files: dict[str, str] = field(default_factory=dict)  # task name -> task file (resolved path)

    def meta(self) -> dict[str, Any]:
        """What the report shows about the study (title, budget, planned hours, its variant ids)."""
        return {"title": self.title, "budget": self.budget, "hours": self.hours, "description": self.description,
                "variants": [v.id for v in self.variants()]}

    def variants(self, quick: bool = False) -> list[Variant]:
        """Every variant of the study, in file order. Quick mode keeps each group's first task and model."""
        budget = {**self.budget, **(QUICK_BUDGET if quick else {})}
        if quick and "select_n" in budget:  # the v2 protocol's splits, cut down like the rest
            budget.update(QUICK_V2)
        out: list[Variant] = []
        for number, group in enumerate(self.groups, 1):
            where = f"{self.path}: variants[{number}]"
            unknown = sorted(set(group) - GROUP_KEYS)
            if unknown:
                raise StudyError(f"{where}: unknown key(s) {', '.join(unknown)}; valid: {', '.join(sorted(GROUP_KEYS))}")
            try:
                kinds = [Kind(m) for m in _as_list(group.get("method", "prompt-tuning"))]
            except ValueError:
                raise StudyError(f"{where}: method {group.get('method')!r}; use {', '.join(k.value for k in Kind)}") from None
            models = _as_list(group.get("models", self.models))
            tasks = _as_list(group.get("task")) if Kind.COST not in kinds else [None]
            if not tasks:
                raise StudyError(f"{where}: give a task (or a list of tasks)")
            axes = {name: (_as_list(group[name]) if name in group else [default]) for name, default in KNOBS.items()}
            if quick:  # one model, task, seed and lr per group: the code paths, not the grid
                models, tasks = models[:1], tasks[:1]
                axes.update({name: [value] for name, value in QUICK_KNOBS.items()})
                axes.update({name: axes[name][:1] for name in ("seed", "lr")})
            eval_tasks = tuple(_as_list(group.get("eval_tasks", [])))
            # Task-major order: a partly finished suite has complete rows (every method of a task) first.
            for model, task, kind, *values in itertools.product(models, tasks, kinds, *axes.values()):
                knobs = dict(zip(axes, values, strict=True))
                # Only prompt design reads the instruction: elsewhere it must not split otherwise equal variants.
                instruction = self.instructions.get(task) if task and kind is Kind.FEW_SHOT else None
                out.append(Variant(self.name, str(model), task, kind, knobs, budget, eval_tasks, instruction, quick,
                                   self.task_files.get(task) if task else None))
        seen: set[str] = set()
        return [v for v in out if not (v.id in seen or seen.add(v.id))]  # type: ignore[func-returns-value]


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else ([] if value is None else [value])


def load_study(path: str | Path) -> Study:
    """Read and check one study file."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise StudyError(f"cannot read study file {path}: {err}") from None
    if not isinstance(data, dict) or "study" not in data or not isinstance(data.get("variants"), list):
        raise StudyError(f"{path}: a study file is a mapping with 'study' and a list of 'variants'")
    unknown = sorted(set(data) - STUDY_KEYS)
    if unknown:
        raise StudyError(f"{path}: unknown key(s) {', '.join(unknown)}; valid: {', '.join(sorted(STUDY_KEYS))}")
    budget = dict(data.get("budget") or {})
    bad = sorted(set(budget) - BUDGET_KEYS)
    if bad:
        raise StudyError(f"{path}: unknown budget key(s) {', '.join(bad)}; valid: {', '.join(sorted(BUDGET_KEYS))}")
    return Study(
        name=str(data["study"]), path=path, title=str(data.get("title", data["study"])),
        description=str(data.get("description", "")).strip(), models=_as_list(data.get("models", ["default"])),
        budget=budget, hours=data.get("hours"), instructions=dict(data.get("instructions") or {}),
        groups=list(data["variants"]), task_files=_task_files(path, data.get("task_files")),
    )


def _task_files(path: Path, mapping: Any) -> dict[str, str]:
    """`task_files: {banking77: ../../examples/banking77.yaml}`: paths relative to the study file, checked."""
    if mapping is None:
        return {}
    if not isinstance(mapping, dict):
        raise StudyError(f"{path}: task_files maps task names to task-file paths, e.g. {{banking77: ../../examples/banking77.yaml}}")
    out = {}
    for name, file in mapping.items():
        resolved = (path.parent / str(file)).resolve()
        if not resolved.is_file():
            raise StudyError(f"{path}: task_files.{name}: no file {resolved}")
        out[str(name)] = str(resolved)
    return out


def load_studies(folder: str | Path) -> dict[str, Study]:
    """Every `*.yaml` in `folder`, keyed by study name, in file-name order."""
    folder = Path(folder)
    files = sorted(folder.glob("*.yaml"))
    if not files:
        raise StudyError(f"no study files (*.yaml) in {folder}; run from the repository root or pass --dir")
    studies = [load_study(f) for f in files]
    return {s.name: s for s in studies}
