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
                    "description": "PT vs MT vs design.", "variants": ["default__sst2__prompt-tuning", "default__wic__pt"]}}


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


def methods_results(pt: float, gemma_gap: float) -> list[dict[str, Any]]:
    """Two tasks, SmolLM2 and Gemma; design 50/60, prompt tuning `pt`, model tuning 90 (Smol), pt + gap (Gemma)."""
    out = []
    for model, mt in ((SMOL, 0.9), (GEMMA, pt + gemma_gap)):
        for task in ("sst2", "rte"):
            for method, value in (("zero-shot", 0.5), ("few-shot", 0.6), ("prompt-tuning", pt), ("model-tuning", mt)):
                out.append(result("methods", f"{model[0]}__{task}__{method}", task, method, value, model))
    return out


def all_results() -> list[dict[str, Any]]:
    out = methods_results(pt=0.8, gemma_gap=0.05)
    for p, v in ((1, 0.6), (5, 0.7), (20, 0.8), (100, 0.81), (150, 0.80)):
        out.append(result("length", f"default__sst2__pt__p{p}", "sst2", "prompt-tuning", v, params={"prompt_length": p}))
    for init, v in (("random-uniform", 0.6), ("sampled-vocab", 0.7), ("class-labels", 0.8)):
        out.append(result("init", f"default__sst2__pt__{init}", "sst2", "prompt-tuning", v, params={"init": init},
                          interpretation=interpretation({"negative": [0], "positive": [1]}, {"negative": [3], "positive": []}, 20)))
    for method, targets in (("prompt-tuning", {"cr": 0.8, "mpqa": 0.7, "mr": 0.85}), ("model-tuning", {"cr": 0.7, "mpqa": 0.6, "mr": 0.9})):
        transfer = {t: {"main_metric": "accuracy", "main": v, "all": {"accuracy": v}, "examples": 50} for t, v in targets.items()}
        out.append(result("transfer", f"default__sst2__{method}__to-cr-mpqa-mr", "sst2", method, 0.9, transfer=transfer))
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
    assert "Total compute: 2.70 h (9,720 s)" in text  # 27 results x 360 s (quick and broken files excluded)
    assert "Budget: steps=150, batch_size=16; planned ≈ 2.0 h" in text
    assert "Not run yet: 1 of 2 variants (default__wic__pt)" in text
    assert "latest finished_at 2026-11-25T09:00:00Z" in text


def test_verdicts_are_computed(full: tuple[Path, str]) -> None:
    _, text = full
    assert verdicts(text) == {
        "C1": "holds",  # PT 80 > design 60 on 4/4 (model, task) pairs; the quick file's 0.0 is ignored
        "C2": "holds",  # gap +10 pp (SmolLM2) shrinks to +5 pp (Gemma)
        "C3": "holds", "C4": "holds", "C5": "holds",
        "C6": "holds",  # PT > MT on CR and MPQA; MR is the in-domain control and does not count
        "C7": "not enough results",  # ensemble study not run
        "C8": "does not hold",  # 'positive' is lost after training
        "C9": "holds",  # 20/100 positions share their top-1 token
        "C10": "holds",  # 0.043% < 0.1%
    }
    assert "PT better on 2/2 out-of-domain pairs" in text
    assert "' gr\\|eat' 0.41" in text


def test_flipped_methods_do_not_hold(tmp_path: Path) -> None:
    results = write_results(tmp_path / "results", methods_results(pt=0.4, gemma_gap=0.6))
    text = write_report(results, tmp_path / "REPORT.md", tmp_path / "plots").read_text()
    got = verdicts(text)
    assert got["C1"] == "does not hold"  # PT 40 < design 60 everywhere
    assert got["C2"] == "mixed"  # MT better at both sizes, but the gap grows from +50 to +60 pp
    assert text.count("**Not run yet.**") == len(STUDIES) - 1


def test_methods_mean_row_averages_the_same_tasks_in_every_column(tmp_path: Path) -> None:
    # WiC has no few-shot result: averaging each column over the tasks it has would put a 2-task mean
    # (few-shot) beside 3-task means; the row must average SST-2 and RTE only, in every column.
    results = [r for r in methods_results(pt=0.8, gemma_gap=0.05) if r["model"] == "default"]
    results += [result("methods", f"default__wic__{m}", "wic", m, 0.1) for m in ("zero-shot", "prompt-tuning", "model-tuning")]
    text = write_report(write_results(tmp_path / "results", results), tmp_path / "REPORT.md", tmp_path / "plots").read_text()
    assert "| **mean** (2 of 3 tasks: those with every method) | 50.0 | 60.0 | 80.0 | 90.0 |" in text


def test_methods_table_shows_the_majority_baseline_and_names_the_cells_at_it(tmp_path: Path) -> None:
    results = [r for r in methods_results(pt=0.8, gemma_gap=0.05) if r["model"] == "default"]
    results += [result("methods", f"default__{t}__majority", t, "majority", v) for t, v in (("sst2", 0.8), ("rte", 0.55))]
    text = write_report(write_results(tmp_path / "results", results), tmp_path / "REPORT.md", tmp_path / "plots").read_text()
    assert "| task | majority | zero-shot | few-shot k=4 | prompt-tuning | model-tuning |" in text
    assert "At the majority-class score (most likely one answer for every example): sst2 prompt-tuning." in text
    assert verdicts(text)["C1"] == "holds"  # the baseline is not prompt design: C1 still compares PT with design


def test_results_that_answer_one_class_for_nearly_every_example_are_named(tmp_path: Path) -> None:
    results = [r for r in methods_results(pt=0.8, gemma_gap=0.05) if r["model"] == "default"]
    for r in results:
        if r["method"] in ("few-shot", "model-tuning"):  # 97 of 100 / 94 of 100 examples answered "negative"
            r["metrics"]["answers"] = {"negative": 97, "positive": 3} if r["method"] == "few-shot" else {"negative": 94, "positive": 6}
    text = write_report(write_results(tmp_path / "results", results), tmp_path / "REPORT.md", tmp_path / "plots").read_text()
    assert ("One answer for at least 95% of the examples: rte few-shot k=4 seed 0 ('negative' 97%), "
            "sst2 few-shot k=4 seed 0 ('negative' 97%).") in text


def ensemble_result(task: str, members: list[float], vote: float) -> dict[str, Any]:
    """An ensemble result in the runner's schema: member accuracies, their average and best, the vote."""
    acc = lambda v: {"accuracy": v}  # noqa: E731
    ens = {"task": task, "k": len(members), "examples": 100, "main_metric": "accuracy",
           "members": [{"prompt": f"m{i}", "metrics": acc(v)} for i, v in enumerate(members)],
           "average": acc(sum(members) / len(members)), "best": {"prompt": "m", "metrics": acc(max(members))},
           "majority_vote": acc(vote), "mean_probability": acc(vote)}
    return result("ensemble", f"default__{task}__ensemble", task, "ensemble", vote, ensemble=ens)


def test_ensemble_vote_at_the_majority_class_is_not_counted_for_c7(tmp_path: Path) -> None:
    # RTE: members that answer one class; the vote beats their average only by landing on the majority class.
    results = [ensemble_result("sst2", [0.80, 0.82, 0.87], 0.84), ensemble_result("rte", [0.47, 0.53, 0.53], 0.53)]
    results += [result("methods", f"default__{t}__majority", t, "majority", v) for t, v in (("sst2", 0.5), ("rte", 0.53))]
    text = write_report(write_results(tmp_path / "results", results), tmp_path / "REPORT.md", tmp_path / "plots").read_text()
    assert "| SmolLM2-135M | rte | 3 | accuracy | 53.0 | 51.0 | 53.0 | 53.0 | 53.0 | +2.0 | +0.0 |" in text
    assert "SmolLM2-135M rte: vote 53.0 = majority class 53.0, not counted" in text
    # SST-2's vote is below its best member; counting RTE's tie with the majority class would make C7 1/2, mixed.
    assert verdicts(text)["C7"] == "does not hold"
    assert "vote wins on 0/1 tasks" in text


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
    assert "Machines: 1 results on a CPU with native bf16 (the model runs in bf16), 1 on an fp32-only (AVX2) CPU, " \
           "1 unrecorded" in text
