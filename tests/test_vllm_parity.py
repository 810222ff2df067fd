"""Real vLLM against softprompt: greedy tokens from `export-vllm` files equal `softprompt`'s own decoding.

Runs when `.venv-vllm` exists (`make vllm-env`) and the benchmark data are there; skipped with the reason
otherwise. vLLM runs in that venv (`benchmarks/vllm_greedy.py`, a subprocess); this side builds each request's
`prompt_embeds` with `interop.vllm.request_embeds` from the exported file, exactly as a vLLM user would.
Both sides run the default model (SmolLM2-135M) in bf16 where the CPU has native bf16, else fp32 (emulated
bf16 matmuls on an AVX2 CPU would take this test many minutes).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parents[1]
VLLM_PYTHON = ROOT / ".venv-vllm" / "bin" / "python"
N_INPUTS, NEW_TOKENS = 32, 8

pytestmark = [pytest.mark.slow, pytest.mark.integration,
              pytest.mark.skipif(not VLLM_PYTHON.exists(), reason="no .venv-vllm: run `make vllm-env` first")]


def test_vllm_greedy_equals_softprompt_generate_on_real_dev_inputs(tmp_path, real_data):
    from softprompt.interop.vllm import export_vllm, load_vllm_prompt, request_embeds
    from softprompt.model.loading import cpu_supports_bf16, load_model
    from softprompt.scoring import generate_ids
    from softprompt.tasks import get_task
    from softprompt.training.init import make_prompt

    dtype = "bfloat16" if cpu_supports_bf16() else "float32"
    fm = load_model("default", dtype="bf16" if dtype == "bfloat16" else "fp32")
    task = get_task("sst2")
    dev = task.examples("validation", str(real_data), limit=N_INPUTS)
    prompt = make_prompt(fm, 100, "class-labels", labels=task.label_words, task="sst2")
    prompt.save(tmp_path / "sst2.safetensors")
    rows, sidecar = load_vllm_prompt(export_vllm(tmp_path / "sst2.safetensors", tmp_path / "sst2.vllm.safetensors",
                                                 dtype=dtype))
    embed = fm.model.get_input_embeddings()
    requests = {f"r{i}": request_embeds(rows, sidecar, fm.tokenizer, embed, ex.input_text).contiguous()
                for i, ex in enumerate(dev)}
    save_file(requests, tmp_path / "requests.safetensors")
    out = tmp_path / "vllm.json"
    proc = subprocess.run([str(VLLM_PYTHON), str(ROOT / "benchmarks" / "vllm_greedy.py"),
                           fm.model.config.name_or_path, str(tmp_path / "requests.safetensors"), str(out),
                           "--max-tokens", str(NEW_TOKENS), "--dtype", dtype],
                          capture_output=True, text=True, timeout=900)
    if proc.returncode == 3:
        pytest.skip(proc.stderr.strip().splitlines()[-1])
    assert proc.returncode == 0, proc.stderr[-3000:]
    theirs = [t[:t.index(fm.tokenizer.eos_token_id)] if fm.tokenizer.eos_token_id in t else t
              for t in json.loads(out.read_text())["tokens"]]
    with torch.no_grad():
        ours = generate_ids(fm, [fm.tokenizer(ex.input_text).input_ids for ex in dev], prompt, NEW_TOKENS,
                            stop_at_newline=False)
    same = [a == b for a, b in zip(ours, theirs, strict=True)]
    print(f"vLLM vs softprompt greedy ({dtype}): {sum(same)}/{len(same)} identical", file=sys.stderr)
    assert all(same), [(i, ours[i], theirs[i]) for i, s in enumerate(same) if not s][:4]
