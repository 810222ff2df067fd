"""Section 5 (paper Table 3): prompt ensembles against their members; claim C7."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from softprompt.experiments import plots
from softprompt.experiments.evidence import (
    compare,
)
from softprompt.experiments.report_format import (
    NOT_ENOUGH,
    Result,
    main_of,
    mean,
    model_of,
    model_order,
    pct,
    pp,
    table,
)
from softprompt.experiments.sections.common import (
    Claim,
    Ctx,
    majority_note,
    ties_majority,
)
from softprompt.experiments.stats import (
    CLAIM_RULE,
    CONTRADICTED,
    HOLDS,
    Cell,
    claim_verdict,
)


def section_ensemble(results: list[Result], ctx: Ctx) -> tuple[list[str], list[Claim]]:
    """Table 3: average member, best member, majority vote, mean probability per task; C7."""
    cells: dict[tuple[float, str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in results:
        if isinstance(r.get("ensemble"), dict):
            cells[(model_order(model_of(r))[0], model_of(r), str(r.get("task")))].append(r["ensemble"])
    names = ("average", "best member", "majority vote", "mean probability")
    rows, groups, ev, checks, tied = [], [], [], [], []
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
            # One value per ensemble (seeds s..s+4): intervals over the ensembles.
            def part(name: str, runs: list[dict[str, Any]] = runs) -> Cell:
                blocks = [(e.get(name) or {}).get("metrics") if name == "best" else e.get(name) for e in runs]
                values = (main_of(b, str(e.get("main_metric"))) for b, e in zip(blocks, runs, strict=True))
                return Cell(tuple(v for v in values if v is not None))
            vote_cell = part("majority_vote")
            over_avg = compare(f"{key[1]} {key[2]}: vote − average member", vote_cell, part("average"), True)
            over_best = compare(f"{key[1]} {key[2]}: vote − best member", vote_cell, part("best"), True)
            # "matches or beats the best": the vote wholly below the best member contradicts it.
            checks.append(CONTRADICTED if over_best.verdict == CONTRADICTED else over_avg.verdict)
            ev += [over_avg.line("difference"), over_best.line("difference")]
    body = table(["model", "task", "k", "metric", "majority class", *names, "vote − avg (pp)", "vote − best (pp)"], rows)
    body += majority_note(tied)
    if groups:
        body += [ctx.figure("ensemble.png", "ensemble vs members", lambda p: plots.grouped_bars(
            p, "Prompt ensembling (Table 3)", [g[0] for g in groups],
            {name: [g[1][i] for g in groups] for i, name in enumerate(names)}, "main metric (%)")), ""]
    rule = (f"per task, over its ensembles (seeds s..s+4, s = 0, 5, 10): the interval of vote − average member above 0, "
            f"and vote − best member not wholly below 0; tasks where the vote scores the majority class left out; {CLAIM_RULE}")
    return body, [Claim("C7", claim_verdict(checks) if checks else NOT_ENOUGH,
                        f"holds on {checks.count(HOLDS)} of {len(checks)} tasks", rule, ev)]
