"""SAN's real model (CLIP ViT-B/16 from open_clip without pretrained weights, a seeded checkpoint in SAN's format) through ``san``."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

import xaikit
from xaikit.data.cub import CUBDataset
from xaikit_segmenters.san import san_to_part_map

pytestmark = pytest.mark.real

PARTS = ["bird head", "bird wing", "bird tail", "bird body"]


def test_real_output_converts_and_agrees_with_sans_own_predictor(san_source, san_weights, cub_mini: Path):
    # Predictor.predict works at a 640-pixel short side and reorders the vocabulary (list(set(...)))
    segmenter = xaikit.create(
        "segmenter", "san", source=str(san_source), weights=str(san_weights), vocabulary=PARTS, augment="none", device="cpu",
    )
    sample = CUBDataset(cub_mini)[0]
    (raw,) = segmenter.outputs([sample])
    assert raw["sem_seg"].shape == (len(PARTS), *sample.size) and raw["vocabulary"] == PARTS
    part_map = segmenter.segment([sample])[0]
    assert part_map.labels.shape == sample.size and part_map.names == dict(enumerate(PARTS, start=1))
    torch.testing.assert_close(part_map.labels, raw["sem_seg"].argmax(dim=0) + 1)  # augment none: every pixel is a part
    predicted = segmenter.predictor.predict(Image.fromarray(sample.image), PARTS, "none")
    assert sorted(predicted["vocabulary"]) == sorted(PARTS)
    theirs = san_to_part_map(predicted, PARTS)
    assert (theirs.labels == part_map.labels).float().mean() > 0.999  # the reordering is undone, up to float ties


def test_a_batch_of_images_in_one_forward_pass(san_source, san_weights, cub_mini: Path):
    # augmentation classes are not asked for here: embedding COCO's names costs minutes on a CPU
    # (san_to_part_map's handling of them is tested in tests/plugins/segmenters/test_san.py)
    segmenter = xaikit.create(
        "segmenter", "san", source=str(san_source), weights=str(san_weights), vocabulary=PARTS[:2], augment="none",
        min_size_test=160, batch_size=2, device="cpu",
    )
    samples = [CUBDataset(cub_mini)[index] for index in (0, 7)]
    outputs = segmenter.outputs(samples)
    for raw, part_map, sample in zip(outputs, segmenter.segment(samples), samples):
        assert raw["sem_seg"].shape == (2, *sample.size) and part_map.labels.shape == sample.size
        torch.testing.assert_close(part_map.labels, raw["sem_seg"].argmax(dim=0) + 1)
