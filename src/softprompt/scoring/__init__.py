"""THE forward family, once: run the frozen model with prompts in front of inputs and read log-probabilities
(training's loss, rank classification, serving) or greedy continuations."""

from softprompt.scoring.inputs import (
    Encoded,
    InputTooLongError,
    PromptSpec,
    cut_input,
    encode_pair,
    one_token_choices_row,
    pad,
)
from softprompt.scoring.logprobs import generate, score_choices, score_encoded, target_logprobs

__all__ = ["Encoded", "InputTooLongError", "PromptSpec", "cut_input", "encode_pair", "generate", "one_token_choices_row", "pad",
           "score_choices", "score_encoded", "target_logprobs"]
