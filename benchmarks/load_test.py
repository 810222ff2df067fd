"""Load test of `softprompt serve`: 16 concurrent clients, 500 mixed-task requests over real HTTP on loopback.

    python benchmarks/load_test.py              # default model, writes benchmarks/results/load_test.json
    python benchmarks/load_test.py --quick      # 100 requests, prints only
    python benchmarks/load_test.py --model DIR  # any model `--model` takes (e.g. a tiny HF folder)

The server is the real CLI (`python -m softprompt.cli serve`) in a subprocess, so client and server do not
share a GIL. Its prompts directory holds untrained class-label-init prompts (P = --prompt-length, 100 as in
the paper) for SST-2, RTE, MRPC and BoolQ, made on the fly: throughput does not depend on prompt values.
Inputs are those tasks' dev-set inputs (`get_task(name).examples("validation")`), cut to
--max-input-tokens tokens client-side (BoolQ passages are long; the server would refuse them with 422).
Requests are /v1/classify with one input each, tasks interleaved, so every micro-batch mixes tasks.
Reported: throughput (requests/s), latency p50/p90/p99/max, error count (must be 0), batching counters.
Then a fuzz phase (--fuzz N, default 300): hypothesis-generated malformed requests, answers counted by
status; no 5xx allowed and /healthz must still say ok.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import torch

TASKS = ("sst2", "rte", "mrpc", "boolq")
RESULTS = Path(__file__).parent / "results" / "load_test.json"


def make_prompts(model: str, folder: Path, length: int, per_task: int, max_tokens: int) -> dict[str, list[str]]:
    """Write one class-label prompt per task into `folder`; return each task's (cut) dev inputs."""
    from softprompt.model.loading import load_model
    from softprompt.scoring import cut_input
    from softprompt.tasks import get_task
    from softprompt.training.init import make_prompt

    fm = load_model(model)
    context = fm.context_size()
    if context is not None:  # room for BOS + prompt + the longest label word (tiny test models have 256)
        max_tokens = min(max_tokens, context - length - 1 - 16)
    inputs = {}
    for name in TASKS:
        task = get_task(name)
        examples = task.examples("validation", limit=per_task)
        make_prompt(fm, length, "class-labels", labels=list(examples[0].choices), task=name).save(
            folder / f"{name}.safetensors")
        texts = []
        for ex in examples:
            ids = fm.tokenizer(ex.input_text, add_special_tokens=False).input_ids
            if len(ids) > max_tokens:  # re-encoding decoded text can shift a token or two: leave a margin
                ex_text = fm.tokenizer.decode(cut_input(ids, max_tokens - 16))
            else:
                ex_text = ex.input_text
            texts.append(ex_text)
        inputs[name] = texts
    return inputs


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(model: str, folder: Path, port: int, args: argparse.Namespace) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "softprompt.cli", "serve", "--prompts", str(folder), "--model", model,
           "--port", str(port), "--max-batch-size", str(args.max_batch_size), "--max-wait-ms", str(args.max_wait_ms),
           "--max-input-tokens", str(args.max_input_tokens), "--log-level", "warning"]
    proc = subprocess.Popen(cmd)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    proc.terminate()
    raise SystemExit("server did not come up in 300 s")


async def drive(url: str, bodies: list[dict], clients: int) -> tuple[float, list[float], list[str]]:
    """`clients` workers, each taking the next request when its last one is answered (closed loop)."""
    queue: asyncio.Queue = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    latencies: list[float] = []
    errors: list[str] = []

    async def worker(c: httpx.AsyncClient) -> None:
        while not queue.empty():
            body = queue.get_nowait()
            t0 = time.perf_counter()
            try:
                r = await c.post("/v1/classify", json=body)
                if r.status_code != 200:
                    errors.append(f"{r.status_code}: {r.text[:200]}")
            except httpx.HTTPError as err:
                errors.append(f"{type(err).__name__}: {err}")
            latencies.append(time.perf_counter() - t0)

    async with httpx.AsyncClient(base_url=url, timeout=120, limits=httpx.Limits(max_connections=clients)) as c:
        t0 = time.perf_counter()
        await asyncio.gather(*[worker(c) for _ in range(clients)])
        return time.perf_counter() - t0, latencies, errors


def fuzz(url: str, n: int) -> dict[str, Any]:
    """`n` hypothesis-generated malformed or odd requests (random bytes, random JSON, wrong types, bad task
    names, odd content types); counts answers by status. No 5xx allowed; the server must stay healthy."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
                          lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                          max_leaves=10)
    names = st.sampled_from([*TASKS, "nope", "../sst2", "", "%2e%2e", "/etc/passwd"]) | st.text(max_size=70)
    near_valid = st.fixed_dictionaries({"task": st.sampled_from(TASKS), "inputs": st.lists(st.text(max_size=200),
                                        min_size=1, max_size=4)})  # odd Unicode through tokenizer and model
    bodies = (st.binary(max_size=300) | values.map(lambda v: json.dumps(v).encode())
              | near_valid.map(lambda v: json.dumps(v).encode())
              | st.fixed_dictionaries({"task": names | values, "inputs": st.lists(st.text(max_size=50) | values,
                                       max_size=80) | values}).map(lambda v: json.dumps(v).encode())
              | st.fixed_dictionaries({"task": names, "input": st.text(max_size=80),
                                       "max_new_tokens": st.integers(-5, 10**20) | values}).map(lambda v: json.dumps(v).encode()))
    counts: dict[str, int] = {}
    bad: list[str] = []
    with httpx.Client(base_url=url, timeout=60) as c:

        @settings(max_examples=n, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        @given(path=st.sampled_from(["/v1/classify", "/v1/generate"]), body=bodies,
               content_type=st.sampled_from(["application/json", "text/plain", "application/x-www-form-urlencoded"]))
        def send(path: str, body: bytes, content_type: str) -> None:
            r = c.post(path, content=body, headers={"content-type": content_type})
            counts[str(r.status_code)] = counts.get(str(r.status_code), 0) + 1
            if r.status_code >= 500:
                bad.append(f"{path} {body[:100]!r}: {r.status_code} {r.text[:200]}")

        send()
        healthy = c.get("/healthz").json()["status"] == "ok"
    return {"requests": sum(counts.values()), "status_counts": dict(sorted(counts.items())), "5xx": len(bad),
            "5xx_samples": bad[:5], "healthy_after": healthy}


def machine() -> dict[str, Any]:
    cpuinfo = Path("/proc/cpuinfo")
    cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                if line.startswith("model name")), "") if cpuinfo.exists() else platform.processor()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            check=False).stdout.strip()
    return {"cpu": cpu, "logical_cpus": os.cpu_count(), "load_average_1m_at_start": os.getloadavg()[0],
            "python": platform.python_version(), "torch": torch.__version__, "platform": platform.platform(),
            "git_commit": commit}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--quick", action="store_true", help="100 requests; print, do not write results")
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--prompt-length", type=int, default=100)
    parser.add_argument("--max-batch-size", type=int, default=16)
    parser.add_argument("--max-wait-ms", type=float, default=10)
    parser.add_argument("--max-input-tokens", type=int, default=256)
    parser.add_argument("--fuzz", type=int, default=300, help="malformed requests sent after the load run (0: none)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    n_requests = 100 if args.quick else args.requests
    machine_info = machine()

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        inputs = make_prompts(args.model, folder, args.prompt_length, n_requests // len(TASKS) + 1,
                              args.max_input_tokens)
        bodies = [{"task": TASKS[i % len(TASKS)], "inputs": [inputs[TASKS[i % len(TASKS)]][i // len(TASKS)]]}
                  for i in range(n_requests)]
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        server = start_server(args.model, folder, port, args)
        try:
            asyncio.run(drive(url, bodies[: args.clients], args.clients))  # warm-up, not counted
            before = httpx.get(url + "/healthz").json()
            wall, latencies, errors = asyncio.run(drive(url, bodies, args.clients))
            after = httpx.get(url + "/healthz").json()
            fuzzed = fuzz(url, args.fuzz) if args.fuzz else None
        finally:
            server.terminate()
            server.wait(30)

    cuts = statistics.quantiles(latencies, n=100)
    batches = after["batches"] - before["batches"]
    result = {
        "benchmark": "load_test", "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"), "machine": machine_info,
        "model": args.model, "tasks": list(TASKS), "prompt_length": args.prompt_length, "clients": args.clients,
        "requests": n_requests, "errors": len(errors), "error_samples": errors[:5], "wall_s": round(wall, 2),
        "throughput_rps": round(n_requests / wall, 2),
        "latency_ms": {"p50": round(cuts[49] * 1000, 1), "p90": round(cuts[89] * 1000, 1),
                       "p99": round(cuts[98] * 1000, 1), "max": round(max(latencies) * 1000, 1),
                       "mean": round(statistics.fmean(latencies) * 1000, 1)},
        "server": {"max_batch_size": args.max_batch_size, "max_wait_ms": args.max_wait_ms,
                   "max_input_tokens": args.max_input_tokens, "batches": batches,
                   "mean_batch_examples": round((after["examples"] - before["examples"]) / max(batches, 1), 2)},
        "fuzz": fuzzed,
    }
    print(json.dumps(result, indent=2))
    if not args.quick:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.out}")
    if errors or (fuzzed and (fuzzed["5xx"] or not fuzzed["healthy_after"])):
        raise SystemExit(f"{len(errors)} load errors; fuzz: {fuzzed}")


if __name__ == "__main__":
    main()
