"""The run directory: refuses to clobber, never deletes what it did not write, locks, resumes only the same run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from xaikit.bench.rundir import LOCK, RunDirectory
from xaikit.errors import XaikitError

CONFIG = {"explainer": "klc", "k": 3, "device": "cpu", "versions": {"xaikit": "0"}}


def started(path, config=CONFIG, *, resume=False, overwrite=False, same=(), owned=()):
    """A claimed and started run with its config recorded."""
    run = RunDirectory.claim(path, resume=resume, overwrite=overwrite, owned=owned)
    run.start(config, same)
    run.record()
    return run


def test_new_run_writes_config_and_appends_items(tmp_path):
    with started(tmp_path / "run") as run:
        run.append([{"index": 0, "x": 1}, {"index": 4, "x": 2}])
        run.write_summary({"ok": True})
    assert json.loads((tmp_path / "run" / "config.json").read_text()) == CONFIG
    assert (tmp_path / "run" / "items.jsonl").read_text().count("\n") == 2
    assert json.loads((tmp_path / "run" / "summary.json").read_text()) == {"ok": True}
    assert not [p for p in (tmp_path / "run").iterdir() if p.name.endswith(".tmp")]


def test_existing_run_needs_resume_or_overwrite(tmp_path):
    with started(tmp_path) as run:
        run.append([{"index": 0, "status": "skipped", "reason": "r"}])
    with pytest.raises(XaikitError, match="--resume to continue it or --overwrite"):
        RunDirectory.claim(tmp_path, resume=False, overwrite=False)
    with started(tmp_path, overwrite=True) as fresh:
        assert fresh.items == {} and not (tmp_path / "items.jsonl").exists()


def test_resume_reads_items_and_checks_the_config(tmp_path):
    record = {"index": 2, "label": 1, "prediction": 1, "scores": [0.5, 0.5]}
    with started(tmp_path) as run:
        run.append([record])
    with started(tmp_path, {**CONFIG, "device": "cuda"}, resume=True, same=["explainer", "k"]) as resumed:
        assert resumed.items == {2: record}
    with pytest.raises(XaikitError, match="started with k = 3, not 5"), RunDirectory.claim(tmp_path, resume=True, overwrite=False) as again:
        again.start({**CONFIG, "k": 5}, ["explainer", "k"])


def test_a_torn_last_line_is_dropped_and_cut_off(tmp_path):
    skip = {"status": "skipped", "reason": "r"}
    with started(tmp_path) as run:
        run.append([{"index": 0, **skip}, {"index": 1, **skip}])
    with (tmp_path / "items.jsonl").open("a") as file:
        file.write('{"index": 2, "sco')
    with started(tmp_path, resume=True) as resumed:
        assert sorted(resumed.items) == [0, 1]
        resumed.append([{"index": 2, **skip}])
    lines = (tmp_path / "items.jsonl").read_text().splitlines()
    assert [json.loads(line)["index"] for line in lines] == [0, 1, 2]


@pytest.mark.parametrize("line", ["{}", "[1, 2]", '{"index": "a", "status": "skipped", "reason": "r"}', '{"index": 3}', "not json"])
def test_a_foreign_complete_line_is_refused_and_kept(tmp_path, line):
    with started(tmp_path) as run:
        run.append([{"index": 0, "status": "skipped", "reason": "r"}])
    with (tmp_path / "items.jsonl").open("a") as file:
        file.write(line + "\n")
    before = (tmp_path / "items.jsonl").read_bytes()
    with pytest.raises(XaikitError, match="items.jsonl line 2"), RunDirectory.claim(tmp_path, resume=True, overwrite=False) as again:
        again.start(CONFIG, [])
    assert (tmp_path / "items.jsonl").read_bytes() == before


def test_a_file_is_not_a_run_directory(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(XaikitError, match="is a file"):
        RunDirectory.claim(tmp_path / "file", resume=False, overwrite=False)


def test_overwrite_refuses_a_directory_that_is_not_a_run_and_deletes_nothing(tmp_path):
    (tmp_path / "thesis.tex").write_text("precious")
    (tmp_path / "config.json").write_text('{"mine": true}')  # a user's file of the same name
    for resume, overwrite in ((False, True), (True, False), (False, False)):
        with pytest.raises(XaikitError, match=r"thesis\.tex"):
            RunDirectory.claim(tmp_path, resume=resume, overwrite=overwrite)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "thesis.tex"]
    assert (tmp_path / "config.json").read_text() == '{"mine": true}'


def test_overwrite_of_a_run_keeps_the_users_own_files_and_refuses(tmp_path):
    with started(tmp_path) as run:
        run.append([{"index": 0, "status": "skipped", "reason": "r"}])
    (tmp_path / "notes.md").write_text("mine")
    with pytest.raises(XaikitError, match="notes.md, which xaikit did not write"):
        RunDirectory.claim(tmp_path, resume=False, overwrite=True)
    assert {p.name for p in tmp_path.iterdir()} >= {"notes.md", "config.json", "items.jsonl"}
    with started(tmp_path, resume=True) as resumed:  # resuming deletes nothing, so the notes may stay
        assert sorted(resumed.items) == [0]


def test_overwrite_deletes_only_a_commands_own_files(tmp_path):
    with started(tmp_path, owned=["checkpoint.safetensors"]):
        (tmp_path / "checkpoint.safetensors").write_bytes(b"x")
    with started(tmp_path, overwrite=True, owned=["checkpoint.safetensors"]):
        assert sorted(p.name for p in tmp_path.iterdir()) == [LOCK, "config.json"]
        (tmp_path / "checkpoint.safetensors").write_bytes(b"x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.safetensors", "config.json"]
    with pytest.raises(XaikitError, match="checkpoint.safetensors"):  # a command that does not write it may not delete it
        RunDirectory.claim(tmp_path, resume=False, overwrite=True)
    assert (tmp_path / "checkpoint.safetensors").exists()


def test_resume_and_overwrite_together_are_refused_before_anything_is_touched(tmp_path):
    with started(tmp_path) as run:
        run.append([{"index": 0, "status": "skipped", "reason": "r"}])
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(XaikitError, match="--resume and --overwrite"):
        RunDirectory.claim(tmp_path, resume=True, overwrite=True)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_a_claim_that_never_starts_leaves_nothing_behind(tmp_path):
    target = tmp_path / "a" / "b" / "run"
    with RunDirectory.claim(target, resume=False, overwrite=False):
        assert (target / LOCK).exists()
    assert not (tmp_path / "a").exists()
    (tmp_path / "empty").mkdir()
    with RunDirectory.claim(tmp_path / "empty", resume=False, overwrite=False):
        pass
    assert list((tmp_path / "empty").iterdir()) == []


def test_a_second_process_is_refused_at_once_while_the_first_holds_the_lock(tmp_path):
    with started(tmp_path):
        script = textwrap.dedent(
            f"""
            from xaikit.bench.rundir import RunDirectory
            from xaikit.errors import XaikitError
            try:
                RunDirectory.claim({str(tmp_path)!r}, resume=True, overwrite=False)
            except XaikitError as error:
                print(error)
            """
        )
        out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60).stdout
        assert f"in use by another xaikit process (pid {os.getpid()})" in out
    with started(tmp_path, resume=True):  # released: claimable again
        pass


RECORD = {"label": 0, "prediction": 0, "scores": [1.0]}


def test_shards_of_other_processes_are_read_merged_in_sample_order_and_removed(tmp_path):
    with started(tmp_path) as run:
        run.append([{"index": 7, **RECORD}, {"index": 2, **RECORD}])
    (tmp_path / "items.1.jsonl").write_text(json.dumps({"index": 5, **RECORD}) + "\n" + '{"index": 9, "lab')
    with started(tmp_path, resume=True) as run:
        assert sorted(run.items) == [2, 5, 7]
        assert (tmp_path / "items.1.jsonl").read_text().count("\n") == 1  # the torn line is cut off
        run.consolidate([5, 2, 7, 9])
    assert [json.loads(line)["index"] for line in (tmp_path / "items.jsonl").read_text().splitlines()] == [5, 2, 7]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["config.json", "items.jsonl"]


def test_a_run_in_sample_order_without_shards_is_not_rewritten(tmp_path):
    with started(tmp_path) as run:
        run.append([{"index": 3, **RECORD}, {"index": 1, **RECORD}])
        before = os.stat(tmp_path / "items.jsonl").st_ino
        run.consolidate([3, 1, 4])
    assert os.stat(tmp_path / "items.jsonl").st_ino == before


def test_a_bad_shard_line_is_named_by_its_file(tmp_path):
    started(tmp_path).release()
    (tmp_path / "items.2.jsonl").write_text("{}\n")
    with pytest.raises(XaikitError, match=r"items\.2\.jsonl line 1 has no image index"):
        started(tmp_path, resume=True)


def test_shard_names_belong_to_runs_only(tmp_path):
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "items.1.jsonl").write_text("mine\n")
    with pytest.raises(XaikitError, match="holds items.1.jsonl and no xaikit run"):
        started(tmp_path / "plain")
    started(tmp_path / "run").release()
    for name in ("items.1.jsonl", "items.0.jsonl"):
        (tmp_path / "run" / name).write_text(json.dumps({"index": 0, **RECORD}) + "\n")
    with pytest.raises(XaikitError, match="it holds items.0.jsonl, which xaikit did not write"):
        started(tmp_path / "run", overwrite=True)
    (tmp_path / "run" / "items.0.jsonl").unlink()
    started(tmp_path / "run", overwrite=True).release()
    assert sorted(path.name for path in (tmp_path / "run").iterdir()) == ["config.json"]
