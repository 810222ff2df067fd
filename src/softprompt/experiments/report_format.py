"""Numbers out of result dicts, formatted for the report: field access, averages, percentages, tables, verdicts.

Shared by `report.py` (the page) and `sections.py` (one function per study), so that neither imports the other.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Hashable, Iterable, Sequence
from typing import Any

Result = dict[str, Any]
NOT_ENOUGH = "not enough results"
SHARE_RULE = "holds if ≥ 2/3 of these checks pass, does not hold if ≤ 1/3, else mixed"


def main_of(metrics: Any, key: str | None = None) -> float | None:
    """`metrics["main"]` (or `metrics[key]` for a flat metric -> value dict), None when absent."""
    value = metrics.get(key or "main") if isinstance(metrics, dict) else None
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def model_of(r: Result) -> str:
    return str(r.get("model_label") or r.get("model") or "?")


def param(r: Result, key: str) -> Any:
    return (r.get("params") or {}).get(key)


def is_pt(r: Result) -> bool:
    return r.get("method", "prompt-tuning") == "prompt-tuning"


def model_order(label: str) -> tuple[float, str]:
    """Sort key: the size in the label ('SmolLM2-135M' -> 1.35e8, '1B' -> 1e9), then the name."""
    sizes = re.findall(r"(\d+(?:\.\d+)?)([MB])\b", label, re.IGNORECASE)
    value, unit = sizes[-1] if sizes else ("inf", "M")
    return float(value) * (1e9 if unit.upper() == "B" else 1e6), label


def mean(values: Iterable[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return sum(kept) / len(kept) if kept else None


def averaged(pairs: Iterable[tuple[Hashable, float | None]]) -> dict[Any, float]:
    """Mean value per key: repeated runs of one cell (seeds) are averaged; missing values are dropped."""
    groups: dict[Any, list[float]] = defaultdict(list)
    for key, value in pairs:
        if value is not None:
            groups[key].append(value)
    return {key: sum(vs) / len(vs) for key, vs in groups.items()}


def pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.1f}"


def pp(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:+.1f}"


def fmt_bytes(n: int | float | None) -> str:
    if n is None:
        return "—"
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:,.1f} {unit}"
    return f"{int(n)} B"


def fmt_hours(seconds: float) -> str:
    return f"{seconds / 3600:.2f} h ({seconds:,.0f} s)"


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    """A markdown table; `|` inside cells is escaped (prompt neighbours can be any token)."""
    def cell(v: Any) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")
    return ["| " + " | ".join(map(cell, headers)) + " |", "|" + "---|" * len(headers),
            *("| " + " | ".join(map(cell, row)) + " |" for row in rows), ""]


def share_verdict(passed: int, total: int) -> str:
    """The common rule: holds if ≥ 2/3 of the checks pass, does not hold if ≤ 1/3, else mixed."""
    if total == 0:
        return NOT_ENOUGH
    return "holds" if 3 * passed >= 2 * total else "does not hold" if 3 * passed <= total else "mixed"


def mark(ok: bool) -> str:
    return "✓" if ok else "✗"


def by_model(results: Iterable[Result]) -> list[tuple[str, list[Result]]]:
    groups: dict[str, list[Result]] = defaultdict(list)
    for r in results:
        groups[model_of(r)].append(r)
    return [(m, groups[m]) for m in sorted(groups, key=model_order)]


def curves(results: Iterable[Result], knob: str) -> tuple[dict[str, dict[Any, float]], bool]:
    """Prompt-tuning results as series 'task (model)' -> knob value -> mean main metric; bool: several models."""
    rs = [r for r in results if is_pt(r) and isinstance(param(r, knob), int | float | str)]
    multi = len({model_of(r) for r in rs}) > 1
    cells = averaged(((model_order(model_of(r)), model_of(r), str(r.get("task")), param(r, knob)), main_of(r.get("metrics")))
                     for r in rs)
    out: dict[str, dict[Any, float]] = {}
    for (_, model, task, value), v in sorted(cells.items(), key=lambda kv: (kv[0][:3], str(kv[0][3]))):
        out.setdefault(f"{task} ({model})" if multi else task, {})[value] = v
    return out, multi
