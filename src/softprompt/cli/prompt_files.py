"""The prompt files `softprompt eval` is given: several after one `--prompt` (what a shell glob such as
`runs/ens/member-*/prompt.safetensors` expands to), `--prompt` repeated, or a run / ensemble folder."""

from __future__ import annotations

from pathlib import Path

from softprompt.errors import UsageError
from softprompt.training.rundir import RunDir

_GLOB_CHARS = frozenset("*?[")


def prompt_files(given: list[Path] | None, more: list[Path] | None) -> list[Path]:
    """`--prompt` values plus the paths that followed one (typer sees them as positional arguments) -> files.

    A folder stands for its prompt: a training run's `prompt.safetensors`, else an ensemble's
    `member-0/prompt.safetensors`, `member-1/...` in member order (not the shell's `member-10` before `member-2`).
    """
    if more and not given:
        raise UsageError(f"unexpected argument {str(more[0])!r}: prompt files go after --prompt, e.g. "
                         "--prompt runs/ens/member-*/prompt.safetensors")
    return [file for path in [*(given or []), *(more or [])] for file in _expand(path)]


def _expand(path: Path) -> list[Path]:
    if not path.is_dir():
        if not path.exists() and _GLOB_CHARS & set(str(path)):
            # The shell passes a pattern that matches nothing on unchanged.
            raise UsageError(f"no file matches {path}: check the path (is the run or ensemble trained yet?)")
        return [path]
    run = RunDir(path)
    if run.best_prompt.is_file():
        return [run.best_prompt]
    members: list[Path] = []
    while (member := run.member(len(members))).root.is_dir():
        members.append(member.best_prompt)  # a member without its prompt fails on load, naming the file
    if not members:
        raise UsageError(f"{path} is a folder without {run.best_prompt.name} or member-0/: pass prompt files, a "
                         "training run's folder or an ensemble's folder")
    return members
