"""Evaluation on a tiny random Llama: rank and generate modes, prompt design, user tasks, the CLI's errors."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch
from tiny import tiny_causal

from softprompt.evaluation.baselines import design_inputs, design_prefix, draw_shots
from softprompt.evaluation.evaluate import evaluate, write_predictions
from softprompt.scoring import score_choices
from softprompt.tasks import Example, Mode, Task, TaskError, load_task_file
from softprompt.tasks.base import choice_example

WORDS = ["the", "walk"]  # one token each in the tiny tokenizer (" the", " walk")


def toy_task(label_words=WORDS, mode=Mode.RANK, metrics=("accuracy",)) -> Task:
    return Task("toy", label_words, mode, metrics[0], metrics, {}, lambda record: [])


def prefers(fm, word: str):
    """Make the LM head ignore the input and put almost all probability on the token of `word`."""
    (token,) = fm.tokenizer(" " + word, add_special_tokens=False).input_ids
    head = torch.nn.Linear(fm.hidden_size, fm.vocab_size, bias=True)
    with torch.no_grad():
        head.weight.zero_()
        head.bias.fill_(-10.0)
        head.bias[token] = 10.0
    fm.model.lm_head = head.to(fm.dtype)
    return fm


def flat(rows):
    return [x for row in rows for x in row]


@pytest.fixture()
def fm_the():
    return prefers(tiny_causal(), "the")


TEXTS = ["sentence: the movie was great", "sentence: boring", "premise: a man is walking . hypothesis: someone moves",
         "sentence: it is a fine day for a walk in the park"]


def test_rank_follows_the_model_preference(fm_the):
    gold_the = [choice_example(t, WORDS, 0) for t in TEXTS]
    result = evaluate(fm_the, toy_task(), gold_the, progress=False)
    assert result.metrics == {"accuracy": 1.0} and result.predictions == ["the"] * 4
    assert result.counts == {"examples": 4} and result.answers == {"the": 4}  # one answer for all: a collapse
    assert all(row[0] > row[1] + 5 for row in result.scores)
    gold_walk = [choice_example(t, WORDS, 1) for t in TEXTS]
    assert evaluate(fm_the, toy_task(), gold_walk, progress=False).metrics == {"accuracy": 0.0}


def test_rank_per_example_choices(fm_the):
    """COPA/ReCoRD style: each example ranks its own options, in any order."""
    examples = [choice_example(TEXTS[0], ["walk", "the"], 1), choice_example(TEXTS[1], ["the", "walk", "park"], 0)]
    result = evaluate(fm_the, toy_task(label_words=None), examples, progress=False)
    assert result.predictions == ["the", "the"] and result.metrics["accuracy"] == 1.0
    assert result.answers == {"choice 1": 1, "choice 2": 1}  # per-example options count by position


def test_rank_predictions_are_the_argmax_of_unbatched_scores(fm):
    examples = [choice_example(t, WORDS, i % 2) for i, t in enumerate(TEXTS)]
    result = evaluate(fm, toy_task(), examples, batch_size=3, progress=False)
    alone = [score_choices(fm, [t], [WORDS], batch_size=1)[0] for t in TEXTS]
    assert flat(result.scores) == pytest.approx(flat(alone), abs=1e-4)  # batching and padding change nothing
    assert result.predictions == [WORDS[max(range(2), key=row.__getitem__)] for row in alone]


def test_generate_exact_match_and_no_label_count(fm_the):
    examples = [choice_example(t, WORDS, 0) for t in TEXTS]
    one = evaluate(fm_the, toy_task(), examples, mode="generate", max_new_tokens=1, progress=False)
    assert one.predictions == ["the"] * 4
    assert one.metrics == {"accuracy": 1.0} and one.counts == {"examples": 4, "no_label": 0}
    # By default it may write a few tokens past the longest label word: "the the the" is no label at all.
    longer = evaluate(fm_the, toy_task(), examples, mode=Mode.GENERATE, progress=False)
    assert all(p.startswith("the the") for p in longer.predictions)
    assert longer.metrics == {"accuracy": 0.0} and longer.counts["no_label"] == 4
    assert longer.answers == {"(other)": 4}


def test_generate_free_text_is_scored_like_squad(fm_the):
    qa = toy_task(label_words=None, mode=Mode.GENERATE, metrics=("em", "token_f1"))
    examples = [Example("context: x question: y", "The", answers=["The", "walk"]),
                Example("context: x question: z", "walk", answers=["walk"])]
    result = evaluate(fm_the, qa, examples, max_new_tokens=1, progress=False)
    assert result.metrics == {"em": 0.5, "f1": 0.5} and "no_label" not in result.counts
    assert result.answers is None  # free text: answers do not repeat


def test_rank_needs_choices(fm):
    with pytest.raises(TaskError, match="use --mode generate"):
        evaluate(fm, toy_task(label_words=None), [Example("a", "b")], mode="rank", progress=False)


def test_prompt_design_is_instruction_then_shots(fm):
    shots = [choice_example("sentence: great", ["negative", "positive"], 1),
             choice_example("sentence: awful", ["negative", "positive"], 0)]
    assert design_prefix("Say if it is positive.", shots) == (
        "Say if it is positive.\n\nsentence: great\nanswer: positive\n\nsentence: awful\nanswer: negative\n\n")
    assert design_inputs(["sentence: ok"]) == ["sentence: ok"]  # zero-shot: the plain task input
    assert design_inputs(["sentence: ok"], "Say.") == ["Say.\n\nsentence: ok\nanswer:"]
    examples = [choice_example(t, WORDS, 0) for t in TEXTS[:2]]
    result = evaluate(fm, toy_task(), examples, instruction="Answer.", shots=shots, progress=False)
    expected = score_choices(fm, design_inputs(TEXTS[:2], "Answer.", shots), [WORDS, WORDS])
    assert flat(result.scores) == pytest.approx(flat(expected), abs=1e-4)
    plain = evaluate(fm, toy_task(), examples, progress=False)
    assert flat(plain.scores) != pytest.approx(flat(result.scores), abs=1e-4)


def test_draw_shots_is_seeded(tmp_path):
    (tmp_path / "train.jsonl").write_text("".join(json.dumps({"t": f"s{i}", "y": i % 2}) + "\n" for i in range(30)))
    (tmp_path / "task.yaml").write_text(
        "name: s\ndata: {train: train.jsonl}\ninput_template: 'x: {t}'\nlabel_field: y\nlabels: {0: no, 1: yes}\n")
    task = load_task_file(tmp_path / "task.yaml")
    first = draw_shots(task, 4, seed=1)
    assert len(first) == 4 and first == draw_shots(task, 4, seed=1)
    assert first != draw_shots(task, 4, seed=2)
    with pytest.raises(TaskError, match="only 30"):
        draw_shots(task, 31)


def test_user_task_end_to_end(tmp_path, fm_the):
    """A dataset that is not built in: the test writes the files, the YAML, evaluates, writes predictions."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "dev.csv").write_text('label,text\n1,"a walk, in the park"\n1,the movie\n0,boring\n1,great\n')
    task_file = tmp_path / "toy.yaml"
    task_file.write_text(textwrap.dedent("""
        name: toy_user
        data:
          validation: data/dev.csv
        input_template: "text: {text}"
        label_field: label
        labels: {1: the, 0: walk}
        metrics: [accuracy, macro_f1]
    """))
    task = load_task_file(task_file)
    examples = task.examples("validation")
    assert examples[0].input_text == "text: a walk, in the park"
    result = evaluate(fm_the, task, examples, progress=False)
    # the model always says "the": right on the three `1` rows; macro-F1 = (F1(the)=6/7 + F1(walk)=0) / 2
    assert result.metrics == pytest.approx({"accuracy": 0.75, "macro_f1": 3 / 7, "average": (0.75 + 3 / 7) / 2})
    out = tmp_path / "pred.jsonl"
    write_predictions(out, examples, result)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["correct"] for r in rows] == [True, True, False, True]
    assert set(rows[0]["scores"]) == {"the", "walk"}


@pytest.mark.parametrize(("args", "pattern"), [
    (["--task", "sst3"], "unknown task 'sst3'. Did you mean 'sst2'?"),
    (["--task-file", "/nonexistent/t.yaml"], "cannot read task file"),
    (["--task", "rte", "--data-dir", "/nonexistent"], "cannot find RTE/val.jsonl"),
    (["--task", "rte", "--mode", "beam"], "--mode 'beam'"),
])
def test_cli_errors_are_one_line_exit_2(args, pattern, monkeypatch):
    monkeypatch.setenv("SOFTPROMPT_NO_HUB", "1")
    proc = subprocess.run([sys.executable, "-c", "from softprompt.cli import main; main()", "eval", *args],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert pattern in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
