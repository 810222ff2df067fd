"""TrainConfig's fields as a command line needs them, read from config.py's source with `ast`.

The source is read, not imported: importing config.py loads torch, and `softprompt --help` must answer at
once. Each field gives its name, its value type, its choices (an enum field's values) and its docstring
(the string literal after the field), which is also its flag's help.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

SOURCE = Path(__file__).with_name("config.py")
SCALARS = {"str": str, "int": int, "float": float, "bool": bool}


@dataclass(frozen=True)
class ConfigField:
    name: str
    type: type  # str, int, float or bool (str for an enum field)
    doc: str  # whitespace collapsed to single spaces
    choices: tuple[str, ...] | None = None  # an enum field's values


def config_fields(source: Path = SOURCE, cls: str = "TrainConfig") -> list[ConfigField]:
    """The fields of dataclass `cls` in `source`, in order. A field without a docstring, or of a type
    other than str/int/float/bool/an enum of the same module (optionally `| None`), is a TypeError."""
    tree = ast.parse(source.read_text(), str(source))
    classes = {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}
    enums = {
        name: tuple(s.value.value for s in node.body if isinstance(s, ast.Assign) and isinstance(s.value, ast.Constant))
        for name, node in classes.items()
        if any(ast.unparse(base) in ("Enum", "StrEnum") for base in node.bases)
    }
    body = classes[cls].body
    found = []
    for stmt, after in zip(body, [*body[1:], None], strict=True):
        if not (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)):
            continue
        name = stmt.target.id
        kinds = [k.strip() for k in ast.unparse(stmt.annotation).split("|") if k.strip() != "None"]
        if len(kinds) != 1 or (kinds[0] not in SCALARS and kinds[0] not in enums):
            raise TypeError(f"{source}: {cls}.{name}: type {ast.unparse(stmt.annotation)} has no flag form")
        doc = after.value.value if isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant) else None
        if not isinstance(doc, str) or not doc.strip():
            raise TypeError(f"{source}: {cls}.{name} has no docstring (the string after the field is its help)")
        found.append(ConfigField(name, SCALARS.get(kinds[0], str), " ".join(doc.split()), enums.get(kinds[0])))
    return found
