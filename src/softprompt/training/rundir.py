"""The files of one training run's folder (`--out`), named in one place, and the run's hold on it.

The loop writes them, ensembles nest one run folder per member, and the experiments runner reads them
back to skip or resume work; all three go through `RunDir` rather than spelling file names. `claim`
keeps a second `train` process out of a folder in use; `metrics_up_to` reads the log back for `--resume`.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from softprompt.errors import UsageError
from softprompt.files import atomic_write, temp_prefix

log = logging.getLogger("softprompt.training")

LOCK_NAME = ".lock"
"""The file a running `train` holds an fcntl lock on; it also records the holder's pid."""


class RunLogError(UsageError):
    """metrics.jsonl has a malformed line that is not the torn last one; the message names file and line."""


@dataclass(frozen=True, init=False)
class RunDir:
    """One run folder: `RunDir(cfg.out).best_prompt` is where the best prompt is saved."""

    root: Path

    def __init__(self, root: str | Path) -> None:
        object.__setattr__(self, "root", Path(root))  # frozen: a run folder does not move

    @property
    def best_prompt(self) -> Path:
        """The prompt of the best evaluation so far (prompt tuning)."""
        return self.root / "prompt.safetensors"

    @property
    def last_prompt(self) -> Path:
        """The prompt at the last checkpoint (prompt tuning)."""
        return self.root / "last.safetensors"

    @property
    def init_prompt(self) -> Path:
        """The untrained prompt, for comparing before and after (prompt tuning)."""
        return self.root / "init.safetensors"

    @property
    def model(self) -> Path:
        """Model tuning's best weights: a save_pretrained folder."""
        return self.root / "model"

    def best_weights(self, prompt_tuning: bool) -> Path:
        """Where the best weights of a run are: `best_prompt`, or `model` for model tuning."""
        return self.best_prompt if prompt_tuning else self.model

    @property
    def checkpoint(self) -> Path:
        """Everything `--resume` needs (training/checkpoint.py)."""
        return self.root / "checkpoint.safetensors"

    @property
    def metrics(self) -> Path:
        """One JSON line per step: loss, lr, speed, and the evaluation when there was one."""
        return self.root / "metrics.jsonl"

    @property
    def config(self) -> Path:
        """The run's TrainConfig as YAML (`--config` / `--resume` read it back)."""
        return self.root / "config.yaml"

    @property
    def summary(self) -> Path:
        """Written when the run finishes: its presence means the run is done."""
        return self.root / "summary.json"

    @property
    def finished(self) -> bool:
        return self.summary.is_file()

    @property
    def lock(self) -> Path:
        """Held (fcntl) by the `train` process writing into this folder; holds its pid (see `claim`)."""
        return self.root / LOCK_NAME

    # An ensemble's folder holds one run folder per member and the list of them.

    def member(self, i: int) -> RunDir:
        """Member i of an ensemble trained into this folder."""
        return RunDir(self.root / f"member-{i}")

    @property
    def ensemble(self) -> Path:
        """An ensemble's members: seeds, inits, best prompts and metrics."""
        return self.root / "ensemble.json"

    # Holding the folder for one run, and the leftovers of killed ones.

    @contextmanager
    def claim(self) -> Iterator[RunDir]:
        """Create the folder if needed and hold it for the life of the `with` block.

        A second process claiming the same folder is refused with the holder's pid: two runs would
        interleave their logs and overwrite each other's checkpoints. flock (not lockf) so that a second
        claim from the same process is refused too, and the kernel drops the lock of a killed process.
        """
        fd = self._open_lock()
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
                raise UsageError(
                    f"another train process (pid {holder}) is writing to {self.root}; wait for it to end, "
                    "or give another --out"
                ) from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            yield self
        finally:
            # Closing releases the lock. The file stays: unlinking it would let a process still waiting on the
            # old inode and a new one on a fresh file both think they hold the folder.
            os.close(fd)

    def _open_lock(self) -> int:
        """The lock file's descriptor; an --out that is a file or cannot be written is a UsageError."""
        if self.root.exists() and not self.root.is_dir():
            raise UsageError(f"--out {self.root} is an existing file, not a folder: give a folder path")
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            return os.open(self.lock, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise UsageError(f"cannot write into --out {self.root} ({err.strerror}): give a folder you can write to") from None

    def remove_stale_temps(self) -> list[Path]:
        """Delete what a killed writer left here: atomic_write's `.NAME.*.tmp` files of this folder's files and
        publish_folder's `.tmp-model-*` build folders. Call it only while holding `claim` (no live writer)."""
        names = [p.name for p in (self.best_prompt, self.last_prompt, self.init_prompt, self.checkpoint,
                                  self.metrics, self.config, self.summary, self.ensemble)]
        temp_file = re.compile(rf"^\.({'|'.join(map(re.escape, names))})\..+\.tmp$")
        removed = []
        for path in sorted(self.root.iterdir()) if self.root.is_dir() else []:
            if path.is_file() and temp_file.match(path.name):
                path.unlink(missing_ok=True)
                removed.append(path)
            # A "-old" folder is the previous best model moved aside: if the kill came before the new one was
            # renamed into place, it is the only copy left, so it stays.
            elif path.is_dir() and path.name.startswith(temp_prefix(self.model)) and not path.name.endswith("-old"):
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
        return removed

    # The step log.

    def append_metrics(self, record: dict[str, Any]) -> None:
        with self.metrics.open("a") as handle:
            handle.write(json.dumps(record) + "\n")

    def restart_metrics(self, step: int) -> None:
        """Keep the log's records up to `step` (a resumed run redoes the steps logged after its checkpoint);
        step 0 empties it (a fresh start in a used folder must not append to the old log)."""
        if not self.metrics.is_file():
            return
        kept = self.metrics_up_to(step) if step > 0 else []
        atomic_write(self.metrics, lambda tmp: Path(tmp).write_text("".join(json.dumps(r) + "\n" for r in kept)))

    def metrics_up_to(self, step: int) -> list[dict[str, Any]]:
        """The log's records with step <= `step`. A torn last line (the process was killed while writing it)
        is dropped with a warning; a malformed line before it is refused, naming the file and line."""
        text = self.metrics.read_text(errors="replace")
        lines = text.splitlines()
        torn = len(lines) if not text.endswith("\n") else None  # a complete line always ends with its newline
        records: list[dict[str, Any]] = []
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                if not isinstance(record, dict) or not isinstance(record.get("step"), int):
                    raise ValueError("not a record with an integer 'step'")
            except ValueError as err:
                if number == torn:
                    log.warning("%s: dropped its last line %d, cut off mid-write (%s)", self.metrics, number, line[:80])
                    continue
                raise RunLogError(
                    f"{self.metrics} line {number} is not a step record ({err}): fix or delete that line, "
                    "then --resume again"
                ) from None
            if record["step"] <= step:
                records.append(record)
        return records
