"""Task-specific cost of prompt tuning next to other ways to adapt a model (paper §2 and Figure 4).

Everything is computed from the model's config and parameter count, except `bytes_on_disk` for prompt
tuning, which is the size of a real prompt file written by `SoftPrompt.save` (tensor + JSON metadata).
Counts per method, for one task:

- prompt tuning, P tokens:       P·H
- prefix tuning (Li & Liang), P: 2·L·P·kv_dim (a key and a value per layer and position; kv_dim = kv heads ×
  head dim, so grouped-query models store less than 2·L·P·H)
- adapters (Houlsby), bottleneck r: 2 per layer, each H·r + r (down) + r·H + H (up)
- LoRA, rank r on the query and value projections: r·(H + q_dim) + r·(H + kv_dim) per layer
- model tuning: every parameter of the model

Serving N tasks on one machine: the frozen model once (bf16) plus each task's own parameters; model tuning
keeps N copies. softprompt's engine also caches each prompt's keys/values (2·L·(P+1)·kv_dim in bf16) so
that a request's cost does not grow with P; that cache is listed separately.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import torch

from softprompt.model.frozen import FrozenModel
from softprompt.model.prompt import SoftPrompt

PROMPT_LENGTHS = (1, 20, 100)
ADAPTER_BOTTLENECK = 64
LORA_RANK = 8
SERVED_TASKS = (1, 10, 100, 1000)
BF16, FP32 = 2, 4


def shape(fm: FrozenModel) -> dict[str, int]:
    """H, layers, query width and kv width of a causal or seq2seq model's config."""
    cfg = fm.model.config
    hidden = int(getattr(cfg, "hidden_size", None) or cfg.d_model)
    heads = int(getattr(cfg, "num_attention_heads", None) or cfg.num_heads)
    head_dim = int(getattr(cfg, "head_dim", None) or getattr(cfg, "d_kv", None) or hidden // heads)
    kv_heads = int(getattr(cfg, "num_key_value_heads", None) or heads)
    layers = int(getattr(cfg, "num_hidden_layers", None) or cfg.num_layers)
    return {"H": hidden, "layers": layers, "q_dim": heads * head_dim, "kv_dim": kv_heads * head_dim}


def prompt_file_bytes(fm: FrozenModel, length: int) -> int:
    """Size of a real prompt file [length, H] as `softprompt` writes it (fp32 tensor + metadata header)."""
    prompt = SoftPrompt(torch.zeros(length, fm.hidden_size), {"task": "example", "label_words": ["negative", "positive"]})
    prompt.stamp(fm)
    with tempfile.TemporaryDirectory() as tmp:
        return prompt.save(Path(tmp) / "p.safetensors").stat().st_size


def cost_report(fm: FrozenModel, label: str) -> dict[str, Any]:
    """Parameters and bytes per task for each method, and serving memory for N tasks (see module doc)."""
    s = shape(fm)
    hidden, layers, kv = s["H"], s["layers"], s["kv_dim"]
    total = sum(p.numel() for p in fm.model.parameters())
    rows: list[dict[str, Any]] = []

    def add(method: str, params: int, on_disk: int | None = None) -> None:
        rows.append({"method": method, "parameters": params, "fraction_of_model": params / total,
                     "bytes_fp32": params * FP32, "bytes_on_disk": on_disk})

    for length in PROMPT_LENGTHS:
        add(f"prompt tuning (P={length})", length * hidden, prompt_file_bytes(fm, length))
    for length in PROMPT_LENGTHS:
        add(f"prefix tuning (P={length})", 2 * layers * length * kv)
    r = ADAPTER_BOTTLENECK
    add(f"adapters (bottleneck {r})", layers * 2 * (hidden * r + r + r * hidden + hidden))
    r = LORA_RANK
    add(f"LoRA (r={r}, q and v)", layers * (r * (hidden + s["q_dim"]) + r * (hidden + kv)))
    add("model tuning", total)

    base = total * BF16
    prompt_kv = 2 * layers * (100 + 1) * kv * BF16
    serving = []
    for n in SERVED_TASKS:
        serving += [
            {"tasks": n, "method": "prompt tuning (P=100), prompts only", "bytes": base + n * 100 * hidden * FP32},
            {"tasks": n, "method": "prompt tuning (P=100) + cached prompt KV", "bytes": base + n * (100 * hidden * FP32 + prompt_kv)},
            {"tasks": n, "method": "model tuning (a bf16 copy per task)", "bytes": n * base},
        ]
    return {"model_label": label, "H": hidden, "layers": layers, "kv_dim": kv, "q_dim": s["q_dim"],
            "total_parameters": total, "rows": rows, "serving": serving}
