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
# bf16 on both sides is not bit-equal (vLLM's CPU kernels sum in other orders than PyTorch's), so greedy paths
# may part where two tokens nearly tie. A parting counts as rounding only when, under our model, the two tokens'
# log-probabilities at the first position where they differ are within this many nats (either way: our scorer
# and our decoder round differently too). bf16 logits near 16-32 are spaced 0.125 apart; measured partings on an
# AMX Xeon: 6 of 32, |gap| 0, 0, 0.031, 0.125, 0.125, 0.125. fp32 must agree on every token.
BF16_TIE_NATS = 0.5

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
    if dtype == "float32":
        assert all(same), [(i, ours[i], theirs[i]) for i, s in enumerate(same) if not s][:4]
        return
    gaps = [_parting_gap(fm, prompt, dev[i].input_text, ours[i], theirs[i]) for i, s in enumerate(same) if not s]
    print(f"bf16 partings: our margin over vLLM's token at the first differing position (nats): "
          f"{[round(g, 3) for g in gaps]}", file=sys.stderr)
    assert sum(same) >= 0.75 * len(same), f"only {sum(same)}/{len(same)} identical"
    assert all(abs(g) <= BF16_TIE_NATS for g in gaps), gaps


def _parting_gap(fm, prompt, text: str, ours: list[int], theirs: list[int]) -> float:
    """log p(our token) - log p(vLLM's token) under our model, at the first position where the two differ
    (a prefix of the other: the longer one's next token against EOS)."""
    from softprompt.scoring import target_logprobs
    from softprompt.scoring.inputs import Encoded

    j = next((k for k, (a, b) in enumerate(zip(ours, theirs, strict=False)) if a != b), min(len(ours), len(theirs)))
    eos = fm.tokenizer.eos_token_id
    mine, other = (ours + [eos])[j], (theirs + [eos])[j]
    context = fm.tokenizer(text).input_ids + ours[:j]
    with torch.no_grad():
        lp = target_logprobs(fm, [Encoded(context, [mine]), Encoded(context, [other])], prompt)
    return float(lp[0][0] - lp[1][0])
