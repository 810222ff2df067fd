"""User-defined tasks from a YAML file: data files, an input template, label words or a target field.

    name: ticket_topic                 # required
    data:                              # required: split -> file (relative to this YAML file; $VARS expand)
      train: tickets_train.csv
      validation: {path: tickets_dev.csv, header: false, columns: [text, topic]}
      test: {from: train, fraction: 0.1, seed: 0}   # or carve a split out of another one (see below)
    format: csv                        # jsonl | csv | tsv (default: from the file extension)
    header: true                       # csv/tsv: first row names the columns
    columns: [text, topic]             # csv/tsv: column names when there is no header
    delimiter: ","                     # csv/tsv field separator (default , or tab)
    quoting: minimal                   # minimal (standard "quotes") | none (quotes are plain text)
    encoding: utf-8                    # e.g. utf-8-sig for files with a byte-order mark, latin-1
    strip: false                       # true: strip leading/trailing whitespace of every field
    input_template: "ticket: {text}"   # {field} placeholders name columns / JSON keys
    label_field: topic                 # classification: the column holding the label ...
    labels: {billing: billing, bug: bug report}   # ... and label value -> label word
    target_field: answer               # generation instead: the column holding the target text
    metrics: [accuracy, macro_f1]      # classification: accuracy f1 macro_f1; generation: em f1 accuracy
    main_metric: accuracy              # default: the first metric (or `average` of a standard pair)
    positive_label: bug report         # binary f1: the positive label word (default: the last one)

A carved split (`{from: SPLIT, fraction: F, seed: S}`) holds about F of SPLIT's records, chosen by a hash of
each record's input fields and S (`splits.py`): the same records in every run and process, whatever the file
order. SPLIT then excludes them, so nothing is both trained on and evaluated. Several splits carved from one
split are disjoint too; they share one seed and their fractions sum below 1.

Mistakes raise `TaskFileError` naming the file, the line and the field at fault; a data file that cannot be
read (not text in its encoding, a bad JSON line, a runaway CSV quote) names the data file and its line too.
"""

from __future__ import annotations

import codecs
import difflib
import os
import re
import string
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from softprompt.errors import UsageError
from softprompt.tasks.base import Example, Mode, Task, TaskError, choice_example
from softprompt.tasks.data import DataFileError, Record, Source, read_source
from softprompt.tasks.splits import Window, carvings_of
from softprompt.tasks.splits import windows as carve_windows

TOP_KEYS = ("name", "data", "format", "header", "columns", "delimiter", "quoting", "encoding", "strip",
            "input_template", "label_field", "labels", "target_field", "metrics", "main_metric", "positive_label",
            "description")
FILE_KEYS = ("path", "format", "header", "columns", "delimiter", "quoting", "encoding")
FORMATS = {".jsonl": "jsonl", ".json": "jsonl", ".csv": "csv", ".tsv": "tsv", ".txt": "tsv"}
CLASSIFICATION_METRICS = {"accuracy": "accuracy", "f1": "f1", "macro_f1": "macro_f1"}
GENERATION_METRICS = {"em": "em", "f1": "token_f1", "accuracy": "accuracy"}


class TaskFileError(TaskError):
    """A YAML task file is malformed; the message names the file, line and field."""


class _Doc:
    """The parsed YAML plus the line of every key, so errors can point at the line at fault."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as err:
            raise TaskFileError(f"{path}: not a UTF-8 text file (byte 0x{err.object[err.start]:02x} at offset "
                                f"{err.start}); a task file is YAML text, e.g. examples/ticket_topic.yaml") from None
        except OSError as err:
            raise TaskFileError(f"cannot read task file {path}: {err.strerror}") from None
        try:
            loader = yaml.SafeLoader(text)
            try:
                node = loader.get_single_node()
                self.data = loader.construct_document(node) if node is not None else None
            finally:
                loader.dispose()
        except yaml.YAMLError as err:
            raise TaskFileError(f"{path}{_yaml_line(err, text)}: not valid YAML: {_yaml_problem(err)}") from None
        self.lines: dict[str, int] = {}
        if node is not None:
            self._index(node, "")

    def _index(self, node: yaml.Node, prefix: str) -> None:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                dotted = f"{prefix}{key.value}"
                self.lines[dotted] = key.start_mark.line + 1
                self._index(value, dotted + ".")

    def error(self, field: str, message: str) -> TaskFileError:
        line = self.lines.get(field) or self.lines.get(field.split(".")[0])
        where = f":{line}" if line else ""
        return TaskFileError(f"{self.path}{where}: field '{field}': {message}")


def task_file_mode(path: str | Path) -> Mode:
    """A task file's default mode without reading its data: rank for a classification task (`label_field`), else
    generate. For planning (which recipe a study variant trains with) where the data may not be at hand."""
    spec = _Doc(Path(path).expanduser()).data
    return _mode(spec) if isinstance(spec, dict) else Mode.GENERATE


def _mode(spec: dict[str, Any]) -> Mode:
    """Classification tasks (a `label_field`) rank their label words; the others generate."""
    return Mode.RANK if "label_field" in spec else Mode.GENERATE


def load_task_file(path: str | Path) -> Task:
    """Build a task from a YAML task file (see the module docstring for the format)."""
    doc = _Doc(Path(path).expanduser())
    spec = doc.data
    if not isinstance(spec, dict):
        raise TaskFileError(f"{doc.path}: a task file is a YAML mapping (name:, data:, input_template:, ...)")
    for key in spec:
        if key not in TOP_KEYS:
            close = difflib.get_close_matches(str(key), TOP_KEYS, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else f"; known fields: {', '.join(TOP_KEYS)}"
            raise doc.error(str(key), f"unknown field{hint}")
    for key in ("name", "data", "input_template"):
        if key not in spec:
            raise TaskFileError(f"{doc.path}: missing required field '{key}'")
    name = spec["name"]
    if not isinstance(name, str) or not name.strip():
        raise doc.error("name", "must be a non-empty string")
    template = _template(doc, spec["input_template"])
    files = _files(doc, spec)
    carvings = carvings_of(spec["data"], files, doc.error)
    # Every split in the task file's order; a carved one reads the files of the split it is carved from.
    files = {str(s): files[carvings[str(s)][0] if str(s) in carvings else str(s)] for s in spec["data"]}
    split_windows = carve_windows(carvings, _placeholders(template))
    strip = spec.get("strip", False)
    if not isinstance(strip, bool):
        raise doc.error("strip", "must be true or false")

    is_classification = "label_field" in spec
    if is_classification == ("target_field" in spec):
        raise TaskFileError(f"{doc.path}: give either 'label_field' + 'labels' (classification) or "
                            "'target_field' (generation), not both or neither")
    if is_classification:
        if not isinstance(spec.get("labels"), dict) or not spec["labels"]:
            raise doc.error("labels", "classification needs 'labels': a mapping from label value to label word")
        labels = {_key(k): str(v).strip() for k, v in spec["labels"].items()}
        if any(not w for w in labels.values()):
            raise doc.error("labels", "every label word must be a non-empty string")
        label_words = list(dict.fromkeys(labels.values()))
        allowed, default_metrics = CLASSIFICATION_METRICS, ["accuracy"]
    else:
        if "labels" in spec:
            raise doc.error("labels", "'labels' only goes with 'label_field'; a generation task has 'target_field'")
        labels, label_words = {}, None
        allowed, default_metrics = GENERATION_METRICS, ["em", "f1"]
    metrics = spec.get("metrics", default_metrics)
    if not isinstance(metrics, list) or not metrics:
        raise doc.error("metrics", f"must be a list, e.g. [{', '.join(allowed)}]")
    for metric in metrics:
        if metric not in allowed:
            kind = "a classification" if is_classification else "a generation"
            raise doc.error("metrics", f"{metric!r} is not available for {kind} task; choose from {', '.join(allowed)}")
    metric_names = tuple(dict.fromkeys(allowed[m] for m in metrics))
    keys = list(dict.fromkeys(metrics))
    if len(metric_names) == 2 and {"accuracy"} < set(keys) and is_classification:
        keys.append("average")
    main_metric = spec.get("main_metric", keys[0])
    if main_metric not in keys:
        raise doc.error("main_metric", f"{main_metric!r} is not among the results: {', '.join(keys)}")
    positive = spec.get("positive_label")
    if positive is not None and (label_words is None or str(positive) not in label_words):
        raise doc.error("positive_label", f"must be one of the label words: {label_words}")

    field = str(spec["label_field"] if is_classification else spec["target_field"])
    formatter = _formatter(doc, template, field, labels, label_words)
    mode = _mode(spec)
    return CustomTask(str(name), label_words, mode, main_metric, metric_names, files, formatter,
                      positive=str(positive) if positive is not None else None,
                      notes=str(spec.get("description", f"user task from {doc.path}")), doc=doc,
                      windows=split_windows, strip=strip)


class CustomTask(Task):
    """A task from a YAML file: reads its files directly so a bad row is reported with its row number.

    `windows` holds the hash windows of carved splits and of the splits they were carved from (`splits.py`);
    `strip` strips every string field of a record before it is formatted.
    """

    def __init__(self, *args: Any, doc: _Doc, windows: dict[str, Window] | None = None, strip: bool = False,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.doc = doc
        self.windows = dict(windows or {})
        self.strip = strip

    def examples(self, split: str, data_dir: str | Path | None = None, limit: int | None = None) -> list[Example]:
        if split not in self.files:
            raise TaskError(f"task file {self.doc.path} has no split {split!r}; it has: {', '.join(self.files)}")
        window = self.windows.get(split)
        out: list[Example] = []
        for source in self.files[split]:
            for row, record in self._records(split, source):
                if window is not None and not window.keeps(record):
                    continue
                if self.strip:
                    record = {k: v.strip() if isinstance(v, str) else v for k, v in record.items()}
                try:
                    formatted = self.formatter(record)
                except _RowError as err:
                    raise self.doc.error(err.field, f"{source.path}, data row {row}: {err}") from None
                # Past the limit every row is still checked (a bad label on row 900 is found by --limit 8 too),
                # only not kept: formatting is cheap next to scoring.
                if limit is None or len(out) < limit:
                    out.extend(formatted)
        return out if limit is None else out[:limit]

    def _records(self, split: str, source: Source) -> Iterator[tuple[int, Record]]:
        """(data row, record) of one file; a file that cannot be read names the task file's line for it."""
        origin = self.windows[split].source if split in self.windows else split
        try:
            yield from enumerate(read_source(Path(source.path), source), start=1)
        except DataFileError as err:
            raise self.doc.error(f"data.{origin}", str(err)) from None


class _RowError(UsageError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def _expand_vars(path: str, doc: _Doc, where: str) -> str:
    """`$VAR` / `${VAR}` in a data path from the environment, so one task file serves every machine
    (e.g. `${SOFTPROMPT_DATA}/SST-2/train.tsv`); an unset variable is an error, not a literal folder."""
    for name in re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", path):
        if name not in os.environ:
            raise doc.error(where, f"${name} is not set: export it (e.g. export {name}=/path/to/data) or write the path out")
    return os.path.expandvars(path)


def _key(value: Any) -> str:
    """One spelling for label values from YAML keys and from data: true/false, 1 (not 1.0), stripped text."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def _template(doc: _Doc, template: Any) -> str:
    if not isinstance(template, str) or not template.strip():
        raise doc.error("input_template", "must be a non-empty string with {field} placeholders")
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as err:
        raise doc.error("input_template", f"{err} (write a literal brace as {{{{ or }}}})") from None
    if not fields:
        raise doc.error("input_template", "has no {field} placeholder, so every input would be the same")
    for f in fields:
        if not f or not f.replace("_", "a").replace(" ", "a").replace("-", "a").isalnum():
            raise doc.error("input_template", f"placeholder {{{f}}} must name a column, e.g. {{text}}")
    return template.rstrip()  # the target follows after a space; trailing whitespace would double it


def _files(doc: _Doc, spec: dict[str, Any]) -> dict[str, list[Source]]:
    data = spec["data"]
    if not isinstance(data, dict) or not data:
        raise doc.error("data", "must map split names to files, e.g. {train: train.jsonl, validation: dev.jsonl}")
    base = doc.path.parent
    files: dict[str, list[Source]] = {}
    for split, entry in data.items():
        if isinstance(entry, dict) and "from" in entry:
            continue  # a carved split (splits.carvings_of): it reads the files of the split it names
        where = f"data.{split}"
        options = {k: spec[k] for k in FILE_KEYS if k in spec and k != "path"}
        if isinstance(entry, str):
            options["path"] = entry
        elif isinstance(entry, dict):
            for key in entry:
                if key not in FILE_KEYS:
                    raise doc.error(f"{where}.{key}", f"unknown file option; known: {', '.join(FILE_KEYS)}")
            options.update(entry)
            where = f"{where}.path" if "path" in entry else where
        else:
            raise doc.error(where, "must be a file path or a mapping with 'path'")
        if "path" not in options:
            raise doc.error(where, "needs a 'path'")
        path = Path(_expand_vars(str(options["path"]), doc, where)).expanduser()
        path = path if path.is_absolute() else (base / path)
        if not path.is_file():
            raise doc.error(where, f"file not found: {path}")
        fmt = options.get("format") or FORMATS.get(path.suffix.lower())
        if fmt not in ("jsonl", "csv", "tsv"):
            raise doc.error(f"data.{split}", f"format {fmt!r}: say 'format: jsonl | csv | tsv'")
        def at(key: str, entry: Any = entry, split: Any = split) -> str:
            """The YAML key a file option came from: the split's own mapping, else the top level."""
            return f"data.{split}.{key}" if isinstance(entry, dict) and key in entry else key

        columns = options.get("columns")
        header = options.get("header", True)
        if columns is not None and (not isinstance(columns, list) or not all(isinstance(c, str) for c in columns)):
            raise doc.error(at("columns"), "must be a list of column names")
        if fmt != "jsonl" and not header and not columns:
            raise doc.error(at("header"), f"{path.name} has no header: name its columns with 'columns: [...]'")
        quoting = options.get("quoting", "minimal")
        if quoting not in ("minimal", "none"):
            raise doc.error(at("quoting"), f"{quoting!r}: use 'minimal' (standard quotes) or 'none'")
        delimiter, encoding = options.get("delimiter"), options.get("encoding", "utf-8")
        if delimiter is not None and (not isinstance(delimiter, str) or len(delimiter) != 1):
            raise doc.error(at("delimiter"), f"{delimiter!r}: must be one character, e.g. \",\" or \"\\t\"")
        if not _known_encoding(encoding):
            raise doc.error(at("encoding"), f"{encoding!r} is not a text encoding Python knows; "
                                            "e.g. utf-8, utf-8-sig, latin-1")
        files[str(split)] = [Source(
            str(path), fmt=fmt, header=bool(header), columns=tuple(columns) if columns else None,
            delimiter=delimiter, quoting=quoting, encoding=encoding,
        )]
    return files


def _placeholders(template: str) -> tuple[str, ...]:
    """The fields an input template reads, once each (what a carved split hashes)."""
    return tuple(dict.fromkeys(f for _, f, _, _ in string.Formatter().parse(template) if f))


def _known_encoding(name: Any) -> bool:
    if not isinstance(name, str):
        return False
    try:
        codecs.lookup(name)
    except LookupError:
        return False
    return True


def _formatter(doc: _Doc, template: str, field: str, labels: dict[str, str], label_words: list[str] | None) -> Any:
    field_key = "label_field" if label_words is not None else "target_field"

    def format_record(record: dict[str, Any]) -> list[Example]:
        values = {k: ("" if v is None else v) for k, v in record.items()}
        try:
            text = template.format_map(values)
        except KeyError as err:
            raise _RowError("input_template", f"no field {err} in this row; it has: {', '.join(map(str, record))}") from None
        if field not in record:
            raise _RowError(field_key, f"no field {field!r} in this row; it has: {', '.join(map(str, record))}")
        value = record[field]
        if label_words is None:
            answers = [str(a).strip() for a in value] if isinstance(value, list) else [str(value).strip()]
            answers = [a for a in answers if a]
            if not answers:
                raise _RowError(field_key, f"empty target in field {field!r}")
            return [Example(text, answers[0], answers=answers)]
        key = _key(value)
        if key not in labels:
            raise _RowError("labels", f"label value {key!r} is not in labels ({', '.join(labels)}); "
                                      "quote YAML keys such as 'yes'/'no'/'on' that YAML reads as booleans")
        return [choice_example(text, label_words, label_words.index(labels[key]), meta={"label_value": key})]

    return format_record



def _yaml_line(err: yaml.YAMLError, text: str) -> str:
    """`:LINE` of a YAML error: its problem mark, or (a reader error: a character YAML refuses) its position."""
    mark = getattr(err, "problem_mark", None)
    if mark is not None:
        return f":{mark.line + 1}"
    position = getattr(err, "position", None)
    return f":{text.count(chr(10), 0, position) + 1}" if isinstance(position, int) else ""


def _yaml_problem(err: yaml.YAMLError) -> str:
    """The YAML error in one line (pyyaml's own text spans several, with a pointer to the column)."""
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    hint = "; is this a binary file?" if "special characters are not allowed" in problem else ""
    return " ".join(str(problem).split()) + hint
