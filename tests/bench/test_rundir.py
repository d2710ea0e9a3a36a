"""The run directory: refuses to clobber, resumes only the same run, survives a torn last line."""

from __future__ import annotations

import json

import pytest

from xaikit.bench.rundir import RunDirectory
from xaikit.errors import XaikitError

CONFIG = {"explainer": "klc", "k": 3, "device": "cpu"}


def test_new_run_writes_config_and_appends_items(tmp_path):
    run = RunDirectory.open(tmp_path / "run", CONFIG, resume=False, overwrite=False, same=["explainer", "k"])
    run.append([{"index": 0, "x": 1}, {"index": 4, "x": 2}])
    assert json.loads((tmp_path / "run" / "config.json").read_text()) == CONFIG
    assert (tmp_path / "run" / "items.jsonl").read_text().count("\n") == 2
    run.write_summary({"ok": True})
    assert json.loads((tmp_path / "run" / "summary.json").read_text()) == {"ok": True}
    assert not [p for p in (tmp_path / "run").iterdir() if p.name.endswith(".tmp")]


def test_existing_run_needs_resume_or_overwrite(tmp_path):
    RunDirectory.open(tmp_path, CONFIG, resume=False, overwrite=False, same=[]).append([{"index": 0}])
    with pytest.raises(XaikitError, match="--resume to continue it or --overwrite"):
        RunDirectory.open(tmp_path, CONFIG, resume=False, overwrite=False, same=[])
    fresh = RunDirectory.open(tmp_path, CONFIG, resume=False, overwrite=True, same=[])
    assert fresh.items == {} and not (tmp_path / "items.jsonl").exists()


def test_resume_reads_items_and_checks_the_config(tmp_path):
    RunDirectory.open(tmp_path, CONFIG, resume=False, overwrite=False, same=[]).append([{"index": 2, "v": "a"}])
    resumed = RunDirectory.open(tmp_path, {**CONFIG, "device": "cuda"}, resume=True, overwrite=False, same=["explainer", "k"])
    assert resumed.items == {2: {"index": 2, "v": "a"}}
    with pytest.raises(XaikitError, match="started with k = 3, not 5"):
        RunDirectory.open(tmp_path, {**CONFIG, "k": 5}, resume=True, overwrite=False, same=["explainer", "k"])


def test_a_torn_last_line_is_dropped_and_cut_off(tmp_path):
    run = RunDirectory.open(tmp_path, CONFIG, resume=False, overwrite=False, same=[])
    run.append([{"index": 0}, {"index": 1}])
    with (tmp_path / "items.jsonl").open("a") as file:
        file.write('{"index": 2, "sco')
    resumed = RunDirectory.open(tmp_path, CONFIG, resume=True, overwrite=False, same=[])
    assert sorted(resumed.items) == [0, 1]
    resumed.append([{"index": 2}])
    lines = (tmp_path / "items.jsonl").read_text().splitlines()
    assert [json.loads(line)["index"] for line in lines] == [0, 1, 2]


def test_a_file_is_not_a_run_directory(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(XaikitError, match="is a file"):
        RunDirectory.open(tmp_path / "file", CONFIG, resume=False, overwrite=False, same=[])
