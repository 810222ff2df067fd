"""The run folder: one train process at a time (lock), --out checks, leftovers of killed writers, the step log."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from softprompt.errors import UsageError
from softprompt.training.rundir import RunDir, RunLogError


def test_a_second_claim_is_refused_with_the_holders_pid_until_the_first_ends(tmp_path):
    run = RunDir(tmp_path / "run")
    with run.claim():
        assert run.root.is_dir() and run.lock.read_text().strip() == str(os.getpid())
        with pytest.raises(UsageError, match=rf"another train process \(pid {os.getpid()}\) is writing to .*run; "
                                             "wait for it to end, or give another --out"):
            with run.claim():
                pass
    with run.claim():  # released when the block ended
        pass
    with pytest.raises(RuntimeError), run.claim():  # and when it ends with an error
        raise RuntimeError("the run failed")
    with run.claim():
        pass


@pytest.mark.integration  # a second process holds the folder
def test_a_folder_held_by_another_process_is_refused_with_its_pid(tmp_path):
    script = textwrap.dedent(f"""
        import sys, time
        from softprompt.training.rundir import RunDir
        with RunDir({str(tmp_path / "run")!r}).claim():
            print("held", flush=True)
            sys.stdin.read()  # hold until the test closes stdin
    """)
    holder = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(UsageError, match=rf"another train process \(pid {holder.pid}\)"):
            with RunDir(tmp_path / "run").claim():
                pass
    finally:
        holder.communicate("", timeout=30)
    assert holder.returncode == 0
    with RunDir(tmp_path / "run").claim():  # free once the holder exited
        pass


def test_an_out_that_is_a_file_or_cannot_be_written_is_a_usage_error(tmp_path):
    afile = tmp_path / "notes.txt"
    afile.write_text("mine")
    with pytest.raises(UsageError, match=r"--out .*notes\.txt is an existing file, not a folder: give a folder path"):
        with RunDir(afile).claim():
            pass
    assert afile.read_text() == "mine"
    with pytest.raises(UsageError, match=r"cannot write into --out .*notes\.txt/run \(Not a directory\)"):
        with RunDir(afile / "run").claim():
            pass


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_an_out_in_a_read_only_folder_is_a_usage_error(tmp_path):
    locked = tmp_path / "ro"
    locked.mkdir(mode=0o500)
    try:
        with pytest.raises(UsageError, match=r"cannot write into --out .*ro/run \(Permission denied\)"):
            with RunDir(locked / "run").claim():
                pass
    finally:
        locked.chmod(0o700)


def test_stale_temp_files_of_the_runs_files_are_removed_and_nothing_else(tmp_path):
    run = RunDir(tmp_path)
    stale = [tmp_path / ".checkpoint.safetensors.k2j4h1.tmp", tmp_path / ".metrics.jsonl.abc.tmp",
             tmp_path / ".last.safetensors.x_9.tmp"]
    kept = [tmp_path / ".notes.txt.abc.tmp", tmp_path / "checkpoint.safetensors", tmp_path / ".lock"]
    for path in stale + kept:
        path.write_text("x")
    (tmp_path / ".tmp-model-123-abcd").mkdir()  # publish_folder's half-built folder
    (tmp_path / ".tmp-model-123-abcd-old").mkdir()  # the previous best model moved aside: maybe the only copy
    removed = run.remove_stale_temps()
    assert sorted(removed) == sorted([*stale, tmp_path / ".tmp-model-123-abcd"])
    assert {p.name for p in tmp_path.iterdir()} == {p.name for p in kept} | {".tmp-model-123-abcd-old"}


def records(*steps: int) -> str:
    return "".join(json.dumps({"step": s, "loss": 1.0 / s}) + "\n" for s in steps)


def test_a_torn_last_line_is_dropped_with_a_warning(tmp_path, caplog):
    run = RunDir(tmp_path)
    run.metrics.write_text(records(1, 2, 3) + '{"step": 4, "loss": 0.5')
    assert [r["step"] for r in run.metrics_up_to(10)] == [1, 2, 3]
    assert "metrics.jsonl: dropped its last line 4, cut off mid-write" in caplog.text
    run.restart_metrics(2)
    assert run.metrics.read_text() == records(1, 2)


@pytest.mark.parametrize("bad", ['{"step": 2, "loss"', "not json", '["step", 2]', '{"loss": 1.0}'])
def test_a_malformed_line_before_the_last_is_refused_naming_file_and_line(tmp_path, bad):
    run = RunDir(tmp_path)
    text = records(1) + bad + "\n" + records(3)
    run.metrics.write_text(text)
    with pytest.raises(RunLogError, match=r"metrics\.jsonl line 2 is not a step record .*fix or delete that line"):
        run.restart_metrics(3)
    assert run.metrics.read_text() == text  # untouched


def test_a_malformed_last_line_that_ends_with_its_newline_was_not_torn(tmp_path):
    run = RunDir(tmp_path)
    run.metrics.write_text(records(1, 2) + "garbage\n")
    with pytest.raises(RunLogError, match="line 3"):
        run.metrics_up_to(5)


def test_a_fresh_start_empties_even_a_garbled_log(tmp_path):
    run = RunDir(tmp_path)
    run.metrics.write_text("garbage\n" + records(1))
    run.restart_metrics(0)
    assert run.metrics.read_text() == ""
