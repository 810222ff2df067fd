"""PNG plots for the experiment report: grouped bars and lines, drawn with matplotlib's Agg backend.

matplotlib is imported inside each function: the report module must import fast and without a display, and
`softprompt --help` must not pay for matplotlib.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

# PNG metadata without the matplotlib version: the same JSON gives byte-identical plots across upgrades.
PNG_METADATA = {"Software": None}


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # headless: the report is rebuilt on servers and in tests
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, ax: Any, path: Path, title: str, legend: bool) -> Path:
    ax.set_title(title)
    if legend:
        ax.legend(fontsize="small", loc="best")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, metadata=PNG_METADATA)
    _pyplot().close(fig)
    return path


def grouped_bars(
    path: Path, title: str, groups: Sequence[str], series: Mapping[str, Sequence[float | None]], ylabel: str,
    *, percent: bool = True, log: bool = False, legend: bool | None = None,
    errors: Mapping[str, Sequence[float | None]] | None = None,
) -> Path:
    """One cluster of bars per group, one bar per series (missing values leave a gap); fractions shown as %.

    `errors` (same shape as `series`): half-widths of 95% intervals, drawn as error bars (None: none).
    The legend is drawn when there are several series, unless `legend` says otherwise.
    """
    plt = _pyplot()
    n = max(1, len(series))
    fig, ax = plt.subplots(figsize=(min(16.0, max(6.0, 0.5 * len(groups) * n + 2)), 4.2))
    width = 0.8 / n
    for i, (name, values) in enumerate(series.items()):
        xs = [g + (i - (n - 1) / 2) * width for g in range(len(groups))]
        ys = [math.nan if v is None else (100 * v if percent else v) for v in values]  # NaN: no bar
        half = (errors or {}).get(name)
        yerr = None if half is None else [0.0 if e is None else (100 * e if percent else e) for e in half]
        ax.bar(xs, ys, width, label=name, yerr=yerr, capsize=3 if yerr else 0)
    ax.set_xticks(range(len(groups)), list(groups), rotation=20 if len(groups) > 4 else 0, ha="right" if len(groups) > 4 else "center")
    ax.set_ylabel(ylabel)
    if log:
        ax.set_yscale("log")
    return _save(fig, ax, path, title, legend=len(series) > 1 if legend is None else legend)


def lines(
    path: Path, title: str, series: Mapping[str, Mapping[float, float]], xlabel: str, ylabel: str,
    *, percent: bool = True, logx: bool = True, errors: Mapping[str, Mapping[float, float]] | None = None,
) -> Path:
    """One line with markers per series (x -> y); x on a log axis labelled with the x values themselves.
    `errors`: series -> x -> half-width of the 95% interval, drawn as error bars."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    ticks: set[float] = set()
    for name, points in series.items():
        xs = sorted(points)
        ticks.update(xs)
        scale = 100 if percent else 1
        half = (errors or {}).get(name) or {}
        ax.errorbar(xs, [scale * points[x] for x in xs], yerr=[scale * half.get(x, 0.0) for x in xs], marker="o",
                    capsize=3, label=name)
    if logx:
        ax.set_xscale("log")
        ax.minorticks_off()  # only the lengths actually run are labelled
    ordered = sorted(ticks)
    ax.set_xticks(ordered, [f"{t:g}" for t in ordered])
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    return _save(fig, ax, path, title, legend=bool(series))
