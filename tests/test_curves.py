"""A run's curves: curve.png in every run folder, `softprompt runs compare`, `--report-to tensorboard`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_train import config
from tiny import tiny_causal
from typer.testing import CliRunner

from softprompt import cli
from softprompt.training.config import ConfigError
from softprompt.training.curves import CURVE, load_run
from softprompt.training.loop import train

PNG = b"\x89PNG\r\n\x1a\n"


def test_every_run_writes_its_curve_and_logs_its_minutes(tmp_path):
    done = train(config(tmp_path, steps=4, eval_every=2), fm=tiny_causal(), progress=False)
    assert (done.out_dir / CURVE).read_bytes().startswith(PNG)
    run = load_run(done.out_dir)
    seconds = [r["seconds"] for r in run.records]
    assert len(seconds) == 4 and seconds == sorted(seconds) and seconds[0] > 0
    assert [e[0] for e in run.evals()] == [2, 4]


def test_runs_compare_prints_best_first_and_plots_all(tmp_path):
    fm = tiny_causal()
    for name, lr in (("slow", 1e-6), ("fast", 0.3)):
        train(config(tmp_path / name, steps=4, eval_every=2, lr=lr, out=str(tmp_path / name)), fm=fm, progress=False)
    done = CliRunner().invoke(cli.app, ["runs", "compare", str(tmp_path / "slow"), str(tmp_path / "fast"), "--json"])
    assert done.exit_code == 0, done.output
    rows = json.loads(done.stdout)
    assert {r["run"] for r in rows} == {"slow", "fast"}
    assert all(r["task"] == "sst2" and r["recipe"] == "default" and r["steps"] == 4 and r["metric"] for r in rows)
    table = CliRunner().invoke(cli.app, ["runs", "compare", str(tmp_path / "slow"), str(tmp_path / "fast"),
                                         "--plot", str(tmp_path / "both.png")])
    assert table.exit_code == 0 and (tmp_path / "both.png").read_bytes().startswith(PNG)
    lines = table.stdout.splitlines()
    assert lines[0].split()[:3] == ["run", "task", "recipe"]
    best = sorted(rows, key=lambda r: -r["best"])[0]["run"]
    assert lines[1].split()[0] == best


def test_runs_compare_refuses_a_folder_that_is_not_a_run(tmp_path):
    done = CliRunner().invoke(cli.app, ["runs", "compare", str(tmp_path)])
    assert done.exit_code != 0 and "not a run folder" in str(done.exception or done.output)


def test_report_to_tensorboard_writes_the_scalars(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    done = train(config(tmp_path, steps=3, eval_every=3, report_to="tensorboard"), fm=tiny_causal(), progress=False)
    events = EventAccumulator(str(done.out_dir / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2, 3]
    logged = [json.loads(line) for line in (done.out_dir / "metrics.jsonl").read_text().splitlines()]
    assert [e.value for e in events.Scalars("train/loss")] == pytest.approx([r["loss"] for r in logged])
    assert [e.step for e in events.Scalars("eval/accuracy")] == [3]


def test_report_to_names_what_it_takes():
    with pytest.raises(ConfigError, match="report_to must be 'tensorboard'"):
        config(Path("unused"), report_to="wandb")
