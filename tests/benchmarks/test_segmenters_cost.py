"""benchmarks/segmenters_cost.py: its timers and stage split, on weight-free components (the real run needs detectron2)."""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
import torch

import xaikit
from xaikit.interfaces import Segmenter
from xaikit.types import PartMap, Sample

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "segmenters_cost.py"


def _load():
    """The benchmark script, loaded by path (benchmarks/ is not a package)."""
    spec = importlib.util.spec_from_file_location("segmenters_cost", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bench = _load()


class Batches(Segmenter):
    """Records the batch sizes it is called with, as the detectron2 adapters batch ``batch_size`` images per forward.

    Each forward pass sleeps 20 ms whatever its batch, so one at a time costs ``len(samples)`` times more.
    """

    vocabulary = ("part",)

    def __init__(self) -> None:
        self.batch_size = 4
        self.calls: list[int] = []

    def segment(self, samples: Sequence[Sample]) -> list[PartMap]:
        for start in range(0, len(samples), self.batch_size):
            self.calls.append(len(samples[start : start + self.batch_size]))
            time.sleep(0.02)
        return [PartMap(torch.zeros(sample.size, dtype=torch.int64), {1: "part"}) for sample in samples]


@pytest.fixture
def birds(tiny_birds: Path):
    dataset = xaikit.create("dataset", "synthetic-birds", root=tiny_birds)
    return dataset.split("train"), dataset.split("test")


def test_batched_means_one_forward_for_all_images_and_single_one_per_image(birds):
    segmenter = Batches()
    samples = [birds[1][index] for index in range(3)]
    figures = bench.segmenter_cost(segmenter, samples, rounds=2)
    assert segmenter.calls == [1] + [3, 1, 1, 1] * 2  # warm-up, then batched and one at a time, alternating
    assert figures["batched_s_per_image"] >= 0.006 and figures["single_s_per_image"] >= 0.02
    assert figures["single_over_batched"] == pytest.approx(3, rel=0.3)


def test_klc_stages_add_up_and_the_timers_are_removed(birds):
    train, test = birds
    klc = xaikit.create("explainer", "klc", segmenter="annotations", cache=False, prototypes_per_class=1).fit(train)
    explainer = importlib.import_module(type(klc).__module__)
    owners = [(explainer, "extract_features"), (explainer, "describe"), (klc, "_decide"), (klc.segmenter, "segment"), (klc.matcher, "match")]
    before = [vars(owner).get(name) for owner, name in owners]  # the boundary may wrap components' methods per instance
    report = bench.klc_stages(klc, [test[0], test[1]])
    stages = report["stages_s_per_query"]
    assert set(stages) == set(bench.STAGES)
    assert all(value >= 0 for name, value in stages.items() if name != "other")
    assert sum(stages.values()) == pytest.approx(report["s_per_query"], abs=1e-3)
    assert stages["backbone"] > 0 and stages["segmenter"] > 0 and stages["matching"] > 0
    assert [vars(owner).get(name) for owner, name in owners] == before
