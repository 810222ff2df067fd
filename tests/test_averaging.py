"""--average-decay: the run evaluates and saves an EMA of the prompt's rows; training itself is unchanged."""

from __future__ import annotations

import pytest
import torch
from safetensors import safe_open
from test_train import config
from tiny import tiny_causal

from softprompt.model.prompt import SoftPrompt
from softprompt.training.config import ConfigError
from softprompt.training.loop import train
from softprompt.training.rundir import RunDir


def rows_by_step(tmp_path, **overrides) -> tuple[list[torch.Tensor], RunDir]:
    seen: list[torch.Tensor] = []
    result = train(config(tmp_path, lr_schedule="constant", lr=0.3, **overrides), fm=tiny_causal(), progress=False,
                   on_step=lambda state, prompt: seen.append(prompt.embeddings.detach().clone()))
    return seen, RunDir(result.out_dir)


def test_the_saved_prompt_is_the_average_of_the_raw_trajectory(tmp_path):
    raw, plain_dir = rows_by_step(tmp_path / "plain")
    shown, avg_dir = rows_by_step(tmp_path / "avg", average_decay=0.5)
    expected = SoftPrompt.load(plain_dir.init_prompt).embeddings.clone()
    for step, rows in enumerate(raw, start=1):
        d = min(0.5, (1 + step) / (10 + step))
        expected = d * expected + (1 - d) * rows
        torch.testing.assert_close(shown[step - 1], expected, atol=1e-6, rtol=1e-6)  # on_step sees the average
    assert not torch.allclose(expected, raw[-1], atol=1e-4)  # the average is not the last rows
    torch.testing.assert_close(SoftPrompt.load(avg_dir.last_prompt).embeddings, expected, atol=1e-6, rtol=1e-6)
    # The rows trained exactly as without averaging: the checkpoint's raw prompt is the plain run's.
    with safe_open(str(avg_dir.checkpoint), framework="pt") as f:
        torch.testing.assert_close(f.get_tensor("param.prompt"), raw[-1])
        torch.testing.assert_close(f.get_tensor("param.average"), expected, atol=1e-6, rtol=1e-6)


def test_a_resumed_run_continues_the_average(tmp_path):
    straight, _ = rows_by_step(tmp_path / "straight", average_decay=0.9, steps=6)
    rows_by_step(tmp_path / "split", average_decay=0.9, steps=3)
    resumed: list[torch.Tensor] = []
    train(config(tmp_path / "split", lr_schedule="constant", lr=0.3, average_decay=0.9, steps=6), fm=tiny_causal(),
          resume=True, progress=False, on_step=lambda state, prompt: resumed.append(prompt.embeddings.detach().clone()))
    assert len(resumed) == 3
    torch.testing.assert_close(resumed[-1], straight[-1], atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("overrides", [dict(average_decay=1.0), dict(average_decay=0.0),
                                       dict(average_decay=0.9, method="model-tuning")])
def test_bad_decays_are_refused(tmp_path, overrides):
    with pytest.raises(ConfigError, match="average_decay"):
        config(tmp_path, **overrides)
