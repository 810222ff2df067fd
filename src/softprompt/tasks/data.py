"""Read task data: official files from a data directory, else the Hugging Face hub, else a clear error.

Where the data directory is, in order: the `data_dir` argument (`--data-dir`), the `SOFTPROMPT_DATA`
environment variable, then `../shared/data` relative to the working directory if it exists. Files are
read in place; nothing is ever copied into the repository.

Readers return *records*: plain dicts shaped like the rows of the published files (one JSON line, one CSV
row with named columns, one SQuAD paragraph). Tasks turn records into examples, so the hub path only has
to map hub rows onto the same record shape (`HubSource.row_map`).
"""

from __future__ import annotations

import codecs
import csv
import gzip
import io
import itertools
import json
import os
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from softprompt.errors import UsageError

ENV_VAR = "SOFTPROMPT_DATA"
NO_HUB_ENV = "SOFTPROMPT_NO_HUB"  # set to 1 to never try the hub (tests, air-gapped machines)
DEFAULT_RELATIVE = Path("..") / "shared" / "data"

Record = dict[str, Any]


class DataNotFoundError(UsageError, FileNotFoundError):
    """Neither the files nor the hub could provide a task's split; the message says how to fix it."""


class DataFileError(UsageError):
    """A data file cannot be read as its format; the message names the file, the line where known, and a fix."""


@dataclass(frozen=True)
class Source:
    """One data file of a split.

    Attributes:
        path: relative to the data dir (or absolute).
        fmt: `jsonl`, `jsonl.gz` (header lines skipped), `json-dict` (records are the values of one
            object), `squad-json` (records are the paragraphs of SQuAD v1.1 JSON), `csv` or `tsv`.
        member: a file inside the zip archive at `path` (BoolQ's train split is read from the zip).
        header: csv/tsv: the first row names the columns.
        columns: csv/tsv: column names when there is no header (or to rename them).
        delimiter: csv/tsv: the field separator, when not `,` (csv) or a tab (tsv).
        quoting: csv/tsv: `minimal` (standard quotes) or `none` (quote characters are text).
        encoding: e.g. `utf-8-sig` for files that start with a byte-order mark.
        where: keep only records for which this returns True (SQuAD's passage-level split).
    """

    path: str
    fmt: str = "jsonl"
    member: str | None = None
    header: bool = True
    columns: tuple[str, ...] | None = None
    delimiter: str | None = None
    quoting: str = "minimal"
    encoding: str = "utf-8"
    where: Callable[[Record], bool] | None = field(default=None, compare=False)

    def describe(self) -> str:
        return f"{self.path}!{self.member}" if self.member else self.path


@dataclass(frozen=True)
class HubSource:
    """The same task on the Hugging Face hub.

    Attributes:
        path: dataset id, e.g. `aps/super_glue`.
        name: its config, e.g. `rte`.
        splits: our split name -> the hub's split name.
        row_map: one hub row -> a record shaped like the file rows (None drops the row).
    """

    path: str
    name: str | None
    splits: dict[str, str]
    row_map: Callable[[Record], Record | None]


def resolve_data_dir(data_dir: str | Path | None = None) -> Path | None:
    """The data directory to read from, or None when none is configured and ../shared/data is absent."""
    if data_dir:
        return Path(data_dir).expanduser()
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR]).expanduser()
    fallback = Path.cwd() / DEFAULT_RELATIVE
    return fallback.resolve() if fallback.is_dir() else None


def load_records(
    task: str, split: str, sources: Sequence[Source], data_dir: str | Path | None, hub: HubSource | None
) -> Iterator[Record]:
    """Records of one split: from the files when all exist, else from the hub, else DataNotFoundError."""
    root = resolve_data_dir(data_dir)
    paths = [_locate(root, s) for s in sources]
    if all(p is not None and p.exists() for p in paths):
        for source, path in zip(sources, paths, strict=True):
            assert path is not None
            for record in read_source(path, source):
                if source.where is None or source.where(record):
                    yield record
        return
    hub_problem = ""
    if hub is not None and split in hub.splits and not os.environ.get(NO_HUB_ENV):
        try:
            rows = _hub_rows(hub, split)
        except Exception as err:  # noqa: BLE001 — offline, missing package, gated dataset: all mean "no hub"
            hub_problem = f" The hub fallback ({hub.path}) failed too: {type(err).__name__}: {str(err)[:120]}."
        else:
            where = sources[0].where if sources else None
            yield from (r for r in rows if where is None or where(r))
            return
    missing = [s.describe() for s, p in zip(sources, paths, strict=True) if p is None or not p.exists()]
    place = f"in {root}" if root is not None else "(no data directory is set and ../shared/data does not exist)"
    raise DataNotFoundError(
        f"task {task!r}, split {split!r}: cannot find {', '.join(missing)} {place}.{hub_problem} "
        f"Point --data-dir or ${ENV_VAR} at the folder holding the benchmark files."
    )


def _locate(root: Path | None, source: Source) -> Path | None:
    path = Path(source.path).expanduser()
    if path.is_absolute():
        return path
    return root / path if root is not None else None


def read_source(path: Path, source: Source) -> Iterator[Record]:
    """Records of one file as published (see `Source.fmt`).

    A file that cannot be read as its format (not text in `source.encoding`, a bad JSON line, a CSV field
    over the csv module's size limit) raises `DataFileError` naming the file and, where known, the line.
    """
    try:
        yield from _read(path, source)
    except UnicodeDecodeError as err:
        raise DataFileError(_decode_problem(path, source, err)) from None
    except LookupError:
        raise DataFileError(f"{source.describe()}: unknown text encoding {source.encoding!r}; "
                            "use e.g. utf-8, utf-8-sig or latin-1") from None
    except (OSError, EOFError, zipfile.BadZipFile) as err:
        raise DataFileError(f"cannot read {path}: {getattr(err, 'strerror', None) or err}") from None


def _read(path: Path, source: Source) -> Iterator[Record]:
    if source.member is not None:
        with zipfile.ZipFile(path) as archive:
            text = archive.read(source.member).decode(source.encoding)
        yield from _parse(io.StringIO(text), source, path)
    elif source.fmt == "jsonl.gz":
        with gzip.open(path, "rt", encoding=source.encoding) as handle:
            yield from _parse(handle, source, path)
    else:
        with open(path, encoding=source.encoding, newline="") as handle:
            yield from _parse(handle, source, path)


def _decode_problem(path: Path, source: Source, err: UnicodeDecodeError) -> str:
    """Say which line is not text in the file's encoding, and what to do about it.

    The text reader decodes in blocks, so the error itself does not know the line: decode the raw lines again,
    one at a time with an incremental decoder (only on this error path), to find the first one that fails.
    """
    name = f"{path}!{source.member}" if source.member else str(path)
    line = None
    if source.member is None:
        opener = gzip.open if source.fmt == "jsonl.gz" else open
        decoder = codecs.getincrementaldecoder(source.encoding)()
        with opener(path, "rb") as raw:
            head = raw.read(4096)
            raw.seek(0)
            for number, chunk in enumerate(raw, start=1):
                try:
                    decoder.decode(chunk)
                except UnicodeDecodeError:
                    line = number
                    break
        if b"\x00" in head and "16" not in source.encoding and "32" not in source.encoding:
            return (f"{name}: looks like a binary file, not {source.fmt} text (it has NUL bytes); "
                    f"check that the path names the {source.fmt} file itself")
    where = f", line {line}" if line is not None else ""
    return (f"{name}{where}: not valid {source.encoding} text ({err.reason}, byte 0x{err.object[err.start]:02x}); "
            "if the file is in another encoding say so (e.g. 'encoding: latin-1' in the task file), "
            "or convert it to UTF-8")


def _parse(handle: io.TextIOBase | Any, source: Source, path: Path) -> Iterator[Record]:
    fmt = source.fmt
    if fmt in ("jsonl", "jsonl.gz"):
        for number, line in enumerate(handle, start=1):
            if line.strip():
                record = _json_line(line, path, number)
                if set(record) == {"header"}:
                    continue  # MRQA files start with {"header": {...}}
                yield record
    elif fmt == "json-dict":
        yield from _json_file(handle, path).values()
    elif fmt == "squad-json":
        for article in _json_file(handle, path)["data"]:
            for paragraph in article["paragraphs"]:
                yield {"title": article.get("title", ""), **paragraph}
    elif fmt in ("csv", "tsv"):
        yield from read_delimited(handle, source, path)
    else:
        raise ValueError(f"unknown data format {fmt!r} for {source.path}")


def _json_line(line: str, path: Path, number: int) -> Record:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as err:
        raise DataFileError(f"{path}, line {number}: not valid JSON ({err.msg} at column {err.colno}); "
                            "each line of a .jsonl file must be one complete JSON object") from None
    if not isinstance(record, dict):
        raise DataFileError(f"{path}, line {number}: a JSON {type(record).__name__}, not an object; "
                            'each line of a .jsonl file must be one object such as {"text": ..., "label": ...}')
    return record


def _json_file(handle: Any, path: Path) -> Any:
    try:
        return json.load(handle)
    except json.JSONDecodeError as err:
        raise DataFileError(f"{path}, line {err.lineno}: not valid JSON ({err.msg} at column {err.colno})") from None


def read_delimited(handle: Any, source: Source, path: Path | None = None) -> Iterator[Record]:
    """CSV/TSV rows as dicts keyed by the header or by `source.columns`."""
    quoting = {"minimal": csv.QUOTE_MINIMAL, "none": csv.QUOTE_NONE}[source.quoting]
    reader = csv.reader(handle, delimiter=source.delimiter or ("\t" if source.fmt == "tsv" else ","), quoting=quoting)
    names: Sequence[str] | None = source.columns
    for i in itertools.count():
        start = reader.line_num + 1  # a quoted field may span lines: report where its row began
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as err:
            raise DataFileError(_csv_problem(path or Path(source.path), start, err, source)) from None
        if i == 0 and source.header:
            names = names or [c.strip() for c in row]
            continue
        if not row:
            continue
        if names is None:
            names = [str(k) for k in range(len(row))]
        yield dict(zip(names, row, strict=False))


def _csv_problem(path: Path, line: int, err: csv.Error, source: Source) -> str:
    """The csv module's complaint with the line and the likely cause (a quote that never closes)."""
    if "field limit" not in str(err):
        return f"{path}, line {line}: {err}; check the file's quoting and delimiter"
    limit = f"{path}, line {line}: a field longer than the csv module's limit of {csv.field_size_limit()} characters"
    if source.quoting == "minimal":
        return (f"{limit}; usually a quote that never closes, so the rest of the file reads as one field: "
                "fix the quoting, or say 'quoting: none' in the task file if quote characters are plain text")
    return f"{limit}; split or shorten that field"


def _hub_rows(hub: HubSource, split: str) -> list[Record]:
    import datasets  # optional: only this fallback needs it

    dataset = datasets.load_dataset(hub.path, hub.name, split=hub.splits[split])
    return rows_from_hub(dataset, hub)


def rows_from_hub(dataset: Any, hub: HubSource) -> list[Record]:
    """Map the rows of a loaded hub dataset (any iterable of dicts) to file-shaped records."""
    records = [hub.row_map(dict(row)) for row in dataset]
    return [r for r in records if r is not None]
