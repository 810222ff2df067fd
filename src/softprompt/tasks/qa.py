"""Extractive QA answered by generation: SQuAD and the out-of-domain MRQA sets (DuoRC, RACE, RE).

Input "context: ... question: ...", target the first gold answer; EM/F1 take the max over all gold answers
(SQuAD normalisation). Only SQuAD's dev file (MRQA format) is available, so SQuAD is split *by passage*:
a passage goes to `train` when the first 8 hex digits of sha1(its whitespace-normalised text) mod 100 are
below `SQUAD_TRAIN_PERCENT`, else to `validation` (= `test`). The split is deterministic, independent of
file order, the same for the file and the hub copy, and no passage is in both — about 80% / 20% of the
2,067 passages. The out-of-domain sets are disjoint labelled slices of the official MRQA dev sets.
"""

from __future__ import annotations

import hashlib
from typing import Any

from softprompt.tasks.base import Example, Mode, Task, clean
from softprompt.tasks.data import HubSource, Source

SQUAD_TRAIN_PERCENT = 80
SQUAD_FILE = "SQuAD/dev/SQuAD.jsonl.gz"


def passage_bucket(context: str) -> int:
    """A stable number in [0, 100) for a passage: sha1 of its whitespace-normalised text."""
    return int(hashlib.sha1(clean(context).encode("utf-8")).hexdigest()[:8], 16) % 100


def is_train_passage(record: dict[str, Any]) -> bool:
    return passage_bucket(record["context"]) < SQUAD_TRAIN_PERCENT


def is_test_passage(record: dict[str, Any]) -> bool:
    return not is_train_passage(record)


_SQUAD_TEST = [Source(SQUAD_FILE, fmt="jsonl.gz", where=is_test_passage)]
OOD = {"duorc": "duorc", "race": "race", "relation_extraction": "relation_extraction"}
MRQA_SUBSETS = {"duorc": "DuoRC.ParaphraseRC", "race": "RACE", "relation_extraction": "RelationExtraction"}

# Every split file of the QA tasks, relative to the data dir.
FILES: dict[str, dict[str, list[Source]]] = {
    "squad": {
        "train": [Source(SQUAD_FILE, fmt="jsonl.gz", where=is_train_passage)],
        "validation": _SQUAD_TEST,
        "test": _SQUAD_TEST,
    },
    **{
        name: {
            "train": [Source(f"MRQA_OOD/oodomain_train/{stem}", fmt="squad-json")],
            "validation": [Source(f"MRQA_OOD/oodomain_val/{stem}", fmt="squad-json")],
        }
        for name, stem in OOD.items()
    },
}


def _answer_texts(answers: list[Any]) -> list[str]:
    """MRQA answers are strings; SQuAD v1.1 JSON answers are {"text", "answer_start"}."""
    texts = [clean(a["text"] if isinstance(a, dict) else a) for a in answers]
    return list(dict.fromkeys(t for t in texts if t))


def format_qa(r: dict[str, Any]) -> list[Example]:
    """One passage record (MRQA line or SQuAD paragraph) -> one example per question."""
    context = clean(r["context"])
    out = []
    for qa in r["qas"]:
        answers = _answer_texts(qa.get("answers", []))
        out.append(Example(
            input_text=f"context: {context} question: {clean(qa['question'])}",
            target_text=answers[0] if answers else "",
            answers=answers or None,
            meta={"id": qa.get("id") or qa.get("qid")},
        ))
    return out


def _hub_squad(row: dict[str, Any]) -> dict[str, Any]:
    answers = row["answers"]["text"] if isinstance(row["answers"], dict) else row["answers"]
    return {"context": row["context"], "qas": [{"id": row["id"], "question": row["question"], "answers": answers}]}


def _hub_mrqa(subset: str) -> Any:
    def row_map(row: dict[str, Any]) -> dict[str, Any] | None:
        if row.get("subset") != subset:
            return None
        return {"context": row["context"],
                "qas": [{"id": row.get("qid"), "question": row["question"], "answers": row["answers"]}]}
    return row_map


def tasks() -> dict[str, Task]:
    """The QA tasks by name."""
    metrics = ("em", "token_f1")
    out = {
        "squad": Task("squad", None, Mode.GENERATE, "f1", metrics, FILES["squad"], format_qa,
                      HubSource("rajpurkar/squad", None, {"train": "validation", "validation": "validation",
                                                          "test": "validation"}, _hub_squad),
                      notes=f"passage-level split of the SQuAD dev file: {SQUAD_TRAIN_PERCENT}% train by sha1 of the passage"),
    }
    for name in OOD:
        # The hub holds the full MRQA out-of-domain dev sets (its `test` split), not these slices.
        hub = HubSource("mrqa-workshop/mrqa", None, {"validation": "test"}, _hub_mrqa(MRQA_SUBSETS[name]))
        out[name] = Task(name, None, Mode.GENERATE, "f1", metrics, FILES[name], format_qa, hub,
                         notes="out-of-domain evaluation set: labelled slices of the MRQA dev set")
    return out
