"""Where a run's step records go besides metrics.jsonl: TensorBoard event files (`--report-to tensorboard`).

The HF Trainer's convention: scalars `train/loss`, `train/learning_rate`, `train/examples_per_s` every step and
`eval/<metric>` at each evaluation, under OUT/tensorboard, so `tensorboard --logdir runs/` shows every run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from softprompt.training.config import ConfigError


class TensorBoardReport:
    """Writes one run's records as TensorBoard scalars (torch.utils.tensorboard; needs `pip install tensorboard`)."""

    def __init__(self, out: str | Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError("--report-to tensorboard needs the tensorboard package: pip install tensorboard "
                              "(or leave --report-to out)") from None
        self.folder = Path(out) / "tensorboard"
        self.writer = SummaryWriter(log_dir=str(self.folder))

    def log(self, record: dict[str, Any]) -> None:
        step = record["step"]
        for key, name in (("loss", "train/loss"), ("lr", "train/learning_rate"), ("examples_per_s", "train/examples_per_s")):
            if key in record:
                self.writer.add_scalar(name, record[key], step)
        for metric, value in (record.get("eval") or {}).items():
            if isinstance(value, int | float):
                self.writer.add_scalar(f"eval/{metric}", value, step)
        self.writer.flush()  # a killed run keeps what it logged

    def close(self) -> None:
        self.writer.close()


def open_report(report_to: str | None, out: str | Path) -> TensorBoardReport | None:
    """The sink `report_to` names, or None."""
    return TensorBoardReport(out) if report_to == "tensorboard" else None
