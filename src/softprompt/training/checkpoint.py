"""Resumable training state in one safetensors file: tensors as tensors, everything else as JSON.

Holds the trainable tensors, the optimizer state, the torch RNG state and the loop's counters (step,
position in the data order, best metric, evaluations without improvement). One file, written with
write-then-rename, so a run killed at any instant leaves the previous checkpoint intact. No pickle.
A sha256 over every tensor's bytes and the other metadata is stored beside them and checked on load: a
flipped byte on disk would otherwise resume silently into a different prompt. Checkpoints written before
the digest existed load unchecked. In a run folder it is `RunDir.checkpoint` (training/rundir.py).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from softprompt.files import atomic_write
from softprompt.model.prompt import PromptFileError

DIGEST_KEY = "sha256"
"""Metadata key of the digest (`digest` below): hex sha256 of the tensors and the other metadata."""


class CheckpointError(PromptFileError):
    """A checkpoint cannot be resumed: unreadable, corrupt (digest, NaN) or made for another run."""


def digest(tensors: dict[str, torch.Tensor], header: dict[str, str]) -> str:
    """sha256 over every tensor (name, dtype, shape, raw bytes) in name order, then the other metadata entries."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}\n".encode())
        h.update(tensor.reshape(-1).view(torch.uint8).numpy())  # raw bytes, any dtype (bf16 has no numpy type)
    for key in sorted(header):
        if key != DIGEST_KEY:
            h.update(f"{key}={header[key]}\n".encode())
    return h.hexdigest()


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
    header[DIGEST_KEY] = digest(tensors, header)
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=header))


def load_checkpoint(
    path: Path, params: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer
) -> dict[str, Any]:
    """Restore params in place and the optimizer state; return the counters. Nothing changes unless the
    whole file checks out (digest, finite values, shapes)."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            header = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except Exception as err:  # noqa: BLE001 — any unreadable file gets the same clear message
        raise CheckpointError(f"cannot read checkpoint {path} ({err}); start a new run without --resume") from None
    _verify(path, tensors, header)
    for name, param in params.items():
        saved = tensors.get(f"param.{name}")
        if saved is None or saved.shape != param.shape:
            raise CheckpointError(
                f"checkpoint {path} does not match this run: tensor {name} "
                f"{None if saved is None else tuple(saved.shape)} vs {tuple(param.shape)}"
            )
    try:
        counters = json.loads(header["counters"])
        param_groups = json.loads(header["param_groups"])
        scalars = json.loads(header.get("opt_scalars", "{}"))
    except (KeyError, ValueError) as err:
        raise _corrupt(path, f"its metadata is unreadable: {err}") from None
    with torch.no_grad():
        for name, param in params.items():
            param.copy_(tensors[f"param.{name}"])
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("opt."):
            _, pid, name = key.split(".", 2)
            state.setdefault(int(pid), {})[name] = value
    for pid, extra in scalars.items():
        state.setdefault(int(pid), {}).update(extra)
    optimizer.load_state_dict({"state": state, "param_groups": param_groups})
    torch.set_rng_state(tensors["rng.torch"])
    return counters


def _verify(path: Path, tensors: dict[str, torch.Tensor], header: dict[str, str]) -> None:
    """The digest matches (when the file has one) and every float is finite: the loop never checkpoints
    NaN/inf (it stops first), so one here is damage, not a learning rate to lower."""
    saved = header.get(DIGEST_KEY)
    if saved is not None and saved != digest(tensors, header):
        raise _corrupt(path, "its contents do not match the sha256 digest saved with them")
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise _corrupt(path, f"tensor {name} holds NaN/inf values")
    if "rng.torch" not in tensors:
        raise _corrupt(path, "it has no RNG state")


def _corrupt(path: Path, why: str) -> CheckpointError:
    return CheckpointError(
        f"checkpoint {path} is corrupt ({why}); it cannot be resumed: put back a good copy of it, "
        "or start a new run without --resume"
    )
