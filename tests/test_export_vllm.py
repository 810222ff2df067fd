"""vLLM export: shape and dtype, round trip, and the per-request concatenation gives the model exactly the
sequence softprompt's own path builds (so vLLM, fed it, sees what training saw)."""

from __future__ import annotations

import json

import pytest
import torch
from tiny import tiny_causal, tiny_seq2seq

from softprompt.interop.vllm import export_vllm, load_vllm_prompt, request_embeds, sidecar_path
from softprompt.model.attach import attach_causal
from softprompt.model.prompt import PromptFileError
from softprompt.scoring import generate
from softprompt.training.init import make_prompt

TEXT = "premise : a man is walking . hypothesis : someone moves"


@pytest.mark.parametrize("dtype", ["bfloat16", "float16", "float32"])
def test_shape_dtype_and_round_trip(tmp_path, dtype):
    fm = tiny_causal()
    prompt = make_prompt(fm, 6, "class-labels", labels=["yes", "no"], task="rte")
    prompt.metadata["metrics"] = {"accuracy": 0.75}
    prompt.save(tmp_path / "rte.safetensors")
    out = export_vllm(tmp_path / "rte.safetensors", tmp_path / "rte.vllm.safetensors", dtype=dtype)
    rows, meta = load_vllm_prompt(out)
    assert rows.shape == (6, fm.hidden_size) and rows.dtype == getattr(torch, dtype)
    assert torch.equal(rows, prompt.embeddings.detach().to(rows.dtype))
    side = json.loads(sidecar_path(out).read_text())
    assert side == meta and side["shape"] == [6, 32] and side["dtype"] == dtype and side["after_bos"] is True
    assert side["fingerprint"] == fm.fingerprint and side["label_words"] == ["yes", "no"]
    assert side["metrics"] == {"accuracy": 0.75} and side["task"] == "rte"


@pytest.mark.parametrize("add_bos", [True, False])
def test_request_embeds_match_softprompts_own_layout_and_generation(tmp_path, add_bos):
    fm = tiny_causal(add_bos=add_bos)
    prompt = make_prompt(fm, 5, "random-uniform", seed=3)
    prompt.save(tmp_path / "p.safetensors")
    rows, meta = load_vllm_prompt(export_vllm(tmp_path / "p.safetensors", tmp_path / "p.safetensors.vllm.safetensors",
                                              dtype="float32"))
    embeds = request_embeds(rows, meta, fm.tokenizer, fm.model.get_input_embeddings(), TEXT)
    ids = fm.tokenizer(TEXT, return_tensors="pt")
    want = attach_causal(fm.embed(ids.input_ids), ids.attention_mask, [prompt.as_input(fm.dtype, fm.device)],
                         after_bos=fm.adds_bos).inputs_embeds[0]
    assert embeds.shape == (prompt.length + ids.input_ids.shape[1], fm.hidden_size)
    assert torch.equal(embeds, want)
    # What vLLM does with prompt_embeds: positions 0..L-1, greedy decoding. HF generate does the same.
    out = fm.model.generate(inputs_embeds=embeds[None], attention_mask=torch.ones(1, len(embeds), dtype=torch.long),
                            max_new_tokens=6, do_sample=False, pad_token_id=fm.tokenizer.pad_token_id)
    text = fm.tokenizer.decode(out[0], skip_special_tokens=True).strip()
    assert text == generate(fm, [TEXT], prompt, max_new_tokens=6, stop_at_newline=False)[0]


def test_refuses_seq2seq_bad_dtype_and_bad_files(tmp_path):
    make_prompt(tiny_seq2seq(), 4, "random-uniform").save(tmp_path / "t5.safetensors")
    with pytest.raises(PromptFileError, match="seq2seq"):
        export_vllm(tmp_path / "t5.safetensors", tmp_path / "out.safetensors")
    make_prompt(tiny_causal(), 4, "random-uniform").save(tmp_path / "p.safetensors")
    with pytest.raises(PromptFileError, match="dtype 'int8'"):
        export_vllm(tmp_path / "p.safetensors", tmp_path / "out.safetensors", dtype="int8")
    with pytest.raises(PromptFileError, match="must end in .safetensors"):
        export_vllm(tmp_path / "p.safetensors", tmp_path / "out.pt")
    with pytest.raises(PromptFileError, match="not a softprompt vLLM export"):
        load_vllm_prompt(tmp_path / "p.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"junk")
    with pytest.raises(PromptFileError, match="not a readable"):
        load_vllm_prompt(tmp_path / "junk.safetensors")
