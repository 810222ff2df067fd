"""Scoring and generation with prompts: agreement with plain full-model computations."""

from __future__ import annotations

import pytest
import torch
from tiny import tiny_causal, tiny_seq2seq

from softprompt.scoring import InputTooLongError, encode_pair, generate, score_choices
from softprompt.training.init import make_prompt


def full_forward_greedy(fm, prompt, text, steps):
    """Reference: recompute the whole sequence (prompt + input + generated) every step, no cache."""
    ids = fm.tokenizer(text).input_ids
    rows = prompt.as_input(fm.dtype, fm.device)
    out = []
    for _ in range(steps):
        emb = fm.embed(torch.tensor([ids + out]))[0]
        k = 1 if fm.adds_bos else 0
        seq = torch.cat([emb[:k], rows, emb[k:]]).unsqueeze(0)
        with torch.no_grad():
            out.append(int(fm.model(inputs_embeds=seq).logits[0, -1].argmax()))
    return out


@pytest.mark.parametrize("add_bos", [True, False])
def test_generation_keeps_the_prompt_in_the_kv_cache(add_bos):
    fm = tiny_causal(add_bos=add_bos)
    prompt = make_prompt(fm, 5, "random-uniform", seed=1, scale=5.0)  # large enough to change the output
    text = "the movie was"
    expected = full_forward_greedy(fm, prompt, text, 6)
    got = generate(fm, [text], prompt, max_new_tokens=6, stop_at_newline=False)[0]
    assert got == fm.tokenizer.decode(expected, skip_special_tokens=True).strip()
    # and the prompt matters: without it the continuation differs
    assert generate(fm, [text], None, max_new_tokens=6, stop_at_newline=False)[0] != got


@pytest.mark.parametrize("cached", [False, True])
def test_decoding_past_eos_goes_on_to_the_limit_and_keeps_the_eos(cached):
    """stop_at_eos=False (the OpenAI route's ignore_eos) is the same greedy sequence, not cut at EOS."""
    from softprompt.scoring import generate_ids
    from softprompt.scoring.prefix import PrefixCache

    fm = tiny_causal()
    prompt = make_prompt(fm, 5, "random-uniform", seed=1, scale=5.0)
    reference = full_forward_greedy(fm, prompt, "the movie was", 6)
    fm.tokenizer.eos_token = fm.tokenizer.convert_ids_to_tokens(reference[1])  # greedy now "ends" early
    ids, prefixes = [fm.tokenizer("the movie was").input_ids], PrefixCache(fm) if cached else None
    stopped = reference[: reference.index(reference[1])]
    assert generate_ids(fm, ids, prompt, 6, False, prefixes=prefixes) == [stopped]
    assert generate_ids(fm, ids, prompt, 6, False, prefixes=prefixes, stop_at_eos=False) == [reference]


def test_batched_generation_matches_one_at_a_time():
    fm = tiny_causal()
    prompts = [make_prompt(fm, p, "random-uniform", seed=p) for p in (2, 6)]
    texts = ["the movie", "a terrible film , boring and far too long"]
    batched = generate(fm, texts, prompts, max_new_tokens=5, stop_at_newline=False)
    alone = [generate(fm, [t], p, max_new_tokens=5, stop_at_newline=False)[0] for t, p in zip(texts, prompts, strict=True)]
    assert batched == alone


@pytest.mark.parametrize("cached", [False, True])
def test_one_batch_of_mixed_lengths_limits_and_prompts_matches_the_full_forward_reference(cached):
    """The decoder batches rows with different input lengths, limits and prompts together (each row stops at its
    own limit); each row's tokens are the uncached, unbatched greedy ones."""
    from softprompt.scoring import generate_ids
    from softprompt.scoring.prefix import PrefixCache

    fm = tiny_causal()
    prompts = [make_prompt(fm, p, "random-uniform", seed=p, scale=5.0) for p in (2, 6, 3)]
    texts = ["the movie", "a terrible film , boring and far too long , and then some more words", "what"]
    limits = [5, 2, 7]
    got = generate_ids(fm, [fm.tokenizer(t).input_ids for t in texts], prompts, limits, False,
                       prefixes=PrefixCache(fm) if cached else None, stop_at_eos=False)
    assert got == [full_forward_greedy(fm, p, t, n) for p, t, n in zip(prompts, texts, limits, strict=True)]


def test_generation_groups_pay_for_their_decode_steps():
    """With 32 new tokens each, a 4-token and a 60-token input share one group (a second group would run 32
    more decode forwards); scoring-sized groups (no decode steps) still split them."""
    from softprompt.scoring.layout import FORWARD_OVERHEAD, split_by_length

    assert len(split_by_length([4, 60, 5, 61], 8)) == 2
    assert len(split_by_length([4, 60, 5, 61], 8, overhead=FORWARD_OVERHEAD * 33)) == 1


def test_seq2seq_generation_uses_the_prompt():
    fm = tiny_seq2seq()
    prompts = [make_prompt(fm, 8, "random-uniform", seed=s, scale=5.0) for s in (1, 2)]
    outs = {generate(fm, ["the movie was great"], p, max_new_tokens=4, stop_at_newline=False)[0] for p in prompts}
    assert len(outs) == 2


def test_score_choices_equals_summed_target_logprobs():
    fm = tiny_causal()
    prompt = make_prompt(fm, 3, "random-uniform")
    scores = score_choices(fm, ["the movie was great"], [["positive", "not_entailment"]], prompt, batch_size=1)
    pair = encode_pair(fm, "the movie was great", "not_entailment")
    rows = prompt.as_input(fm.dtype, fm.device)
    ids = pair.input_ids + pair.target_ids
    emb = fm.embed(torch.tensor([ids]))[0]
    seq = torch.cat([emb[:1], rows, emb[1:]]).unsqueeze(0)
    with torch.no_grad():
        logp = fm.model(inputs_embeds=seq).logits[0].log_softmax(-1)
    start = 3 + len(pair.input_ids) - 1
    expected = sum(float(logp[start + j, t]) for j, t in enumerate(pair.target_ids))
    assert scores[0][1] == pytest.approx(expected, abs=1e-4)


def test_too_long_input_is_a_clear_error():
    fm = tiny_causal()
    prompt = make_prompt(fm, 200, "random-uniform")
    with pytest.raises(InputTooLongError, match="> the model's context of 256"):
        score_choices(fm, ["the movie was great " * 20], [["positive"]], prompt)


@pytest.mark.parametrize("model", ["llama-bos", "gemma3"])
def test_one_token_choices_share_one_row_and_score_as_separate_rows(model, monkeypatch):
    """All choices of an input that are one token each are read from one row; the scores equal scoring
    each (input, choice) pair on its own row, and inputs with longer choices in the same call still work."""
    from tiny import tiny_gemma3

    import softprompt.scoring.router as router
    from softprompt.scoring import target_logprobs

    fm = tiny_gemma3() if model == "gemma3" else tiny_causal()
    text = "the movie was great"
    words = [w for w in ("the", "a", "was", "movie", "great", "film", "is") if len(encode_pair(fm, text, w).target_ids) == 1]
    assert len(words) >= 3
    inputs, choices = [text, "a terrible film", "is it good ?"], [words[:2], words[:3], [words[0], "not_entailment"]]
    prompt = make_prompt(fm, 3, "random-uniform", seed=4)
    rows: list[int] = []
    real = router.rows_logprobs
    monkeypatch.setattr(router, "rows_logprobs", lambda fm, pairs, rows_of: rows.append(len(pairs)) or real(fm, pairs, rows_of))
    monkeypatch.setattr(router, "_score_packed", lambda *a: {})  # the row-per-pair path
    for p in (prompt, None):
        rows.clear()
        got = score_choices(fm, inputs, choices, p, batch_size=16)
        assert rows == [1 + 1 + 2]  # two one-row inputs, one input with a multi-token choice: two rows
        for i, (t, opts) in enumerate(zip(inputs, choices, strict=True)):
            for c, w in enumerate(opts):
                with torch.no_grad():
                    alone = float(target_logprobs(fm, [encode_pair(fm, t, w)], p)[0].sum())
                assert got[i][c] == pytest.approx(alone, abs=1e-5)


@pytest.mark.parametrize("model", ["llama-bos", "llama", "gemma3-wide", "gemma3-window-12"])
def test_packed_choices_score_as_one_row_per_pair(model, monkeypatch):
    """Every choice of an input read off one packed row on a shared prefix (a soft prompt, or with no prompt
    the inputs' common leading tokens, here a long few-shot-like design) equals one row per (input, choice).
    Gemma-3 with a 12-token window: inputs that do not fit it take the plain path, and still match."""
    from tiny import tiny_gemma3

    import softprompt.scoring.router as router
    from softprompt.scoring import target_logprobs

    fm = {"llama-bos": lambda: tiny_causal(), "llama": lambda: tiny_causal(add_bos=False),
          "gemma3-wide": lambda: tiny_gemma3(sliding_window=256),
          "gemma3-window-12": lambda: tiny_gemma3(sliding_window=12)}[model]()
    design = "premise : a man walks . answer : yes\npremise : it rains . answer : no\n"
    inputs = [design + t for t in ("the movie was great", "a terrible film , boring and far too long", "ok", "")]
    choices = [["entailment", "not_entailment", "no"], ["not_entailment", "yes"], ["great film", "a"], ["no", "entailment"]]
    scored: list[int] = []
    real = router.packed_choice_scores
    monkeypatch.setattr(router, "packed_choice_scores", lambda fm, ids, *a: scored.append(len(ids)) or real(fm, ids, *a))
    for prompt in (make_prompt(fm, 5, "random-uniform", seed=2), None):
        scored.clear()
        got = score_choices(fm, inputs, choices, prompt, batch_size=3)
        window = fm.attention_window()
        assert scored == [4] if window is None or window > 100 else sum(scored) < 4
        for i, (t, opts) in enumerate(zip(inputs, choices, strict=True)):
            for c, w in enumerate(opts):
                with torch.no_grad():
                    alone = float(target_logprobs(fm, [encode_pair(fm, t, w)], prompt)[0].sum())
                assert got[i][c] == pytest.approx(alone, abs=1e-4)
