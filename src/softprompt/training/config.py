"""Training configuration: one typed dataclass, a docstring per field, YAML in and out.

Two recipes (`recipe`), which fill the fields a run leaves unset (given flags and YAML values win):
- `paper`: Lester et al. 2021, §3 and appendix A: P=100, class-label init, Adafactor lr 0.3 with weight decay
  1e-5, β2 decay 0.8, update clipping 1.0, batch 32, constant lr (torch's Adafactor takes relative steps with a
  1/sqrt(t) cap where the paper's are absolute and constant: see optimizers.py).
- `default`: AdamW lr 0.03 with a linear decay to 0 at `steps` (PEFT's prompt-tuning recipe), batch 16, and
  classification targets without the EOS term (see `target_eos`). Chosen by time_to_accuracy.py per minute of
  training: the README's "Training" section has the figures.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from enum import Enum, StrEnum
from pathlib import Path
from typing import Any

import yaml

from softprompt.errors import UsageError
from softprompt.files import atomic_write
from softprompt.model.attention import KERNELS


class Method(StrEnum):
    PROMPT_TUNING = "prompt-tuning"
    MODEL_TUNING = "model-tuning"


class Optimizer(StrEnum):
    ADAFACTOR = "adafactor"
    ADAMW = "adamw"


class Schedule(StrEnum):
    CONSTANT = "constant"  # the paper
    LINEAR = "linear"  # decay to 0 at `steps`, or at `max_minutes` if that comes first (see TrainConfig.lr_at)


class Recipe(StrEnum):
    DEFAULT = "default"  # AdamW 0.03, linear decay (see the module docstring)
    PAPER = "paper"  # Lester et al. 2021: Adafactor 0.3, constant


# What each recipe sets where the run leaves a field unset (None); P, init and weight decay are shared.
# target_eos unset under the default recipe is decided per task (TrainConfig.ends_targets_with_eos).
RECIPES: dict[Recipe, dict[str, Any]] = {
    Recipe.DEFAULT: {"optimizer": "adamw", "lr_schedule": "linear", "batch_size": 16},
    Recipe.PAPER: {"optimizer": "adafactor", "lr_schedule": "constant", "batch_size": 32, "target_eos": True},
}


class Loss(StrEnum):
    CE = "ce"  # the paper: cross-entropy on the target text, teacher forcing
    RANK = "rank"  # softmax over the label words only (classification tasks)


class Reparam(StrEnum):
    NONE = "none"  # the optimizer moves the prompt rows themselves (the paper)
    RESIDUAL_MLP = "residual-mlp"  # rows = base + LayerNorm(MLP(base)) while training, folded when saved (reparam.py)


class ConfigError(UsageError):
    """A configuration value or combination that cannot work; the message names it."""


@dataclass
class TrainConfig:
    task: str | None = None
    """Built-in task name (e.g. sst2); or use task_file."""
    task_file: str | None = None
    """Path of a user task YAML file (see README, 'Your own task')."""
    model: str = "default"
    """Base model: 'default', 'gemma-3-270m', a .gguf file, a local dir or a hub id."""
    method: Method = Method.PROMPT_TUNING
    """prompt-tuning (only the prompt learns) or model-tuning (all weights: the paper's baseline)."""
    prompt_length: int = 100
    """P, the number of prompt vectors (paper default 100)."""
    init: str = "class-labels"
    """random-uniform | sampled-vocab | class-labels | text | file."""
    init_text: str | None = None
    """Text for init=text."""
    init_file: str | None = None
    """Prompt file for init=file."""
    reparam: Reparam = Reparam.NONE
    """none, or residual-mlp: while training the rows are base + LayerNorm(MLP(base)) (Razdaibiedina et al.
    2023); every saved prompt is the folded, plain [P, H] matrix, so files work everywhere a prompt does."""
    reparam_hidden: int = 256
    """The residual MLP's bottleneck width (reparam=residual-mlp)."""
    average_decay: float | None = None
    """Evaluate, keep and save an exponential moving average of the prompt's rows (e.g. 0.99: about the last
    100 steps) while the rows themselves train on (averaging.py). None: the rows as they are."""
    recipe: Recipe = Recipe.DEFAULT
    """default (AdamW 0.03, linear decay) or paper (Adafactor 0.3, constant: Lester et al. 2021); it fills the
    optimizer and lr schedule where they are not given."""
    optimizer: Optimizer | None = None
    """adafactor (paper) or adamw (default recipe)."""
    lr: float | None = None
    """Learning rate; default 0.3 for prompt tuning with Adafactor, 0.03 with AdamW; 1e-5 for model tuning."""
    weight_decay: float = 1e-5
    """Paper: 1e-5."""
    lr_schedule: Schedule | None = None
    """constant (paper) or linear (default recipe: decays to 0 at `steps`, or at `max_minutes` of training if
    that limit comes first; no warm-up)."""
    beta2_decay: float = -0.8
    """Adafactor's β2 decay exponent (paper: 0.8, written -0.8 in torch)."""
    batch_size: int | None = None
    """Examples per optimizer step, before gradient accumulation splits it (default recipe: 16; paper: 32). Per
    minute of training, twice the steps of half the batch learned more on BANKING77 and as much on SST-2 (README)."""
    grad_accum: int = 1
    """Split each step's batch into this many micro-batches (same result, less memory)."""
    steps: int = 1000
    """Optimizer steps."""
    loss: Loss = Loss.CE
    """ce (paper) or rank (softmax over the label words only)."""
    target_eos: bool | None = None
    """Targets end in EOS, so generation learns to stop. Rank classification never reads the EOS term (choices
    are scored without it), and on the class-label init it is most of the first loss (SST-2: 64%). Unset, the
    recipe decides: paper always; default not for tasks scored by rank (classification, per-example choices),
    yes for generated ones. Give --target-eos for a classification prompt that must stop when it generates
    (vLLM, /v1/completions), --no-target-eos to drop it anywhere."""
    target_sentinel: bool = False
    """For span-corruption seq2seq checkpoints (T5 1.1 style): targets become "<extra_id_0> label" so the
    model's pretraining output format is kept (the paper's "span corruption + sentinel"). Decoder-only
    LMs do not need it."""
    eval_every: int = 100
    """Evaluate on the validation split every N steps (0: only at the end)."""
    eval_limit: int | None = 500
    """Validation examples per evaluation (None: all)."""
    eval_batch_size: int = 32
    """Batch size for evaluation."""
    patience: int | None = None
    """Stop after this many evaluations without improvement (None: never)."""
    checkpoint_every: int | None = None
    """Save a resumable checkpoint every N steps (default: at every evaluation)."""
    max_minutes: float | None = None
    """Stop after this much wall time (the last prompt is evaluated and checkpointed first)."""
    report_to: str | None = None
    """Also log to "tensorboard": event files in OUT/tensorboard (`pip install tensorboard`), as the HF
    Trainer's report_to does. None: metrics.jsonl and curve.png only."""
    train_limit: int | None = None
    """Use only the first N training examples (after a seeded shuffle)."""
    max_input_tokens: int = 256
    """Inputs longer than this are cut (from the left of the input, never the prompt or target)."""
    min_input_tokens: int | None = None
    """Train only on examples whose input has at least this many tokens (template included). SST-2's train
    split is mostly short phrases (median 7 words) while its dev split is whole sentences (mean 19.5)."""
    seed: int = 0
    """Seed for init and data order."""
    data_dir: str | None = None
    """Where the benchmark files are (else $SOFTPROMPT_DATA, else ../shared/data)."""
    out: str = "runs/latest"
    """Output directory: prompt.safetensors (best), last.safetensors, metrics.jsonl, config.yaml, summary.json."""
    attention: str | None = "split"
    """Attention kernel while training on CPU: "split" (SDPA's fused forward, bit for bit, with a matmul
    backward: split_attention.py), "sdpa" (fused forward and PyTorch's slow CPU backward), "eager"
    (matmul + softmax both ways: as fast as split, but its bf16 forward changed two runs, see attention.py);
    None keeps the model's own. GPUs always keep the model's own."""
    threads: int | None = None
    """torch threads (default: the physical cores)."""

    def __post_init__(self) -> None:
        self.method = Method(self.method)
        try:
            self.recipe = Recipe(self.recipe)
        except ValueError:
            raise ConfigError(f"recipe must be one of {', '.join(Recipe)}, got {self.recipe!r}") from None
        for name, value in RECIPES[self.recipe].items():  # the recipe fills what the run left unset
            if getattr(self, name) is None:
                setattr(self, name, value)
        self.optimizer = Optimizer(self.optimizer)
        self.lr_schedule = Schedule(self.lr_schedule)
        if self.attention is not None and self.attention not in KERNELS:
            raise ConfigError(f"attention must be one of {', '.join(KERNELS)}, got {self.attention!r}")
        self.loss = Loss(self.loss)
        self.reparam = Reparam(self.reparam)
        if self.reparam is not Reparam.NONE and self.method is not Method.PROMPT_TUNING:
            raise ConfigError(f"reparam {self.reparam.value} reparameterizes a prompt; model tuning has none")
        if self.average_decay is not None and not (0 < self.average_decay < 1 and self.method is Method.PROMPT_TUNING):
            raise ConfigError(f"average_decay must be in (0, 1) and is for prompt tuning, got {self.average_decay} "
                              f"with {self.method.value}")
        if not self.task and not self.task_file:
            raise ConfigError("give a task: --task NAME (e.g. sst2) or --task-file my_task.yaml")
        if self.task and self.task_file:
            raise ConfigError(f"give --task or --task-file, not both (got {self.task!r} and {self.task_file!r})")
        for name in ("prompt_length", "batch_size", "grad_accum", "steps", "eval_batch_size", "max_input_tokens",
                     "reparam_hidden"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        # Optional counts and amounts: None means "off", anything given must make sense (the optimizer,
        # the data loader or the clock would otherwise fail later with a traceback, or silently do nothing).
        if self.lr is not None and not self.lr > 0:
            raise ConfigError(f"lr must be > 0, got {self.lr}")
        if self.report_to not in (None, "none", "tensorboard"):
            raise ConfigError(f"report_to must be 'tensorboard' or none, got {self.report_to!r}")
        if self.report_to == "none":
            self.report_to = None
        if self.max_minutes is not None and not self.max_minutes >= 0:  # 0: stop after the first step
            raise ConfigError(f"max_minutes must be >= 0, got {self.max_minutes}")
        for name in ("eval_limit", "patience", "checkpoint_every", "train_limit", "threads"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"{name} must be >= 1 (or left unset), got {value}")
        if self.weight_decay < 0 or self.eval_every < 0 or (self.min_input_tokens or 0) < 0:
            raise ConfigError(f"weight_decay, eval_every and min_input_tokens must be >= 0, got "
                              f"{self.weight_decay}, {self.eval_every}, {self.min_input_tokens}")
        if self.batch_size % self.grad_accum:
            raise ConfigError(
                f"batch_size {self.batch_size} is not divisible by grad_accum {self.grad_accum}; "
                "each micro-batch must be the same size"
            )

    @property
    def learning_rate(self) -> float:
        if self.lr is not None:
            return self.lr
        if self.method is Method.MODEL_TUNING:
            return 1e-5
        return 0.3 if self.optimizer is Optimizer.ADAFACTOR else 0.03

    def lr_at(self, step: int, seconds: float | None = None) -> float:
        """The learning rate of optimizer step `step` (0-based), `seconds` into the run.

        Linear decays to 0 at whichever limit ends the run first: at `steps`, or, with `max_minutes`, at the
        time budget. A time-capped run therefore spends its whole budget on a schedule that ends when it does
        (a step-count guess would end the decay early and idle at lr 0, or stop before it decays). A run that
        ends at `steps` and never runs ahead of its time budget's pace follows the step schedule exactly, so
        it is reproducible and resumes exactly; a time-bound one depends on the machine's speed, as its
        length already does."""
        if self.lr_schedule is Schedule.LINEAR:
            done = step / self.steps
            if self.max_minutes and seconds is not None:
                done = max(done, seconds / (self.max_minutes * 60))
            return self.learning_rate * max(0.0, 1.0 - done)
        return self.learning_rate

    def ends_targets_with_eos(self, ranked: bool) -> bool:
        """Whether training targets end in EOS: `target_eos` if given, else the recipe's choice for a task whose
        answers are scored by rank (`ranked`) or generated (see `target_eos`)."""
        if self.target_eos is not None:
            return self.target_eos
        return not ranked

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        return {k: (v.value if isinstance(v, Enum) else v) for k, v in data.items()}

    def save(self, path: str | Path) -> None:
        text = yaml.safe_dump(self.to_dict(), sort_keys=False)
        atomic_write(Path(path), lambda tmp: Path(tmp).write_text(text))

    @classmethod
    def from_sources(cls, yaml_path: str | Path | None = None, **overrides: Any) -> TrainConfig:
        """Read a YAML config, then apply the flags that were given (None = not given)."""
        data: dict[str, Any] = {}
        if yaml_path:
            try:
                data = yaml.safe_load(Path(yaml_path).read_text()) or {}
            except (OSError, yaml.YAMLError) as err:
                raise ConfigError(f"cannot read config {yaml_path}: {err}") from None
            if not isinstance(data, dict):
                raise ConfigError(f"{yaml_path} must be a mapping of option: value")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown option(s) in {yaml_path}: {', '.join(unknown)}; valid: {', '.join(sorted(known))}")
        data.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return cls(**data)
        except (TypeError, ValueError) as err:
            if isinstance(err, ConfigError):
                raise
            raise ConfigError(str(err)) from None
