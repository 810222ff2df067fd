"""Ways to make the initial [P, H] prompt matrix (the paper's §3.2 plus text and file starts).

Every strategy returns rows in the space the model's embedding layer outputs (so Gemma's √H scaling is
included), as fp32. Making a prompt is kept apart from attaching it (`attach.py`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from enum import StrEnum
from pathlib import Path

import torch

from softprompt.errors import UsageError
from softprompt.model.frozen import FrozenModel
from softprompt.model.prompt import SoftPrompt

TOP_N_VOCAB = 5000  # the paper samples from the 5,000 most common tokens


class InitStrategy(StrEnum):
    RANDOM_UNIFORM = "random-uniform"
    SAMPLED_VOCAB = "sampled-vocab"
    CLASS_LABELS = "class-labels"
    TEXT = "text"
    FILE = "file"


class InitError(UsageError):
    """A strategy got options that cannot work together (the message shows the values)."""


def embed_ids(fm: FrozenModel, ids: Sequence[int]) -> torch.Tensor:
    """Token ids [N] -> fp32 embeddings [N, H] exactly as the model's embedding layer outputs them."""
    with torch.no_grad():
        return fm.embed(torch.tensor([list(ids)], dtype=torch.long))[0].float().cpu()


def label_token_ids(fm: FrozenModel, label: str) -> list[int]:
    """A label word tokenized as it appears as a target: after a space (see scoring.encode_pair)."""
    return fm.tokenizer(" " + label.strip(), add_special_tokens=False).input_ids


def common_token_ids(fm: FrozenModel, texts: Iterable[str] | None = None, top_n: int = TOP_N_VOCAB) -> list[int]:
    """The ids of the `top_n` most common non-special tokens.

    Counted over `texts` (e.g. the training inputs) when given. Otherwise the tokenizer's rank order is used:
    BPE and SentencePiece vocabularies assign lower ids to earlier merges / more frequent pieces, so the
    first `top_n` ordinary ids approximate "most common" (the paper used T5's SentencePiece ranks).
    """
    special = set(fm.tokenizer.all_special_ids)
    vocab_limit = min(fm.vocab_size, len(fm.tokenizer))
    if texts is not None:
        counts: Counter[int] = Counter()
        for text in texts:
            counts.update(fm.tokenizer(text, add_special_tokens=False).input_ids)
        ranked = [i for i, _ in counts.most_common() if i not in special and i < vocab_limit]
        if ranked:
            return ranked[:top_n]
    return [i for i in range(vocab_limit) if i not in special][:top_n]


def random_uniform(length: int, hidden: int, scale: float = 0.5, generator: torch.Generator | None = None) -> torch.Tensor:
    """U[-scale, scale] rows [P, H] (paper: scale 0.5)."""
    return (torch.rand(length, hidden, generator=generator) * 2 - 1) * scale


def sampled_vocab(
    fm: FrozenModel,
    length: int,
    texts: Iterable[str] | None = None,
    generator: torch.Generator | None = None,
    top_n: int = TOP_N_VOCAB,
) -> torch.Tensor:
    """[P, H] embeddings of tokens drawn without replacement (while possible) from the top-N common tokens."""
    pool = torch.tensor(common_token_ids(fm, texts, top_n))
    if length <= len(pool):
        picks = pool[torch.randperm(len(pool), generator=generator)[:length]]
    else:
        picks = pool[torch.randint(len(pool), (length,), generator=generator)]
    return embed_ids(fm, picks.tolist())


def class_labels(
    fm: FrozenModel,
    length: int,
    labels: Sequence[str],
    texts: Iterable[str] | None = None,
    generator: torch.Generator | None = None,
    top_n: int = TOP_N_VOCAB,
) -> torch.Tensor:
    """Row i (i < number of labels) = mean embedding of label i's tokens; the rest are sampled vocab [P, H]."""
    if not labels:
        raise InitError("class-labels init needs the label words (--labels 'negative,positive')")
    if length < len(labels):
        raise InitError(
            f"class-labels init needs one row per class: prompt length {length} < {len(labels)} labels "
            f"({', '.join(labels)}). Use --length >= {len(labels)} or another --init."
        )
    rows = [embed_ids(fm, label_token_ids(fm, label)).mean(dim=0) for label in labels]
    rest = sampled_vocab(fm, length - len(labels), texts, generator, top_n) if length > len(labels) else None
    label_rows = torch.stack(rows)
    return label_rows if rest is None else torch.cat([label_rows, rest])


def from_text(fm: FrozenModel, length: int, text: str) -> torch.Tensor:
    """The text's token embeddings, tiled (repeated) or cut to P rows [P, H]."""
    ids = fm.tokenizer(text, add_special_tokens=False).input_ids
    if not ids:
        raise InitError("text init needs a non-empty --text")
    tiled = (ids * (length // len(ids) + 1))[:length]
    return embed_ids(fm, tiled)


def make_prompt(
    fm: FrozenModel,
    length: int,
    strategy: InitStrategy | str = InitStrategy.CLASS_LABELS,
    *,
    labels: Sequence[str] | None = None,
    text: str | None = None,
    path: str | Path | None = None,
    texts: Iterable[str] | None = None,
    scale: float = 0.5,
    top_n: int = TOP_N_VOCAB,
    seed: int = 0,
    task: str | None = None,
) -> SoftPrompt:
    """Build an untrained SoftPrompt [P, H] for `fm` with one of the strategies; metadata says how."""
    try:
        strategy = InitStrategy(strategy)
    except ValueError:
        valid = ", ".join(s.value for s in InitStrategy)
        raise InitError(f"unknown init strategy '{strategy}'; choose one of: {valid}") from None
    if length < 1:
        raise InitError(f"prompt length must be >= 1, got {length}")
    generator = torch.Generator().manual_seed(seed)
    if strategy is InitStrategy.FILE:
        if path is None:
            raise InitError("file init needs the path of a saved prompt (--from FILE)")
        prompt = SoftPrompt.load(path, model=fm)
        prompt.metadata.update(init=f"file:{Path(path).name}")
        return prompt
    if strategy is InitStrategy.RANDOM_UNIFORM:
        rows = random_uniform(length, fm.hidden_size, scale, generator)
    elif strategy is InitStrategy.SAMPLED_VOCAB:
        rows = sampled_vocab(fm, length, texts, generator, top_n)
    elif strategy is InitStrategy.CLASS_LABELS:
        rows = class_labels(fm, length, list(labels or []), texts, generator, top_n)
    else:
        if not text:
            raise InitError("text init needs --text 'some words'")
        rows = from_text(fm, length, text)
    prompt = SoftPrompt(rows, {"init": strategy.value, "seed": seed})
    if labels:
        prompt.metadata["label_words"] = list(labels)
    if task:
        prompt.metadata["task"] = task
    prompt.stamp(fm)
    return prompt
