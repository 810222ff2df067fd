"""Result files grouped into cells (one configuration, all its seeds) and compared with intervals.

The report's claims are decided here, from `stats.py`'s intervals: a cell is every run of one (model, task,
column) — the column names the method and the knobs that make separate configurations — and its seeds (or
few-shot draws) are its repeated runs. A comparison of two cells is the interval of their difference and
the verdict that interval gives. A task is *informative* for a model when some method's interval lies above
the majority-class score: only there can a comparison say anything about skill.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from softprompt.experiments.report_format import Result, main_of, model_of, pct, pp
from softprompt.experiments.stats import (
    CONTRADICTED,
    HOLDS,
    INCONCLUSIVE,
    Cell,
    Interval,
    difference,
    verdict,
)

MARK = {HOLDS: "✓", CONTRADICTED: "✗", INCONCLUSIVE: "?"}


def cells_by(results: Iterable[Result], key: Callable[[Result], Any]) -> dict[Any, Cell]:
    """Group results by `key(r)` (None: skip) into cells: each result's main metric, and its per-example
    scores when every result of the cell has them."""
    values: dict[Any, list[float]] = defaultdict(list)
    scores: dict[Any, list[tuple[float, ...] | None]] = defaultdict(list)
    for r in results:
        k, v = key(r), main_of(r.get("metrics"))
        if k is None or v is None:
            continue
        values[k].append(v)
        per = (r.get("metrics") or {}).get("per_example")
        scores[k].append(tuple(per) if isinstance(per, list) else None)
    out = {}
    for k, vs in values.items():
        rows = scores[k]
        out[k] = Cell(tuple(vs), tuple(r for r in rows if r is not None) if all(r is not None for r in rows) else ())
    return out


def describe(cell: Cell | None) -> str:
    """'84.1 [82.0, 86.2] (3 seeds)' — percent, 95% interval, what it is over."""
    if cell is None:
        return "—"
    i = cell.interval
    if i.how == "single":
        return f"{pct(i.mean)} (1 run)"
    over = f"{i.n} seeds" if i.how == "seeds" else f"bootstrap over {i.n} examples"
    return f"{pct(i.mean)} [{pct(i.low)}, {pct(i.high)}] ({over})"


def describe_diff(d: Interval) -> str:
    if d.how == "single":
        return f"{pp(d.mean)} pp (no interval)"
    over = "Welch, seeds" if d.how == "seeds" else "paired bootstrap"
    return f"{pp(d.mean)} pp [{pp(d.low)}, {pp(d.high)}] ({over})"


@dataclass(frozen=True)
class Comparison:
    """`better − other` on one task: its interval, verdict, and whether the task counts (informative)."""

    label: str
    diff: Interval
    verdict: str
    informative: bool

    def line(self, what: str) -> str:
        note = "" if self.informative else " — task not informative (no method above the majority class): not counted"
        return f"{self.label}: {what}: {describe_diff(self.diff)} {MARK[self.verdict]}{note}"


def compare(label: str, better: Cell, other: Cell, informative: bool) -> Comparison:
    d = difference(better, other)
    return Comparison(label, d, verdict(d), informative)


def counted(comparisons: Sequence[Comparison]) -> list[str]:
    """The verdicts that count towards a claim: those on informative tasks."""
    return [c.verdict for c in comparisons if c.informative]


def is_informative(cells: dict[str, Cell], majority: float | None) -> bool:
    """True when some cell's interval lies wholly above the majority-class score (unknown majority: any cell
    with an interval counts as informative only if its low end is above 0)."""
    base = majority if majority is not None else 0.0
    return any(c.interval.low > base + 1e-9 and c.interval.how != "single" for c in cells.values())


def informative_lines(rows: Sequence[tuple[str, str, float | None, dict[str, Cell], bool]]) -> list[str]:
    """The per-task table: model, task, majority class, the best cell, informative or not."""
    from softprompt.experiments.report_format import table

    body = []
    for model, task, base, cells, ok in rows:
        best = max(cells.items(), key=lambda kv: kv[1].interval.mean, default=None)
        body.append([model, task, pct(base), f"{best[0]}: {describe(best[1])}" if best else "—", "yes" if ok else "no"])
    return table(["model", "task", "majority class", "best method (95% interval)", "informative"], body)


def curve_cells(results: Iterable[Result], knob: str) -> dict[str, tuple[tuple[str, str], dict[Any, Cell]]]:
    """Prompt-tuning results as series 'task (model)' (model named when there are several) -> ((model, task),
    knob value -> cell of its seeds), in model-size then task order."""
    from softprompt.experiments.report_format import is_pt, model_order, param

    rs = [r for r in results if is_pt(r) and isinstance(param(r, knob), int | float | str)]
    multi = len({model_of(r) for r in rs}) > 1
    cells = cells_by(rs, lambda r: (model_order(model_of(r)), model_of(r), str(r.get("task")), param(r, knob)))
    out: dict[str, tuple[tuple[str, str], dict[Any, Cell]]] = {}
    for (_, model, task, value), cell in sorted(cells.items(), key=lambda kv: (kv[0][:3], str(kv[0][3]))):
        name = f"{task} ({model})" if multi else task
        out.setdefault(name, ((model, task), {}))[1][value] = cell
    return out


def within(d: Interval, band: float) -> str:
    """`holds` when the whole interval lies inside [−band, +band] (a marginal difference), `contradicted`
    when it lies wholly outside it, else inconclusive."""
    if d.how == "single":
        return INCONCLUSIVE
    if -band <= d.low and d.high <= band:
        return HOLDS
    return CONTRADICTED if d.low > band or d.high < -band else INCONCLUSIVE


def both(*verdicts: str) -> str:
    """A check made of parts: holds when every part holds, contradicted when any part is, else inconclusive."""
    if CONTRADICTED in verdicts:
        return CONTRADICTED
    return HOLDS if all(v == HOLDS for v in verdicts) else INCONCLUSIVE

