"""Serving: one frozen model, many tasks, prompts' keys/values cached once (see engine.py)."""

from softprompt.serve.engine import (
    Classification,
    ClassifyRequest,
    Engine,
    EngineError,
    GenerateRequest,
    ReloadReport,
)

__all__ = ["Classification", "ClassifyRequest", "Engine", "EngineError", "GenerateRequest", "ReloadReport"]
