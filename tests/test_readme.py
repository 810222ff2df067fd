"""Every `softprompt ...` command in README.md's shell blocks runs, in a smoke mode, so the docs cannot drift.

The commands run in-process (`softprompt.cli.main`, what the installed script calls) one after another in one
scratch folder, in README order: later commands use what earlier ones wrote (runs/sst2 is trained before it
is evaluated and exported). The smoke mode is this mapping, applied to every command:

- model: `--model default` -> a tiny random Llama folder; a command that takes `--model` but names none gets
  it too (but `train --resume`, whose run folder records its model).
- data: $SOFTPROMPT_DATA -> a scratch data dir with made-up rows in each benchmark file format the README's
  tasks read (SST-2 and MR from tests/data; RTE, MRPC, QQP, SQuAD written below); the hub is off.
  $SOFTPROMPT_CACHE -> scratch. examples/ and experiments/ (without runs/) are copied in.
- sizes: the flag values in SMOKE_VALUES replace the README's (`--steps 300` -> 2, `--limit 200` -> 8, ...);
  a resumed run gets RESUME_STEPS, more than the run it continues.
- a shell glob (`member-*`) is expanded as bash does: sorted matches, the pattern itself when none match.
- files the README takes as given (GIVEN: e.g. runs/rte/prompt.safetensors, which no README command trains)
  are made before the first command.

Commands that cannot run here are in NOT_RUN, each with the reason. A README command in neither runs; a
command that fails, or a NOT_RUN entry the README no longer has, fails the test.
"""

from __future__ import annotations

import glob
import gzip
import json
import shlex
import shutil
import sys
import traceback
from pathlib import Path

import pytest
import torch
import typer.main
from tiny import TINY_DATA, tiny_causal

from softprompt import cli
from softprompt.cli import main

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
SHELL_LANGUAGES = {"bash", "sh", "shell", "console"}

SMOKE_VALUES = {
    "--steps": "2", "--eval-every": "1", "--eval-limit": "8", "--limit": "8", "--k": "2", "--prompt-length": "4",
    "--length": "4", "--shots": "2", "--batch-size": "4",
}
RESUME_STEPS = "4"

# README command (as written, comments dropped) -> why it is not run here, and what covers it instead.
NOT_RUN = {
    "softprompt serve --prompts prompts/ --port 8000":
        "serves until killed; tests/test_server.py runs the app in-process and the command as a subprocess",
    "softprompt experiments run cost":
        "trains the study's real-model variants (hours); tests/test_experiments.py runs the runner on tiny configs",
    "softprompt experiments run methods --tasks sst2,rte --models default":
        "trains the study's real-model variants (hours); tests/test_experiments.py runs the runner on tiny configs",
    "softprompt experiments run methods --methods majority":
        "reads every task of the methods study from the real benchmark data; tests/test_experiments.py covers it",
    "softprompt experiments run all --quick":
        "~4 minutes on the real model (the README says CI runs it); tests/test_experiments.py runs the runner",
}

# Files the README assumes exist: path -> the task their prompt is for (no README command trains them).
GIVEN = {
    "runs/rte/prompt.safetensors": "rte",
    "runs/squad/prompt.safetensors": "squad",
    "runs/qqp/prompt.safetensors": "qqp",
}


# ---------------------------------------------------------------------------------------------- the README


def shell_commands(text: str) -> list[str]:
    """The `softprompt ...` lines of the shell blocks, comments dropped, continuation lines joined."""
    commands: list[str] = []
    language: str | None = None  # None: outside a fenced block
    pending = ""
    for line in text.splitlines():
        if line.strip().startswith("```"):
            language = line.strip()[3:].strip() if language is None else None
            continue
        if language not in SHELL_LANGUAGES:
            continue
        line = pending + line
        if line.rstrip().endswith("\\"):
            pending = line.rstrip()[:-1] + " "
            continue
        pending = ""
        words = shlex.split(line, comments=True)
        if words and words[0] == "softprompt":
            commands.append(shlex.join(words))
    return commands


def test_shell_commands_are_found() -> None:
    text = "\n".join([
        "```bash", "softprompt eval --task x --limit 3   # a comment", "make demo", "softprompt train \\",
        "  --steps 2", "```", "softprompt outside-a-block", "```python", "softprompt = 1", "```",
        "```bash", "softprompt init --labels 'a,b'", "```",
    ])
    assert shell_commands(text) == ["softprompt eval --task x --limit 3", "softprompt train --steps 2",
                                    "softprompt init --labels a,b"]


def test_not_run_entries_are_still_in_the_readme() -> None:
    stale = set(NOT_RUN) - set(shell_commands(README.read_text(encoding="utf-8")))
    assert not stale, f"NOT_RUN lists commands the README no longer has: {sorted(stale)}"


# ---------------------------------------------------------------------------------------------- smoke mode


def _command(words: list[str]):
    """The click command `words` name (`softprompt experiments list` -> experiments' list)."""
    command = typer.main.get_command(cli.app)
    for word in words[1:]:
        sub = getattr(command, "commands", {}).get(word)
        if sub is None:
            break
        command = sub
    return command


def smoke_args(words: list[str], model_dir: Path) -> list[str]:
    """A README command's arguments (without `softprompt`) in smoke mode (the module docstring's mapping)."""
    args = list(words[1:])
    resume = "--resume" in args
    for i, word in enumerate(args[:-1]):
        if word in ("--model", "-m") and args[i + 1] == "default":
            args[i + 1] = str(model_dir)
        elif word in SMOKE_VALUES:
            args[i + 1] = RESUME_STEPS if resume and word == "--steps" else SMOKE_VALUES[word]
    takes_model = any("--model" in p.opts for p in _command(words).params)
    if takes_model and not resume and not {"--model", "-m"} & set(args):
        args += ["--model", str(model_dir)]
    expanded: list[str] = []
    for word in args:
        matches = sorted(glob.glob(word)) if glob.has_magic(word) else []
        expanded += matches or [word]
    return expanded


def _write_jsonl(path: Path, rows: list[dict], gz: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(r) + "\n" for r in rows)
    if gz:
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)


def write_smoke_data(data: Path) -> None:
    """Made-up rows in the layout and format of each benchmark file the README's tasks read."""
    from softprompt.tasks.qa import SQUAD_FILE, SQUAD_TRAIN_PERCENT, passage_bucket

    shutil.copytree(TINY_DATA, data)
    words = ["entailment", "not_entailment"]
    rte = [{"premise": f"a man number {i} is walking in the park .", "hypothesis": f"someone {i} moves .",
            "label": words[i % 2], "idx": i} for i in range(40)]
    _write_jsonl(data / "RTE" / "train.jsonl", rte)
    _write_jsonl(data / "RTE" / "val.jsonl", rte[:8])
    header = "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
    mrpc = "".join(f"{i % 2}\t{i}\t{i + 100}\tthe movie {i} was great .\tthe film {i} was good .\n" for i in range(12))
    for name in ("train.tsv", "dev.tsv"):
        (data / "MRPC" / name).parent.mkdir(parents=True, exist_ok=True)
        (data / "MRPC" / name).write_text(header + mrpc, encoding="utf-8-sig")
    qqp = {str(i): {"text_a": f"is the sky {i} blue ?", "text_b": f"is the sky {i} clear ?", "label": str(i % 2)}
           for i in range(12)}
    for name in ("train.json", "dev.json"):
        (data / "QQP" / "pcp_subset").mkdir(parents=True, exist_ok=True)
        (data / "QQP" / "pcp_subset" / name).write_text(json.dumps(qqp))
    passages, sides = [], {True: 0, False: 0}
    for i in range(200):  # enough passages on both sides of SQuAD's passage-level split
        context = f"the sky is blue on a clear day number {i} ."
        side = passage_bucket(context) < SQUAD_TRAIN_PERCENT
        if sides[side] < 4:
            sides[side] += 1
            passages.append({"context": context, "qas": [{"id": f"q{i}", "question": "what is blue ?",
                                                          "answers": ["the sky"]}]})
    _write_jsonl(data / SQUAD_FILE, [{"header": {"dataset": "SQuAD", "split": "dev"}}, *passages], gz=True)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The scratch folder the commands run in, its data dir, cache, tiny model folder and GIVEN files."""
    from softprompt.model.loading import load_model
    from softprompt.training.init import make_prompt

    ws = tmp_path_factory.mktemp("readme")
    threads = torch.get_num_threads()
    fm = tiny_causal(add_bos=False)  # the default SmolLM2 adds no BOS either
    fm.model.config.max_position_embeddings = 2048  # room for the README's shots; rotary positions need no table
    model_dir = ws / "tiny-model"
    fm.model.save_pretrained(model_dir)
    fm.tokenizer.save_pretrained(model_dir)
    write_smoke_data(ws / "data")
    shutil.copytree(ROOT / "examples", ws / "work" / "examples")
    shutil.copytree(ROOT / "experiments", ws / "work" / "experiments", ignore=shutil.ignore_patterns("runs"))
    loaded = load_model(str(model_dir), dtype="fp32")
    for path, task in GIVEN.items():
        (ws / "work" / path).parent.mkdir(parents=True, exist_ok=True)
        make_prompt(loaded, 4, "random-uniform", task=task).save(ws / "work" / path)
    torch.set_num_threads(threads)
    return {"work": ws / "work", "data": ws / "data", "cache": ws / "cache", "model": model_dir}


def _run(args: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    """`softprompt ARGS` in-process: (exit code, stdout, stderr); an uncaught exception is code -1 + traceback."""
    argv = sys.argv
    sys.argv = ["softprompt", *args]
    code = 0
    try:
        main()
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else 1
    except Exception:  # noqa: BLE001 — a README command that crashes is reported with the others
        code = -1
        print(traceback.format_exc(), file=sys.stderr)
    finally:
        sys.argv = argv
    out, err = capsys.readouterr()
    return code, out, err


def test_every_readme_command_runs(workspace, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    commands = shell_commands(README.read_text(encoding="utf-8"))
    assert len(commands) > 20, "README shell blocks not found: has the README's layout changed?"
    monkeypatch.chdir(workspace["work"])
    monkeypatch.setenv("SOFTPROMPT_DATA", str(workspace["data"]))
    monkeypatch.setenv("SOFTPROMPT_NO_HUB", "1")
    monkeypatch.setenv("SOFTPROMPT_CACHE", str(workspace["cache"]))
    threads = torch.get_num_threads()
    failures, ran = [], []
    try:
        for command in commands:
            if command in NOT_RUN:
                continue
            args = smoke_args(shlex.split(command), workspace["model"])
            code, out, err = _run(args, capsys)
            ran.append(command)
            if code != 0 or "Traceback" in err:
                tail = "\n    ".join(err.strip().splitlines()[-6:])
                failures.append(f"{command}\n  ran as: softprompt {shlex.join(args)}\n  exit {code}:\n    {tail}")
            elif "member-*" in command and "majority vote" not in out:  # the glob form is an ensemble
                failures.append(f"{command}: no ensemble report in\n{out}")
    finally:
        torch.set_num_threads(threads)  # load_model sets the process's threads; later tests keep theirs
    assert not failures, f"{len(failures)} of {len(ran)} README commands failed:\n\n" + "\n\n".join(failures)


def test_smoke_args_mapping(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for i in (0, 1, 10):
        (tmp_path / f"ens/member-{i}").mkdir(parents=True)
        (tmp_path / f"ens/member-{i}/p.st").touch()
    model = tmp_path / "m"
    assert smoke_args(shlex.split("softprompt train --task sst2 --steps 300 --out r"), model) == [
        "train", "--task", "sst2", "--steps", "2", "--out", "r", "--model", str(model)]
    assert smoke_args(shlex.split("softprompt train --resume r --steps 600"), model) == [
        "train", "--resume", "r", "--steps", RESUME_STEPS]
    assert smoke_args(shlex.split("softprompt info --model default"), model) == ["info", "--model", str(model)]
    assert smoke_args(shlex.split("softprompt export-peft a b/"), model) == ["export-peft", "a", "b/"]
    assert smoke_args(shlex.split("softprompt eval --prompt ens/member-*/p.st --no-such/*"), model)[:4] == [
        "eval", "--prompt", "ens/member-0/p.st", "ens/member-1/p.st"]
    assert smoke_args(["softprompt", "cache", "list", "no-match/*"], model) == ["cache", "list", "no-match/*"]
