"""Section 7 (paper §2, Figure 4): parameters and bytes per task; claim C10."""

from __future__ import annotations

import re

from softprompt.experiments import plots
from softprompt.experiments.report_format import (
    NOT_ENOUGH,
    Result,
    fmt_bytes,
    model_of,
    model_order,
    table,
)
from softprompt.experiments.sections.common import (
    Claim,
    Ctx,
)


def section_cost(results: list[Result], ctx: Ctx) -> tuple[list[str], list[Claim]]:
    """Figure 4 and §2: parameters and bytes per task per method, serving N tasks; C10 (the P=100 fraction)."""
    costs = {c.get("model_label") or model_of(r): c for r in results if isinstance(c := r.get("cost"), dict)}
    body: list[str] = []
    ev, fractions = [], []
    for model in sorted(costs, key=model_order):
        c = costs[model]
        body += [f"### {model}", "", f"H={c.get('H')}, layers={c.get('layers')}, kv_dim={c.get('kv_dim')}, "
                 f"total parameters={c.get('total_parameters', 0):,}.", "",
                 *table(["method", "parameters per task", "% of model", "fp32", "on disk"],
                        [[x.get("method"), f"{x.get('parameters', 0):,}", f"{100 * x.get('fraction_of_model', 0):.3g}%",
                          fmt_bytes(x.get("bytes_fp32")), fmt_bytes(x.get("bytes_on_disk"))] for x in c.get("rows", [])]),
                 "Serving N tasks from one machine:", "",
                 *table(["tasks", "method", "memory"], [[s.get("tasks"), s.get("method"), fmt_bytes(s.get("bytes"))]
                                                        for s in c.get("serving", [])])]
        for x in c.get("rows", []):
            if re.search(r"prompt tuning.*P\s*=\s*100\b", str(x.get("method")), re.IGNORECASE):
                fractions.append(x.get("fraction_of_model", 1.0))
                ev.append(f"{model}: prompt tuning at P=100 trains {x.get('parameters', 0):,} parameters, "
                          f"{100 * x.get('fraction_of_model', 0):.3g}% of the model")
    if costs:
        methods = list(dict.fromkeys(str(x.get("method")) for c in costs.values() for x in c.get("rows", [])))
        values = {model: [next((float(x["parameters"]) for x in costs[model].get("rows", []) if x.get("method") == meth), None)
                          for meth in methods] for model in sorted(costs, key=model_order)}
        body += [ctx.figure("cost.png", "parameters per task per method (log scale)", lambda p: plots.grouped_bars(
            p, "Task-specific parameters (Figure 4)", methods, values, "parameters per task", percent=False, log=True,
            legend=True)), ""]
    verdict = NOT_ENOUGH if not fractions else "holds" if max(fractions) < 0.001 else "see numbers"
    rule = ("at our scale the paper's < 0.01% cannot be expected (fewer parameters per model); holds if prompt tuning at "
            "P=100 is < 0.1% of the model for every model, else see numbers")
    summary = ", ".join(f"{100 * f:.3g}%" for f in fractions) or "no cost result"
    return body, [Claim("C10", verdict, f"P=100 fraction: {summary}", rule, ev)]
