"""The dino-parts segmenter on demo-vit and synthetic birds: conformance, quality against the true parts, options."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import xaikit
from xaikit.data.cub import CUBDataset
from xaikit.data.synthetic import SynthConfig, write_synthetic_birds
from xaikit.errors import XaikitError
from xaikit.types import PartMap, Sample
from xaikit_backbones.demo_vit import DemoViT
from xaikit_segmenters.dino_parts import DinoPartsSegmenter, background_contrast, foreground_clusters

NUM_PARTS = 4


@pytest.fixture(scope="module")
def birds_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """24 synthetic birds (4 species x 6), generated once for the module."""
    return write_synthetic_birds(tmp_path_factory.mktemp("birds") / "birds", SynthConfig(classes=4, per_class=6, size=224, seed=0))


@pytest.fixture(scope="module")
def full_frames(birds_root: Path) -> list[Sample]:
    """Whole 224 x 224 images; the bird covers about 7% of each."""
    dataset = CUBDataset(birds_root)
    return [dataset[index] for index in range(len(dataset))]


@pytest.fixture(scope="module")
def crops(birds_root: Path) -> list[Sample]:
    """The same birds cropped to their boxes (synthetic-birds' default): non-square, the bird fills them."""
    dataset = CUBDataset(birds_root, crop_to_bbox=True)
    return [dataset[index] for index in range(len(dataset))]


@pytest.fixture
def backbone():
    return xaikit.create("backbone", "demo-vit", device="cpu")


@pytest.fixture(scope="module")
def module_segmenter() -> DinoPartsSegmenter:
    """Built without the registry or the feature cache, which each test isolates."""
    return DinoPartsSegmenter(backbone=DemoViT(device="cpu"), num_parts=NUM_PARTS, cache=False)


@pytest.fixture(scope="module")
def full_frame_maps(module_segmenter, full_frames) -> list[PartMap]:
    """All 24 full frames segmented in one call."""
    return module_segmenter.segment(full_frames)


@pytest.fixture(scope="module")
def crop_maps(module_segmenter, crops) -> list[PartMap]:
    """All 24 crops segmented in one call."""
    return module_segmenter.segment(crops)


@pytest.fixture
def segmenter(backbone) -> DinoPartsSegmenter:
    return DinoPartsSegmenter(backbone=backbone, num_parts=NUM_PARTS)


# ------------------------------------------------------------------------------- measures
def foreground_iou(maps: list[PartMap], samples: list[Sample]) -> float:
    """IoU of predicted foreground (label != 0) and the true bird pixels, pooled over all images."""
    predicted = torch.cat([part_map.labels.flatten() != 0 for part_map in maps])
    truth = torch.cat([torch.from_numpy(sample.part_mask).flatten() != 0 for sample in samples])
    return float((predicted & truth).sum() / (predicted | truth).sum())


def part_nmi(maps: list[PartMap], samples: list[Sample], shift: bool = False) -> float:
    """NMI of predicted part ids and true part ids on pixels both call foreground, pooled over images.

    With ``shift``, image ``i``'s part ids are rotated by ``i`` first: the parts stay as good inside
    each image, but whatever agreement they had *across* images is destroyed.
    """
    predicted, truth = [], []
    for index, (part_map, sample) in enumerate(zip(maps, samples)):
        labels = part_map.labels.flatten()
        if shift:
            labels = torch.where(labels > 0, (labels - 1 + index) % NUM_PARTS + 1, labels)
        predicted.append(labels)
        truth.append(torch.from_numpy(sample.part_mask.astype(np.int64)).flatten())
    predicted_all, truth_all = torch.cat(predicted), torch.cat(truth)
    both = (predicted_all != 0) & (truth_all != 0)
    return normalized_mutual_information(predicted_all[both], truth_all[both])


def normalized_mutual_information(a: torch.Tensor, b: torch.Tensor) -> float:
    """Arithmetic-mean NMI of two labelings ``(N,)``."""
    a = torch.unique(a, return_inverse=True)[1]
    b = torch.unique(b, return_inverse=True)[1]
    joint = torch.zeros(int(a.max()) + 1, int(b.max()) + 1, dtype=torch.float64)
    joint.index_put_((a, b), torch.ones(a.numel(), dtype=torch.float64), accumulate=True)
    joint /= joint.sum()
    pa, pb = joint.sum(1), joint.sum(0)
    nonzero = joint > 0
    mutual = (joint[nonzero] * (joint / (pa[:, None] * pb[None]))[nonzero].log()).sum()
    entropy = -(pa[pa > 0] * pa[pa > 0].log()).sum() - (pb[pb > 0] * pb[pb > 0].log()).sum()
    return float(2 * mutual / entropy)


# ---------------------------------------------------------------------------- conformance
def test_one_map_per_image_in_the_image_frame(segmenter, crop_maps, crops):
    maps, samples = crop_maps, crops
    assert len(maps) == len(samples)
    for part_map, sample in zip(maps, samples):
        assert isinstance(part_map, PartMap)
        assert part_map.labels.shape == sample.size and part_map.labels.dtype == torch.int64
        assert part_map.labels.min() >= 0 and part_map.labels.max() <= NUM_PARTS
        assert set(part_map.present().tolist()) <= set(part_map.names)
        assert part_map.names == {i: f"part {i}" for i in range(1, NUM_PARTS + 1)}
        height, width = sample.size
        if width > 1.2 * height:  # demo-vit centre-crops wide images: the cut-off ends are background
            assert (part_map.labels[:, 0] == 0).all() and (part_map.labels[:, -1] == 0).all()
    assert any(part_map.present().numel() > 1 for part_map in maps)
    assert segmenter.vocabulary == ("part 1", "part 2", "part 3", "part 4")
    assert DinoPartsSegmenter.joint is True


def test_segmenting_twice_gives_identical_maps(segmenter, crops):
    first = segmenter.segment(crops[:4])  # features computed and cached
    second = segmenter.segment(crops[:4])  # features read back from the cache
    assert all(torch.equal(a.labels, b.labels) for a, b in zip(first, second))


def test_part_ids_are_ordered_by_size(backbone):
    segmenter = DinoPartsSegmenter(backbone=backbone, num_parts=3)
    # three well-separated descriptor groups covering 9, 2 and 5 of the 16 patches of one 4 x 4 image
    group = torch.tensor([2] * 5 + [0] * 9 + [1] * 2).view(1, 4, 4)
    descriptors = torch.eye(3)[group]
    labels = segmenter.parts(descriptors, torch.ones(1, 4, 4, dtype=torch.bool))
    assert torch.equal(labels, torch.tensor([1, 3, 2])[group])


# -------------------------------------------------------------------------------- quality
def test_foreground_overlaps_the_birds_far_better_than_a_trivial_map(full_frame_maps, full_frames):
    iou = foreground_iou(full_frame_maps, full_frames)
    everything = foreground_iou([PartMap(torch.ones(s.size, dtype=torch.int64), {1: "all"}) for s in full_frames], full_frames)
    # measured: 0.24 against 0.069 for the all-foreground map
    assert everything < 0.08
    assert iou > 0.15 and iou > 2 * everything


@pytest.mark.parametrize("frames", ["full_frame", "crop"])
def test_part_ids_agree_across_images(frames, request):
    samples = request.getfixturevalue("full_frames" if frames == "full_frame" else "crops")
    maps = request.getfixturevalue(f"{frames}_maps")
    consistent, shifted = part_nmi(maps, samples), part_nmi(maps, samples, shift=True)
    # measured: 0.22 / 0.02 on full frames, 0.29 / 0.02 on crops
    assert consistent > 0.12 and consistent > 4 * shifted


# ------------------------------------------------------------------------------ edge cases
def test_a_single_image_and_an_empty_call(segmenter, crops):
    (part_map,) = segmenter.segment(crops[:1])
    assert part_map.labels.shape == crops[0].size and part_map.present().numel() > 0
    assert segmenter.segment([]) == []


def test_no_foreground_gives_all_background_maps(backbone, crops):
    segmenter = DinoPartsSegmenter(backbone=backbone, saliency_threshold=1.0)  # no mean saliency exceeds 1
    maps = segmenter.segment(crops[:3])
    assert all(part_map.labels.shape == sample.size and (part_map.labels == 0).all() for part_map, sample in zip(maps, crops))


def test_fewer_foreground_patches_than_parts(backbone, crops):
    segmenter = DinoPartsSegmenter(backbone=backbone, num_parts=500)
    (part_map,) = segmenter.segment(crops[:1])
    assert 0 < part_map.present().numel() < 196  # one part per foreground patch at most (14 x 14 grid)
    assert len(segmenter.vocabulary) == 500


def test_cls_saliency(backbone, crops):
    maps = DinoPartsSegmenter(backbone=backbone, saliency="cls").segment(crops[:4])
    assert [part_map.labels.shape for part_map in maps] == [sample.size for sample in crops[:4]]


def test_foreground_vote():
    # cluster 0: salient in both images it occurs in; 1: in one of two; 2: only in image 1, salient; 3: absent
    assignment = torch.tensor([[0, 0, 1, 1], [0, 2, 1, 1]])
    saliency = torch.tensor([[0.9, 0.7, 0.9, 0.8], [0.6, 0.9, 0.1, 0.2]])
    assert foreground_clusters(assignment, saliency, 4, threshold=0.5, votes=0.75).tolist() == [True, False, True, False]
    assert foreground_clusters(assignment, saliency, 4, threshold=0.5, votes=0.5).tolist() == [True, True, True, False]


def test_background_contrast_marks_what_the_border_lacks():
    descriptors = torch.zeros(1, 5, 5, 2)
    descriptors[..., 0] = 1  # everything looks like the border
    descriptors[0, 2, 2] = torch.tensor([0.0, 1.0])  # but the centre patch
    saliency = background_contrast(descriptors)
    expected = torch.zeros(1, 5, 5)
    expected[0, 2, 2] = 1
    torch.testing.assert_close(saliency, expected)


# -------------------------------------------------------------------- options and registry
def test_backbone_by_name_and_as_object_agree(backbone, crops):
    by_object = DinoPartsSegmenter(backbone=backbone).segment(crops[:4])
    by_name = DinoPartsSegmenter(backbone="demo-vit", device="cpu").segment(crops[:4])
    assert all(torch.equal(a.labels, b.labels) for a, b in zip(by_object, by_name))


def test_created_through_the_registry(crops):
    segmenter = xaikit.create("segmenter", "dino-parts", num_parts=3, device="cpu")
    assert isinstance(segmenter, DinoPartsSegmenter) and segmenter.vocabulary == ("part 1", "part 2", "part 3")
    maps = segmenter.segment(crops[:4])
    assert all(part_map.labels.max() <= 3 for part_map in maps)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"num_parts": 0}, "num_parts must be an integer of at least 1, got 0"),
        ({"num_parts": 2.5}, "num_parts must be an integer of at least 1, got 2.5"),
        ({"num_clusters": True}, "num_clusters must be an integer of at least 1, got True"),
        ({"votes": 0}, r"votes must be a number in \(0, 1\], got 0"),
        ({"saliency_threshold": 1.5}, r"saliency_threshold must be a number in \[0, 1\], got 1.5"),
        ({"saliency_weight": -1}, r"saliency_weight must be a number in \[0, inf\], got -1"),
        ({"saliency": "attention"}, "unknown saliency 'attention' for dino-parts; use one of background, cls"),
        ({"backbone": object()}, "dino-parts needs a ViT backbone"),
    ],
)
def test_bad_options_are_refused(backbone, options, message):
    with pytest.raises(XaikitError, match=message):
        DinoPartsSegmenter(**({"backbone": backbone} | options))


def test_bad_options_are_refused_through_the_registry():
    with pytest.raises(XaikitError, match="num_parts must be an integer of at least 1"):
        xaikit.create("segmenter", "dino-parts", num_parts=0)
