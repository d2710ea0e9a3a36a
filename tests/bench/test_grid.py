"""Experiment grids: axes expand to one resumable run per combination, named after its values."""

from __future__ import annotations

import json

import pytest

from xaikit.bench import BenchConfig
from xaikit.bench.grid import Axis, expand, parse_axis, read_grid_file
from xaikit.cli import main
from xaikit.errors import XaikitError


def test_axes_expand_to_their_product_in_order_with_typed_fields_and_routed_options():
    base = BenchConfig(options={"dataset": {"per_class": 8}})
    runs = expand(base, [parse_axis("k=1,3"), parse_axis("segmenter=annotations,dino-parts"), parse_axis("dataset.crop_to_bbox=false")])
    assert [name for name, _ in runs] == [
        "k=1,segmenter=annotations,dataset.crop_to_bbox=false", "k=1,segmenter=dino-parts,dataset.crop_to_bbox=false",
        "k=3,segmenter=annotations,dataset.crop_to_bbox=false", "k=3,segmenter=dino-parts,dataset.crop_to_bbox=false",
    ]
    config = runs[3][1]
    assert config.k == 3 and config.segmenter == "dino-parts"
    assert config.options["dataset"] == {"per_class": 8, "crop_to_bbox": "false"}


@pytest.mark.parametrize(("text", "message"), [("k", "KEY=VALUE"), ("=1,2", "KEY=VALUE"), ("k=", "KEY=VALUE")])
def test_a_malformed_axis_is_one_sentence(text, message):
    with pytest.raises(XaikitError, match=message):
        parse_axis(text)


def test_bad_axes_are_refused():
    with pytest.raises(XaikitError, match="names k twice"):
        expand(BenchConfig(), [parse_axis("k=1"), parse_axis("k=3")])
    with pytest.raises(XaikitError, match="--grid k takes whole numbers"):
        expand(BenchConfig(), [Axis("k", ("three",))])
    with pytest.raises(XaikitError, match="names no component"):
        expand(BenchConfig(), [parse_axis("nonsense.key=1")])


def test_an_experiment_file_gives_typed_axes(tmp_path):
    (tmp_path / "exp.toml").write_text('[grid]\nk = [1, 5]\nlabel_agreement = [true, false]\n\n[[run]]\nexplainer = "nearest-prototype"\n\n[[run]]\nname = "k3 crops off"\nk = 3\n"dataset.crop_to_bbox" = false\n')
    axes, runs = read_grid_file(tmp_path / "exp.toml")
    assert axes == [Axis("k", (1, 5)), Axis("label_agreement", (True, False))]
    assert runs == [{"explainer": "nearest-prototype"}, {"name": "k3 crops off", "k": 3, "dataset.crop_to_bbox": False}]
    named = expand(BenchConfig(), axes, runs)
    assert [name for name, _ in named][-2:] == ["explainer=nearest-prototype", "k3_crops_off"]
    assert named[-1][1].k == 3 and named[-1][1].options["dataset"] == {"crop_to_bbox": False}
    with pytest.raises(XaikitError, match="names the run k=1 twice"):
        expand(BenchConfig(), [], [{"k": 1}, {"k": 1}])
    (tmp_path / "bad.toml").write_text("[grid]\nk = 3\n")
    with pytest.raises(XaikitError, match="grid.k must be a non-empty list"):
        read_grid_file(tmp_path / "bad.toml")
    with pytest.raises(XaikitError, match="cannot read the experiment file"):
        read_grid_file(tmp_path / "missing.toml")


def test_a_grid_runs_every_combination_resumes_and_refuses_to_start_over(tiny_birds, tmp_path, capsys):
    arguments = ["bench", "--data-root", str(tiny_birds), "--limit", "4", "--device", "cpu", "--grid", "k=1,3", "--out", str(tmp_path / "grid")]
    assert main(arguments) == 0
    record = json.loads((tmp_path / "grid" / "grid.json").read_text())
    assert record["runs"] == ["k=1", "k=3"]
    for name, k in (("k=1", 1), ("k=3", 3)):
        assert json.loads((tmp_path / "grid" / name / "config.json").read_text())["components"]["explainer"]["options"]["k"] == k
        assert len((tmp_path / "grid" / name / "items.jsonl").read_text().splitlines()) == 4
    out = capsys.readouterr().out
    assert "k=1" in out and "k=3" in out
    report = (tmp_path / "grid" / "comparison" / "comparison.md").read_text()
    assert "k=1" in report and "McNemar" in report
    assert main(arguments) == 2 and "already holds a grid" in capsys.readouterr().err
    items = (tmp_path / "grid" / "k=3" / "items.jsonl").read_bytes()
    assert main([*arguments, "--resume"]) == 0
    assert (tmp_path / "grid" / "k=3" / "items.jsonl").read_bytes() == items


def test_a_foreign_grid_json_is_never_overwritten(tiny_birds, tmp_path, capsys):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "grid.json").write_text('{"my": "data"}')
    code = main(["bench", "--data-root", str(tiny_birds), "--grid", "k=1,3", "--overwrite", "--out", str(tmp_path / "mine")])
    assert code == 2 and "not a grid record xaikit wrote" in capsys.readouterr().err
    assert (tmp_path / "mine" / "grid.json").read_text() == '{"my": "data"}'


def test_the_readmes_klc_table_experiment_names_its_seven_runs():
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    axes, runs = read_grid_file(root / "docs" / "examples" / "klc-synthetic-birds.toml")
    named = dict(expand(BenchConfig(), axes, runs))
    readme = (root / "README.md").read_text()
    assert len(named) == 7 and all(f"| `{name}`" in readme for name in named)
    assert named["klc-k5"].k == 5 and named["nearest-prototype-full-frames"].explainer == "nearest-prototype"


def test_a_grid_without_matplotlib_keeps_its_runs_and_says_why_there_is_no_report(tiny_birds, tmp_path, capsys, monkeypatch):
    import xaikit.compare.plots as plots
    from xaikit.errors import MissingDependencyError

    def missing() -> None:
        raise MissingDependencyError("xaikit compare draws its plots with matplotlib, which is not installed; pip install 'xaikit[plot]'")

    monkeypatch.setattr(plots, "require_matplotlib", missing)
    assert main(["bench", "--data-root", str(tiny_birds), "--limit", "2", "--device", "cpu", "--grid", "k=1,3", "--out", str(tmp_path / "grid")]) == 0
    assert "no comparison report" in capsys.readouterr().out and not (tmp_path / "grid" / "comparison").exists()
    assert (tmp_path / "grid" / "k=3" / "summary.json").exists()
