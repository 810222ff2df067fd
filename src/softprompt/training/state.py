"""Where a training run is: the counters a checkpoint saves and a resumed run starts from."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any


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

    def to_counters(self) -> dict[str, Any]:
        """The JSON-able counters a checkpoint stores (the same keys as before TrainState existed)."""
        counters = asdict(self)
        counters.pop("stopped_early")
        return counters

    @classmethod
    def from_counters(cls, counters: dict[str, Any]) -> TrainState:
        """Rebuild from a checkpoint's counters; keys it lacks (older checkpoints: `seconds`) keep defaults."""
        known = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in counters.items() if key in known})
