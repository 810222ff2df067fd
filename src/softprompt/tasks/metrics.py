"""The official metrics, on predicted target strings.

Classification predictions are label words (or the chosen option's text); they are compared with the gold
target after stripping surrounding whitespace, nothing more, so a generated "Positive" is not "positive"
(exact match, as in the paper). QA predictions are compared with the SQuAD normalisation: lowercase,
drop punctuation and the articles a/an/the, collapse whitespace; EM and F1 take the max over gold answers.
"""

from __future__ import annotations

import re
import string
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from softprompt.tasks.base import Example


def accuracy(predictions: Sequence[str], golds: Sequence[str]) -> float:
    """Fraction of exact (whitespace-stripped) matches."""
    if not golds:
        return 0.0
    return sum(p.strip() == g.strip() for p, g in zip(predictions, golds, strict=True)) / len(golds)


def f1_for(predictions: Sequence[str], golds: Sequence[str], positive: str) -> float:
    """F1 of one class: 2·tp / (2·tp + fp + fn); 0 when the class is never predicted nor gold."""
    tp = fp = fn = 0
    for p, g in zip(predictions, golds, strict=True):
        hit_p, hit_g = p.strip() == positive, g.strip() == positive
        tp += hit_p and hit_g
        fp += hit_p and not hit_g
        fn += hit_g and not hit_p
    return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0


def macro_f1(predictions: Sequence[str], golds: Sequence[str], labels: Sequence[str]) -> float:
    """Unweighted mean of per-class F1 over `labels` (CB: over its three classes)."""
    return sum(f1_for(predictions, golds, label) for label in labels) / len(labels) if labels else 0.0


PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD v1.1 normalisation: lowercase, no punctuation, no articles, single spaces."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in PUNCTUATION)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def exact_match(prediction: str, answers: Sequence[str]) -> float:
    """1.0 when the normalised prediction equals any normalised gold answer."""
    return float(any(normalize_answer(prediction) == normalize_answer(a) for a in answers))


def token_f1(prediction: str, answers: Sequence[str]) -> float:
    """Max over gold answers of the bag-of-tokens F1 between normalised strings."""
    best = 0.0
    pred_tokens = normalize_answer(prediction).split()
    for answer in answers:
        gold_tokens = normalize_answer(answer).split()
        if not pred_tokens or not gold_tokens:
            best = max(best, float(pred_tokens == gold_tokens))  # both empty counts as a match
            continue
        common = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
        if common:
            precision, recall = common / len(pred_tokens), common / len(gold_tokens)
            best = max(best, 2 * precision * recall / (precision + recall))
    return best


def multirc_scores(
    predictions: Sequence[str], golds: Sequence[str], groups: Sequence[str], positive: str
) -> dict[str, float]:
    """MultiRC: F1a = binary F1 over all answer options; EM = fraction of questions with every option right."""
    by_question: dict[str, bool] = defaultdict(lambda: True)
    for p, g, q in zip(predictions, golds, groups, strict=True):
        by_question[q] &= p.strip() == g.strip()
    em = sum(by_question.values()) / len(by_question) if by_question else 0.0
    return {"f1a": f1_for(predictions, golds, positive), "em": em}


MetricFn = Callable[[list[str], list["Example"], str | None], dict[str, float]]


def _labels_of(examples: Sequence[Example]) -> list[str]:
    seen: dict[str, None] = {}
    for ex in examples:
        for choice in ex.choices or [ex.target_text]:
            seen.setdefault(choice, None)
    return list(seen)


def _present(predictions: Sequence[str], examples: Sequence[Example]) -> list[str]:
    """Classes that occur as gold or prediction (sklearn's macro average, which SuperGLUE's CB uses)."""
    seen = {e.target_text for e in examples} | {p.strip() for p in predictions}
    return [label for label in _labels_of(examples) if label in seen] + sorted(seen - set(_labels_of(examples)))


def _gold_answers(ex: Example) -> list[str]:
    return ex.answers or [ex.target_text]


def _binary_positive(examples: Sequence[Example], positive: str | None) -> str:
    if positive is not None:
        return positive
    labels = _labels_of(examples)
    return labels[-1] if labels else ""


METRICS: dict[str, MetricFn] = {
    "accuracy": lambda p, ex, pos: {"accuracy": accuracy(p, [e.target_text for e in ex])},
    "f1": lambda p, ex, pos: {"f1": f1_for(p, [e.target_text for e in ex], _binary_positive(ex, pos))},
    "macro_f1": lambda p, ex, pos: {"macro_f1": macro_f1(p, [e.target_text for e in ex], _present(p, ex))},
    "multirc": lambda p, ex, pos: multirc_scores(
        p, [e.target_text for e in ex], [e.group or str(i) for i, e in enumerate(ex)], _binary_positive(ex, pos)
    ),
    "em": lambda p, ex, pos: {"em": _mean([exact_match(x, _gold_answers(e)) for x, e in zip(p, ex, strict=True)])},
    "token_f1": lambda p, ex, pos: {"f1": _mean([token_f1(x, _gold_answers(e)) for x, e in zip(p, ex, strict=True)])},
}
"""Metric name -> function of (predictions, examples, positive label word) returning result entries.
`f1` is binary F1 of the positive class; `token_f1` is SQuAD's F1 (reported under the key `f1`)."""

AVERAGED = {("accuracy", "macro_f1"), ("accuracy", "f1"), ("f1a", "em")}


def compute(
    names: Sequence[str], predictions: list[str], examples: list[Example], positive: str | None = None
) -> dict[str, float]:
    """Run the named metrics; where a task has two official metrics, also report their `average`
    (the GLUE/SuperGLUE leaderboard convention), which such tasks use as their main metric."""
    result: dict[str, float] = {}
    for name in names:
        if name not in METRICS:
            raise KeyError(f"unknown metric {name!r}; known: {', '.join(METRICS)}")
        result.update(METRICS[name](predictions, examples, positive))
    keys = tuple(result)
    if len(keys) == 2 and (keys in AVERAGED or keys[::-1] in AVERAGED):
        result["average"] = (result[keys[0]] + result[keys[1]]) / 2
    return result


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0
