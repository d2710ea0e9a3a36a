"""The contract suites fail on components that break the interfaces: each check is called directly on a broken one."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch

from xaikit.errors import CapabilityError
from xaikit.interfaces import Backbone, Capability, Matcher, Metric
from xaikit.testing import (
    BackboneContract,
    DatasetContract,
    ExplainerContract,
    MatcherContract,
    MetricContract,
    SegmenterContract,
    TinyDataset,
    ToyExplainer,
    ToySegmenter,
    image_batch,
)
from xaikit.testing.contracts._base import default_samples
from xaikit.types import Features, Match, MetricResult, PartMap, Sample

FAILURES = (AssertionError, pytest.fail.Exception)


def fails(check: Callable[..., None], *args: object) -> None:
    """``check(*args)`` must report a contract violation."""
    with pytest.raises(FAILURES):
        check(*args)


# ----------------------------------------------------------------------------------- segmenters


class RelabellingSegmenter(ToySegmenter):
    """Breaks the contract in the way ``bug`` names."""

    def __init__(self, bug: str) -> None:
        self.bug = bug
        self.calls = 0

    def segment(self, samples):
        self.calls += 1
        maps = super().segment(samples)
        if self.bug == "size":
            return [PartMap(labels=m.labels[:-1], names=m.names) for m in maps]
        if self.bug == "unnamed":
            return [PartMap(labels=m.labels.masked_fill(m.labels == 2, 7), names=m.names) for m in maps]
        if self.bug == "negative":
            return [PartMap(labels=m.labels - 2, names={1: "top"}) for m in maps]
        if self.bug == "random":
            return [PartMap(labels=m.labels.roll(self.calls, dims=0), names=m.names) for m in maps]
        if self.bug == "renamed":  # ids swap meaning with the batch size, though joint = False
            names = {1: "top", 2: "bottom"} if len(samples) > 1 else {1: "bottom", 2: "top"}
            return [PartMap(labels=m.labels, names=names) for m in maps]
        if self.bug == "per-image":  # ids numbered per image (as found), though joint = False and a fingerprint is given
            swapped = [sample.label % 2 for sample in samples]  # what the image shows decides the numbering
            return [
                PartMap(labels=(3 - m.labels).masked_fill(m.labels == 0, 0), names={1: "bottom", 2: "top"}) if swap else m
                for m, swap in zip(maps, swapped, strict=True)
            ]
        raise AssertionError(self.bug)


SEGMENTER_CHECKS = {
    "size": lambda suite, segmenter, samples, maps: suite.test_labels_are_int64_the_size_of_the_image(maps, samples),
    "unnamed": lambda suite, segmenter, samples, maps: suite.test_every_present_label_is_named_from_the_vocabulary(segmenter, maps),
    "negative": lambda suite, segmenter, samples, maps: suite.test_zero_is_background_and_parts_are_positive(maps),
    "random": lambda suite, segmenter, samples, maps: suite.test_is_deterministic(segmenter, samples, maps),
    "renamed": lambda suite, segmenter, samples, maps: suite.test_label_ids_mean_the_same_part_in_every_call_unless_joint(segmenter, samples, maps),
    "per-image": lambda suite, segmenter, samples, maps: suite.test_a_label_id_names_one_part_across_images_and_calls_unless_joint(segmenter, samples, maps),
}


@pytest.mark.parametrize("bug", sorted(SEGMENTER_CHECKS))
def test_segmenter_contract_catches(bug):
    segmenter, samples = RelabellingSegmenter(bug), default_samples()
    fails(SEGMENTER_CHECKS[bug], SegmenterContract(), segmenter, samples, segmenter.segment(samples))


# ------------------------------------------------------------------------------------- matchers


class BrokenMatcher(Matcher):
    """Pairs every query row with candidate row ``n`` (one past the end), normalising the query in place."""

    def match(self, query, candidates):
        query.div_(query.norm(dim=1, keepdim=True))
        rows = torch.arange(len(query))
        return Match(query=rows, candidate=torch.full_like(rows, len(candidates)), similarity=torch.ones(len(query)))


class FlatteringMatcher(Matcher):
    """Finds the right pairs but reports a made-up similarity of 1 for each."""

    def match(self, query, candidates):
        pairs = builtin_mnn().match(query, candidates)
        return Match(query=pairs.query, candidate=pairs.candidate, similarity=torch.ones(len(pairs)))


def builtin_mnn() -> Matcher:
    """The built-in mnn matcher, whose similarities are the true cosines."""
    import xaikit

    return xaikit.create("matcher", "mnn")


def test_matcher_contract_catches_made_up_similarities():
    suite, matcher = MatcherContract(), FlatteringMatcher()
    descriptors = suite.make_descriptors()
    suite.test_similarities_are_what_the_matcher_declares(builtin_mnn(), descriptors, builtin_mnn().match(*descriptors))
    fails(suite.test_similarities_are_what_the_matcher_declares, matcher, descriptors, matcher.match(*descriptors))


def test_matcher_contract_catches_out_of_range_rows_in_place_edits_and_pairs_from_nothing():
    suite, matcher = MatcherContract(), BrokenMatcher()
    descriptors = suite.make_descriptors()
    fails(suite.test_indices_point_at_rows, matcher.match(*[d.clone() for d in descriptors]), descriptors)
    fails(suite.test_leaves_the_descriptors_unchanged, matcher, descriptors)
    fails(suite.test_nothing_to_match_gives_no_pairs, matcher, suite.make_descriptors())


# ------------------------------------------------------------------------------------ explainers


class OverclaimingExplainer(ToyExplainer):
    """Claims differentiability but returns scores cut off from the pixels."""

    def forward(self, images):
        return super().forward(images).detach().requires_grad_(True)


class UnclaimedMapsExplainer(ToyExplainer):
    """Computes concept maps without claiming them."""

    def __init__(self) -> None:
        super().__init__(capabilities={Capability.DIFFERENTIABLE})

    def concept_maps(self, images):
        return self._maps(images)


class MisnamedExplainer(ToyExplainer):
    """Names one concept fewer than its maps hold."""

    @property
    def concept_names(self):
        return super().concept_names[:-1]


class ShuffledMapsExplainer(ToyExplainer):
    """Returns concept maps in a fixed order of its own, not the batch's."""

    def concept_maps(self, images):
        maps = super().concept_maps(images)
        return maps[torch.argsort(images.flatten(1).sum(dim=1))]


@pytest.mark.parametrize(
    ("explainer", "check"),
    [
        (ShuffledMapsExplainer(), "test_concept_maps_are_deterministic_and_in_batch_order"),
        (OverclaimingExplainer(), "test_forward_exactly_when_claimed_differentiable"),
        (UnclaimedMapsExplainer(), "test_concept_maps_exactly_when_claimed"),
        (MisnamedExplainer(), "test_concept_maps_exactly_when_claimed"),
    ],
)
def test_explainer_contract_catches_dishonest_capabilities(explainer, check):
    dataset = TinyDataset()
    explainer.fit(dataset.split("train"))
    images = image_batch(list(dataset.split("test")))
    method = getattr(ExplainerContract(), check)
    extra = (dataset,) if "forward" in check else ()
    fails(method, explainer, images, *extra)


# --------------------------------------------------------------------------------------- metrics


class CarelessMetric(Metric):
    """Requires concept maps but never checks, and reports under another name."""

    name = "careless"
    requires = frozenset({Capability.CONCEPT_MAPS})

    def check(self, explainer):
        return None

    def evaluate(self, explainer, dataset):
        return MetricResult(name="something-else", value=1.0, higher_is_better=True)


class UndeclaredMapsMetric(Metric):
    """Reads concept maps but declares only predictions."""

    name = "undeclared"

    def evaluate(self, explainer, dataset):
        maps = explainer.concept_maps(image_batch(list(dataset)))
        return MetricResult(name=self.name, value=float(maps.mean()), higher_is_better=True)


def test_metric_contract_offers_only_the_declared_capabilities():
    class Suite(MetricContract):
        def make_metric(self):
            return UndeclaredMapsMetric()

    suite = Suite()
    dataset = suite.make_dataset()
    explainer = suite.make_explainer(dataset.split("train"))
    assert Capability.CONCEPT_MAPS not in explainer.capabilities
    with pytest.raises(CapabilityError):
        UndeclaredMapsMetric().evaluate(explainer, dataset)


def test_metric_contract_catches_a_missing_refusal_and_a_wrong_name():
    suite, metric, dataset = MetricContract(), CarelessMetric(), TinyDataset().split("test")
    fails(suite.test_refuses_an_explainer_lacking_a_requirement, metric, dataset)
    fails(suite.test_evaluate_returns_a_finite_result_under_its_name, metric, metric.evaluate(ToyExplainer(), dataset))


# -------------------------------------------------------------------------------------- datasets


class MislabelledDataset(TinyDataset):
    """Reports every label one class too high, and never runs out of samples."""

    @property
    def labels(self):
        return super().labels + 1

    def __getitem__(self, index):
        return super().__getitem__(index % len(self))


def test_dataset_contract_catches_mislabelling_and_endless_indexing():
    suite, dataset = DatasetContract(), MislabelledDataset()
    fails(suite.test_labels_index_the_classes, dataset)
    fails(suite.test_samples_agree_with_the_dataset, dataset, [0])
    fails(suite.test_an_index_past_the_end_raises_index_error, dataset)


# ------------------------------------------------------------------------------------- backbones


class FlatBackbone(Backbone):
    """A 'backbone' whose patch grid ignores its patch size and whose features keep gradients."""

    embed_dim, patch_size = 3, 4

    def __init__(self) -> None:
        self.weight = torch.ones(3, requires_grad=True)

    def preprocess(self, images):
        return image_batch([Sample(image=image) for image in images], 16)

    def features(self, pixels):
        patches = pixels.permute(0, 2, 3, 1) * self.weight  # (B, 16, 16, 3): one "patch" per pixel
        return Features(cls=patches.mean(dim=(1, 2)), patches=patches)


def test_backbone_contract_catches_a_wrong_grid_and_gradients():
    suite, backbone = BackboneContract(), FlatBackbone()
    images = [np.zeros((20, 20, 3), np.uint8)] * 2
    pixels = backbone.preprocess(images)
    features = backbone.features(pixels)
    fails(suite.test_features_have_the_declared_shapes, backbone, features, pixels)
    fails(suite.test_features_are_finite_floats_without_gradients, features)
