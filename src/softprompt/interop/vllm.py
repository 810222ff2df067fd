"""Export a prompt for vLLM's `prompt_embeds` input: serve many prompt-tuned tasks on one vLLM engine.

vLLM (≥ 0.9, `LLM(model, enable_prompt_embeds=True)` or `vllm serve --enable-prompt-embeds`) accepts a
request as a ready [L, H] tensor of input embeddings instead of token ids. A soft prompt is just P extra rows
of that tensor, so one vLLM engine on the frozen base model serves any number of tasks: per request,

    embeds = [ BOS embedding (when the tokenizer adds BOS) | prompt rows [P, H] | input token embeddings ]

and `llm.generate({"prompt_embeds": embeds}, sampling_params)`. Requests of different tasks batch together
in vLLM like any others; nothing is merged into the weights.

`softprompt export-vllm PROMPT OUT` writes

    OUT (.safetensors)   one tensor `prompt_embeds` [P, H] in the serving dtype (bf16 by default: pass the
                         dtype vLLM runs the model in, `LLM(dtype=...)`)
    OUT.json             sidecar: P, H, dtype, base model and its embedding fingerprint, after_bos, task,
                         label words, metrics

and `request_embeds` below is the client-side concatenation (plain torch, no vLLM import):

    from transformers import AutoModelForCausalLM, AutoTokenizer
    from vllm import LLM, SamplingParams
    from softprompt.interop.vllm import load_vllm_prompt, request_embeds

    tok = AutoTokenizer.from_pretrained(BASE)
    embed = AutoModelForCausalLM.from_pretrained(BASE, torch_dtype="bfloat16").get_input_embeddings()
    prompts = {t: load_vllm_prompt(f"{t}.vllm.safetensors") for t in ("sst2", "rte")}   # (rows, sidecar)
    llm = LLM(model=BASE, enable_prompt_embeds=True, dtype="bfloat16")
    reqs = [{"prompt_embeds": request_embeds(*prompts[task], tok, embed, text)} for task, text in batch]
    outs = llm.generate(reqs, SamplingParams(temperature=0, max_tokens=8))

The token embeddings must come from the HF model's own `get_input_embeddings()`: our prompt rows live in
that module's output space (for Gemma it already includes the √H scaling). Check that your vLLM version's
model treats `inputs_embeds` the same way: vLLM's Gemma 3 (at the version checked) uses them as given, but
some vLLM Gemma/Gemma 2 versions multiply `inputs_embeds` by √H again; for those, divide the whole request
tensor by √H. Llama-style models (SmolLM2, the default) apply no scaling either way. Classification by ranking label words is not a
vLLM primitive: generate greedily and match the label word, or request `logprobs` for the first label token.
Seq2seq prompts are refused (vLLM's `prompt_embeds` is for decoder-only models).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from softprompt.files import atomic_write
from softprompt.model.prompt import PromptFileError, SoftPrompt

TENSOR = "prompt_embeds"
FORMAT = "softprompt-vllm-prompt-embeds/1"
DTYPES = {"bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16,
          "half": torch.float16, "float32": torch.float32, "fp32": torch.float32, "float": torch.float32}


def sidecar_path(out: str | Path) -> Path:
    """`x.safetensors` -> `x.json`."""
    return Path(out).with_suffix(".json")


def export_vllm(prompt_path: str | Path, out: str | Path, *, dtype: str = "bfloat16") -> Path:
    """Write the prompt as vLLM prompt-embedding rows [P, H] in `dtype` plus a JSON sidecar; returns `out`."""
    if dtype not in DTYPES:
        raise PromptFileError(f"dtype {dtype!r}: use one of {', '.join(DTYPES)} (the dtype vLLM runs the model in)")
    prompt = SoftPrompt.load(prompt_path)
    meta = prompt.metadata
    if meta.get("is_seq2seq"):
        raise PromptFileError(f"{prompt_path} is a seq2seq prompt; vLLM's prompt_embeds input is for decoder-only "
                              "models (serve it with `softprompt serve`)")
    out = Path(out)
    if out.suffix != ".safetensors":
        raise PromptFileError(f"{out}: the output file must end in .safetensors (the sidecar goes next to it)")
    rows = prompt.embeddings.detach().to(DTYPES[dtype]).contiguous()
    sidecar = {
        "format": FORMAT, "tensor": TENSOR, "shape": list(rows.shape), "dtype": str(rows.dtype).removeprefix("torch."),
        "prompt_length": prompt.length, "hidden_size": prompt.hidden_size,
        "after_bos": bool(meta.get("after_bos", False)), "base_model": meta.get("base_model"),
        "fingerprint": meta.get("fingerprint"), "task": meta.get("task"), "label_words": meta.get("label_words"),
        "metrics": meta.get("metrics"), "source": Path(prompt_path).name,
        "embedding_space": "output of the HF model's get_input_embeddings() (Gemma: includes the sqrt(H) scale)",
        "usage": "per request: [BOS embedding if after_bos] + these rows + the input's token embeddings "
                 "(the base model's get_input_embeddings()), as {'prompt_embeds': tensor} to vLLM "
                 "LLM(..., enable_prompt_embeds=True).generate",
    }
    header = {"format": FORMAT, "sidecar": json.dumps(sidecar)}
    atomic_write(out, lambda tmp: save_file({TENSOR: rows}, tmp, metadata=header))
    atomic_write(sidecar_path(out), lambda tmp: Path(tmp).write_text(json.dumps(sidecar, indent=2) + "\n"))
    return out


def load_vllm_prompt(path: str | Path) -> tuple[torch.Tensor, dict[str, Any]]:
    """Read an export back: (rows [P, H] in the exported dtype, sidecar dict). The sidecar is read from the
    safetensors header, so the .json file is a convenience copy for humans and other tools."""
    try:
        tensors = load_file(str(path))
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            header = handle.metadata() or {}
    except Exception as err:  # noqa: BLE001 — any parse failure is a bad file
        raise PromptFileError(f"{path} is not a readable vLLM prompt export ({err})") from None
    if header.get("format") != FORMAT or TENSOR not in tensors:
        raise PromptFileError(f"{path} is not a softprompt vLLM export (format {header.get('format')!r})")
    return tensors[TENSOR], json.loads(header["sidecar"])


def request_embeds(
    rows: torch.Tensor, sidecar: dict[str, Any], tokenizer: Any, embedding: torch.nn.Module, text: str
) -> torch.Tensor:
    """One request's `prompt_embeds` [L, H]: (BOS) + prompt rows + the text's token embeddings, in rows' dtype.

    Args:
        rows: the exported prompt [P, H].
        sidecar: its sidecar (for `after_bos`).
        tokenizer: the base model's tokenizer (adds BOS exactly when the prompt was trained after one).
        embedding: the base model's `get_input_embeddings()`.
        text: the input, formatted as in training (e.g. "sentence : a gem .").
    """
    ids = tokenizer(text).input_ids
    device = next(embedding.parameters()).device
    with torch.no_grad():
        tokens = embedding(torch.tensor([ids], device=device))[0].to(rows.dtype)  # [T, H]
    rows = rows.to(device)
    if sidecar.get("after_bos") and ids[:1] == [tokenizer.bos_token_id]:
        return torch.cat([tokens[:1], rows, tokens[1:]])
    return torch.cat([rows, tokens])
