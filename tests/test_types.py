"""Value types: validation of shapes, geometry of crops, part-map masks and centroids."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from xaikit.types import Explanation, Features, Match, MetricResult, PartMap, Sample


def make_sample(height: int = 10, width: int = 20) -> Sample:
    image = np.arange(height * width * 3, dtype=np.uint8).reshape(height, width, 3)
    return Sample(
        image=image,
        label=2,
        image_id=7,
        keypoints=np.array([[5.0, 4.0], [19.5, 9.5]], np.float32),
        visible=np.array([True, False]),
        part_names=("beak", "tail"),
        bbox=np.array([2.5, 1.9, 12.0, 6.0], np.float32),
        part_mask=np.ones((height, width), np.uint8),
        foreground=np.ones((height, width), bool),
    )


def test_sample_rejects_bad_shapes():
    with pytest.raises(ValueError, match="must be \\(H, W, 3\\) uint8"):
        Sample(image=np.zeros((4, 4), np.uint8))
    with pytest.raises(ValueError, match="must be \\(H, W, 3\\) uint8"):
        Sample(image=np.zeros((4, 4, 3), np.float32))
    with pytest.raises(ValueError, match="2 part names but keypoints"):
        Sample(image=np.zeros((4, 4, 3), np.uint8), part_names=("a", "b"))
    with pytest.raises(ValueError, match="part_mask is \\(3, 3\\)"):
        Sample(image=np.zeros((4, 4, 3), np.uint8), part_mask=np.zeros((3, 3), np.uint8))


def test_crop_to_bbox_follows_huang_et_al():
    sample = make_sample()
    cropped = sample.crop_to_bbox()  # x 2..int(14.5)=14, y 1..int(7.9)=7
    np.testing.assert_array_equal(cropped.image, sample.image[1:7, 2:14])
    np.testing.assert_allclose(cropped.keypoints, [[3.0, 3.0], [17.5, 8.5]])  # outside the crop, kept
    np.testing.assert_array_equal(cropped.visible, sample.visible)
    np.testing.assert_allclose(cropped.bbox, [0.5, 0.9, 11.5, 5.1], atol=1e-6)  # clipped to the crop
    assert cropped.part_mask.shape == cropped.foreground.shape == (6, 12)
    assert cropped.label == 2 and cropped.image_id == 7


def test_crop_clips_to_the_image_and_refuses_empty_boxes():
    sample = make_sample()
    assert sample.crop((-5, -5, 100, 100)).image.shape == sample.image.shape
    with pytest.raises(ValueError, match="does not overlap"):
        sample.crop((25, 0, 30, 5))
    with pytest.raises(ValueError, match="has no bounding box"):
        Sample(image=np.zeros((2, 2, 3), np.uint8)).crop_to_bbox()


def test_part_map_present_masks_and_centroids():
    labels = torch.zeros(4, 6, dtype=torch.int64)
    labels[0:2, 0:2] = 3  # centre (1, 1)
    labels[3, 5] = 1  # centre (5.5, 3.5)
    part_map = PartMap(labels, {1: "beak", 2: "eye", 3: "tail"})
    assert part_map.present().tolist() == [1, 3]
    masks = part_map.masks()
    assert masks.shape == (2, 4, 6) and masks.sum().item() == 5
    centroids = part_map.centroids(torch.tensor([3, 1, 2]))
    torch.testing.assert_close(centroids[:2], torch.tensor([[1.0, 1.0], [5.5, 3.5]]))
    assert torch.isnan(centroids[2]).all()


def test_part_map_validation():
    with pytest.raises(ValueError, match="must not name label 0"):
        PartMap(torch.zeros(2, 2, dtype=torch.int64), {0: "background"})
    with pytest.raises(ValueError, match="must be \\(H, W\\)"):
        PartMap(torch.zeros(1, 2, 2, dtype=torch.int64), {})
    with pytest.raises(ValueError, match="scores"):
        PartMap(torch.zeros(2, 2, dtype=torch.int64), {}, scores=torch.zeros(3, 3))


def test_features_match_explanation_validation():
    features = Features(cls=torch.zeros(2, 8), patches=torch.zeros(2, 3, 4, 8))
    assert features.grid == (3, 4) and features.layers == {}
    with pytest.raises(ValueError, match="disagree"):
        Features(cls=torch.zeros(2, 8), patches=torch.zeros(2, 3, 4, 9))
    match = Match(torch.tensor([0, 1]), torch.tensor([3, 2]), torch.tensor([0.9, 0.5]))
    assert len(match) == 2
    with pytest.raises(ValueError, match="equal-length"):
        Match(torch.tensor([0]), torch.tensor([3, 2]), torch.tensor([0.9, 0.5]))
    explanation = Explanation(torch.tensor([1, 0]), torch.rand(2, 5))
    assert explanation.details == [{}, {}] and len(explanation) == 2
    with pytest.raises(ValueError, match="concept_maps must be"):
        Explanation(torch.tensor([1]), torch.rand(1, 5), concept_maps=torch.rand(1, 3, 4))
    with pytest.raises(ValueError, match="details has 1 entries for 2 images"):
        Explanation(torch.tensor([1, 0]), torch.rand(2, 5), details=[{}])
    assert MetricResult("accuracy", 50.0, True).details == {}
