"""Shared fixtures. The real default model is loaded once per test run, through the user's cache."""

from __future__ import annotations

import pytest

from softprompt.model.frozen import FrozenModel


@pytest.fixture(scope="session")
def default_model() -> FrozenModel:
    """SmolLM2-135M-Instruct, frozen, via `load_model("default")`.

    Uses $SOFTPROMPT_CACHE (default ~/.cache/softprompt) so the GGUF is dequantized once per machine.
    """
    from softprompt.model.loading import load_model

    return load_model("default")
