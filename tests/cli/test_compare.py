"""``xaikit compare`` on real runs of the tiny birds (k = 1 against k = 3): the report, and every refusal."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from xaikit.bench import BenchConfig, run_bench
from xaikit.cli import main


def last_error(capsys) -> str:
    return capsys.readouterr().err.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def runs(tiny_birds, tmp_path_factory) -> list[Path]:
    """Two real KLC runs on the same 6 tiny-birds test images, k = 1 and k = 3."""
    root = tmp_path_factory.mktemp("runs")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XAIKIT_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        for k in (1, 3):
            run_bench(BenchConfig(data_root=str(tiny_birds), k=k, limit=6, device="cpu", bootstrap=200), root / f"k{k}")
    return [root / "k1", root / "k3"]


def _snapshot(paths: list[Path]) -> dict[str, tuple[bytes, int]]:
    return {str(file): (file.read_bytes(), file.stat().st_mtime_ns) for path in paths for file in sorted(path.iterdir())}


def test_compare_prints_and_writes_the_report_without_touching_the_runs(runs, tmp_path, capsys):
    before = _snapshot(runs)
    out = tmp_path / "report"
    assert main(["compare", *map(str, runs), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "Configuration differences" in printed and "McNemar p" in printed and "components.explainer.options.k" in printed
    assert sorted(entry.name for entry in out.iterdir()) == [
        "accuracy.png", "compare.json", "comparison.html", "comparison.md", "config.csv", "metrics.csv", "pairs.csv", "per_class.csv", "per_class.png"]
    metrics = {row["metric"]: row for row in csv.DictReader((out / "metrics.csv").open()) if row["run"] == "k1"}
    assert metrics["accuracy"]["interval over"] == "images"
    (pair,) = list(csv.DictReader((out / "pairs.csv").open()))
    assert (pair["run A"], pair["run B"], pair["images"]) == ("k1", "k3", "6")
    assert 0 < float(pair["McNemar p"]) <= 1 and float(pair["95% low"]) <= float(pair["A − B (points)"]) <= float(pair["95% high"])
    page = (out / "comparison.html").read_text()
    assert page.count('src="data:image/png;base64,') == 2 and "http" not in page
    assert "![accuracy.png](accuracy.png)" in (out / "comparison.md").read_text()
    assert _snapshot(runs) == before
    assert main(["compare", *map(str, runs), "--out", str(out), "--bootstrap", "0"]) == 0  # a previous comparison is replaced
    assert json.loads((out / "compare.json").read_text())["runs"] == list(map(str, runs))


def test_compare_refuses_bad_input_in_one_sentence(runs, tmp_path, capsys):
    assert main(["compare", str(runs[0])]) == 2
    assert "needs at least two runs" in last_error(capsys)
    assert main(["compare", str(runs[0]), str(tmp_path)]) == 2
    assert "is not an xaikit run" in last_error(capsys)
    (tmp_path / "notes.txt").write_text("mine")
    assert main(["compare", *map(str, runs), "--out", str(tmp_path)]) == 2
    assert "holds notes.txt, which is not a previous xaikit compare output" in last_error(capsys)
    assert main(["compare", *map(str, runs), "--out", str(runs[0] / "report")]) == 2
    assert "never writes into a run" in last_error(capsys)
    assert not (runs[0] / "report").exists() and (tmp_path / "notes.txt").read_text() == "mine"


def test_compare_refuses_an_unfinished_run(runs, tmp_path, capsys):
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    for name in ("config.json", "items.jsonl"):
        (unfinished / name).write_bytes((runs[0] / name).read_bytes())
    assert main(["compare", str(runs[0]), str(unfinished)]) == 2
    assert f"finish it with xaikit bench --out {unfinished} --resume" in last_error(capsys)


def test_compare_without_matplotlib_says_how_to_install_it(runs, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert main(["compare", *map(str, runs), "--out", str(tmp_path / "report")]) == 2
    assert "pip install 'xaikit[plot]'" in last_error(capsys) and not (tmp_path / "report").exists()


def test_compare_imports_no_torch(runs, tmp_path):
    """A fresh ``xaikit compare`` reads JSON and computes with numpy: torch's import would double its time (issue 18)."""
    code = (
        "import sys\n"
        "from xaikit.cli import main\n"
        f"assert main({['compare', *map(str, runs), '--out', str(tmp_path / 'report')]!r}) == 0\n"
        "print('TORCH=' + str('torch' in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.rpartition("TORCH=")[2].strip() == "False", "xaikit compare imported torch"
