"""Training an ensemble: K prompts for one task, one seed (and optionally one init) each, into member folders.

The paper's ensembles (§7) are K prompts on one frozen model; `softprompt.evaluation.ensemble` scores
them in one batched pass and votes.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from softprompt.files import atomic_write
from softprompt.model.frozen import FrozenModel
from softprompt.tasks.base import TaskError
from softprompt.training.config import TrainConfig
from softprompt.training.loop import train
from softprompt.training.rundir import RunDir


def train_ensemble(
    cfg: TrainConfig, k: int, out_dir: str | Path, inits: Sequence[str] | None = None, fm: FrozenModel | None = None,
    progress: bool = True,
) -> list[Path]:
    """Train K prompts with seeds cfg.seed .. cfg.seed + K - 1 (and `inits[i]` if given) into
    out_dir/member-i/; writes out_dir/ensemble.json and returns the K best-prompt paths."""
    if k < 1:
        raise TaskError(f"--k must be >= 1, got {k}")
    if inits is not None and len(inits) != k:
        raise TaskError(f"got {len(inits)} inits for k={k} members; give one per member or none")
    out = RunDir(out_dir)
    paths, runs = [], []
    for i in range(k):
        member = replace(cfg, seed=cfg.seed + i, out=str(out.member(i).root),
                         init=inits[i] if inits is not None else cfg.init)
        result = train(member, fm=fm, progress=progress)
        paths.append(Path(result.prompt_path))
        runs.append({"member": i, "seed": member.seed, "init": member.init, "prompt": str(result.prompt_path),
                     "best_metric": result.best_metric, "best_step": result.best_step})
    atomic_write(out.ensemble, lambda tmp: Path(tmp).write_text(json.dumps({"k": k, "members": runs}, indent=2)))
    return paths
