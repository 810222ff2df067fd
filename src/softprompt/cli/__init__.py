"""The `softprompt` command: thin — each subcommand parses flags, makes one library call, prints.

Heavy imports (torch, transformers) happen inside commands so `softprompt --help` answers at once.
Every `softprompt.errors.SoftpromptError` (bad input, or a run that cannot go on) is printed as one line,
exit code 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from softprompt import __version__
from softprompt.cli.config_flags import config_options, train_config
from softprompt.errors import SoftpromptError

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
    from softprompt.model.loading import load_model, model_info

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
    length: Annotated[int, typer.Option("--length", "-p", min=1, help="Prompt length P (paper default 100).")] = 100,
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
    from softprompt.model.loading import load_model
    from softprompt.training.init import make_prompt

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
    from softprompt.interop.peft import export_peft as run

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
    from softprompt.interop.peft import import_peft as run

    fm = None
    if model:
        from softprompt.model.loading import load_model

        fm = load_model(model)
    prompt = run(adapter_dir, fm)
    prompt.save(out)
    typer.echo(f"wrote {out}: P={prompt.length}, H={prompt.hidden_size}")


@app.command()
@config_options()
def train(
    config: Annotated[Path | None, typer.Option(help="YAML config; flags override it.")] = None,
    resume: Annotated[Path | None, typer.Option(help="Continue the run in this output dir.")] = None,
    **flags: Any,
) -> None:
    """Train a soft prompt (or, with --method model-tuning, the whole model).

    Example: softprompt train --task sst2 --prompt-length 20 --steps 300 --out runs/sst2

    Resume after an interruption: softprompt train --resume runs/sst2
    """
    from softprompt.training.loop import train as run

    result = run(train_config(config, flags, resume), resume=resume is not None)
    typer.echo(json.dumps({"best_metric": result.best_metric, "best_step": result.best_step,
                           "steps": result.steps_done, "stopped_by": result.stopped_by,
                           "wall_seconds": result.wall_seconds, "prompt": str(result.prompt_path)}, indent=2))


@app.command("lm-adapt")
def lm_adapt_command(
    model: Annotated[str, typer.Option("--model", "-m", help="A span-corruption seq2seq checkpoint (T5 1.1 style): local dir or hub id.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the adapted model (save_pretrained + tokenizer).")],
    text_file: Annotated[Path | None, typer.Option(help="Raw text: one document per line (or blank-line separated paragraphs).")] = None,
    task: Annotated[str | None, typer.Option(help="Use a built-in task's training inputs as the raw text (e.g. sst2).")] = None,
    task_file: Annotated[Path | None, typer.Option(help="Use a task file's training inputs as the raw text.")] = None,
    data_dir: Annotated[str | None, typer.Option(help="Benchmark data dir (else $SOFTPROMPT_DATA).")] = None,
    steps: Annotated[int, typer.Option(min=1, help="Optimizer steps.")] = 100,
    batch_size: Annotated[int, typer.Option(min=1, help="Texts per step.")] = 8,
    lr: Annotated[float | None, typer.Option(help="Learning rate (default 1e-3 Adafactor, 1e-4 AdamW).")] = None,
    optimizer: Annotated[str, typer.Option(help="adafactor | adamw")] = "adafactor",
    max_tokens: Annotated[int, typer.Option(min=2, help="Tokens per text window (prefix + suffix).")] = 128,
    seed: Annotated[int, typer.Option(help="Seed for data order and split points.")] = 0,
) -> None:
    """LM-adapt a span-corruption seq2seq model: train all weights with the prefix-LM objective (paper §3.2).

    Decoder-only LMs need neither this nor --target-sentinel.

    Example: softprompt lm-adapt --model t5-small-dir --text-file corpus.txt --steps 100 --out adapted/
    """
    from softprompt.model.loading import load_model
    from softprompt.training.lm_adapt import LMAdaptError, lm_adapt, read_texts, task_texts

    if (text_file is not None) + (task is not None) + (task_file is not None) != 1:
        raise LMAdaptError("give exactly one source of raw text: --text-file FILE, --task NAME or --task-file FILE")
    texts = read_texts(text_file) if text_file is not None else task_texts(task, task_file, data_dir)
    result = lm_adapt(load_model(model, dtype="fp32"), texts, steps=steps, batch_size=batch_size, lr=lr,
                      out_dir=out, seed=seed, optimizer=optimizer, max_tokens=max_tokens)
    typer.echo(json.dumps({"out": str(result.out_dir), "steps": result.steps, "texts": result.texts,
                           "loss_before": round(result.loss_before, 4), "loss_after": round(result.loss_after, 4),
                           "wall_seconds": result.wall_seconds}, indent=2))


@app.command("eval")
def eval_command(
    task: Annotated[str | None, typer.Option(help="Built-in task: sst2, rte, boolq, squad, ...")] = None,
    task_file: Annotated[Path | None, typer.Option(help="User task YAML file (see README: task files).")] = None,
    prompt: Annotated[list[Path] | None, typer.Option("--prompt", help="Soft prompt file, or a run/ensemble folder. Several (after one --prompt, as a glob expands, or --prompt repeated): an ensemble in one batched pass, every member reported too.")] = None,
    more_prompts: Annotated[list[Path] | None, typer.Argument(metavar="[MORE_PROMPTS]...", help="More prompt files after --prompt (what `--prompt runs/ens/member-*/prompt.safetensors` expands to).", show_default=False)] = None,
    no_prompt: Annotated[bool, typer.Option("--no-prompt", help="Zero-shot: the frozen model alone.")] = False,
    instruction: Annotated[str | None, typer.Option(help="Prompt design: instruction text put before every input.")] = None,
    shots: Annotated[int, typer.Option(min=0, help="Prompt design: k solved training examples before every input.")] = 0,
    seed: Annotated[int, typer.Option(help="Seed for drawing the shots.")] = 0,
    split: Annotated[str, typer.Option(help="train | validation | test (where labelled) | task-specific.")] = "validation",
    limit: Annotated[int | None, typer.Option(min=1, help="Evaluate only the first N examples.")] = None,
    mode: Annotated[str | None, typer.Option(help="rank (score each label word) | generate (greedy, exact match). Default: the task's.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    predictions: Annotated[Path | None, typer.Option(help="Write one JSON line per example here.")] = None,
    model: ModelOpt = "default",
    data_dir: Annotated[str | None, typer.Option(help="Benchmark data dir (else $SOFTPROMPT_DATA, else ../shared/data).")] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Sequences per forward pass.")] = 16,
) -> None:
    """Evaluate a soft prompt, a designed prompt, or no prompt on a task's split.

    Examples:

      softprompt eval --task sst2 --no-prompt --limit 200 --json

      softprompt eval --task sst2 --instruction "Is the sentiment positive or negative?" --shots 4 --limit 200

      softprompt eval --task rte --prompt runs/rte/prompt.safetensors --predictions rte-val.jsonl

      softprompt eval --task rte --prompt runs/rte-ens/member-*/prompt.safetensors     (or: --prompt runs/rte-ens)

      softprompt eval --task-file examples/ticket_topic.yaml --no-prompt --mode generate
    """
    from softprompt.cli.prompt_files import prompt_files
    from softprompt.evaluation.baselines import draw_shots
    from softprompt.evaluation.evaluate import evaluate, generation_caveat, write_predictions
    from softprompt.tasks import Mode, TaskError, resolve_task

    prompt = prompt_files(prompt, more_prompts)
    if prompt and no_prompt:
        raise TaskError("--prompt and --no-prompt exclude each other")
    if mode is not None and mode not in {m.value for m in Mode}:
        raise TaskError(f"--mode {mode!r}: use rank or generate")
    chosen = resolve_task(task, task_file)
    examples = chosen.examples(split, data_dir, limit=limit)
    shot_examples = draw_shots(chosen, shots, seed, data_dir) if shots else []

    from softprompt.model.loading import load_model
    from softprompt.model.prompt import SoftPrompt

    fm = load_model(model)
    if prompt and len(prompt) > 1 and not instruction and not shots:
        # Several prompts: an ensemble, all members in one batched pass (every member is reported too).
        from softprompt.evaluation.ensemble import evaluate_ensemble, format_ensemble

        report = {**evaluate_ensemble(fm, chosen, examples, prompt, batch_size, mode=mode, predictions=predictions),
                  "split": split}
        typer.echo(json.dumps(report, indent=2) if as_json else format_ensemble(report))
        return
    results = []
    for path in prompt or [None]:
        soft = SoftPrompt.load(path, model=fm) if path is not None else None
        result = evaluate(fm, chosen, examples, prompt=soft, mode=mode, batch_size=batch_size,
                          instruction=instruction, shots=shot_examples)
        if result.mode is Mode.GENERATE and (caveat := generation_caveat(soft)):
            typer.echo(f"note: {path}: {caveat}", err=True)
        summary = {**result.summary(), "split": split, "prompt": str(path) if path else None,
                   "instruction": instruction, "shots": shots}
        results.append(summary)
        if predictions is not None:
            target = predictions if len(prompt or []) <= 1 else predictions.with_suffix(f".{path.stem}.jsonl")
            write_predictions(target, examples, result)
        if not as_json:
            shown = ", ".join(f"{k}={v:.4f}" for k, v in result.metrics.items())
            counted = ", ".join(f"{k}={v}" for k, v in result.counts.items())
            typer.echo(f"{chosen.name} [{split}, {result.mode.value}, prompt={summary['prompt']}] {shown} ({counted})")
    if as_json:
        _echo_json(results[0] if len(results) == 1 else results)


@app.command()
def neighbors(
    prompt: Annotated[Path, typer.Argument(help="A softprompt .safetensors file.")],
    k: Annotated[int, typer.Option("--k", min=1, help="Nearest tokens per prompt position.")] = 5,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    model: ModelOpt = "default",
) -> None:
    """List each prompt vector's k nearest vocabulary tokens (cosine), and which label words appear.

    Example: softprompt neighbors runs/sst2/prompt.safetensors --k 5
    """
    from softprompt.evaluation.interpret import format_report, neighbors_report
    from softprompt.model.loading import load_model
    from softprompt.model.prompt import SoftPrompt

    fm = load_model(model)
    report = neighbors_report(fm, SoftPrompt.load(prompt, model=fm), k=k)
    if as_json:
        _echo_json(report)
    else:
        typer.echo(format_report(report))


@app.command()
@config_options(skip=("out",))
def ensemble(
    k: Annotated[int, typer.Option("--k", help="Number of prompts (paper: 5).")] = 5,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output dir: member-0/ ... member-{k-1}/, ensemble.json.")] = Path("runs/ensemble"),
    inits: Annotated[str | None, typer.Option(help="Comma-separated init per member (default: --init for all).")] = None,
    config: Annotated[Path | None, typer.Option(help="YAML config; flags override it.")] = None,
    **flags: Any,
) -> None:
    """Train K prompts (seeds seed..seed+K-1), then evaluate them and their ensembles in one pass.

    Example: softprompt ensemble --task rte --k 5 --steps 300 --prompt-length 20 --out runs/rte-ens

    Evaluate again later: softprompt eval --task rte --prompt runs/rte-ens/member-*/prompt.safetensors
    """
    from softprompt.evaluation.ensemble import evaluate_ensemble, format_ensemble
    from softprompt.model.loading import load_model
    from softprompt.tasks import resolve_task
    from softprompt.training.ensemble import train_ensemble

    cfg = train_config(config, {**flags, "out": str(out)})
    init_list = [s.strip() for s in inits.split(",")] if inits else None
    fm = load_model(cfg.model)
    paths = train_ensemble(cfg, k, out, inits=init_list, fm=fm)
    chosen = resolve_task(cfg.task, cfg.task_file)
    examples = chosen.examples("validation", cfg.data_dir, limit=cfg.eval_limit)
    report = {**evaluate_ensemble(fm, chosen, examples, paths, cfg.eval_batch_size), "split": "validation"}
    (out / "ensemble_eval.json").write_text(json.dumps(report, indent=2))
    typer.echo(format_ensemble(report))


@app.command()
def serve(
    prompts: Annotated[Path, typer.Option("--prompts", help="Directory of NAME.safetensors prompt files (task = NAME); publish new ones by write-then-rename.")],
    model: ModelOpt = "default",
    host: Annotated[str, typer.Option(help="Interface to bind (loopback by default; there is no authentication).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="TCP port.")] = 8000,
    max_batch_size: Annotated[int, typer.Option(min=1, help="Examples per micro-batch.")] = 16,
    max_wait_ms: Annotated[float, typer.Option(min=0, help="How long a request waits for others to batch with.")] = 10.0,
    max_input_tokens: Annotated[int, typer.Option(min=1, help="Tokens per input; longer inputs get 422.")] = 512,
    max_inputs: Annotated[int, typer.Option(min=1, help="Inputs per /v1/classify request.")] = 64,
    max_body_bytes: Annotated[int, typer.Option(min=1, help="Request body size; larger gets 413.")] = 1_000_000,
    max_new_tokens: Annotated[int, typer.Option(min=1, help="Upper bound and default for /v1/generate.")] = 64,
    queue_timeout_s: Annotated[float, typer.Option(min=0.001, help="Requests not started by then get 503.")] = 30.0,
    read_timeout_s: Annotated[float, typer.Option(min=0.001, help="A request's head, then its body, must arrive "
                                                  "within this; else 408.")] = 30.0,
    reload_interval_s: Annotated[float, typer.Option(min=0, help="Rescan --prompts this often (0: only on GET /v1/tasks).")] = 2.0,
    continuous_batching: Annotated[bool, typer.Option(help="Generation requests join and leave a running batch "
                                                      "between decode steps (--no-continuous-batching: static "
                                                      "micro-batches).")] = True,
    max_running_requests: Annotated[int, typer.Option(min=1, help="Generation requests decoding at once in the "
                                                      "continuous batch (vLLM's max_num_seqs).")] = 64,
    log_level: Annotated[str, typer.Option(help="debug | info | warning | error")] = "info",
) -> None:
    """Serve every prompt in a directory over HTTP, on one frozen model (docs at /docs).

    Example: softprompt serve --prompts prompts/ --port 8000

      curl -s localhost:8000/v1/classify -H 'content-type: application/json' -d '{"task": "sst2", "inputs": ["a gem ."]}'
    """
    from softprompt.serve.app import ServeSettings
    from softprompt.serve.app import serve as run

    run(model, prompts, host, port, ServeSettings(
        max_batch_size=max_batch_size, max_wait_ms=max_wait_ms, max_input_tokens=max_input_tokens,
        max_inputs=max_inputs, max_body_bytes=max_body_bytes, max_new_tokens=max_new_tokens,
        queue_timeout_s=queue_timeout_s, reload_interval_s=reload_interval_s, read_timeout_s=read_timeout_s,
        continuous_batching=continuous_batching, max_running_requests=max_running_requests), log_level=log_level)


@app.command("export-vllm")
def export_vllm_command(
    prompt: Annotated[Path, typer.Argument(help="A softprompt .safetensors file (decoder-only model).")],
    out: Annotated[Path, typer.Argument(help="File to write (.safetensors); a .json sidecar goes next to it.")],
    dtype: Annotated[str, typer.Option(help="The dtype vLLM runs the model in: bfloat16 | float16 | float32.")] = "bfloat16",
) -> None:
    """Write a prompt as vLLM `prompt_embeds` rows [P, H] (+ JSON sidecar); see softprompt/export_vllm.py.

    Example: softprompt export-vllm runs/sst2/prompt.safetensors sst2.vllm.safetensors --dtype bfloat16
    """
    from softprompt.interop.vllm import export_vllm, sidecar_path

    written = export_vllm(prompt, out, dtype=dtype)
    typer.echo(f"wrote {written} and {sidecar_path(written)} (prompt_embeds rows, {dtype})")


def _add_groups() -> None:
    from softprompt.cli.cache import app as cache_app
    from softprompt.cli.runs import app as runs_app
    from softprompt.experiments.cli import app as experiments_app

    app.add_typer(experiments_app, name="experiments")
    app.add_typer(cache_app, name="cache")
    app.add_typer(runs_app, name="runs")


_add_groups()


def _usage_error_types() -> tuple[type[Exception], ...]:
    """The exception classes a bad command line raises (unknown command, bad option value): typer >= 0.2x
    raises its vendored copy of click (typer._click), older typer click's own; matching only click's let every
    typo end in a traceback."""
    import importlib

    found: list[type[Exception]] = []
    for module in ("typer._click.exceptions", "click.exceptions"):
        try:
            found.append(importlib.import_module(module).ClickException)
        except (ImportError, AttributeError):
            continue
    return tuple(found)


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
    except SoftpromptError as err:  # our own, expected failures: one line, no traceback
        typer.echo(f"error: {err}", err=True)
        sys.exit(2)
    except Exception as err:  # noqa: BLE001 — a bad command line is shown by click; anything else is a bug
        if isinstance(err, _usage_error_types()):
            err.show()
            sys.exit(err.exit_code)
        raise

