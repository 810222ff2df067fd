"""Prompt ensembles (Lester et al. 2021, §7): K prompts for one task on one frozen model, in one batched pass.

Each input batch is repeated K times, copy k carrying prompt k, and the whole [B·K] batch goes through one
forward. Decoder-only models use the serving engine's cached prefixes (serve/engine.py): each member's
BOS + prompt runs once, and a copy costs only its input tokens, so the ensemble pays K × the input, not
K × (P + input); seq2seq models use `scoring`'s per-example prompt lists.

Reported: every member's metrics, their average, the best member, the majority vote (the paper's
ensemble; ties go to the tied label with the highest summed probability) and the mean-probability ensemble.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from softprompt.model.frozen import FrozenModel
from softprompt.model.prompt import SoftPrompt
from softprompt.scoring import PrefixCache, generate, score_choices
from softprompt.tasks.base import QA_MAX_NEW_TOKENS, Example, Mode, Task, TaskError


@dataclass
class EnsembleResult:
    """Predictions and metrics of K members and their ensembles on one task.

    Attributes:
        task: the task's name.
        names: one name per member (file stem or metadata task + index).
        members: per member, its predicted target texts [N].
        member_metrics: per member, the task's metrics.
        vote: majority-vote predictions [N] and `vote_metrics`.
        mean_prob: mean-probability predictions [N] and `mean_prob_metrics` (rank mode only, else None).
        probs: rank mode: [K, N, C] probabilities over each example's choices (C varies: lists).
    """

    task: str
    main_metric: str
    names: list[str]
    members: list[list[str]]
    member_metrics: list[dict[str, float]]
    vote: list[str]
    vote_metrics: dict[str, float]
    mean_prob: list[str] | None
    mean_prob_metrics: dict[str, float] | None
    probs: list[list[list[float]]] | None = None

    def summary(self) -> dict[str, Any]:
        """JSON-ready: members, average, best, majority_vote, mean_probability (no per-example data)."""
        keys = list(self.member_metrics[0]) if self.member_metrics else []
        average = {k: sum(m[k] for m in self.member_metrics) / len(self.member_metrics) for k in keys}
        best = max(range(len(self.names)), key=lambda i: self.member_metrics[i][self.main_metric])
        return {
            "task": self.task, "k": len(self.names), "examples": len(self.vote), "main_metric": self.main_metric,
            "members": [{"prompt": n, "metrics": m} for n, m in zip(self.names, self.member_metrics, strict=True)],
            "average": average,
            "best": {"prompt": self.names[best], "metrics": self.member_metrics[best]},
            "majority_vote": self.vote_metrics,
            "mean_probability": self.mean_prob_metrics,
        }


def majority_vote(votes: Sequence[Sequence[int]], probs: Sequence[Sequence[Sequence[float]]] | None = None) -> list[int]:
    """Votes [K, N] (choice indices) -> the most voted choice per example [N].

    Ties go to the tied choice with the highest summed probability over members (`probs` [K, N, C]), else
    to the lowest index among the tied.
    """
    out = []
    for n in range(len(votes[0]) if votes else 0):
        counts = Counter(v[n] for v in votes)
        top = max(counts.values())
        tied = sorted(c for c, count in counts.items() if count == top)
        if len(tied) > 1 and probs is not None:
            tied.sort(key=lambda c: -sum(p[n][c] for p in probs))
        out.append(tied[0])
    return out


def majority_vote_text(predictions: Sequence[Sequence[str]]) -> list[str]:
    """Predicted strings [K, N] -> the most common string per example; ties go to the earliest member's."""
    out = []
    for n in range(len(predictions[0]) if predictions else 0):
        answers = [p[n] for p in predictions]
        counts = Counter(answers)
        top = max(counts.values())
        out.append(next(a for a in answers if counts[a] == top))
    return out


def mean_probability(probs: Sequence[Sequence[Sequence[float]]]) -> list[int]:
    """Probabilities [K, N, C] -> argmax over choices of the members' mean probability, per example [N]."""
    out = []
    for n in range(len(probs[0]) if probs else 0):
        mean = torch.tensor([p[n] for p in probs], dtype=torch.float64).mean(0)
        out.append(int(mean.argmax()))
    return out


def member_probs(
    fm: FrozenModel, inputs: Sequence[str], choices: Sequence[Sequence[str]], prompts: Sequence[SoftPrompt],
    batch_size: int = 16,
) -> list[list[list[float]]]:
    """Softmax over each input's choices, for every member: [K, N, C_n], one forward per `batch_size` inputs
    (each repeated K times; each member's prefix runs once for the whole call)."""
    k = len(prompts)
    prefixes = PrefixCache(fm)
    probs: list[list[list[float]]] = [[] for _ in range(k)]
    for start in range(0, len(inputs), batch_size):
        ins, chs = inputs[start: start + batch_size], choices[start: start + batch_size]
        # Rows per forward: causal models pack each input's choices into one row (the whole K-fold batch in
        # one forward); seq2seq models score one row per (input, choice).
        rows = len(ins) * k * (max(len(c) for c in chs) if fm.is_seq2seq else 1)
        scores = score_choices(fm, [t for t in ins for _ in range(k)], [list(c) for c in chs for _ in range(k)],
                               [p for _ in ins for p in prompts], batch_size=rows, prefixes=prefixes)
        for j, row in enumerate(scores):
            probs[j % k].append(torch.tensor(row, dtype=torch.float64).softmax(0).tolist())
    return probs


def run_ensemble(
    fm: FrozenModel, task: Task, examples: Sequence[Example], prompts: Sequence[SoftPrompt],
    batch_size: int = 16, names: Sequence[str] | None = None, mode: Mode | str | None = None,
) -> EnsembleResult:
    """Evaluate K prompts on `examples` in one batched pass per input batch, plus their ensembles."""
    if not prompts:
        raise TaskError("an ensemble needs at least one prompt")
    names = list(names) if names is not None else [f"{p.metadata.get('task', 'prompt')}-{i}" for i, p in enumerate(prompts)]
    mode = Mode(mode) if mode is not None else task.default_mode
    examples = list(examples)
    inputs = [ex.input_text for ex in examples]
    if mode is Mode.GENERATE:
        members = _generate_members(fm, inputs, prompts, batch_size)
        vote = majority_vote_text(members)
        metrics = [task.compute_metrics(m, examples) for m in members]
        return EnsembleResult(task.name, task.main_metric, names, members, metrics, vote,
                              task.compute_metrics(vote, examples), None, None)
    choices = [ex.choices or task.label_words or [] for ex in examples]
    if any(not c for c in choices):
        raise TaskError(f"task {task.name!r} has no label words or choices to rank")
    probs = member_probs(fm, inputs, choices, prompts, batch_size)
    votes = [[max(range(len(row)), key=row.__getitem__) for row in member] for member in probs]
    members = [[choices[n][v] for n, v in enumerate(member)] for member in votes]
    vote = [choices[n][c] for n, c in enumerate(majority_vote(votes, probs))]
    mean = [choices[n][c] for n, c in enumerate(mean_probability(probs))]
    return EnsembleResult(
        task.name, task.main_metric, names, members, [task.compute_metrics(m, examples) for m in members],
        vote, task.compute_metrics(vote, examples), mean, task.compute_metrics(mean, examples), probs,
    )


def _generate_members(fm: FrozenModel, inputs: Sequence[str], prompts: Sequence[SoftPrompt], batch_size: int) -> list[list[str]]:
    """Every member's greedy answer to every input: [K, N], the K prompts of an input in one batch."""
    k = len(prompts)
    out: list[list[str]] = [[] for _ in range(k)]
    texts = generate(fm, [t for t in inputs for _ in range(k)], [p for _ in inputs for p in prompts],
                     QA_MAX_NEW_TOKENS, batch_size * k, prefixes=PrefixCache(fm))
    for i, text in enumerate(texts):
        out[i % k].append(text)
    return out


def evaluate_ensemble(
    fm: FrozenModel, task: Task, examples: Sequence[Example], prompts: Sequence[SoftPrompt | str | Path],
    batch_size: int = 16, mode: Mode | str | None = None, predictions: str | Path | None = None,
) -> dict[str, Any]:
    """The CLI's entry point: prompts (objects or files) -> `EnsembleResult.summary()`; optionally writes
    per-example predictions (every member, the vote, the mean-probability pick) as JSON lines."""
    loaded = [p if isinstance(p, SoftPrompt) else SoftPrompt.load(p, model=fm) for p in prompts]
    names = [str(p) if not isinstance(p, SoftPrompt) else f"{p.metadata.get('task', 'prompt')}-{i}"
             for i, p in enumerate(prompts)]
    result = run_ensemble(fm, task, examples, loaded, batch_size, names=names, mode=mode)
    if predictions is not None:
        write_ensemble_predictions(predictions, examples, result)
    return result.summary()


def format_ensemble(summary: dict[str, Any]) -> str:
    """Plain text for the CLI: one line per member, then average, best, majority vote, mean probability."""
    def shown(metrics: dict[str, float] | None) -> str:
        return ", ".join(f"{k}={v:.4f}" for k, v in (metrics or {}).items()) or "n/a"

    head = f"{summary['task']} [{summary.get('split', '')}, k={summary['k']}, {summary['examples']} examples]"
    lines = [head] + [f"  member {m['prompt']}: {shown(m['metrics'])}" for m in summary["members"]]
    lines += [f"  average of members: {shown(summary['average'])}",
              f"  best member ({summary['best']['prompt']}): {shown(summary['best']['metrics'])}",
              f"  majority vote: {shown(summary['majority_vote'])}",
              f"  mean probability: {shown(summary['mean_probability'])}"]
    return "\n".join(lines)


def write_ensemble_predictions(path: str | Path, examples: Sequence[Example], result: EnsembleResult) -> None:
    """One JSON line per example: input, target, every member's prediction, the vote and mean-probability picks."""
    with open(path, "w", encoding="utf-8") as handle:
        for n, ex in enumerate(examples):
            row = {"input": ex.input_text, "target": ex.target_text,
                   "members": {name: preds[n] for name, preds in zip(result.names, result.members, strict=True)},
                   "majority_vote": result.vote[n],
                   "mean_probability": result.mean_prob[n] if result.mean_prob is not None else None}
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
