"""Splits carved out of another split by a hash of each example, for task files whose data has no validation
(or test) file: `validation: {from: train, fraction: 0.1, seed: 0}`.

Every record gets a position in [0, 1) from a SHA-256 of the seed and the record's input fields (the columns
the input template reads, stripped, not the label). A carved split keeps the records whose position falls in
its window, and the split it was carved from keeps only what no carving took, so the two are disjoint. The
hash depends on nothing but the text, so the same records land in the same split in every run and process
(Python's `hash` is salted per process; the file order and the label do not matter). Identical inputs always
fall on the same side: a duplicated sentence cannot be trained on and then scored as unseen.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Window:
    """The records of `source` (a split read from files) that this split keeps: positions in [low, high).

    Attributes:
        source: the split whose files are read.
        low, high: the window of hash positions; the source split itself keeps [sum of its carvings, 1).
        seed: mixed into the hash, so another seed carves another subset.
        fields: the record fields hashed (the input template's placeholders).
    """

    source: str
    low: float
    high: float
    seed: int
    fields: tuple[str, ...]

    def keeps(self, record: dict[str, Any]) -> bool:
        return self.low <= position(record, self.fields, self.seed) < self.high


def position(record: dict[str, Any], fields: tuple[str, ...], seed: int) -> float:
    """A record's place in [0, 1): the first 8 bytes of SHA-256 over the seed and its input fields.

    Values are stripped before hashing so that turning the task file's `strip` option on or off does not move
    a record to another split.
    """
    parts = [str(seed)]
    for name in sorted(fields):
        value = record.get(name)
        text = value.strip() if isinstance(value, str) else json.dumps(value, sort_keys=True)
        parts.append(f"{name}={text}")
    digest = hashlib.sha256("\x1f".join(parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def windows(carvings: dict[str, tuple[str, float, int]], fields: tuple[str, ...]) -> dict[str, Window]:
    """Windows for carved splits (split -> (source, fraction, seed), in task-file order) and their sources.

    The carvings of one source take consecutive windows from 0 (validation [0, 0.1), test [0.1, 0.2)), so they
    are disjoint from each other too; the source keeps the rest. The caller checks that fractions sum below 1
    and that the carvings of one source share their seed.
    """
    out: dict[str, Window] = {}
    taken: dict[str, float] = {}
    for split, (source, fraction, seed) in carvings.items():
        low = taken.get(source, 0.0)
        out[split] = Window(source, low, low + fraction, seed, fields)
        taken[source] = low + fraction
    for source, low in taken.items():
        out[source] = Window(source, low, 1.0, carvings_seed(carvings, source), fields)
    return out


def carvings_seed(carvings: dict[str, tuple[str, float, int]], source: str) -> int:
    """The seed the carvings of `source` share."""
    return next(seed for origin, _, seed in carvings.values() if origin == source)


CARVE_KEYS = ("from", "fraction", "seed")
ErrorAt = Callable[[str, str], Exception]  # (dotted task-file key, message) -> the error to raise


def carvings_of(data: dict[Any, Any], file_splits: Iterable[str], error: ErrorAt) -> dict[str, tuple[str, float, int]]:
    """The carved splits of a task file's `data:` mapping (split -> (source, fraction, seed), in file order),
    checked: known keys, a source read from files, 0 < fraction, fractions of one source summing below 1, one
    seed per source (so its carvings stay disjoint)."""
    sources = list(file_splits)
    carvings: dict[str, tuple[str, float, int]] = {}
    for split, entry in data.items():
        if not (isinstance(entry, dict) and "from" in entry):
            continue
        where = f"data.{split}"
        for key in entry:
            if key not in CARVE_KEYS:
                raise error(f"{where}.{key}", f"not an option of a carved split; known: {', '.join(CARVE_KEYS)}")
        source, fraction, seed = str(entry["from"]), entry.get("fraction"), entry.get("seed", 0)
        if source not in sources:
            raise error(f"{where}.from", f"{source!r} is not a split read from a file; those are: {', '.join(sources)}")
        if isinstance(fraction, bool) or not isinstance(fraction, int | float) or not 0 < fraction < 1:
            raise error(f"{where}.fraction", f"{fraction!r}: give the share of {source!r} to carve, e.g. 0.1")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise error(f"{where}.seed", f"{seed!r}: must be an integer")
        earlier = [s for origin, _, s in carvings.values() if origin == source]
        if earlier and seed != earlier[0]:
            raise error(f"{where}.seed", f"splits carved from {source!r} share one seed (so they stay disjoint); "
                                         f"an earlier one has seed {earlier[0]}")
        taken = sum(f for origin, f, _ in carvings.values() if origin == source) + fraction
        if taken >= 1:
            raise error(f"{where}.fraction", f"the splits carved from {source!r} take {taken:g} of it; "
                                             "leave some for it (fractions must sum below 1)")
        carvings[str(split)] = (source, float(fraction), seed)
    return carvings


def hold_out(examples: list[Any], n: int) -> tuple[list[Any], list[Any]]:
    """(rest, held): the `n` examples with the smallest SHA-1 of their input and target text are held out
    (a validation split carved from train for tasks whose validation split is the reported one). Stable
    across runs and processes, disjoint from the rest; the order within each part is the hash order."""
    def key(ex: Any) -> str:
        return hashlib.sha1(f"{ex.input_text}\x00{ex.target_text}".encode()).hexdigest()

    ranked = sorted(examples, key=key)
    return ranked[n:], ranked[:n]
