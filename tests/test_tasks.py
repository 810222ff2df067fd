"""Every built-in task's formatter on real rows of the benchmark data (the `real_data` fixture: skipped
without it), the shipped tiny SST-2 and MR files, and user task files."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from softprompt.tasks import (
    TASK_NAMES,
    Mode,
    TaskError,
    TaskFileError,
    UnknownTaskError,
    get_task,
    load_task_file,
)
from softprompt.tasks.base import ANSWER_CUE
from softprompt.tasks.qa import is_train_passage

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

# (task, split, index) -> (input text, target): real rows checked by eye against the files.
KNOWN = {
    ("rte", "validation", 0): ("premise: Dana Reeve, the widow of the actor Christopher Reeve, has died of lung cancer "
                               "at age 44, according to the Christopher Reeve Foundation. hypothesis: Christopher "
                               "Reeve had an accident.", "not_entailment"),
    ("cb", "validation", 0): ("premise: Valence the void-brain, Valence the virtuous valet. Why couldn't the figger "
                              "choose his own portion of titanic anatomy to shaft? Did he think he was helping? "
                              "hypothesis: Valence was helping", "contradiction"),
    ("copa", "validation", 0): ("premise: The man turned on the faucet. choice1: The toilet filled with water. "
                                "choice2: Water flowed from the spout. question: effect", "Water flowed from the spout."),
    ("wic", "validation", 0): ("sentence1: An emerging professional class. sentence2: Apologizing for losing your "
                               "temper, even though you were badly provoked, showed real class. word: class", "False"),
    ("sst2", "validation", 0): ("sentence: it 's a charming and often affecting journey .", "positive"),
    ("mpqa", "validation", 0): ("sentence: complaining", "negative"),
    ("qqp", "validation", 0): ("sentence1: Who is the stupidest character in Game of Thrones? sentence2: Who is the "
                               "most misunderstood character in Game of Thrones?", "not_equivalent"),
    ("relation_extraction", "validation", 0): (
        "context: Lake Champlain Chocolates (LCC) is a privately held chocolate manufacturer located in Burlington, "
        "Vermont, USA. question: What is the city where Lake Champlain Chocolates is from?", "Burlington"),
}

SIZES = {  # examples per split, from ../shared/data/README.md
    ("boolq", "train"): 9427, ("boolq", "validation"): 3270, ("cb", "train"): 250, ("copa", "validation"): 100,
    ("multirc", "validation"): 4848, ("record", "validation"): 32, ("rte", "validation"): 277,
    ("wic", "validation"): 638, ("wsc", "validation"): 104, ("mrpc", "train"): 3668, ("mrpc", "test"): 1725,
    ("qqp", "validation"): 1000, ("sst2", "validation"): 872, ("cr", "train"): 1775, ("mr", "validation"): 2000,
    ("duorc", "validation"): 126, ("race", "train"): 127,
}


def test_registry_names_and_unknown_task_hint():
    assert set(TASK_NAMES) == {"boolq", "cb", "copa", "multirc", "record", "rte", "wic", "wsc", "mrpc", "qqp",
                               "sst2", "cr", "mr", "mpqa", "squad", "duorc", "race", "relation_extraction"}
    assert get_task("Relation-Extraction").name == "relation_extraction"
    with pytest.raises(UnknownTaskError, match="Did you mean 'sst2'"):
        get_task("sst-3")


@pytest.mark.parametrize("name", TASK_NAMES)
def test_every_task_formats_real_rows(name, real_data):
    task = get_task(name)
    assert task.main_metric
    for split in ("train", "validation"):
        examples = task.examples(split, real_data, limit=20)
        assert len(examples) == 20
        for ex in examples:
            body = ex.input_text.removesuffix(ANSWER_CUE)
            assert ex.input_text.endswith(ANSWER_CUE) and body and not body[-1].isspace() and "\n" not in body
            assert ex.target_text
            if task.default_mode is Mode.RANK:
                assert ex.choices and ex.choices[ex.label] == ex.target_text
                if task.label_words is not None:
                    assert ex.choices == task.label_words
            else:
                assert ex.answers and ex.target_text == ex.answers[0]
        # metrics accept gold predictions and give the perfect score
        perfect = task.compute_metrics([ex.target_text for ex in examples], examples)
        assert perfect[task.main_metric] == pytest.approx(1.0)


@pytest.mark.parametrize(("key", "expected"), list(KNOWN.items()), ids=["-".join(map(str, k)) for k in KNOWN])
def test_known_rows(key, expected, real_data):
    name, split, index = key
    ex = get_task(name).examples(split, real_data, limit=index + 1)[index]
    assert (ex.input_text, ex.target_text) == (expected[0] + ANSWER_CUE, expected[1])


@pytest.mark.parametrize(("key", "size"), list(SIZES.items()), ids=["-".join(k) for k in SIZES])
def test_split_sizes_match_the_published_counts(key, size, real_data):
    assert len(get_task(key[0]).examples(key[1], real_data)) == size


def test_multirc_groups_are_questions(real_data):
    examples = get_task("multirc").examples("validation", real_data)
    assert len({e.group for e in examples}) == 953
    first = [e for e in examples if e.group == "0-0"]
    assert [e.target_text for e in first] == ["False", "True", "True", "False"]
    assert first[1].input_text.endswith("question: Would the mass of a baseball affect how much force you have to "
                                        "use to pick it up? answer: Yes" + ANSWER_CUE)


def test_record_is_marked_sample_only_and_ranks_entities(real_data):
    task = get_task("record")
    ex = task.examples("validation", real_data, limit=1)[0]
    assert "@highlight" not in ex.input_text and "@placeholder" in ex.input_text
    assert ex.answers == ["Benazir Bhutto", "Bhutto"] and set(ex.answers) <= set(ex.choices)
    assert task.compute_metrics(["Bhutto"], [ex]) == {"em": 1.0, "f1": 1.0, "sample_only": 1.0}


def test_wsc_marks_the_pronoun(real_data):
    examples = get_task("wsc").examples("train", real_data)
    marked = sum("*" in e.input_text.split(" question: ")[0] for e in examples)
    assert marked >= 545  # 548/554 official spans match their word index; the rest stay unmarked


def test_squad_split_is_by_passage_and_covers_the_dev_file(real_data):
    task = get_task("squad")
    train, test = task.examples("train", real_data), task.examples("validation", real_data)
    assert len(train) + len(test) == 10507
    context = lambda e: e.input_text.split(" question: ")[0]  # noqa: E731
    assert not {context(e) for e in train} & {context(e) for e in test}
    assert 0.75 < len(train) / 10507 < 0.85
    assert is_train_passage({"context": "  same   text "}) == is_train_passage({"context": "same text"})


def test_sentiment_jsonl_quoting_is_undone(real_data):
    examples = get_task("mr").examples("train", real_data)
    texts = [e.input_text for e in examples]
    assert ('sentence: " analyze that " is one of those crass , contrived sequels that not only fails on its own , '
            "but makes you second-guess your affection for the original ." + ANSWER_CUE) in texts
    assert not any('""' in t for t in texts)


def test_fewshot_splits(real_data):
    assert len(get_task("rte").examples("fewglue-train", real_data)) == 32
    assert len(get_task("qqp").examples("k16-13-train", real_data)) == 32
    assert len(get_task("cr").examples("k16-42-dev", real_data)) == 32


def test_sst2_and_mr_read_the_shipped_tiny_files():
    """tests/data has the benchmark's layout and columns (SST-2 tsv: sentence, label, a space before the tab;
    MR test.csv: label, quoted sentence), so the tests that train on it read it through the real formatters."""
    from tiny import TINY_DATA

    task = get_task("sst2")
    train, dev = task.examples("train", TINY_DATA), task.examples("validation", TINY_DATA)
    assert (len(train), len(dev)) == (80, 24)
    assert (dev[0].input_text, dev[0].target_text) == ("sentence: nothing here works" + ANSWER_CUE, "negative")
    for examples in (train, dev):  # balanced: a tiny model's accuracy is not just the label prior
        assert [e.target_text for e in examples].count("positive") * 2 == len(examples)
    mr = get_task("mr").examples("validation", TINY_DATA)
    assert len(mr) == 12
    assert mr[3].input_text == "sentence: it's the kind of comedy that explains every joke , twice ." + ANSWER_CUE


def test_unknown_split_lists_the_splits():
    with pytest.raises(TaskError, match="has no split 'dev'.*train, validation"):
        get_task("rte").examples("dev")


# ---------------------------------------------------------------- user task files


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text).lstrip())
    return path


def test_shipped_examples_load():
    tickets = load_task_file(EXAMPLES / "ticket_topic.yaml")
    assert tickets.label_words == ["billing", "bug", "question"] and tickets.main_metric == "macro_f1"
    assert tickets.examples("validation")[0].input_text == "ticket: Why was I charged for a seat I never used?"
    capitals = load_task_file(EXAMPLES / "capitals.yaml")
    ex = capitals.examples("validation")[3]
    assert (ex.input_text, ex.answers) == ("country: South Africa capital:", ["Pretoria", "Cape Town", "Bloemfontein"])
    assert capitals.default_mode is Mode.GENERATE


def test_headerless_tsv_classification(tmp_path):
    write(tmp_path / "train.tsv", "yes\tThe food was great\nno\tCold and \"bland\"\n")
    task = load_task_file(write(tmp_path / "t.yaml", """
        name: food
        data: {train: train.tsv}
        header: false
        quoting: none
        columns: [verdict, review]
        input_template: "review: {review}"
        label_field: verdict
        labels: {"yes": good, "no": bad}
        metrics: [accuracy, f1]
        positive_label: good
    """))
    examples = task.examples("train")
    assert [(e.input_text, e.target_text, e.label) for e in examples] == [
        ("review: The food was great", "good", 0), ('review: Cold and "bland"', "bad", 1)]
    assert task.main_metric == "accuracy"
    assert task.compute_metrics(["good", "good"], examples) == pytest.approx(
        {"accuracy": 0.5, "f1": 2 / 3, "average": (0.5 + 2 / 3) / 2})


@pytest.mark.parametrize(("body", "line", "pattern"), [
    ("name: t\ndata: {train: d.jsonl}\ninput_template: '{x}'\nlabel_field: y\nlables: {a: b}\n", 5,
     "field 'lables': unknown field \\(did you mean 'labels'\\?\\)"),
    ("name: t\ndata: {train: missing.jsonl}\ninput_template: '{x}'\ntarget_field: y\n", 2, "file not found"),
    ("name: t\ndata: {train: d.jsonl}\ninput_template: 'no fields'\ntarget_field: y\n", 3, "no \\{field\\}"),
    ("name: t\ndata: {train: d.jsonl}\ninput_template: '{x}'\ntarget_field: y\nmetrics: [macro_f1]\n", 5,
     "'macro_f1' is not available for a generation task"),
    ("name: t\ndata: {train: d.jsonl}\ninput_template: '{x}'\nlabel_field: y\nlabels: {a: b}\n"
     "main_metric: f1\n", 6, "'f1' is not among the results"),
    ("name: t\ndata:\n  train: {path: d.csv, header: false}\ninput_template: '{x}'\ntarget_field: y\n", 3,
     "has no header: name its columns"),
    ("name: t\ndata: {train: d.jsonl}\ninput_template: '{x'\ntarget_field: y\n", 3, "input_template"),
])
def test_bad_task_files_point_at_the_line(tmp_path, body, line, pattern):
    (tmp_path / "d.jsonl").write_text('{"x": "a", "y": "b"}\n')
    (tmp_path / "d.csv").write_text("a,b\n")
    path = write(tmp_path / "bad.yaml", body)
    with pytest.raises(TaskFileError, match=pattern) as err:
        load_task_file(path)
    assert f"bad.yaml:{line}:" in str(err.value)


def test_data_paths_expand_environment_variables(tmp_path, monkeypatch):
    data = tmp_path / "shared"
    data.mkdir()
    (data / "d.jsonl").write_text('{"x": "a", "y": "b"}\n')
    body = "name: t\ndata:\n  train: ${MY_DATA}/d.jsonl\ninput_template: 'x: {x}'\ntarget_field: y\n"
    path = write(tmp_path / "t.yaml", body)
    monkeypatch.delenv("MY_DATA", raising=False)
    with pytest.raises(TaskFileError, match=r"t.yaml:3: field 'data.train': \$MY_DATA is not set"):
        load_task_file(path)
    monkeypatch.setenv("MY_DATA", str(data))
    assert [e.input_text for e in load_task_file(path).examples("train")] == ["x: a"]


def test_bad_rows_name_the_row_and_the_field(tmp_path):
    write(tmp_path / "d.jsonl", '{"x": "a", "y": true}\n{"x": "b", "y": "maybe"}\n')
    task = load_task_file(write(tmp_path / "t.yaml", """
        name: t
        data: {train: d.jsonl}
        input_template: "x: {x}"
        label_field: y
        labels:
          true: yes
          false: no
    """))
    with pytest.raises(TaskFileError, match=r"t.yaml:5: field 'labels': .*d.jsonl, data row 2: label value 'maybe'"):
        task.examples("train")
    missing = load_task_file(write(tmp_path / "m.yaml", """
        name: t
        data: {train: d.jsonl}
        input_template: "x: {x} z: {z}"
        target_field: x
    """))
    with pytest.raises(TaskFileError, match=r"m.yaml:3: field 'input_template': .*row 1: no field 'z'"):
        missing.examples("train")


def test_invalid_yaml_and_non_mapping(tmp_path):
    with pytest.raises(TaskFileError, match=r"bad.yaml:2: not valid YAML"):
        load_task_file(write(tmp_path / "bad.yaml", "name: t\n\tdata: x\n"))
    with pytest.raises(TaskFileError, match="a task file is a YAML mapping"):
        load_task_file(write(tmp_path / "list.yaml", "- a\n- b\n"))
    with pytest.raises(TaskFileError, match="missing required field 'input_template'"):
        load_task_file(write(tmp_path / "short.yaml", "name: t\ndata: {train: x}\n"))


# ---------------------------------------------------------------- task and data files that are not what they say


def _one_split_task(tmp_path: Path, data: str, options: str = "") -> Path:
    return write(tmp_path / "t.yaml", f"name: t\ndata:\n  train: {data}\n{options}"
                                      "input_template: 'text: {text}'\ntarget_field: label\n")


def test_a_binary_task_file_is_refused_in_one_line(tmp_path):
    png = tmp_path / "image.yaml"
    png.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    with pytest.raises(TaskFileError, match=r"image.yaml: not a UTF-8 text file \(byte 0x89 at offset 0\)"):
        load_task_file(png)
    nul = tmp_path / "nul.yaml"
    nul.write_bytes(b"name: t\ndata: \x00\x01\x02\n")
    with pytest.raises(TaskFileError, match=r"nul.yaml:2: not valid YAML: unacceptable character .*binary file") as err:
        load_task_file(nul)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(("name", "content", "pattern"), [
    ("d.csv", "text,label\ncaf\xe9,x\n".encode("latin-1"),
     r"t.yaml:3: field 'data.train': .*d.csv, line 2: not valid utf-8 text .*'encoding: latin-1'"),
    ("d.csv", bytes(range(256)) * 8, r"t.yaml:3: field 'data.train': .*d.csv: looks like a binary file"),
    ("d.jsonl", b'{"text": "a", "label": "b"}\n{"text": "a", "label\n',
     r"t.yaml:3: field 'data.train': .*d.jsonl, line 2: not valid JSON"),
    ("d.csv", b'text,label\n"open quote,b\n' + b"x,y\n" * 40_000,
     r"t.yaml:3: field 'data.train': .*d.csv, line 2: a field longer than the csv module's limit"),
])
def test_unreadable_data_files_name_the_task_line_the_file_and_the_data_line(tmp_path, name, content, pattern):
    (tmp_path / name).write_bytes(content)
    task = load_task_file(_one_split_task(tmp_path, name))
    with pytest.raises(TaskFileError, match=pattern) as err:
        task.examples("train")
    assert "\n" not in str(err.value)


def test_encoding_option_reads_latin1_and_bad_options_point_at_their_line(tmp_path):
    (tmp_path / "d.csv").write_bytes("text,label\ncaf\xe9,x\n".encode("latin-1"))
    task = load_task_file(_one_split_task(tmp_path, "d.csv", "encoding: latin-1\n"))
    assert task.examples("train")[0].input_text == "text: café"
    with pytest.raises(TaskFileError, match=r"t.yaml:4: field 'encoding': 'latin-9x' is not a text encoding"):
        load_task_file(_one_split_task(tmp_path, "d.csv", "encoding: latin-9x\n"))
    with pytest.raises(TaskFileError, match=r"t.yaml:4: field 'delimiter': ';;': must be one character"):
        load_task_file(_one_split_task(tmp_path, "d.csv", "delimiter: ';;'\n"))
