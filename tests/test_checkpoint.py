"""Checkpoint files: a digest of the tensors checked on load, NaN refused as corruption, old files still load."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from softprompt.errors import UsageError
from softprompt.training.checkpoint import DIGEST_KEY, CheckpointError, load_checkpoint, save_checkpoint
from softprompt.training.config import TrainConfig
from softprompt.training.optimizers import make_optimizer


def stepped(optimizer: str = "adafactor") -> tuple[dict[str, torch.Tensor], torch.optim.Optimizer]:
    """A [4, 8] parameter and its optimizer after two steps (so the optimizer has state to save)."""
    torch.manual_seed(0)
    params = {"prompt": torch.randn(4, 8).requires_grad_(True)}
    opt = make_optimizer(list(params.values()), TrainConfig(task="sst2", optimizer=optimizer))
    for _ in range(2):
        opt.zero_grad()
        (params["prompt"] ** 2).sum().backward()
        opt.step()
    return params, opt


def fresh(optimizer: str = "adafactor") -> tuple[dict[str, torch.Tensor], torch.optim.Optimizer]:
    params = {"prompt": torch.zeros(4, 8).requires_grad_(True)}
    return params, make_optimizer(list(params.values()), TrainConfig(task="sst2", optimizer=optimizer))


def data_offset(path: Path, name: str) -> int:
    """Byte offset in the file of tensor `name`'s first byte (safetensors: u64 header size, JSON header, data)."""
    raw = path.read_bytes()
    (size,) = struct.unpack("<Q", raw[:8])
    return 8 + size + json.loads(raw[8 : 8 + size])[name]["data_offsets"][0]


@pytest.mark.parametrize("optimizer", ["adafactor", "adamw"])
def test_a_checkpoint_round_trips_and_carries_a_digest(tmp_path, optimizer):
    params, opt = stepped(optimizer)
    path = tmp_path / "checkpoint.safetensors"
    save_checkpoint(path, params, opt, {"step": 2})
    with safe_open(str(path), framework="pt") as handle:
        assert len(handle.metadata()[DIGEST_KEY]) == 64  # hex sha256
    back, back_opt = fresh(optimizer)
    assert load_checkpoint(path, back, back_opt) == {"step": 2}
    assert torch.equal(back["prompt"], params["prompt"])
    saved, loaded = opt.state_dict()["state"][0], back_opt.state_dict()["state"][0]
    assert saved.keys() == loaded.keys() and all(torch.equal(torch.as_tensor(saved[k]), torch.as_tensor(loaded[k]))
                                                 for k in saved)


def test_a_flipped_data_byte_is_reported_as_corrupt_and_changes_nothing(tmp_path):
    params, opt = stepped()
    path = tmp_path / "checkpoint.safetensors"
    save_checkpoint(path, params, opt, {"step": 2})
    raw = bytearray(path.read_bytes())
    raw[data_offset(path, "param.prompt")] ^= 0x01  # the lowest mantissa bit of one value: still a finite float
    path.write_bytes(bytes(raw))
    back, back_opt = fresh()
    with pytest.raises(CheckpointError, match=r"checkpoint .*checkpoint\.safetensors is corrupt \(its contents do "
                                              r"not match the sha256 digest.*start a new run without --resume"):
        load_checkpoint(path, back, back_opt)
    assert not back["prompt"].any() and not back_opt.state  # nothing was restored from the bad file


def test_changed_counters_are_caught_by_the_digest_too(tmp_path):
    params, opt = stepped()
    path = tmp_path / "checkpoint.safetensors"
    save_checkpoint(path, params, opt, {"step": 2})
    with safe_open(str(path), framework="pt") as handle:
        header, tensors = handle.metadata(), {k: handle.get_tensor(k) for k in handle.keys()}
    save_file(tensors, str(path), metadata={**header, "counters": json.dumps({"step": 7})})
    with pytest.raises(CheckpointError, match="is corrupt"):
        load_checkpoint(path, *fresh())


def test_nan_in_a_checkpoint_is_corruption_not_a_learning_rate_problem(tmp_path):
    params, opt = stepped()
    params["prompt"].data[1, 2] = float("nan")
    path = tmp_path / "checkpoint.safetensors"
    save_checkpoint(path, params, opt, {"step": 2})  # digest matches: the damage predates it
    with pytest.raises(CheckpointError, match=r"is corrupt \(tensor param.prompt holds NaN/inf values\)") as err:
        load_checkpoint(path, *fresh())
    assert "--lr" not in str(err.value) and isinstance(err.value, UsageError)  # the CLI prints it in one line


def test_a_checkpoint_without_a_digest_still_loads(tmp_path):
    """Checkpoints written before the digest existed resume as before (unchecked)."""
    params, opt = stepped()
    path = tmp_path / "checkpoint.safetensors"
    save_checkpoint(path, params, opt, {"step": 2})
    with safe_open(str(path), framework="pt") as handle:
        header, tensors = handle.metadata(), {k: handle.get_tensor(k) for k in handle.keys()}
    del header[DIGEST_KEY]
    save_file(tensors, str(path), metadata=header)
    back, back_opt = fresh()
    assert load_checkpoint(path, back, back_opt) == {"step": 2}
    assert torch.equal(back["prompt"], params["prompt"])


def test_an_unreadable_checkpoint_is_one_clear_error(tmp_path):
    path = tmp_path / "checkpoint.safetensors"
    path.write_bytes(b"\x00garbage")
    with pytest.raises(CheckpointError, match="cannot read checkpoint .* start a new run without --resume"):
        load_checkpoint(path, *fresh())
