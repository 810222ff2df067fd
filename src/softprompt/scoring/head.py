"""The LM head, run only where its output is read.

On a 49k vocabulary the head over all P+T positions would cost more than the 30 transformer layers, so
every path gathers the hidden states that predict a target token (or the next generated token) first and
runs the head on those rows alone.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from softprompt.model.frozen import FrozenModel
from softprompt.scoring.inputs import Encoded


def head_logits(fm: FrozenModel, hidden: torch.Tensor) -> torch.Tensor:
    """Hidden states [N, H] -> fp32 logits [N, V], with the model's own final softcapping if it has one."""
    logits = fm.model.get_output_embeddings()(hidden).float()
    cap = getattr(fm.model.config, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits


def logprobs_at(
    fm: FrozenModel, hidden: torch.Tensor, positions: Sequence[Sequence[int]], pairs: Sequence[Encoded]
) -> list[torch.Tensor]:
    """Run the LM head only on the hidden states [B, L, H] at `positions[b]` (one per target token of pair b)
    and return each target token's log-probability, one [T_tgt_b] tensor per pair ([len(read_ids)] for a
    pair with `read_ids`: those tokens, all read at its one target position)."""
    rows = [b for b, cols in enumerate(positions) for _ in cols]
    cols = [c for cols in positions for c in cols]
    picked = hidden[torch.tensor(rows, device=hidden.device), torch.tensor(cols, device=hidden.device)]  # [N, H]
    logprobs = F.log_softmax(head_logits(fm, picked), dim=-1)  # [N, V]: one row per target token
    reads = [p.read_ids or p.target_ids for p in pairs]
    starts = list(itertools.accumulate((len(c) for c in positions), initial=0))
    row_of = [starts[b] + (0 if p.read_ids else j) for b, p in enumerate(pairs) for j in range(len(reads[b]))]
    gold = [t for ids in reads for t in ids]
    token_lp = logprobs[torch.tensor(row_of, device=hidden.device), torch.tensor(gold, device=hidden.device)]
    return list(token_lp.split([len(ids) for ids in reads]))
