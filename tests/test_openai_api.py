"""The OpenAI-compatible routes with the real `openai` client against a running server (tiny model).

Completions equal the engine's greedy decoding token for token (task prompts and the bare base model), a
list of prompts gives one choice each, streaming concatenates to the same text, stop strings end the text
before them (streamed or not), logprobs are the greedy token's and its alternatives', and every refusal is
a 4xx with a message naming the parameter.
"""

from __future__ import annotations

import httpx
import openai
import pytest
import test_server
from test_server import LABELS, SETTINGS, TEXTS

from softprompt.serve import Engine
from softprompt.serve.engine import GenerateRequest

pytestmark = pytest.mark.integration  # a real server on a loopback port

# test_server's fixtures: the tiny model folder, its model, the running server with prompts for LABELS
model_dir, fm, live = test_server.model_dir, test_server.fm, test_server.live


@pytest.fixture
def client(live) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{live.url}/v1", api_key="unused", max_retries=0, timeout=30)


def expected(engine: Engine, task: str | None, text: str, limit: int) -> str:
    """The engine's own greedy continuation (no newline stop), decoded as the route decodes it."""
    [tokens] = engine.generate_tokens([GenerateRequest(task, text, limit, False)])
    return engine.fm.tokenizer.decode(tokens, skip_special_tokens=True)


def test_completions_equal_the_engines_greedy_decoding(client, live):
    limit = SETTINGS.max_new_tokens
    for model, task in [("sst", "sst"), ("rte", "rte"), (live.engine.fm.name, None)]:
        out = client.completions.create(model=model, prompt=TEXTS[0], max_tokens=limit, temperature=0)
        [choice] = out.choices
        assert choice.text == expected(live.engine, task, TEXTS[0], limit)
        assert choice.finish_reason in ("stop", "length") and out.object == "text_completion"
        assert out.usage.completion_tokens <= limit and out.usage.prompt_tokens == live.engine.input_tokens(TEXTS[0])
    base = expected(live.engine, None, TEXTS[0], limit)
    assert any(expected(live.engine, t, TEXTS[0], limit) != base for t in LABELS), "prompts change nothing?"


def test_a_list_of_prompts_gives_one_choice_each_in_order(client, live):
    out = client.completions.create(model="boolq", prompt=TEXTS[:4], max_tokens=4, temperature=0)
    assert [c.index for c in out.choices] == [0, 1, 2, 3]
    assert [c.text for c in out.choices] == [expected(live.engine, "boolq", t, 4) for t in TEXTS[:4]]


def test_streaming_sends_the_same_text_token_by_token(client, live):
    limit = SETTINGS.max_new_tokens
    for text in TEXTS[:3]:
        chunks = list(client.completions.create(model="sst", prompt=text, max_tokens=limit, temperature=0, stream=True))
        pieces = [c.choices[0].text for c in chunks if c.choices[0].text]
        assert "".join(pieces) == expected(live.engine, "sst", text, limit)
        assert chunks[-1].choices[0].finish_reason in ("stop", "length")
        assert all(c.choices[0].finish_reason is None for c in chunks[:-1])
    long = list(client.completions.create(model="rte", prompt=TEXTS[1], max_tokens=limit, stream=True))
    assert sum(bool(c.choices[0].text) for c in long) >= 2, "one chunk: not streamed"


def test_ignore_eos_decodes_to_max_tokens_like_vllm(client, live):
    """vLLM's extension: every choice has exactly max_tokens tokens; without it the text is a prefix of that."""
    out = client.completions.create(model="sst", prompt=TEXTS[:3], max_tokens=SETTINGS.max_new_tokens, temperature=0,
                                    extra_body={"ignore_eos": True})
    assert out.usage.completion_tokens == 3 * SETTINGS.max_new_tokens and {c.finish_reason for c in out.choices} == {"length"}
    for text, choice in zip(TEXTS[:3], out.choices, strict=True):
        assert choice.text.startswith(expected(live.engine, "sst", text, SETTINGS.max_new_tokens))
    streamed = list(client.completions.create(model="sst", prompt=TEXTS[0], max_tokens=SETTINGS.max_new_tokens, temperature=0, stream=True,
                                              extra_body={"ignore_eos": True}))
    assert "".join(c.choices[0].text for c in streamed) == out.choices[0].text


def test_stop_strings_end_the_text_before_them(client, live):
    limit = SETTINGS.max_new_tokens
    full = expected(live.engine, "rte", TEXTS[2], limit)
    assert len(full) >= 4, full
    stop = full[2:4]
    want = full[: full.find(stop)]
    out = client.completions.create(model="rte", prompt=TEXTS[2], max_tokens=limit, stop=[stop, "\x00never"])
    assert (out.choices[0].text, out.choices[0].finish_reason) == (want, "stop")
    streamed = client.completions.create(model="rte", prompt=TEXTS[2], max_tokens=limit, stop=stop, stream=True)
    chunks = list(streamed)
    assert "".join(c.choices[0].text for c in chunks) == want and chunks[-1].choices[0].finish_reason == "stop"


def test_logprobs_are_the_greedy_tokens_and_their_alternatives(client, live):
    out = client.completions.create(model="sst", prompt=TEXTS[1], max_tokens=4, logprobs=3)
    lp = out.choices[0].logprobs
    assert "".join(lp.tokens) == out.choices[0].text and len(lp.token_logprobs) == len(lp.tokens)
    for chosen, top in zip(lp.token_logprobs, lp.top_logprobs, strict=True):
        assert len(top) <= 3 and chosen <= 0
        assert chosen == pytest.approx(max(top.values()), abs=1e-5)  # greedy: the chosen token is the top one
    assert lp.text_offset == [sum(len(t) for t in lp.tokens[:i]) for i in range(len(lp.tokens))]


def test_models_lists_the_base_model_and_every_task(client, live):
    ids = [m.id for m in client.models.list().data]
    assert ids[0] == live.engine.fm.name and sorted(ids[1:]) == sorted(LABELS)


@pytest.mark.parametrize(("kwargs", "status", "needle"), [
    ({"temperature": 0.7}, 422, "temperature"),
    ({"top_p": 0.5}, 422, "top_p"),
    ({"n": 2}, 422, "n=2"),
    ({"echo": True}, 422, "echo"),
    ({"max_tokens": SETTINGS.max_new_tokens + 1}, 422, "max_new_tokens"),
    ({"model": "nope"}, 404, "unknown model"),
    ({"stop": ["a", "b", "c", "d", "e"]}, 422, "stop"),
    ({"logprobs": 9}, 422, "logprobs"),
])
def test_refusals_are_4xx_naming_the_parameter(client, kwargs, status, needle):
    args = {"model": "sst", "prompt": TEXTS[0], "max_tokens": 2} | kwargs
    with pytest.raises(openai.APIStatusError) as err:
        client.completions.create(**args)
    assert err.value.status_code == status and needle in str(err.value.body or err.value.message), err.value.body


def test_unknown_fields_and_bad_bodies_are_422_not_500(live):
    with httpx.Client(base_url=live.url, timeout=30) as http:
        for body in [{"model": "sst", "prompt": "x", "frobnicate": 1}, {"model": "sst"}, {"model": "sst", "prompt": 3},
                     {"model": "sst", "prompt": []}, {"model": "sst", "prompt": "x", "max_tokens": 0}]:
            response = http.post("/v1/completions", json=body)
            assert response.status_code == 422 and response.json()["error"]["message"], (body, response.text)
