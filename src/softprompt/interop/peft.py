"""Exchange prompts with Hugging Face PEFT's prompt-tuning adapters (no PEFT import needed).

A PEFT adapter directory holds `adapter_config.json` (peft_type PROMPT_TUNING) and
`adapter_model.safetensors` with `prompt_embeddings` [P × num_transformer_submodules, H].
We write num_transformer_submodules = 1: the prompt goes on the encoder only for seq2seq, as in the paper.

Placement caveat: PEFT puts the prompt before *everything*, BOS included; we put it after BOS. For
tokenizers that add no BOS (SmolLM2, T5) the two agree exactly (tested); for others an exported prompt
sees a slightly different layout in PEFT, and `export_peft` says so.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from softprompt.files import atomic_write
from softprompt.model.frozen import FrozenModel
from softprompt.model.prompt import PromptFileError, SoftPrompt

ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"


def export_peft(prompt_path: str | Path, outdir: str | Path, *, base_model: str | None = None) -> Path:
    """Write `outdir/` as a PEFT prompt-tuning adapter equivalent to the prompt file."""
    prompt = SoftPrompt.load(prompt_path)
    meta = prompt.metadata
    if meta.get("after_bos"):
        warnings.warn(
            "this prompt was trained after a BOS token; PEFT puts prompts before BOS, so its scores in PEFT "
            "will differ slightly from softprompt's", stacklevel=2,
        )
    config = {
        "peft_type": "PROMPT_TUNING",
        "task_type": "SEQ_2_SEQ_LM" if meta.get("is_seq2seq") else "CAUSAL_LM",
        "num_virtual_tokens": prompt.length,
        "token_dim": prompt.hidden_size,
        "num_transformer_submodules": 1,
        "prompt_tuning_init": "RANDOM",
        "base_model_name_or_path": base_model or meta.get("base_model"),
        "inference_mode": True,
        "revision": None,
        "tokenizer_name_or_path": None,
        "prompt_tuning_init_text": None,
    }
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {"prompt_embeddings": prompt.embeddings.detach().float().contiguous()}
    atomic_write(out / ADAPTER_WEIGHTS, lambda tmp: save_file(tensors, tmp, metadata={"format": "pt"}))
    atomic_write(out / ADAPTER_CONFIG, lambda tmp: Path(tmp).write_text(json.dumps(config, indent=2)))
    return out


def import_peft(adapter_dir: str | Path, model: FrozenModel | None = None) -> SoftPrompt:
    """Read a PEFT prompt-tuning adapter directory as a SoftPrompt (checked against `model` if given)."""
    folder = Path(adapter_dir)
    config_path, weights_path = folder / ADAPTER_CONFIG, folder / ADAPTER_WEIGHTS
    if not config_path.is_file():
        raise PromptFileError(f"{folder} has no {ADAPTER_CONFIG}: not a PEFT adapter directory")
    if not weights_path.is_file():
        hint = " (only adapter_model.bin: a pickle, which we never load; re-save it with safetensors)" if (
            folder / "adapter_model.bin").exists() else ""
        raise PromptFileError(f"{folder} has no {ADAPTER_WEIGHTS}{hint}")
    try:
        config = json.loads(config_path.read_text())
    except json.JSONDecodeError as err:
        raise PromptFileError(f"{config_path} is not valid JSON ({err})") from None
    if config.get("peft_type") != "PROMPT_TUNING":
        raise PromptFileError(
            f"{folder} is a {config.get('peft_type')} adapter; only PROMPT_TUNING adapters are soft prompts"
        )
    tensors = load_file(str(weights_path))
    key = next((k for k in tensors if k.endswith("prompt_embeddings")), None)
    if key is None:
        raise PromptFileError(f"{weights_path} has no prompt_embeddings tensor (found {sorted(tensors)})")
    # Rows [P:] belong to the decoder when num_transformer_submodules = 2; we attach to the encoder only.
    rows = tensors[key][: int(config.get("num_virtual_tokens", tensors[key].shape[0]))].to(torch.float32)
    prompt = SoftPrompt(rows, {"init": "peft-import", "imported_from": str(folder),
                               "base_model": config.get("base_model_name_or_path")})
    if model is not None:
        prompt.check_fits(model, source=str(folder))
        prompt.stamp(model)
    return prompt
