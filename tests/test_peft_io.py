"""PEFT adapter export/import: PEFT loads our export and gives the same logits (≤1e-4)."""

from __future__ import annotations

import json

import pytest
import torch
from tiny import tiny_causal, tiny_seq2seq

from softprompt.interop.peft import export_peft, import_peft
from softprompt.model.prompt import PromptFileError
from softprompt.scoring import encode_pair, target_logprobs
from softprompt.training.init import make_prompt

peft = pytest.importorskip("peft")


def test_exported_prompt_gives_the_same_causal_logits_in_peft(tmp_path):
    fm = tiny_causal(add_bos=False)  # PEFT puts prompts before BOS; with no BOS the layouts agree
    prompt = make_prompt(fm, 6, "random-uniform", seed=4)
    export_peft(prompt.save(tmp_path / "p.safetensors"), tmp_path / "adapter")
    assert json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())["num_virtual_tokens"] == 6
    peft_model = peft.PeftModel.from_pretrained(fm.model, tmp_path / "adapter")
    pair = encode_pair(fm, "the movie was great", "positive")
    ids = torch.tensor([pair.input_ids + pair.target_ids])
    with torch.no_grad():
        theirs = peft_model(input_ids=ids).logits[0, 6:]  # PEFT returns P extra logits first
        theirs = theirs.float().log_softmax(-1)[len(pair.input_ids) - 1: -1]
        gold = theirs.gather(1, torch.tensor(pair.target_ids).unsqueeze(1)).squeeze(1)
        ours = target_logprobs(fm, [pair], prompt)[0]
    torch.testing.assert_close(ours, gold, atol=1e-4, rtol=0)


def test_exported_prompt_gives_the_same_seq2seq_loss_in_peft(tmp_path):
    fm = tiny_seq2seq()
    prompt = make_prompt(fm, 4, "random-uniform", seed=2)
    export_peft(prompt.save(tmp_path / "p.safetensors"), tmp_path / "adapter")
    peft_model = peft.PeftModel.from_pretrained(fm.model, tmp_path / "adapter")
    pair = encode_pair(fm, "premise : a man is walking", "entailment")
    with torch.no_grad():
        out = peft_model(input_ids=torch.tensor([pair.input_ids]), labels=torch.tensor([pair.target_ids]))
        ours = target_logprobs(fm, [pair], prompt)[0]
    torch.testing.assert_close(-ours.mean(), out.loss, atol=1e-4, rtol=0)


def test_import_round_trip_and_refusals(tmp_path):
    fm = tiny_causal()
    prompt = make_prompt(fm, 5, "random-uniform")
    export_peft(prompt.save(tmp_path / "p.safetensors"), tmp_path / "adapter")
    back = import_peft(tmp_path / "adapter", fm)
    assert torch.equal(back.embeddings, prompt.embeddings) and back.metadata["fingerprint"] == fm.fingerprint
    (tmp_path / "lora").mkdir()
    (tmp_path / "lora" / "adapter_config.json").write_text('{"peft_type": "LORA"}')
    (tmp_path / "lora" / "adapter_model.safetensors").write_bytes(b"")
    with pytest.raises(PromptFileError, match="LORA adapter"):
        import_peft(tmp_path / "lora")
