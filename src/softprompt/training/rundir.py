"""The files of one training run's folder (`--out`), named in one place.

The loop writes them, ensembles nest one run folder per member, and the experiments runner reads them
back to skip or resume work; all three go through `RunDir` rather than spelling file names.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


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

    # An ensemble's folder holds one run folder per member and the list of them.

    def member(self, i: int) -> RunDir:
        """Member i of an ensemble trained into this folder."""
        return RunDir(self.root / f"member-{i}")

    @property
    def ensemble(self) -> Path:
        """An ensemble's members: seeds, inits, best prompts and metrics."""
        return self.root / "ensemble.json"
