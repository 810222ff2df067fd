"""Merge several `time_to_accuracy.py --out` files into one (a long study runs in pieces: per task, or a system
rerun after a fix). An input may itself be an earlier merge. A later file's run of a system replaces an earlier one; every run keeps the command and date
that produced it, the comparisons (`ours_minus_*_pp`, `time_to_peft30_ratio`) are recomputed and each task's PNG redrawn.

    python benchmarks/merge_time_to_accuracy.py benchmarks/results/time_to_accuracy.json a.json b.json ...
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from time_to_accuracy import compare, plot  # noqa: E402  (a sibling benchmark)


def merge(files: list[Path]) -> dict[str, Any]:
    out: dict[str, Any] = {"sources": [], "tasks": {}}
    for path in files:
        data = json.loads(path.read_text())
        out |= {k: data[k] for k in ("benchmark", "threads", "validation", "peft_documented")}
        if "sources" in data:  # an earlier merge: its runs keep their own source and date
            out["machine"] = data["machine"]
            out["sources"] += data["sources"]
            for task, entry in data["tasks"].items():
                out["tasks"].setdefault(task, {"runs": {}})["runs"].update(entry["runs"])
            continue
        out["machine"] = {k: v for k, v in data["machine"].items() if k != "gemm_2048_peak"}
        out["sources"].append({k: data.get(k) for k in ("command", "date", "wall_seconds", "checkpoint_minutes")}
                              | {"gemm_2048_peak": data["machine"]["gemm_2048_peak"]})
        for task, entry in data["tasks"].items():
            runs = out["tasks"].setdefault(task, {"runs": {}})["runs"]
            for name, run in entry["runs"].items():
                runs[name] = run | {"source": data["command"], "date": data["date"]}
    for entry in out["tasks"].values():
        entry.update(compare(entry["runs"]))
    return out


def main() -> None:
    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    result = merge([Path(p) for p in sys.argv[2:]])
    out = Path(sys.argv[1])
    out.write_text(json.dumps(result, indent=2) + "\n")
    # One PNG per task beside the JSON, as the benchmark writes them; another merge's name keeps its own PNGs
    # (a CPU kind's merge does not overwrite the main file's).
    for task, entry in result["tasks"].items():
        plot(task, entry["runs"], out.with_name(f"{out.stem}_{task}.png"))
    print(json.dumps({t: {k: v for k, v in e.items() if k != "runs"} for t, e in result["tasks"].items()}, indent=1))


if __name__ == "__main__":
    main()
