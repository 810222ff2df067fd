"""`softprompt runs ...`: look at finished or running training folders (training/curves.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(help="Training runs: compare several --out folders (table and one plot).", no_args_is_help=True)


@app.command("compare")
def compare_command(
    runs: Annotated[list[Path], typer.Argument(help="Run folders (what `softprompt train --out` wrote).")],
    plot: Annotated[Path | None, typer.Option(help="Also write one PNG of every run's curves here.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON rows instead of the table.")] = False,
) -> None:
    """A table of runs (task, recipe, steps, minutes, best metric; best first) and optionally one plot.

    Example: softprompt runs compare runs/sst2 runs/sst2-paper --plot sst2-runs.png
    """
    from softprompt.training.curves import compare_table, load_run, plot_runs

    logs = [load_run(folder) for folder in runs]
    if as_json:
        typer.echo(json.dumps([r.row() for r in logs], indent=2))
    else:
        typer.echo(compare_table(logs))
    if plot is not None:
        typer.echo(f"wrote {plot_runs(logs, plot)}", err=True)
