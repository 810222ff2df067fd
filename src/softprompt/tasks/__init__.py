"""Tasks: the registry of built-in tasks and user task files.

    >>> from softprompt.tasks import get_task
    >>> task = get_task("rte")
    >>> ex = task.examples("validation", limit=1)[0]   # data dir: --data-dir / $SOFTPROMPT_DATA
    >>> ex.input_text, ex.target_text                  # ("premise: ... hypothesis: ...", "not_entailment")
"""

from __future__ import annotations

import difflib
from pathlib import Path

from softprompt.tasks import glue, qa, superglue
from softprompt.tasks.base import Example, Mode, Task, TaskError
from softprompt.tasks.custom import TaskFileError, load_task_file

_BUILDERS = (superglue.tasks, glue.tasks, qa.tasks)
TASK_NAMES: tuple[str, ...] = tuple(name for build in _BUILDERS for name in build())


class UnknownTaskError(TaskError):
    """No built-in task has that name."""


def get_task(name: str) -> Task:
    """A built-in task by name (case-insensitive; `-` and `_` alike)."""
    key = name.strip().lower().replace("-", "_")
    for build in _BUILDERS:
        found = build().get(key)
        if found is not None:
            return found
    close = difflib.get_close_matches(key, TASK_NAMES, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise UnknownTaskError(f"unknown task {name!r}.{hint} Built-in tasks: {', '.join(TASK_NAMES)}; "
                           "or pass a YAML task file with --task-file.")


def resolve_task(name: str | None = None, task_file: str | Path | None = None) -> Task:
    """`--task NAME` or `--task-file F` (exactly one)."""
    if (name is None) == (task_file is None):
        raise TaskError("give exactly one of --task NAME or --task-file FILE")
    return load_task_file(task_file) if task_file is not None else get_task(name or "")


__all__ = ["TASK_NAMES", "Example", "Mode", "Task", "TaskError", "TaskFileError", "UnknownTaskError",
           "get_task", "load_task_file", "resolve_task"]
