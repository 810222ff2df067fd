"""Target formats for span-corruption seq2seq checkpoints (the paper's objective study, §3.2, Figure 3(c)).

A T5 1.1-style checkpoint was pretrained on span corruption only: its decoder has only ever produced
sentinel-delimited spans, "<extra_id_0> span <extra_id_1> ...". Asked for a plain "positive" it is far from
its pretraining output format, and the paper finds prompt tuning on such a model unstable and weak. Two fixes:

- "span corruption + sentinel" (`--target-sentinel`, here): every target starts with the first sentinel,
  "<extra_id_0> positive", so the model keeps its pretraining output format. Training, rank scoring and
  generation all use the same target format; the prefix is recorded in the prompt file (`target_prefix`)
  and evaluation reads it from there.
- "LM adaptation" (`softprompt lm-adapt`, see `lm_adapt.py`): continue training the whole model with a
  prefix-LM objective first, so it learns to output plain text. The paper's best setting.

Decoder-only LMs need neither: their pretraining objective already is language modelling.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from softprompt.errors import UsageError

if TYPE_CHECKING:
    from softprompt.model.frozen import FrozenModel

SENTINEL = "<extra_id_0>"
_SENTINEL_RE = re.compile(r"<extra_id_\d+>")


class ObjectiveError(UsageError):
    """A target format or objective that does not fit the model; the message says why and what to do."""


def sentinel_id(fm: FrozenModel) -> int:
    """The token id of `<extra_id_0>`; refuses decoder-only models and tokenizers that lack the token."""
    if not fm.is_seq2seq:
        raise ObjectiveError(
            f"--target-sentinel is for span-corruption seq2seq checkpoints (T5 1.1 style); {fm.name} is a "
            "decoder-only LM and needs neither the sentinel nor LM adaptation: its pretraining objective "
            "already is language modelling"
        )
    token_id = fm.tokenizer.get_vocab().get(SENTINEL)
    if token_id is None:
        raise ObjectiveError(
            f"--target-sentinel needs the sentinel token {SENTINEL!r} in the tokenizer of {fm.name}, and it has "
            "none: the model was not pretrained with span corruption, so drop --target-sentinel"
        )
    return int(token_id)


def target_prefix(fm: FrozenModel, enabled: bool = True) -> str:
    """The text put before every target: `"<extra_id_0> "` when enabled (checked against the model), else ""."""
    if not enabled:
        return ""
    sentinel_id(fm)
    return SENTINEL + " "


def strip_sentinels(text: str) -> str:
    """A generated target back to its answer: drop the leading sentinel and cut at the next one
    ("<extra_id_0> positive <extra_id_1> ..." -> "positive")."""
    text = text.strip()
    if text.startswith(SENTINEL):
        text = text[len(SENTINEL):]
    return _SENTINEL_RE.split(text, maxsplit=1)[0].strip()


def prompt_target_prefix(prompt: Any) -> str:
    """The target prefix a trained prompt was trained with ("" for prompts without one, or no prompt)."""
    if prompt is None:
        return ""
    return str(getattr(prompt, "metadata", {}).get("target_prefix") or "")
