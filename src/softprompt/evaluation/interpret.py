"""Read a learned prompt through its nearest vocabulary tokens (Lester et al. 2021, §7: cosine, top-5).

Each prompt vector [H] is compared with the model's embedding *output* for every token id (`fm.embed`, so a
model that scales embeddings, like Gemma by √H, is compared in the space the prompt lives in). The summary
says which label words show up among the neighbours, at which positions, and how many positions share
their nearest token with another position (the paper saw clusters of near-identical vectors).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from softprompt.model.frozen import FrozenModel
from softprompt.model.prompt import SoftPrompt

VOCAB_CHUNK = 8192  # token ids embedded per call: bounds memory on large vocabularies


@dataclass
class Neighbour:
    """One vocabulary token near a prompt vector."""

    token_id: int
    token: str
    score: float


@torch.no_grad()
def vocab_embeddings(fm: FrozenModel, chunk: int = VOCAB_CHUNK) -> torch.Tensor:
    """`fm.embed` of every token id, fp32, unit-normalised: [V, H]."""
    rows = []
    for start in range(0, fm.vocab_size, chunk):
        ids = torch.arange(start, min(start + chunk, fm.vocab_size), device=fm.device)[None]
        rows.append(F.normalize(fm.embed(ids)[0].float(), dim=-1))
    return torch.cat(rows)


@torch.no_grad()
def nearest_tokens(fm: FrozenModel, prompt: SoftPrompt | torch.Tensor, k: int = 5) -> list[list[Neighbour]]:
    """For each of the P prompt vectors, its k nearest vocabulary tokens by cosine similarity, best first."""
    rows = prompt.embeddings if isinstance(prompt, SoftPrompt) else prompt
    if rows.shape[-1] != fm.hidden_size:
        raise ValueError(f"prompt width {rows.shape[-1]} != model width {fm.hidden_size}")
    sims = F.normalize(rows.detach().float().to(fm.device), dim=-1) @ vocab_embeddings(fm).T  # [P, V]
    scores, ids = sims.topk(min(k, fm.vocab_size), dim=-1)
    decode = fm.tokenizer.decode
    return [[Neighbour(int(i), decode([int(i)]), float(s)) for s, i in zip(srow, irow, strict=True)]
            for srow, irow in zip(scores.tolist(), ids.tolist(), strict=True)]


def label_token_ids(fm: FrozenModel, word: str) -> set[int]:
    """Token ids a label word may appear as: with and without a leading space (first token of each)."""
    ids = set()
    for text in (word, " " + word):
        tokens = fm.tokenizer(text, add_special_tokens=False).input_ids
        ids.update(tokens[:1])
    return ids


def summarize(fm: FrozenModel, neighbours: list[list[Neighbour]], label_words: list[str] | None) -> dict[str, Any]:
    """Label words among the neighbours (word -> positions), and how many positions share their top-1 token."""
    found: dict[str, list[int]] = {}
    for word in label_words or []:
        ids = label_token_ids(fm, word)
        found[word] = [pos for pos, row in enumerate(neighbours) if any(n.token_id in ids for n in row)]
    top1 = Counter(row[0].token_id for row in neighbours if row)
    shared = {tid: count for tid, count in top1.items() if count > 1}
    return {
        "positions": len(neighbours),
        "label_words": found,
        "shared_top1_positions": sum(shared.values()),
        "shared_top1_tokens": [{"token_id": tid, "token": fm.tokenizer.decode([tid]), "positions": count}
                               for tid, count in sorted(shared.items(), key=lambda kv: -kv[1])],
    }


def neighbors_report(fm: FrozenModel, prompt: SoftPrompt, k: int = 5) -> dict[str, Any]:
    """JSON-ready: every position's k neighbours with scores, and the summary (label words from metadata)."""
    rows = nearest_tokens(fm, prompt, k)
    return {
        "k": k,
        "task": prompt.metadata.get("task"),
        "neighbours": [[{"token_id": n.token_id, "token": n.token, "score": round(n.score, 4)} for n in row]
                       for row in rows],
        "summary": summarize(fm, rows, prompt.metadata.get("label_words")),
    }


def format_report(report: dict[str, Any]) -> str:
    """Plain text: one line per position (`  12  'great' 0.41 | ' good' 0.38 | ...`), then the summary."""
    lines = []
    for pos, row in enumerate(report["neighbours"]):
        lines.append(f"{pos:>4}  " + " | ".join(f"{n['token']!r} {n['score']:.3f}" for n in row))
    summary = report["summary"]
    for word, positions in summary["label_words"].items():
        where = ", ".join(map(str, positions)) if positions else "none"
        lines.append(f"label word {word!r} among the neighbours at positions: {where}")
    shared = ", ".join(f"{t['token']!r}×{t['positions']}" for t in summary["shared_top1_tokens"][:10])
    lines.append(f"{summary['shared_top1_positions']} of {summary['positions']} positions share their nearest token "
                 f"with another position{': ' + shared if shared else ''}")
    return "\n".join(lines)
