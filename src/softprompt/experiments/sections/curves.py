"""Sections 2 and 3 (paper Figure 3a/3b): prompt length and initialisation curves; claims C3, C4 and C5."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from softprompt.experiments import plots
from softprompt.experiments.evidence import (
    MARK,
    Comparison,
    both,
    compare,
    counted,
    curve_cells,
    describe,
    describe_diff,
    is_informative,
    within,
)
from softprompt.experiments.report_format import (
    NOT_ENOUGH,
    Result,
    table,
)
from softprompt.experiments.sections.common import (
    INITS,
    Claim,
    Ctx,
    _tally,
)
from softprompt.experiments.stats import (
    CLAIM_RULE,
    HOLDS,
    Cell,
    claim_verdict,
    difference,
)


def _curve_table(series: dict[str, tuple[tuple[str, str], dict[Any, Cell]]], values: Sequence[Any], label: str) -> list[str]:
    return table(["task", *(f"{label}{v}" for v in values)],
                 [[n, *(describe(cells.get(v)) if v in cells else "—" for v in values)] for n, (_, cells) in series.items()])


def _informative_series(key: tuple[str, str], cells: dict[Any, Cell], ctx: Ctx) -> bool:
    return is_informative(cells, ctx.majority.get(key))


def section_length(results: list[Result], ctx: Ctx) -> tuple[list[str], list[Claim]]:
    """Figure 3a: main metric vs prompt length, one line per task (and model); C3 and C4."""
    series = curve_cells(results, "prompt_length")
    lengths = sorted({p for _, cells in series.values() for p in cells})
    body = _curve_table(series, lengths, "P=")
    if series:
        means = {n: {p: c.interval.mean for p, c in cells.items()} for n, (_, cells) in series.items()}
        half = {n: {p: c.interval.half_width for p, c in cells.items()} for n, (_, cells) in series.items()}
        body += [ctx.figure("length.png", "main metric vs prompt length", lambda p: plots.lines(
            p, "Prompt length (Figure 3a), 95% intervals", means, "prompt length P (log scale)", "main metric (%)",
            errors=half)), ""]
    c3: list[Comparison] = []
    c4: list[Comparison] = []
    marginal: list[tuple[str, str, bool]] = []
    for name, (key, cells) in series.items():
        ok = _informative_series(key, cells, ctx)
        longer = {p: c for p, c in cells.items() if p >= 5}
        if 1 in cells and longer:
            best = max(longer, key=lambda p: longer[p].interval.mean)
            c3.append(compare(f"{name}: P={best} − P=1 (helps)", longer[best], cells[1], ok))
        long = {p: cells[p] for p in (100, 150) if p in cells}
        if 20 in cells and long:
            best = max(long, key=lambda p: long[p].interval.mean)
            d = difference(long[best], cells[20])
            marginal.append((f"{name}: P={best} − P=20 (marginal: inside ±2 pp): {describe_diff(d)}", within(d, 0.02), ok))
        if 100 in cells and 150 in cells:
            c4.append(compare(f"{name}: P=100 − P=150", cells[100], cells[150], ok))
    checks3 = [both(*(c.verdict for c in c3 if c.label.startswith(n + ":")),
                    *(v for line, v, _ in marginal if line.startswith(n + ":")))
               for n, (key, cells) in series.items() if _informative_series(key, cells, ctx)]
    ev3 = [c.line("difference") for c in c3] + [f"{line} {MARK[v]}" + ("" if ok else " — not informative")
                                                 for line, v, ok in marginal]
    rule3 = (f"per task, P≥5 (best) − P=1 > 0 and best(P∈{{100,150}}) − P=20 inside ±2 pp (both parts); {CLAIM_RULE}")
    rule4 = f"per task, the interval of P=100 − P=150; {CLAIM_RULE}"
    return body, [Claim("C3", claim_verdict(checks3) if series else NOT_ENOUGH,
                        f"{checks3.count(HOLDS)} of {len(checks3)} informative tasks pass both parts", rule3, ev3),
                  Claim("C4", claim_verdict(counted(c4)) if c4 else NOT_ENOUGH, _tally(c4), rule4,
                        [c.line("difference") for c in c4])]


def section_init(results: list[Result], ctx: Ctx) -> tuple[list[str], list[Claim]]:
    """Figure 3b: the three initialisations per task; C5 (their ranking)."""
    series = curve_cells(results, "init")
    inits = [i for i in INITS if any(i in cells for _, cells in series.values())]
    inits += sorted({str(i) for _, cells in series.values() for i in cells} - set(inits))
    body = _curve_table(series, inits, "")
    if series:
        groups = list(series)
        body += [ctx.figure("init.png", "main metric per initialisation", lambda p: plots.grouped_bars(
            p, "Prompt initialisation (Figure 3b), 95% intervals", groups,
            {i: [series[g][1][i].interval.mean if i in series[g][1] else None for g in groups] for i in inits},
            "main metric (%)",
            errors={i: [series[g][1][i].interval.half_width if i in series[g][1] else None for g in groups] for i in inits})), ""]
    evidence, checks = [], []
    for name, (key, cells) in series.items():
        if all(i in cells for i in INITS):
            top = compare(f"{name}: class-labels − sampled-vocab", cells["class-labels"], cells["sampled-vocab"], True)
            low = compare(f"{name}: sampled-vocab − random-uniform", cells["sampled-vocab"], cells["random-uniform"], True)
            ok = _informative_series(key, cells, ctx)
            evidence += [top.line("difference"), low.line("difference")] + ([] if ok else [f"{name}: not informative, not counted"])
            if ok:
                checks.append(both(top.verdict, low.verdict))
    rule = f"per task with all three inits, class-labels − sampled-vocab > 0 and sampled-vocab − random-uniform > 0; {CLAIM_RULE}"
    return body, [Claim("C5", claim_verdict(checks) if checks else NOT_ENOUGH,
                        f"ranking holds on {checks.count(HOLDS)} of {len(checks)} informative tasks", rule, evidence)]
