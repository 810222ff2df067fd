"""Baselines that train nothing: zero-shot (no prompt) and "prompt design" (GPT-3 style).

Prompt design puts a text instruction and k solved training examples before every input:

    <instruction>

    <input of shot 1>
    answer: <target of shot 1>

    ...

    <input of the example to answer>
    answer:

The "answer:" cue is added only to designed prompts (zero-shot and soft prompts see the task's plain
text-to-text input): without it a frozen LM reads "sentence: ... ." as finished and writes a newline, so
greedy decoding would never reach the label word.

The same k shots (drawn once, seeded) serve every evaluated example, so results are reproducible and the
design text is a token prefix common to every input: scoring runs it once per batch and puts each input on
top of its keys/values (`scoring.common_prefix_length`), as it does for a soft prompt. Shots are separated
by a blank line; generation stops at the first newline, so a model that continues the pattern stops after
its answer.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from softprompt.tasks.base import ANSWER_CUE, Example, Task, TaskError

SEPARATOR = "\n\n"
CUE = ANSWER_CUE


def draw_shots(task: Task, k: int, seed: int = 0, data_dir: str | Path | None = None,
               split: str = "train", pool: Sequence[Example] | None = None) -> list[Example]:
    """k labelled examples drawn without replacement from `split` (or from `pool`, e.g. train without a
    held-out selection split) with `random.Random(seed)`."""
    if k <= 0:
        return []
    pool = [ex for ex in (task.examples(split, data_dir) if pool is None else pool) if ex.target_text]
    if len(pool) < k:
        raise TaskError(f"--shots {k}: task {task.name!r} has only {len(pool)} labelled {split} examples")
    return random.Random(seed).sample(pool, k)


def design_prefix(instruction: str | None = None, shots: Sequence[Example] = (), cue: str = CUE) -> str:
    """The text put before every input: instruction, then each shot as "input<cue> target", blank-line separated."""
    parts = [instruction.strip()] if instruction and instruction.strip() else []
    parts += [f"{with_cue(ex.input_text, cue)} {ex.target_text}" for ex in shots]
    return SEPARATOR.join(parts) + SEPARATOR if parts else ""


def design_inputs(
    inputs: Sequence[str], instruction: str | None = None, shots: Sequence[Example] = (), cue: str = CUE
) -> list[str]:
    """Every input with the prompt-design prefix before it and the cue after it (unchanged without a design)."""
    prefix = design_prefix(instruction, shots, cue)
    if not prefix:
        return list(inputs)
    return [prefix + with_cue(text, cue) for text in inputs]


def with_cue(text: str, cue: str) -> str:
    """Built-in tasks' inputs already end in the answer cue; add it only where it is missing."""
    return text if text.endswith(cue) else text + cue


def majority_index(task: Task, data_dir: str | Path | None = None, split: str = "train",
                   examples: Sequence[Example] | None = None) -> int:
    """The choice index most often gold in `split` (or in `examples`; ties: the lower index): the majority-class
    baseline's answer. For label-word tasks it indexes `task.label_words`; for COPA-style tasks, each example's
    choices."""
    source = task.examples(split, data_dir) if examples is None else examples
    counts = Counter(ex.label for ex in source if ex.label is not None)
    if not counts:
        raise TaskError(f"task {task.name!r} has no labelled {split} examples with choices: no majority class")
    return max(sorted(counts), key=counts.__getitem__)


def majority_predictions(task: Task, examples: Sequence[Example], index: int) -> list[str]:
    """Every example answered with choice `index` (the majority class), as the task's metrics expect."""
    return [(ex.choices or task.label_words)[index] for ex in examples]
