"""Section 4 (paper Tables 1 and 2): prompt tuning vs model tuning on train -> eval pairs; claim C6."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from softprompt.experiments import plots
from softprompt.experiments.evidence import (
    compare,
    counted,
    is_informative,
)
from softprompt.experiments.report_format import (
    NOT_ENOUGH,
    Result,
    main_of,
    mean,
    model_of,
    model_order,
    pct,
    pp,
    table,
)
from softprompt.experiments.sections.common import (
    IN_DOMAIN_CONTROLS,
    Claim,
    Ctx,
    _cell,
    _tally,
)
from softprompt.experiments.stats import (
    CLAIM_RULE,
    claim_verdict,
)


def section_transfer(results: list[Result], ctx: Ctx) -> tuple[list[str], list[Claim]]:
    """Tables 1 and 2: PT vs MT on each train → eval pair (in-domain, control, out-of-domain); C6."""
    metrics: dict[tuple[float, str, str, str, str], list[Any]] = defaultdict(list)
    for r in results:
        model, train = model_of(r), str(r.get("task"))
        transfer = r.get("transfer") if isinstance(r.get("transfer"), dict) else {}
        for target, m in [(train, r.get("metrics")), *sorted(transfer.items())]:
            metrics[(model_order(model)[0], model, train, str(target), str(r.get("method")))].append(m)

    def value(key: tuple[float, str, str, str], method: str, name: str | None = None) -> float | None:
        return mean(main_of(m if name is None else (m or {}).get("all"), name) for m in metrics.get((*key, method), []))
    pairs = sorted({k[:4] for k in metrics}, key=lambda k: (k[0], k[1], k[2], k[3] != k[2], k[3]))
    rows, groups, c6 = [], [], []
    for key in pairs:
        _, model, train, target = key
        kind = "in-domain" if target == train else "in-domain control" if (train, target) in IN_DOMAIN_CONTROLS else "out-of-domain"
        ptv, mtv = value(key, "prompt-tuning"), value(key, "model-tuning")
        diff = None if ptv is None or mtv is None else ptv - mtv
        metric = next((m.get("main_metric") for m in metrics.get((*key, "prompt-tuning"), []) + metrics.get((*key, "model-tuning"), [])
                       if isinstance(m, dict)), "")
        rows.append([model, f"{train} → {target}", kind, metric, pct(ptv), pct(mtv), pp(diff)])
        groups.append((f"{train}→{target}" + (f" ({model})" if len({p[1] for p in pairs}) > 1 else ""), ptv, mtv))
        pt_cell, mt_cell = (_cell(metrics.get((*key, m), [])) for m in ("prompt-tuning", "model-tuning"))
        if kind == "out-of-domain" and pt_cell and mt_cell:
            # Informative: either method's interval above 0 — the targets have no majority baseline here.
            c6.append(compare(f"{model} {train} → {target}", pt_cell, mt_cell, is_informative({"pt": pt_cell, "mt": mt_cell}, None)))
    body = table(["model", "train → eval", "kind", "metric", "prompt tuning", "model tuning", "PT − MT (pp)"], rows)
    if groups:
        body += [ctx.figure("transfer.png", "PT vs MT per train → eval pair", lambda p: plots.grouped_bars(
            p, "Domain transfer (Tables 1, 2)", [g[0] for g in groups],
            {"prompt tuning": [g[1] for g in groups], "model tuning": [g[2] for g in groups]}, "main metric (%)")), ""]
    body += ["The paper's Tables 1 and 2 (T5-XXL) are not quoted beside these rows: no citable copy of their figures "
             "was at hand, and figures from memory are not evidence.", ""]
    rule = (f"on each out-of-domain pair with both methods (not the in-domain row, not the control {sorted(IN_DOMAIN_CONTROLS)}), "
            f"the interval of PT − MT over seeds; {CLAIM_RULE}")
    return body, [Claim("C6", claim_verdict(counted(c6)) if c6 else NOT_ENOUGH, _tally(c6), rule,
                        [c.line("PT − MT") for c in c6])]
