"""KLC end to end on synthetic birds with the real demo-vit: predictions, details, options, caching, figures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import xaikit
from xaikit.errors import CapabilityError, XaikitError
from xaikit.interfaces import Capability, Segmenter
from xaikit.types import PartMap, Sample
from xaikit_klc.explainer import KLC
from xaikit_segmenters.annotations import AnnotationSegmenter


@pytest.fixture
def birds(tiny_birds: Path):
    dataset = xaikit.create("dataset", "synthetic-birds", root=tiny_birds)
    test = dataset.split("test")
    return dataset.split("train"), [test[index] for index in range(len(test))]


class CountingSegmenter(AnnotationSegmenter):
    """Ground-truth parts, counting the images it segments."""

    def __init__(self) -> None:
        super().__init__()
        self.segmented = 0

    def segment(self, samples):
        self.segmented += len(samples)
        return super().segment(samples)


class ColourSegmenter(Segmenter):
    """Parts from pixels alone: 'bright' and 'dark' regions (a segmenter that needs no annotations)."""

    vocabulary = ("bright", "dark")

    def segment(self, samples):
        maps = []
        for sample in samples:
            grey = torch.from_numpy(sample.image.astype(np.float32).mean(axis=2))
            labels = torch.where(grey > 170, 1, torch.where(grey < 60, 2, 0)).long()
            maps.append(PartMap(labels=labels, names={1: "bright", 2: "dark"}))
        return maps


def test_klc_classifies_synthetic_birds_and_beats_chance(birds):
    train, test = birds
    klc = xaikit.create("explainer", "klc").fit(train)
    explanation = klc.explain(test)
    accuracy = (explanation.predictions.numpy() == np.array([s.label for s in test])).mean()
    assert accuracy >= 0.75  # measured 0.94 (4 species, chance 0.25)
    assert torch.allclose(explanation.scores.sum(dim=1), torch.ones(len(test)))
    assert torch.equal(explanation.scores.argmax(dim=1), explanation.predictions)


def test_details_are_consistent(birds):
    train, test = birds
    klc = KLC(k=3).fit(train)
    explanation = klc.explain(test)
    for sample, detail, prediction in zip(test, explanation.details, explanation.predictions, strict=True):
        assert detail["prediction"] == int(prediction) and detail["label"] == sample.label
        assert len(detail["prototypes"]) == 3 == len(detail["prototype_parts"])
        similarities = [p["similarity"] for p in detail["prototypes"]]
        assert similarities == sorted(similarities, reverse=True)
        height, width = sample.size
        for part in detail["query_parts"]:
            x, y = part["keypoint"]
            assert 0 <= x <= width and 0 <= y <= height
        for match in detail["matches"]:
            query_part = detail["query_parts"][match["query_part"]]
            prototype_part = detail["prototype_parts"][match["prototype"]][match["prototype_part"]]
            assert query_part["name"] == prototype_part["name"] == match["part"]  # label agreement
        if not detail["fallback"]:
            votes = np.bincount([detail["prototypes"][m["prototype"]]["label"] for m in detail["matches"]], minlength=4)
            assert np.allclose(explanation.scores[test.index(sample)].numpy(), votes / votes.sum(), atol=1e-6)


def test_label_agreement_off_keeps_every_mutual_match(birds):
    train, test = birds
    strict = KLC().fit(train).explain(test)
    loose = KLC(label_agreement=False).fit(train).explain(test)
    for kept, everything in zip(strict.details, loose.details, strict=True):
        assert everything["rejected_matches"] == 0
        assert len(everything["matches"]) == len(kept["matches"]) + kept["rejected_matches"]
    assert any(any(m["part"] != m["prototype_part_name"] for m in d["matches"]) for d in loose.details)


def test_concept_maps_follow_the_vocabulary(birds):
    train, test = birds
    explanation = KLC().fit(train).explain(test[:2])
    assert explanation.concept_maps.shape == (2, 15, 64, 64)
    assert explanation.concept_names == xaikit.CUB_PART_NAMES
    assert explanation.concept_maps.sum(dim=1).max() <= 1  # one part per cell


def test_concept_maps_from_pixels_need_a_pixel_segmenter(birds):
    train, test = birds
    images = torch.rand(2, 3, 64, 64)
    annotated = KLC().fit(train)
    assert Capability.CONCEPT_MAPS not in annotated.capabilities and annotated.concept_names is None
    with pytest.raises(CapabilityError, match="reads dataset annotations"):
        annotated.concept_maps(images)
    klc = KLC(segmenter=ColourSegmenter(), token_grid=16).fit(train)
    assert Capability.CONCEPT_MAPS in klc.capabilities
    maps = klc.concept_maps(images)
    assert maps.shape == (2, 2, 16, 16) and set(maps.unique().tolist()) <= {0.0, 1.0}


def test_prototype_parts_are_cached_on_disk(birds, monkeypatch, tmp_path):
    monkeypatch.setenv("XAIKIT_CACHE_DIR", str(tmp_path))
    train, _ = birds
    first = CountingSegmenter()
    KLC(segmenter=first).fit(train)
    assert first.segmented == len(train) and len(list((tmp_path / "klc-gallery").iterdir())) == 1
    second = CountingSegmenter()
    klc = KLC(segmenter=second).fit(train)
    assert second.segmented == 0 and klc.parts is not None and len(klc.parts.name) > 0
    third = CountingSegmenter()
    KLC(segmenter=third, cache=False).fit(train)
    assert third.segmented == len(train)


def test_python_api_takes_objects_and_names(birds):
    train, test = birds
    backbone = xaikit.create("backbone", "demo-vit")
    klc = xaikit.create("explainer", "klc", backbone=backbone, segmenter=AnnotationSegmenter(), matcher="cosine", k=2)
    assert klc.backbone is backbone and type(klc.matcher).__name__ == "NearestNeighbour"
    assert len(klc.fit(train).explain(test[:1]).details[0]["prototypes"]) == 2


def test_layer_option(birds):
    train, test = birds
    klc = KLC(layer=-2).fit(train)
    assert klc.layer == 4 and len(klc.explain(test[:2])) == 2
    with pytest.raises(XaikitError, match="build it with layers"):
        KLC(backbone=xaikit.create("backbone", "demo-vit"), layer=3)


def test_render_draws_the_figure(birds):
    train, test = birds
    klc = KLC().fit(train)
    detail = klc.explain(test[:1]).details[0]
    figure = klc.render(test[0], detail)
    assert figure.ndim == 3 and figure.dtype == np.uint8 and figure.shape[0] > klc.k * 280  # one 280-row pair per prototype


def test_refusals():
    with pytest.raises(XaikitError, match="not fitted"):
        KLC().explain([Sample(image=np.zeros((8, 8, 3), np.uint8))])
    with pytest.raises(XaikitError, match="k must be at least 1"):
        KLC(k=0)
    with pytest.raises(XaikitError, match="unknown prototype selection"):
        KLC(prototype_selection="random")
    with pytest.raises(CapabilityError, match="does not draw"):
        xaikit.create("explainer", "nearest-prototype").render(Sample(image=np.zeros((8, 8, 3), np.uint8)), {})


def test_nearest_prototype_baseline(birds):
    train, test = birds
    baseline = xaikit.create("explainer", "nearest-prototype").fit(train)
    explanation = baseline.explain(test)
    assert torch.equal(explanation.scores.argmax(dim=1), explanation.predictions)
    assert all(d["prototype"]["label"] == int(p) for d, p in zip(explanation.details, explanation.predictions, strict=True))


def test_notebook_preprocessing(birds):
    """preprocessing=notebook: PIL bilinear squash on a copy of the backbone, floor-nearest maps, mirrored tokens."""
    train, test = birds
    backbone = xaikit.create("backbone", "demo-vit", resize="squash")
    notebook = KLC(backbone=backbone, preprocessing="notebook", cache=False).fit(train)
    assert notebook.backbone is not backbone and notebook.backbone.model is backbone.model
    assert notebook.backbone.preprocessing.interpolation == "pil-bilinear" and backbone.preprocessing.interpolation == "bicubic"
    assert notebook.backbone.cache_namespace != backbone.cache_namespace, "cached features of the two never mix"
    default = KLC(backbone=backbone, cache=False).fit(train)
    mine, theirs = default.explain(test[:4]), notebook.explain(test[:4])
    assert mine.scores.shape == theirs.scores.shape
    first = [match["similarity"] for match in mine.details[0]["matches"]]
    assert first != [match["similarity"] for match in theirs.details[0]["matches"]], "other descriptors"
    with pytest.raises(XaikitError, match="build the backbone with resize=squash"):
        KLC(preprocessing="notebook")  # demo-vit resizes and centre-crops by default
    with pytest.raises(XaikitError, match="preprocessing"):
        KLC(preprocessing="skimage")
