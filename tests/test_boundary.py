"""The host-plugin boundary: what third-party components return is checked, and their failures are blamed on them."""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np
import pytest
import torch

import xaikit
from xaikit.bench import BenchConfig, run_bench
from xaikit.cli import main
from xaikit.errors import PluginContractError, PluginFailure, XaikitError
from xaikit.interfaces import Matcher, PredictionMetric, Segmenter
from xaikit.testing.fixtures import tiny_samples
from xaikit.types import Match, MetricResult, PartMap, Sample


class HalfSizeSegmenter(Segmenter):
    """Part maps at half the image's size (keypoints would land in the wrong frame)."""

    vocabulary = ("part",)

    def __init__(self, dtype: str = "int64", unnamed: bool = False, half: bool = True, crash: bool = False) -> None:
        self.dtype, self.unnamed, self.half, self.crash = getattr(torch, dtype), unnamed, half, crash

    def segment(self, samples: Sequence[Sample]) -> list[PartMap]:
        if self.crash:
            raise RuntimeError("CUDA out of memory (pretend)")
        maps = []
        for sample in samples:
            height, width = sample.size
            size = (height // 2, width // 2) if self.half else (height, width)
            labels = torch.ones(size, dtype=self.dtype)
            labels[0, 0] = 7 if self.unnamed else 1
            maps.append(PartMap(labels=labels, names={1: "part"}))
        return maps


class LooseMatcher(Matcher):
    """Indices out of range, float indices, or NaN similarities, as asked."""

    def __init__(self, fault: str = "range") -> None:
        self.fault = fault

    def match(self, query: torch.Tensor, candidates: torch.Tensor) -> Match:
        index = torch.zeros(1, dtype=torch.int64)
        if self.fault == "range":
            return Match(index, index + len(candidates), torch.ones(1))
        if self.fault == "float":
            return Match(index.float(), index, torch.ones(1))  # type: ignore[arg-type]
        return Match(index, index, torch.tensor([float("nan")]))


UNIT_FAULTS = {"unit-list": [0.0, 100.0], "unit-tensor": torch.tensor([0.0, 100.0]), "unit-mean": (0.0, 90.0), "unit-nan": (float("nan"), 50.0), "unit-empty": ()}
"""Unit values a broken metric returns with the value 50."""


class NaNAccuracy(PredictionMetric):
    """A prediction metric that returns NaN, or raises, or puts a tensor in its details."""

    name = "nan-accuracy"
    higher_is_better = True

    def __init__(self, fault: str = "nan") -> None:
        self.fault = fault

    def score(self, labels: torch.Tensor, scores: torch.Tensor) -> MetricResult:
        if self.fault == "raise":
            raise ZeroDivisionError("division by zero")
        if self.fault == "tensor":
            return MetricResult(self.name, 1.0, True, {"per_class": torch.ones(2)})
        if self.fault == "numpy":
            return MetricResult(self.name, np.float32(50.0), True)
        if self.fault in UNIT_FAULTS:
            return MetricResult(self.name, 50.0, True, unit_values=UNIT_FAULTS[self.fault])
        return MetricResult(self.name, float("nan"), True)


class ThirdParty:
    """A plugin package as a third party writes it (not shipped with xaikit)."""

    @xaikit.hookimpl
    def register_segmenters(self, register):  # noqa: ANN001, ANN201
        register("half-size", HalfSizeSegmenter, summary="broken on purpose")
        register("exploding", lambda: (_ for _ in ()).throw(RuntimeError("no GPU found")), summary="factory raises")

    @xaikit.hookimpl
    def register_matchers(self, register):  # noqa: ANN001, ANN201
        register("loose", LooseMatcher, summary="broken on purpose")

    @xaikit.hookimpl
    def register_metrics(self, register):  # noqa: ANN001, ANN201
        register("nan-accuracy", NaNAccuracy, summary="broken on purpose")


@pytest.fixture
def third_party() -> xaikit.Registry:
    registry = xaikit.get_registry()
    registry.register_plugin(ThirdParty(), "acme-parts", distribution="acme-parts", version="0.3")
    return registry


@pytest.mark.parametrize(
    ("options", "rule"),
    [
        ({}, r"part map of \(\d+, \d+\) for an image of \(\d+, \d+\)"),
        ({"half": False, "dtype": "int32"}, "dtype torch.int32; they must be torch.int64"),
        ({"half": False, "unnamed": True}, "used label 7 without naming it"),
    ],
)
def test_a_segmenters_output_is_checked_and_the_violation_names_plugin_component_rule(third_party, options, rule):
    segmenter = third_party.create("segmenter", "half-size", **options)
    with pytest.raises(PluginContractError, match=rf"^plugin 'acme-parts' 0\.3, segmenter 'half-size' broke the segmenter contract in segment\(\): it .*{rule}"):
        segmenter.segment(tiny_samples(2))
    assert isinstance(segmenter, HalfSizeSegmenter), "the component keeps its type"


@pytest.mark.parametrize(("fault", "rule"), [("range", "candidate index 3 outside 0..2"), ("float", "query indices of dtype torch.float32"), ("nan", "not finite")])
def test_a_matchers_output_is_checked(third_party, fault, rule):
    matcher = third_party.create("matcher", "loose", fault=fault)
    with pytest.raises(PluginContractError, match=rule):
        matcher.match(torch.randn(2, 4), torch.randn(3, 4))


@pytest.mark.parametrize(
    ("fault", "rule"),
    [
        ("nan", "returned the value nan"), ("tensor", "not JSON-serialisable"),
        ("unit-list", "unit_values of type list; they must be a tuple of numbers"), ("unit-tensor", "unit_values of type Tensor"),
        ("unit-empty", "an empty unit_values"), ("unit-nan", "unit_values that are not all finite"),
        ("unit-mean", "2 unit_values whose mean 45.0 is not the value 50.0"),
    ],
)
def test_a_metrics_result_is_checked(third_party, fault, rule):
    metric = third_party.create("metric", "nan-accuracy", fault=fault)
    with pytest.raises(PluginContractError, match=rule):
        metric.score(torch.tensor([0, 1]), torch.eye(2))


def test_an_exception_in_a_plugins_code_names_the_plugin_and_keeps_the_original(third_party):
    with pytest.raises(PluginFailure, match=r"plugin 'acme-parts' 0\.3, segmenter 'half-size' failed in segment\(\): RuntimeError: CUDA out of memory") as caught:
        third_party.create("segmenter", "half-size", crash=True).segment(tiny_samples(1))
    assert isinstance(caught.value.__cause__, RuntimeError) and caught.value.exit_code == 3
    with pytest.raises(PluginFailure, match=r"segmenter 'exploding' failed in factory\(\): RuntimeError: no GPU found"):
        third_party.create("segmenter", "exploding")


def test_deliberate_refusals_pass_through_unchanged(third_party):
    class Refusing(Segmenter):
        vocabulary = ("x",)

        def segment(self, samples: Sequence[Sample]) -> list[PartMap]:
            raise XaikitError("image 3 has no pixels")

    third_party.register_plugin(type("P", (), {"register_segmenters": xaikit.hookimpl(lambda self, register: register("refusing", Refusing))})(), "refuser")
    with pytest.raises(XaikitError, match="^image 3 has no pixels$"):
        third_party.create("segmenter", "refusing").segment(tiny_samples(1))


def test_the_cli_exits_3_for_a_plugin_failure_and_2_for_a_violation(third_party, tiny_birds, tmp_path, capsys):
    code = main(["bench", "--data-root", str(tiny_birds), "--segmenter", "exploding", "--out", str(tmp_path / "a")])
    err = capsys.readouterr().err
    assert code == 3 and "plugin 'acme-parts' 0.3, segmenter 'exploding' failed in factory()" in err and "Traceback" not in err
    code = main(["bench", "--data-root", str(tiny_birds), "--segmenter", "half-size", "--limit", "2", "--out", str(tmp_path / "b")])
    assert code == 2 and "broke the segmenter contract" in capsys.readouterr().err


def test_a_failing_metric_costs_no_explained_image_and_resume_rescores(third_party, tiny_birds, tmp_path, monkeypatch):
    config = BenchConfig(data_root=str(tiny_birds), metrics=["accuracy", "nan-accuracy"], limit=4, device="cpu")
    with pytest.raises(PluginContractError, match="every explained image is kept"):
        run_bench(config, tmp_path / "run")
    items = (tmp_path / "run" / "items.jsonl").read_text()
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())  # strict JSON: no NaN
    assert len(items.splitlines()) == 4
    assert summary["metrics"]["accuracy"]["value"] is not None
    assert summary["metrics"]["nan-accuracy"]["value"] is None and "returned the value nan" in summary["metrics"]["nan-accuracy"]["details"]["reason"]

    monkeypatch.setattr(NaNAccuracy, "score", lambda self, labels, scores: MetricResult(self.name, 50.0, True))  # the plugin, fixed
    result = run_bench(config, tmp_path / "run", resume=True)
    assert (tmp_path / "run" / "items.jsonl").read_text() == items, "nothing explained again"
    assert result.summary["metrics"]["nan-accuracy"]["value"] == 50.0


def test_a_raising_metric_is_blamed_and_the_records_stay(third_party, tiny_birds, tmp_path):
    config = BenchConfig(data_root=str(tiny_birds), metrics=["nan-accuracy"], limit=4, device="cpu", options={"metric.nan-accuracy": {"fault": "raise"}})
    with pytest.raises(PluginFailure, match=r"metric 'nan-accuracy' failed in score\(\): ZeroDivisionError"):
        run_bench(config, tmp_path / "run")
    assert len((tmp_path / "run" / "items.jsonl").read_text().splitlines()) == 4


def test_builtins_are_guarded_too_and_their_violations_are_xaikits_bugs(monkeypatch):
    segmenter = xaikit.create("segmenter", "annotations")
    from xaikit_segmenters.annotations import AnnotationSegmenter

    assert type(segmenter).__name__ == "AnnotationSegmenter" and isinstance(segmenter, AnnotationSegmenter)
    monkeypatch.setattr(AnnotationSegmenter, "segment", lambda self, samples: [])
    with pytest.raises(RuntimeError, match="plugin 'xaikit-segmenters'.*returned 0 part maps for 1 images"):
        segmenter.segment(tiny_samples(1))


def test_a_copy_of_a_guarded_component_is_guarded_and_itself(third_party):
    import copy

    segmenter = third_party.create("segmenter", "half-size", half=False)
    clone = copy.copy(segmenter)
    clone.unnamed = True  # the copy's own state is what its guarded method sees
    assert len(segmenter.segment(tiny_samples(1))) == 1
    with pytest.raises(PluginContractError, match="used label 7"):
        clone.segment(tiny_samples(1))


def test_a_numpy_scalar_value_is_a_finite_number_and_summary_json_takes_it(third_party, tiny_birds, tmp_path):
    config = BenchConfig(data_root=str(tiny_birds), metrics=["nan-accuracy"], limit=2, device="cpu", options={"metric.nan-accuracy": {"fault": "numpy"}})
    result = run_bench(config, tmp_path / "run")
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["metrics"]["nan-accuracy"]["value"] == 50.0
    assert result.summary["metrics"]["nan-accuracy"]["value"] == 50.0
