"""Task files that carve validation/test splits out of train by a hash of each example, and `strip: true`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from softprompt.tasks import TaskFileError, load_task_file
from softprompt.tasks.splits import position

ROWS = [{"text": f"sentence number {i} about topic {i % 7}", "label": "yes" if i % 3 else "no"} for i in range(600)]
# SHA-256 of "0\x1ftext=a" (seed 0, field text) is 8176fb15 1416d6cd ...: its first 8 bytes over 2**64, computed with
# sha256sum and bc, not with the code under test.
POSITION_OF_A = 0.50572175278292817447


def _write_data(folder: Path, rows: list[dict[str, str]] = ROWS, name: str = "all.jsonl") -> None:
    (folder / name).write_text("".join(json.dumps(r) + "\n" for r in rows))


def _task_file(folder: Path, splits: str, extra: str = "", data: str = "all.jsonl") -> Path:
    """A task file whose line 4 (and 5) holds `splits`, indented under `data:`."""
    lines = ["name: t", "data:", f"  train: {data}", *splits.splitlines(), extra, 'input_template: "text: {text}"',
             "label_field: label", 'labels: {"yes": "yes", "no": "no"}']
    path = folder / "t.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


CARVED = """\
  validation: {from: train, fraction: 0.1, seed: 0}
  test: {from: train, fraction: 0.15, seed: 0}"""


def _inputs(task, split: str) -> list[str]:
    return [e.input_text for e in task.examples(split)]


def test_carved_splits_are_disjoint_cover_train_and_are_about_the_fraction(tmp_path):
    _write_data(tmp_path)
    task = load_task_file(_task_file(tmp_path, CARVED))
    assert task.splits == ["train", "validation", "test"]
    train, dev, test = (_inputs(task, s) for s in ("train", "validation", "test"))
    assert not set(train) & set(dev) and not set(train) & set(test) and not set(dev) & set(test)
    assert sorted(train + dev + test) == sorted(f"text: {r['text']}" for r in ROWS)
    assert 0.06 * 600 < len(dev) < 0.14 * 600 and 0.10 * 600 < len(test) < 0.20 * 600  # ±4 standard deviations
    assert len(task.examples("train", limit=5)) == 5 and set(_inputs(task, "train")[:5]) <= set(train)


def test_the_carving_is_a_function_of_the_text_and_the_seed_only(tmp_path):
    _write_data(tmp_path)
    dev = _inputs(load_task_file(_task_file(tmp_path, CARVED)), "validation")
    assert _inputs(load_task_file(_task_file(tmp_path, CARVED)), "validation") == dev  # again
    _write_data(tmp_path, ROWS[::-1], "reversed.jsonl")  # another file order: the same examples
    reordered = load_task_file(_task_file(tmp_path, CARVED, data="reversed.jsonl"))
    assert sorted(_inputs(reordered, "validation")) == sorted(dev)
    other_seed = load_task_file(_task_file(tmp_path, CARVED.replace("seed: 0", "seed: 1")))
    assert set(_inputs(other_seed, "validation")) != set(dev)
    # Not Python's per-process salted hash: a fixed value, and the same split in a fresh interpreter.
    assert position({"text": "a", "label": "ignored"}, ("text",), 0) == position({"text": " a "}, ("text",), 0)
    assert position({"text": "a"}, ("text",), 0) == pytest.approx(POSITION_OF_A)
    script = ("import sys; from softprompt.tasks import load_task_file; "
              "print('\\n'.join(e.input_text for e in load_task_file(sys.argv[1]).examples('validation')))")
    fresh = subprocess.run([sys.executable, "-c", script, str(_task_file(tmp_path, CARVED))], capture_output=True,
                           text=True, check=True, env={**os.environ, "PYTHONHASHSEED": "123"})
    assert fresh.stdout.splitlines() == dev


def test_identical_inputs_fall_on_the_same_side(tmp_path):
    rows = [{"text": f"dup {i % 50}", "label": "yes" if i % 2 else "no"} for i in range(400)]
    _write_data(tmp_path, rows)
    task = load_task_file(_task_file(tmp_path, CARVED))
    assert _inputs(task, "validation")
    assert not set(_inputs(task, "train")) & set(_inputs(task, "validation"))


def test_strip_removes_surrounding_whitespace_without_moving_examples(tmp_path):
    rows = [{"text": f"  padded {i}\t ", "label": " yes " if i % 2 else "no"} for i in range(200)]
    _write_data(tmp_path, rows)
    plain = load_task_file(_task_file(tmp_path, CARVED))
    stripped = load_task_file(_task_file(tmp_path, CARVED, extra="strip: true"))
    assert _inputs(plain, "validation")[0].startswith("text:   padded")
    assert [t.replace("text:   ", "text: ").rstrip() for t in _inputs(plain, "validation")] == \
        _inputs(stripped, "validation")
    assert all(t == t.strip() and "  " not in t for t in _inputs(stripped, "train"))


@pytest.mark.parametrize(("splits", "extra", "pattern"), [
    ("  validation: {from: dev, fraction: 0.1}", "", r"t.yaml:4: field 'data.validation.from': 'dev' is not a split"),
    ("  validation: {from: train, fraction: 1.5}", "", r"t.yaml:4: field 'data.validation.fraction': 1.5"),
    ("  validation: {from: train, fraction: 0.1, path: x.jsonl}", "", r"data.validation.path': not an option"),
    ("  validation: {from: train, fraction: 0.1, seed: x}", "", r"data.validation.seed': 'x': must be an integer"),
    ("  validation: {from: train, fraction: 0.6}\n  test: {from: train, fraction: 0.5}", "",
     r"t.yaml:5: field 'data.test.fraction': the splits carved from 'train' take 1.1"),
    ("  validation: {from: train, fraction: 0.1}\n  test: {from: train, fraction: 0.1, seed: 3}", "",
     r"data.test.seed': splits carved from 'train' share one seed"),
    ("", "strip: yes please", r"field 'strip': must be true or false"),
])
def test_bad_carvings_point_at_their_line(tmp_path, splits, extra, pattern):
    _write_data(tmp_path)
    with pytest.raises(TaskFileError, match=pattern):
        load_task_file(_task_file(tmp_path, splits, extra))


BANKING77 = Path(__file__).resolve().parents[1] / "examples" / "banking77.yaml"


def test_the_banking77_example_carves_validation_from_train():
    """examples/banking77.yaml reads ../shared/data next to the checkout; skipped where that data is absent."""
    if not (BANKING77.parent / "../../shared/data/BANKING77/train.csv").exists():
        pytest.skip("no ../shared/data/BANKING77 next to the checkout")
    task = load_task_file(BANKING77)
    assert len(task.label_words or []) == 77 and task.splits == ["train", "validation", "test"]
    train, dev, test = (task.examples(s) for s in task.splits)  # every row's label is in the mapping
    assert 0.08 < len(dev) / (len(train) + len(dev)) < 0.12 and len(test) == 3080
    assert not {e.input_text for e in train} & {e.input_text for e in dev}


def test_a_limit_still_checks_the_labels_of_the_rows_it_does_not_keep(tmp_path):
    """`eval --limit 8` on a file whose row 500 has an unknown label fails as the full run would, naming the row."""
    rows = [*ROWS[:499], {"text": "a late row", "label": "maybe"}, *ROWS[499:]]
    _write_data(tmp_path, rows)
    task = load_task_file(_task_file(tmp_path, ""))
    with pytest.raises(TaskFileError, match="data row 500"):
        task.examples("train", limit=8)
