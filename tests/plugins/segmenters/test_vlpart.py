"""The vlpart adapter: conversion of detectron2-style instances, classifier handling, clear refusals.

The conversion code is tested here on stand-ins with exactly the fields VLPart's ``Instances``
carry; the real model (detectron2 built from source, VLPart's checkout, a seeded checkpoint in the
released format) runs in the integration tier, tests/integration/test_vlpart_real.py.
"""

from __future__ import annotations

import importlib.util
import pickle
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import xaikit
from xaikit.errors import MissingDependencyError, WeightsUnavailableError, XaikitError
from xaikit_segmenters.external import UnsafeCheckpointError, read_weights, weights_loader
from xaikit_segmenters.vlpart import (
    VLPartSegmenter,
    absolute_metadata_paths,
    builtin_names,
    clip_prompts,
    install_classifier,
    instances_to_part_map,
    load_embeddings,
)
from xaikit_segmenters.vocabulary import PASCAL_PART_BIRD

HAS_DETECTRON2 = importlib.util.find_spec("detectron2") is not None


class Instances:
    """A stand-in for detectron2's ``Instances`` as VLPart returns them (fields used by the adapter)."""

    def __init__(self, pred_masks: torch.Tensor, scores: torch.Tensor, pred_classes: torch.Tensor) -> None:
        self.pred_masks, self.scores, self.pred_classes = pred_masks, scores, pred_classes
        self.pred_boxes = torch.zeros(len(scores), 4)

    def __len__(self) -> int:
        return len(self.scores)


def box(top: int, left: int, bottom: int, right: int, size: tuple[int, int] = (6, 8)) -> torch.Tensor:
    mask = torch.zeros(size, dtype=torch.bool)
    mask[top:bottom, left:right] = True
    return mask


def test_overlaps_go_to_the_highest_score_not_the_lowest_as_in_the_reference():
    # VLPart lists detections by descending score: a beak (class index 7 -> Pascal-Part id 8) at 0.95,
    # then a head (id 9) at 0.75 that overlaps it in columns 3-4.
    instances = Instances(
        torch.stack([box(1, 2, 4, 5), box(0, 3, 5, 8)]), torch.tensor([0.95, 0.75]), torch.tensor([7, 8])
    )
    part_map = instances_to_part_map(instances, PASCAL_PART_BIRD, min_score=0.55)
    assert part_map.labels[2, 3:5].tolist() == [8, 8]  # the beak keeps the overlap
    assert part_map.labels[2, 5:8].tolist() == [9, 9, 9] and part_map.labels[2, 2] == 8
    assert part_map.labels[5].tolist() == [0] * 8
    torch.testing.assert_close(part_map.scores[2, 2:6], torch.tensor([0.95, 0.95, 0.95, 0.75]))
    reference = torch.zeros(6, 8, dtype=torch.int64)
    for mask, label in zip(instances.pred_masks, instances.pred_classes + 1):  # the reference: painted in list order
        reference[mask] = label
    assert reference[2, 3] == 9 and not torch.equal(reference, part_map.labels)


def test_thresholds_other_objects_and_ties():
    instances = Instances(
        torch.stack([box(0, 0, 2, 2), box(0, 0, 2, 2), box(3, 3, 5, 5), box(4, 0, 6, 2), box(0, 6, 2, 8)]),
        torch.tensor([0.8, 0.8, 0.6, 0.9, 0.7]),
        torch.tensor([12, 14, 15, 30, 13]),  # wing, tail, torso, cat:head, neck
    )
    part_map = instances_to_part_map(instances, PASCAL_PART_BIRD, min_score=0.65)
    assert part_map.labels[0, 0] == 13  # tie at 0.8: the instance listed first wins
    assert (part_map.labels[3:5, 3:5] == 0).all()  # 0.6 < min_score
    assert (part_map.labels[4:6, 0:2] == 0).all()  # a cat's head is not a bird part
    assert part_map.present().tolist() == [13, 14]
    assert part_map.names is PASCAL_PART_BIRD


def test_no_instances_gives_an_empty_map():
    empty = Instances(torch.zeros(0, 6, 8, dtype=torch.bool), torch.zeros(0), torch.zeros(0, dtype=torch.int64))
    part_map = instances_to_part_map(empty, PASCAL_PART_BIRD, min_score=0.55)
    assert part_map.labels.shape == (6, 8) and part_map.labels.dtype == torch.int64 and not part_map.labels.any()
    assert part_map.scores.shape == (6, 8)


def test_custom_vocabulary_labels_follow_the_list():
    names = {1: "bird head", 2: "bird beak"}
    instances = Instances(torch.stack([box(0, 0, 3, 3), box(3, 3, 6, 6)]), torch.tensor([0.9, 0.8]), torch.tensor([1, 0]))
    part_map = instances_to_part_map(instances, names, min_score=0.55)
    assert part_map.labels[0, 0] == 2 and part_map.labels[4, 4] == 1


def test_builtin_names_keep_the_chosen_objects_with_pascal_part_ids():
    classes = ["aeroplane:body", "aeroplane:wing", "aeroplane:tail", "aeroplane:wheel", "bicycle:wheel",
               "bicycle:handlebar", "bicycle:saddle", *PASCAL_PART_BIRD.values(), "bottle:body"]
    assert builtin_names(classes, ("bird",)) == PASCAL_PART_BIRD
    assert builtin_names(classes, ("bird", "bottle"))[17] == "bottle:body"


def test_clip_prompts_follow_vlpart():
    assert clip_prompts(["bird:beak", "Bird Head"]) == ["a bird beak", "a bird head"]


def test_embeddings_from_npy_and_pt_and_refused_shapes(tmp_path):
    weight = np.arange(6, dtype=np.float64).reshape(2, 3)
    np.save(tmp_path / "e.npy", weight)
    torch.save(torch.from_numpy(weight), tmp_path / "e.pt")
    for name in ("e.npy", "e.pt"):
        loaded = load_embeddings(tmp_path / name, 2)
        assert loaded.dtype == torch.float32 and loaded.tolist() == weight.tolist()
    with pytest.raises(XaikitError, match=r"must be \(3, D\), one row per vocabulary entry, got \(2, 3\)"):
        load_embeddings(tmp_path / "e.npy", 3)
    with pytest.raises(XaikitError, match="cannot read text embeddings"):
        load_embeddings(tmp_path / "missing.npy", 2)


def test_install_classifier_normalises_and_appends_a_background_column():
    predictors = torch.nn.ModuleList([torch.nn.Module(), torch.nn.Module()])  # a cascade: one predictor per stage
    for predictor in predictors:
        predictor.cls_score = SimpleNamespace()
    model = SimpleNamespace(device=torch.device("cpu"), roi_heads=SimpleNamespace(box_predictor=predictors))
    install_classifier(model, torch.tensor([[3.0, 4.0], [0.0, 2.0], [1.0, 0.0]]))  # (C=3, D=2)
    for predictor in predictors:
        classifier = predictor.cls_score.zs_weight_inference
        assert classifier.shape == (2, 4)
        torch.testing.assert_close(classifier[:, 0], torch.tensor([0.6, 0.8]))
        torch.testing.assert_close(classifier.norm(dim=0), torch.tensor([1.0, 1.0, 1.0, 0.0]))


def test_metadata_paths_become_absolute(tmp_path):
    cfg = {"MODEL": {"ROI_BOX_HEAD": {
        "ZEROSHOT_WEIGHT_PATH": "datasets/metadata/a.npy",
        "ZEROSHOT_WEIGHT_PATH_GROUP": ["datasets/metadata/b.npy", "/abs/c.npy"],
        "NAME": "FastRCNNConvFCHead",
    }, "WEIGHTS": "models/r50.pth"}}
    absolute_metadata_paths(cfg, tmp_path)
    head = cfg["MODEL"]["ROI_BOX_HEAD"]
    assert head["ZEROSHOT_WEIGHT_PATH"] == str(tmp_path / "datasets/metadata/a.npy")
    assert head["ZEROSHOT_WEIGHT_PATH_GROUP"] == [str(tmp_path / "datasets/metadata/b.npy"), "/abs/c.npy"]
    assert head["NAME"] == "FastRCNNConvFCHead" and cfg["MODEL"]["WEIGHTS"] == "models/r50.pth"


def test_missing_source_config_and_checkpoint_are_one_sentence(tmp_path):
    with pytest.raises(XaikitError, match=r"^segmenter 'vlpart' needs source=DIR, a checkout of https://github.com/facebookresearch/VLPart$"):
        VLPartSegmenter()
    with pytest.raises(XaikitError, match="is not a checkout of https://github.com/facebookresearch/VLPart"):
        VLPartSegmenter(source=str(tmp_path))
    (tmp_path / "vlpart").mkdir()
    with pytest.raises(XaikitError, match="cannot find its config configs/pascal_part/r50_pascalpart.yaml"):
        VLPartSegmenter(source=str(tmp_path))
    config = tmp_path / "configs" / "pascal_part" / "r50_pascalpart.yaml"
    config.parent.mkdir(parents=True)
    config.write_text("MODEL: {}\n")
    with pytest.raises(WeightsUnavailableError, match=r"needs weights=FILE.*releases/download/v0.1/r50_pascalpart.pth"):
        VLPartSegmenter(source=str(tmp_path))
    with pytest.raises(WeightsUnavailableError, match="checkpoint .*nope.pth does not exist"):
        VLPartSegmenter(source=str(tmp_path), weights=str(tmp_path / "nope.pth"))
    with pytest.raises(XaikitError, match=r"mask_threshold is a score in \[0, 1\]"):
        VLPartSegmenter(source=str(tmp_path), mask_threshold=1.5)
    with pytest.raises(XaikitError, match="needs at least one part name"):
        VLPartSegmenter(source=str(tmp_path), vocabulary=[])


@pytest.mark.skipif(HAS_DETECTRON2, reason="detectron2 is installed here")
def test_without_detectron2_the_registry_says_how_to_install_vlpart():
    with pytest.raises(MissingDependencyError) as error:
        xaikit.create("segmenter", "vlpart")
    message = str(error.value)
    assert message.startswith("segmenter 'vlpart' needs 'detectron2', which is not installed; install it with: build detectron2")
    assert "clone https://github.com/facebookresearch/VLPart" in message and "\n" not in message
    info = {c.name: c for c in xaikit.list_components("segmenter")}["vlpart"]
    assert info.status == "unavailable" and info.error == message


class _Marker:
    """Unpickling this writes a file: what a malicious checkpoint would do."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.write_text, (self.path, "pwned"))


@pytest.mark.parametrize("suffix", [".pkl", ".pth"])
def test_checkpoints_that_need_unpickling_are_refused_unrun(tmp_path, suffix):
    marker, weights = tmp_path / "marker", tmp_path / f"evil{suffix}"
    if suffix == ".pkl":
        weights.write_bytes(pickle.dumps({"model": _Marker(marker)}))
    else:
        torch.save({"model": {"w": torch.zeros(1)}, "payload": _Marker(marker)}, weights)
    with pytest.raises(UnsafeCheckpointError) as error:
        weights_loader(weights, "vlpart", trust_pickle=False)
    assert str(weights) in str(error.value) and "trust_pickle=true" in str(error.value) and "\n" not in str(error.value)
    assert error.value.exit_code == 2 and not marker.exists()


def test_released_format_is_read_as_tensors_and_garbage_is_one_sentence(tmp_path):
    weights = tmp_path / "model.pth"
    torch.save({"model": {"a.weight": torch.ones(2, 3)}, "iteration": 7}, weights)
    assert list(read_weights(weights, "vlpart")) == ["a.weight"]
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(XaikitError, match="cannot read .*garbage.pth as a PyTorch checkpoint"):
        read_weights(garbage, "vlpart")
    empty = tmp_path / "empty.pth"
    torch.save({"model": {}}, empty)
    with pytest.raises(XaikitError, match="holds no model tensors"):
        read_weights(empty, "vlpart")


def test_loaded_tensors_must_fit_the_model(tmp_path):
    model = torch.nn.Linear(3, 2)
    weights = tmp_path / "model.pth"
    torch.save({"model": {"weight": torch.full((2, 3), 5.0), "bias": torch.zeros(2)}}, weights)
    weights_loader(weights, "vlpart", trust_pickle=False)(model)
    assert torch.equal(model.weight, torch.full((2, 3), 5.0))
    torch.save({"model": {"weight": torch.zeros(4, 3)}}, weights)
    with pytest.raises(XaikitError, match=r"weight is \(4, 3\) in the checkpoint and \(2, 3\) in the model"):
        weights_loader(weights, "vlpart", trust_pickle=False)(model)
    torch.save({"model": {"other": torch.zeros(1)}}, weights)
    with pytest.raises(XaikitError, match="shares no weight"):
        weights_loader(weights, "vlpart", trust_pickle=False)(model)
