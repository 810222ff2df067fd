"""A frozen base model plus its tokenizer: the one object every other module takes.

`FrozenModel` wraps any Hugging Face causal LM or seq2seq model. Loading from names, GGUF files and the
cache lives in `loading.py`; this module only freezes, describes and fingerprints a model already in memory,
so tests can wrap tiny random models built from a config.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase


@dataclass
class FrozenModel:
    """A frozen LM (all `requires_grad=False`, eval mode) and its tokenizer.

    Attributes:
        model: the Hugging Face model (causal LM or encoder-decoder).
        tokenizer: its tokenizer; `pad_token` is always set (falls back to EOS).
        name: what the user called it (`default`, a hub id, a path); stored in prompt files.
        is_seq2seq: True for encoder-decoder models (the prompt goes on the encoder input only).
        fingerprint: hash of the embedding matrix, stored in prompt files to refuse foreign prompts.
    """

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    name: str
    is_seq2seq: bool = False
    fingerprint: str = field(default="")

    def __post_init__(self) -> None:
        freeze(self.model)
        if self.tokenizer.pad_token_id is None:
            # Padding positions are masked out; any id works, EOS is the usual choice.
            self.tokenizer.pad_token = self.tokenizer.eos_token
        if not self.fingerprint:
            self.fingerprint = embedding_fingerprint(self.embedding_matrix)

    @property
    def embedding_matrix(self) -> torch.Tensor:
        """The input embedding weights [V, H]."""
        return self.model.get_input_embeddings().weight

    @property
    def hidden_size(self) -> int:
        """H: the width of one prompt vector."""
        return int(self.embedding_matrix.shape[1])

    @property
    def vocab_size(self) -> int:
        """V: rows of the input embedding matrix."""
        return int(self.embedding_matrix.shape[0])

    @property
    def dtype(self) -> torch.dtype:
        """The dtype the frozen weights run in (bf16 on CPUs that support it, else fp32)."""
        return self.embedding_matrix.dtype

    @property
    def device(self) -> torch.device:
        return self.embedding_matrix.device

    @property
    def adds_bos(self) -> bool:
        """True when the tokenizer puts a BOS token first; the prompt then goes right after it."""
        bos = self.tokenizer.bos_token_id
        if bos is None or self.is_seq2seq:
            return False
        ids = self.tokenizer("a").input_ids
        return len(ids) > 0 and ids[0] == bos

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Token ids [B, T] -> embeddings [B, T, H], scaled as the model itself would (Gemma scales by √H)."""
        return self.model.get_input_embeddings()(input_ids.to(self.device))

    def context_size(self) -> int | None:
        """Max positions the model accepts, or None when unbounded (e.g. T5's relative positions)."""
        cfg = self.model.config
        for key in ("max_position_embeddings", "n_positions", "max_sequence_length"):
            value = getattr(cfg, key, None)
            if isinstance(value, int) and value > 0:
                return value
        return None

    def attention_window(self) -> int | None:
        """The sliding attention window of the model's local layers (Gemma-3: 512), or None when every
        layer attends over the whole context. Paths that build their own attention masks (packed scoring,
        the engine's caches) are exact only for sequences that fit inside it."""
        cfg = self.model.config
        window = getattr(cfg, "sliding_window", None)
        if not isinstance(window, int) or window <= 0 or getattr(cfg, "use_sliding_window", True) is False:
            return None
        types = getattr(cfg, "layer_types", None)
        if types is not None and "sliding_attention" not in types:
            return None
        return window


def freeze(model: PreTrainedModel) -> None:
    """No gradients for frozen weights: saves memory and the backward pass through weight grads."""
    model.eval()
    for param in model.parameters():
        param.requires_grad_(False)


def embedding_fingerprint(weight: torch.Tensor) -> str:
    """A short, dtype-independent hash of an embedding matrix [V, H].

    Rounds to bf16 first so a model loaded in fp32 and the same model loaded in bf16 agree; hashes the
    shape plus a strided subset of rows (hashing all V×H values of a large vocabulary costs seconds).
    """
    rows = weight.detach()[:: max(1, weight.shape[0] // 512)].to(torch.bfloat16).float().cpu()
    digest = hashlib.sha256()
    digest.update(f"{tuple(weight.shape)}".encode())
    digest.update(rows.view(torch.int32).numpy().tobytes())
    return digest.hexdigest()[:16]
