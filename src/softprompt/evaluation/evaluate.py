"""Evaluate a frozen model (with a soft prompt, a designed text prompt, or nothing) on a task.

Two ways to read the model's answer:
- `rank`: score every candidate target (the label words, or the example's own options) by its summed
  log-likelihood after the input and predict the best. Candidates of a batch go through one forward.
- `generate`: greedy decoding, compared with the gold by exact match as in the paper; for classification
  the outputs that are no label word at all are counted (`no_label`), since they are wrong by format.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from softprompt.evaluation.baselines import design_inputs
from softprompt.tasks.base import QA_MAX_NEW_TOKENS, Example, Mode, Task, TaskError
from softprompt.tasks.metrics import exact_match

if TYPE_CHECKING:
    from softprompt.model.frozen import FrozenModel
    from softprompt.model.prompt import SoftPrompt

CHUNK_EXAMPLES = 64  # examples per scoring call: big enough for length-sorted batches, small for progress


@dataclass
class EvalResult:
    """What `evaluate` returns.

    Attributes:
        task: the task's name.
        mode: rank or generate.
        metrics: the task's metrics (e.g. accuracy, f1, average), values in [0, 1].
        predictions: the predicted target text of every example, in order.
        counts: `examples`, and in generate mode for tasks with choices `no_label` (outputs matching no choice).
        scores: rank mode: the log-likelihood of every choice of every example.
        answers: how often each answer was predicted (`answer_counts`); None for free-text tasks. A model
            that gives one answer for (nearly) every example has learned the label prior, not the task.
    """

    task: str
    mode: Mode
    metrics: dict[str, float]
    predictions: list[str]
    counts: dict[str, int] = field(default_factory=dict)
    scores: list[list[float]] | None = None
    answers: dict[str, int] | None = None

    def summary(self) -> dict[str, Any]:
        """JSON-ready: task, mode, metrics, counts, answers (no per-example data)."""
        return {"task": self.task, "mode": self.mode.value, "metrics": self.metrics, "counts": self.counts,
                "answers": self.answers}


def answer_counts(task: Task, examples: Sequence[Example], predictions: Sequence[str]) -> dict[str, int] | None:
    """Predictions per answer: label words by name, per-example options as "choice N", anything else (a
    generated non-label) as "(other)"; None for free-text tasks, whose answers do not repeat."""
    if task.label_words:
        names = [p if p in task.label_words else "(other)" for p in predictions]
    elif examples and all(ex.choices for ex in examples):
        names = [f"choice {ex.choices.index(p) + 1}" if p in (ex.choices or []) else "(other)"
                 for ex, p in zip(examples, predictions, strict=True)]
    else:
        return None
    return dict(sorted(Counter(names).items()))


def evaluate(
    fm: FrozenModel,
    task: Task,
    examples: Sequence[Example],
    prompt: SoftPrompt | None = None,
    mode: Mode | str | None = None,
    batch_size: int = 16,
    progress: bool = True,
    instruction: str | None = None,
    shots: Sequence[Example] | None = None,
    max_new_tokens: int | None = None,
    target_prefix: str | None = None,
) -> EvalResult:
    """Predict every example and compute the task's metrics.

    Args:
        fm: the frozen model.
        task: supplies label words, metrics and the default mode.
        examples: what to evaluate (e.g. `task.examples("validation", limit=200)`).
        prompt: a trained soft prompt, or None for no prompt.
        mode: `rank` or `generate` (default: the task's).
        batch_size: sequences per forward pass.
        progress: show a progress bar on stderr.
        instruction, shots: prompt design — text and solved examples put before every input.
        max_new_tokens: generate mode; default: longest choice + 2 tokens, or 32 for free text.
        target_prefix: text before every target, e.g. "<extra_id_0> " (objectives.py); default: the
            prompt's recorded `target_prefix`, else none.
    """
    from softprompt.scoring import generate, score_choices
    from softprompt.scoring.objectives import prompt_target_prefix, strip_sentinels

    mode = Mode(mode) if mode is not None else task.default_mode
    prefix = prompt_target_prefix(prompt) if target_prefix is None else target_prefix
    examples = list(examples)
    inputs = design_inputs([ex.input_text for ex in examples], instruction, shots or ())
    choices = [ex.choices or task.label_words for ex in examples]
    bar = _bar(len(examples), f"{task.name} ({mode.value})", progress)
    predictions: list[str] = []
    counts = {"examples": len(examples)}
    scores: list[list[float]] | None = None
    try:
        if mode is Mode.RANK:
            if any(not c for c in choices):
                raise TaskError(f"task {task.name!r} has no label words or choices to rank; use --mode generate")
            scores = []
            for start in range(0, len(examples), CHUNK_EXAMPLES):
                end = start + CHUNK_EXAMPLES
                scored = [[prefix + c for c in opts] for opts in choices[start:end]] if prefix else choices[start:end]
                chunk = score_choices(fm, inputs[start:end], scored, prompts=prompt, batch_size=batch_size)
                scores += chunk
                predictions += [opts[max(range(len(row)), key=row.__getitem__)]
                                for opts, row in zip(choices[start:end], chunk, strict=True)]
                bar.update(len(chunk))
        else:
            limit = max_new_tokens or _default_new_tokens(fm, choices)
            for start in range(0, len(examples), CHUNK_EXAMPLES):
                out = generate(fm, inputs[start:start + CHUNK_EXAMPLES], prompts=prompt,
                               max_new_tokens=limit, batch_size=batch_size)
                predictions += [strip_sentinels(text) if prefix else text.strip() for text in out]
                bar.update(len(out))
            if all(choices):
                counts["no_label"] = sum(p not in set(c or ()) for p, c in zip(predictions, choices, strict=True))
    finally:
        bar.close()
    metrics = task.compute_metrics(predictions, examples)
    return EvalResult(task.name, mode, metrics, predictions, counts, scores, answer_counts(task, examples, predictions))


def generation_caveat(prompt: SoftPrompt | None) -> str | None:
    """Why greedy exact-match generation undercounts with this prompt, or None.

    A prompt trained without the EOS term (the default recipe for tasks scored by rank) learns to rank the
    label words but not to stop after one, so generate mode sees e.g. "positive positive positive".
    """
    if prompt is None or prompt.metadata.get("targets_end_with_eos") is not False:
        return None
    return ("this prompt was trained without the EOS term (the default recipe for tasks scored by rank), so it "
            "does not learn to stop after the label: exact-match generate scores undercount it. Use --mode rank, "
            "or retrain with --target-eos for generation.")


def _default_new_tokens(fm: FrozenModel, choices: Sequence[Sequence[str] | None]) -> int:
    """Enough tokens for the longest label word plus a little, so a wrong long output is still seen."""
    words = {w for c in choices if c for w in c}
    if not words or len(words) > 64:
        return QA_MAX_NEW_TOKENS
    return max(len(fm.tokenizer(" " + w, add_special_tokens=False).input_ids) for w in words) + 2


def _bar(total: int, desc: str, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="ex", file=sys.stderr, disable=not enabled, leave=False)


def write_predictions(path: str | Path, examples: Sequence[Example], result: EvalResult) -> None:
    """One JSON line per example: input, gold target (and all answers), prediction, correct, choice scores."""
    with open(path, "w", encoding="utf-8") as handle:
        for i, (ex, pred) in enumerate(zip(examples, result.predictions, strict=True)):
            correct = bool(exact_match(pred, ex.answers)) if ex.answers else pred == ex.target_text
            row: dict[str, Any] = {"input": ex.input_text, "target": ex.target_text, "prediction": pred,
                                   "correct": correct}
            if ex.answers:
                row["answers"] = ex.answers
            if ex.group is not None:
                row["group"] = ex.group
            if result.scores is not None:
                row["scores"] = dict(zip(ex.choices or [], result.scores[i], strict=False)) or result.scores[i]
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
