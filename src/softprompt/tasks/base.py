"""What a task is: examples as (input text, target text) pairs, label words, metrics, split files.

Every task is text-to-text with no task-name prefix (Lester et al. 2021 follow T5): the input is readable
text such as ``"premise: ... hypothesis: ..."`` and the target is a label word (``entailment``) or an
answer string. Inputs never end in whitespace: the scorer tokenizes a target as ``" " + target`` when the
input does not end in whitespace, so the label word continues the input as the next word.

A `Task` is data, not a subclass hierarchy: the built-in modules (`superglue`, `glue`, `qa`) and user YAML
files (`custom`) all build the same object from a split -> files table, a record -> examples function and
a list of metric names.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from softprompt.errors import UsageError
from softprompt.tasks.data import HubSource, Source, load_records
from softprompt.tasks.metrics import compute


class Mode(StrEnum):
    """How a model's answer is read off."""

    RANK = "rank"  # score every candidate target, predict the most likely (classification)
    GENERATE = "generate"  # greedy decoding, compared with the gold text


class TaskError(UsageError):
    """A task cannot be built or used as asked (unknown name or split, wrong mode)."""


@dataclass
class Example:
    """One text-to-text example.

    Attributes:
        input_text: what the model reads (after the soft prompt), never ending in whitespace.
        target_text: the gold target: a label word, the correct choice, or the first gold answer.
        choices: candidate targets for rank classification: the task's label words, or this example's
            own options (COPA's two alternatives, ReCoRD's entities). None for free generation.
        label: index of the gold target in `choices`, when there are choices.
        group: what the example belongs to, for grouped metrics (MultiRC question id).
        answers: every gold string (QA, ReCoRD); metrics take the max over them.
        meta: anything else worth keeping from the source row (ids, raw label).
    """

    input_text: str
    target_text: str
    choices: list[str] | None = None
    label: int | None = None
    group: str | None = None
    answers: list[str] | None = None
    meta: dict[str, Any] = field(default_factory=dict)


Formatter = Callable[[dict[str, Any]], list[Example]]
ANSWER_CUE = "\nanswer:"
QA_MAX_NEW_TOKENS = 32  # tokens generated for a free-text answer (QA tasks; evaluation and ensembles alike)


@dataclass
class Task:
    """A task: how to read its splits, how to turn a record into examples, how to score predictions.

    Attributes:
        name: registry name (`rte`) or the YAML file's `name`.
        label_words: the verbalizer in label order (`["entailment", "not_entailment"]`); None for tasks
            whose targets are free text or per-example choices (SQuAD, COPA, ReCoRD).
        default_mode: `rank` for classification and per-example choices, `generate` for QA.
        main_metric: the key of `compute_metrics`' result used for early stopping and summaries.
        metric_names: metrics to compute (names in `metrics.METRICS`).
        files: split name -> the files that hold it, relative to the data dir (or absolute).
        formatter: one record of those files -> zero or more examples.
        hub: where the same data lives on the Hugging Face hub, for when the files are missing.
        positive: the label word counted as positive by binary F1.
        flags: constant entries added to every metrics dict (ReCoRD: `sample_only`).
        notes: one paragraph for `--help` and the README: where the splits come from.
        answer_cue: text ending every input, right before the target. The paper's T5 formats need none,
            but a decoder-only LM reads "sentence: … positive" as prose. On SmolLM2-135M, SST-2, the paper's
            recipe (P=100, batch 32, Adafactor 0.3), dev accuracy (first 500) after 100 steps: 0.726 plain,
            0.830 with "\nanswer:". It is format, not a task-name prefix (zero-shot stays near chance either way;
            a task-specific cue such as "\nsentiment:" lifts zero-shot to 0.73, but one cue serves every task).
    """

    name: str
    label_words: list[str] | None
    default_mode: Mode
    main_metric: str
    metric_names: tuple[str, ...]
    files: dict[str, list[Source]]
    formatter: Formatter
    hub: HubSource | None = None
    positive: str | None = None
    flags: dict[str, float] = field(default_factory=dict)
    notes: str = ""
    answer_cue: str = ANSWER_CUE

    @property
    def splits(self) -> list[str]:
        """Split names this task can read (`train`, `validation`, sometimes `test` and few-shot splits)."""
        return list(self.files)

    def examples(self, split: str, data_dir: str | Path | None = None, limit: int | None = None) -> list[Example]:
        """Read `split` and format it; `limit` keeps the first N examples (file order, deterministic)."""
        if split not in self.files:
            raise TaskError(f"task {self.name!r} has no split {split!r}; it has: {', '.join(self.files)}")
        out: list[Example] = []
        for record in load_records(self.name, split, self.files[split], data_dir, self.hub):
            for example in self.formatter(record):
                example.input_text += self.answer_cue
                out.append(example)
            if limit is not None and len(out) >= limit:
                return out[:limit]
        return out

    def compute_metrics(self, predictions: Sequence[str], examples: Sequence[Example]) -> dict[str, float]:
        """Score predicted target strings against the examples' gold targets."""
        if len(predictions) != len(examples):
            raise TaskError(f"{len(predictions)} predictions for {len(examples)} examples")
        result = compute(self.metric_names, list(predictions), list(examples), positive=self.positive)
        result.update(self.flags)
        return result


def choice_example(input_text: str, choices: list[str], label: int | None, **kwargs: Any) -> Example:
    """An example whose target is one of `choices` (label None: unlabelled; target is then empty)."""
    target = choices[label] if label is not None else ""
    return Example(input_text=input_text, target_text=target, choices=list(choices), label=label, **kwargs)


def clean(text: str) -> str:
    """Collapse runs of whitespace (newlines in passages would end generation early) and strip."""
    return " ".join(str(text).split())
