"""The experiments runner on a tiny model: grid expansion, ids, skip/reuse/resume, failures, cost counts, CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tiny import TINY_DATA, tiny_causal
from transformers import AutoModelForCausalLM, AutoTokenizer

from softprompt.experiments.cost import cost_report
from softprompt.experiments.runner import ResultPaths, run_variants, select, status
from softprompt.experiments.studies import Kind, StudyError, load_studies, load_study
from softprompt.model.frozen import FrozenModel
from softprompt.training.rundir import RunDir

REPO_STUDIES = Path(__file__).resolve().parents[1] / "experiments" / "studies"

BUDGET = "{steps: 2, batch_size: 4, eval_every: 1, eval_limit: 8, train_limit: 16, lr_model_tuning: 1.0e-3}"


def write_study(folder: Path, name: str, variants: str, models: str = "[tiny]", budget: str = BUDGET) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(f"study: {name}\nmodels: {models}\nbudget: {budget}\n"
                    f"instructions: {{sst2: 'Sentiment?'}}\nvariants:\n{variants}\n")
    return path


def tiny_loader(name: str, dtype: str | None = None) -> FrozenModel:
    """Any model name -> the same tiny Llama; a saved folder (model tuning's best weights) -> that folder."""
    if Path(name).is_dir():
        return FrozenModel(AutoModelForCausalLM.from_pretrained(name), AutoTokenizer.from_pretrained(name), name=name)
    return tiny_causal(add_bos=False)


def test_grid_expands_every_combination_with_stable_ids(tmp_path):
    study = load_study(write_study(tmp_path, "length", "  - {task: [sst2, rte], prompt_length: [1, 20]}\n"
                                                      "  - {task: sst2, method: [zero-shot, few-shot], shots: 2}"))
    ids = [v.id for v in study.variants()]
    assert ids == ["tiny__sst2__pt__p1__class-labels__s0", "tiny__sst2__pt__p20__class-labels__s0",
                   "tiny__rte__pt__p1__class-labels__s0", "tiny__rte__pt__p20__class-labels__s0",
                   "tiny__sst2__zero-shot", "tiny__sst2__few-shot__k2__s0"]
    few = study.variants()[-1]
    assert few.kind is Kind.FEW_SHOT and few.instruction == "Sentiment?"
    assert study.variants()[0].instruction is None  # only prompt design reads it: PT results stay shareable
    quick = study.variants(quick=True)
    assert [v.id for v in quick] == ["tiny__sst2__pt__p1__class-labels__s0", "tiny__sst2__pt__p20__class-labels__s0",
                                     "tiny__sst2__zero-shot", "tiny__sst2__few-shot__k1__s0"]
    assert all(v.budget["steps"] == 2 and v.quick for v in quick)
    assert quick[0].fingerprint != study.variants()[0].fingerprint  # quick results never pass for real ones


def test_bad_study_files_name_the_file_and_key(tmp_path):
    with pytest.raises(StudyError, match=r"bad\.yaml: variants\[1\]: unknown key\(s\) prompt_lenght"):
        load_study(write_study(tmp_path, "bad", "  - {task: sst2, prompt_lenght: 5}")).variants()
    with pytest.raises(StudyError, match="method 'prompt-tunning'"):
        load_study(write_study(tmp_path, "bad2", "  - {task: sst2, method: prompt-tunning}")).variants()
    with pytest.raises(StudyError, match="unknown study nope"):
        select({"bad2": load_study(tmp_path / "bad2.yaml")}, ["nope"])


def test_repository_studies_expand():
    studies = load_studies(REPO_STUDIES)
    assert set(studies) == {"methods", "length", "init", "transfer", "ensemble", "interpret", "cost"}
    full = select(studies, ["all"])
    # 9 tasks x 2 models x (PT 3 seeds + zero-shot + majority + few-shot 3 draws + MT 3 lrs x 3 seeds), and
    # MultiRC / WSC on one model.
    assert len({v.id for v in full if v.study == "methods"}) == 9 * 2 * (3 + 2 + 3 + 9) + 2 * (3 + 2 + 3 + 9)
    assert all(v.budget.get("select_n") and not v.budget.get("max_minutes") for v in full if v.kind is not Kind.COST)
    banking = [v for v in full if v.task == "banking77"]
    assert banking and all(v.task_file and v.task_file.endswith("examples/banking77.yaml") for v in banking)
    quick = select(studies, ["all"], quick=True)
    assert {v.model for v in quick} == {"default"} and all(v.budget.get("steps", 2) == 2 for v in quick)


def test_runner_writes_results_skips_reuses_and_survives_a_failure(tmp_path):
    root = tmp_path / "experiments"
    write_study(root / "studies", "alpha", "  - {task: sst2, prompt_length: 4, method: [prompt-tuning, model-tuning, zero-shot, few-shot], shots: 1}\n"
                                           "  - {task: nosuchtask, method: zero-shot}")
    write_study(root / "studies", "beta", "  - {task: sst2, prompt_length: 4, eval_tasks: [mr]}\n"
                                          "  - {task: sst2, prompt_length: 4}")
    studies = load_studies(root / "studies")
    paths = ResultPaths(root)
    lines: list[str] = []
    first = run_variants(select(studies, ["alpha"]), paths, data_dir=str(TINY_DATA), loader=tiny_loader, log=lines.append)
    assert len(first.done) == 4 and list(first.failed) == ["tiny__nosuchtask__zero-shot"]
    assert "unknown task" in first.failed["tiny__nosuchtask__zero-shot"].lower()

    pt = json.loads((root / "results" / "alpha" / "tiny__sst2__pt__p4__class-labels__s0.json").read_text())
    assert pt["method"] == "prompt-tuning" and pt["steps"] == 2 and pt["metrics"]["examples"] == 8
    assert pt["train_attention"] == "split"  # the kernel the run trained with, from its config.yaml
    assert 0.0 <= pt["metrics"]["main"] <= 1.0 and pt["metrics"]["main_metric"] == "accuracy"
    inter = pt["interpretation"]
    assert inter["init"]["summary"]["positions"] == 4 and len(inter["trained"]["neighbours"][0]) == 5
    assert sum(pt["metrics"]["answers"].values()) == 8 and set(pt["metrics"]["answers"]) <= {"negative", "positive"}
    assert pt["quick"] is False and pt["budget"]["steps"] == 2 and pt["command"] == "softprompt experiments run alpha"
    assert "git_commit" in pt  # which code produced it (a short hash in a checkout)
    mt = json.loads((root / "results" / "alpha" / "tiny__sst2__mt__s0.json").read_text())
    assert mt["method"] == "model-tuning" and mt["steps"] == 2
    assert not RunDir(root / "runs" / "tiny__sst2__mt__s0").model.exists()  # weights dropped, numbers kept

    again = run_variants(select(studies, ["alpha"]), paths, data_dir=str(TINY_DATA), loader=tiny_loader, log=lines.append)
    assert len(again.skipped) == 4 and not again.done

    # beta's plain variant is alpha's: copied. Its transfer variant trains nothing new (same run folder).
    best = RunDir(root / "runs" / "tiny__sst2__pt__p4__class-labels__s0").best_prompt
    mtime = best.stat().st_mtime_ns
    beta = run_variants(select(studies, ["beta"]), paths, data_dir=str(TINY_DATA), loader=tiny_loader, log=lines.append)
    assert beta.reused == ["tiny__sst2__pt__p4__class-labels__s0"]
    assert beta.done == ["tiny__sst2__pt__p4__class-labels__s0__to-mr"]
    assert best.stat().st_mtime_ns == mtime
    transfer = json.loads((root / "results" / "beta" / "tiny__sst2__pt__p4__class-labels__s0__to-mr.json").read_text())
    assert transfer["transfer"]["mr"]["examples"] == 8
    copied = json.loads((root / "results" / "beta" / "tiny__sst2__pt__p4__class-labels__s0.json").read_text())
    assert copied["study"] == "beta" and copied["reused_from"] == "alpha" and copied["metrics"] == pt["metrics"]

    # A corrupt result file is redone, not trusted.
    target = root / "results" / "alpha" / "tiny__sst2__zero-shot.json"
    target.write_text("{half")
    variant = next(v for v in select(studies, ["alpha"]) if v.id == "tiny__sst2__zero-shot")
    assert status(paths, variant) == "todo"
    redo = run_variants([variant], paths, data_dir=str(TINY_DATA), loader=tiny_loader, log=lines.append)
    assert redo.done == ["tiny__sst2__zero-shot"] and json.loads(target.read_text())["method"] == "zero-shot"


def fingerprint_before_eos(variant) -> str:
    """A variant's fingerprint as computed before it could hold the EOS choice."""
    import hashlib

    data = {"id": variant.id, "budget": variant.budget, "instruction": variant.instruction, "quick": variant.quick}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def test_results_and_runs_made_with_the_eos_term_do_not_count_for_the_default_recipe(tmp_path):
    root = tmp_path / "experiments"
    paper = load_study(write_study(root / "studies", "paper", "  - {task: sst2, prompt_length: 4}")).variants()[0]
    default = load_study(write_study(root / "studies", "default", "  - {task: sst2, prompt_length: 4}",
                                     budget=BUDGET[:-1] + ", recipe: default}")).variants()[0]
    assert paper.targets_end_with_eos and not default.targets_end_with_eos  # SST-2 is ranked
    from softprompt.tasks import Mode
    from softprompt.tasks.custom import task_file_mode

    # a task file's mode is read from its fields, without its data (plan runs where the data is not at hand)
    assert task_file_mode(REPO_STUDIES.parents[1] / "examples" / "banking77.yaml") is Mode.RANK
    # The paper's fingerprint is what it was before the default dropped the EOS: its old results still count.
    assert paper.fingerprint == fingerprint_before_eos(paper)
    paths = ResultPaths(root)
    assert run_variants([default], paths, data_dir=str(TINY_DATA), loader=tiny_loader, log=print).done
    run = RunDir(root / "runs" / default.id)
    assert json.loads(run.summary.read_text())["recipe"]["target_eos"] is False
    # A result and a finished run from before (the default then trained with EOS): both are redone.
    result = paths.result_path(default)
    made = json.loads(result.read_text())
    result.write_text(json.dumps({**made, "fingerprint": fingerprint_before_eos(default)}))
    summary = json.loads(run.summary.read_text())
    del summary["recipe"]["target_eos"]
    run.summary.write_text(json.dumps(summary))
    assert status(paths, default) == "todo"
    assert run_variants([default], paths, data_dir=str(TINY_DATA), loader=tiny_loader, log=print).done
    assert json.loads(run.summary.read_text())["recipe"]["target_eos"] is False  # retrained, not reused
    assert json.loads(result.read_text())["fingerprint"] == default.fingerprint


def test_majority_variant_needs_no_model_and_scores_the_most_common_training_class(tmp_path, real_data):
    from softprompt.evaluation.baselines import majority_index
    from softprompt.tasks import get_task

    root = tmp_path / "experiments"
    write_study(root / "studies", "base", "  - {task: [mrpc, copa], method: majority}")

    def no_model(name: str, dtype: str | None = None) -> FrozenModel:
        raise AssertionError("the majority baseline must not load a model")

    summary = run_variants(select(load_studies(root / "studies"), ["base"]), ResultPaths(root), data_dir=str(real_data),
                           loader=no_model, log=lambda _: None)
    assert summary.done == ["tiny__mrpc__majority", "tiny__copa__majority"] and not summary.failed
    mrpc = json.loads((root / "results" / "base" / "tiny__mrpc__majority.json").read_text())
    # MRPC's training split is 68% paraphrases: the baseline answers "equivalent" for every pair.
    assert mrpc["majority"] == "equivalent" and majority_index(get_task("mrpc"), real_data) == 1
    gold = [ex.target_text for ex in get_task("mrpc").examples("validation", real_data, limit=8)]
    assert mrpc["metrics"]["all"]["accuracy"] == pytest.approx(gold.count("equivalent") / 8)
    assert mrpc["metrics"]["answers"] == {"equivalent": 8}
    copa = json.loads((root / "results" / "base" / "tiny__copa__majority.json").read_text())
    assert copa["majority"] in ("choice 1", "choice 2") and 0 < copa["metrics"]["main"] < 1


def test_ensemble_variant_reports_members_and_vote(tmp_path):
    root = tmp_path / "experiments"
    write_study(root / "studies", "ens", "  - {task: sst2, method: ensemble, k: 2, prompt_length: 2}")
    summary = run_variants(select(load_studies(root / "studies"), ["ens"]), ResultPaths(root), data_dir=str(TINY_DATA),
                           loader=tiny_loader, log=lambda _: None)
    assert summary.done == ["tiny__sst2__ensemble__p2__class-labels__k2__s0"]
    result = json.loads((root / "results" / "ens" / f"{summary.done[0]}.json").read_text())
    assert len(result["ensemble"]["members"]) == 2 and result["steps"] == 4
    assert result["metrics"]["main"] == result["ensemble"]["majority_vote"]["accuracy"]


def test_cost_counts_follow_the_config():
    fm = tiny_causal()  # H=32, 2 layers, 4 heads of 8, 2 kv heads -> kv_dim 16
    report = cost_report(fm, "tiny")
    rows = {r["method"]: r for r in report["rows"]}
    assert report["kv_dim"] == 16 and report["layers"] == 2
    assert rows["prompt tuning (P=100)"]["parameters"] == 100 * 32
    assert rows["prefix tuning (P=20)"]["parameters"] == 2 * 2 * 20 * 16
    assert rows["model tuning"]["parameters"] == sum(p.numel() for p in fm.model.parameters())
    assert rows["prompt tuning (P=100)"]["bytes_on_disk"] > 100 * 32 * 4  # tensor plus metadata header
    serving = [s for s in report["serving"] if s["tasks"] == 10]
    assert serving[0]["bytes"] < serving[-1]["bytes"]  # 10 prompts cost less than 10 model copies
    assert torch.is_tensor(fm.embedding_matrix)


def test_cli_lists_and_reports_bad_names_in_one_line(tmp_path):
    root = tmp_path / "experiments"
    write_study(root / "studies", "alpha", "  - {task: sst2, method: zero-shot}")
    cmd = [sys.executable, "-m", "softprompt.cli", "experiments"]
    listed = subprocess.run(cmd + ["list", "--dir", str(root)], capture_output=True, text=True, check=True)
    assert "todo  alpha/tiny__sst2__zero-shot" in listed.stdout and "0 of 1 variants done" in listed.stdout
    bad = subprocess.run(cmd + ["run", "nope", "--dir", str(root)], capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown study nope" in bad.stderr and "Traceback" not in bad.stderr


V2_BUDGET = ("{steps: 2, batch_size: 4, eval_every: 1, select_n: 12, report_limit: 16, lr_model_tuning: 1.0e-3, "
             "recipe: default}")


def test_v2_protocol_selects_on_a_train_hold_out_and_reports_once_with_per_example_scores(tmp_path):
    from softprompt.experiments import protocol
    from softprompt.tasks import get_task

    root = tmp_path / "experiments"
    (root / "studies").mkdir(parents=True)
    (root / "studies" / "v2.yaml").write_text(
        f"study: v2\nmodels: [tiny]\nbudget: {V2_BUDGET}\ninstructions: {{sst2: 'Sentiment?'}}\nvariants:\n"
        "  - {task: sst2, prompt_length: 4, method: [prompt-tuning, model-tuning, zero-shot, few-shot, majority], "
        "shots: 1}\n  - {task: sst2, prompt_length: 4, method: ensemble, k: 2}\n")
    variants = select(load_studies(root / "studies"), ["v2"])
    assert all(protocol.is_v2(v) for v in variants)
    sp = protocol.splits(get_task("sst2"), str(TINY_DATA), variants[0].budget)
    assert len(sp.select) == 12 and len(sp.report) == 16 and sp.report_split == "validation"
    assert not {e.input_text for e in sp.select} & {e.input_text for e in sp.train}  # held out of training
    summary = run_variants(variants, ResultPaths(root), data_dir=str(TINY_DATA), loader=tiny_loader, log=lambda _: None)
    assert len(summary.done) == 6 and not summary.failed, summary.failed
    for v in variants:
        result = json.loads((root / "results" / "v2" / f"{v.id}.json").read_text())
        m = result["metrics"]
        if v.kind is Kind.ENSEMBLE:  # members trained on the hold-out protocol, the vote scored on the report split
            assert m["split"] == "validation" and result["ensemble"]["examples"] == 16 and result["steps"] == 4
            continue
        assert m["split"] == "validation" and m["examples"] == 16 and m["selected_on"] == "train (hash hold-out)"
        assert len(m["per_example"]) == 16 and set(m["per_example"]) <= {0.0, 1.0}
        assert sum(m["per_example"]) / 16 == pytest.approx(m["main"])  # the scores add up to the metric
        if v.kind in (Kind.PROMPT_TUNING, Kind.MODEL_TUNING):
            assert 0.0 <= result["selection"] <= 1.0 and result["steps"] == 2
            assert [step for step, _ in result["curve"]] == [1, 2]  # the learning curve on the selection split


def test_v2_protocol_reports_a_task_file_on_a_hash_drawn_test_subset(tmp_path, real_data):
    from softprompt.experiments import protocol
    from softprompt.tasks import load_task_file

    task = load_task_file(Path(__file__).resolve().parents[1] / "examples" / "banking77.yaml")
    sp = protocol.splits(task, str(real_data), {"select_n": 50, "report_limit": 300})
    assert sp.report_split == "test" and sp.select_from.startswith("validation") and len(sp.report) == 300
    # test.csv is sorted by intent: its first 300 rows hold 8 intents; a hash-drawn subset holds most of them.
    assert len({e.target_text for e in sp.report}) > 60
    assert not {e.input_text for e in sp.select} & {e.input_text for e in sp.train}
