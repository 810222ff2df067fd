"""One module per study section of the report: its tables and plots, and verdicts on the paper's claims it tests.

Each `section_<study>(results, ctx)` returns the section's markdown lines and one `Claim` per id in `CLAIMS` that it
checks, with the rule that decided the verdict written next to the computation. Verdicts come from intervals
(`evidence.py`, `stats.py`); `report.py` assembles the page; drawing is in `plots.py`.
"""

from __future__ import annotations

from collections.abc import Callable

from softprompt.experiments.report_format import Result
from softprompt.experiments.sections.common import CLAIMS, Claim, Ctx
from softprompt.experiments.sections.cost import section_cost
from softprompt.experiments.sections.curves import section_init, section_length
from softprompt.experiments.sections.ensemble import section_ensemble
from softprompt.experiments.sections.interpret import section_interpret
from softprompt.experiments.sections.methods import section_methods
from softprompt.experiments.sections.transfer import section_transfer

SECTIONS: dict[str, Callable[[list[Result], Ctx], tuple[list[str], list[Claim]]]] = {
    "methods": section_methods, "length": section_length, "init": section_init, "transfer": section_transfer,
    "ensemble": section_ensemble, "interpret": section_interpret, "cost": section_cost,
}

__all__ = ["CLAIMS", "SECTIONS", "Claim", "Ctx"]
