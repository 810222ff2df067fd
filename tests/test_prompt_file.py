"""Prompt files: safetensors round trip, metadata, refusal on the wrong model, atomic writes."""

from __future__ import annotations

import pickle

import pytest
import torch
from safetensors.torch import save_file
from tiny import tiny_causal

from softprompt.errors import UsageError
from softprompt.model.prompt import PromptFileError, SoftPrompt
from softprompt.training.init import make_prompt


def test_round_trip_keeps_values_and_metadata(tmp_path):
    fm = tiny_causal()
    prompt = make_prompt(fm, 7, "class-labels", labels=["positive", "negative"], task="sst2")
    prompt.metadata["metrics"] = {"accuracy": 0.9}
    path = prompt.save(tmp_path / "sst2.safetensors")
    back = SoftPrompt.load(path, model=fm)
    assert torch.equal(back.embeddings, prompt.embeddings) and back.embeddings.dtype == torch.float32
    assert back.metadata["label_words"] == ["positive", "negative"]
    assert back.metadata["metrics"] == {"accuracy": 0.9}
    assert back.metadata["fingerprint"] == fm.fingerprint and back.metadata["hidden_size"] == 32
    assert "softprompt_version" in back.metadata
    assert path.stat().st_size < 8_000  # a few KB per task


def test_fingerprint_ignores_dtype_but_not_weights():
    assert tiny_causal(seed=0).fingerprint == tiny_causal(seed=0, dtype=torch.bfloat16).fingerprint
    assert tiny_causal(seed=0).fingerprint != tiny_causal(seed=1).fingerprint


def test_loading_onto_another_model_fails_clearly(tmp_path):
    path = make_prompt(tiny_causal(seed=0), 3, "random-uniform").save(tmp_path / "a.safetensors")
    with pytest.raises(PromptFileError, match="was trained on 'tiny-llama-0'.*the model now loaded is 'tiny-llama-1'"):
        SoftPrompt.load(path, model=tiny_causal(seed=1))


def test_another_model_under_the_same_name_is_called_a_different_model(tmp_path):
    path = make_prompt(tiny_causal(seed=0), 3, "random-uniform").save(tmp_path / "a.safetensors")
    other = tiny_causal(seed=1)
    other.name = "tiny-llama-0"  # e.g. 'default' after the packaged file changed
    with pytest.raises(PromptFileError, match="'tiny-llama-0' is a different one with the same name") as err:
        SoftPrompt.load(path, model=other)
    assert "not on 'tiny-llama-0'" not in str(err.value)


def test_wrong_width_fails_clearly(tmp_path):
    path = SoftPrompt(torch.zeros(3, 8)).save(tmp_path / "w.safetensors")
    with pytest.raises(PromptFileError, match="H=8 but model 'tiny-llama-0' has H=32"):
        SoftPrompt.load(path, model=tiny_causal())


def test_corrupt_and_foreign_files_are_refused(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(PromptFileError, match="not a readable safetensors"):
        SoftPrompt.load(bad)
    with pytest.raises(PromptFileError, match="not found"):
        SoftPrompt.load(tmp_path / "missing.safetensors")


def test_nan_prompt_is_not_saved_and_old_file_survives(tmp_path):
    path = SoftPrompt(torch.ones(2, 4)).save(tmp_path / "p.safetensors")
    broken = SoftPrompt(torch.full((2, 4), float("nan")))
    with pytest.raises(PromptFileError, match="NaN"):
        broken.save(path)
    assert torch.equal(SoftPrompt.load(path).embeddings, torch.ones(2, 4))
    assert [p.name for p in tmp_path.iterdir()] == ["p.safetensors"]  # no temp files left behind


def _pickle_as_u8() -> torch.Tensor:
    """A pickle that would run code if anyone unpickled it, stored as raw bytes in a U8 tensor."""
    payload = pickle.dumps(ExecOnLoad())
    return torch.frombuffer(bytearray(payload), dtype=torch.uint8).reshape(1, -1)


class ExecOnLoad:
    def __reduce__(self):
        return (exec, ("raise SystemExit('the pickle ran')",))


@pytest.mark.parametrize(("tensor", "pattern"), [
    (torch.randn(576), r"a soft prompt is a \[P, H\] matrix; got shape \[576\] \(rank 1\)"),
    (torch.randn(2, 3, 4), r"got shape \[2, 3, 4\] \(rank 3\)"),
    (torch.zeros(0, 32), r"at least one vector .*got shape \[P=0, H=32\]"),
    (_pickle_as_u8(), r"'prompt_embeddings' has dtype U8; a soft prompt is floating point"),
    (torch.ones(2, 32, dtype=torch.int64), r"has dtype I64; a soft prompt is floating point"),
    (torch.full((2, 32), float("nan")), r"64 of the prompt's 64 values are NaN or inf; the file is corrupt"),
    (torch.tensor([[0.5] * 31 + [float("inf")]]), r"1 of the prompt's 32 values are NaN or inf"),
])
def test_malformed_prompt_tensors_are_refused_on_load(tmp_path, tensor, pattern):
    path = tmp_path / "bad.safetensors"
    save_file({"prompt_embeddings": tensor.contiguous()}, str(path))
    with pytest.raises(PromptFileError, match=pattern) as err:
        SoftPrompt.load(path, model=tiny_causal())
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_float_dtypes_other_than_fp32_load_as_fp32(tmp_path):
    for dtype in (torch.float16, torch.bfloat16, torch.float64):
        path = tmp_path / f"{dtype}.safetensors"
        save_file({"prompt_embeddings": torch.ones(3, 32, dtype=dtype)}, str(path))
        assert SoftPrompt.load(path, model=tiny_causal()).embeddings.dtype == torch.float32


def test_an_empty_prompt_cannot_be_built():
    with pytest.raises(UsageError, match=r"got shape \[P=0, H=8\]"):
        SoftPrompt(torch.zeros(0, 8))
