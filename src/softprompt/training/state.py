"""Where a training run is: the counters a checkpoint saves and a resumed run starts from, and what a
resumed run may change in its config."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from softprompt.training.config import ConfigError, TrainConfig


@dataclass
class TrainState:
    """The loop's position and its best evaluation so far; `to_counters` is what checkpoints store."""

    step: int = 0
    """Optimizer steps finished."""
    epoch: int = 0
    """Epoch of the batch order (batches are reshuffled per epoch from the seed)."""
    batch: int = 0
    """Next batch within the epoch."""
    best: float | None = None
    """Best main-metric value on validation so far (None before the first evaluation)."""
    best_step: int | None = None
    """Step at which `best` was reached."""
    bad_evals: int = 0
    """Evaluations in a row without a new best (for --patience)."""
    seconds: float = 0.0
    """Run time up to the last checkpoint, resumed runs included (for --max-minutes)."""
    stopped_early: bool = False
    """Patience or the time budget ended the run; not checkpointed (a resumed run decides afresh)."""
    stopped_by: str | None = None
    """Which limit ended the run: "steps", "max_minutes" or "patience" (summary.json); not checkpointed."""

    def to_counters(self) -> dict[str, Any]:
        """The JSON-able counters a checkpoint stores (the same keys as before TrainState existed)."""
        counters = asdict(self)
        counters.pop("stopped_early")
        counters.pop("stopped_by")
        return counters

    @classmethod
    def from_counters(cls, counters: dict[str, Any]) -> TrainState:
        """Rebuild from a checkpoint's counters; keys it lacks (older checkpoints: `seconds`) keep defaults."""
        known = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in counters.items() if key in known})


RESUME_MAY_CHANGE = ("lr", "steps", "max_minutes", "report_to")  # report_to: where logs go, not the run
"""What `--resume` may change (README): everything else would silently continue the run as another one,
e.g. the SST-2 prompt trained on with RTE's data. `out` is the folder being resumed, so it is not compared."""


def check_resume_config(saved: Path, cfg: TrainConfig) -> None:
    """Refuse to resume the run whose config is `saved` with a `cfg` that differs in anything but
    RESUME_MAY_CHANGE, naming each field with its old and new value. A run without a saved config (written
    before the first step by every run) has nothing to compare."""
    if not saved.is_file():
        return
    old, new = TrainConfig.from_sources(saved).to_dict(), cfg.to_dict()
    changed = [f"{key} {old[key]!r} -> {new[key]!r}" for key in new
               if key not in (*RESUME_MAY_CHANGE, "out") and old[key] != new[key]]
    if changed:
        raise ConfigError(
            f"--resume {saved.parent} cannot change {', '.join(changed)}: the run was trained with the first "
            "value. Only --lr, --steps and --max-minutes may change on resume; start a new run with another --out "
            "to change the rest"
        )
