"""Section 6 (paper §7): nearest neighbours of learned prompts; claims C8 and C9."""

from __future__ import annotations

from typing import Any

from softprompt.experiments.report_format import (
    NOT_ENOUGH,
    Result,
    mark,
    mean,
    model_of,
    param,
    pct,
    table,
)
from softprompt.experiments.sections.common import (
    Claim,
    Ctx,
)
from softprompt.experiments.stats import (
    CONTRADICTED,
    HOLDS,
    INCONCLUSIVE,
    bootstrap,
)


def section_interpret(results: list[Result], ctx: Ctx) -> tuple[list[str], list[Claim]]:
    """§7: label words among each position's top-5 neighbours, init vs trained, and clustering; C8, C9."""
    found = [r for r in results if isinstance((r.get("interpretation") or {}).get("trained"), dict)]

    def words(report: Any) -> dict[str, int]:
        summary = (report or {}).get("summary") or {}
        return {w: len(pos) for w, pos in (summary.get("label_words") or {}).items()}

    def shared(report: Any) -> str:
        s = (report or {}).get("summary") or {}
        return f"{s.get('shared_top1_positions', 0)}/{s['positions']}" if "positions" in s else "—"
    rows, ev8, flags8, fractions, init_fractions = [], [], [], [], []
    for r in found:
        init, trained = r["interpretation"].get("init"), r["interpretation"]["trained"]
        w0, w1 = words(init), words(trained)
        rows.append([f"{r.get('study')}/{r['variant']}", model_of(r), r.get("task"), param(r, "init"), param(r, "prompt_length"),
                     ", ".join(f"{w} {c}" for w, c in w0.items()) or "—", ", ".join(f"{w} {c}" for w, c in w1.items()) or "—",
                     f"{shared(init)} → {shared(trained)}"])
        for report, out in ((trained, fractions), (init, init_fractions)):
            s = (report or {}).get("summary") or {}
            if s.get("positions"):
                out.append(s.get("shared_top1_positions", 0) / s["positions"])
        at_init = [w for w, c in w0.items() if c]
        if param(r, "init") == "class-labels" and at_init:
            kept = all(w1.get(w) for w in at_init)
            flags8.append(float(kept))
            ev8.append(f"{r['variant']}: at init {', '.join(at_init)}; after training "
                       f"{', '.join(w for w in at_init if w1.get(w)) or 'none'} {mark(kept)}")
    body = table(["result", "model", "task", "init", "P", "label words at init (positions)",
                  "label words trained (positions)", "shared top-1 positions, init → trained"], rows)
    example = next((r for r in found if param(r, "init") == "class-labels"), found[0] if found else None)
    if example is not None:
        neighbours = example["interpretation"]["trained"].get("neighbours") or []
        body += [f"Nearest tokens (cosine, top-5) of the first positions of the trained prompt `{example['variant']}`:", "",
                 *table(["position", "neighbours (token score)"], [[i, " · ".join(f"{n.get('token')!r} {n.get('score', 0):.2f}" for n in row)]
                                                                   for i, row in enumerate(neighbours[:5])])]
    rule8 = ("per class-label-init prompt with label words among its init neighbours: every such word is still found "
             "after training; holds when the bootstrap interval (over prompts) of the share kept lies above 1/2, "
             "contradicted when below")
    share8 = bootstrap(flags8) if flags8 else None
    verdict8 = NOT_ENOUGH if share8 is None else HOLDS if share8.low > 0.5 else CONTRADICTED if share8.high < 0.5 else INCONCLUSIVE
    frac, frac0 = mean(fractions), mean(init_fractions)
    band = bootstrap(fractions) if fractions else None
    verdict9 = NOT_ENOUGH if band is None else HOLDS if band.low > 0.1 else CONTRADICTED if band.high < 0.02 else INCONCLUSIVE
    ev9 = [f"mean shared top-1 fraction after training {pct(frac)}% over {len(fractions)} prompts"
           + (f", 95% interval [{pct(band.low)}, {pct(band.high)}]" if band else "") + f" (at init: {pct(frac0)}%)"]
    rule9 = ("mean over trained prompts of shared_top1_positions / positions, bootstrap over prompts: interval above "
             "10% holds, below 2% contradicted, else inconclusive")
    kept = "—" if share8 is None else f"{pct(share8.mean)}% [{pct(share8.low)}, {pct(share8.high)}]"
    return body, [Claim("C8", verdict8, f"labels kept in {kept} of {len(flags8)} prompts", rule8, ev8),
                  Claim("C9", verdict9, f"{pct(frac)}% of positions share their top-1 token", rule9, ev9)]
