"""What every study section shares: the claims, the Claim and Ctx records, method columns and small notes."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from softprompt.experiments.evidence import (
    Comparison,
    counted,
)
from softprompt.experiments.report_format import (
    Result,
    main_of,
    param,
)
from softprompt.experiments.stats import (
    CONTRADICTED,
    HOLDS,
    INCONCLUSIVE,
    Cell,
)

# (study, claim) per id; the rule text is written where the verdict is computed, so the two cannot drift.
CLAIMS = {
    "C1": ("methods", "Prompt tuning beats prompt design (zero-/few-shot)"),
    "C2": ("methods", "At small scale (<1B parameters) model tuning beats prompt tuning; the gap closes with scale"),
    "C3": ("length", "Going from 1 token to more helps; gains past 20 tokens are marginal"),
    "C4": ("length", "Very long prompts (150) can be slightly worse than 100"),
    "C5": ("init", "Class-label init is best, random-uniform worst, at small scale"),
    "C6": ("transfer", "Prompt tuning transfers better out of domain than model tuning"),
    "C7": ("ensemble", "Majority vote of 5 prompts beats the average member and matches or beats the best"),
    "C8": ("interpret", "With class-label init, the class labels persist among the neighbours after training"),
    "C9": ("interpret", "Learned prompt tokens cluster (many positions share nearest neighbours)"),
    "C10": ("cost", "Prompt tuning needs < 0.01% of the model's parameters per task (at T5-XXL)"),
}


METHOD_ORDER = ("majority", "zero-shot", "few-shot", "prompt-tuning", "model-tuning")


DESIGN = ("zero-shot", "few-shot")


INITS = ("random-uniform", "sampled-vocab", "class-labels")


IN_DOMAIN_CONTROLS = {("sst2", "mr")}  # MR is movie reviews like SST-2: the in-domain control, not a transfer


# Published figures we can cite, beside our own: the prompts google-research/prompt-tuning released for T5.1.1
# LM-adapted Base (~250M parameters; 100 tokens, class-label init), scored on each task's validation split.
# The paper's own tables (T5-XXL) are not quoted: no citable copy of them was at hand, so those cells stay empty.
PUBLISHED_SOURCE = ("google-research/prompt-tuning, `prompt_tuning/pretrained_prompts/t5_1_1_lm100k_base/README.md` "
                    "(commit 3a4df11): released prompts, T5.1.1 LM-adapted Base, P=100, class-label init, validation split")
PUBLISHED = {"sst2": "95.07 (accuracy)", "mrpc": "89.7 / 85.3 (F1 / accuracy)", "rte": "68.6 (accuracy)"}


@dataclass(frozen=True)
class Claim:
    """One of the paper's claims, checked against our numbers by a stated rule."""

    cid: str
    verdict: str
    summary: str  # one line for the summary table
    rule: str
    evidence: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Ctx:
    """Where plots go, how the markdown file links to them, and the majority-class scores (from the methods
    study, keyed by (model label, task)) that other studies compare with."""

    plots_dir: Path
    md_dir: Path
    majority: dict[tuple[str, str], float] = field(default_factory=dict)

    def figure(self, name: str, alt: str, draw: Callable[[Path], object]) -> str:
        """Draw into plots_dir/name and return the markdown image link; a failed plot is a note, not a crash."""
        try:
            draw(self.plots_dir / name)
        except Exception as err:  # noqa: BLE001 — a broken plot must not cost the whole report
            return f"_(plot {name} not drawn: {type(err).__name__}: {err})_"
        return f"![{alt}]({Path(os.path.relpath(self.plots_dir / name, self.md_dir)).as_posix()})"


def method_column(r: Result) -> str:
    """A methods-table column: the method, plus the knobs that make separate columns (few-shot's shots, an lr)."""
    label = str(r.get("method", "?")) + (f" k={param(r, 'shots')}" if r.get("method") == "few-shot" else "")
    return label + (f" lr={param(r, 'lr'):g}" if isinstance(param(r, "lr"), int | float) else "")


def ties_majority(value: float | None, base: float | None) -> bool:
    """True when a score equals the majority-class baseline's (to 0.05 pp): most likely one answer for every example."""
    return value is not None and base is not None and abs(value - base) < 5e-4


def majority_note(hits: Sequence[str]) -> list[str]:
    """The note naming the results at the majority-class score (none: no note)."""
    return [f"At the majority-class score (most likely one answer for every example): {', '.join(hits)}.", ""] if hits else []


def _tally(comparisons: Sequence[Comparison]) -> str:
    """'holds on 2, contradicted on 0, inconclusive on 1 of 3 informative tasks (4 compared)'."""
    v = counted(comparisons)
    return (f"holds on {v.count(HOLDS)}, contradicted on {v.count(CONTRADICTED)}, inconclusive on "
            f"{v.count(INCONCLUSIVE)} of {len(v)} informative tasks ({len(comparisons)} compared)")


def _cell(blocks: Sequence[Any]) -> Cell | None:
    """A cell from metric blocks (one per seed); None when none has a main value."""
    values = tuple(v for v in (main_of(m) for m in blocks) if v is not None)
    return Cell(values) if values else None
