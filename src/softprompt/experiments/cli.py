"""`softprompt experiments ...`: list, run and report the paper's studies (thin: one library call each)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(help="The paper's studies at small scale: run (resumable), list, report.", no_args_is_help=True)

DirOpt = Annotated[Path, typer.Option("--dir", help="The experiments folder (studies/, results/, runs/, REPORT.md).")]
DEFAULT_DIR = Path("experiments")


def _csv(value: str | None) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()] if value else []


@app.command("list")
def list_command(
    studies: Annotated[list[str] | None, typer.Argument(help="Study names, or nothing / 'all' for every study.")] = None,
    quick: Annotated[bool, typer.Option("--quick", help="List the quick (smoke-test) variants.")] = False,
    folder: DirOpt = DEFAULT_DIR,
) -> None:
    """Every variant with its status: done, reusable (another study ran it) or todo.

    Example: softprompt experiments list methods
    """
    from softprompt.experiments.runner import ResultPaths, select, status
    from softprompt.experiments.studies import load_studies

    paths = ResultPaths(folder, quick=quick)
    variants = select(load_studies(folder / "studies"), studies or ["all"], quick=quick)
    for variant in variants:
        typer.echo(f"{status(paths, variant):>8}  {variant.study}/{variant.id}")
    done = sum(status(paths, v) == "done" for v in variants)
    typer.echo(f"{done} of {len(variants)} variants done")


@app.command("plan")
def plan_command(
    studies: Annotated[list[str] | None, typer.Argument(help="Study names, or nothing / 'all' for every study.")] = None,
    folder: DirOpt = DEFAULT_DIR,
) -> None:
    """Every variant with its status and estimated hours on this CPU kind, per-study and total hours left.

    Estimates come from the results on disk measured on the same CPU kind (see experiments/plan.py).

    Example: softprompt experiments plan methods
    """
    from softprompt.experiments.plan import Rates, plan_lines, read_results, this_cpu_kind
    from softprompt.experiments.runner import ResultPaths, select, status
    from softprompt.experiments.studies import load_studies

    paths = ResultPaths(folder)
    variants = select(load_studies(folder / "studies"), studies or ["all"])
    rates = Rates.measure(read_results([folder / "results", folder / "archive"]))
    for line in plan_lines(variants, [status(paths, v) for v in variants], rates, this_cpu_kind()):
        typer.echo(line)


@app.command("run")
def run_command(
    studies: Annotated[list[str], typer.Argument(help="Study names (methods, length, init, transfer, ensemble, interpret, cost) or 'all'.")],
    quick: Annotated[bool, typer.Option("--quick", help="Smoke test: each study's first task, 2 steps, 8 eval examples; results go to results-quick/ and are never reported.")] = False,
    tasks: Annotated[str | None, typer.Option(help="Only these tasks (comma-separated), e.g. sst2,rte.")] = None,
    models: Annotated[str | None, typer.Option(help="Only these models (comma-separated), e.g. default.")] = None,
    methods: Annotated[str | None, typer.Option(help="Only these methods (comma-separated), e.g. majority,zero-shot.")] = None,
    data_dir: Annotated[str | None, typer.Option(help="Benchmark data dir (else $SOFTPROMPT_DATA, else ../shared/data).")] = None,
    folder: DirOpt = DEFAULT_DIR,
) -> None:
    """Run every variant that has no result yet (finished ones are skipped, so a suite resumes where it stopped).

    Examples:

      softprompt experiments run cost

      softprompt experiments run methods --tasks sst2,rte --models default

      softprompt experiments run methods --methods majority

      softprompt experiments run all --quick
    """
    from softprompt.experiments.runner import ResultPaths, run_variants, select
    from softprompt.experiments.studies import load_studies

    paths = ResultPaths(folder, quick=quick)
    variants = select(load_studies(folder / "studies"), studies, quick=quick, tasks=_csv(tasks), models=_csv(models),
                      methods=_csv(methods))
    summary = run_variants(variants, paths, data_dir=data_dir)
    typer.echo(f"{len(summary.done)} run, {len(summary.reused)} reused, {len(summary.skipped)} already done, "
               f"{len(summary.failed)} failed; results in {paths.results}")
    for name, message in summary.failed.items():
        typer.echo(f"failed: {name}: {message}", err=True)
    if summary.failed:
        sys.exit(1)


@app.command("report")
def report_command(folder: DirOpt = DEFAULT_DIR) -> None:
    """Regenerate REPORT.md and its plots from the result JSON alone (no model is loaded).

    Example: softprompt experiments report
    """
    from softprompt.experiments.report import write_report
    from softprompt.experiments.studies import load_studies

    meta = {name: study.meta() for name, study in load_studies(folder / "studies").items()}
    path = write_report(folder / "results", folder / "REPORT.md", folder / "plots", meta)
    typer.echo(f"wrote {path}")
