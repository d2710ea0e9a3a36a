"""The annotations segmenter: part masks as they are, keypoint regions inside the box, clear refusals."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import xaikit
from xaikit.data.parts import CUB_PART_NAMES
from xaikit.errors import DatasetError, XaikitError
from xaikit.types import Sample
from xaikit_segmenters.annotations import AnnotationSegmenter, keypoint_regions


def keypoint_sample(**changes) -> Sample:
    keypoints = np.zeros((15, 2), np.float32)
    visible = np.zeros(15, bool)
    keypoints[1] = (20, 10)  # beak
    keypoints[13] = (5, 10)  # tail
    visible[[1, 13]] = True
    fields = dict(image=np.zeros((20, 30, 3), np.uint8), image_id=7, keypoints=keypoints, visible=visible,
                  part_names=CUB_PART_NAMES, bbox=np.array([0, 0, 26, 20], np.float32))
    return Sample(**(fields | changes))


def test_keypoint_regions_hand_worked():
    labels = keypoint_regions(torch.tensor([[2.0, 2.0], [6.0, 2.0]]), torch.tensor([True, True]), (4, 9), (0, 0, 8, 4), radius=2.0)
    # pixel centres x + 0.5: columns 0..3 are nearest keypoint 0 (tie at x = 4 goes to part 1), 4..7 to part 2;
    # within radius 2 of (2, 2): x in [0.5, 3.5] and rows 1..2 (y centre 1.5, 2.5) plus row 0 / 3 near x = 2
    expected = torch.tensor([
        [0, 1, 1, 0, 0, 2, 2, 0, 0],
        [1, 1, 1, 1, 2, 2, 2, 2, 0],
        [1, 1, 1, 1, 2, 2, 2, 2, 0],
        [0, 1, 1, 0, 0, 2, 2, 0, 0],
    ])
    assert torch.equal(labels, expected)  # column 8 lies outside the box


def test_keypoint_regions_nearest_wins_and_invisible_parts_are_ignored():
    labels = keypoint_regions(torch.tensor([[1.0, 1.0], [3.0, 1.0]]), torch.tensor([False, True]), (2, 5), (0, 0, 5, 2), radius=10.0)
    assert set(labels.unique().tolist()) == {2}


def test_segment_keypoints_inside_the_box():
    segmenter = AnnotationSegmenter(radius=0.2)
    (part_map,) = segmenter.segment([keypoint_sample()])
    assert part_map.labels.shape == (20, 30) and part_map.labels.dtype == torch.int64
    assert part_map.present().tolist() == [2, 14]
    assert part_map.names[2] == "beak" and part_map.names[14] == "tail"
    assert (part_map.labels[:, 26:] == 0).all()  # outside the bounding box
    centroids = part_map.centroids(torch.tensor([2, 14]))
    assert abs(centroids[0, 0] - 20) < 1.5 and abs(centroids[1, 0] - 5) < 1.5


def test_segment_uses_part_masks_when_present():
    mask = np.zeros((20, 30), np.uint8)
    mask[2:5, 3:9] = 5
    (part_map,) = AnnotationSegmenter().segment([keypoint_sample(part_mask=mask)])
    assert torch.equal(part_map.labels, torch.from_numpy(mask.astype(np.int64)))
    (from_keypoints,) = AnnotationSegmenter(source="keypoints").segment([keypoint_sample(part_mask=mask)])
    assert from_keypoints.present().tolist() == [2, 14]


def test_segment_real_cub_photographs(cub_mini):
    dataset = xaikit.CUBDataset(cub_mini, split="test")
    samples = [dataset[index] for index in range(3)]
    maps = xaikit.create("segmenter", "annotations").segment(samples)
    for sample, part_map in zip(samples, maps, strict=True):
        assert part_map.labels.shape == sample.size
        assert part_map.present().tolist() == (np.flatnonzero(sample.visible) + 1).tolist()


def test_deterministic_and_fingerprinted():
    segmenter = AnnotationSegmenter()
    first, second = segmenter.segment([keypoint_sample()]), segmenter.segment([keypoint_sample()])
    assert torch.equal(first[0].labels, second[0].labels)
    assert segmenter.fingerprint == AnnotationSegmenter().fingerprint != AnnotationSegmenter(radius=0.3).fingerprint


def test_unannotated_images_are_refused_in_one_sentence():
    with pytest.raises(DatasetError, match="has no part annotations"):
        AnnotationSegmenter().segment([Sample(image=np.zeros((8, 8, 3), np.uint8))])
    with pytest.raises(DatasetError, match="no part mask"):
        AnnotationSegmenter(source="masks").segment([keypoint_sample()])
    with pytest.raises(DatasetError, match="pass part_names"):
        AnnotationSegmenter(part_names=["head"]).segment([keypoint_sample()])
    with pytest.raises(XaikitError, match="unknown annotation source"):
        AnnotationSegmenter(source="gt")
