"""Section 1 (paper Figure 1): task x method tables per model, informative tasks; claims C1 and C2."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from softprompt.experiments import plots
from softprompt.experiments.evidence import (
    MARK,
    Comparison,
    cells_by,
    compare,
    counted,
    describe_diff,
    informative_lines,
    is_informative,
)
from softprompt.experiments.report_format import (
    NOT_ENOUGH,
    Result,
    by_model,
    main_of,
    mean,
    model_of,
    model_order,
    pct,
    table,
)
from softprompt.experiments.sections.common import (
    DESIGN,
    METHOD_ORDER,
    PUBLISHED,
    PUBLISHED_SOURCE,
    Claim,
    Ctx,
    _tally,
    majority_note,
    method_column,
    ties_majority,
)
from softprompt.experiments.stats import (
    CLAIM_RULE,
    CONTRADICTED,
    HOLDS,
    INCONCLUSIVE,
    Cell,
    claim_verdict,
)


def methods_table(model: str, full: dict[Any, Cell], ctx: Ctx, results: Sequence[Result] = ()) -> list[str]:
    """One model's task x method table (mean ± the 95% interval's half-width; last row: the mean over the tasks
    with every method) and its bar plot with error bars."""
    cells = {k: c.interval.mean for k, c in full.items()}
    tasks = sorted({t for t, _ in cells})
    cols = sorted({c for _, c in cells}, key=lambda c: (METHOD_ORDER.index(c.split()[0]) if c.split()[0] in METHOD_ORDER else 9, c))

    def show(key: tuple[str, str]) -> str:
        cell = full.get(key)
        if cell is None:
            return "—"
        i = cell.interval
        return pct(i.mean) + (f" ± {100 * i.half_width:.1f}" if i.how != "single" and key[1] != "majority" else "")
    rows = [[t, *(show((t, c)) for c in cols)] for t in tasks]
    # The mean runs over the tasks that have every column, so that the columns average the same tasks.
    complete = [t for t in tasks if all(cells.get((t, c)) is not None for c in cols)]
    rows.append([f"**mean** ({len(complete)} of {len(tasks)} tasks: those with every method)",
                 *(pct(mean(cells.get((t, c)) for t in complete)) for c in cols)])
    slug = re.sub(r"[^a-z0-9]+", "-", model.lower()).strip("-")
    half = {c: [full[(t, c)].interval.half_width if (t, c) in full else None for t in tasks] for c in cols}
    return [f"### {model}", "", "Cells: mean ± half-width of the 95% interval (over seeds / few-shot draws; a single "
            "run: bootstrap over its examples).", "", *table(["task", *cols], rows), *at_majority(cells),
            *one_answer(results), ctx.figure(
        f"methods_{slug}.png", f"methods, {model}", lambda p: plots.grouped_bars(
            p, f"Methods — {model}", tasks, {c: [cells.get((t, c)) for t in tasks] for c in cols}, "main metric (%)",
            errors=half)), ""]


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


def _mt_column(rs: Sequence[Result], task: str) -> str | None:
    """Model tuning's column on a task: the learning rate whose runs scored best on the selection split
    (carved from train), never on the reported split; v1 results without a selection score: the best mean."""
    by_col: dict[str, list[float]] = defaultdict(list)
    for r in rs:
        if r.get("method") == "model-tuning" and str(r.get("task")) == task:
            score = r.get("selection", main_of(r.get("metrics")))
            if isinstance(score, int | float):
                by_col[method_column(r)].append(float(score))
    return max(by_col, key=lambda c: sum(by_col[c]) / len(by_col[c]), default=None)


def _shrinks(small: Comparison, large: Comparison) -> str:
    """The MT − PT gap is smaller at the larger model: holds when the two intervals do not overlap that way."""
    if "single" in (small.diff.how, large.diff.how):
        return INCONCLUSIVE
    return HOLDS if large.diff.high < small.diff.low else CONTRADICTED if large.diff.low > small.diff.high else INCONCLUSIVE


def scale_claim(gaps: dict[str, dict[str, Comparison]]) -> Claim:
    """C2: part 1, model tuning beats prompt tuning on each model (MT − PT interval per task); part 2, the gap
    shrinks from the smallest to the largest model (per task with both, non-overlapping gap intervals)."""
    order = sorted(gaps, key=model_order)
    per_model = [c for m in order for c in gaps[m].values()]
    part1 = claim_verdict(counted(per_model))
    evidence = [c.line("MT (best lr on selection) − PT") for c in per_model]
    part2 = NOT_ENOUGH
    if len(order) >= 2:
        small, large = gaps[order[0]], gaps[order[-1]]
        shared = [t for t in small if t in large and small[t].informative and large[t].informative]
        checks = [_shrinks(small[t], large[t]) for t in shared]
        part2 = claim_verdict(checks)
        evidence += [f"{t}: gap {order[0]} {describe_diff(small[t].diff)} → {order[-1]} {describe_diff(large[t].diff)} "
                     f"{MARK[v]}" for t, v in zip(shared, checks, strict=True)]
    if not per_model:
        verdict = NOT_ENOUGH
    elif part2 == NOT_ENOUGH:
        verdict = part1
    elif part1 == HOLDS and part2 == HOLDS:
        verdict = HOLDS
    elif CONTRADICTED in (part1, part2):
        verdict = "mixed" if HOLDS in (part1, part2) else CONTRADICTED
    else:
        verdict = INCONCLUSIVE
    summary = (f"part 1 (MT > PT) {part1}; part 2 (gap shrinks with scale) {part2}" if per_model
               else "no task with both model tuning and prompt tuning")
    rule = (f"part 1: per model and task, the interval of MT − PT; part 2: per task on both models, the larger model's "
            f"gap interval lies wholly below the smaller's (holds) or wholly above (contradicted). Each part: {CLAIM_RULE}. "
            "C2 holds when both parts hold; with one model part 1 decides")
    return Claim("C2", verdict, summary, rule, evidence)


def section_methods(results: list[Result], ctx: Ctx) -> tuple[list[str], list[Claim]]:
    """Figure 1: task x method per model, grouped bars; C1 (PT vs design) and C2 (MT − PT gap vs scale)."""
    body: list[str] = []
    c1: list[Comparison] = []
    gaps: dict[str, dict[str, Comparison]] = {}
    informative: list[tuple[str, str, float | None, dict[str, Cell], bool]] = []
    for model, rs in by_model(results):
        full = cells_by(rs, lambda r: (str(r.get("task")), method_column(r)))
        body += methods_table(model, full, ctx, rs)
        for t in sorted({t for t, _ in full}):
            tcells = {c: cell for (tt, c), cell in full.items() if tt == t and c != "majority"}
            base = full[(t, "majority")].values[0] if (t, "majority") in full else ctx.majority.get((model, t))
            ok = is_informative(tcells, base)
            informative.append((model, t, base, tcells, ok))
            pt = tcells.get("prompt-tuning")
            design = max((cell for c, cell in tcells.items() if c.split()[0] in DESIGN),
                         key=lambda cell: cell.interval.mean, default=None)
            if pt is not None and design is not None:
                c1.append(compare(f"{model} {t}", pt, design, ok))
            mt = _mt_column(rs, t)
            if pt is not None and mt is not None:
                gaps.setdefault(model, {})[t] = compare(f"{model} {t}", full[(t, mt)], pt, ok)
    published = [[t, v] for t, v in PUBLISHED.items() if any(t == row[1] for row in informative)]
    if published:
        body += [f"Published reference ({PUBLISHED_SOURCE}):", "", *table(["task", "published prompt tuning"], published)]
    body += _pilot_lines(results)
    body += ["### Which tasks can answer", "", "A task is informative for a model when some method's 95% interval lies "
             "wholly above the majority-class score; comparisons on the others are shown but not counted.", "",
             *informative_lines(informative)]
    rule = ("per model and task, PT − the better prompt design (zero-shot, or few-shot over its 3 draws, whichever "
            f"scores higher: the baseline's best case); {CLAIM_RULE}")
    return body, [Claim("C1", claim_verdict(counted(c1)) if c1 else NOT_ENOUGH, _tally(c1), rule,
                        [c.line("PT − best design") for c in c1]),
                  scale_claim(gaps)]


def _pilot_lines(results: Sequence[Result]) -> list[str]:
    """The budget's pilot: each prompt-tuning run's learning curve on the selection split (seed 0), so a
    reader sees whether the step budget let the curve flatten."""
    rows = [[model_of(r), r.get("task"), " · ".join(f"{step}: {pct(v)}" for step, v in r["curve"])]
            for r in sorted(results, key=lambda r: (model_of(r), str(r.get("task"))))
            if r.get("method") == "prompt-tuning" and r.get("seed") == 0 and r.get("curve")]
    if not rows:
        return []
    return ["### Pilot: learning curves (selection split, seed 0)", "",
            "Main metric on the selection split at each evaluation step; a curve still rising at the last step "
            "says the budget is short for that task.", "", *table(["model", "task", "step: main metric"], rows)]
