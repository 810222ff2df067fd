"""SoftPrompt: the only trainable thing — a [P, H] fp32 matrix — plus the metadata that travels with it.

Files are safetensors with one tensor, `prompt_embeddings` [P, H], and string metadata in the header
(JSON-encoded values). Never pickle: prompt files come from users and the network.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from softprompt import __version__
from softprompt.errors import UsageError
from softprompt.files import atomic_write
from softprompt.model.frozen import FrozenModel

TENSOR_NAME = "prompt_embeddings"


class PromptFileError(UsageError):
    """A prompt file is missing, corrupt, or does not fit the model it is loaded onto."""


class SoftPrompt(nn.Module):
    """A soft prompt: `embeddings` [P, H], always fp32.

    The master copy stays fp32 even when the frozen model runs in bf16: Adafactor updates at lr 0.3 are
    far below bf16's resolution for values near 1, so a bf16 copy would silently stop learning.

    Metadata keys written by softprompt: base_model, hidden_size, fingerprint, init, task, label_words,
    train_config, metrics, softprompt_version. Any JSON-serialisable extras are kept.
    """

    def __init__(self, embeddings: torch.Tensor, metadata: dict[str, Any] | None = None) -> None:
        super().__init__()
        problem = _shape_problem(tuple(embeddings.shape))
        if problem is not None:
            raise UsageError(problem)
        self.embeddings = nn.Parameter(embeddings.detach().to(torch.float32).clone())
        self.metadata: dict[str, Any] = dict(metadata or {})

    @classmethod
    def computed(cls, rows: torch.Tensor, metadata: dict[str, Any]) -> SoftPrompt:
        """A prompt over rows [P, H] computed by something else (training's reparameterization), not copied:
        gradients through `as_input` reach what computed them. Scoring only; save the folded prompt instead."""
        prompt = cls.__new__(cls)
        nn.Module.__init__(prompt)
        prompt.embeddings = rows  # a plain tensor attribute, not a Parameter: this view owns no weights
        prompt.metadata = metadata
        return prompt

    @property
    def length(self) -> int:
        """P: number of prompt vectors."""
        return int(self.embeddings.shape[0])

    @property
    def hidden_size(self) -> int:
        """H: width of each vector; must equal the model's embedding width."""
        return int(self.embeddings.shape[1])

    @property
    def num_parameters(self) -> int:
        """P × H: the task-specific parameter count."""
        return self.embeddings.numel()

    @property
    def name(self) -> str:
        return str(self.metadata.get("task") or "prompt")

    def stamp(self, fm: FrozenModel) -> None:
        """Record which model this prompt belongs to (name, H, embedding fingerprint)."""
        self.metadata.update(
            base_model=fm.name, hidden_size=fm.hidden_size, fingerprint=fm.fingerprint,
            is_seq2seq=fm.is_seq2seq, after_bos=fm.adds_bos,
        )

    def check_fits(self, fm: FrozenModel, source: str = "this prompt") -> None:
        """Refuse a prompt made for another model, showing both sides."""
        if self.hidden_size != fm.hidden_size:
            raise PromptFileError(
                f"{source} has width H={self.hidden_size} but model '{fm.name}' has H={fm.hidden_size}; "
                f"it was made for '{self.metadata.get('base_model', 'an unknown model')}'. "
                "Load it with that model (--model) or train a new prompt."
            )
        fingerprint = self.metadata.get("fingerprint")
        if fingerprint and fingerprint != fm.fingerprint:
            trained_on = self.metadata.get("base_model")
            # One name can mean two models (an alias or a folder whose weights changed): then only the
            # fingerprints tell them apart, so say that rather than "trained on 'x', not on 'x'".
            loaded = (f"the model now loaded as '{fm.name}' is a different one with the same name"
                      if trained_on == fm.name else f"the model now loaded is '{fm.name}'")
            raise PromptFileError(
                f"{source} was trained on '{trained_on}' (embedding fingerprint {fingerprint}), but {loaded} "
                f"(fingerprint {fm.fingerprint}). Its vectors mean nothing to this model: load it with the model "
                "it was trained on (--model), or train a new prompt."
            )

    def save(self, path: str | Path) -> Path:
        """Write atomically: a crash or a bad value never leaves a half-written prompt file behind."""
        path = Path(path)
        if not torch.isfinite(self.embeddings).all():
            raise PromptFileError(f"refusing to save {path}: the prompt contains NaN or inf values")
        meta = {**self.metadata, "softprompt_version": __version__}
        header = {key: json.dumps(value) for key, value in meta.items()}
        tensors = {TENSOR_NAME: self.embeddings.detach().to(torch.float32).cpu().contiguous()}
        atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=header))
        return path

    @classmethod
    def load(cls, path: str | Path, model: FrozenModel | None = None) -> SoftPrompt:
        """Read a prompt file; with `model`, also check it was made for that model.

        The tensor's name, dtype and shape are checked from the header before its data is read, and its values
        after: a file of another kind, a non-float tensor (pickle bytes stored as U8 are never unpickled, just
        refused), a shape other than [P, H] with P, H ≥ 1, and NaN/inf values are refused as saving refuses them.
        """
        path = Path(path)
        if not path.is_file():
            raise PromptFileError(f"prompt file not found: {path}")
        try:
            with safe_open(str(path), framework="pt") as handle:  # safetensors: data only, nothing executed
                header = handle.metadata() or {}
                names = sorted(handle.keys())
                problem = _tensor_problem(handle) if TENSOR_NAME in names else None
                tensor = handle.get_tensor(TENSOR_NAME) if TENSOR_NAME in names and problem is None else None
        except (SafetensorError, OSError, ValueError, RuntimeError) as err:
            raise PromptFileError(f"{path} is not a readable safetensors prompt file ({err})") from None
        if problem is not None:
            raise PromptFileError(f"{path}: {problem}; is it a softprompt file? Save prompts with softprompt "
                                  "(SoftPrompt.save) or train a new one.")
        if tensor is None:
            raise PromptFileError(
                f"{path} has no '{TENSOR_NAME}' tensor (found: {names}); is it a softprompt file? "
                "PEFT adapter directories are read with `softprompt import-peft`."
            )
        bad = int((~torch.isfinite(tensor)).sum())
        if bad:
            raise PromptFileError(f"{path}: {bad} of the prompt's {tensor.numel()} values are NaN or inf; the file "
                                  "is corrupt or from a diverged run: use an earlier checkpoint or train again")
        metadata = {key: _json_or_str(value) for key, value in header.items()}
        prompt = cls(tensor, metadata)
        if model is not None:
            prompt.check_fits(model, source=str(path))
        return prompt

    def as_input(self, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """The prompt in the model's compute dtype [P, H]; differentiable w.r.t. the fp32 master copy."""
        return self.embeddings.to(device=device, dtype=dtype)

    def extra_repr(self) -> str:
        return f"P={self.length}, H={self.hidden_size}, task={self.metadata.get('task')!r}"


def _json_or_str(value: str) -> Any:
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value  # metadata written by other tools is plain strings


FLOAT_DTYPES = {"F16": "float16", "BF16": "bfloat16", "F32": "float32", "F64": "float64"}


def _tensor_problem(handle: Any) -> str | None:
    """What is wrong with the prompt tensor's dtype or shape in an open safetensors file, read from its header."""
    piece = handle.get_slice(TENSOR_NAME)
    dtype, shape = str(piece.get_dtype()), tuple(piece.get_shape())
    if dtype not in FLOAT_DTYPES:
        return f"'{TENSOR_NAME}' has dtype {dtype}; a soft prompt is floating point ({', '.join(FLOAT_DTYPES)})"
    return _shape_problem(shape)


def _shape_problem(shape: tuple[int, ...]) -> str | None:
    """Why `shape` is no [P, H] prompt matrix (one row per prompt vector, at least one of each), or None."""
    if len(shape) != 2:
        return f"a soft prompt is a [P, H] matrix; got shape {list(shape)} (rank {len(shape)})"
    if min(shape) < 1:
        return f"a soft prompt has at least one vector of width at least 1; got shape [P={shape[0]}, H={shape[1]}]"
    return None
