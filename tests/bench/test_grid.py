"""Experiment grids: axes expand to one resumable run per combination, named after its values."""

from __future__ import annotations

import json
import re

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


def files_of(directory):
    return {path.name: path.read_bytes() for path in directory.iterdir()}


def test_a_resumed_grid_keeps_its_finished_runs_as_they_are_and_finishes_the_others(tiny_birds, tmp_path, capsys):
    arguments = ["bench", "--data-root", str(tiny_birds), "--limit", "2", "--device", "cpu", "--grid", "k=1,3", "--out", str(tmp_path / "grid")]
    assert main(arguments) == 0
    capsys.readouterr()
    finished = files_of(tmp_path / "grid" / "k=1")
    summary = (tmp_path / "grid" / "k=3" / "summary.json").read_bytes()
    (tmp_path / "grid" / "k=3" / "summary.json").unlink()  # killed while scoring: every image explained, no summary
    assert main([*arguments, "--resume"]) == 0
    captured = capsys.readouterr()
    assert "run 1/2: k=1 (finished, kept)" in captured.err and "run 2/2: k=3\n" in captured.err
    assert files_of(tmp_path / "grid" / "k=1") == finished  # not rebuilt, refitted, nor timed again
    assert len(json.loads(finished["config.json"])["timing"]) == 1
    assert (tmp_path / "grid" / "k=3" / "summary.json").read_bytes() == summary
    assert "k=1" in captured.out and "top1" in captured.out


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("nosuch=1", "grid run k=1,nosuch=1: explainer 'klc' has no option 'nosuch'"),
        ("dataset.nosuch=1", "grid run k=1,dataset.nosuch=1: dataset 'synthetic-birds' has no option 'nosuch'"),
        ("crop_to_bbox=maybe", "grid run k=1,crop_to_bbox=maybe: explainer 'klc' has no option 'crop_to_bbox'"),
        ("dataset.crop_to_bbox=true,maybe", "grid run k=1,dataset.crop_to_bbox=maybe: dataset 'synthetic-birds' option 'crop_to_bbox' must be true or false"),
        ("segmenter=nosuch", "grid run k=1,segmenter=nosuch: unknown segmenter 'nosuch'"),
    ],
)
def test_a_refused_grid_leaves_its_out_directory_as_it_was(tiny_birds, tmp_path, capsys, setting, message):
    (tmp_path / "grid").mkdir()
    arguments = ["bench", "--data-root", str(tiny_birds), "--limit", "2", "--device", "cpu", "--grid", "k=1", "--out", str(tmp_path / "grid")]
    assert main([*arguments, "--grid", setting]) == 2
    error = capsys.readouterr().err
    assert message in error and error.count("\n") == 1
    assert list((tmp_path / "grid").iterdir()) == []


def test_a_grid_whose_first_run_is_refused_takes_its_record_back_and_the_corrected_command_runs(tiny_birds, tmp_path, capsys):
    arguments = ["bench", "--limit", "2", "--device", "cpu", "--grid", "k=1,3", "--out", str(tmp_path / "grid")]
    assert main([*arguments, "--dataset", "cub", "--data-root", str(tmp_path / "missing")]) == 2  # refused while building run 1
    assert "missing" in capsys.readouterr().err and not (tmp_path / "grid").exists()
    assert main([*arguments, "--dataset", "cub", "--data-root", str(tiny_birds)]) == 0
    assert json.loads((tmp_path / "grid" / "grid.json").read_text())["runs"] == ["k=1", "k=3"]


def test_overwriting_with_a_smaller_grid_removes_the_old_runs_and_report_but_never_a_users_file(tiny_birds, tmp_path, capsys):
    grid = tmp_path / "grid"
    arguments = ["bench", "--data-root", str(tiny_birds), "--limit", "2", "--device", "cpu", "--out", str(grid)]
    assert main([*arguments, "--grid", "k=1,3"]) == 0
    before = {name: files_of(grid / name) for name in ("k=1", "k=3", "comparison")}
    capsys.readouterr()
    for folder in ("k=3", "comparison"):
        (grid / folder / "notes.txt").write_text("mine")
        assert main([*arguments, "--grid", "k=1", "--overwrite"]) == 2
        error = capsys.readouterr().err
        assert "notes.txt" in error and error.count("\n") == 1
        (grid / folder / "notes.txt").unlink()
        assert {name: files_of(grid / name) for name in before} == before  # refused before deleting anything
        assert json.loads((grid / "grid.json").read_text())["runs"] == ["k=1", "k=3"]
    assert main([*arguments, "--grid", "k=1", "--overwrite"]) == 0
    assert sorted(path.name for path in grid.iterdir()) == ["grid.json", "k=1"]
    assert json.loads((grid / "grid.json").read_text())["runs"] == ["k=1"]
    out = capsys.readouterr().out
    assert "wrote 1 run and grid.json" in out and "1 run\n" in out


def test_run_names_and_settings_do_not_depend_on_where_a_value_came_from():
    from xaikit.bench.grid import describe

    typed = [Axis("label_agreement", (True,)), Axis("k", (5,))]
    written = [parse_axis("label_agreement=true"), parse_axis("k=5")]
    assert [name for name, _ in expand(BenchConfig(), typed)] == [name for name, _ in expand(BenchConfig(), written)] == ["label_agreement=true,k=5"]
    assert describe(typed) == describe(written) == ["label_agreement = true, k = 5"]
    runs = [{"name": "klc"}, {"name": "full", "dataset.crop_to_bbox": False, "segmenter": "dino-parts"}]
    assert describe([], runs) == ["defaults", "dataset.crop_to_bbox = false, segmenter = dino-parts"]
    with pytest.raises(XaikitError, match="cannot be named 'comparison'"):
        expand(BenchConfig(), [], [{"name": "comparison"}])


def test_the_grid_table_shows_each_runs_settings_metrics_and_details(tiny_birds, tmp_path, capsys):
    (tmp_path / "exp.toml").write_text('[[run]]\nname = "base"\n\n[[run]]\nname = "k1"\nk = 1\n')
    assert main(["bench", "--data-root", str(tiny_birds), "--limit", "2", "--device", "cpu", "--grid-file", str(tmp_path / "exp.toml"), "--out", str(tmp_path / "grid")]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = next(line for line in lines if "settings" in line)
    assert [cell.strip() for cell in header.strip("┃│ ").replace("┃", "│").split("│")] == ["run", "settings", "accuracy (95% interval)", "details"]
    rows = {line.split("│")[1].strip(): [cell.strip() for cell in line.split("│")[2:-1]] for line in lines if line.startswith("│")}
    assert rows["base"][0] == "defaults" and rows["k1"][0] == "k = 1"
    assert all(row[2].startswith("top1 ") and ", top5 " in row[2] for row in rows.values())


def test_a_foreign_grid_json_is_never_overwritten(tiny_birds, tmp_path, capsys):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "grid.json").write_text('{"my": "data"}')
    code = main(["bench", "--data-root", str(tiny_birds), "--grid", "k=1,3", "--overwrite", "--out", str(tmp_path / "mine")])
    assert code == 2 and "not a grid record xaikit wrote" in capsys.readouterr().err
    assert (tmp_path / "mine" / "grid.json").read_text() == '{"my": "data"}'


def test_the_readmes_klc_table_is_the_one_its_experiment_prints():
    from pathlib import Path

    from xaikit.bench.grid import describe

    root = Path(__file__).resolve().parents[2]
    axes, runs = read_grid_file(root / "docs" / "examples" / "klc-synthetic-birds.toml")
    named = dict(expand(BenchConfig(), axes, runs))
    assert len(named) == 7
    assert named["klc-k5"].k == 5 and named["nearest-prototype-full-frames"].explainer == "nearest-prototype"
    readme = (root / "README.md").read_text()
    section = readme[readme.index("## KLC on synthetic birds") :]
    lines = [line for line in section[: section.index("\n## ")].splitlines() if line.startswith("|")]
    cells = [[cell.strip().strip("`") for cell in line.strip("|").split(" | ")] for line in lines]
    assert cells[0] == ["run", "settings", "accuracy (95% interval)", "details"]  # the columns the grid's table prints
    assert [(row[0], row[1]) for row in cells[2:]] == list(zip(named, describe(axes, runs), strict=True))
    assert all(re.fullmatch(r"\d+\.\d\d \(\d+\.\d\d – \d+\.\d\d\)", row[2]) and re.fullmatch(r"top1 \d+\.\d\d, top5 \d+\.\d\d", row[3]) for row in cells[2:])


def test_a_grid_without_matplotlib_keeps_its_runs_and_says_why_there_is_no_report(tiny_birds, tmp_path, capsys, monkeypatch):
    import xaikit.compare.plots as plots
    from xaikit.errors import MissingDependencyError

    def missing() -> None:
        raise MissingDependencyError("xaikit compare draws its plots with matplotlib, which is not installed; pip install 'xaikit[plot]'")

    monkeypatch.setattr(plots, "require_matplotlib", missing)
    assert main(["bench", "--data-root", str(tiny_birds), "--limit", "2", "--device", "cpu", "--grid", "k=1,3", "--out", str(tmp_path / "grid")]) == 0
    assert "no comparison report" in capsys.readouterr().out and not (tmp_path / "grid" / "comparison").exists()
    assert (tmp_path / "grid" / "k=3" / "summary.json").exists()
