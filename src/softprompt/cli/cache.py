"""`softprompt cache ...`: list and clear the dequantized models under $SOFTPROMPT_CACHE (model/cache.py)."""

from __future__ import annotations

import json
import time
from typing import Annotated

import typer

app = typer.Typer(help="The model cache: GGUF models dequantized once, under $SOFTPROMPT_CACHE (default "
                       "~/.cache/softprompt).", no_args_is_help=True)


def _size(n: int) -> str:
    return f"{n / 1e6:,.1f} MB"


@app.command("list")
def list_command(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Each cached model: name, size, source, last used (and why it would be rebuilt, if it would).

    Example: softprompt cache list
    """
    from softprompt.model.cache import cache_root, list_entries

    root = cache_root()
    entries = list_entries(root)
    if as_json:
        typer.echo(json.dumps([e.as_json() for e in entries], indent=2))
        return
    if not entries:
        typer.echo(f"no cached models in {root / 'models'}")
        return
    for e in entries:
        used = time.strftime("%Y-%m-%d %H:%M", time.localtime(e.last_used))
        broken = f"  [unusable, rebuilt on next load: {e.problem}]" if e.problem else ""
        typer.echo(f"{e.name}  {_size(e.size_bytes)}  last used {used}  source: {e.source}{broken}")
    typer.echo(f"{len(entries)} cached, {_size(sum(e.size_bytes for e in entries))} in {root / 'models'}")


@app.command("clear")
def clear_command(
    name: Annotated[str | None, typer.Argument(help="One entry (a name from `cache list`), or a file stem: "
                                                    "every entry of that model. Default: all.")] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Remove cached models; each is rebuilt from its GGUF file the next time it is loaded.

    Example: softprompt cache clear --yes
    """
    from softprompt.model.cache import cache_root, remove_entries, select_entries

    chosen = select_entries(cache_root(), name)
    if not chosen:
        typer.echo("the cache is empty: nothing to remove")
        return
    total = _size(sum(e.size_bytes for e in chosen))
    if not yes:
        typer.echo("\n".join(f"  {e.name}" for e in chosen))
        typer.confirm(f"remove these {len(chosen)} cached models ({total})?", abort=True)
    freed = remove_entries(chosen)
    typer.echo(f"removed {len(chosen)} cached model{'s' if len(chosen) != 1 else ''} ({_size(freed)})")
