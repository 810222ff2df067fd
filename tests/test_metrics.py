"""Metrics against hand-computed cases."""

from __future__ import annotations

import pytest

from softprompt.tasks.base import Example
from softprompt.tasks.metrics import (
    accuracy,
    compute,
    exact_match,
    f1_for,
    macro_f1,
    multirc_scores,
    normalize_answer,
    token_f1,
)


def test_accuracy_strips_whitespace_but_nothing_else():
    assert accuracy([" True", "False", "true"], ["True", "False", "True"]) == pytest.approx(2 / 3)
    assert accuracy([], []) == 0.0


def test_binary_f1_by_hand():
    # tp = 2 (rows 0, 4), fp = 1 (row 1), fn = 1 (row 3): F1 = 2·2 / (2·2 + 1 + 1) = 4/6
    preds = ["eq", "eq", "no", "no", "eq"]
    golds = ["eq", "no", "no", "eq", "eq"]
    assert f1_for(preds, golds, "eq") == pytest.approx(4 / 6)
    assert f1_for(["no"], ["no"], "eq") == 0.0  # positive class absent everywhere


def test_macro_f1_cb_by_hand():
    golds = ["entailment", "entailment", "contradiction", "neutral", "neutral", "contradiction"]
    preds = ["entailment", "contradiction", "contradiction", "neutral", "entailment", "contradiction"]
    # entailment: tp1 fp1 fn1 -> 2/4 = .5 ; contradiction: tp2 fp1 fn0 -> 4/5 = .8 ; neutral: tp1 fp0 fn1 -> 2/3
    expected = (0.5 + 0.8 + 2 / 3) / 3
    assert macro_f1(preds, golds, ["entailment", "contradiction", "neutral"]) == pytest.approx(expected)


def test_multirc_f1a_and_question_em_by_hand():
    # Question q1: 3 options all right. Question q2: 2 options, one wrong.
    golds = ["True", "False", "True", "True", "False"]
    preds = ["True", "False", "True", "False", "False"]
    groups = ["q1", "q1", "q1", "q2", "q2"]
    scores = multirc_scores(preds, golds, groups, positive="True")
    # F1a over all options, positive True: tp 2, fp 0, fn 1 -> 4/5
    assert scores["f1a"] == pytest.approx(0.8)
    assert scores["em"] == pytest.approx(0.5)


@pytest.mark.parametrize(("text", "normal"), [
    ("The  Denver Broncos!", "denver broncos"),
    ("an apple, a day", "apple day"),
    ("Theatre's \"the\" end.", "theatres end"),  # "the" inside "theatre" stays
    ("  A\tB\nC ", "b c"),
])
def test_squad_normalisation(text, normal):
    assert normalize_answer(text) == normal


def test_squad_em_and_f1_take_the_max_over_answers():
    answers = ["Denver Broncos", "the Denver Broncos", "Broncos"]
    assert exact_match("denver broncos.", answers) == 1.0
    assert exact_match("Denver", answers) == 0.0
    # "Denver Broncos team" vs "denver broncos": P = 2/3, R = 1 -> F1 = 0.8; vs "broncos": P=1/3,R=1 -> .5
    assert token_f1("Denver Broncos team", answers) == pytest.approx(0.8)
    assert token_f1("", ["the"]) == 1.0  # both normalise to empty: a match, as in the official script
    assert token_f1("nothing here", answers) == 0.0


def _ex(target, choices=None, answers=None, group=None):
    return Example("x", target, choices=choices, answers=answers, group=group)


def test_compute_adds_the_average_of_a_standard_pair():
    words = ["not_equivalent", "equivalent"]
    examples = [_ex("equivalent", words), _ex("not_equivalent", words), _ex("equivalent", words)]
    preds = ["equivalent", "equivalent", "not_equivalent"]
    out = compute(("accuracy", "f1"), preds, examples, positive="equivalent")
    # accuracy 1/3; F1(equivalent): tp1 fp1 fn1 -> 0.5
    assert out == pytest.approx({"accuracy": 1 / 3, "f1": 0.5, "average": (1 / 3 + 0.5) / 2})


def test_compute_record_style_max_over_answers():
    examples = [_ex("Benazir Bhutto", answers=["Benazir Bhutto", "Bhutto"]), _ex("CNN", answers=["CNN"])]
    out = compute(("em", "token_f1"), ["Bhutto", "Islamabad"], examples)
    assert out == pytest.approx({"em": 0.5, "f1": 0.5})


def test_unknown_metric_is_named():
    with pytest.raises(KeyError, match="bleu"):
        compute(("bleu",), [], [])


def test_macro_f1_averages_over_classes_that_occur():
    """sklearn's macro average (SuperGLUE CB): a class neither gold nor predicted does not count as F1 = 0."""
    words = ["entailment", "contradiction", "neutral"]
    examples = [_ex("entailment", words), _ex("contradiction", words)]
    assert compute(("macro_f1",), ["entailment", "contradiction"], examples) == {"macro_f1": 1.0}
