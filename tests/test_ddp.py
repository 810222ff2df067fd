"""Data-parallel training: 2 CPU processes (gloo) end with the same prompt as one process.

Launched both ways users launch it: `torchrun --standalone --nproc_per_node 2` and `accelerate launch
--multi_gpu --num_processes 2` (which runs torchrun underneath; on a CPU-only machine the ranks use gloo —
accelerate's `--cpu` flag would start a single process unless mpirun is set up).

`train()` joins a process group when WORLD_SIZE > 1 (torchrun and `accelerate launch` both set it), each rank
takes half of every global batch, and gradients are summed across ranks. So two ranks with batch 8 must give
the prompt that one process with batch 8 gives. Tolerance: 1e-5 absolute (fp32; only the order of the
gradient sums differs).
"""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tiny import TINY_DATA, tiny_causal

from softprompt.model.prompt import SoftPrompt
from softprompt.training.config import TrainConfig
from softprompt.training.init import make_prompt
from softprompt.training.loop import train
from softprompt.training.rundir import RunDir

TOLERANCE = 1e-5

# Each rank saves the prompt it trained: train() writes files on rank 0 only, so the worker keeps a handle on
# the SoftPrompt that train() makes (by wrapping make_prompt) and saves it per rank.
WORKER = """
import os, sys
sys.path.insert(0, {tests!r})
import torch
import softprompt.training.loop as loop
from tiny import tiny_causal
from softprompt.training.config import TrainConfig

import torch.distributed as dist
made, worlds = [], []
make_prompt = loop.make_prompt
def spy(*a, **k):
    worlds.append(dist.get_world_size() if dist.is_initialized() else 1)  # train() has joined by now
    made.append(make_prompt(*a, **k))
    return made[-1]
loop.make_prompt = spy
cfg = TrainConfig.from_sources({config!r})
loop.train(cfg, fm=tiny_causal(), progress=False)
assert worlds == [2], f"train() did not join a 2-rank process group: {{worlds}}"
assert not dist.is_initialized(), "train() left the process group open"
rank = int(os.environ["RANK"])
made[0].save(os.path.join({out!r}, f"rank{{rank}}.safetensors"))  # safetensors: nothing to unpickle
"""


def config(out: Path) -> TrainConfig:
    return TrainConfig(task="sst2", train_limit=32, batch_size=8, steps=4, prompt_length=4, init="random-uniform",
                       eval_limit=16, data_dir=str(TINY_DATA), out=str(out), seed=3, threads=1)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launcher(name: str) -> list[str]:
    if name == "torchrun":  # --standalone: a local rendezvous on a free port
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
            "--main_process_ip", "127.0.0.1", "--main_process_port", str(free_port())]


@pytest.fixture(scope="module")
def single_process(tmp_path_factory) -> torch.Tensor:
    """The prompt one process trains with the same global batch (8)."""
    result = train(config(tmp_path_factory.mktemp("single")), fm=tiny_causal(), progress=False)
    return SoftPrompt.load(RunDir(result.out_dir).last_prompt).embeddings


@pytest.mark.integration  # launches 2-rank torchrun / accelerate jobs
@pytest.mark.parametrize("launch", [
    "torchrun",
    pytest.param("accelerate", marks=pytest.mark.skipif(importlib.util.find_spec("accelerate") is None,
                                                        reason="accelerate not installed")),
])
def test_two_ranks_match_each_other_and_one_process(tmp_path, launch, single_process):
    expected = single_process
    # Two processes, 4 examples each per step; same config file for both ranks.
    out = tmp_path / "ddp"
    out.mkdir()
    cfg = config(out)
    cfg.save(out / "run.yaml")
    script = tmp_path / "worker.py"
    script.write_text(WORKER.format(tests=str(Path(__file__).parent), config=str(out / "run.yaml"), out=str(out)))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    launched = subprocess.run([*launcher(launch), str(script)], env=env, capture_output=True, timeout=120,
                              cwd=tmp_path)
    assert launched.returncode == 0, launched.stderr.decode()[-3000:]

    rank0, rank1 = (SoftPrompt.load(out / f"rank{r}.safetensors").embeddings for r in (0, 1))
    assert torch.equal(rank0, rank1)  # same all-reduced gradient, same update: bit-identical
    written = SoftPrompt.load(RunDir(out).last_prompt).embeddings  # rank 0's file
    assert torch.equal(written, rank0)
    initial = make_prompt(tiny_causal(), 4, "random-uniform", seed=3).embeddings
    assert (expected - initial).abs().max() > 1e-3  # the steps did move the prompt: the comparison means something
    torch.testing.assert_close(rank0, expected, atol=TOLERANCE, rtol=0)
    print(f"max |ddp - single| = {(rank0 - expected).abs().max():.2e}")
