"""The `softprompt` command: thin — each subcommand parses flags, makes one library call, prints.

Heavy imports (torch, transformers) happen inside commands so `softprompt --help` answers at once.
Errors raised by softprompt's own modules are user errors: printed as one clear line, exit code 2.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from softprompt import __version__

app = typer.Typer(
    help="Prompt tuning on a frozen language model: train a few-KB soft prompt per task, evaluate, serve.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

ModelOpt = Annotated[str, typer.Option("--model", "-m", help="'default' (SmolLM2-135M), 'gemma-3-270m', a .gguf file, a local dir or a hub id.")]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"softprompt {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")] = False,
) -> None:
    """Prompt tuning (Lester et al., 2021) on a frozen language model."""


def _echo_json(data: object) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))


@app.command()
def info(model: ModelOpt = "default", as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Describe a base model: H, V, layers, context size, dtype, bf16 support.

    Example: softprompt info --model default
    """
    from softprompt.models import load_model, model_info

    details = model_info(load_model(model))
    if as_json:
        _echo_json(details)
        return
    for key, value in details.items():
        typer.echo(f"{key:>22}: {value}")


@app.command()
def init(
    out: Annotated[Path, typer.Option("--out", "-o", help="Prompt file to write (.safetensors).")],
    model: ModelOpt = "default",
    length: Annotated[int, typer.Option("--length", "-p", help="Prompt length P (paper default 100).")] = 100,
    init_strategy: Annotated[str, typer.Option("--init", help="random-uniform | sampled-vocab | class-labels | text | file")] = "class-labels",
    labels: Annotated[str | None, typer.Option(help="Comma-separated label words for class-labels init.")] = None,
    text: Annotated[str | None, typer.Option(help="Text whose token embeddings start the prompt (text init).")] = None,
    from_file: Annotated[Path | None, typer.Option("--from", help="Saved prompt to start from (file init).")] = None,
    task: Annotated[str | None, typer.Option(help="Task name to record in the file.")] = None,
    seed: Annotated[int, typer.Option(help="Seed for sampled rows.")] = 0,
) -> None:
    """Write an untrained prompt file.

    Example: softprompt init --length 20 --init class-labels --labels 'negative,positive' --out sst2-init.safetensors
    """
    from softprompt.init import make_prompt
    from softprompt.models import load_model

    fm = load_model(model)
    label_list = [w.strip() for w in labels.split(",") if w.strip()] if labels else None
    prompt = make_prompt(fm, length, init_strategy, labels=label_list, text=text, path=from_file, seed=seed, task=task)
    prompt.save(out)
    typer.echo(f"wrote {out}: P={prompt.length} × H={prompt.hidden_size} = {prompt.num_parameters:,} parameters "
               f"({init_strategy} init, model {fm.name})")


@app.command("export-peft")
def export_peft(
    prompt: Annotated[Path, typer.Argument(help="A softprompt .safetensors file.")],
    outdir: Annotated[Path, typer.Argument(help="Directory to write the PEFT adapter into.")],
    base_model: Annotated[str | None, typer.Option(help="base_model_name_or_path to record (default: from the prompt).")] = None,
) -> None:
    """Write a PEFT prompt-tuning adapter that `PeftModel.from_pretrained` loads.

    Example: softprompt export-peft sst2.safetensors sst2-peft/
    """
    from softprompt.peft_io import export_peft as run

    run(prompt, outdir, base_model=base_model)
    typer.echo(f"wrote PEFT adapter to {outdir}/ (adapter_config.json, adapter_model.safetensors)")


@app.command("import-peft")
def import_peft(
    adapter_dir: Annotated[Path, typer.Argument(help="A PEFT prompt-tuning adapter directory.")],
    out: Annotated[Path, typer.Argument(help="softprompt .safetensors file to write.")],
    model: Annotated[str | None, typer.Option("--model", "-m", help="Check against and stamp with this model.")] = None,
) -> None:
    """Read a PEFT prompt-tuning adapter into a softprompt file.

    Example: softprompt import-peft sst2-peft/ sst2-back.safetensors --model default
    """
    from softprompt.peft_io import import_peft as run

    fm = None
    if model:
        from softprompt.models import load_model

        fm = load_model(model)
    prompt = run(adapter_dir, fm)
    prompt.save(out)
    typer.echo(f"wrote {out}: P={prompt.length}, H={prompt.hidden_size}")


def main() -> None:
    """Entry point: run the app, turning softprompt's own errors into one line and exit code 2."""
    try:
        app(standalone_mode=False)
    except typer.Exit as done:
        sys.exit(done.exit_code)
    except typer.Abort:
        typer.echo("aborted", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
    except Exception as err:  # noqa: BLE001 — only our own, expected failures are shown without traceback
        import click

        if isinstance(err, click.ClickException):
            err.show()
            sys.exit(err.exit_code)
        if type(err).__module__.startswith("softprompt."):
            typer.echo(f"error: {err}", err=True)
            sys.exit(2)
        raise


if __name__ == "__main__":
    main()
