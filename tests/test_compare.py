"""xaikit.compare: the exact McNemar test, the paired bootstrap, reading runs, the comparison's tables and load_runs."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

import xaikit
from xaikit.compare.runs import read_runs
from xaikit.compare.statistics import mcnemar_exact, paired_test
from xaikit.compare.tables import compare_runs
from xaikit.errors import MissingDependencyError, XaikitError

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "compare_speed.py"


def _load():
    """The benchmark script, whose write_run lays out a finished run as xaikit bench does (benchmarks/ is not a package)."""
    spec = importlib.util.spec_from_file_location("compare_speed", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


write_run = _load().write_run


def _binomial_p(b: int, c: int) -> float:
    """McNemar's exact two-sided p-value in exact rational arithmetic, the oracle."""
    n = b + c
    return float(min(Fraction(1), 2 * Fraction(sum(math.comb(n, i) for i in range(min(b, c) + 1)), 2**n)))


def test_mcnemar_on_a_table_computed_by_hand():
    # b = 1, c = 6: P(X <= 1) for Binomial(7, 1/2) = (1 + 7) / 128, doubled
    assert mcnemar_exact(1, 6) == pytest.approx(0.125, abs=1e-12)
    assert mcnemar_exact(6, 1) == pytest.approx(0.125, abs=1e-12)
    assert mcnemar_exact(0, 0) == 1.0 and mcnemar_exact(3, 3) == 1.0
    assert mcnemar_exact(0, 10) == pytest.approx(2 / 1024, abs=1e-15)


@pytest.mark.parametrize("b, c", [(40, 25), (7, 19), (300, 240), (2900, 3050)])
def test_mcnemar_agrees_with_exact_rational_arithmetic(b, c):
    assert mcnemar_exact(b, c) == pytest.approx(_binomial_p(b, c), rel=1e-9, abs=1e-300)


def test_paired_bootstrap_interval_contains_the_true_difference():
    a = np.random.default_rng(5).random(400) < 0.85
    b = a.copy()
    b[:60] = ~b[:60]  # flip 60 images: a known difference
    truth = 100 * (a.mean() - b.mean())
    test = paired_test(a, b, resamples=1000, seed=31)
    assert test.images == 400 and test.difference == pytest.approx(truth)
    assert test.low < truth < test.high
    assert test.a_only + test.b_only == 60 and test.a_only - test.b_only == int(a.sum() - b.sum())
    assert test.p_value == pytest.approx(_binomial_p(test.a_only, test.b_only))
    assert paired_test(a, b, resamples=1000, seed=31) == test  # seeded


def test_identical_runs_differ_by_zero_with_p_one():
    correct = np.array([True, False, True, True, False] * 20)
    test = paired_test(correct, correct, resamples=500, seed=1)
    assert (test.difference, test.low, test.high, test.a_only, test.b_only, test.p_value) == (0.0, 0.0, 0.0, 0, 0, 1.0)


def test_pairs_on_different_images_use_the_intersection_and_say_so(tmp_path):
    labels = [i % 4 for i in range(20)]
    write_run(tmp_path / "a", labels, [True] * 20, k=1)
    write_run(tmp_path / "b", labels[5:], [i % 2 == 0 for i in range(15)], image_ids=range(5, 20), k=3, skipped=[20])
    write_run(tmp_path / "c", [(x + 1) % 4 for x in labels], [True] * 20, k=5)  # same ids, other labels
    comparison = compare_runs(read_runs([tmp_path / "a", tmp_path / "b", tmp_path / "c"]), resamples=200, seed=31)
    tables = {table.name: table for table in comparison.tables}
    ab, ac, bc = tables["pairs"].rows
    assert ab[2] == 15 and ab[-1] == "on the 15 common images (20 and 15 evaluated)"
    assert ab[3] == pytest.approx(100 * 7 / 15)  # b is right on 8 of the 15 shared images
    assert ac[2] == 0 and "not the same images" in ac[-1] and ac[3] is None
    assert "share" in tables["pairs"].note
    assert [row[0] for row in tables["config"].rows] == ["components.explainer.options.k", "k"]
    assert tables["config"].rows[1][1:] == ("1", "3", "5")
    per_class = {row[0]: row for row in tables["per_class"].rows}
    assert per_class["species 0"][1] == "5/3/5" and per_class["species 0"][2] == 100.0
    assert comparison.per_class.shape == (4, 3)
    assert [point[0] for point in comparison.accuracy] == ["a", "b", "c"]


def test_identical_configurations_are_said_to_be(tmp_path):
    for name in ("a", "b"):
        write_run(tmp_path / name, [0, 1, 0, 1], [True, True, False, True])
    config = compare_runs(read_runs([tmp_path / "a", tmp_path / "b"]), resamples=0, seed=31).tables[0]
    assert config.rows == [] and "identical" in config.note


def test_read_runs_refuses_what_is_not_a_finished_run(tmp_path):
    write_run(tmp_path / "run", [0, 1], [True, False])
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "config.json").write_text("{}")
    with pytest.raises(XaikitError, match="is not a directory"):
        read_runs([tmp_path / "missing"])
    with pytest.raises(XaikitError, match="is not an xaikit run"):
        read_runs([tmp_path / "plain"])
    with pytest.raises(XaikitError, match="given twice"):
        read_runs([tmp_path / "run", tmp_path / "run" / ".." / "run"])
    (tmp_path / "run" / "summary.json").unlink()
    with pytest.raises(XaikitError, match=r"unfinished .*--resume"):
        read_runs([tmp_path / "run"])


def test_read_runs_refuses_a_line_xaikit_did_not_write(tmp_path):
    write_run(tmp_path / "run", [0, 1], [True, False])
    with (tmp_path / "run" / "items.jsonl").open("a") as file:
        file.write('{"index": 9}\n')
    with pytest.raises(XaikitError, match="items.jsonl line 3 has no integer label"):
        read_runs([tmp_path / "run"])


def test_runs_with_the_same_folder_name_are_named_by_path(tmp_path):
    write_run(tmp_path / "x" / "run", [0, 1], [True, False])
    write_run(tmp_path / "y" / "run", [0, 1], [True, True])
    assert [run.name for run in read_runs([tmp_path / "x" / "run", tmp_path / "y" / "run"])] == [
        str(tmp_path / "x" / "run"), str(tmp_path / "y" / "run")]


def test_load_runs_gives_items_and_summaries_as_data_frames(tmp_path):
    pytest.importorskip("pandas")
    write_run(tmp_path / "k1", [0, 1, 2, 0], [True, False, True, True], k=1, skipped=[4])
    write_run(tmp_path / "k3", [0, 1, 2, 0], [True, True, True, True], k=3)
    items = xaikit.load_runs([tmp_path / "k1", tmp_path / "k3"])
    assert len(items) == 9 and list(items.columns[:3]) == ["run", "run_path", "status"]
    assert items.groupby("run").correct.mean().to_dict() == {"k1": 0.75, "k3": 1.0}
    assert items.status.tolist().count("skipped") == 1 and items["config.k"].tolist() == [1] * 5 + [3] * 4
    summaries = xaikit.load_runs([tmp_path / "k1", tmp_path / "k3"], what="summaries")
    assert summaries[["run", "metric", "value"]].values.tolist() == [["k1", "accuracy", 75.0], ["k3", "accuracy", 100.0]]
    assert (summaries.low <= summaries.value).all() and summaries.skipped.tolist() == [1, 0]
    with pytest.raises(XaikitError, match="'items' or 'summaries'"):
        xaikit.load_runs(tmp_path / "k1", what="rows")


def test_load_runs_without_pandas_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(MissingDependencyError, match=r"pip install 'xaikit\[pandas\]'"):
        xaikit.load_runs([tmp_path])


def test_a_run_is_read_without_being_modified(tmp_path):
    write_run(tmp_path / "run", [0, 1, 1], [True, False, True])
    before = {path.name: (path.read_bytes(), path.stat().st_mtime_ns) for path in (tmp_path / "run").iterdir()}
    read_runs([tmp_path / "run"])
    assert {path.name: (path.read_bytes(), path.stat().st_mtime_ns) for path in (tmp_path / "run").iterdir()} == before
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["evaluated"] == 3


def test_a_foreign_compare_json_is_never_overwritten(tmp_path):
    from xaikit.compare.report import check_out

    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "compare.json").write_text('{"mine": 1}')
    with pytest.raises(XaikitError, match="compare.json, which is not a previous xaikit compare output"):
        check_out(tmp_path / "out", [])
