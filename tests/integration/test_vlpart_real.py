"""VLPart's real model (R50 Pascal-Part, seeded random weights in the released format) through the ``vlpart`` adapter."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import xaikit
from xaikit.data.cub import CUBDataset
from xaikit.errors import XaikitError
from xaikit_segmenters.vlpart import PASCAL_PART, clip_prompts, instances_to_part_map
from xaikit_segmenters.vocabulary import PASCAL_PART_BIRD

pytestmark = pytest.mark.real

BIRD_PARTS = ["bird beak", "bird head", "bird eye", "bird leg", "bird foot", "bird wing", "bird neck", "bird tail", "bird torso"]
SMALL = 128
"""``INPUT.MIN_SIZE_TEST`` of these tests: fast on a CPU; masks still come back at full size."""


def expected_map(instances, names: dict[int, str], min_score: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Labels and scores painted independently of the adapter: per pixel, the first of the highest-scored covering instances."""
    labels = instances.pred_classes + 1
    keep = (instances.scores >= min_score) & torch.isin(labels, torch.tensor(sorted(names)))
    masks, scores = instances.pred_masks[keep], instances.scores[keep]
    if not keep.any():
        return torch.zeros(instances.image_size, dtype=torch.int64), torch.zeros(instances.image_size)
    covered = torch.where(masks, scores.view(-1, 1, 1), -1.0)
    best, index = covered.max(dim=0)
    return torch.where(best >= 0, labels[keep][index], 0), best.clamp(min=0)


@pytest.fixture
def samples(cub_mini: Path) -> list:
    dataset = CUBDataset(cub_mini)
    return [dataset[0], dataset[7]]


@pytest.fixture(scope="module")
def bird_embeddings(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``(9, 1024)`` text embeddings of the bird parts from open_clip's CLIP RN50, built without pretrained weights."""
    import open_clip

    torch.manual_seed(0)
    model = open_clip.create_model("RN50", pretrained=None).eval()
    with torch.no_grad():
        weight = model.encode_text(open_clip.get_tokenizer("RN50")(clip_prompts(BIRD_PARTS))).float()
    path = tmp_path_factory.mktemp("embeddings") / "bird_parts.npy"
    np.save(path, weight.numpy())
    return path


def test_builtin_pascal_part_classifier_on_real_output(vlpart_source, vlpart_weights, samples):
    segmenter = xaikit.create(
        "segmenter", "vlpart", source=str(vlpart_source), weights=str(vlpart_weights),
        score_threshold=0.0, mask_threshold=0.0, min_size_test=SMALL, device="cpu",
    )
    assert segmenter.vocabulary == tuple(PASCAL_PART_BIRD.values())
    predictor = segmenter.model.roi_heads.box_predictor
    heads = predictor if isinstance(predictor, torch.nn.ModuleList) else [predictor]
    assert all(head.cls_score.zs_weight_inference.shape == (1024, 94) for head in heads)  # 93 classes + background
    found = segmenter.instances(samples)
    maps = segmenter.segment(samples)
    every_class = dict(enumerate(xaikit_thing_classes(), start=1))
    for instances, part_map, sample in zip(found, maps, samples):
        assert len(instances) > 0 and instances.pred_masks.shape[-2:] == sample.size
        assert part_map.labels.shape == sample.size and part_map.scores.shape == sample.size
        assert set(part_map.present().tolist()) <= set(PASCAL_PART_BIRD)
        labels, scores = expected_map(instances, PASCAL_PART_BIRD, 0.0)
        assert torch.equal(part_map.labels, labels) and torch.allclose(part_map.scores, scores)
        # the painting itself, on every class the real model predicted (random weights seldom find bird parts)
        everything = instances_to_part_map(instances, every_class, 0.0)
        labels, scores = expected_map(instances, every_class, 0.0)
        assert everything.present().numel() > 0
        assert torch.equal(everything.labels, labels) and torch.allclose(everything.scores, scores)


def xaikit_thing_classes() -> list[str]:
    from detectron2.data import MetadataCatalog

    return list(MetadataCatalog.get("pascal_part_val").thing_classes)


def test_custom_vocabulary_with_open_clip_embeddings_and_batching(vlpart_source, vlpart_weights, bird_embeddings, samples):
    segmenter = xaikit.create(
        "segmenter", "vlpart", source=str(vlpart_source), weights=str(vlpart_weights), vocabulary=",".join(BIRD_PARTS),
        embeddings=str(bird_embeddings), score_threshold=0.0, mask_threshold=0.0, min_size_test=SMALL, batch_size=2, device="cpu",
    )
    assert segmenter.vocabulary == tuple(BIRD_PARTS)
    found = segmenter.instances(samples)
    maps = segmenter.segment(samples)
    for instances, part_map, sample in zip(found, maps, samples):
        assert int(instances.pred_classes.max()) < len(BIRD_PARTS)
        assert part_map.names == dict(enumerate(BIRD_PARTS, start=1)) and part_map.labels.shape == sample.size
        present = part_map.present().tolist()
        assert present and set(present) <= set(range(1, 10))
        labels, scores = expected_map(instances, part_map.names, 0.0)
        assert torch.equal(part_map.labels, labels) and torch.allclose(part_map.scores, scores)
    one_at_a_time = xaikit.create(
        "segmenter", "vlpart", source=str(vlpart_source), weights=str(vlpart_weights), vocabulary=BIRD_PARTS,
        embeddings=str(bird_embeddings), score_threshold=0.0, mask_threshold=0.0, min_size_test=SMALL, batch_size=1, device="cpu",
    )
    assert one_at_a_time.fingerprint == segmenter.fingerprint
    single = one_at_a_time.segment(samples[:1])[0]
    assert (single.labels == maps[0].labels).float().mean() > 0.9  # a batch is padded to its largest image


@pytest.mark.parametrize("suffix", [".pkl", ".pth"])
def test_pickled_checkpoints_are_refused_before_building_without_running_them(vlpart_source, tmp_path, suffix):
    marker = tmp_path / "marker"
    weights = tmp_path / f"evil{suffix}"
    weights.write_bytes(b"cos\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR.")  # os.system("touch marker")
    with pytest.raises(XaikitError, match="trust_pickle=true") as error:
        xaikit.create("segmenter", "vlpart", source=str(vlpart_source), weights=str(weights), device="cpu")
    assert str(weights) in str(error.value) and "\n" not in str(error.value)
    assert not marker.exists()


def test_a_checkpoint_for_another_model_is_one_sentence(vlpart_source, tmp_path):
    weights = tmp_path / "other.pth"
    torch.save({"model": {"backbone.bottom_up.base.conv1.weight": torch.zeros(3, 3)}}, weights)
    with pytest.raises(XaikitError, match="does not fit segmenter 'vlpart''s config"):
        xaikit.create("segmenter", "vlpart", source=str(vlpart_source), weights=str(weights), vocabulary=PASCAL_PART, device="cpu")
