"""Resumable training state in one safetensors file: tensors as tensors, everything else as JSON.

Holds the trainable tensors, the optimizer state, the torch RNG state and the loop's counters (step,
position in the data order, best metric, evaluations without improvement). One file, written with
write-then-rename, so a run killed at any instant leaves the previous checkpoint intact. No pickle.
In a run folder it is `RunDir.checkpoint` (training/rundir.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from softprompt.files import atomic_write
from softprompt.model.prompt import PromptFileError


def save_checkpoint(
    path: Path, params: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer, counters: dict[str, Any]
) -> None:
    """Write params (name -> tensor), the optimizer's state and `counters` (JSON-able) atomically."""
    tensors: dict[str, torch.Tensor] = {f"param.{k}": v.detach().cpu().contiguous() for k, v in params.items()}
    opt = optimizer.state_dict()
    scalars: dict[str, dict[str, Any]] = {}
    for pid, state in opt["state"].items():
        for key, value in state.items():
            if torch.is_tensor(value):
                tensors[f"opt.{pid}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(pid), {})[key] = value
    tensors["rng.torch"] = torch.get_rng_state()
    header = {
        "counters": json.dumps(counters),
        "param_groups": json.dumps(opt["param_groups"]),
        "opt_scalars": json.dumps(scalars),
    }
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=header))


def load_checkpoint(
    path: Path, params: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer
) -> dict[str, Any]:
    """Restore params in place and the optimizer state; return the counters."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            header = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except Exception as err:  # noqa: BLE001 — any unreadable file gets the same clear message
        raise PromptFileError(f"cannot read checkpoint {path} ({err}); start a new run without --resume") from None
    with torch.no_grad():
        for name, param in params.items():
            saved = tensors.get(f"param.{name}")
            if saved is None or saved.shape != param.shape:
                raise PromptFileError(
                    f"checkpoint {path} does not match this run: tensor {name} "
                    f"{None if saved is None else tuple(saved.shape)} vs {tuple(param.shape)}"
                )
            param.copy_(saved)
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("opt."):
            _, pid, name = key.split(".", 2)
            state.setdefault(int(pid), {})[name] = value
    for pid, extra in json.loads(header.get("opt_scalars", "{}")).items():
        state.setdefault(int(pid), {}).update(extra)
    optimizer.load_state_dict({"state": state, "param_groups": json.loads(header["param_groups"])})
    torch.set_rng_state(tensors["rng.torch"])
    return json.loads(header["counters"])
