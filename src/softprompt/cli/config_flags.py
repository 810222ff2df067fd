"""`train` and `ensemble` flags derived from TrainConfig, one per field, so the two commands cannot drift.

A field's flag is `--field-name` (FLAG_ALIASES keeps the older short forms), its help is the field's
docstring, an enum field takes its values as choices and a bool is `--x/--no-x`. Every flag defaults to
None, "not given", so a YAML config underneath keeps its values (config file < given flags).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from softprompt.training.fields import ConfigField, config_fields

if TYPE_CHECKING:
    from softprompt.training.config import TrainConfig

# Flags whose name is not --field-name, or that have a short form; users' scripts spell them this way.
FLAG_ALIASES = {"model": ("--model", "-m"), "prompt_length": ("--prompt-length", "-p"), "out": ("--out", "-o")}


def field_option(field: ConfigField) -> inspect.Parameter:
    """The keyword-only parameter, with its typer.Option, that stands for `field` in a command's signature."""
    decls = FLAG_ALIASES.get(field.name, (f"--{field.name.replace('_', '-')}",))
    if field.type is bool:
        decls = (f"{decls[0]}/--no-{decls[0][2:]}", *decls[1:])
    kind = Enum(field.name, {v: v for v in field.choices}, type=str) if field.choices else field.type
    return inspect.Parameter(field.name, inspect.Parameter.KEYWORD_ONLY, default=None,
                             annotation=Annotated[kind | None, typer.Option(*decls, help=field.doc)])


def config_options(skip: tuple[str, ...] = ()) -> Callable[[Callable], Callable]:
    """After a command's own options, one per TrainConfig field not in `skip` (None: not given), in **flags.

    Typer reads a command's options from its signature, so the decorator sets `__signature__`; the command's
    annotations must resolve in its own module (they are strings under `from __future__ import annotations`).
    """

    def add(command: Callable) -> Callable:
        own = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in inspect.signature(command, eval_str=True)
               .parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
        command.__signature__ = inspect.Signature(own + [field_option(f) for f in config_fields() if f.name not in skip])
        return command

    return add


def train_config(config: Path | None, flags: dict[str, Any], resume: Path | None = None) -> TrainConfig:
    """Flags -> TrainConfig: the YAML config (--resume: by default the run's), then given flags; --resume sets out."""
    from softprompt.training.config import TrainConfig

    values = {name: value.value if isinstance(value, Enum) else value for name, value in flags.items()}
    if resume is not None:
        config = config or resume / "config.yaml"
        values["out"] = str(resume)
    return TrainConfig.from_sources(config, **values)
