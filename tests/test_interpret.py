"""Nearest-neighbour reading of prompts: exact token embeddings come back as themselves with cosine 1."""

from __future__ import annotations

import torch
from tiny import tiny_causal

from softprompt.evaluation.interpret import format_report, nearest_tokens, neighbors_report, vocab_embeddings
from softprompt.model.prompt import SoftPrompt
from softprompt.training.init import embed_ids


def test_exact_token_embeddings_are_their_own_top1():
    fm = tiny_causal()
    ids = [fm.tokenizer(" positive", add_special_tokens=False).input_ids[0], 17, 42, 17]
    prompt = SoftPrompt(embed_ids(fm, ids), {"label_words": ["positive", "negative"]})
    rows = nearest_tokens(fm, prompt, k=3)
    assert [row[0].token_id for row in rows] == ids
    assert all(abs(row[0].score - 1.0) < 1e-5 and row[1].score < row[0].score for row in rows)
    assert len(rows) == 4 and all(len(row) == 3 for row in rows)

    report = neighbors_report(fm, prompt, k=3)
    assert report["summary"]["label_words"]["positive"] == [0]
    assert report["summary"]["shared_top1_positions"] == 2  # positions 1 and 3 are both token 17
    text = format_report(report)
    assert "label word 'positive' among the neighbours at positions: 0" in text
    assert "2 of 4 positions share" in text


def test_vocab_embeddings_chunking_matches_one_call():
    fm = tiny_causal()
    full = vocab_embeddings(fm, chunk=10_000)
    torch.testing.assert_close(vocab_embeddings(fm, chunk=7), full)
    assert full.shape == (fm.vocab_size, fm.hidden_size)
    norms = full.norm(dim=-1)
    # Unit rows, except the padding embedding, which is all zeros (padding_idx) and stays zero.
    assert torch.allclose(norms[1:], torch.ones(fm.vocab_size - 1)) and norms[0] == 0


def test_cli_neighbors(tmp_path):
    import json

    from typer.testing import CliRunner

    from softprompt.cli import app

    fm = tiny_causal(add_bos=False)
    fm.model.save_pretrained(tmp_path / "model")
    fm.tokenizer.save_pretrained(tmp_path / "model")
    prompt = SoftPrompt(embed_ids(fm, [17, 42]), {"label_words": ["positive"]})
    prompt.stamp(fm)
    prompt.save(tmp_path / "p.safetensors")
    args = ["neighbors", str(tmp_path / "p.safetensors"), "--model", str(tmp_path / "model"), "--k", "2"]
    done = CliRunner().invoke(app, [*args, "--json"])
    assert done.exit_code == 0, done.output
    report = json.loads(done.stdout)
    assert [row[0]["token_id"] for row in report["neighbours"]] == [17, 42] and len(report["neighbours"][0]) == 2
    assert "positions share their nearest token" in CliRunner().invoke(app, args).output
