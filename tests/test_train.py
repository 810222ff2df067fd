"""The training loop on a tiny model: learning, accumulation equivalence, SIGKILL + resume, NaN stop."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from tiny import TINY_DATA, tiny_causal

from softprompt.evaluation.evaluate import generation_caveat
from softprompt.model.prompt import SoftPrompt
from softprompt.scoring import Encoded
from softprompt.tasks.base import Mode, Task, choice_example
from softprompt.training.config import ConfigError, TrainConfig
from softprompt.training.loop import Row, TrainingError, encode_rows, step_loss, train
from softprompt.training.rundir import RunDir


def config(tmp_path: Path, **overrides) -> TrainConfig:
    base = dict(task="sst2", prompt_length=4, batch_size=8, steps=6, eval_every=3, eval_limit=16,
                train_limit=64, data_dir=str(TINY_DATA), out=str(tmp_path / "run"), init="random-uniform", seed=1)
    base.update(overrides)
    return TrainConfig(**base)


def test_training_lowers_the_loss_and_writes_its_files(tmp_path):
    fm = tiny_causal()
    result = train(config(tmp_path, steps=12, lr=0.3, train_limit=16, batch_size=8), fm=fm, progress=False)
    out = RunDir(result.out_dir)
    # The file names are the run folder's contract with users (README, --resume): spelled out here on purpose.
    assert {"prompt.safetensors", "last.safetensors", "init.safetensors", "metrics.jsonl", "config.yaml",
            "summary.json"} <= {p.name for p in out.root.iterdir()}
    assert {out.best_prompt, out.last_prompt, out.init_prompt, out.metrics, out.config, out.summary} <= set(out.root.iterdir())
    init = SoftPrompt.load(out.init_prompt, model=fm)
    assert not torch.equal(init.embeddings, SoftPrompt.load(out.last_prompt).embeddings)  # it trained
    log = [json.loads(line) for line in out.metrics.read_text().splitlines()]
    assert [r["step"] for r in log] == list(range(1, 13))
    assert sum(r["loss"] for r in log[-3:]) < sum(r["loss"] for r in log[:3])  # 2 epochs over 16 examples
    assert "eval" in log[2] and "accuracy" in log[2]["eval"] and sum(log[2]["answers"].values()) == 16
    best = SoftPrompt.load(out.best_prompt, model=fm)
    assert best.metadata["label_words"] and best.metadata["train_config"]["task"] == "sst2"
    summary = json.loads(out.summary.read_text())
    assert summary["steps_done"] == 12 and summary["trainable_parameters"] == 4 * fm.hidden_size


def test_train_on_injected_examples_needs_no_benchmark_files(tmp_path):
    """A task and its examples passed in: no data dir, no task registry lookup; 3 steps on the tiny model."""
    texts = ["the movie was great", "a terrible film , boring", "what a wonderful cast", "dull and far too long"]
    examples = [choice_example(t, ["the", "a"], i % 2) for i, t in enumerate(texts * 2)]
    task = Task(name="tiny-choice", label_words=["the", "a"], default_mode=Mode.RANK, main_metric="accuracy",
                metric_names=("accuracy",), files={}, formatter=lambda record: [])  # no files to read
    cfg = TrainConfig(task="tiny-choice", prompt_length=4, batch_size=4, steps=3, eval_every=3, lr=0.3,
                      out=str(tmp_path / "run"), init="random-uniform", seed=1, data_dir=str(tmp_path / "no-data"))
    seen = []
    fm = tiny_causal()
    result = train(cfg, fm=fm, progress=False, task=task, train_examples=examples, eval_examples=examples[:4],
                   on_step=lambda state, prompt: seen.append((state.step, prompt.embeddings.detach().clone())))
    assert [step for step, _ in seen] == [1, 2, 3]
    assert not torch.equal(seen[0][1], seen[2][1])  # the prompt as trained so far, not the initial one
    assert result.steps_done == 3 and result.best_step == 3
    assert {"prompt.safetensors", "last.safetensors", "init.safetensors", "metrics.jsonl", "config.yaml",
            "summary.json", "checkpoint.safetensors"} <= {p.name for p in result.out_dir.iterdir()}
    init = SoftPrompt.load(RunDir(result.out_dir).init_prompt, model=fm).embeddings
    assert not torch.equal(init, SoftPrompt.load(RunDir(result.out_dir).last_prompt).embeddings)  # it trained
    summary = json.loads(RunDir(result.out_dir).summary.read_text())
    assert summary["task"] == "tiny-choice" and summary["train_examples"] == 8


def test_gradient_accumulation_gives_the_same_prompt(tmp_path):
    one = train(config(tmp_path / "a", grad_accum=1), fm=tiny_causal(), progress=False)
    four = train(config(tmp_path / "b", grad_accum=4), fm=tiny_causal(), progress=False)
    a = SoftPrompt.load(RunDir(one.out_dir).last_prompt).embeddings
    b = SoftPrompt.load(RunDir(four.out_dir).last_prompt).embeddings
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_rank_loss_trains(tmp_path):
    result = train(config(tmp_path, loss="rank", optimizer="adamw", lr=0.05), fm=tiny_causal(), progress=False)
    assert result.steps_done == 6 and result.best_metric is not None


def test_one_token_choices_share_one_row_and_the_rank_loss_is_unchanged():
    fm = tiny_causal()
    cfg = TrainConfig(task="sst2", loss="rank", prompt_length=3)
    texts = ["the movie was great", "a terrible film , boring", "the sky is blue on a clear day"]
    rows = encode_rows(fm, [choice_example(t, ["the", "a"], i % 2) for i, t in enumerate(texts)], cfg, eos=True)
    assert all(len(r.choices) == 1 and r.choices[0].read_ids is not None for r in rows)  # " the", " a": 1 token
    per_choice = [Row(r.gold, [Encoded(r.gold.input_ids, [t]) for t in r.choices[0].read_ids], r.label) for r in rows]
    prompt = SoftPrompt(torch.randn(3, 32))
    merged_loss = step_loss(fm, rows, prompt, cfg, norm=3.0)
    (merged_grad,) = torch.autograd.grad(merged_loss, prompt.embeddings)
    loss = step_loss(fm, per_choice, prompt, cfg, norm=3.0)
    (grad,) = torch.autograd.grad(loss, prompt.embeddings)
    torch.testing.assert_close(merged_loss, loss)
    torch.testing.assert_close(merged_grad, grad)
    # A multi-token choice keeps one row per choice.
    (long,) = encode_rows(fm, [choice_example("the movie", ["the", "wonderful actors"], 1)], cfg, eos=True)
    assert len(long.choices) == 2 and all(c.read_ids is None for c in long.choices)


def test_targets_end_in_eos_unless_target_eos_is_off():
    fm = tiny_causal()
    example = [choice_example("the movie", ["the", "wonderful actors"], 1)]
    (with_eos,) = encode_rows(fm, example, TrainConfig(task="sst2"), eos=True)
    (without,) = encode_rows(fm, example, TrainConfig(task="sst2"), eos=False)
    assert with_eos.gold.target_ids == [*without.gold.target_ids, fm.tokenizer.eos_token_id]
    assert without.gold.target_ids and fm.tokenizer.eos_token_id not in without.gold.target_ids


def test_the_default_recipe_drops_the_eos_only_where_answers_are_ranked_and_the_paper_never_does():
    default, paper = TrainConfig(task="sst2"), TrainConfig(task="sst2", recipe="paper")
    assert (default.ends_targets_with_eos(ranked=True), default.ends_targets_with_eos(ranked=False)) == (False, True)
    assert paper.ends_targets_with_eos(ranked=True) and paper.ends_targets_with_eos(ranked=False)
    for given in (True, False):  # a given value wins under either recipe
        for recipe in ("default", "paper"):
            cfg = TrainConfig(task="sst2", recipe=recipe, target_eos=given)
            assert cfg.ends_targets_with_eos(ranked=True) is given and cfg.ends_targets_with_eos(ranked=False) is given
    assert (default.batch_size, paper.batch_size, TrainConfig(task="sst2", batch_size=8).batch_size) == (16, 32, 8)


@pytest.mark.parametrize("recipe, eos", [("default", False), ("paper", True)])
def test_a_classification_run_trains_with_its_recipes_eos_and_its_summary_says_so(tmp_path, monkeypatch, recipe, eos):
    import softprompt.training.rows as rows_module

    fm = tiny_causal()
    golds: list[list[int]] = []
    real = rows_module.encode_pair

    def spy(*args, **kwargs):
        enc = real(*args, **kwargs)
        golds.append(enc.target_ids)
        return enc

    monkeypatch.setattr(rows_module, "encode_pair", spy)
    result = train(config(tmp_path, steps=1, eval_every=0, train_limit=8, batch_size=4, recipe=recipe), fm=fm,
                   progress=False)
    assert len(golds) == 8 and all((ids[-1] == fm.tokenizer.eos_token_id) is eos for ids in golds)
    assert json.loads(RunDir(result.out_dir).summary.read_text())["recipe"]["target_eos"] is eos
    # the prompt file records it too, and generate-mode evaluation explains the missing stop
    prompt = SoftPrompt.load(result.prompt_path, model=fm)
    assert prompt.metadata["targets_end_with_eos"] is eos
    assert (generation_caveat(prompt) is None) is eos and generation_caveat(None) is None


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_checkpoint(tmp_path):
    fm = tiny_causal()
    good = train(config(tmp_path, steps=2, eval_every=2), fm=fm, progress=False)
    before = SoftPrompt.load(RunDir(good.out_dir).last_prompt).embeddings
    with pytest.raises(TrainingError, match="(loss became (nan|inf)|produced NaN/inf weights)"):
        train(config(tmp_path, steps=4, eval_every=2, lr=1e38), fm=fm, resume=True, progress=False)
    after = SoftPrompt.load(RunDir(good.out_dir).last_prompt).embeddings
    assert torch.equal(before, after)  # the step-2 checkpoint and prompt are untouched


def test_bad_configs_are_refused_with_the_values():
    with pytest.raises(ConfigError, match="give a task"):
        TrainConfig()
    with pytest.raises(ConfigError, match="batch_size 10 is not divisible by grad_accum 4"):
        TrainConfig(task="sst2", batch_size=10, grad_accum=4)
    with pytest.raises(ValueError, match="'sgd' is not a valid Optimizer"):
        TrainConfig(task="sst2", optimizer="sgd")
    # Values the optimizer, the data loader or the clock would otherwise trip over later (a traceback).
    for bad, message in [({"lr": -1.0}, "lr must be > 0, got -1.0"), ({"lr": 0.0}, "lr must be > 0"),
                         ({"max_minutes": -1}, "max_minutes must be >= 0"), ({"eval_limit": 0}, "eval_limit must be >= 1"),
                         ({"patience": 0}, "patience must be >= 1"), ({"eval_batch_size": 0}, "eval_batch_size must be >= 1"),
                         ({"weight_decay": -0.1}, "must be >= 0")]:
        with pytest.raises(ConfigError, match=message):
            TrainConfig(task="sst2", **bad)
    TrainConfig(task="sst2", lr=None, eval_limit=None, patience=None, max_minutes=None)  # unset: off / default


KILL_SCRIPT = """
import os, signal, sys
sys.path.insert(0, {tests!r})
from tiny import tiny_causal
from softprompt.training.config import TrainConfig
from softprompt.training.loop import train
def kill_at(step):
    def on_step(state, prompt):
        if state.step == step:
            os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, no final checkpoint: as a crash or OOM kill
    return on_step if step else None
cfg = TrainConfig.from_sources({config!r})
train(cfg, fm=tiny_causal(), resume={resume}, progress=False, on_step=kill_at({kill_at}))
"""


@pytest.mark.integration  # two training subprocesses, one killed with SIGKILL
@pytest.mark.parametrize("recipe", [{}, {"optimizer": "adamw", "lr": 0.05, "lr_schedule": "linear"},
                                    {"optimizer": "adamw", "lr": 0.05, "reparam": "residual-mlp", "reparam_hidden": 8}],
                         ids=["adafactor-constant", "adamw-linear", "adamw-residual-mlp"])
def test_sigkill_then_resume_ends_with_the_same_prompt(tmp_path, recipe):
    """Kill -9 after step 5 (last checkpoint: step 4), resume, and compare with an uninterrupted run.

    Tolerance: exact to 1e-6; the resumed run replays the same batches from the same optimizer state (and the
    same point of the lr schedule, which is a function of the step).
    """
    # threads=1 in both processes: pytest's own thread count may have been changed by an earlier test's train(),
    # and a different count sums the matmuls in another order (1.5e-6 apart on the tiny data).
    straight = train(config(tmp_path / "straight", steps=10, checkpoint_every=2, threads=1, **recipe), fm=tiny_causal(),
                     progress=False)
    cfg = config(tmp_path / "killed", steps=10, checkpoint_every=2, threads=1, **recipe)
    Path(cfg.out).mkdir(parents=True)
    cfg.save(RunDir(cfg.out).config)
    script = dict(tests=str(Path(__file__).parent), config=str(RunDir(cfg.out).config))
    killed = subprocess.run([sys.executable, "-c", KILL_SCRIPT.format(**script, resume=False, kill_at=5)],
                            capture_output=True)
    assert killed.returncode == -9, killed.stderr.decode()[-2000:]
    resumed = subprocess.run([sys.executable, "-c", KILL_SCRIPT.format(**script, resume=True, kill_at=0)],
                             capture_output=True)
    assert resumed.returncode == 0, resumed.stderr.decode()[-2000:]
    a = SoftPrompt.load(RunDir(straight.out_dir).last_prompt).embeddings
    b = SoftPrompt.load(RunDir(cfg.out).last_prompt).embeddings
    torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    steps = [json.loads(line)["step"] for line in RunDir(cfg.out).metrics.read_text().splitlines()]
    assert steps == list(range(1, 11))  # the step logged after the checkpoint was redone, not duplicated


def test_a_fresh_start_in_a_used_folder_starts_a_fresh_log(tmp_path):
    train(config(tmp_path, steps=4), fm=tiny_causal(), progress=False)
    result = train(config(tmp_path, steps=3), fm=tiny_causal(), progress=False)
    log = [json.loads(line)["step"] for line in RunDir(result.out_dir).metrics.read_text().splitlines()]
    assert log == [1, 2, 3]


def test_linear_schedule_decays_the_lr_to_zero_at_the_last_step(tmp_path):
    result = train(config(tmp_path, optimizer="adamw", lr=0.06, lr_schedule="linear"), fm=tiny_causal(), progress=False)
    log = [json.loads(line) for line in RunDir(result.out_dir).metrics.read_text().splitlines()]
    assert [r["lr"] for r in log] == pytest.approx([0.06 * (1 - k / 6) for k in range(6)])


def test_time_budget_stops_after_evaluating_and_checkpointing(tmp_path):
    result = train(config(tmp_path, steps=50, eval_every=10, max_minutes=0.0), fm=tiny_causal(), progress=False)
    assert result.steps_done == 1 and result.best_step == 1  # evaluated at the stop, not lost
    assert RunDir(result.out_dir).checkpoint.is_file() and RunDir(result.out_dir).best_prompt.is_file()
    summary = json.loads(RunDir(result.out_dir).summary.read_text())
    assert summary["stopped_early"] is True and summary["stopped_by"] == result.stopped_by == "max_minutes"


def test_a_time_bound_linear_schedule_decays_by_the_clock_and_on_step_time_is_not_charged(tmp_path):
    # A budget far shorter than one step: the clock is past it at the first update, so its lr is already 0.
    result = train(config(tmp_path, steps=6, lr_schedule="linear", max_minutes=1e-6), fm=tiny_causal(), progress=False)
    log = [json.loads(line) for line in RunDir(result.out_dir).metrics.read_text().splitlines()]
    assert result.stopped_by == "max_minutes" and [r["lr"] for r in log] == [0.0]
    # A caller that spends 0.4 s per step (its own evaluations) inside a 1-second budget: not charged, so
    # the run ends at its steps, on the step schedule (the clock stays far behind it).
    slow = lambda state, prompt: time.sleep(0.4)  # noqa: E731
    result = train(config(tmp_path / "b", steps=4, lr=0.04, lr_schedule="linear", max_minutes=1 / 60), fm=tiny_causal(),
                   progress=False, on_step=slow)
    log = [json.loads(line) for line in RunDir(result.out_dir).metrics.read_text().splitlines()]
    assert result.stopped_by == "steps" and [r["lr"] for r in log] == pytest.approx([0.04, 0.03, 0.02, 0.01], rel=0.2)


def test_the_summary_says_which_limit_stopped_the_run_and_the_recipe(tmp_path):
    done = train(config(tmp_path / "a", steps=2, eval_every=2), fm=tiny_causal(), progress=False)
    summary = json.loads(RunDir(done.out_dir).summary.read_text())
    assert (summary["stopped_by"], summary["stopped_early"]) == ("steps", False)
    assert summary["recipe"]["recipe"] == "default" and summary["recipe"]["optimizer"] == "adamw"
    patient = train(config(tmp_path / "b", steps=50, eval_every=1, patience=1, lr=1e-30), fm=tiny_causal(),
                    progress=False)  # lr ~0: no later eval improves on the first
    assert patient.stopped_by == "patience" and patient.steps_done == 2


def test_the_bar_shows_which_limit_stops_a_time_capped_run(tmp_path):
    from softprompt.training.loop import _budget
    from softprompt.training.state import TrainState

    class Run:  # what _budget reads
        def __init__(self, steps, minutes, spent):
            self.cfg = TrainConfig(task="sst2", steps=steps, max_minutes=minutes)
            self.started = time.time() - spent

    assert _budget(Run(1000, 10.0, 60.0), TrainState(step=10)) == {"stops": "max-minutes in 9:00"}  # 100 min of steps
    assert _budget(Run(20, 10.0, 60.0), TrainState(step=10))["stops"].startswith("steps in 1:0")  # 10 more of 6 s
    assert _budget(Run(20, None, 60.0), TrainState(step=10)) == {}


def test_a_resumed_run_counts_the_time_spent_before_its_checkpoint(tmp_path):
    """--max-minutes bounds the whole run, not each process: a checkpoint that records 40 minutes spent, resumed
    with a 30-minute budget, stops after one step (10 more tiny-model steps would take well under a second)."""
    from softprompt.training.checkpoint import load_checkpoint, save_checkpoint
    from softprompt.training.optimizers import make_optimizer

    fm = tiny_causal()
    first = train(config(tmp_path, steps=3, eval_every=3), fm=fm, progress=False)
    path = RunDir(first.out_dir).checkpoint
    prompt = {"prompt": SoftPrompt.load(RunDir(first.out_dir).last_prompt).embeddings.detach().clone().requires_grad_(True)}
    optimizer = make_optimizer(list(prompt.values()), config(tmp_path))
    counters = load_checkpoint(path, prompt, optimizer)
    assert 0 < counters["seconds"] < 600
    save_checkpoint(path, prompt, optimizer, {**counters, "seconds": 40 * 60.0})
    resumed = train(config(tmp_path, steps=13, eval_every=3, max_minutes=30.0), fm=fm, resume=True, progress=False)
    assert resumed.steps_done == 4  # one step, then out of time
    assert json.loads(RunDir(resumed.out_dir).summary.read_text())["wall_seconds"] >= 40 * 60


def test_min_input_tokens_trains_on_the_longer_examples_only(tmp_path):
    from softprompt.scoring import encode_pair
    from softprompt.tasks import get_task
    from softprompt.training.loop import encode_rows

    fm = tiny_causal()
    cfg = config(tmp_path, steps=1, eval_every=0, train_limit=64, min_input_tokens=40)
    examples = get_task("sst2").examples("train", TINY_DATA)
    keep = torch.randperm(len(examples), generator=torch.Generator().manual_seed(cfg.seed))[:64].tolist()
    long = sum(len(encode_pair(fm, examples[i].input_text, "x").input_ids) >= 40 for i in keep)
    assert 8 <= long < 64 and len(encode_rows(fm, [examples[i] for i in keep], cfg, eos=False)) == 64
    result = train(cfg, fm=fm, progress=False)
    assert json.loads(RunDir(result.out_dir).summary.read_text())["train_examples"] == long
    with pytest.raises(TrainingError, match=r"have >= 100000 input tokens \(batch size 8\): lower --min-input-tokens"):
        train(config(tmp_path, steps=1, min_input_tokens=100_000), fm=fm, progress=False)


def test_resume_goes_on_past_a_torn_last_log_line(tmp_path):
    """A kill while a log line was being written leaves half of it (issue 21: JSONDecodeError on --resume)."""
    first = train(config(tmp_path, steps=4, eval_every=2), fm=tiny_causal(), progress=False)
    with RunDir(first.out_dir).metrics.open("a") as handle:
        handle.write('{"step": 16, "loss": 0.5')
    resumed = train(config(tmp_path, steps=6, eval_every=2), fm=tiny_causal(), resume=True, progress=False)
    steps = [json.loads(line)["step"] for line in RunDir(resumed.out_dir).metrics.read_text().splitlines()]
    assert resumed.steps_done == 6 and steps == [1, 2, 3, 4, 5, 6]


def test_resume_with_a_malformed_log_line_is_refused_and_writes_nothing(tmp_path):
    from softprompt.errors import UsageError

    out = RunDir(train(config(tmp_path, steps=4, eval_every=2), fm=tiny_causal(), progress=False).out_dir)
    lines = out.metrics.read_text().splitlines()
    out.metrics.write_text("\n".join([lines[0], "{oops", *lines[2:]]) + "\n")
    before = {p: p.read_bytes() for p in (out.metrics, out.config, out.summary, out.checkpoint)}
    with pytest.raises(UsageError, match=r"metrics\.jsonl line 2 is not a step record"):
        train(config(tmp_path, steps=6, eval_every=2), fm=tiny_causal(), resume=True, progress=False)
    assert {p: p.read_bytes() for p in before} == before


@pytest.mark.parametrize(("change", "named"), [
    ({"task": "rte"}, "task 'sst2' -> 'rte'"),
    ({"prompt_length": 8, "seed": 2}, "prompt_length 4 -> 8, seed 1 -> 2"),
    ({"weight_decay": 0.1}, "weight_decay 1e-05 -> 0.1"),
])
def test_resume_refuses_a_changed_config_naming_the_fields_and_leaves_the_run_alone(tmp_path, change, named):
    out = RunDir(train(config(tmp_path, steps=2, eval_every=2), fm=tiny_causal(), progress=False).out_dir)
    before = {p: p.read_bytes() for p in (out.config, out.summary, out.checkpoint, out.metrics)}
    with pytest.raises(ConfigError, match=rf"--resume .*run cannot change {named}: .*Only --lr, --steps and "
                                          "--max-minutes may change on resume"):
        train(config(tmp_path, steps=4, eval_every=2, **change), fm=tiny_causal(), resume=True, progress=False)
    assert {p: p.read_bytes() for p in before} == before


def test_resume_may_change_lr_steps_and_max_minutes(tmp_path):
    train(config(tmp_path, steps=2, eval_every=2), fm=tiny_causal(), progress=False)
    result = train(config(tmp_path, steps=4, eval_every=2, lr=0.1, max_minutes=60.0), fm=tiny_causal(), resume=True,
                   progress=False)
    assert result.steps_done == 4
    saved = TrainConfig.from_sources(RunDir(result.out_dir).config)
    assert (saved.steps, saved.lr, saved.max_minutes) == (4, 0.1, 60.0)


def test_resume_from_a_checkpoint_holding_nan_says_it_is_corrupt(tmp_path):
    """Not "lower --lr ... the last good checkpoint is <that file>", which sent users back to the bad file."""
    from safetensors import safe_open

    from softprompt.errors import UsageError
    from softprompt.training.checkpoint import save_checkpoint
    from softprompt.training.optimizers import make_optimizer

    out = RunDir(train(config(tmp_path, steps=2, eval_every=2), fm=tiny_causal(), progress=False).out_dir)
    with safe_open(str(out.checkpoint), framework="pt") as handle:
        counters = json.loads(handle.metadata()["counters"])
    bad = {"prompt": torch.full((4, 32), float("nan"), requires_grad=True)}
    save_checkpoint(out.checkpoint, bad, make_optimizer(list(bad.values()), config(tmp_path)), counters)
    with pytest.raises(Exception, match="checkpoint .*checkpoint.safetensors is corrupt") as err:
        train(config(tmp_path, steps=4, eval_every=2), fm=tiny_causal(), resume=True, progress=False)
    assert "--lr" not in str(err.value) and isinstance(err.value, UsageError)  # one line from the CLI


def test_a_run_folder_in_use_is_refused_with_the_holders_pid(tmp_path):
    import os

    from softprompt.errors import UsageError

    cfg = config(tmp_path, steps=2)
    with RunDir(cfg.out).claim():
        with pytest.raises(UsageError, match=rf"another train process \(pid {os.getpid()}\) is writing to"):
            train(cfg, fm=tiny_causal(), progress=False)
    assert not RunDir(cfg.out).metrics.exists()
    assert train(cfg, fm=tiny_causal(), progress=False).steps_done == 2  # the lock went with the holder


def test_out_pointing_at_a_file_or_below_one_is_a_usage_error(tmp_path):
    from softprompt.errors import UsageError

    afile = tmp_path / "taken"
    afile.write_text("not a run")
    with pytest.raises(UsageError, match="is an existing file, not a folder"):
        train(config(tmp_path, out=str(afile)), fm=tiny_causal(), progress=False)
    with pytest.raises(UsageError, match=r"cannot write into --out .*taken/run \(Not a directory\)"):
        train(config(tmp_path, out=str(afile / "run")), fm=tiny_causal(), progress=False)
    assert afile.read_text() == "not a run"


def test_a_resumed_run_removes_the_temp_files_a_kill_left(tmp_path):
    out = RunDir(train(config(tmp_path, steps=2, eval_every=2), fm=tiny_causal(), progress=False).out_dir)
    stale = out.root / ".checkpoint.safetensors.u8x2k1.tmp"
    stale.write_bytes(b"half a checkpoint")
    train(config(tmp_path, steps=3, eval_every=2), fm=tiny_causal(), resume=True, progress=False)
    assert not stale.exists()
    assert not [p.name for p in out.root.iterdir() if p.name.endswith(".tmp")]
