"""Hostile task and prompt files through the `softprompt` entry point, as a user meets them: one line on stderr,
exit code 2, never a traceback (issue 21, defect 2); and a split carved from train as `eval --split` reads it."""

from __future__ import annotations

import json
import pickle
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from softprompt.cli import main
from softprompt.tasks import load_task_file


@pytest.fixture(autouse=True)
def _keep_torch_threads():
    """load_model sets torch's threads; in-process commands must not change them for later tests."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _main(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["softprompt", *map(str, args)])
    code = 0
    try:
        main()
    except SystemExit as done:  # an uncaught error is re-raised and fails the test instead
        code = done.code if isinstance(done.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


def _task(folder: Path, data: str, extra: str = "") -> Path:
    path = folder / "t.yaml"
    path.write_text(f"name: t\ndata:\n  train: {data}\n  validation: {data}\n{extra}"
                    "input_template: 'text: {text}'\nlabel_field: label\nlabels: {a: alpha, b: beta}\n")
    return path


def _one_line_exit_2(code: int, err: str, *needles: str) -> None:
    assert code == 2, err
    lines = [line for line in err.replace("\r", "\n").splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]  # the rest: the model loader's progress bar
    assert "Traceback" not in err and len(errors) == 1, err
    assert all("it/s]" in line for line in lines if line not in errors), err
    for needle in needles:
        assert needle in errors[0], err


@pytest.mark.parametrize(("name", "content", "needle"), [
    ("d.csv", "text,label\ncaf\xe9,a\n".encode("latin-1"), "d.csv, line 2: not valid utf-8 text"),
    ("d.csv", bytes(range(256)) * 16, "looks like a binary file"),
    ("d.jsonl", b'{"text": "x", "label": "a"}\n{"text": \n', "d.jsonl, line 2: not valid JSON"),
    ("d.csv", b'text,label\n"x,a\n' + b"y,b\n" * 40_000, "d.csv, line 2: a field longer than the csv module's limit"),
])
def test_unreadable_task_data_is_one_line(monkeypatch, capsys, tmp_path, name, content, needle):
    (tmp_path / name).write_bytes(content)
    code, _, err = _main(monkeypatch, capsys, "eval", "--task-file", _task(tmp_path, name), "--no-prompt")
    _one_line_exit_2(code, err, needle, "t.yaml:4: field 'data.validation'")


def test_a_binary_task_file_is_one_line(monkeypatch, capsys, tmp_path):
    garbage = tmp_path / "garbage.yaml"
    garbage.write_bytes(bytes(range(255, -1, -1)) * 4)
    code, _, err = _main(monkeypatch, capsys, "eval", "--task-file", garbage, "--no-prompt")
    _one_line_exit_2(code, err, "garbage.yaml: not a UTF-8 text file")


class _Exec:
    def __reduce__(self):
        return (exec, ("raise SystemExit('the pickle ran')",))


@pytest.mark.parametrize(("tensor", "needle"), [
    (torch.randn(32), "got shape [32] (rank 1)"),
    (torch.randn(2, 4, 32), "(rank 3)"),
    (torch.zeros(0, 32), "[P=0, H=32]"),
    (torch.frombuffer(bytearray(pickle.dumps(_Exec())), dtype=torch.uint8), "dtype U8"),
    (torch.full((4, 32), float("nan")), "NaN or inf"),
    (torch.ones(4, 32, dtype=torch.int64), "dtype I64"),
])
def test_malformed_prompt_files_are_one_line(monkeypatch, capsys, tmp_path, model_dir, tensor, needle):
    (tmp_path / "d.jsonl").write_text('{"text": "x", "label": "a"}\n')
    bad = tmp_path / "bad.safetensors"
    save_file({"prompt_embeddings": tensor.contiguous()}, str(bad))
    code, _, err = _main(monkeypatch, capsys, "eval", "--task-file", _task(tmp_path, "d.jsonl"), "--prompt", bad,
                         "--model", model_dir)
    _one_line_exit_2(code, err, str(bad), needle)


def test_eval_reads_the_split_carved_from_train(monkeypatch, capsys, tmp_path, model_dir):
    rows = [{"text": f"row {i}", "label": "ab"[i % 2]} for i in range(120)]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    path = tmp_path / "carved.yaml"
    path.write_text("name: carved\ndata:\n  train: train.jsonl\n  validation: {from: train, fraction: 0.2, seed: 0}\n"
                    "input_template: 'text: {text}'\nlabel_field: label\nlabels: {a: alpha, b: beta}\n")
    task = load_task_file(path)
    expected = [e.input_text for e in task.examples("validation")]
    assert expected and not set(expected) & {e.input_text for e in task.examples("train")}
    out_file = tmp_path / "predictions.jsonl"
    code, out, err = _main(monkeypatch, capsys, "eval", "--task-file", path, "--split", "validation", "--no-prompt",
                           "--model", model_dir, "--predictions", out_file, "--json")
    assert code == 0, err
    assert json.loads(out)["split"] == "validation"
    assert [json.loads(line)["input"] for line in out_file.read_text().splitlines()] == expected
