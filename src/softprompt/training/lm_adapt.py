"""LM adaptation (the paper's §3.2): teach a span-corruption seq2seq checkpoint to output plain text.

T5 1.1-style checkpoints were pretrained on span corruption only, so their decoder has only ever produced
sentinel-delimited spans. The paper's best fix ("LM adaptation", the T5 1.1 LM-adapted checkpoints, Figure
3(c)) is to continue training ALL weights for a while with a prefix-LM objective on raw text: split each text
at a random point; the encoder reads the prefix, the decoder predicts the suffix. Prompt tuning then works
on the adapted model. This module does that on any local seq2seq model:

    softprompt lm-adapt --model t5-dir --text-file corpus.txt --steps 100 --out adapted/
    softprompt train --model adapted/ --task sst2 ...

Decoder-only LMs need neither this nor `--target-sentinel`: their pretraining objective already is LM.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from softprompt.files import publish_folder
from softprompt.scoring.objectives import ObjectiveError

if TYPE_CHECKING:
    from softprompt.model.frozen import FrozenModel

SUMMARY_NAME = "lm_adapt.json"
EVAL_TEXTS = 64  # texts in the fixed before/after loss measurement


class LMAdaptError(ObjectiveError):
    """LM adaptation cannot run as asked; the message says why and what to do."""


@dataclass
class LMAdaptResult:
    """What `lm_adapt` returns (also written to `out_dir/lm_adapt.json`, without `losses`)."""

    out_dir: Path
    steps: int
    texts: int
    loss_before: float
    loss_after: float
    wall_seconds: float
    losses: list[float] = field(default_factory=list)


def read_texts(path: str | Path) -> list[str]:
    """Raw text for LM adaptation: one document per line; a file with blank lines is read as paragraphs
    (blank-line separated, hard-wrapped lines joined), as plain prose usually is."""
    path = Path(path).expanduser()
    try:
        raw = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise LMAdaptError(f"cannot read text file {path}: {err}") from None
    lines = raw.splitlines()
    if any(not line.strip() for line in lines[:-1]):
        blocks = "\n".join(line.strip() for line in lines).split("\n\n")
        texts = [" ".join(block.split()) for block in blocks]
    else:
        texts = [line.strip() for line in lines]
    texts = [t for t in texts if t]
    if not texts:
        raise LMAdaptError(f"{path} holds no text")
    return texts


def task_texts(task: str | None = None, task_file: str | Path | None = None, data_dir: str | None = None) -> list[str]:
    """The training inputs of a built-in task (`--task sst2`) or a task file, as raw text."""
    from softprompt.tasks import resolve_task

    return [ex.input_text for ex in resolve_task(task, task_file).examples("train", data_dir)]


def _check_model(fm: FrozenModel) -> None:
    if not fm.is_seq2seq:
        raise LMAdaptError(
            f"lm-adapt is for span-corruption seq2seq checkpoints (T5 1.1 style); {fm.name} is a decoder-only LM "
            "and needs neither LM adaptation nor --target-sentinel: its pretraining objective already is "
            "language modelling. Train a prompt on it directly."
        )


def _check_out(out: Path) -> None:
    """Refuse to replace a folder that is not an earlier lm-adapt output (it may be the user's data)."""
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / SUMMARY_NAME).is_file())):
        raise LMAdaptError(f"{out} exists and is not an lm-adapt output folder; choose another --out")


def tokenize_texts(fm: FrozenModel, texts: Sequence[str]) -> list[list[int]]:
    """Token ids of every text (no special tokens); texts shorter than 2 tokens cannot be split, so are dropped."""
    tok = fm.tokenizer
    ids = [tok(text, add_special_tokens=False).input_ids for text in texts]
    return [row for row in ids if len(row) >= 2]


def split_example(ids: list[int], max_tokens: int, gen: torch.Generator, eos: int | None) -> tuple[list[int], list[int]]:
    """One prefix-LM example: a random window of at most `max_tokens` tokens, cut at a random point
    (both sides non-empty); encoder input = prefix + EOS, target = suffix + EOS, as T5 formats them."""
    if len(ids) > max_tokens:
        start = int(torch.randint(0, len(ids) - max_tokens + 1, (1,), generator=gen))
        ids = ids[start: start + max_tokens]
    cut = int(torch.randint(1, len(ids), (1,), generator=gen))
    tail = [eos] if eos is not None else []
    return ids[:cut] + tail, ids[cut:] + tail


def _batch_loss(fm: FrozenModel, pairs: Sequence[tuple[list[int], list[int]]]) -> tuple[torch.Tensor, int]:
    """Summed token cross-entropy of the suffixes given the prefixes, and the number of target tokens."""
    from softprompt.scoring import pad

    pad_id = fm.tokenizer.pad_token_id
    ids, mask = pad([p for p, _ in pairs], pad_id)
    labels, label_mask = pad([t for _, t in pairs], pad_id)
    labels = labels.masked_fill(label_mask == 0, -100).to(fm.device)
    out = fm.model(input_ids=ids.to(fm.device), attention_mask=mask.to(fm.device), labels=labels,
                   decoder_attention_mask=label_mask.to(fm.device), use_cache=False)
    count = int(label_mask.sum())
    return out.loss.float() * count, count  # HF's loss is the mean over target tokens


@torch.no_grad()
def prefix_lm_loss(fm: FrozenModel, texts: Sequence[str], max_tokens: int = 128, seed: int = 0,
                   batch_size: int = 8) -> float:
    """Mean per-token prefix-LM loss on (at most EVAL_TEXTS of) `texts`, with fixed, seeded cut points."""
    docs = tokenize_texts(fm, texts)[:EVAL_TEXTS]
    if not docs:
        raise LMAdaptError("no text of at least 2 tokens to measure the prefix-LM loss on")
    gen = torch.Generator().manual_seed(seed + 1_000_003)
    pairs = [split_example(d, max_tokens, gen, fm.tokenizer.eos_token_id) for d in docs]
    total, count = 0.0, 0
    for start in range(0, len(pairs), batch_size):
        loss, n = _batch_loss(fm, pairs[start: start + batch_size])
        total, count = total + float(loss), count + n
    return total / count


def lm_adapt(
    fm: FrozenModel,
    texts: Sequence[str],
    steps: int = 100,
    batch_size: int = 8,
    lr: float | None = None,
    out_dir: str | Path = "adapted",
    seed: int = 0,
    *,
    optimizer: str = "adafactor",
    max_tokens: int = 128,
    progress: bool = True,
) -> LMAdaptResult:
    """Continue training every weight of seq2seq `fm` with the prefix-LM objective on `texts`; save the
    adapted model (save_pretrained + tokenizer + lm_adapt.json) atomically to `out_dir`.

    optimizer: "adafactor" (T5's, default lr 1e-3, constant) or "adamw" (default lr 1e-4).
    The weights are trained in fp32 (a bf16 model is upcast in place); dropout stays off. `fm` ends frozen
    again, holding the adapted weights.
    """
    from softprompt.model.frozen import embedding_fingerprint, freeze
    from softprompt.model.loading import cpu_supports_bf16

    _check_model(fm)
    if steps < 1 or batch_size < 1 or max_tokens < 2:
        raise LMAdaptError(f"steps ({steps}) and batch size ({batch_size}) must be >= 1, max tokens ({max_tokens}) >= 2")
    if optimizer not in ("adafactor", "adamw"):
        raise LMAdaptError(f"optimizer {optimizer!r}: use adafactor or adamw")
    out = Path(out_dir).expanduser()
    _check_out(out)
    docs = tokenize_texts(fm, texts)
    if not docs:
        raise LMAdaptError(f"none of the {len(texts)} texts has 2 tokens or more: nothing to split into prefix and suffix")
    started = time.time()
    torch.manual_seed(seed)
    if fm.dtype != torch.float32:
        fm.model.float()  # bf16 master weights would drop the small updates
    loss_before = prefix_lm_loss(fm, texts, max_tokens, seed)

    params = list(fm.model.parameters())
    for param in params:
        param.requires_grad_(True)
    fm.model.train(False)
    opt, rate = _make_optimizer(params, optimizer, lr)
    device_type = fm.device.type
    autocast = device_type == "cuda" or (device_type == "cpu" and cpu_supports_bf16())
    gen = torch.Generator().manual_seed(seed)
    order: list[int] = []
    losses: list[float] = []
    bar = _progress(steps, progress)
    eos = fm.tokenizer.eos_token_id
    try:
        for step in range(1, steps + 1):
            picked = _next_batch(order, len(docs), batch_size, gen)
            pairs = [split_example(docs[i], max_tokens, gen, eos) for i in picked]
            opt.zero_grad(set_to_none=True)
            with torch.autocast(device_type, dtype=torch.bfloat16, enabled=autocast):
                total, count = _batch_loss(fm, pairs)
            loss = total / count
            value = float(loss.detach())
            if not math.isfinite(value):
                raise LMAdaptError(f"loss became {value} at step {step}; lower --lr. Nothing was saved.")
            loss.backward()
            opt.step()
            losses.append(value)
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.4f}")
    finally:
        bar.close()
        freeze(fm.model)
    fm.fingerprint = embedding_fingerprint(fm.embedding_matrix)
    loss_after = prefix_lm_loss(fm, texts, max_tokens, seed)
    result = LMAdaptResult(out, steps, len(docs), loss_before, loss_after, round(time.time() - started, 1), losses)
    summary = {k: v for k, v in asdict(result).items() if k != "losses"}
    summary.update(out_dir=str(out), base_model=fm.name, objective="prefix-lm", optimizer=optimizer, lr=rate,
                   batch_size=batch_size, max_tokens=max_tokens, seed=seed)
    _save(fm, out, summary)
    return result


def _make_optimizer(params: list[torch.Tensor], optimizer: str, lr: float | None) -> tuple[torch.optim.Optimizer, float]:
    """(the optimizer, its lr): Adafactor at T5's 1e-3, or AdamW at 1e-4, unless `lr` is given."""
    rate = lr if lr is not None else (1e-3 if optimizer == "adafactor" else 1e-4)
    if optimizer == "adafactor":
        return torch.optim.Adafactor(params, lr=rate), rate
    return torch.optim.AdamW(params, lr=rate, weight_decay=0.0), rate


def _next_batch(order: list[int], n_docs: int, batch_size: int, gen: torch.Generator) -> list[int]:
    """The next `batch_size` document indices, popped from `order` (refilled with a fresh seeded shuffle when
    empty, in place): every document is seen once per pass, and one seed always gives the same batches."""
    picked = []
    while len(picked) < batch_size:
        if not order:
            order.extend(torch.randperm(n_docs, generator=gen).tolist())
        picked.append(order.pop())
    return picked


def _save(fm: FrozenModel, out: Path, summary: dict[str, Any]) -> None:
    """save_pretrained + lm_adapt.json, published as one folder: an earlier lm-adapt output at `out` is
    replaced only once the new one is complete."""
    def build(tmp: Path) -> None:
        fm.model.save_pretrained(tmp)
        fm.tokenizer.save_pretrained(tmp)
        (tmp / SUMMARY_NAME).write_text(json.dumps(summary, indent=2))

    publish_folder(build, out)


def _progress(total: int, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, disable=not enabled, desc="lm-adapt", unit="step", dynamic_ncols=True)
