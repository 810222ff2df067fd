"""The data module: where the data dir is, file quirks, the hub fallback's mapping, the missing-data message."""

from __future__ import annotations

import gzip
import json
import zipfile

import pytest

from softprompt.tasks import data, get_task
from softprompt.tasks.data import (
    DataFileError,
    DataNotFoundError,
    HubSource,
    Source,
    load_records,
    read_source,
    resolve_data_dir,
)


@pytest.fixture(autouse=True)
def no_hub(monkeypatch):
    monkeypatch.setenv(data.NO_HUB_ENV, "1")
    monkeypatch.delenv(data.ENV_VAR, raising=False)


def test_data_dir_order_argument_env_then_shared(tmp_path, monkeypatch):
    work = tmp_path / "repo"
    work.mkdir()
    monkeypatch.chdir(work)
    assert resolve_data_dir(None) is None
    shared = tmp_path / "shared" / "data"
    shared.mkdir(parents=True)
    assert resolve_data_dir(None) == shared.resolve()
    monkeypatch.setenv(data.ENV_VAR, str(tmp_path / "env"))
    assert resolve_data_dir(None) == tmp_path / "env"
    assert resolve_data_dir(tmp_path / "arg") == tmp_path / "arg"


def test_missing_files_give_one_clear_message(tmp_path):
    with pytest.raises(DataNotFoundError) as err:
        get_task("rte").examples("validation", tmp_path)
    message = str(err.value)
    assert "RTE/val.jsonl" in message and str(tmp_path) in message
    assert "--data-dir" in message and "SOFTPROMPT_DATA" in message
    assert "\n" not in message


def test_hub_failure_is_mentioned(tmp_path, monkeypatch):
    monkeypatch.delenv(data.NO_HUB_ENV)

    def offline(hub, split):
        raise ConnectionError("no network")

    monkeypatch.setattr(data, "_hub_rows", offline)
    with pytest.raises(DataNotFoundError, match="aps/super_glue.*ConnectionError"):
        get_task("rte").examples("validation", tmp_path)


def test_hub_fallback_maps_rows_to_the_same_examples(tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    rows = datasets.Dataset.from_dict({
        "premise": ["A man walks.", "It rains."], "hypothesis": ["Someone moves.", "It is dry."],
        "idx": [0, 1], "label": [0, 1],  # the hub's ids: 0 entailment, 1 not_entailment
    })
    monkeypatch.delenv(data.NO_HUB_ENV)
    monkeypatch.setattr(data, "_hub_rows", lambda hub, split: data.rows_from_hub(rows, hub))
    examples = get_task("rte").examples("validation", tmp_path)
    assert [e.input_text for e in examples] == ["premise: A man walks. hypothesis: Someone moves.\nanswer:",
                                                "premise: It rains. hypothesis: It is dry.\nanswer:"]
    assert [e.target_text for e in examples] == ["entailment", "not_entailment"]
    assert [e.label for e in examples] == [0, 1]


def test_hub_mapping_multirc_boolq_wsc_squad():
    datasets = pytest.importorskip("datasets")
    multirc = datasets.Dataset.from_dict({
        "paragraph": ["P."] * 3, "question": ["Q1?", "Q1?", "Q2?"], "answer": ["a", "b", "c"],
        "idx": [{"paragraph": 0, "question": 0, "answer": 0}, {"paragraph": 0, "question": 0, "answer": 1},
                {"paragraph": 0, "question": 1, "answer": 2}],
        "label": [1, 0, 1],
    })
    task = get_task("multirc")
    examples = [e for r in data.rows_from_hub(multirc, task.hub) for e in task.formatter(r)]
    assert [e.group for e in examples] == ["0-0", "0-0", "0-1"]
    assert [e.target_text for e in examples] == ["True", "False", "True"]
    assert examples[0].input_text == "paragraph: P. question: Q1? answer: a"

    boolq = datasets.Dataset.from_dict({"question": ["is it"], "passage": ["It is."], "idx": [3], "label": [1]})
    task = get_task("boolq")
    (ex,) = task.formatter(data.rows_from_hub(boolq, task.hub)[0])
    assert (ex.input_text, ex.target_text) == ("passage: It is. question: is it", "True")

    wsc = datasets.Dataset.from_dict({
        "text": ["Mark told Pete he was late ."], "span1_index": [0], "span2_index": [3],
        "span1_text": ["Mark"], "span2_text": ["he"], "idx": [0], "label": [0],
    })
    task = get_task("wsc")
    (ex,) = task.formatter(data.rows_from_hub(wsc, task.hub)[0])
    assert ex.input_text == 'text: Mark told Pete *he* was late . question: does "he" refer to "Mark"?'
    assert ex.target_text == "False"

    squad = datasets.Dataset.from_dict({
        "id": ["q1"], "title": ["T"], "context": ["Paris is in France."], "question": ["Where is Paris?"],
        "answers": [{"text": ["France", "in France"], "answer_start": [12, 9]}],
    })
    task = get_task("squad")
    (ex,) = task.formatter(data.rows_from_hub(squad, task.hub)[0])
    assert ex.input_text == "context: Paris is in France. question: Where is Paris?"
    assert ex.answers == ["France", "in France"] and ex.target_text == "France"


def test_mrpc_quirks_bom_and_bare_quotes(tmp_path):
    path = tmp_path / "dev.tsv"
    path.write_bytes("\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
                     '1\t1\t2\t"Quoted start only.\tHe said "yes" twice.\n'.encode())
    rows = list(read_source(path, Source("dev.tsv", fmt="tsv", encoding="utf-8-sig", quoting="none")))
    assert rows == [{"Quality": "1", "#1 ID": "1", "#2 ID": "2", "#1 String": '"Quoted start only.',
                     "#2 String": 'He said "yes" twice.'}]


def test_zip_member_gzip_header_and_headerless_csv(tmp_path):
    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("X/train.jsonl", '{"a": 1}\n\n{"a": 2}\n')
    assert [r["a"] for r in read_source(archive, Source("a.zip", member="X/train.jsonl"))] == [1, 2]

    gz = tmp_path / "b.jsonl.gz"
    with gzip.open(gz, "wt") as handle:
        handle.write(json.dumps({"header": {"dataset": "SQuAD"}}) + "\n" + json.dumps({"id": "c1"}) + "\n")
    assert list(read_source(gz, Source("b.jsonl.gz", fmt="jsonl.gz"))) == [{"id": "c1"}]

    csv_path = tmp_path / "c.csv"
    csv_path.write_text('0,"a, quoted ""sentence"""\n1,plain\n')
    rows = list(read_source(csv_path, Source("c.csv", fmt="csv", header=False, columns=("label", "sentence"))))
    assert rows == [{"label": "0", "sentence": 'a, quoted "sentence"'}, {"label": "1", "sentence": "plain"}]

    semi = tmp_path / "d.csv"
    semi.write_text("text;label\nhello;1\n")
    assert list(read_source(semi, Source("d.csv", fmt="csv", delimiter=";"))) == [{"text": "hello", "label": "1"}]


def test_where_filter_applies_to_files_and_hub(tmp_path, monkeypatch):
    (tmp_path / "f.jsonl").write_text('{"n": 1}\n{"n": 2}\n{"n": 3}\n')
    source = Source("f.jsonl", where=lambda r: r["n"] % 2 == 1)
    assert [r["n"] for r in load_records("t", "train", [source], tmp_path, None)] == [1, 3]
    monkeypatch.delenv(data.NO_HUB_ENV)
    hub = HubSource("x/y", None, {"train": "train"}, lambda row: row)
    monkeypatch.setattr(data, "_hub_rows", lambda h, split: [{"n": 4}, {"n": 5}])
    assert [r["n"] for r in load_records("t", "train", [source], tmp_path / "none", hub)] == [5]


# ---------------------------------------------------------------- files that cannot be read as their format


def _read_all(path, **options):
    return list(read_source(path, Source(path.name, **options)))


def test_latin1_csv_names_the_line_and_the_encoding_option(tmp_path):
    path = tmp_path / "d.csv"
    path.write_bytes("text,label\nplain,1\ncaf\xe9 au lait,0\n".encode("latin-1"))
    with pytest.raises(DataFileError, match=r"d.csv, line 3: not valid utf-8 text .*byte 0xe9.*'encoding: latin-1'"):
        _read_all(path, fmt="csv")
    assert _read_all(path, fmt="csv", encoding="latin-1")[1] == {"text": "café au lait", "label": "0"}


def test_binary_garbage_is_called_binary(tmp_path):
    path = tmp_path / "d.csv"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\xff\xfe" * 50)
    with pytest.raises(DataFileError, match=r"d.csv: looks like a binary file, not csv text"):
        _read_all(path, fmt="csv")


def test_malformed_and_non_object_json_lines_name_the_line(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"x": "a"}\n\n{"x": "b", \n')
    with pytest.raises(DataFileError, match=r"d.jsonl, line 3: not valid JSON \(.* at column \d+\); each line"):
        _read_all(path)
    path.write_text('{"x": "a"}\n["x", "b"]\n')
    with pytest.raises(DataFileError, match=r"d.jsonl, line 2: a JSON list, not an object"):
        _read_all(path)


def test_csv_field_over_the_limit_points_at_the_unclosed_quote(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text('text,label\nfine,1\n"never closed,0\n' + "more text,1\n" * 20_000)
    with pytest.raises(DataFileError, match=r"d.csv, line 3: a field longer than the csv module's limit of \d+ "
                                            r"characters; usually a quote that never closes.*'quoting: none'"):
        _read_all(path, fmt="csv")
    assert len(_read_all(path, fmt="csv", quoting="none")) == 20_002


def test_unknown_encoding_and_broken_archives_are_data_file_errors(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"x": "a"}\n')
    with pytest.raises(DataFileError, match=r"unknown text encoding 'utf-9'"):
        _read_all(path, encoding="utf-9")
    gz = tmp_path / "d.jsonl.gz"
    gz.write_bytes(b"not gzip at all")
    with pytest.raises(DataFileError, match=r"cannot read .*d.jsonl.gz"):
        _read_all(gz, fmt="jsonl.gz")
