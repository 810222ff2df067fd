"""Regenerate experiments/REPORT.md and its plots from the result JSON files alone (no model, no torch).

Each study folder holds one JSON file per variant (`results/<study>/<variant>.json`). Every claim of Lester,
Al-Rfou & Constant (2021) that a study tests gets a verdict computed from those numbers by a rule printed next
to it, so the report can be rebuilt after every resumed session and never says more than the data does.
The sections, one function per study, are in `sections.py`; the helpers they share with this page in
`report_format.py`; drawing is in `plots.py`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from softprompt.experiments.report_format import NOT_ENOUGH, Result, fmt_hours, main_of, model_of, table
from softprompt.experiments.sections import CLAIMS, SECTIONS, Claim, Ctx

STUDIES = ("methods", "length", "init", "transfer", "ensemble", "interpret", "cost")
TITLES = {
    "methods": "Prompt tuning vs model tuning vs prompt design (Figure 1)",
    "length": "Prompt length (Figure 3a)", "init": "Prompt initialisation (Figure 3b)",
    "transfer": "Domain transfer (Tables 1 and 2)", "ensemble": "Prompt ensembling (Table 3)",
    "interpret": "Interpreting learned prompts (§7)", "cost": "Parameters and serving cost (Figure 4, §2)",
}


@dataclass
class Loaded:
    """Result files by study folder (each sorted by file name), and what was left out."""

    studies: dict[str, list[Result]] = field(default_factory=dict)
    quick: int = 0
    unreadable: list[str] = field(default_factory=list)


# --- reading ---------------------------------------------------------------------------------------------

def load_results(results_dir: Path) -> Loaded:
    """Read results_dir/<study>/*.json; smoke-test files ("quick": true) are counted and left out."""
    loaded = Loaded()
    folders = sorted(p for p in results_dir.iterdir() if p.is_dir()) if results_dir.is_dir() else []
    for folder in folders:
        for path in sorted(folder.glob("*.json")):
            try:
                data = json.loads(path.read_text())
            except (OSError, UnicodeDecodeError, json.JSONDecodeError):
                data = None
            if not isinstance(data, dict):
                loaded.unreadable.append(f"{folder.name}/{path.name}")
            elif data.get("quick"):
                loaded.quick += 1
            else:
                loaded.studies.setdefault(folder.name, []).append({**data, "variant": data.get("variant") or path.stem})
    return loaded


# --- the report ------------------------------------------------------------------------------------------

def interpretations(results: Iterable[Result]) -> list[Result]:
    """Results from any study that carry an interpretation, each run once (reused copies share a fingerprint)."""
    seen: set[str] = set()
    out = []
    for r in sorted(results, key=lambda r: bool(r.get("reused_from"))):  # stable: the original before its copies
        key = str(r.get("fingerprint") or f"{r.get('study')}/{r['variant']}")
        if r.get("interpretation") and key not in seen:
            seen.add(key)
            out.append(r)
    return out


def majority_scores(results: Iterable[Result]) -> dict[tuple[str, str], float]:
    """(model label, task) -> the majority-class baseline's main metric, from the results that have one."""
    out = {}
    for r in results:
        if r.get("method") == "majority" and (value := main_of(r.get("metrics"))) is not None:
            out[(model_of(r), str(r.get("task")))] = value
    return out


def _claim_lines(c: Claim) -> list[str]:
    return [f"**{c.cid}. {CLAIMS[c.cid][1]}** — verdict: **{c.verdict}** ({c.summary})", "", f"- Rule: {c.rule}",
            *(f"- {e}" for e in c.evidence), ""]


def _meta_lines(meta: dict[str, Any] | None, present: set[str]) -> list[str]:
    if not meta:
        return []
    lines = [str(meta["description"]).strip(), ""] if meta.get("description") else []
    budget = [f"Budget: {', '.join(f'{k}={v}' for k, v in meta['budget'].items())}"] if meta.get("budget") else []
    budget += [f"planned ≈ {meta['hours']} h"] if meta.get("hours") is not None else []
    lines += ["; ".join(budget), ""] if budget else []
    missing = [v for v in meta.get("variants", []) if v not in present]
    if missing:  # optional key: the variant ids the study expands to, so partial studies say what is left
        lines += [f"Not run yet: {len(missing)} of {len(meta['variants'])} variants ({', '.join(missing)}).", ""]
    return lines


def _plan_lines(meta: dict[str, dict], loaded: Loaded) -> list[str]:
    """How far the suite is, and how each number was measured."""
    planned = [v for m in meta.values() for v in m.get("variants", [])]
    if not planned:
        return []
    have = {(s, r.get("variant")) for s, rs in loaded.studies.items() for r in rs}
    done = sum((study, v) in have for study, m in meta.items() for v in m.get("variants", []))
    return [
        f"- Progress: {done} of {len(planned)} planned variants have results (`softprompt experiments plan` lists "
        "them with the hours each still needs on this CPU kind; `make experiments` runs them, skipping finished ones).",
        "- Protocol (v2, `experiments/protocol.py`): budgets are optimizer steps, the same on every CPU kind; a training "
        "run picks its best step on a selection split carved from train (BANKING77: its carved validation split) and "
        "its prompt is scored once on the report split (dev; BANKING77 test), never selected on. Every trained cell "
        "has 3 seeds; intervals are 95% (Student's t over seeds, or a bootstrap over examples for a single run); a "
        "claim holds only where its interval excludes the opposite.",
    ]


def _machine_line(results: list[dict]) -> str:
    """Compute by CPU kind: the same step budget takes about twice as long in fp32 (no native bf16)."""
    seconds: dict[str, float] = {}
    counts: dict[str, int] = {}
    for r in results:
        bf16 = (r.get("machine") or {}).get("cpu_bf16")
        kind = "unrecorded" if bf16 is None else "bf16 CPU" if bf16 else "fp32-only (AVX2) CPU"
        seconds[kind] = seconds.get(kind, 0.0) + float(r.get("wall_seconds") or 0)
        counts[kind] = counts.get(kind, 0) + 1
    parts = [f"{kind}: {counts[kind]} results, {fmt_hours(seconds[kind])}" for kind in sorted(counts)]
    return "- Compute by CPU kind: " + ("; ".join(parts) if parts else "none") + "."


def write_report(results_dir: Path, out_md: Path, plots_dir: Path, studies_meta: dict[str, dict] | None = None) -> Path:
    """Write out_md (markdown) and its PNG plots from results_dir/<study>/<variant>.json; returns out_md.

    Works on a partial or empty results dir: missing studies say "not run yet" and their claims "not enough results".
    """
    results_dir, out_md, plots_dir = Path(results_dir), Path(out_md), Path(plots_dir)
    loaded, meta = load_results(results_dir), studies_meta or {}
    every = [r for s in sorted(loaded.studies) for r in loaded.studies[s]]
    ctx = Ctx(plots_dir, out_md.parent, majority_scores(every))
    own = [r for r in every if not r.get("reused_from")]  # a reused result's compute was spent once, in its donor study
    sections, claims = [], []
    for number, study in enumerate(STUDIES, 1):
        rs = loaded.studies.get(study, [])
        pool = interpretations(every) if study == "interpret" else rs
        title = (meta.get(study) or {}).get("title") or TITLES[study]
        lines = [f"## {number}. {title} (`{study}`)", "", *_meta_lines(meta.get(study), {r["variant"] for r in rs})]
        try:
            body, found = SECTIONS[study](pool, ctx)
        except Exception as err:  # noqa: BLE001 — one odd file must not block the whole report
            body, found = [f"_Could not render this section: {type(err).__name__}: {err}_", ""], []
        found += [Claim(cid, NOT_ENOUGH, "section not rendered", "—") for cid, (s, _) in CLAIMS.items()
                  if s == study and cid not in {c.cid for c in found}]
        seconds = sum(float(r.get("wall_seconds") or 0) for r in rs if not r.get("reused_from"))
        count = (f"{len(pool)} interpreted prompt(s), from studies {', '.join(sorted({str(r.get('study')) for r in pool}))}"
                 if study == "interpret" else f"{len(pool)} result(s); compute {fmt_hours(seconds)}")
        lines += [f"{count}.", "", *body] if pool else ["**Not run yet.**", ""]
        lines += ["#### The paper's claims", "", *(line for c in found for line in _claim_lines(c))]
        sections.append(lines)
        claims += found
    latest = max((str(r["finished_at"]) for r in every if r.get("finished_at")), default="—")
    others = sorted(set(loaded.studies) - set(STUDIES))
    head = [
        "# Prompt tuning at small scale: experiment report", "",
        f"Generated by `softprompt experiments report` from `{Path(os.path.relpath(results_dir, out_md.parent.parent)).as_posix()}/*/` "
        "JSON files; do not edit by hand, rerun the command. Paper: Lester, Al-Rfou & Constant (2021), "
        "*The Power of Scale for Parameter-Efficient Prompt Tuning*.", "",
        f"- Results: {len(every)} files ({len(every) - len(own)} reused from another study); latest finished_at {latest}.",
        f"- Ignored: {loaded.quick} smoke-test files (`\"quick\": true`, never reported); "
        f"{len(loaded.unreadable)} unreadable{': ' + ', '.join(loaded.unreadable) if loaded.unreadable else ''}.",
        f"- Total compute: {fmt_hours(sum(float(r.get('wall_seconds') or 0) for r in own))}, the sum of wall_seconds "
        "(a result reused by another study counted once).",
        _machine_line(own),
        "- Metrics: the report split's main metric per task as percentages with one decimal; differences in percentage "
        "points (pp); a cell is the mean of its seeds, shown with the half-width of its 95% interval.",
        *_plan_lines(meta, loaded),
        *([f"- Result folders without a section: {', '.join(others)}."] if others else []), "",
        "## Summary of the paper's claims", "",
        *table(["claim", "study", "statement", "verdict", "evidence"],
               [[c.cid, CLAIMS[c.cid][0], CLAIMS[c.cid][1], f"**{c.verdict}**", c.summary] for c in claims]),
    ]
    text = "\n".join(head + [line for s in sections for line in s]).rstrip() + "\n"
    out_md.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_md.with_name(out_md.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, out_md)  # readers never see half a report
    return out_md
