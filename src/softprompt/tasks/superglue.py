"""SuperGLUE tasks as text-to-text, with T5's label words (Lester et al. 2021 use T5's formats).

Inputs are readable fields ("premise: ... hypothesis: ..."); targets are label words (`entailment`,
`True`) or, for COPA and ReCoRD, the text of the correct option, ranked against the example's own options.
WSC is the SuperGLUE span-pair version (does the pronoun refer to the noun? True/False), not T5's
`wsc_simple` referent generation, because the data here are the official span-pair files.
"""

from __future__ import annotations

import re
from typing import Any

from softprompt.tasks.base import Example, Mode, Task, choice_example, clean
from softprompt.tasks.data import HubSource, Source

# Every split file of every SuperGLUE task, relative to the data dir. `fewglue-*`: the 32-example FewGLUE
# samples (both drawn from the official train set).
FILES: dict[str, dict[str, list[Source]]] = {
    "boolq": {
        "train": [Source("BoolQ/BoolQ.zip", member="BoolQ/train.jsonl")],  # kept zipped as published
        "validation": [Source("BoolQ/val.jsonl")],
    },
    "cb": {"train": [Source("CB/train.jsonl")], "validation": [Source("CB/val.jsonl")]},
    "copa": {"train": [Source("COPA/train.jsonl")], "validation": [Source("COPA/val.jsonl")]},
    "multirc": {"train": [Source("MultiRC/train.jsonl")], "validation": [Source("MultiRC/val.jsonl")]},
    "record": {  # only FewGLUE samples exist here; both come from the official train set
        "train": [Source("ReCoRD/fewglue_train32.jsonl")],
        "validation": [Source("ReCoRD/fewglue_dev32.jsonl")],
    },
    "rte": {"train": [Source("RTE/train.jsonl")], "validation": [Source("RTE/val.jsonl")]},
    "wic": {"train": [Source("WiC/train.jsonl")], "validation": [Source("WiC/val.jsonl")]},
    "wsc": {"train": [Source("WSC/train.jsonl")], "validation": [Source("WSC/val.jsonl")]},
}
for _name, _folder in [("boolq", "BoolQ"), ("cb", "CB"), ("copa", "COPA"), ("multirc", "MultiRC"),
                       ("rte", "RTE"), ("wic", "WiC"), ("wsc", "WSC")]:
    FILES[_name]["fewglue-train"] = [Source(f"FewGLUE_32dev/{_folder}/train.jsonl")]
    FILES[_name]["fewglue-dev32"] = [Source(f"FewGLUE_32dev/{_folder}/dev32.jsonl")]

HUB_ID = "aps/super_glue"  # the parquet copy of `super_glue` (script datasets no longer load)
HUB_SPLITS = {"train": "train", "validation": "validation"}

BOOL_WORDS = ["False", "True"]  # T5's label names for BoolQ, WiC, WSC, MultiRC: index = JSON bool
CB_WORDS = ["entailment", "contradiction", "neutral"]  # label ids 0/1/2 in the hub's super_glue/cb
RTE_WORDS = ["entailment", "not_entailment"]


def _bool_label(value: Any) -> int | None:
    """JSON true/false, hub 0/1, or absent (test files) -> 1/0/None."""
    if value is None:
        return None
    if isinstance(value, str):
        return int(value.strip().lower() in ("true", "1"))
    return int(bool(value))


def _word_label(value: Any, words: list[str]) -> int | None:
    if value is None:
        return None
    return int(value) if isinstance(value, int) else words.index(value)


def format_boolq(r: dict[str, Any]) -> list[Example]:
    text = f"passage: {clean(r['passage'])} question: {clean(r['question'])}"
    return [choice_example(text, BOOL_WORDS, _bool_label(r.get("label")), meta={"idx": r.get("idx")})]


def format_cb(r: dict[str, Any]) -> list[Example]:
    text = f"premise: {clean(r['premise'])} hypothesis: {clean(r['hypothesis'])}"
    return [choice_example(text, CB_WORDS, _word_label(r.get("label"), CB_WORDS), meta={"idx": r.get("idx")})]


def format_rte(r: dict[str, Any]) -> list[Example]:
    text = f"premise: {clean(r['premise'])} hypothesis: {clean(r['hypothesis'])}"
    return [choice_example(text, RTE_WORDS, _word_label(r.get("label"), RTE_WORDS), meta={"idx": r.get("idx")})]


def format_copa(r: dict[str, Any]) -> list[Example]:
    # The options are the targets: the model ranks the two alternatives' texts after the premise.
    choices = [clean(r["choice1"]), clean(r["choice2"])]
    text = (f"premise: {clean(r['premise'])} choice1: {choices[0]} choice2: {choices[1]} "
            f"question: {r['question']}")
    label = None if r.get("label") is None else int(r["label"])
    return [choice_example(text, choices, label, meta={"idx": r.get("idx"), "question": r["question"]})]


def format_wic(r: dict[str, Any]) -> list[Example]:
    text = f"sentence1: {clean(r['sentence1'])} sentence2: {clean(r['sentence2'])} word: {r['word']}"
    return [choice_example(text, BOOL_WORDS, _bool_label(r.get("label")), meta={"idx": r.get("idx")})]


def mark_span(text: str, index: int, span: str) -> str:
    """Wrap the words of `span` starting at word `index` of `text.split()` in asterisks, as T5 marks the
    pronoun; a few official rows have indices that do not match their span — those stay unmarked."""
    words = text.split()
    n = len(span.split())
    strip = ".,;:!?'\"()"
    if 0 <= index < len(words) and words[index].strip(strip).lower() == span.split()[0].strip(strip).lower():
        words[index] = "*" + words[index]
        words[index + n - 1] = words[index + n - 1] + "*"
    return " ".join(words)


def format_wsc(r: dict[str, Any]) -> list[Example]:
    t = r["target"]
    marked = mark_span(r["text"], int(t["span2_index"]), t["span2_text"])
    text = f'text: {marked} question: does "{t["span2_text"]}" refer to "{t["span1_text"]}"?'
    return [choice_example(text, BOOL_WORDS, _bool_label(r.get("label")), meta={"idx": r.get("idx")})]


def format_multirc(r: dict[str, Any]) -> list[Example]:
    """One example per answer option (MultiRC is scored per option); group = passage-question id."""
    passage = r["passage"]
    ptext = clean(re.sub(r"<br>|<b>Sent \d+: </b>", " ", passage["text"]))  # older releases carry HTML
    out = []
    for q in passage["questions"]:
        group = f"{r.get('idx')}-{q.get('idx')}"
        for a in q["answers"]:
            text = f"paragraph: {ptext} question: {clean(q['question'])} answer: {clean(a['text'])}"
            out.append(choice_example(text, BOOL_WORDS, _bool_label(a.get("label")), group=group,
                                      meta={"idx": a.get("idx")}))
    return out


def record_passage(text: str) -> str:
    """T5's ReCoRD cleaning: '@highlight' bullet lines become sentences."""
    text = re.sub(r"([.?!\"'])\n@highlight\n", r"\1 ", text)
    return clean(re.sub(r"\n@highlight\n", ". ", text))


def format_record(r: dict[str, Any]) -> list[Example]:
    """One example per query; the options are the passage's entities (end offsets are inclusive)."""
    raw = r["passage"]["text"]
    entities = r.get("entity_texts") or [raw[e["start"]: e["end"] + 1] for e in r["passage"]["entities"]]
    choices = list(dict.fromkeys(clean(e) for e in entities))
    passage = record_passage(raw)
    out = []
    for qa in r["qas"]:
        answers = list(dict.fromkeys(clean(a["text"]) for a in qa.get("answers", [])))
        for answer in answers:
            if answer not in choices:
                choices.append(answer)
        label = choices.index(answers[0]) if answers else None
        text = f"passage: {passage} query: {clean(qa['query'])}"
        out.append(choice_example(text, choices, label, answers=answers or None,
                                  meta={"idx": qa.get("idx"), "passage_idx": r.get("idx")}))
    return out


# Hub rows -> the file rows above. Label ids follow the hub's class lists.
def _hub_cb(row: dict[str, Any]) -> dict[str, Any]:
    return {**row, "label": CB_WORDS[row["label"]] if row.get("label", -1) >= 0 else None}


def _hub_rte(row: dict[str, Any]) -> dict[str, Any]:
    return {**row, "label": RTE_WORDS[row["label"]] if row.get("label", -1) >= 0 else None}


def _hub_bool(row: dict[str, Any]) -> dict[str, Any]:
    return {**row, "label": bool(row["label"]) if row.get("label", -1) >= 0 else None}


def _hub_copa(row: dict[str, Any]) -> dict[str, Any]:
    return {**row, "label": row["label"] if row.get("label", -1) >= 0 else None}


def _hub_wsc(row: dict[str, Any]) -> dict[str, Any]:
    target = {k: row[k] for k in ("span1_index", "span2_index", "span1_text", "span2_text")}
    return {"text": row["text"], "target": target, "idx": row.get("idx"), "label": _hub_bool(row)["label"]}


def _hub_multirc(row: dict[str, Any]) -> dict[str, Any]:
    """The hub flattens MultiRC to one row per answer; rebuild a one-answer passage record."""
    idx = row["idx"]
    answer = {"text": row["answer"], "idx": idx["answer"], "label": row["label"] if row["label"] >= 0 else None}
    question = {"question": row["question"], "idx": idx["question"], "answers": [answer]}
    return {"idx": idx["paragraph"], "passage": {"text": row["paragraph"], "questions": [question]}}


def _hub(name: str, row_map: Any) -> HubSource:
    return HubSource(HUB_ID, name, HUB_SPLITS, row_map)


def tasks() -> dict[str, Task]:
    """The SuperGLUE tasks by name."""
    acc = ("accuracy",)
    return {
        "boolq": Task("boolq", BOOL_WORDS, Mode.RANK, "accuracy", acc, FILES["boolq"], format_boolq,
                      _hub("boolq", _hub_bool), notes="train is read from the official BoolQ.zip"),
        "cb": Task("cb", CB_WORDS, Mode.RANK, "average", ("accuracy", "macro_f1"), FILES["cb"], format_cb,
                   _hub("cb", _hub_cb), notes="average = mean of accuracy and macro-F1 (SuperGLUE)"),
        "copa": Task("copa", None, Mode.RANK, "accuracy", acc, FILES["copa"], format_copa,
                     _hub("copa", _hub_copa), notes="targets are the two alternatives' texts"),
        "multirc": Task("multirc", BOOL_WORDS, Mode.RANK, "average", ("multirc",), FILES["multirc"],
                        format_multirc, _hub("multirc", _hub_multirc), positive="True",
                        notes="one example per answer option; F1a over options, EM per question"),
        # No hub fallback for ReCoRD: the hub's full set is not the sample these results are marked as.
        "record": Task("record", None, Mode.RANK, "f1", ("em", "token_f1"), FILES["record"], format_record,
                       None, flags={"sample_only": 1.0},
                       notes="only the 32-example FewGLUE samples are available: results are marked sample_only"),
        "rte": Task("rte", RTE_WORDS, Mode.RANK, "accuracy", acc, FILES["rte"], format_rte, _hub("rte", _hub_rte)),
        "wic": Task("wic", BOOL_WORDS, Mode.RANK, "accuracy", acc, FILES["wic"], format_wic, _hub("wic", _hub_bool)),
        "wsc": Task("wsc", BOOL_WORDS, Mode.RANK, "accuracy", acc, FILES["wsc"], format_wsc,
                    _hub("wsc.fixed", _hub_wsc), notes="span-pair version: does the pronoun refer to the noun?"),
    }
