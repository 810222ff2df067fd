"""vLLM's side of the parity test and the benchmark: greedy decoding of ready-made `prompt_embeds` requests.

Runs in the separate `.venv-vllm` (`make vllm-env`), so it imports only torch, safetensors and vllm, never
softprompt:

    .venv-vllm/bin/python benchmarks/vllm_greedy.py MODEL_DIR REQUESTS.safetensors OUT.json --max-tokens 8

REQUESTS.safetensors holds tensors `r0`, `r1`, ... ([L_i, H] each: BOS? + prompt rows + input token embeddings,
built by `softprompt.interop.vllm.request_embeds`); OUT.json gets the generated token ids per request, the
load and generate seconds and vLLM's version. Exit code 3 with a one-line reason when vLLM cannot start here
(e.g. a CPU it was not built for).
"""

from __future__ import annotations

import argparse
import json
import sys
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model")
    parser.add_argument("requests")
    parser.add_argument("out")
    parser.add_argument("--max-tokens", type=int, default=8)
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--max-model-len", type=int, default=1024)
    # On CPUs vLLM reserves this fraction of RAM for its KV cache (0.92 by default: more than a busy 24 GiB
    # machine has free, which stops the engine at startup).
    parser.add_argument("--memory-fraction", type=float, default=0.2)
    args = parser.parse_args()

    from safetensors.torch import load_file

    tensors = load_file(args.requests)
    requests = [{"prompt_embeds": tensors[f"r{i}"]} for i in range(len(tensors))]
    tick = time.perf_counter()
    try:
        import vllm
        from vllm import LLM, SamplingParams

        llm = LLM(model=args.model, enable_prompt_embeds=True, dtype=args.dtype, max_model_len=args.max_model_len,
                  enforce_eager=True, gpu_memory_utilization=args.memory_fraction)
    except Exception as err:  # noqa: BLE001 — report why vLLM cannot run here, in one line
        print(f"vLLM could not start: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}",
              file=sys.stderr)
        raise SystemExit(3) from None
    loaded = time.perf_counter() - tick
    params = SamplingParams(temperature=0.0, max_tokens=args.max_tokens, ignore_eos=False)
    tick = time.perf_counter()
    outputs = llm.generate(requests, params, use_tqdm=False)
    with open(args.out, "w") as handle:
        json.dump({"tokens": [list(o.outputs[0].token_ids) for o in outputs], "load_seconds": loaded,
                   "generate_seconds": time.perf_counter() - tick, "vllm": vllm.__version__}, handle)


if __name__ == "__main__":  # vLLM spawns its engine process: the entry point must be guarded
    main()
