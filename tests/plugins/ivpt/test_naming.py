"""Naming IVPT's concepts after the parts they hit (Huang et al.'s hit rule), and the explainer's concept_names option."""

from __future__ import annotations

import pytest
import torch

import xaikit
from xaikit.errors import XaikitError
from xaikit.testing import TinyDataset
from xaikit.types import Sample
from xaikit_ivpt.naming import names_from_rates, part_hit_rates

SMALL = {"prototypes": [5, 4, 3], "epochs": 1, "train_batch_size": 4, "device": "cpu"}


def _peaks(cells: list[tuple[int, int]], size: int = 7):
    """A ``layer_maps`` whose one layer has concept ``k`` peaking at ``cells[k]`` of a ``size x size`` map, for every image."""

    def layer_maps(images: torch.Tensor) -> list[torch.Tensor]:
        maps = torch.zeros(len(images), len(cells), size, size)
        for concept, (row, col) in enumerate(cells):
            maps[:, concept, row, col] = 1.0
        return [maps]

    return layer_maps


def test_a_concept_is_named_after_the_part_its_peak_box_holds():
    dataset = TinyDataset(classes=2, per_class=3)  # head left, body middle, tail right of every box crop
    cells = [(3, 0), (3, 6), (0, 0), (3, 0), (3, 3)]  # head, tail, no part (top left corner), head again, body
    rates, parts = part_hit_rates(_peaks(cells), dataset, (64, 64), batch_size=4)
    assert parts == ("head", "body", "tail") and len(rates) == 1 and rates[0].shape == (5, 3)
    torch.testing.assert_close(rates[0][:3], torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 0.0]], dtype=torch.float64))
    assert names_from_rates(rates[0], parts) == ["head", "tail", "concept 3", "head 2", "body"]


def test_names_from_rates_pick_the_most_hit_part_and_number_repeats():
    rates = torch.tensor([[0.2, 0.7], [0.9, 0.1], [0.0, 0.0], [0.3, 0.4], [0.5, 0.5]], dtype=torch.float64)
    assert names_from_rates(rates, ["beak", "tail"]) == ["tail", "beak", "concept 3", "tail 2", "beak 2"]


def test_images_without_part_annotations_are_refused():
    dataset = TinyDataset(classes=1, per_class=2)
    bare = [Sample(image=dataset[0].image, image_id=7)]
    with pytest.raises(XaikitError, match="image 7 lacks them"):
        part_hit_rates(_peaks([(0, 0)]), bare, (64, 64))  # type: ignore[arg-type]
    with pytest.raises(XaikitError, match="empty"):
        part_hit_rates(_peaks([(0, 0)]), [], (64, 64))  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def backbone():
    from xaikit.testing import demo_backbone

    return demo_backbone()


def test_concept_names_parts_names_every_layer_when_fitted(backbone):
    train = TinyDataset(classes=2, per_class=4, size=64).split("train")
    explainer = xaikit.create("explainer", "ivpt", backbone=backbone, concept_names="parts", **SMALL).fit(train)
    names = explainer.layer_concept_names
    assert [len(names[layer]) for layer in range(3)] == [4, 3, 2]
    allowed = {"head", "body", "tail"}
    for layer_names in names.values():
        assert all(name.split()[0] in allowed or name.startswith("concept") for name in layer_names)
    detail = explainer.explain([train[0]]).details[0]
    assert [concept["name"] for concept in detail["concepts"]] == names[2]
    assert [name.split(" ", 2)[2] for name in explainer.concept_names] == names[0]  # "block 4 <name>": concept_layer -3
    assert explainer.name_concepts(train) == [names[layer] for layer in range(3)]


def test_concept_names_can_be_given_and_are_checked(backbone):
    train = TinyDataset(classes=2, per_class=4, size=64).split("train")
    explainer = xaikit.create("explainer", "ivpt", backbone=backbone, concept_names=["beak", "wing"], **SMALL).fit(train)
    assert [concept["name"] for concept in explainer.explain([train[0]]).details[0]["concepts"]] == ["beak", "wing"]
    plain = xaikit.create("explainer", "ivpt", backbone=backbone, **SMALL).fit(train)
    assert [concept["name"] for concept in plain.explain([train[0]]).details[0]["concepts"]] == ["concept 1", "concept 2"]
    for bad in (["only one"], "heads"):
        with pytest.raises(XaikitError, match="concept_names must be null, parts, or a list of the 2 final concepts' names"):
            xaikit.create("explainer", "ivpt", backbone=backbone, concept_names=bad, **SMALL)
    with pytest.raises(XaikitError, match="'concept_names' must be null or a list"):
        xaikit.create("explainer", "ivpt", backbone=backbone, concept_names=[1, 2], **SMALL)
