"""Shared fixtures: the tiny random Llama, the benchmark data dir, and the real default model (loaded once
per test run, through the user's cache).

Tests that only need a data file's format read the made-up data shipped in tests/data (`tiny.TINY_DATA`,
importable at module level for config helpers and subprocess scripts); tests that check numbers of the
real files (row counts, known rows, class balance) take the `real_data` fixture and skip without it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from softprompt.model.frozen import FrozenModel

REAL_DATA_MARKER = Path("SST-2") / "train.tsv"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A tiny Llama saved as a Hugging Face folder: `--model DIR` loads it like any local model."""
    folder = tmp_path_factory.mktemp("tiny-model")
    from tiny import tiny_causal

    fm = tiny_causal(add_bos=False)
    fm.model.save_pretrained(folder)
    fm.tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def fm() -> FrozenModel:
    """A tiny 2-layer Llama (`tiny.tiny_causal()`), one per test module: tests that change its weights or need
    another seed or tokenizer build their own."""
    from tiny import tiny_causal

    return tiny_causal()


@pytest.fixture(scope="session")
def real_data() -> Path:
    """The benchmark data dir ($SOFTPROMPT_DATA, else ../shared/data beside the checkout); skips the test when
    it is absent (`SOFTPROMPT_DATA=/nonexistent` shows which tests need it)."""
    from softprompt.tasks.data import resolve_data_dir

    data = resolve_data_dir() or Path(__file__).resolve().parents[2] / "shared" / "data"
    if not (data / REAL_DATA_MARKER).is_file():
        pytest.skip(f"benchmark data not found at {data} (set SOFTPROMPT_DATA)")
    return data


@pytest.fixture(scope="session")
def default_model() -> FrozenModel:
    """SmolLM2-135M-Instruct, frozen, via `load_model("default")`.

    Uses $SOFTPROMPT_CACHE (default ~/.cache/softprompt) so the GGUF is dequantized once per machine.
    """
    from softprompt.model.loading import load_model

    return load_model("default")
