"""The CLI as a user runs it: a real subprocess, exit codes, one-line errors, files written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from tiny import tiny_causal

from softprompt import __version__
from softprompt.cli import main
from softprompt.errors import SoftpromptError
from softprompt.model.prompt import SoftPrompt
from softprompt.training.loop import TrainingError


def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "softprompt.cli", *args], capture_output=True, text=True, env=env)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A tiny Llama saved as a Hugging Face folder: `--model DIR` loads it like any local model."""
    folder = tmp_path_factory.mktemp("tiny-model")
    fm = tiny_causal(add_bos=False)
    fm.model.save_pretrained(folder)
    fm.tokenizer.save_pretrained(folder)
    return folder


def test_version_and_help():
    assert run("--version").stdout.strip() == f"softprompt {__version__}"
    out = run("--help").stdout
    for command in ("info", "init", "train", "eval", "export-peft", "import-peft"):
        assert command in out


def test_info_init_and_peft_round_trip(model_dir, tmp_path):
    info = json.loads(run("info", "--model", str(model_dir), "--json").stdout)
    assert info["hidden_size"] == 32 and info["is_seq2seq"] is False
    init = run("init", "--model", str(model_dir), "--length", "6", "--init", "class-labels",
               "--labels", "negative,positive", "--out", str(tmp_path / "p.safetensors"))
    assert init.returncode == 0, init.stderr
    assert "P=6 × H=32 = 192 parameters" in init.stdout
    prompt = SoftPrompt.load(tmp_path / "p.safetensors")
    assert prompt.metadata["label_words"] == ["negative", "positive"] and prompt.metadata["init"] == "class-labels"
    assert run("export-peft", str(tmp_path / "p.safetensors"), str(tmp_path / "peft")).returncode == 0
    back = run("import-peft", str(tmp_path / "peft"), str(tmp_path / "back.safetensors"), "--model", str(model_dir))
    assert back.returncode == 0, back.stderr
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
def test_user_errors_are_one_line_without_traceback(model_dir, args, message):
    result = run(*[a.replace("{model}", str(model_dir)) for a in args])
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr


class _PluginError(SoftpromptError):
    """Defined outside the package: main must go by the class, not by the module the class lives in."""


@pytest.mark.parametrize("error", [_PluginError("the plugin broke: fix X"), TrainingError("loss is NaN at step 3")])
def test_softprompt_errors_from_a_command_are_one_line_exit_2(monkeypatch, capsys, error):
    import softprompt.interop.vllm as vllm

    def fail(*_args, **_kwargs):
        raise error

    monkeypatch.setattr(vllm, "export_vllm", fail)
    monkeypatch.setattr(sys, "argv", ["softprompt", "export-vllm", "p.safetensors", "out.safetensors"])
    with pytest.raises(SystemExit) as done:  # a re-raised error would fail here instead
        main()
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert err == f"error: {error}\n" and "Traceback" not in err
