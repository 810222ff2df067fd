"""A run's curves: `curve.png` in every run folder, and `softprompt runs compare` over several runs.

Both read only what a run wrote (`metrics.jsonl`, `summary.json`, `config.yaml` through RunDir), so they work
on finished, interrupted and still-running folders alike. matplotlib is optional for training: without it
the plot is skipped with one log line, never an error.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from softprompt.errors import UsageError
from softprompt.files import atomic_write
from softprompt.training.rundir import RunDir

log = logging.getLogger(__name__)
CURVE = "curve.png"


class RunFolderError(UsageError):
    """A folder given as a run is not one (no metrics.jsonl)."""


@dataclass
class RunLog:
    """What one run folder says about itself."""

    name: str
    records: list[dict[str, Any]]  # metrics.jsonl: step, loss, lr, seconds (newer runs), eval {metric: value}
    summary: dict[str, Any]  # summary.json ({} while the run has not finished)
    config: dict[str, Any]  # config.yaml ({} if absent)

    @property
    def metric(self) -> str | None:
        """The task's main metric (from the summary, else the first one evaluated)."""
        if self.summary.get("main_metric"):
            return self.summary["main_metric"]
        return next((next(iter(r["eval"])) for r in self.records if r.get("eval")), None)

    def evals(self) -> list[tuple[int, float | None, float]]:
        """(step, seconds or None, main metric) at each evaluation."""
        metric = self.metric
        return [(r["step"], r.get("seconds"), r["eval"][metric]) for r in self.records
                if metric is not None and isinstance(r.get("eval"), dict) and metric in r["eval"]]

    def row(self) -> dict[str, Any]:
        """One line of `runs compare`: task, recipe, steps, minutes, best metric."""
        recipe = self.summary.get("recipe") or {}
        last = self.records[-1] if self.records else {}
        evals = self.evals()
        best = self.summary.get("best_metric", max((e[2] for e in evals), default=None))
        seconds = self.summary.get("wall_seconds", last.get("seconds"))
        return {"run": self.name, "task": self.summary.get("task") or self.config.get("task")
                or self.config.get("task_file"), "recipe": recipe.get("recipe") or self.config.get("recipe"),
                "optimizer": recipe.get("optimizer") or self.config.get("optimizer"),
                "lr": recipe.get("lr", self.config.get("lr")), "steps": last.get("step", 0),
                "minutes": None if seconds is None else round(seconds / 60, 1), "metric": self.metric,
                "best": best, "stopped_by": self.summary.get("stopped_by")}


def load_run(folder: str | Path) -> RunLog:
    """Read one run folder; a torn last metrics line is dropped (RunDir.metrics_up_to)."""
    run = RunDir(folder)
    if not run.metrics.is_file():
        raise RunFolderError(f"{folder} is not a run folder (no metrics.jsonl): give folders `softprompt train "
                             "--out` wrote")
    records = run.metrics_up_to(10**12)
    summary = json.loads(run.summary.read_text()) if run.summary.is_file() else {}
    config = (yaml.safe_load(run.config.read_text()) or {}) if run.config.is_file() else {}
    return RunLog(Path(folder).name or str(folder), records, summary, config)


def _axes_data(run: RunLog) -> dict[str, tuple[list[float], list[float]]]:
    """Series per panel: loss and eval metric, each against step and against minutes (when logged)."""
    timed = [r for r in run.records if r.get("seconds") is not None]
    evals = run.evals()
    return {
        "loss_step": ([r["step"] for r in run.records], [r["loss"] for r in run.records]),
        "loss_min": ([r["seconds"] / 60 for r in timed], [r["loss"] for r in timed]),
        "eval_step": ([e[0] for e in evals], [e[2] for e in evals]),
        "eval_min": ([e[1] / 60 for e in evals if e[1] is not None], [e[2] for e in evals if e[1] is not None]),
    }


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_runs(runs: list[RunLog], out: str | Path, title: str | None = None) -> Path:
    """One figure, 2 × 2 panels (training loss / eval metric × step / minutes), one line per run; atomic."""
    plt = _pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(10, 7))
    metric = runs[0].metric or "metric"
    panels = [("loss_step", "step", "training loss"), ("loss_min", "minutes", "training loss"),
              ("eval_step", "step", f"validation {metric}"), ("eval_min", "minutes", f"validation {metric}")]
    for ax, (key, xlabel, ylabel) in zip(axes.flat, panels, strict=True):
        for run in runs:
            xs, ys = _axes_data(run)[key]
            if xs:
                ax.plot(xs, ys, marker="o" if key.startswith("eval") else None, markersize=3, label=run.name)
        ax.set(xlabel=xlabel, ylabel=ylabel)
        ax.grid(alpha=0.3)
    if len(runs) > 1:
        axes.flat[2].legend(fontsize=8)
    fig.suptitle(title or ", ".join(r.name for r in runs), fontsize=10)
    fig.tight_layout()
    out = Path(out)
    atomic_write(out, lambda tmp: fig.savefig(tmp, dpi=90, format="png", metadata={"Software": None}))
    plt.close(fig)
    return out


def write_curve(folder: str | Path) -> Path | None:
    """`curve.png` for one run (at the end of `train`); None, logged, when matplotlib is not installed."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        log.info("no curve.png: matplotlib is not installed (pip install matplotlib)")
        return None
    run = load_run(folder)
    task = run.summary.get("task", "")
    return plot_runs([run], Path(folder) / CURVE, title=f"{run.name} ({task})" if task else run.name)


def compare_table(runs: list[RunLog]) -> str:
    """Plain-text table of `RunLog.row()`s, best metric first."""
    rows = sorted((r.row() for r in runs), key=lambda x: -(x["best"] if x["best"] is not None else float("-inf")))
    cols = ["run", "task", "recipe", "optimizer", "lr", "steps", "minutes", "metric", "best", "stopped_by"]

    def cell(column: str, value: Any) -> str:
        if value is None:
            return "-"
        if isinstance(value, float):
            return f"{value:.4f}" if column == "best" else f"{value:g}"
        return str(value)

    table = [cols] + [[cell(c, r[c]) for c in cols] for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(cols))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip() for line in table)
