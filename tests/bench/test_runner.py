"""The benchmark runner: kill and resume, Ctrl-C and resume, corrupt images, option routing."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from xaikit.bench import BenchConfig, Progress, run_bench, split_options
from xaikit.bench.uncertainty import OVER_UNITS, mean_interval
from xaikit.errors import CapabilityError, DatasetError, UnknownOptionError


def config(root: Path, **changes) -> BenchConfig:
    return BenchConfig(**{"dataset": "synthetic-birds", "data_root": str(root), "batch_size": 4, "device": "cpu", **changes})


def test_a_clean_run_writes_three_files(tiny_birds, tmp_path):
    result = run_bench(config(tiny_birds), tmp_path / "run")
    files = sorted(path.name for path in (tmp_path / "run").iterdir())
    assert files == ["config.json", "items.jsonl", "summary.json"]
    recorded = json.loads((tmp_path / "run" / "config.json").read_text())
    assert recorded["components"]["explainer"]["options"]["k"] == 3
    assert recorded["components"]["explainer"]["options"]["backbone"] == "demo-vit"
    assert recorded["components"]["segmenter"]["name"] == "annotations"
    assert {"xaikit", "torch", "python", "plugins"} <= set(recorded["versions"])
    assert "xaikit-klc" in recorded["versions"]["plugins"]
    items = [json.loads(line) for line in (tmp_path / "run" / "items.jsonl").read_text().splitlines()]
    assert len(items) == 16 and all({"image_id", "label", "prediction", "scores", "details"} <= set(item) for item in items)
    accuracy = 100 * sum(item["correct"] for item in items) / len(items)
    assert result.summary["metrics"]["accuracy"]["value"] == pytest.approx(accuracy)
    assert result.summary["evaluated"] == 16 and result.summary["skipped"] == []


class Interrupt(Progress):
    """Presses Ctrl-C once ``after`` images are finished."""

    def __init__(self, after: int) -> None:
        self.after, self.done = after, 0

    def advance(self, count: int) -> None:
        self.done += count
        if self.done >= self.after:
            raise KeyboardInterrupt


def test_ctrl_c_then_resume_gives_the_clean_summary(tiny_birds, tmp_path):
    run_bench(config(tiny_birds, limit=12, seed=5), tmp_path / "clean")
    with pytest.raises(KeyboardInterrupt):
        run_bench(config(tiny_birds, limit=12, seed=5), tmp_path / "cut", progress=Interrupt(after=8))
    assert len((tmp_path / "cut" / "items.jsonl").read_text().splitlines()) == 8
    assert not (tmp_path / "cut" / "summary.json").exists()
    run_bench(config(tiny_birds, limit=12, seed=5), tmp_path / "cut", resume=True)
    assert (tmp_path / "cut" / "summary.json").read_bytes() == (tmp_path / "clean" / "summary.json").read_bytes()


KILLER = textwrap.dedent(
    """
    import os, signal, sys
    from xaikit.bench import rundir
    from xaikit.cli import main

    original = rundir.RunDirectory.append
    calls = []

    def append(self, records):
        calls.append(1)
        if len(calls) == 3:  # die while writing the third batch: half a line reaches the disk
            with (self.path / "items.jsonl").open("a") as file:
                file.write('{"index": 99, "scor')
            os.kill(os.getpid(), signal.SIGKILL)
        original(self, records)

    rundir.RunDirectory.append = append
    sys.exit(main(sys.argv[1:]))
    """
)


def test_a_killed_run_resumes_to_the_clean_summary(tiny_birds, tmp_path):
    from xaikit.cli import main

    arguments = ["bench", "--dataset", "synthetic-birds", "--data-root", str(tiny_birds), "--batch-size", "4", "--device", "cpu"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    killed = subprocess.run([sys.executable, "-c", KILLER, *arguments, "--out", str(tmp_path / "killed")], env=env, capture_output=True, text=True)
    assert killed.returncode == -9, killed.stderr
    assert len((tmp_path / "killed" / "items.jsonl").read_text().splitlines()) == 9  # 8 whole lines and a torn one
    assert main([*arguments, "--out", str(tmp_path / "killed"), "--resume"]) == 0
    assert main([*arguments, "--out", str(tmp_path / "clean")]) == 0
    assert (tmp_path / "killed" / "summary.json").read_bytes() == (tmp_path / "clean" / "summary.json").read_bytes()
    indices = [json.loads(line)["index"] for line in (tmp_path / "killed" / "items.jsonl").read_text().splitlines()]
    assert sorted(indices) == list(range(16))


@pytest.fixture
def birds_with_a_corrupt_image(tiny_birds, tmp_path) -> tuple[Path, Path]:
    root = tmp_path / "birds"
    shutil.copytree(tiny_birds, root)
    from xaikit import CUBDataset

    corrupt = CUBDataset(root, split="test")[3].path
    corrupt.write_bytes(b"not a jpeg at all")
    return root, corrupt


def test_a_corrupt_image_is_skipped_and_recorded(birds_with_a_corrupt_image, tmp_path):
    root, corrupt = birds_with_a_corrupt_image
    result = run_bench(config(root), tmp_path / "run")
    assert result.summary["evaluated"] == 15
    (skipped,) = result.summary["skipped"]
    assert skipped["index"] == 3 and str(corrupt) in skipped["reason"]
    lines = [json.loads(line) for line in (tmp_path / "run" / "items.jsonl").read_text().splitlines()]
    assert [line for line in lines if line.get("status") == "skipped"] == [{"index": 3, "status": "skipped", "reason": skipped["reason"]}]


def test_strict_stops_at_a_corrupt_image_and_keeps_what_was_done(birds_with_a_corrupt_image, tmp_path):
    root, corrupt = birds_with_a_corrupt_image
    with pytest.raises(DatasetError, match="--strict"):
        run_bench(config(root, strict=True), tmp_path / "run")
    assert not (tmp_path / "run" / "items.jsonl").exists()  # image 3 is in the first batch
    with pytest.raises(DatasetError, match="--strict"):
        run_bench(config(root, strict=True, batch_size=2), tmp_path / "run2")
    assert len((tmp_path / "run2" / "items.jsonl").read_text().splitlines()) == 2


def test_options_are_routed_to_their_component(tiny_birds, tmp_path):
    options = split_options({"k": 2, "segmenter.radius": 0.2, "backbone.image_size": 96, "metric.accuracy.top": [1, 2]}, ["accuracy"])
    result = run_bench(config(tiny_birds, options=options, limit=4), tmp_path / "run")
    recorded = json.loads((tmp_path / "run" / "config.json").read_text())["components"]
    assert recorded["explainer"]["options"]["k"] == 2
    assert recorded["segmenter"]["options"]["radius"] == 0.2
    assert recorded["backbone"]["options"]["image_size"] == 96
    assert set(result.summary["metrics"]["accuracy"]["details"]) == {"top1", "top2", "images"}


def test_bad_names_and_options_fail_before_anything_is_written(tiny_birds, tmp_path):
    with pytest.raises(UnknownOptionError, match="names no component"):
        split_options({"segmentr.radius": 1}, ["accuracy"])
    with pytest.raises(UnknownOptionError, match="metric.NAME.KEY"):
        split_options({"metric.consistency.mu": 1}, ["accuracy"])
    with pytest.raises(UnknownOptionError, match="takes no segmenter"):
        run_bench(config(tiny_birds, explainer="nearest-prototype", segmenter="annotations"), tmp_path / "a")
    with pytest.raises(CapabilityError, match="needs concept-maps"):
        run_bench(config(tiny_birds, explainer="nearest-prototype", metrics=["consistency"]), tmp_path / "b")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_random_metrics_are_seeded_with_the_run_seed(tiny_birds, tmp_path):
    first = run_bench(config(tiny_birds, explainer="gradcam", metrics=["stability"], limit=6), tmp_path / "a")
    second = run_bench(config(tiny_birds, explainer="gradcam", metrics=["stability"], limit=6), tmp_path / "b")
    recorded = json.loads((tmp_path / "a" / "config.json").read_text())["components"]["metric.stability"]["options"]
    assert recorded["seed"] == 31 and recorded["device"] == "cpu"
    assert (tmp_path / "a" / "summary.json").read_bytes() == (tmp_path / "b" / "summary.json").read_bytes()
    assert first.summary == second.summary


def test_presentation_options_are_not_part_of_the_configuration(tiny_birds, tmp_path):
    result = run_bench(config(tiny_birds, options={"explainer": {"progress": True}}), tmp_path / "run")
    recorded = json.loads((result.path / "config.json").read_text())["components"]["explainer"]["options"]
    assert "progress" not in recorded and recorded["k"] == 3


def test_a_metric_over_units_gets_a_seeded_interval_over_its_units(tiny_birds, tmp_path):
    result = run_bench(config(tiny_birds, explainer="gradcam", metrics=["accuracy", "consistency"], limit=8, bootstrap=200), tmp_path / "run")
    metrics = json.loads((tmp_path / "run" / "summary.json").read_text())["metrics"]
    consistency, units = metrics["consistency"], result.metrics[1].unit_values
    assert len(units) == consistency["details"]["units"] and consistency["interval"]["method"] == "percentile bootstrap over units"
    assert consistency["interval"] == mean_interval(units, resamples=200, seed=31, method=OVER_UNITS)
    assert consistency["interval"]["low"] <= consistency["value"] <= consistency["interval"]["high"]
    assert metrics["accuracy"]["interval"]["method"] == "percentile bootstrap over images"


class Recorder(Progress):
    """Keeps the stages and, per stage, the images reported while a metric scores."""

    def __init__(self) -> None:
        self.scoring: dict[str, int] = {}
        self.current = ""

    def stage(self, message: str) -> None:
        self.current = message

    def scored(self, count: int) -> None:
        self.scoring[self.current] = self.scoring.get(self.current, 0) + count


def test_scoring_reports_every_image_a_metric_sends_through_the_explainer(tiny_birds, tmp_path):
    progress = Recorder()
    result = run_bench(config(tiny_birds, explainer="gradcam", metrics=["accuracy", "consistency", "stability"], limit=6), tmp_path / "run", progress=progress)
    assert progress.scoring == {"scoring consistency": 6, "scoring stability": 12}  # stability: each image clean and noisy
    assert result.summary["metrics"]["stability"]["value"] is not None


def test_reporting_leaves_the_explainer_as_it_was():
    from xaikit.bench.runner import _reported
    from xaikit.testing.toys import ToyExplainer

    explainer, progress = ToyExplainer(), Recorder()
    before = dict(vars(explainer))
    with _reported(explainer, progress):
        assert "concept_maps" in vars(explainer)
    assert vars(explainer) == before and type(explainer).concept_maps is ToyExplainer.concept_maps
