"""Init strategies (paper §3.2): the rows are what each strategy promises."""

from __future__ import annotations

import pytest
import torch

from softprompt.training.init import InitError, common_token_ids, embed_ids, label_token_ids, make_prompt


def test_random_uniform_range_and_shape(fm):
    prompt = make_prompt(fm, 50, "random-uniform", scale=0.5)
    assert prompt.embeddings.shape == (50, fm.hidden_size)
    assert prompt.embeddings.dtype == torch.float32
    assert prompt.embeddings.abs().max() <= 0.5 and prompt.embeddings.std() > 0.2
    assert prompt.num_parameters == 50 * fm.hidden_size


def test_sampled_vocab_rows_come_from_the_top_n_set(fm):
    top = common_token_ids(fm, top_n=40)
    assert len(top) == 40 and not set(top) & set(fm.tokenizer.all_special_ids)
    prompt = make_prompt(fm, 30, "sampled-vocab", seed=3, top_n=40)
    table = embed_ids(fm, top)  # [40, H]
    for row in prompt.embeddings:
        assert torch.isclose(table, row).all(dim=1).any(), "row is not the embedding of a common token"
    assert len({tuple(r.tolist()) for r in prompt.embeddings}) == 30  # drawn without replacement


def test_sampled_vocab_counts_given_texts(fm):
    texts = ["great great great movie"] * 3
    ranked = common_token_ids(fm, texts, top_n=2)
    great = fm.tokenizer("great", add_special_tokens=False).input_ids
    assert ranked[0] == great[0]


def test_class_label_rows_are_mean_label_embeddings(fm):
    labels = ["positive", "not_entailment"]
    prompt = make_prompt(fm, 6, "class-labels", labels=labels, seed=1)
    for i, label in enumerate(labels):
        ids = label_token_ids(fm, label)
        torch.testing.assert_close(prompt.embeddings[i], embed_ids(fm, ids).mean(dim=0))
    assert len(label_token_ids(fm, "not_entailment")) > 1  # the multi-token case is exercised
    assert prompt.metadata["label_words"] == labels


def test_class_labels_need_enough_rows(fm):
    with pytest.raises(InitError, match="prompt length 1 < 2 labels"):
        make_prompt(fm, 1, "class-labels", labels=["yes", "no"])
    with pytest.raises(InitError, match="needs the label words"):
        make_prompt(fm, 5, "class-labels")


def test_text_init_tiles_and_cuts(fm):
    ids = fm.tokenizer("the movie", add_special_tokens=False).input_ids
    prompt = make_prompt(fm, 2 * len(ids) + 1, "text", text="the movie")
    expected = embed_ids(fm, (ids * 3)[: 2 * len(ids) + 1])
    torch.testing.assert_close(prompt.embeddings, expected)


def test_file_init_and_unknown_strategy(fm, tmp_path):
    original = make_prompt(fm, 4, "random-uniform", seed=9)
    original.save(tmp_path / "p.safetensors")
    copy = make_prompt(fm, 4, "file", path=tmp_path / "p.safetensors")
    torch.testing.assert_close(copy.embeddings, original.embeddings)
    with pytest.raises(InitError, match="choose one of: random-uniform"):
        make_prompt(fm, 4, "nope")
