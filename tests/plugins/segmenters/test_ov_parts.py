"""The ov-parts adapter: the object's classes out of OV-PARTS' semantic output, oracle inputs, refusals.

OV-PARTS is not installed here; :func:`ov_parts_to_part_map` is tested on ``{"sem_seg": (C, H, W)}``
outputs as its baselines return them (sigmoid scores over Pascal-Part-116's classes, other
objects' classes set to -1 by CATSeg or 0 by CLIPSeg). The build path runs where detectron2, CUDA and
an OV-PARTS checkout are present (``XAIKIT_OV_PARTS_SOURCE`` and ``XAIKIT_OV_PARTS_WEIGHTS``).
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

import xaikit
from xaikit.data.cub import CUBDataset
from xaikit.errors import DeviceError, WeightsUnavailableError, XaikitError
from xaikit_segmenters.ov_parts import OVPartsSegmenter, object_classes, oracle_input, ov_parts_to_part_map, shortest_edge_size

# The start of Pascal-Part-116's class list (register_pascal_part_116.CLASS_NAMES), bird parts included.
CLASSES = [
    "aeroplane's body", "aeroplane's stern", "bicycle's wheel", "bird's wing", "bird's tail", "bird's head",
    "bird's eye", "bird's beak", "bird's torso", "bird's neck", "bird's leg", "bird's foot", "bottle's body",
]


def test_object_classes_pick_the_bird_parts():
    assert object_classes(CLASSES, "bird") == list(range(3, 12))
    assert object_classes(CLASSES, "dog") == []


def test_only_the_objects_parts_compete_with_the_background_plane():
    scores = torch.full((len(CLASSES), 2, 3), -1.0)  # CATSeg sets other objects' classes to -1 ...
    scores[3:12] = 0.1
    scores[0, 0, 0] = 0.99  # ... but a stray high aeroplane score must still be ignored
    scores[7, 0, 0] = 0.8  # beak
    scores[3, 0, 1] = 0.6  # wing
    scores[8, 1, :] = 0.7  # torso
    part_map = ov_parts_to_part_map({"sem_seg": scores}, CLASSES, "bird", threshold=0.4)
    assert part_map.names == {index - 2: CLASSES[index] for index in range(3, 12)}
    assert part_map.names[5] == "bird's beak"
    assert part_map.labels.tolist() == [[5, 1, 0], [6, 6, 6]]
    torch.testing.assert_close(part_map.scores, torch.tensor([[0.8, 0.6, 0.1], [0.7, 0.7, 0.7]]))


def test_a_dropped_last_class_and_an_unknown_object():
    scores = torch.zeros(len(CLASSES) - 1, 1, 1)  # the CLIPSeg baseline drops the last class
    scores[4] = 0.9
    part_map = ov_parts_to_part_map({"sem_seg": scores}, CLASSES, "bird", threshold=0.4)
    assert part_map.labels.tolist() == [[2]] and part_map.names[2] == "bird's tail"
    with pytest.raises(XaikitError, match="OV-PARTS scores no part of 'albatross'"):
        ov_parts_to_part_map({"sem_seg": scores}, CLASSES, "albatross", threshold=0.4)


def test_shortest_edge_size_follows_detectron2():
    assert shortest_edge_size(300, 500, 512, 2048) == (512, 853)
    assert shortest_edge_size(100, 1000, 512, 2048) == (205, 2048)


def test_oracle_input_resizes_converts_and_claims_the_object_everywhere():
    image = np.zeros((4, 6, 3), np.uint8)
    image[..., 0] = 200  # red
    inputs = oracle_input(image, object_id=2, size=(8, 12), image_format="BGR")
    assert inputs["image"].shape == (3, 8, 12) and inputs["image"].dtype == torch.uint8
    assert (inputs["image"][2] == 200).all() and (inputs["image"][0] == 0).all()  # red is the last BGR channel
    assert (inputs["height"], inputs["width"]) == (4, 6)
    assert inputs["sem_seg"].shape == (8, 12) and (inputs["sem_seg"] == 2).all()
    assert (oracle_input(image, 2, (8, 12), "RGB")["image"][0] == 200).all()


def test_missing_source_checkpoint_and_cuda_are_one_sentence(tmp_path):
    with pytest.raises(XaikitError, match="^segmenter 'ov-parts' needs source=DIR, a checkout of https://github.com/OpenRobotLab/OV_PARTS$"):
        OVPartsSegmenter()
    (tmp_path / "baselines").mkdir()
    (tmp_path / "configs" / "zero_shot").mkdir(parents=True)
    (tmp_path / "configs" / "zero_shot" / "clipseg_voc.yaml").write_text("MODEL: {}\n")
    with pytest.raises(WeightsUnavailableError, match="needs weights=FILE, its checkpoint; download a Pascal-Part-116 checkpoint"):
        OVPartsSegmenter(source=str(tmp_path))
    (tmp_path / "model.pth").write_bytes(b"")
    with pytest.raises(DeviceError, match="ov-parts runs only on CUDA .*not on 'cpu'"):
        OVPartsSegmenter(source=str(tmp_path), weights=str(tmp_path / "model.pth"), device="cpu")
    with pytest.raises(XaikitError, match=r"threshold is a probability in \[0, 1\)"):
        OVPartsSegmenter(source=str(tmp_path), threshold=2)


def test_build_and_segment_with_an_installed_ov_parts(cub_mini):
    pytest.importorskip("detectron2", reason="detectron2 is not installed (OV-PARTS needs it)")
    if not torch.cuda.is_available():
        pytest.skip("OV-PARTS' baselines run only on CUDA")
    source, weights = os.environ.get("XAIKIT_OV_PARTS_SOURCE"), os.environ.get("XAIKIT_OV_PARTS_WEIGHTS")
    if not source or not weights:
        pytest.skip("set XAIKIT_OV_PARTS_SOURCE (an OV_PARTS checkout) and XAIKIT_OV_PARTS_WEIGHTS (a Pascal-Part-116 checkpoint)")
    segmenter = xaikit.create("segmenter", "ov-parts", source=source, weights=weights)
    assert "bird's beak" in segmenter.vocabulary
    samples = [CUBDataset(cub_mini)[index] for index in (0, 1)]
    for part_map, sample in zip(segmenter.segment(samples), samples):
        assert part_map.labels.shape == sample.size and set(part_map.present().tolist()) <= set(part_map.names)
