"""The contract every :class:`~xaikit.Segmenter` meets."""

from __future__ import annotations

from typing import ClassVar

import pytest
import torch

from xaikit.interfaces import Segmenter
from xaikit.testing.contracts._base import ComponentContract, default_samples
from xaikit.types import PartMap, Sample


class SegmenterContract(ComponentContract):
    """Subclass as ``TestMySegmenter(SegmenterContract)`` and implement :meth:`make_segmenter`.

    Override :meth:`make_samples` when your segmenter needs other images (the default: three tiny
    annotated samples of two sizes), or override the ``samples`` fixture itself (class-scoped or
    wider) to use other fixtures.
    """

    kind: ClassVar[str] = "segmenter"

    def make_segmenter(self) -> Segmenter:
        """Build the segmenter under test."""
        raise NotImplementedError("implement make_segmenter() in your SegmenterContract subclass")

    def make_samples(self) -> list[Sample]:
        """The samples to segment."""
        return default_samples()

    @pytest.fixture(scope="class")
    @classmethod
    def segmenter(cls) -> Segmenter:
        return cls().make_segmenter()

    @pytest.fixture(scope="class")
    @classmethod
    def samples(cls) -> list[Sample]:
        return cls().make_samples()

    @pytest.fixture(scope="class")
    @classmethod
    def maps(cls, segmenter: Segmenter, samples: list[Sample]) -> list[PartMap]:
        return segmenter.segment(samples)

    def test_is_a_segmenter_with_a_vocabulary(self, segmenter: Segmenter) -> None:
        assert isinstance(segmenter, Segmenter)
        vocabulary = list(segmenter.vocabulary)
        assert vocabulary and all(isinstance(name, str) and name for name in vocabulary), "vocabulary must be non-empty names"
        assert len(set(vocabulary)) == len(vocabulary), f"vocabulary repeats a name: {vocabulary}"
        assert isinstance(segmenter.joint, bool)

    def test_one_part_map_per_sample(self, maps: list[PartMap], samples: list[Sample]) -> None:
        assert isinstance(maps, list) and len(maps) == len(samples)
        assert all(isinstance(part_map, PartMap) for part_map in maps)

    def test_labels_are_int64_the_size_of_the_image(self, maps: list[PartMap], samples: list[Sample]) -> None:
        for part_map, sample in zip(maps, samples):
            assert tuple(part_map.labels.shape) == sample.size, f"labels {tuple(part_map.labels.shape)} for an image of {sample.size}"
            assert part_map.labels.dtype == torch.int64

    def test_zero_is_background_and_parts_are_positive(self, maps: list[PartMap]) -> None:
        for part_map in maps:
            assert int(part_map.labels.min()) >= 0, "labels must be 0 (background) or a positive part id"
            assert 0 not in part_map.names

    def test_every_present_label_is_named_from_the_vocabulary(self, segmenter: Segmenter, maps: list[PartMap]) -> None:
        vocabulary = set(segmenter.vocabulary)
        for part_map in maps:
            unnamed = set(part_map.present().tolist()) - set(part_map.names)
            assert not unnamed, f"labels {sorted(unnamed)} appear in the map but have no name"
            assert set(part_map.names.values()) <= vocabulary, f"names {dict(part_map.names)} are not all in the vocabulary"

    def test_scores_match_the_labels(self, maps: list[PartMap]) -> None:
        for part_map in maps:
            if part_map.scores is not None:
                assert part_map.scores.shape == part_map.labels.shape and part_map.scores.is_floating_point()
                assert bool(torch.isfinite(part_map.scores).all())

    def test_is_deterministic(self, segmenter: Segmenter, samples: list[Sample], maps: list[PartMap]) -> None:
        again = segmenter.segment(samples)
        for first, second in zip(maps, again, strict=True):
            assert torch.equal(first.labels, second.labels) and dict(first.names) == dict(second.names)

    def test_leaves_the_samples_unchanged(self, segmenter: Segmenter, samples: list[Sample]) -> None:
        before = [sample.image.copy() for sample in samples]
        segmenter.segment(samples)
        assert all((sample.image == image).all() for sample, image in zip(samples, before))

    def test_empty_batch_gives_no_maps(self, segmenter: Segmenter) -> None:
        assert segmenter.segment([]) == []

    def test_label_ids_mean_the_same_part_in_every_call_unless_joint(self, segmenter: Segmenter, samples: list[Sample], maps: list[PartMap]) -> None:
        if segmenter.joint:
            pytest.skip("a joint segmenter's label ids hold within one call only")
        for sample, together in zip(samples, maps):
            (alone,) = segmenter.segment([sample])
            shared = set(alone.names) & set(together.names)
            assert all(alone.names[label] == together.names[label] for label in shared), "a label id changed its part between calls"

    def test_a_label_id_names_one_part_across_images_and_calls_unless_joint(
        self, segmenter: Segmenter, samples: list[Sample], maps: list[PartMap]
    ) -> None:
        """KLC caches a non-joint segmenter's prototype parts by label id, so an id must always mean one part."""
        if segmenter.joint:
            pytest.skip("a joint segmenter's label ids hold within one call only")
        seen: dict[int, str] = {}
        for part_map in [*maps, *segmenter.segment(samples[::-1]), *(segmenter.segment([sample])[0] for sample in samples)]:
            for label, name in part_map.names.items():
                assert seen.setdefault(label, name) == name, f"label {label} names both {seen[label]!r} and {name!r}"

    def test_fingerprint_is_none_or_a_stable_string(self, segmenter: Segmenter) -> None:
        fingerprint = segmenter.fingerprint
        assert fingerprint is None or (isinstance(fingerprint, str) and fingerprint and fingerprint == segmenter.fingerprint)
