"""THE forward family, once: run the frozen model with prompts in front of inputs and read log-probabilities
(training's loss, rank classification, serving) or greedy continuations.

    inputs.py   what the model reads: Encoded pairs, padding, input cutting, the BOS rule, prompt rows
    prefix.py   a prefix (BOS + prompt) run once; PrefixCache: one state per prompt
    layout.py   batch layouts on cached prefixes (packing, stacked caches, segment masks)
    head.py     the LM head, only where it is read
    logprobs.py per-token log-probabilities: plain, shared-prefix and seq2seq paths
    packed.py   every choice of many inputs in packed rows on cached prefixes
    router.py   the one decision: context check, then the path (target_logprobs, score_encoded, score_choices)
    decode.py   the one greedy decoder (generate, generate_ids)
    continuous.py  a running decode batch that requests join and leave between steps (serving's scheduler)
"""

from softprompt.scoring.decode import generate, generate_ids
from softprompt.scoring.inputs import (
    Encoded,
    InputTooLongError,
    PromptSpec,
    cut_input,
    encode_pair,
    one_token_choices_row,
    pad,
    strip_bos,
    with_bos,
)
from softprompt.scoring.prefix import PrefixCache
from softprompt.scoring.router import score_choices, score_encoded, target_logprobs

__all__ = ["Encoded", "InputTooLongError", "PrefixCache", "PromptSpec", "cut_input", "encode_pair", "generate",
           "generate_ids", "one_token_choices_row", "pad", "score_choices", "score_encoded", "strip_bos",
           "target_logprobs", "with_bos"]
