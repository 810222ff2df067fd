"""One function per study section of the report: its tables and plots, and verdicts on the paper's claims it tests.

Each `section_<study>(results, ctx)` returns the section's markdown lines and one `Claim` per id in `CLAIMS` that it
checks, with the rule that decided the verdict written next to the computation. `report.py` assembles the page;
drawing is in `plots.py`.
"""

from __future__ import annotations

import os
import re
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from softprompt.experiments import plots
from softprompt.experiments.report_format import (
    NOT_ENOUGH,
    SHARE_RULE,
    Result,
    averaged,
    by_model,
    curves,
    fmt_bytes,
    main_of,
    mark,
    mean,
    model_of,
    model_order,
    param,
    pct,
    pp,
    share_verdict,
    table,
)

# (study, claim) per id; the rule text is written where the verdict is computed, so the two cannot drift.
CLAIMS = {
    "C1": ("methods", "Prompt tuning beats prompt design (zero-/few-shot)"),
    "C2": ("methods", "At small scale (<1B parameters) model tuning beats prompt tuning; the gap closes with scale"),
    "C3": ("length", "Going from 1 token to more helps; gains past 20 tokens are marginal"),
    "C4": ("length", "Very long prompts (150) can be slightly worse than 100"),
    "C5": ("init", "Class-label init is best, random-uniform worst, at small scale"),
    "C6": ("transfer", "Prompt tuning transfers better out of domain than model tuning"),
    "C7": ("ensemble", "Majority vote of 5 prompts beats the average member and matches or beats the best"),
    "C8": ("interpret", "With class-label init, the class labels persist among the neighbours after training"),
    "C9": ("interpret", "Learned prompt tokens cluster (many positions share nearest neighbours)"),
    "C10": ("cost", "Prompt tuning needs < 0.01% of the model's parameters per task (at T5-XXL)"),
}
METHOD_ORDER = ("majority", "zero-shot", "few-shot", "prompt-tuning", "model-tuning")
DESIGN = ("zero-shot", "few-shot")
INITS = ("random-uniform", "sampled-vocab", "class-labels")
IN_DOMAIN_CONTROLS = {("sst2", "mr")}  # MR is movie reviews like SST-2: the in-domain control, not a transfer
PAPER = "paper (T5-XXL), quoted from memory — check against the paper"
# Table 2: (train, eval) -> ((model tuning acc, F1), (prompt tuning acc, F1)).
PAPER_TABLE2 = {("qqp", "mrpc"): ((73.1, 81.2), (76.3, 84.3)), ("mrpc", "qqp"): ((74.9, 70.9), (75.4, 69.7))}
# Table 1 (F1, trained on SQuAD): (eval set, model tuning, prompt tuning, PT − MT).
PAPER_TABLE1 = [("SQuAD (in-domain)", "94.9", "94.8", "-0.1"), ("TextbookQA", "", "", "+12.5"), ("BioASQ", "", "", "+1.2"),
                ("RACE", "", "", "+0.9"), ("RE", "", "", "+0.4"), ("DuoRC", "", "", "-1.2"), ("DROP", "", "", "-1.8")]


@dataclass(frozen=True)
class Claim:
    """One of the paper's claims, checked against our numbers by a stated rule."""

    cid: str
    verdict: str
    summary: str  # one line for the summary table
    rule: str
    evidence: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Ctx:
    """Where plots go, how the markdown file links to them, and the majority-class scores (from the methods
    study, keyed by (model label, task)) that other studies compare with."""

    plots_dir: Path
    md_dir: Path
    majority: dict[tuple[str, str], float] = field(default_factory=dict)

    def figure(self, name: str, alt: str, draw: Callable[[Path], object]) -> str:
        """Draw into plots_dir/name and return the markdown image link; a failed plot is a note, not a crash."""
        try:
            draw(self.plots_dir / name)
        except Exception as err:  # noqa: BLE001 — a broken plot must not cost the whole report
            return f"_(plot {name} not drawn: {type(err).__name__}: {err})_"
        return f"![{alt}]({Path(os.path.relpath(self.plots_dir / name, self.md_dir)).as_posix()})"


def method_column(r: Result) -> str:
    """A methods-table column: the method, plus the knobs that make separate columns (few-shot's shots, an lr)."""
    label = str(r.get("method", "?")) + (f" k={param(r, 'shots')}" if r.get("method") == "few-shot" else "")
    return label + (f" lr={param(r, 'lr'):g}" if isinstance(param(r, "lr"), int | float) else "")


def best_of(cells: dict[Any, float], task: str, methods: Sequence[str]) -> float | None:
    """The best column of the given methods on a task (a method's best configuration stands for it)."""
    return max((v for (t, c), v in cells.items() if t == task and c.split()[0] in methods), default=None)


def methods_table(model: str, cells: dict[Any, float], ctx: Ctx, results: Sequence[Result] = ()) -> list[str]:
    """One model's task x method table (last row: the mean over the tasks with every method) and its bar plot."""
    tasks = sorted({t for t, _ in cells})
    cols = sorted({c for _, c in cells}, key=lambda c: (METHOD_ORDER.index(c.split()[0]) if c.split()[0] in METHOD_ORDER else 9, c))
    rows = [[t, *(pct(cells.get((t, c))) for c in cols)] for t in tasks]
    # The mean runs over the tasks that have every column, so that the columns average the same tasks.
    complete = [t for t in tasks if all(cells.get((t, c)) is not None for c in cols)]
    rows.append([f"**mean** ({len(complete)} of {len(tasks)} tasks: those with every method)",
                 *(pct(mean(cells.get((t, c)) for t in complete)) for c in cols)])
    slug = re.sub(r"[^a-z0-9]+", "-", model.lower()).strip("-")
    return [f"### {model}", "", *table(["task", *cols], rows), *at_majority(cells), *one_answer(results), ctx.figure(
        f"methods_{slug}.png", f"methods, {model}", lambda p: plots.grouped_bars(
            p, f"Methods — {model}", tasks, {c: [cells.get((t, c)) for t in tasks] for c in cols}, "main metric (%)")), ""]


def ties_majority(value: float | None, base: float | None) -> bool:
    """True when a score equals the majority-class baseline's (to 0.05 pp): most likely one answer for every example."""
    return value is not None and base is not None and abs(value - base) < 5e-4


def majority_note(hits: Sequence[str]) -> list[str]:
    """The note naming the results at the majority-class score (none: no note)."""
    return [f"At the majority-class score (most likely one answer for every example): {', '.join(hits)}.", ""] if hits else []


def at_majority(cells: dict[Any, float]) -> list[str]:
    """A note naming the cells whose score equals the majority-class baseline's: a method there most likely
    answers one class for every example, so a tie with another method is no evidence of skill."""
    return majority_note([f"{t} {c}" for (t, c), v in sorted(cells.items())
                          if c != "majority" and ties_majority(v, cells.get((t, "majority")))])


def one_answer(results: Sequence[Result], share: float = 0.95) -> list[str]:
    """A note naming the results that gave one answer for at least `share` of their examples (from the answer
    counts that results record since the counts were added; older results have none)."""
    hits = []
    for r in sorted(results, key=lambda r: (str(r.get("task")), str(r.get("variant")))):
        answers = (r.get("metrics") or {}).get("answers") or {}
        total = sum(answers.values())
        if r.get("method") == "majority" or not total:
            continue
        top = max(answers, key=answers.__getitem__)
        if answers[top] >= share * total:
            seed = f" seed {r.get('seed')}" if r.get("method") == "few-shot" else ""
            hits.append(f"{r.get('task')} {method_column(r)}{seed} ({top!r} {answers[top] / total:.0%})")
    if not hits:
        return []
    return [f"One answer for at least {share:.0%} of the examples: {', '.join(hits)}.", ""]


def scale_claim(gaps: dict[str, tuple[float, int]]) -> Claim:
    """C2 from each model's mean MT − PT gap (and the number of tasks it is over)."""
    evidence = [f"{m}: mean MT − PT = {pp(g)} pp over {n} tasks ({'model tuning better' if g > 0 else 'prompt tuning as good or better'})"
                for m, (g, n) in gaps.items()]
    part1, part1_fails = all(g > 0 for g, _ in gaps.values()), not any(g > 0 for g, _ in gaps.values())
    order = sorted(gaps, key=model_order)
    if not gaps:
        verdict, summary = NOT_ENOUGH, "no task with both MT and PT"
    elif len(order) == 1:
        verdict = "holds" if part1 else "does not hold"
        summary = f"gap {pp(gaps[order[0]][0])} pp ({order[0]}); scale part needs a second model"
        evidence.append("Part 2 (gap vs scale) needs results from two models.")
    else:
        small, large = gaps[order[0]][0], gaps[order[-1]][0]
        shrinks = large < small
        verdict = "holds" if part1 and shrinks else "does not hold" if part1_fails and not shrinks else "mixed"
        summary = f"gap {pp(small)} → {pp(large)} pp ({order[0]} → {order[-1]})"
        evidence.append(f"Part 2: gap {order[0]} {pp(small)} pp → {order[-1]} {pp(large)} pp: "
                        f"{'shrinks' if shrinks else 'does not shrink'}.")
    rule = ("part 1: per model, mean(MT) − mean(PT) over tasks with both (> 0: model tuning better, as the paper finds "
            "below 1B); part 2: the gap of the largest model is smaller than that of the smallest. Holds if part 1 holds "
            "for every model and the gap shrinks; does not hold if it fails for every model and does not shrink; else "
            "mixed. With one model, part 1 alone decides.")
    return Claim("C2", verdict, summary, rule, evidence)


def section_methods(results: list[Result], ctx: Ctx) -> tuple[list[str], list[Claim]]:
    """Figure 1: task x method per model, grouped bars; C1 (PT vs design) and C2 (MT − PT gap vs scale)."""
    body: list[str] = []
    evidence: list[str] = []
    wins = checks = 0
    gaps: dict[str, tuple[float, int]] = {}
    for model, rs in by_model(results):
        cells = averaged(((str(r.get("task")), method_column(r)), main_of(r.get("metrics"))) for r in rs)
        body += methods_table(model, cells, ctx, rs)
        diffs = []
        for t in sorted({t for t, _ in cells}):
            ptv, design, mtv = (best_of(cells, t, m) for m in (["prompt-tuning"], DESIGN, ["model-tuning"]))
            if ptv is not None and design is not None:
                checks, wins = checks + 1, wins + (ptv > design)
                evidence.append(f"{model} {t}: PT {pct(ptv)} vs best design {pct(design)} {mark(ptv > design)}")
            if ptv is not None and mtv is not None:
                diffs.append(mtv - ptv)
        if diffs:
            gaps[model] = (sum(diffs) / len(diffs), len(diffs))
    rule = f"on each task with both, PT > max(zero-shot, few-shot) (each method's best configuration); {SHARE_RULE}"
    return body, [Claim("C1", share_verdict(wins, checks), f"PT beats design on {wins}/{checks} tasks", rule, evidence),
                  scale_claim(gaps)]


def section_length(results: list[Result], ctx: Ctx) -> tuple[list[str], list[Claim]]:
    """Figure 3a: main metric vs prompt length, one line per task (and model); C3 and C4."""
    series, _ = curves(results, "prompt_length")
    lengths = sorted({p for s in series.values() for p in s})
    body = table(["task", *(f"P={p}" for p in lengths)], [[n, *(pct(s.get(p)) for p in lengths)] for n, s in series.items()])
    if series:
        body += [ctx.figure("length.png", "main metric vs prompt length", lambda p: plots.lines(
            p, "Prompt length (Figure 3a)", series, "prompt length P (log scale)", "main metric (%)")), ""]
    ev3, ev4, ok3, n3, ok4, n4 = [], [], 0, 0, 0, 0
    for name, s in series.items():
        longer = [v for p, v in s.items() if p >= 5]
        if 1 in s and longer:
            gain = max(longer) - s[1]
            n3, ok3 = n3 + 1, ok3 + (gain > 0.01)
            ev3.append(f"{name}: best(P≥5) − P=1 = {pp(gain)} pp {mark(gain > 0.01)} (helps)")
        long = [s[p] for p in (100, 150) if p in s]
        if 20 in s and long:
            diff = max(long) - s[20]
            n3, ok3 = n3 + 1, ok3 + (abs(diff) <= 0.02)
            ev3.append(f"{name}: best(P∈{{100,150}}) − P=20 = {pp(diff)} pp {mark(abs(diff) <= 0.02)} (marginal)")
        if 100 in s and 150 in s:
            n4, ok4 = n4 + 1, ok4 + (s[150] < s[100])
            ev4.append(f"{name}: P=150 {pct(s[150])} vs P=100 {pct(s[100])} {mark(s[150] < s[100])}")
    rule3 = f"per task, 'helps': best(P≥5) − P=1 > 1 pp; 'marginal': |best(P∈{{100,150}}) − P=20| ≤ 2 pp; {SHARE_RULE}"
    rule4 = f"per task, P=150 < P=100; {SHARE_RULE}"
    return body, [Claim("C3", share_verdict(ok3, n3), f"{ok3}/{n3} checks pass", rule3, ev3),
                  Claim("C4", share_verdict(ok4, n4), f"P=150 < P=100 on {ok4}/{n4} tasks", rule4, ev4)]


def section_init(results: list[Result], ctx: Ctx) -> tuple[list[str], list[Claim]]:
    """Figure 3b: the three initialisations per task; C5 (their ranking)."""
    series, _ = curves(results, "init")
    inits = [i for i in INITS if any(i in s for s in series.values())]
    inits += sorted({str(i) for s in series.values() for i in s} - set(inits))
    body = table(["task", *inits], [[n, *(pct(s.get(i)) for i in inits)] for n, s in series.items()])
    if series:
        groups = list(series)
        body += [ctx.figure("init.png", "main metric per initialisation", lambda p: plots.grouped_bars(
            p, "Prompt initialisation (Figure 3b)", groups, {i: [series[g].get(i) for g in groups] for i in inits},
            "main metric (%)")), ""]
    evidence, ok, n = [], 0, 0
    for name, s in series.items():
        if all(i in s for i in INITS):
            ranking = sorted(INITS, key=lambda i: -s[i])
            good = ranking[0] == "class-labels" and ranking[-1] == "random-uniform"
            n, ok = n + 1, ok + good
            evidence.append(f"{name}: " + " > ".join(f"{i} {pct(s[i])}" for i in ranking) + f" {mark(good)}")
    rule = f"per task with all three inits, class-labels ranks first and random-uniform last; {SHARE_RULE}"
    return body, [Claim("C5", share_verdict(ok, n), f"expected ranking on {ok}/{n} tasks", rule, evidence)]


def section_transfer(results: list[Result], ctx: Ctx) -> tuple[list[str], list[Claim]]:
    """Tables 1 and 2: PT vs MT on each train → eval pair (in-domain, control, out-of-domain); C6."""
    metrics: dict[tuple[float, str, str, str, str], list[Any]] = defaultdict(list)
    for r in results:
        model, train = model_of(r), str(r.get("task"))
        transfer = r.get("transfer") if isinstance(r.get("transfer"), dict) else {}
        for target, m in [(train, r.get("metrics")), *sorted(transfer.items())]:
            metrics[(model_order(model)[0], model, train, str(target), str(r.get("method")))].append(m)

    def value(key: tuple[float, str, str, str], method: str, name: str | None = None) -> float | None:
        return mean(main_of(m if name is None else (m or {}).get("all"), name) for m in metrics.get((*key, method), []))
    pairs = sorted({k[:4] for k in metrics}, key=lambda k: (k[0], k[1], k[2], k[3] != k[2], k[3]))
    rows, groups, ev, ok, n = [], [], [], 0, 0
    for key in pairs:
        _, model, train, target = key
        kind = "in-domain" if target == train else "in-domain control" if (train, target) in IN_DOMAIN_CONTROLS else "out-of-domain"
        ptv, mtv = value(key, "prompt-tuning"), value(key, "model-tuning")
        diff = None if ptv is None or mtv is None else ptv - mtv
        metric = next((m.get("main_metric") for m in metrics.get((*key, "prompt-tuning"), []) + metrics.get((*key, "model-tuning"), [])
                       if isinstance(m, dict)), "")
        rows.append([model, f"{train} → {target}", kind, metric, pct(ptv), pct(mtv), pp(diff)])
        groups.append((f"{train}→{target}" + (f" ({model})" if len({p[1] for p in pairs}) > 1 else ""), ptv, mtv))
        if kind == "out-of-domain" and diff is not None:
            n, ok = n + 1, ok + (diff > 0)
            ev.append(f"{model} {train} → {target}: PT {pct(ptv)} vs MT {pct(mtv)} ({pp(diff)} pp) {mark(diff > 0)}")
    body = table(["model", "train → eval", "kind", "metric", "prompt tuning", "model tuning", "PT − MT (pp)"], rows)
    if groups:
        body += [ctx.figure("transfer.png", "PT vs MT per train → eval pair", lambda p: plots.grouped_bars(
            p, "Domain transfer (Tables 1, 2)", [g[0] for g in groups],
            {"prompt tuning": [g[1] for g in groups], "model tuning": [g[2] for g in groups]}, "main metric (%)")), ""]
    ours = []
    for (train, target), (paper_mt, paper_pt) in PAPER_TABLE2.items():
        for key in [k for k in pairs if k[2:] == (train, target)] or [(0.0, "—", train, target)]:
            acc_f1 = ["/".join(pct(value(key, meth, name)) for name in ("accuracy", "f1")) for meth in ("prompt-tuning", "model-tuning")]
            ours.append([f"{train} → {target}", key[1], *acc_f1, "{:.1f} / {:.1f}".format(*paper_pt), "{:.1f} / {:.1f}".format(*paper_mt)])
    body += [f"Accuracy / F1 beside Table 2 ({PAPER}):", "",
             *table(["train → eval", "model", "ours PT", "ours MT", "paper PT", "paper MT"], ours),
             f"Table 1, trained on SQuAD, F1 ({PAPER}):", "",
             *table(["eval set", "paper MT", "paper PT", "paper PT − MT"], PAPER_TABLE1)]
    rule = (f"on each out-of-domain pair with both methods (not the in-domain row, not the control {sorted(IN_DOMAIN_CONTROLS)}), "
            f"PT main > MT main; {SHARE_RULE}")
    return body, [Claim("C6", share_verdict(ok, n), f"PT better on {ok}/{n} out-of-domain pairs", rule, ev)]


def section_ensemble(results: list[Result], ctx: Ctx) -> tuple[list[str], list[Claim]]:
    """Table 3: average member, best member, majority vote, mean probability per task; C7."""
    cells: dict[tuple[float, str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in results:
        if isinstance(r.get("ensemble"), dict):
            cells[(model_order(model_of(r))[0], model_of(r), str(r.get("task")))].append(r["ensemble"])
    names = ("average", "best member", "majority vote", "mean probability")
    rows, groups, ev, ok, n, tied = [], [], [], 0, 0, []
    for key in sorted(cells):
        runs = cells[key]
        def get(part: str, runs: list[dict[str, Any]] = runs) -> float | None:
            return mean(main_of((e.get(part) or {}).get("metrics") if part == "best" else e.get(part), str(e.get("main_metric")))
                        for e in runs)
        avg, best, vote, prob = (get(p) for p in ("average", "best", "majority_vote", "mean_probability"))
        base = ctx.majority.get((key[1], key[2]))
        rows.append([key[1], key[2], runs[0].get("k", len(runs[0].get("members", []))), runs[0].get("main_metric"),
                     pct(base), pct(avg), pct(best), pct(vote), pct(prob),
                     pp(None if vote is None or avg is None else vote - avg),
                     pp(None if vote is None or best is None else vote - best)])
        groups.append((key[2] + (f" ({key[1]})" if len({k[1] for k in cells}) > 1 else ""), [avg, best, vote, prob]))
        if ties_majority(vote, base):
            # A vote at the majority-class score most likely answers one class for every example (its members
            # did): beating the average member there says nothing about ensembling, so the check skips it.
            tied.append(f"{key[1]} {key[2]} majority vote")
            ev.append(f"{key[1]} {key[2]}: vote {pct(vote)} = majority class {pct(base)}, not counted "
                      f"(average {pct(avg)}, best {pct(best)})")
        elif None not in (avg, best, vote):
            good = vote > avg and vote >= best - 0.005  # type: ignore[operator]
            n, ok = n + 1, ok + good
            ev.append(f"{key[1]} {key[2]}: vote {pct(vote)} vs average {pct(avg)}, best {pct(best)} {mark(good)}")
    body = table(["model", "task", "k", "metric", "majority class", *names, "vote − avg (pp)", "vote − best (pp)"], rows)
    body += majority_note(tied)
    if groups:
        body += [ctx.figure("ensemble.png", "ensemble vs members", lambda p: plots.grouped_bars(
            p, "Prompt ensembling (Table 3)", [g[0] for g in groups],
            {name: [g[1][i] for g in groups] for i, name in enumerate(names)}, "main metric (%)")), ""]
    rule = (f"per task, vote > average member and vote ≥ best member − 0.5 pp, tasks where the vote scores the "
            f"majority class left out; {SHARE_RULE}")
    return body, [Claim("C7", share_verdict(ok, n), f"vote wins on {ok}/{n} tasks", rule, ev)]


def section_interpret(results: list[Result], ctx: Ctx) -> tuple[list[str], list[Claim]]:
    """§7: label words among each position's top-5 neighbours, init vs trained, and clustering; C8, C9."""
    found = [r for r in results if isinstance((r.get("interpretation") or {}).get("trained"), dict)]

    def words(report: Any) -> dict[str, int]:
        summary = (report or {}).get("summary") or {}
        return {w: len(pos) for w, pos in (summary.get("label_words") or {}).items()}

    def shared(report: Any) -> str:
        s = (report or {}).get("summary") or {}
        return f"{s.get('shared_top1_positions', 0)}/{s['positions']}" if "positions" in s else "—"
    rows, ev8, ok8, n8, fractions, init_fractions = [], [], 0, 0, [], []
    for r in found:
        init, trained = r["interpretation"].get("init"), r["interpretation"]["trained"]
        w0, w1 = words(init), words(trained)
        rows.append([f"{r.get('study')}/{r['variant']}", model_of(r), r.get("task"), param(r, "init"), param(r, "prompt_length"),
                     ", ".join(f"{w} {c}" for w, c in w0.items()) or "—", ", ".join(f"{w} {c}" for w, c in w1.items()) or "—",
                     f"{shared(init)} → {shared(trained)}"])
        for report, out in ((trained, fractions), (init, init_fractions)):
            s = (report or {}).get("summary") or {}
            if s.get("positions"):
                out.append(s.get("shared_top1_positions", 0) / s["positions"])
        at_init = [w for w, c in w0.items() if c]
        if param(r, "init") == "class-labels" and at_init:
            kept = all(w1.get(w) for w in at_init)
            n8, ok8 = n8 + 1, ok8 + kept
            ev8.append(f"{r['variant']}: at init {', '.join(at_init)}; after training "
                       f"{', '.join(w for w in at_init if w1.get(w)) or 'none'} {mark(kept)}")
    body = table(["result", "model", "task", "init", "P", "label words at init (positions)",
                  "label words trained (positions)", "shared top-1 positions, init → trained"], rows)
    example = next((r for r in found if param(r, "init") == "class-labels"), found[0] if found else None)
    if example is not None:
        neighbours = example["interpretation"]["trained"].get("neighbours") or []
        body += [f"Nearest tokens (cosine, top-5) of the first positions of the trained prompt `{example['variant']}`:", "",
                 *table(["position", "neighbours (token score)"], [[i, " · ".join(f"{n.get('token')!r} {n.get('score', 0):.2f}" for n in row)]
                                                                   for i, row in enumerate(neighbours[:5])])]
    rule8 = f"per class-label-init prompt with label words among its init neighbours, every such word is still found after training; {SHARE_RULE}"
    frac, frac0 = mean(fractions), mean(init_fractions)
    verdict9 = NOT_ENOUGH if frac is None else "holds" if frac > 0.1 else "does not hold" if frac < 0.02 else "see numbers"
    ev9 = [f"mean shared top-1 fraction after training {pct(frac)}% over {len(fractions)} prompts (at init: {pct(frac0)}%)"]
    rule9 = "mean over trained prompts of shared_top1_positions / positions: > 10% holds, < 2% does not hold, else see numbers"
    return body, [Claim("C8", share_verdict(ok8, n8), f"labels kept in {ok8}/{n8} prompts", rule8, ev8),
                  Claim("C9", verdict9, f"{pct(frac)}% of positions share their top-1 token", rule9, ev9)]


def section_cost(results: list[Result], ctx: Ctx) -> tuple[list[str], list[Claim]]:
    """Figure 4 and §2: parameters and bytes per task per method, serving N tasks; C10 (the P=100 fraction)."""
    costs = {c.get("model_label") or model_of(r): c for r in results if isinstance(c := r.get("cost"), dict)}
    body: list[str] = []
    ev, fractions = [], []
    for model in sorted(costs, key=model_order):
        c = costs[model]
        body += [f"### {model}", "", f"H={c.get('H')}, layers={c.get('layers')}, kv_dim={c.get('kv_dim')}, "
                 f"total parameters={c.get('total_parameters', 0):,}.", "",
                 *table(["method", "parameters per task", "% of model", "fp32", "on disk"],
                        [[x.get("method"), f"{x.get('parameters', 0):,}", f"{100 * x.get('fraction_of_model', 0):.3g}%",
                          fmt_bytes(x.get("bytes_fp32")), fmt_bytes(x.get("bytes_on_disk"))] for x in c.get("rows", [])]),
                 "Serving N tasks from one machine:", "",
                 *table(["tasks", "method", "memory"], [[s.get("tasks"), s.get("method"), fmt_bytes(s.get("bytes"))]
                                                        for s in c.get("serving", [])])]
        for x in c.get("rows", []):
            if re.search(r"prompt tuning.*P\s*=\s*100\b", str(x.get("method")), re.IGNORECASE):
                fractions.append(x.get("fraction_of_model", 1.0))
                ev.append(f"{model}: prompt tuning at P=100 trains {x.get('parameters', 0):,} parameters, "
                          f"{100 * x.get('fraction_of_model', 0):.3g}% of the model")
    if costs:
        methods = list(dict.fromkeys(str(x.get("method")) for c in costs.values() for x in c.get("rows", [])))
        values = {model: [next((float(x["parameters"]) for x in costs[model].get("rows", []) if x.get("method") == meth), None)
                          for meth in methods] for model in sorted(costs, key=model_order)}
        body += [ctx.figure("cost.png", "parameters per task per method (log scale)", lambda p: plots.grouped_bars(
            p, "Task-specific parameters (Figure 4)", methods, values, "parameters per task", percent=False, log=True,
            legend=True)), ""]
    verdict = NOT_ENOUGH if not fractions else "holds" if max(fractions) < 0.001 else "see numbers"
    rule = ("at our scale the paper's < 0.01% cannot be expected (fewer parameters per model); holds if prompt tuning at "
            "P=100 is < 0.1% of the model for every model, else see numbers")
    summary = ", ".join(f"{100 * f:.3g}%" for f in fractions) or "no cost result"
    return body, [Claim("C10", verdict, f"P=100 fraction: {summary}", rule, ev)]


SECTIONS: dict[str, Callable[[list[Result], Ctx], tuple[list[str], list[Claim]]]] = {
    "methods": section_methods, "length": section_length, "init": section_init, "transfer": section_transfer,
    "ensemble": section_ensemble, "interpret": section_interpret, "cost": section_cost,
}
