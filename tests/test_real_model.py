"""End-to-end checks on the real default model (SmolLM2-135M-Instruct), loaded once per run."""

from __future__ import annotations

import json

import pytest

from softprompt.evaluation.evaluate import evaluate
from softprompt.model.prompt import SoftPrompt
from softprompt.scoring import generate
from softprompt.tasks import get_task
from softprompt.training.config import TrainConfig
from softprompt.training.loop import train

pytestmark = pytest.mark.slow  # and the real SST-2 files: the `real_data` fixture skips without them


def test_short_sst2_training_lowers_loss_and_raises_dev_accuracy(real_data, default_model, tmp_path):
    task = get_task("sst2")
    dev = task.examples("validation", real_data)[200:328]  # 128 sentences not used for model selection below
    before = evaluate(default_model, task, dev, prompt=None, batch_size=32, progress=False).metrics["accuracy"]
    # AdamW 0.03 (PEFT's recipe), not the paper's Adafactor: in 40 steps the paper's recipe mostly learns the
    # label prior, and whether it beats zero-shot by 5 points there depends on the seed and the machine's
    # dtype (bf16 CPU: passed; fp32 on an AVX2 CPU: 0.42 for seed 0, 0.50 for seed 1 against 0.41 zero-shot).
    # AdamW reached 0.59 / 0.74 (seeds 0 / 1) on the fp32 machine. The loss check holds for both recipes.
    # target_eos: the generate check below needs a prompt that learned to stop; the default recipe leaves the EOS
    # term out for rank-scored tasks like SST-2 (its prompts then say "positive positive ..." when generating).
    cfg = TrainConfig(task="sst2", prompt_length=20, batch_size=16, steps=40, eval_every=40, eval_limit=64,
                      optimizer="adamw", lr=0.03, target_eos=True, data_dir=str(real_data), out=str(tmp_path / "run"),
                      seed=0)
    result = train(cfg, fm=default_model, progress=False)
    log = [json.loads(line) for line in (result.out_dir / "metrics.jsonl").read_text().splitlines()]
    first, last = sum(r["loss"] for r in log[:5]) / 5, sum(r["loss"] for r in log[-5:]) / 5
    assert last < first / 2, (first, last)
    prompt = SoftPrompt.load(result.out_dir / "prompt.safetensors", model=default_model)
    after = evaluate(default_model, task, dev, prompt=prompt, batch_size=32, progress=False).metrics["accuracy"]
    assert after > before + 0.05, (before, after)
    # the trained prompt also works in generate mode: it learned to say the label word and stop
    words = generate(default_model, [ex.input_text for ex in dev[:16]], prompt, max_new_tokens=4)
    assert sum(w in ("positive", "negative") for w in words) >= 12, words
