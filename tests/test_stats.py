"""Intervals and verdicts for the studies (experiments/stats.py) and the suite planner (experiments/plan.py)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from softprompt.experiments import stats
from softprompt.experiments.plan import Rates, plan_lines
from softprompt.experiments.stats import Cell, Interval


def test_t_interval_over_seeds_matches_the_hand_computation():
    i = stats.over_seeds([0.80, 0.82, 0.84])  # mean 0.82, s = 0.02, t(2) = 4.303
    assert i.mean == pytest.approx(0.82) and i.how == "seeds" and i.n == 3
    assert i.half_width == pytest.approx(4.303 * 0.02 / 3**0.5)
    assert stats.over_seeds([0.5]).how == "single"
    assert stats.t_quantile(7) == 2.365 and stats.t_quantile(11) == 2.228 and stats.t_quantile(500) == 1.96


def test_bootstrap_is_deterministic_and_covers_the_true_rate():
    scores = [1.0] * 70 + [0.0] * 30
    a, b = stats.bootstrap(scores), stats.bootstrap(scores)
    assert a == b and a.low < 0.7 < a.high and a.how == "bootstrap"
    assert stats.bootstrap([1.0] * 50) == Interval(1.0, 1.0, 1.0, 50, "bootstrap")
    # Coverage: intervals from samples of a Bernoulli(0.7) contain 0.7 about 95% of the time.
    rng = random.Random(1)
    hits = sum(stats.bootstrap([float(rng.random() < 0.7) for _ in range(100)], resamples=400, seed=k).excludes(0.7)
               is False for k in range(100))
    assert 86 <= hits <= 100


def test_welch_and_paired_differences():
    d = stats.welch([0.9, 0.91, 0.92], [0.8, 0.81, 0.82])
    assert d.mean == pytest.approx(0.1) and d.low > 0 and stats.verdict(d) == stats.HOLDS
    assert stats.verdict(stats.welch([0.8, 0.81, 0.82], [0.9, 0.91, 0.92])) == stats.CONTRADICTED
    assert stats.verdict(stats.welch([0.80, 0.90, 0.85], [0.84, 0.86, 0.85])) == stats.INCONCLUSIVE
    # Paired: the same hard examples on both sides cancel, so a small but consistent gain is detected.
    rng = random.Random(0)
    hard = [float(rng.random() < 0.5) for _ in range(400)]
    better = [1.0 if (h or k % 10 == 0) else 0.0 for k, h in enumerate(hard)]
    assert stats.verdict(stats.paired_bootstrap(better, hard)) == stats.HOLDS
    with pytest.raises(ValueError):
        stats.paired_bootstrap([1.0], [1.0, 0.0])


def test_cells_choose_their_interval_and_single_values_are_never_a_verdict():
    seeds, single = Cell((0.8, 0.81, 0.82)), Cell((0.6,))
    assert seeds.interval.how == "seeds" and single.interval.how == "single"
    assert stats.verdict(stats.difference(seeds, single)) == stats.INCONCLUSIVE  # one side has no spread
    a, b = Cell((0.7,), ((1.0,) * 70 + (0.0,) * 30,)), Cell((0.5,), ((1.0,) * 50 + (0.0,) * 50,))
    assert stats.difference(a, b).how == "bootstrap" and stats.verdict(stats.difference(a, b)) == stats.HOLDS


@pytest.mark.parametrize(("per_task", "expected"), [
    ([stats.HOLDS, stats.HOLDS], stats.HOLDS), ([stats.HOLDS], stats.INCONCLUSIVE),
    ([stats.HOLDS, stats.HOLDS, stats.CONTRADICTED], "mixed"), ([stats.CONTRADICTED] * 2, stats.CONTRADICTED),
    ([stats.INCONCLUSIVE] * 3, stats.INCONCLUSIVE), ([], stats.INCONCLUSIVE),
])
def test_claim_verdict_needs_two_informative_tasks(per_task, expected):
    assert stats.claim_verdict(per_task) == expected


def _result(method: str, task: str, steps: int, seconds: float, bf16: bool, batch: int = 16) -> dict:
    return {"model": "default", "method": method, "task": task, "steps": steps, "wall_seconds": seconds,
            "budget": {"batch_size": batch}, "machine": {"cpu_bf16": bf16}, "params": {}}


def test_plan_estimates_from_runs_on_the_same_cpu_kind_and_counts_shared_variants_once(tmp_path: Path):
    from softprompt.experiments.studies import load_study

    study = tmp_path / "s.yaml"
    study.write_text("study: s\nmodels: [default]\nbudget: {steps: 100, batch_size: 16}\nvariants:\n"
                     "  - {task: sst2, method: [prompt-tuning, zero-shot], seed: [0, 1]}\n"
                     "  - {task: rte, method: prompt-tuning}\n")
    other = tmp_path / "t.yaml"
    other.write_text(study.read_text().replace("study: s", "study: t"))
    variants = load_study(study).variants() + load_study(other).variants()
    rates = Rates.measure([_result("prompt-tuning", "sst2", 50, 400.0, False),   # 0.5 s per example in fp32
                           _result("prompt-tuning", "sst2", 50, 160.0, True),    # 0.2 s in bf16
                           _result("zero-shot", "sst2", 0, 90.0, False)])
    pt = next(v for v in variants if v.id.endswith("sst2__pt__p100__class-labels__s0"))
    assert rates.seconds(pt, "fp32") == (pytest.approx(1600 * 0.5), "")
    assert rates.seconds(pt, "bf16") == (pytest.approx(1600 * 0.2), "")
    rte = next(v for v in variants if "__rte__" in v.id)
    assert rates.seconds(rte, "fp32") == (pytest.approx(1600 * 0.5), "")  # another task of the same model/method
    zero = next(v for v in variants if v.id.endswith("zero-shot"))
    assert rates.seconds(zero, "bf16") == (pytest.approx(45.0), "~")  # scaled from the fp32 runs
    lines = plan_lines(variants, ["todo"] * len(variants), rates, "fp32")
    assert lines[-2].startswith("total: 0 of 8 variants done; left ≈ 0.7 h on this CPU kind (fp32)")
    shared = [line for line in lines if line.split()[:2] == ["todo", "="]]
    assert len(shared) == 4 and all(" t/" in line for line in shared)  # study t repeats s: its variants cost nothing


def test_plan_cli_prints_the_whole_plan(tmp_path: Path):
    from typer.testing import CliRunner

    from softprompt.cli import app

    (tmp_path / "studies").mkdir()
    (tmp_path / "studies" / "a.yaml").write_text("study: a\nbudget: {steps: 10}\nvariants:\n  - {task: sst2}\n")
    (tmp_path / "archive" / "v1" / "results" / "a").mkdir(parents=True)
    (tmp_path / "archive" / "v1" / "results" / "a" / "x.json").write_text(json.dumps(_result("prompt-tuning", "sst2", 10, 16.0, False)))
    out = CliRunner().invoke(app, ["experiments", "plan", "--dir", str(tmp_path)])
    assert out.exit_code == 0, out.output
    assert "todo" in out.output and "a/default__sst2__pt__p100__class-labels__s0" in out.output
    assert "total: 0 of 1 variants done" in out.output
