"""Sentence-pair and single-sentence classification: MRPC, QQP (GLUE) and sentiment (SST-2, CR, MR, MPQA).

Two choices serve the paper's domain-shift experiments (prompts trained on one task, evaluated zero-shot
on another): MRPC and QQP share one format ("sentence1: ... sentence2: ...") and one verbalizer
(`not_equivalent`/`equivalent`, T5's MRPC words), and the four sentiment tasks share "sentence: ..." with
`negative`/`positive`. A prompt trained on QQP therefore scores MRPC as is, and SST-2 -> CR/MR/MPQA.
"""

from __future__ import annotations

from typing import Any

from softprompt.tasks.base import Example, Mode, Task, choice_example, clean
from softprompt.tasks.data import HubSource, Source

LMBFF_SEEDS = (13, 21, 42, 87, 100)


def _lmbff(folder: str, fmt: str, columns: tuple[str, ...] | None, header: bool) -> dict[str, list[Source]]:
    """LM-BFF 16-shot-per-class samples (drawn from train): splits `k16-<seed>-train` / `k16-<seed>-dev`."""
    return {
        f"k16-{seed}-{part}": [Source(f"{folder}/lmbff_k16/16-{seed}/{part}.{fmt}", fmt=fmt, columns=columns,
                                      header=header)]
        for seed in LMBFF_SEEDS for part in ("train", "dev")
    }


_MRPC = dict(fmt="tsv", encoding="utf-8-sig", quoting="none")  # BOM + bare quotes inside sentences
_SENT_CSV = dict(fmt="csv", header=False, columns=("label", "sentence"))

# Every split file of these tasks, relative to the data dir. CR/MR/MPQA have no dev set: `validation`
# is LM-BFF's test set (the zero-shot evaluation target of the sentiment-shift experiment).
FILES: dict[str, dict[str, list[Source]]] = {
    "mrpc": {
        "train": [Source("MRPC/train.tsv", **_MRPC)],
        "validation": [Source("MRPC/dev.tsv", **_MRPC)],
        "test": [Source("MRPC/msr_paraphrase_test.txt", **_MRPC)],
    },
    "qqp": {  # all rows come from GLUE QQP's train split; pcp_subset/dev.json is a held-out sample of it
        "train": [Source("QQP/pcp_subset/train.json", fmt="json-dict")],
        "validation": [Source("QQP/pcp_subset/dev.json", fmt="json-dict")],
        **_lmbff("QQP", "tsv", None, True),
    },
    "sst2": {"train": [Source("SST-2/train.tsv", fmt="tsv")], "validation": [Source("SST-2/dev.tsv", fmt="tsv")]},
    **{
        name: {
            "train": [Source(f"{folder}/train_full.jsonl")],
            "validation": [Source(f"{folder}/test.csv", **_SENT_CSV)],
            "test": [Source(f"{folder}/test.csv", **_SENT_CSV)],
            **_lmbff(folder, "csv", ("label", "sentence"), False),
        }
        for name, folder in [("cr", "CR"), ("mr", "MR"), ("mpqa", "MPQA")]
    },
}

PARA_WORDS = ["not_equivalent", "equivalent"]
SENTIMENT_WORDS = ["negative", "positive"]


def _int_label(value: Any) -> int | None:
    if value is None or value == "" or int(value) < 0:
        return None
    return int(value)


def format_pair(r: dict[str, Any]) -> list[Example]:
    """MRPC tsv (`#1 String`), QQP json (`text_a`) and QQP tsv (`question1`) rows alike."""
    first = r.get("#1 String", r.get("text_a", r.get("question1", r.get("sentence1"))))
    second = r.get("#2 String", r.get("text_b", r.get("question2", r.get("sentence2"))))
    label = r.get("Quality", r.get("label", r.get("is_duplicate")))
    text = f"sentence1: {clean(first)} sentence2: {clean(second)}"
    return [choice_example(text, PARA_WORDS, _int_label(label))]


def unquote_csv_leftover(sentence: str) -> str:
    """CR/MR/MPQA jsonl keep some sentences' CSV quoting: `"a ""b"" c"` -> `a "b" c`."""
    if len(sentence) >= 2 and sentence.startswith('"') and sentence.endswith('"'):
        return sentence[1:-1].replace('""', '"')
    return sentence


def format_sentence(r: dict[str, Any]) -> list[Example]:
    """SST-2 tsv, sentiment jsonl and csv rows: `sentence` + label 0 negative / 1 positive."""
    text = f"sentence: {clean(unquote_csv_leftover(str(r.get('sentence', r.get('text', '')))))}"
    return [choice_example(text, SENTIMENT_WORDS, _int_label(r.get("label")))]


def _hub_pair(row: dict[str, Any]) -> dict[str, Any]:
    return {"sentence1": row.get("sentence1", row.get("question1")),
            "sentence2": row.get("sentence2", row.get("question2")), "label": row["label"]}


def _hub_sentence(row: dict[str, Any]) -> dict[str, Any]:
    return {"sentence": row.get("sentence", row.get("text")), "label": row["label"]}


_SPLITS = {"train": "train", "validation": "validation"}


def tasks() -> dict[str, Task]:
    """The GLUE and sentiment tasks by name."""
    pair = ("accuracy", "f1")
    acc = ("accuracy",)

    def sentiment(name: str, hub: HubSource | None) -> Task:
        return Task(name, SENTIMENT_WORDS, Mode.RANK, "accuracy", acc, FILES[name], format_sentence, hub,
                    notes="validation = test = LM-BFF's 2,000-sentence test set (no dev set exists)")

    return {
        "mrpc": Task("mrpc", PARA_WORDS, Mode.RANK, "average", pair, FILES["mrpc"], format_pair,
                     HubSource("nyu-mll/glue", "mrpc", _SPLITS, _hub_pair), positive="equivalent",
                     notes="average = mean of accuracy and F1 of `equivalent` (GLUE)"),
        "qqp": Task("qqp", PARA_WORDS, Mode.RANK, "average", pair, FILES["qqp"], format_pair,
                    HubSource("nyu-mll/glue", "qqp", _SPLITS, _hub_pair), positive="equivalent",
                    notes="train/validation are subsets of GLUE QQP train; label words shared with MRPC"),
        "sst2": Task("sst2", SENTIMENT_WORDS, Mode.RANK, "accuracy", acc, FILES["sst2"], format_sentence,
                     HubSource("nyu-mll/glue", "sst2", _SPLITS, _hub_sentence)),
        "cr": sentiment("cr", HubSource("SetFit/SentEval-CR", None, {"train": "train", "validation": "test"},
                                        _hub_sentence)),
        "mr": sentiment("mr", HubSource("cornell-movie-review-data/rotten_tomatoes", None,
                                        {"train": "train", "validation": "test"}, _hub_sentence)),
        "mpqa": sentiment("mpqa", None),
    }
