"""`softprompt experiments plan`: every variant, whether it is done, and what the rest costs on this CPU kind.

Estimates come from results already on disk (this suite's and the archived ones), measured on the same CPU
kind: a training variant costs its examples (steps x batch size; x k for an ensemble) times the seconds per
training example that runs of the same model and method took (their wall time, evaluations included, over
their examples); a method that trains nothing costs the median wall time of its earlier runs. Where nothing
was measured on this kind, the other kind's rate is scaled (fp32 ≈ 2x the bf16 time, as measured between
sessions) and the estimate is marked `~`; with nothing at all, a fixed guess marked `?`.
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from softprompt.experiments.studies import Kind, Variant

TRAINED = (Kind.PROMPT_TUNING, Kind.MODEL_TUNING, Kind.ENSEMBLE)
FP32_OVER_BF16 = 2.0
GUESS_SECONDS = {Kind.PROMPT_TUNING: 0.15, Kind.MODEL_TUNING: 0.45, Kind.ENSEMBLE: 0.15}  # per training example
GUESS_RUN = 120.0  # seconds, an untrained method with nothing measured


def cpu_kind(bf16: bool | None) -> str:
    return "unrecorded" if bf16 is None else ("bf16" if bf16 else "fp32")


def this_cpu_kind() -> str:
    from softprompt.model.loading import cpu_supports_bf16

    return cpu_kind(cpu_supports_bf16())


def read_results(folders: Iterable[Path]) -> list[dict[str, Any]]:
    """Every readable, non-quick result JSON under the folders (a reused copy is skipped: its time was spent once)."""
    out = []
    for folder in folders:
        for path in sorted(Path(folder).glob("**/*.json")):
            try:
                data = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError):
                continue
            if isinstance(data, dict) and data.get("method") and not data.get("quick") and not data.get("reused_from"):
                out.append(data)
    return out


@dataclass(frozen=True)
class Rates:
    """Measured costs by (model, method, CPU kind, task), and by (model, method, CPU kind, "*") over every
    task: seconds per training example, seconds per untrained run (medians)."""

    per_example: dict[tuple[str, str, str, str], float]
    per_run: dict[tuple[str, str, str, str], float]

    @classmethod
    def measure(cls, results: Sequence[dict[str, Any]]) -> Rates:
        examples: dict[tuple[str, str, str, str], list[float]] = defaultdict(list)
        runs: dict[tuple[str, str, str, str], list[float]] = defaultdict(list)
        for r in results:
            key = (str(r.get("model")), str(r.get("method")), cpu_kind((r.get("machine") or {}).get("cpu_bf16")))
            seconds = float(r.get("wall_seconds") or 0)
            if seconds <= 0:
                continue
            if r.get("method") in {k.value for k in TRAINED}:
                seen = int(r.get("steps") or 0) * int((r.get("budget") or {}).get("batch_size") or 16)
                seen *= int((r.get("params") or {}).get("k") or 1) if r.get("method") == Kind.ENSEMBLE.value else 1
                if seen > 0:
                    for task in (str(r.get("task")), "*"):
                        examples[(*key, task)].append(seconds / seen)
            else:
                for task in (str(r.get("task")), "*"):
                    runs[(*key, task)].append(seconds)
        return cls({k: statistics.median(v) for k, v in examples.items()},
                   {k: statistics.median(v) for k, v in runs.items()})

    def _lookup(self, table: dict[tuple[str, str, str, str], float], model: str, method: str, kind: str,
                task: str) -> tuple[float, str] | None:
        """This task on this kind, then every task on this kind, then the same on the other kind (scaled)."""
        other = {"fp32": "bf16", "bf16": "fp32"}.get(kind)
        scale = FP32_OVER_BF16 if kind == "fp32" else 1 / FP32_OVER_BF16
        for on, factor, mark in ((kind, 1.0, ""), (other, scale, "~")):
            for name in (task, "*"):
                if (model, method, str(on), name) in table:
                    return table[(model, method, str(on), name)] * factor, mark
        return None

    def seconds(self, variant: Variant, kind: str) -> tuple[float, str]:
        """(estimated seconds, mark): mark "" measured on this kind, "~" scaled from the other, "?" a guess."""
        method = variant.kind.value
        if variant.kind is Kind.COST:
            return 1.0, ""
        if variant.kind in TRAINED:
            seen = int(variant.budget.get("steps", 200)) * int(variant.budget.get("batch_size", 16))
            seen *= int(variant.knobs.get("k", 1)) if variant.kind is Kind.ENSEMBLE else 1
            found = self._lookup(self.per_example, variant.model, variant.kind.value, kind, str(variant.task))
            rate, mark = found if found else (GUESS_SECONDS[variant.kind] * (1 if kind == "bf16" else FP32_OVER_BF16), "?")
            return seen * rate, mark
        found = self._lookup(self.per_run, variant.model, method, kind, str(variant.task))
        return found if found else (GUESS_RUN, "?")


def plan_lines(variants: Sequence[Variant], statuses: Sequence[str], rates: Rates, kind: str) -> list[str]:
    """One line per variant (status, estimated hours, study/id), then per-study and overall totals."""
    lines, todo_by_study, all_by_study = [], defaultdict(float), defaultdict(float)
    marks: set[str] = set()
    seen: set[str] = set()
    for variant, state in zip(variants, statuses, strict=True):
        # A variant another study also lists runs once (the second copies the first's result): cost it once.
        seconds, mark = (0.0, "=") if variant.fingerprint in seen else rates.seconds(variant, kind)
        seen.add(variant.fingerprint)
        marks.add(mark)
        all_by_study[variant.study] += seconds
        if state != "done":
            todo_by_study[variant.study] += seconds
        lines.append(f"{state:>8}  {mark:1}{seconds / 3600:6.2f} h  {variant.study}/{variant.id}")
    lines.append("")
    for study in all_by_study:
        n = sum(v.study == study for v in variants)
        done = sum(v.study == study and s == "done" for v, s in zip(variants, statuses, strict=True))
        lines.append(f"{study}: {done} of {n} done; left ≈ {todo_by_study[study] / 3600:.1f} h of "
                     f"{all_by_study[study] / 3600:.1f} h")
    done = statuses.count("done")
    lines.append(f"total: {done} of {len(variants)} variants done; left ≈ {sum(todo_by_study.values()) / 3600:.1f} h "
                 f"on this CPU kind ({kind}), of {sum(all_by_study.values()) / 3600:.1f} h for the whole plan")
    if marks - {""}:
        lines.append("estimates: plain = measured on this CPU kind; ~ = scaled from the other kind; ? = a fixed guess; "
                     "= = shared with an earlier study (run once)")
    return lines
