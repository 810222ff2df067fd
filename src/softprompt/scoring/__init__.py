"""THE forward family, once: run the frozen model with prompts in front of inputs and read log-probabilities
(training's loss, rank classification, serving) or greedy continuations."""

from softprompt.scoring.logprobs import (
    Encoded,
    InputTooLongError,
    PromptSpec,
    encode_pair,
    generate,
    one_token_choices_row,
    pad,
    score_choices,
    score_encoded,
    target_logprobs,
)

__all__ = ["Encoded", "InputTooLongError", "PromptSpec", "encode_pair", "generate", "one_token_choices_row", "pad",
           "score_choices", "score_encoded", "target_logprobs"]
