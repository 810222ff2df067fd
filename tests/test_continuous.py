"""Continuous batching (scoring/continuous.py): rows that join and leave a running batch between decode steps
decode exactly what they decode alone (the uncached, unbatched full-forward reference)."""

from __future__ import annotations

import pytest
from test_scoring import full_forward_greedy
from tiny import tiny_causal

from softprompt.scoring.continuous import DecodeRow, RunningBatch
from softprompt.scoring.decode import StopRule
from softprompt.scoring.inputs import strip_bos
from softprompt.scoring.prefix import PrefixCache
from softprompt.training.init import make_prompt


def rows_for(fm, prefixes, prompts, texts, limits, done, start):
    """DecodeRows that record their tokens in done[start + k] when they leave."""
    return [DecodeRow(strip_bos(fm, fm.tokenizer(t).input_ids), prefixes.get(p), n, StopRule(newline=False, eos=False),
                      on_done=lambda tokens, k=k: done.__setitem__(k, tokens))
            for k, (p, t, n) in enumerate(zip(prompts, texts, limits, strict=True), start=start)]


@pytest.mark.parametrize("add_bos", [True, False])
def test_rows_joining_and_leaving_mid_decode_match_the_full_forward_reference(add_bos):
    fm = tiny_causal(add_bos=add_bos)
    prefixes = PrefixCache(fm)
    prompts = [make_prompt(fm, p, "random-uniform", seed=p, scale=5.0) for p in (2, 6, 3, 4, 2)]
    texts = ["the movie", "a terrible film , boring and far too long , and then some more words", "what",
             "it was fine", "good"]
    limits = [5, 2, 7, 4, 6]
    batch, done = RunningBatch(fm), {}
    batch.admit(rows_for(fm, prefixes, prompts[:2], texts[:2], limits[:2], done, 0))
    widths = []
    for _ in range(3):  # row 1 (limit 2) leaves during these steps: its slots at the front go with it
        batch.step()
        widths.append(batch.width)
    assert list(done) == [1] and len(batch) == 1
    # three rows join a row that has already decoded 3 tokens
    batch.admit(rows_for(fm, prefixes, prompts[2:], texts[2:], limits[2:], done, 2))
    while len(batch):
        batch.step()
    expected = [full_forward_greedy(fm, p, t, n) for p, t, n in zip(prompts, texts, limits, strict=True)]
    assert [done[k] for k in range(5)] == expected
    # once the long row left, the cache holds the short row's own slots only (its prefix padding went too):
    # its prefix, its input, and the 3 tokens fed back so far
    ids0 = strip_bos(fm, fm.tokenizer(texts[0]).input_ids)
    assert widths[-1] == prefixes.get(prompts[0]).length + len(ids0) + 3 < widths[0]


def test_zero_limit_rows_finish_at_once_and_eos_is_dropped_where_it_stops_a_row():
    fm = tiny_causal()
    prefixes = PrefixCache(fm)
    prompt = make_prompt(fm, 5, "random-uniform", seed=1, scale=5.0)
    reference = full_forward_greedy(fm, prompt, "the movie was", 6)
    fm.tokenizer.eos_token = fm.tokenizer.convert_ids_to_tokens(reference[1])  # greedy now "ends" at token 2
    done = {}
    ids = strip_bos(fm, fm.tokenizer("the movie was").input_ids)
    batch = RunningBatch(fm)
    finished = batch.admit([DecodeRow(ids, prefixes.get(prompt), 0, on_done=lambda t: done.__setitem__("zero", t)),
                            DecodeRow(ids, prefixes.get(prompt), 6, StopRule(newline=False),
                                      on_done=lambda t: done.__setitem__("eos", t))])
    assert [r.limit for r in finished] == [0] and done == {"zero": []}
    while len(batch):
        batch.step()
    assert done["eos"] == reference[: reference.index(reference[1])]


def test_supported_models_are_decoder_only_without_an_attention_window():
    assert RunningBatch.supports(tiny_causal())


def test_rows_of_very_different_lengths_prefill_in_groups_and_decode_as_alone(monkeypatch):
    from softprompt.scoring import continuous

    fm = tiny_causal()
    prefixes = PrefixCache(fm)
    prompts = [make_prompt(fm, p, "random-uniform", seed=p, scale=5.0) for p in (2, 4, 3, 5)]
    long_text = " ".join(["a terrible film , boring and far too long"] * 12)
    texts = ["the movie", long_text, "what", "it was fine"]
    limits = [6, 4, 5, 3]
    calls: list[int] = []
    fill = continuous.fill_cached
    monkeypatch.setattr(continuous, "fill_cached", lambda fm, ids, states: calls.append(len(ids)) or fill(fm, ids, states))
    batch, done = RunningBatch(fm), {}
    batch.admit(rows_for(fm, prefixes, prompts[:1], texts[:1], limits[:1], done, 0))
    batch.step()
    batch.admit(rows_for(fm, prefixes, prompts[1:], texts[1:], limits[1:], done, 1))  # one call, three rows
    while len(batch):
        batch.step()
    assert calls[0] == 1 and sorted(calls[1:]) == [1, 2]  # the long input prefills apart from the two short ones
    expected = [full_forward_greedy(fm, p, t, n) for p, t, n in zip(prompts, texts, limits, strict=True)]
    assert [done[k] for k in range(4)] == expected
