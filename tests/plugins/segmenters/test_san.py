"""The san adapter: SAN's reordered vocabulary mapped back, "other" as background, clear refusals.

:func:`san_to_part_map` is tested here on dicts shaped as SAN's ``Predictor.predict`` returns them
(``sem_seg`` ``(H, W)`` ids and the deduplicated, reordered ``vocabulary``) and as its model
returns them (``(C, H, W)`` scores); the real model runs in the integration tier,
tests/integration/test_san_real.py.
"""

from __future__ import annotations


import numpy as np
import pytest
import torch

from xaikit.errors import WeightsUnavailableError, XaikitError
from xaikit_segmenters.san import SANSegmenter, san_to_part_map

ASKED = ["bird head", "bird beak", "Bird Wing"]


def test_ids_are_remapped_through_the_returned_vocabulary():
    # predict() lower-cases and dedups with list(set(...)): the order comes back shuffled.
    returned = ["bird wing", "bird head", "bird beak"]
    sem_seg = np.array([[0, 1, 2], [3, 3, 0]], dtype=np.int64)  # 3 = len(vocabulary): "other" (augmentation)
    part_map = san_to_part_map({"image": None, "sem_seg": sem_seg, "vocabulary": returned}, ASKED)
    assert part_map.labels.tolist() == [[3, 1, 2], [0, 0, 3]]
    assert part_map.names == {1: "bird head", 2: "bird beak", 3: "Bird Wing"}
    assert part_map.labels.dtype == torch.int64 and part_map.scores is None


def test_class_scores_take_the_argmax_and_augmentation_classes_are_background():
    returned = ["bird beak", "bird head", "bird wing"]
    scores = torch.zeros(5, 2, 2)  # 3 parts + 2 COCO-stuff classes appended by augmentation
    scores[0, 0, 0], scores[2, 0, 1], scores[4, 1, 0], scores[1, 1, 1] = 0.9, 0.8, 0.7, 0.6
    part_map = san_to_part_map({"sem_seg": scores, "vocabulary": returned}, ASKED)
    assert part_map.labels.tolist() == [[2, 3], [0, 1]]
    torch.testing.assert_close(part_map.scores, torch.tensor([[0.9, 0.8], [0.7, 0.6]]))


def test_missing_source_and_checkpoint_and_bad_augment_are_one_sentence(tmp_path):
    with pytest.raises(XaikitError, match="^segmenter 'san' needs source=DIR, a checkout of https://github.com/MendelXu/SAN$"):
        SANSegmenter()
    with pytest.raises(XaikitError, match="unknown san augment 'coco'; use one of COCO-stuff, COCO-all, none"):
        SANSegmenter(source=str(tmp_path), augment="coco")
    (tmp_path / "san").mkdir()
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "san_clip_vit_res4_coco.yaml").write_text("MODEL: {}\n")
    with pytest.raises(WeightsUnavailableError, match="san_vit_b_16.pth from https://huggingface.co/Mendel192/san"):
        SANSegmenter(source=str(tmp_path))
    (tmp_path / "san.pth").write_bytes(b"")
    with pytest.raises(XaikitError, match="has no predict.py"):
        SANSegmenter(source=str(tmp_path), weights=str(tmp_path / "san.pth"), device="cpu")
