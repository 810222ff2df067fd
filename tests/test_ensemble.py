"""Ensembles: vote arithmetic on constructed predictions; one batched pass equals K separate evaluations."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from tiny import tiny_causal, tiny_seq2seq

import softprompt.training.ensemble
import softprompt.training.loop
from softprompt.evaluation.ensemble import (
    evaluate_ensemble,
    majority_vote,
    majority_vote_text,
    mean_probability,
    run_ensemble,
)
from softprompt.evaluation.evaluate import evaluate
from softprompt.tasks import Mode, Task
from softprompt.tasks.base import choice_example
from softprompt.training.config import TrainConfig
from softprompt.training.ensemble import train_ensemble
from softprompt.training.init import make_prompt
from softprompt.training.rundir import RunDir

WORDS = ["the", "walk"]
TEXTS = ["sentence: the movie was great", "sentence: boring", "premise: a man is walking . hypothesis: someone moves",
         "sentence: it is a fine day for a walk in the park", "question: is the sky blue ?"]


def toy_task() -> Task:
    return Task("toy", WORDS, Mode.RANK, "accuracy", ("accuracy",), {}, lambda record: [])


def test_majority_vote_counts_and_breaks_ties_by_probability():
    votes = [[0, 1, 2, 0], [0, 1, 1, 1], [1, 1, 2, 2]]  # K=3 members, N=4 examples
    assert majority_vote(votes) == [0, 1, 2, 0]  # last: three-way tie -> lowest index without probs
    probs = [[[.9, .1, 0], [.2, .8, 0], [0, .1, .9], [.5, .3, .2]],
             [[.8, .2, 0], [.1, .9, 0], [0, .9, .1], [.1, .6, .3]],
             [[.4, .6, 0], [.3, .7, 0], [0, .2, .8], [.1, .1, .8]]]
    assert majority_vote(votes, probs) == [0, 1, 2, 2]  # tie: summed probs .7 / 1.0 / 1.3 -> choice 2
    assert mean_probability(probs) == [0, 1, 2, 2]
    assert majority_vote([[1, 0]]) == [1, 0]  # one member: its own votes
    assert majority_vote_text([["a", "b", "x"], ["b", "b", "y"], ["a", "c", "z"]]) == ["a", "b", "x"]


@pytest.mark.parametrize("make", [tiny_causal, tiny_seq2seq])
def test_one_pass_equals_k_separate_evaluations(make):
    fm = make()
    task = toy_task()
    examples = [choice_example(t, WORDS, i % 2) for i, t in enumerate(TEXTS)]
    prompts = [make_prompt(fm, 3 + 2 * j, "random-uniform", seed=j) for j in range(3)]
    result = run_ensemble(fm, task, examples, prompts, batch_size=2)
    for j, prompt in enumerate(prompts):
        alone = evaluate(fm, task, examples, prompt=prompt, batch_size=4, progress=False)
        assert result.members[j] == alone.predictions
        assert result.member_metrics[j] == alone.metrics
        want = torch.tensor(alone.scores, dtype=torch.float64).softmax(-1)
        torch.testing.assert_close(torch.tensor(result.probs[j], dtype=torch.float64), want, atol=1e-4, rtol=0)
    votes = [[WORDS.index(p) for p in member] for member in result.members]
    assert result.vote == [WORDS[c] for c in majority_vote(votes, result.probs)]
    summary = result.summary()
    assert summary["k"] == 3 and len(summary["members"]) == 3
    accs = [m["accuracy"] for m in result.member_metrics]
    assert summary["average"]["accuracy"] == pytest.approx(sum(accs) / 3)
    assert summary["best"]["metrics"]["accuracy"] == max(accs)
    assert set(summary) >= {"majority_vote", "mean_probability"}


def test_evaluate_ensemble_reads_files_and_refuses_foreign_prompts(tmp_path):
    fm = tiny_causal()
    paths = [make_prompt(fm, 4, "random-uniform", seed=j).save(tmp_path / f"p{j}.safetensors") for j in range(2)]
    examples = [choice_example(t, WORDS, 0) for t in TEXTS[:3]]
    summary = evaluate_ensemble(fm, toy_task(), examples, paths, batch_size=2)
    assert [m["prompt"] for m in summary["members"]] == [str(p) for p in paths]
    foreign = make_prompt(tiny_causal(seed=5), 4, "random-uniform").save(tmp_path / "foreign.safetensors")
    with pytest.raises(Exception, match="fingerprint"):
        evaluate_ensemble(fm, toy_task(), examples, [paths[0], foreign])


def test_train_ensemble_runs_k_seeds_into_member_dirs(tmp_path, monkeypatch):
    seen = []

    def fake_train(cfg, *, fm=None, resume=False, progress=True):
        seen.append(cfg)
        path = RunDir(cfg.out).best_prompt
        return softprompt.training.loop.TrainResult(0.5 + cfg.seed / 10, 10, 10, 1.0, path, Path(cfg.out))

    monkeypatch.setattr(softprompt.training.ensemble, "train", fake_train)
    cfg = TrainConfig(task="sst2", seed=3, steps=5)
    paths = train_ensemble(cfg, 3, tmp_path, inits=["class-labels", "sampled-vocab", "random-uniform"])
    assert [c.seed for c in seen] == [3, 4, 5]
    assert [c.init for c in seen] == ["class-labels", "sampled-vocab", "random-uniform"]
    assert [Path(c.out).name for c in seen] == ["member-0", "member-1", "member-2"]
    assert paths[2] == tmp_path / "member-2" / "prompt.safetensors" and cfg.seed == 3  # cfg itself untouched
    assert json.loads((tmp_path / "ensemble.json").read_text())["k"] == 3


def test_cli_ensemble_trains_k_members_and_eval_runs_them_as_an_ensemble(tmp_path):
    from typer.testing import CliRunner

    from softprompt.cli import app

    fm = tiny_causal(add_bos=False)
    fm.model.save_pretrained(tmp_path / "model")
    fm.tokenizer.save_pretrained(tmp_path / "model")
    task_file = Path(__file__).parent.parent / "examples" / "ticket_topic.yaml"
    common = ["--task-file", str(task_file), "--model", str(tmp_path / "model")]
    done = CliRunner().invoke(app, ["ensemble", *common, "--k", "2", "--steps", "2", "--batch-size", "4",
                                    "--prompt-length", "3", "--eval-limit", "6", "--max-minutes", "30",
                                    "--min-input-tokens", "2", "--out", str(tmp_path / "ens")])
    assert done.exit_code == 0, done.output
    member_cfg = yaml.safe_load(RunDir(tmp_path / "ens" / "member-1").config.read_text())
    assert member_cfg["max_minutes"] == 30 and member_cfg["min_input_tokens"] == 2  # the flags reach every member
    assert "majority vote" in done.output and (tmp_path / "ens" / "ensemble_eval.json").is_file()
    members = [str(RunDir(tmp_path / "ens" / f"member-{i}").best_prompt) for i in range(2)]
    assert all(Path(m).is_file() for m in members)
    done = CliRunner().invoke(app, ["eval", *common, "--prompt", members[0], "--prompt", members[1], "--limit", "6",
                                    "--json", "--predictions", str(tmp_path / "pred.jsonl")])
    assert done.exit_code == 0, done.output
    report = json.loads(done.stdout)
    assert report["k"] == 2 and [m["prompt"] for m in report["members"]] == members
    assert {"average", "best", "majority_vote", "mean_probability"} <= set(report)
    rows = [json.loads(line) for line in (tmp_path / "pred.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and set(rows[0]["members"]) == set(members)
