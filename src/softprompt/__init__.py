"""softprompt: prompt tuning (Lester et al., 2021) on a frozen language model.

The public API, imported lazily (``import softprompt`` loads neither torch nor transformers):

    >>> from softprompt import load_model, make_prompt, score_choices, generate
    >>> fm = load_model("default")                     # frozen SmolLM2-135M
    >>> prompt = make_prompt(fm, 20, "class-labels", labels=["negative", "positive"])
    >>> score_choices(fm, ["sentence: a gem .\\nanswer:"], [["negative", "positive"]], prompt)

Packages, lowest first (a package imports only from those before it): `model` (load, frozen wrapper,
prompt file, attach, attention kernels), `tasks`, `scoring` (the forward family), `interop` (PEFT, vLLM),
`evaluation`, `training`, `serve` and `experiments`; `cli` on top. See docs/architecture.md.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# name -> module that defines it
_EXPORTS = {
    "load_model": "softprompt.model.loading",
    "FrozenModel": "softprompt.model.frozen",
    "SoftPrompt": "softprompt.model.prompt",
    "make_prompt": "softprompt.training.init",
    "TrainConfig": "softprompt.training.config",
    "train": "softprompt.training.loop",
    "TrainResult": "softprompt.training.loop",
    "evaluate": "softprompt.evaluation.evaluate",
    "EvalResult": "softprompt.evaluation.evaluate",
    "score_choices": "softprompt.scoring",
    "generate": "softprompt.scoring",
    "target_logprobs": "softprompt.scoring",
    "encode_pair": "softprompt.scoring",
    "get_task": "softprompt.tasks",
    "load_task_file": "softprompt.tasks",
    "export_peft": "softprompt.interop.peft",
    "import_peft": "softprompt.interop.peft",
    "Engine": "softprompt.serve.engine",
    "SoftpromptError": "softprompt.errors",
    "UsageError": "softprompt.errors",
}

__all__ = [
    "__version__",
    "load_model",
    "FrozenModel",
    "SoftPrompt",
    "make_prompt",
    "TrainConfig",
    "train",
    "TrainResult",
    "evaluate",
    "EvalResult",
    "score_choices",
    "generate",
    "target_logprobs",
    "encode_pair",
    "get_task",
    "load_task_file",
    "export_peft",
    "import_peft",
    "Engine",
    "SoftpromptError",
    "UsageError",
]

if TYPE_CHECKING:
    from softprompt.errors import SoftpromptError, UsageError
    from softprompt.evaluation.evaluate import EvalResult, evaluate
    from softprompt.interop.peft import export_peft, import_peft
    from softprompt.model.frozen import FrozenModel
    from softprompt.model.loading import load_model
    from softprompt.model.prompt import SoftPrompt
    from softprompt.scoring import encode_pair, generate, score_choices, target_logprobs
    from softprompt.serve.engine import Engine
    from softprompt.tasks import get_task, load_task_file
    from softprompt.training.config import TrainConfig
    from softprompt.training.init import make_prompt
    from softprompt.training.loop import TrainResult, train


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'softprompt' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # later look-ups skip this hook
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
