"""The experiment report from synthetic result files: sections, computed verdicts, plots, partial and empty dirs."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from softprompt.experiments.report import STUDIES, write_report

SMOL, GEMMA = ("default", "SmolLM2-135M"), ("gemma-3-270m", "Gemma-3-270M")
META = {"methods": {"title": "Methods (Figure 1)", "budget": {"steps": 150, "batch_size": 16}, "hours": 2.0,
                    "description": "PT vs MT vs design.", "variants": ["default__sst2__prompt-tuning__s0", "default__wic__pt"]}}


def result(study: str, variant: str, task: str | None, method: str, main: float | None = None,
           model: tuple[str, str] = SMOL, **extra: Any) -> dict[str, Any]:
    """One result file's content in the runner's schema (accuracy is the main metric)."""
    params = {"prompt_length": 100, "init": "class-labels", "seed": 0, "shots": 4, "k": 5, "lr": None}
    params.update(extra.pop("params", {}))
    return {
        "study": study, "variant": variant, "model": model[0], "model_label": model[1], "task": task, "method": method,
        "params": params, "seed": 0, "steps": 10, "wall_seconds": 360.0,
        "metrics": {"main_metric": "accuracy", "main": main, "all": {"accuracy": main}, "examples": 100},
        "budget": {"steps": 10}, "quick": False, "softprompt_version": "0.1.0", "finished_at": f"2026-11-25T0{len(variant) % 10}:00:00Z",
        "command": f"softprompt experiments run {study}", **extra,
    }


def interpretation(init_words: dict[str, list[int]], trained_words: dict[str, list[int]], shared: int) -> dict[str, Any]:
    def report(words: dict[str, list[int]], shared: int) -> dict[str, Any]:
        row = [{"token_id": 7, "token": " gr|eat", "score": 0.41}] * 5  # a pipe must not break the markdown table
        return {"k": 5, "task": "sst2", "neighbours": [row] * 100,
                "summary": {"positions": 100, "label_words": words, "shared_top1_positions": shared, "shared_top1_tokens": []}}
    return {"init": report(init_words, 2), "trained": report(trained_words, shared)}


JITTER = (-0.002, 0.0, 0.002)  # three seeds (or few-shot draws) per trained cell: tight 95% intervals


def seeded(study: str, variant: str, task: str, method: str, value: float, model: tuple[str, str] = SMOL,
           **extra: Any) -> list[dict[str, Any]]:
    """One cell as three result files, seeds 0-2, around `value`."""
    out, knobs = [], extra.pop("params", {})
    for seed, d in enumerate(JITTER):
        r = result(study, f"{variant}__s{seed}", task, method, value + d, model, params={**knobs, "seed": seed}, **extra)
        r["seed"] = seed
        out.append(r)
    return out


def methods_results(pt: float, gemma_gap: float) -> list[dict[str, Any]]:
    """Two tasks, SmolLM2 and Gemma; majority 50, zero-shot 50, few-shot 60 (3 draws), prompt tuning `pt` and
    model tuning 90 (Smol) / pt + gap (Gemma), 3 seeds each."""
    out = []
    for model, mt in ((SMOL, 0.9), (GEMMA, pt + gemma_gap)):
        for task in ("sst2", "rte"):
            out.append(result("methods", f"{model[0]}__{task}__majority", task, "majority", 0.5, model))
            out.append(result("methods", f"{model[0]}__{task}__zero-shot", task, "zero-shot", 0.5, model))
            for method, value in (("few-shot", 0.6), ("prompt-tuning", pt), ("model-tuning", mt)):
                out += seeded("methods", f"{model[0]}__{task}__{method}", task, method, value, model)
    return out


def all_results() -> list[dict[str, Any]]:
    out = methods_results(pt=0.8, gemma_gap=0.05)
    for task in ("sst2", "rte"):
        for p, v in ((1, 0.6), (5, 0.7), (20, 0.8), (100, 0.81), (150, 0.80)):
            out += seeded("length", f"default__{task}__pt__p{p}", task, "prompt-tuning", v, params={"prompt_length": p})
        for init, v in (("random-uniform", 0.6), ("sampled-vocab", 0.7), ("class-labels", 0.8)):
            out += seeded("init", f"default__{task}__pt__{init}", task, "prompt-tuning", v, params={"init": init},
                          interpretation=interpretation({"negative": [0], "positive": [1]}, {"negative": [3], "positive": []}, 20))
    for method, targets in (("prompt-tuning", {"cr": 0.8, "mpqa": 0.7, "mr": 0.85}), ("model-tuning", {"cr": 0.7, "mpqa": 0.6, "mr": 0.9})):
        for seed, d in enumerate(JITTER):
            transfer = {t: {"main_metric": "accuracy", "main": v + d, "all": {"accuracy": v + d}, "examples": 50}
                        for t, v in targets.items()}
            out.append(result("transfer", f"default__sst2__{method}__s{seed}__to-cr-mpqa-mr", "sst2", method, 0.9,
                              transfer=transfer, params={"seed": seed}))
    cost = {"model_label": "SmolLM2-135M", "H": 576, "layers": 30, "kv_dim": 192, "total_parameters": 134_515_008,
            "rows": [{"method": "prompt tuning (P=100)", "parameters": 57_600, "fraction_of_model": 57_600 / 134_515_008,
                      "bytes_fp32": 230_400, "bytes_on_disk": 231_000},
                     {"method": "model tuning", "parameters": 134_515_008, "fraction_of_model": 1.0,
                      "bytes_fp32": 538_060_032, "bytes_on_disk": None}],
            "serving": [{"tasks": 10, "method": "model tuning (a bf16 copy per task)", "bytes": 2_690_300_160}]}
    out.append(result("cost", "default__cost", None, "cost", None, cost=cost))
    return out


def write_results(root: Path, results: list[dict[str, Any]]) -> Path:
    for r in results:
        path = root / r["study"] / f"{r['variant']}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(r))
    return root


def verdicts(text: str) -> dict[str, str]:
    """claim id -> verdict, read from the summary table."""
    return {m[1]: m[2] for m in re.finditer(r"^\| (C\d+) \|.*?\| \*\*(.+?)\*\* \|", text, re.MULTILINE)}


@pytest.fixture(scope="module")
def full(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    root = tmp_path_factory.mktemp("exp")
    results = write_results(root / "results", all_results())
    # Smoke-test numbers that would flip C1 if they were counted, and a half-written file.
    quick = result("methods", "default__sst2__prompt-tuning__quick", "sst2", "prompt-tuning", 0.0)
    (results / "methods" / "quick.json").write_text(json.dumps({**quick, "quick": True}))
    (results / "methods" / "broken.json").write_text("{")
    out = write_report(results, root / "REPORT.md", root / "plots", META)
    return root, out.read_text()


def test_report_has_every_section_and_header(full: tuple[Path, str]) -> None:
    _, text = full
    assert text.startswith("# Prompt tuning at small scale")
    assert "Generated by `softprompt experiments report`" in text
    for number, study in enumerate(STUDIES, 1):
        assert re.search(rf"^## {number}\. .*\(`{study}`\)$", text, re.MULTILINE), study
    assert "Could not render" not in text and "not drawn" not in text
    assert "1 smoke-test files" in text and "1 unreadable: methods/broken.json" in text
    assert "Total compute: 9.90 h (35,640 s)" in text  # 99 results x 360 s (quick and broken files excluded)
    assert "Budget: steps=150, batch_size=16; planned ≈ 2.0 h" in text
    assert "Not run yet: 1 of 2 variants (default__wic__pt)" in text
    assert "latest finished_at 2026-11-25T09:00:00Z" in text


def test_verdicts_are_computed(full: tuple[Path, str]) -> None:
    _, text = full
    assert verdicts(text) == {
        "C1": "holds",  # PT 80 > design 60 on 4/4 (model, task) pairs; the quick file's 0.0 is ignored
        "C2": "holds",  # MT − PT +10 pp (SmolLM2) > +5 pp (Gemma), intervals apart on both tasks
        "C3": "holds",  # P≥5 beats P=1, and P=100 − P=20 = +1 pp lies inside ±2 pp, on both tasks
        "C4": "holds",  # P=100 > P=150 by 1 pp, intervals above 0 on both tasks
        "C5": "holds",  # class-labels > sampled-vocab > random-uniform on both tasks
        "C6": "holds",  # PT > MT on CR and MPQA; MR is the in-domain control and does not count
        "C7": "not enough results",  # ensemble study not run
        "C8": "contradicted",  # 'positive' is lost after training in every prompt
        "C9": "holds",  # 20/100 positions share their top-1 token
        "C10": "holds",  # 0.043% < 0.1%
    }
    assert "holds on 2, contradicted on 0, inconclusive on 0 of 2 informative tasks (2 compared)" in text  # C6
    assert "' gr\\|eat' 0.41" in text
    assert "| rte | 50.0 | 50.0 | 60.0 ± 0.5 | 80.0 ± 0.5 | 90.0 ± 0.5 |" in text  # mean ± half-width over 3 seeds
    assert "| SmolLM2-135M | sst2 | 50.0 | model-tuning: 90.0 [89.5, 90.5] (3 seeds) | yes |" in text


def test_flipped_methods_are_contradicted(tmp_path: Path) -> None:
    results = write_results(tmp_path / "results", methods_results(pt=0.4, gemma_gap=0.6))
    text = write_report(results, tmp_path / "REPORT.md", tmp_path / "plots").read_text()
    got = verdicts(text)
    assert got["C1"] == "contradicted"  # PT 40 < design 60 everywhere, intervals apart
    assert got["C2"] == "mixed"  # MT better at both sizes, but the gap grows from +50 to +60 pp
    assert text.count("**Not run yet.**") == len(STUDIES) - 1


def test_one_seed_without_per_example_scores_is_inconclusive(tmp_path: Path) -> None:
    # One run per cell and no per-example scores: no interval, so no verdict, however large the gap.
    results = [r for r in methods_results(pt=0.8, gemma_gap=0.05) if r.get("seed", 0) == 0]
    text = write_report(write_results(tmp_path / "results", results), tmp_path / "REPORT.md", tmp_path / "plots").read_text()
    assert verdicts(text)["C1"] == "inconclusive"


def test_single_runs_with_per_example_scores_are_compared_by_a_paired_bootstrap(tmp_path: Path) -> None:
    results = []
    for task in ("sst2", "rte"):
        pt = [1.0] * 80 + [0.0] * 20  # 80% correct
        design = [1.0] * 55 + [0.0] * 45
        for method, scores in (("prompt-tuning", pt), ("few-shot", design)):
            r = result("methods", f"default__{task}__{method}", task, method, sum(scores) / 100)
            r["metrics"]["per_example"] = scores
            results.append(r)
        results.append(result("methods", f"default__{task}__majority", task, "majority", 0.5))
    text = write_report(write_results(tmp_path / "results", results), tmp_path / "REPORT.md", tmp_path / "plots").read_text()
    assert verdicts(text)["C1"] == "holds"
    assert "(paired bootstrap)" in text and "bootstrap over 100 examples" in text


def test_methods_mean_row_averages_the_same_tasks_in_every_column(tmp_path: Path) -> None:
    # WiC has no few-shot result: averaging each column over the tasks it has would put a 2-task mean
    # (few-shot) beside 3-task means; the row must average SST-2 and RTE only, in every column.
    results = [r for r in methods_results(pt=0.8, gemma_gap=0.05) if r["model"] == "default"]
    results += [result("methods", f"default__wic__{m}", "wic", m, 0.1) for m in ("zero-shot", "prompt-tuning", "model-tuning")]
    text = write_report(write_results(tmp_path / "results", results), tmp_path / "REPORT.md", tmp_path / "plots").read_text()
    assert "| **mean** (2 of 3 tasks: those with every method) | 50.0 | 50.0 | 60.0 | 80.0 | 90.0 |" in text


def test_methods_table_shows_the_majority_baseline_and_names_the_cells_at_it(tmp_path: Path) -> None:
    results = [r for r in methods_results(pt=0.8, gemma_gap=0.05) if r["model"] == "default"]
    text = write_report(write_results(tmp_path / "results", results), tmp_path / "REPORT.md", tmp_path / "plots").read_text()
    assert "| task | majority | zero-shot | few-shot k=4 | prompt-tuning | model-tuning |" in text
    assert "At the majority-class score (most likely one answer for every example): rte zero-shot, sst2 zero-shot." in text
    assert verdicts(text)["C1"] == "holds"  # the baseline is not prompt design: C1 still compares PT with design


def test_results_that_answer_one_class_for_nearly_every_example_are_named(tmp_path: Path) -> None:
    results = [r for r in methods_results(pt=0.8, gemma_gap=0.05) if r["model"] == "default" and r.get("seed", 0) == 0]
    for r in results:
        if r["method"] in ("few-shot", "model-tuning"):  # 97 of 100 / 94 of 100 examples answered "negative"
            r["metrics"]["answers"] = {"negative": 97, "positive": 3} if r["method"] == "few-shot" else {"negative": 94, "positive": 6}
    text = write_report(write_results(tmp_path / "results", results), tmp_path / "REPORT.md", tmp_path / "plots").read_text()
    assert ("One answer for at least 95% of the examples: rte few-shot k=4 seed 0 ('negative' 97%), "
            "sst2 few-shot k=4 seed 0 ('negative' 97%).") in text


def ensemble_result(task: str, members: list[float], vote: float, seed: int = 0) -> dict[str, Any]:
    """An ensemble result in the runner's schema: member accuracies, their average and best, the vote."""
    acc = lambda v: {"accuracy": v}  # noqa: E731
    ens = {"task": task, "k": len(members), "examples": 100, "main_metric": "accuracy",
           "members": [{"prompt": f"m{i}", "metrics": acc(v)} for i, v in enumerate(members)],
           "average": acc(sum(members) / len(members)), "best": {"prompt": "m", "metrics": acc(max(members))},
           "majority_vote": acc(vote), "mean_probability": acc(vote)}
    return result("ensemble", f"default__{task}__ensemble__s{seed}", task, "ensemble", vote, ensemble=ens,
                  params={"seed": seed})


def test_ensemble_vote_at_the_majority_class_is_not_counted_for_c7(tmp_path: Path) -> None:
    # RTE: members that answer one class; the vote beats their average only by landing on the majority class.
    results = [ensemble_result("sst2", [0.80 + d, 0.82 + d, 0.87 + d], 0.84 + d, s) for s, d in ((0, 0.0), (5, 0.004), (10, -0.004))]
    results += [ensemble_result("rte", [0.47, 0.53, 0.53], 0.53, s) for s in (0, 5, 10)]
    results += [result("methods", f"default__{t}__majority", t, "majority", v) for t, v in (("sst2", 0.5), ("rte", 0.53))]
    text = write_report(write_results(tmp_path / "results", results), tmp_path / "REPORT.md", tmp_path / "plots").read_text()
    assert "| SmolLM2-135M | rte | 3 | accuracy | 53.0 | 51.0 | 53.0 | 53.0 | 53.0 | +2.0 | +0.0 |" in text
    assert "SmolLM2-135M rte: vote 53.0 = majority class 53.0, not counted" in text
    # SST-2's vote is wholly below its best member over the three ensembles: contradicted there.
    assert "SmolLM2-135M sst2: vote − best member: difference: -3.0 pp" in text
    assert verdicts(text)["C7"] == "inconclusive"  # one contradicted task is not two
    assert "holds on 0 of 1 tasks" in text


def test_plots_exist_for_studies_with_data(full: tuple[Path, str]) -> None:
    root, text = full
    for name in ("methods_smollm2-135m", "methods_gemma-3-270m", "length", "init", "transfer", "cost"):
        png = root / "plots" / f"{name}.png"
        assert png.stat().st_size > 1000, name
        assert f"(plots/{name}.png)" in text
    assert not (root / "plots" / "ensemble.png").exists()


def test_report_is_deterministic(full: tuple[Path, str]) -> None:
    root, text = full
    png = (root / "plots" / "length.png").read_bytes()
    again = write_report(root / "results", root / "AGAIN.md", root / "plots", META)
    assert again.read_text() == text
    assert (root / "plots" / "length.png").read_bytes() == png


@pytest.mark.parametrize("exists", [True, False])
def test_empty_results_dir_says_not_run_yet(tmp_path: Path, exists: bool) -> None:
    results = tmp_path / "results"
    if exists:
        results.mkdir()
    text = write_report(results, tmp_path / "out" / "REPORT.md", tmp_path / "out" / "plots").read_text()
    assert text.count("**Not run yet.**") == len(STUDIES)
    assert set(verdicts(text).values()) == {"not enough results"} and len(verdicts(text)) == 10
    assert "Total compute: 0.00 h" in text


def test_header_counts_results_by_cpu_kind(tmp_path: Path) -> None:
    runs = all_results()[:3]
    runs[0]["machine"] = {"cpu_bf16": True, "cpus": 2}
    runs[1]["machine"] = {"cpu_bf16": False, "cpus": 2}
    text = write_report(write_results(tmp_path / "results", runs), tmp_path / "REPORT.md", tmp_path / "plots").read_text()
    assert ("Compute by CPU kind: bf16 CPU: 1 results, 0.10 h (360 s); fp32-only (AVX2) CPU: 1 results, 0.10 h (360 s); "
            "unrecorded: 1 results, 0.10 h (360 s).") in text
