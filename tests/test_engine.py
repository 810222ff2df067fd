"""Serving engine: cached-prefix scores equal the uncached path; mixed batches equal one task at a time;
the registry reloads, skips corrupt files and refuses foreign prompts with a reason; generation matches."""

from __future__ import annotations

import os

import pytest
import torch
from tiny import tiny_causal, tiny_gemma3, tiny_seq2seq

from softprompt.scoring import generate, score_choices
from softprompt.serve import ClassifyRequest, Engine, EngineError
from softprompt.training.init import make_prompt

WORDS = {"sst": ["positive", "negative"], "rte": ["entailment", "not_entailment", "no"]}
TEXTS = [
    ("sst", "the movie was great"),
    ("rte", "premise : a man is walking . hypothesis : someone moves"),
    ("sst", "a terrible film , boring and far too long"),
    ("rte", "question : is the sky blue ? passage : the sky is blue on a clear day"),
    ("sst", "sentence : it is a fine day for a walk in the park\nanswer"),
    ("rte", "true"),
]
# bf16: the cached prefix runs at batch size 1 and the input after it, so matmuls round differently from the
# one-pass path; on the tiny model summed log-likelihoods differ by up to ~0.03 nats. Tolerance: 0.1 nats.
BF16_ATOL = 0.1


def _engine(fm, batch_size: int = 4) -> tuple[Engine, dict]:
    engine = Engine(fm, batch_size=batch_size)
    prompts = {"sst": make_prompt(fm, 5, "random-uniform", seed=1), "rte": make_prompt(fm, 9, "random-uniform", seed=2)}
    for name, prompt in prompts.items():
        engine.add(name, prompt, WORDS[name])
    return engine, prompts


def _uncached(fm, prompts, texts) -> list[list[float]]:
    return score_choices(fm, [t for _, t in texts], [WORDS[k] for k, _ in texts], [prompts[k] for k, _ in texts],
                         batch_size=3)


@pytest.mark.parametrize("add_bos", [True, False])
def test_cached_scores_equal_uncached_fp32(add_bos):
    fm = tiny_causal(add_bos=add_bos)
    engine, prompts = _engine(fm)
    out = engine.classify(TEXTS + [("sst", "")])  # an empty input: the prefix's own state predicts the word
    ref = _uncached(fm, prompts, TEXTS + [("sst", "")])
    for got, want, (task, _) in zip(out, ref, TEXTS + [("sst", "")], strict=True):
        torch.testing.assert_close(torch.tensor([got.scores[w] for w in WORDS[task]]), torch.tensor(want),
                                   atol=1e-4, rtol=0)
        assert got.label == WORDS[task][max(range(len(want)), key=want.__getitem__)]
        assert abs(sum(got.probs.values()) - 1) < 1e-6


@pytest.mark.parametrize("window", [256, 12, 4])
def test_sliding_window_model_scores_and_generates_as_uncached(window):
    """Gemma-3's local layers see `window` tokens. Requests that fit run on the cached prefixes; longer ones
    (and prompts longer than the window) take the plain path, where the model builds its own sliding
    masks. Before, scores beyond the window were silently wrong (0.10 nats at 16) and a prompt longer than
    the window crashed the forward."""
    fm = tiny_gemma3(sliding_window=window)
    assert fm.attention_window() == window and tiny_causal().attention_window() is None
    engine, prompts = _engine(fm, batch_size=3)
    got = engine.score(TEXTS)
    ref = _uncached(fm, prompts, TEXTS)
    torch.testing.assert_close(torch.tensor([x for r in got for x in r]), torch.tensor([x for r in ref for x in r]),
                               atol=1e-4, rtol=0)
    out = engine.generate([(k, t, 7) for k, t in TEXTS])
    assert out == generate(fm, [t for _, t in TEXTS], [prompts[k] for k, _ in TEXTS], max_new_tokens=7)


def test_scores_do_not_depend_on_how_many_positions_share_an_lm_head_call(monkeypatch):
    import softprompt.scoring.packed as packed_scoring

    fm = tiny_causal()
    engine, _ = _engine(fm)
    together = engine.score(TEXTS)  # every scored position in one head call
    monkeypatch.setattr(packed_scoring, "HEAD_ROWS", 2)  # head calls of 2 rows: multi-token words split
    apart = engine.score(TEXTS)
    torch.testing.assert_close(torch.tensor([x for r in apart for x in r]),
                               torch.tensor([x for r in together for x in r]), atol=1e-4, rtol=0)  # fp32 GEMM blocking


def test_cached_scores_equal_uncached_bf16():
    fm = tiny_causal(dtype=torch.bfloat16)
    engine, prompts = _engine(fm)
    got = [[o.scores[w] for w in WORDS[k]] for o, (k, _) in zip(engine.classify(TEXTS), TEXTS, strict=True)]
    ref = _uncached(fm, prompts, TEXTS)
    for g, w in zip(got, ref, strict=True):
        torch.testing.assert_close(torch.tensor(g), torch.tensor(w), atol=BF16_ATOL, rtol=0)


def test_mixed_batch_equals_one_task_at_a_time_and_any_batch_size():
    fm = tiny_causal()
    engine, _ = _engine(fm, batch_size=8)
    mixed = engine.classify(TEXTS)
    for task in WORDS:
        alone = engine.classify([r for r in TEXTS if r[0] == task])
        together = [o for o, r in zip(mixed, TEXTS, strict=True) if r[0] == task]
        for a, b in zip(alone, together, strict=True):
            assert a.label == b.label
            for w in a.scores:
                assert abs(a.scores[w] - b.scores[w]) < 1e-4
    engine.batch_size = 1  # no padding at all
    single = engine.classify(TEXTS)
    assert all(abs(a.scores[w] - b.scores[w]) < 1e-4 for a, b in zip(single, mixed, strict=True) for w in a.scores)


def test_per_request_label_words_and_errors():
    fm = tiny_causal()
    engine, prompts = _engine(fm)
    out = engine.classify([ClassifyRequest("sst", "the movie was great", ["yes", "no"])])[0]
    want = score_choices(fm, ["the movie was great"], [["yes", "no"]], prompts["sst"])[0]
    assert abs(out.scores["yes"] - want[0]) < 1e-4 and abs(out.scores["no"] - want[1]) < 1e-4
    with pytest.raises(EngineError, match="unknown task 'nope'.*rte, sst"):
        engine.classify([("nope", "x")])
    engine.add("bare", make_prompt(fm, 3, "random-uniform"))  # no label words anywhere
    with pytest.raises(EngineError, match="no label words"):
        engine.classify([("bare", "x")])
    # an empty call is answered, not failed
    assert engine.classify([]) == [] and engine.score([]) == [] and engine.generate([]) == []


@pytest.mark.parametrize("add_bos", [True, False])
def test_generation_matches_scoring_generate(add_bos):
    fm = tiny_causal(add_bos=add_bos)
    engine, prompts = _engine(fm, batch_size=3)
    got = engine.generate([(k, t, 7) for k, t in TEXTS])
    want = generate(fm, [t for _, t in TEXTS], [prompts[k] for k, _ in TEXTS], max_new_tokens=7)
    assert got == want
    # Per-request limits: a shorter limit gives a prefix of the longer output's tokens.
    short = engine.generate([(TEXTS[0][0], TEXTS[0][1], 2), (TEXTS[1][0], TEXTS[1][1], 7)])
    assert short[1] == want[1]
    assert short[0] == generate(fm, [TEXTS[0][1]], prompts["sst"], max_new_tokens=2)[0]


def test_seq2seq_takes_the_plain_path():
    fm = tiny_seq2seq()
    engine, prompts = _engine(fm)
    out = engine.classify(TEXTS[:3])
    ref = _uncached(fm, prompts, TEXTS[:3])
    assert all(abs(o.scores[w] - r[i]) < 1e-4 for o, r, (k, _) in zip(out, ref, TEXTS, strict=False)
               for i, w in enumerate(WORDS[k]))
    assert engine.generate([("rte", "true", 3)]) == generate(fm, ["true"], prompts["rte"], max_new_tokens=3)


@pytest.mark.parametrize("make", [tiny_seq2seq, tiny_causal])
def test_max_input_tokens_cuts_inputs_for_every_model_kind(make):
    """Engine(max_input_tokens=N) scores and generates from the cut input (start and end kept), seq2seq
    included (its plain path used to get the whole text)."""
    from softprompt.scoring import Encoded, cut_input, encode_pair, generate_ids, score_encoded

    fm = make()
    engine, prompts = _engine(fm)
    engine.max_input_tokens = 8
    text = "premise : a man is walking in the park with his dog . hypothesis : someone moves"
    ids = fm.tokenizer(text).input_ids
    bos = ids[:1] if fm.adds_bos else []
    cut = bos + cut_input(ids[len(bos):], 8)
    assert len(cut) < len(ids)
    pairs = [Encoded(cut, encode_pair(fm, text, w).target_ids) for w in WORDS["rte"]]
    want = score_encoded(fm, [pairs], prompts["rte"])[0]
    got = engine.score([("rte", text)])[0]
    torch.testing.assert_close(torch.tensor(got), torch.tensor(want), atol=1e-4, rtol=0)
    tokens = generate_ids(fm, [cut], prompts["rte"], 4)[0]
    assert engine.generate([("rte", text, 4)]) == [fm.tokenizer.decode(tokens, skip_special_tokens=True).strip()]


def test_reload_picks_up_new_and_changed_files_and_skips_bad_ones(tmp_path):
    fm = tiny_causal()
    make_prompt(fm, 4, "random-uniform", seed=1, labels=["positive", "negative"]).save(tmp_path / "sst.safetensors")
    engine = Engine(fm, prompts_dir=tmp_path)
    assert set(engine.tasks) == {"sst"} and engine.tasks["sst"].label_words == ["positive", "negative"]
    first = engine.classify([("sst", "the movie was great")])[0].scores

    # New file, corrupt file, prompt for another model.
    make_prompt(fm, 6, "random-uniform", seed=2, labels=["yes", "no"]).save(tmp_path / "rte.safetensors")
    (tmp_path / "broken.safetensors").write_bytes(b"not a safetensors file")
    make_prompt(tiny_causal(seed=7), 4, "random-uniform").save(tmp_path / "foreign.safetensors")
    report = engine.reload()
    assert report.loaded == ["rte"] and set(engine.tasks) == {"sst", "rte"}
    assert "not a readable safetensors" in report.skipped["broken.safetensors"]
    assert "fingerprint" in report.skipped["foreign.safetensors"]
    assert set(engine.skipped) == {"broken.safetensors", "foreign.safetensors"}
    assert engine.reload().loaded == []  # unchanged files are not read again

    # A changed file (new size/mtime) is reloaded; its scores change.
    path = tmp_path / "sst.safetensors"
    make_prompt(fm, 8, "random-uniform", seed=3, labels=["positive", "negative"]).save(path)
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    assert engine.reload().loaded == ["sst"] and engine.tasks["sst"].prompt.length == 8
    assert engine.classify([("sst", "the movie was great")])[0].scores != first

    # Deleting files removes their tasks and their skip reasons.
    (tmp_path / "rte.safetensors").unlink()
    (tmp_path / "broken.safetensors").unlink()
    report = engine.reload()
    assert report.removed == ["rte"] and set(engine.tasks) == {"sst"} and "broken.safetensors" not in engine.skipped


def test_split_by_length_covers_every_request_once_within_the_batch_limit():
    from softprompt.scoring.layout import split_by_length

    lengths = [10, 256, 12, 23, 150, 26, 41, 256, 45, 49]
    groups = split_by_length(lengths, max_batch=4)
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
    assert all(1 <= len(g) <= 4 for g in groups)
    assert {1, 7} in [set(g) for g in groups]  # the two long inputs share a forward, apart from the short ones
    assert split_by_length([5, 5, 5], max_batch=8) == [[0, 1, 2]]


def test_pack_rows_keeps_tasks_apart_within_capacity():
    from softprompt.scoring.layout import pack_rows

    lengths = [10, 256, 12, 23, 150, 26, 41, 256, 45, 49]
    keys = ["a", "b", "a", "a", "b", "a", "c", "b", "a", "c"]
    rows = pack_rows(lengths, keys, capacity=100)
    assert sorted(i for row in rows for i in row) == list(range(len(lengths)))
    assert all(len({keys[i] for i in row}) == 1 for row in rows)  # one prefix per row
    assert all(sum(lengths[i] for i in row) <= 100 for row in rows if len(row) > 1)
    assert [1] in rows and [7] in rows  # longer than the capacity: a row of its own
    assert len([row for row in rows if keys[row[0]] == "a"]) == 2  # the five 'a's (116 tokens) fill two rows
    assert [9, 6] in rows  # the two 'c's (90 tokens) share one


def test_packed_rows_score_as_one_request_per_row(monkeypatch):
    """Several requests in one row (block-diagonal mask, positions restarting per request) give the scores of
    one request per row; TEXTS does pack (its short inputs fit beside each other)."""
    import softprompt.scoring.packed as packed_scoring
    from softprompt.scoring.layout import pack_rows

    fm = tiny_causal()
    engine, _ = _engine(fm, batch_size=8)
    texts = TEXTS + [("sst", ""), ("sst", "ok")]  # an empty input in a packed row reads the prefix's state
    calls: list[list[list[int]]] = []
    monkeypatch.setattr(packed_scoring, "pack_rows", lambda *a, **k: calls.append(pack_rows(*a, **k)) or calls[-1])
    packed = engine.score(texts)
    assert any(len(row) > 1 for row in calls[0])
    monkeypatch.setattr(packed_scoring, "pack_rows", lambda lengths, keys, capacity: [[i] for i in range(len(lengths))])
    apart = engine.score(texts)
    torch.testing.assert_close(torch.tensor([x for r in packed for x in r]),
                               torch.tensor([x for r in apart for x in r]), atol=1e-4, rtol=0)


def test_one_bad_file_in_a_rescan_does_not_stop_the_others(tmp_path):
    """A file that fails with another error than PromptFileError (a rank-1 tensor) is skipped with its reason,
    and a good file in the same scan is served (the scan used to abort, the good file then counted as seen)."""
    from safetensors.torch import save_file

    fm = tiny_causal()
    engine = Engine(fm, tmp_path)
    make_prompt(fm, 3, "random-uniform", seed=1).save(tmp_path / "aaa_new.safetensors")
    save_file({"prompt_embeddings": torch.randn(fm.hidden_size)}, str(tmp_path / "zzz_bad.safetensors"))
    report = engine.reload()
    assert report.loaded == ["aaa_new"] and "aaa_new" in engine.tasks
    assert "zzz_bad.safetensors" in engine.skipped and "zzz_bad.safetensors" in report.skipped
    assert engine.score([("aaa_new", "the movie", ["good", "bad"])])  # served


def test_prefix_cache_runs_each_prompt_once_and_scores_as_without_it(monkeypatch):
    """The registry's PrefixCache: one prefix run per prompt object across calls, dropped by `retain`, and
    the scores with a long-lived cache equal those of a fresh one per call."""
    import softprompt.scoring.prefix as prefix
    from softprompt.scoring import PrefixCache

    fm = tiny_causal()
    a, b = make_prompt(fm, 3, "random-uniform", seed=1), make_prompt(fm, 5, "random-uniform", seed=2)
    runs = []
    real = prefix.prompt_prefix
    monkeypatch.setattr(prefix, "prompt_prefix", lambda fm, rows: runs.append(rows.shape[0]) or real(fm, rows))
    cache = PrefixCache(fm)
    inputs, choices = ["the movie was great", "a dull film"], [["good", "bad"], ["yes", "no"]]
    first = score_choices(fm, inputs, choices, [a, b], prefixes=cache)
    again = score_choices(fm, inputs, choices, [b, a], prefixes=cache)
    assert runs == [3, 5]  # each prompt ran once, for both calls
    fresh = score_choices(fm, inputs, choices, [a, b])
    assert [s for row in first for s in row] == pytest.approx([s for row in fresh for s in row], abs=1e-6)
    assert again[0] == pytest.approx(score_choices(fm, inputs[:1], choices[:1], b)[0], abs=1e-4)
    runs.clear()
    cache.retain([b])
    cache.get(b)
    cache.get(a)
    assert runs == [3]  # b kept; a was dropped, so it runs again
