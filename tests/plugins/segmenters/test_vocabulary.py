"""The shared bird vocabulary and the mapping of every segmenter's part names onto CUB's 15 parts."""

from __future__ import annotations

import pytest
import torch

from xaikit.data.parts import CUB_PART_NAMES
from xaikit.errors import XaikitError
from xaikit.types import PartMap
from xaikit_segmenters.vocabulary import (
    BIRD_VOCABULARY,
    CUB_PARTS_OF,
    PASCAL_PART_BIRD,
    cub_parts,
    cub_parts_of_labels,
    object_part,
    parse_vocabulary,
    part_key,
)


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("bird:torso", "torso"),  # VLPart's Pascal-Part classes
        ("bird's torso", "torso"),  # OV-PARTS
        ("bird torso", "torso"),  # the shared vocabulary (CLIPSeg, SAN)
        ("Bird  Body", "torso"),
        ("torso", "torso"),
        ("left wing", "left wing"),
        ("bird left wing", "left wing"),
        ("bird feet", "foot"),
        ("cat:head", "cat head"),
    ],
)
def test_part_key_understands_every_naming_style(name, key):
    assert part_key(name) == key


def test_object_part_splits():
    assert object_part("bird:beak") == ("bird", "beak")
    assert object_part("bird's beak") == ("bird", "beak")
    assert object_part("potted plant:pot") == ("potted plant", "pot")
    assert object_part("beak") == ("", "beak")


def test_every_default_and_builtin_name_maps_onto_cub_parts():
    for name in (*BIRD_VOCABULARY, *PASCAL_PART_BIRD.values()):
        assert cub_parts(name), name
    covered = {part for name in BIRD_VOCABULARY for part in cub_parts(name)}
    assert covered == set(CUB_PART_NAMES)  # the nine Pascal-Part bird parts reach all 15 CUB parts
    assert cub_parts("bird head") == ("crown", "forehead", "nape", "left eye", "right eye")
    assert cub_parts("bird:wing") == ("left wing", "right wing")
    assert cub_parts("bird breast") == ("breast",) and cub_parts("part 1") == ()
    assert all(part in CUB_PART_NAMES for parts in CUB_PARTS_OF.values() for part in parts)


def test_label_table_answers_keypoint_in_part_for_a_whole_map():
    names = {2: "bird:head", 5: "bird's wing", 6: "part 3"}
    table = cub_parts_of_labels(names)
    assert table.shape == (7, 15) and table.dtype == torch.bool
    assert not table[0].any() and not table[1].any() and not table[6].any()
    crown, left_wing, tail = (CUB_PART_NAMES.index(name) for name in ("crown", "left wing", "tail"))
    assert table[2, crown] and table[5, left_wing] and not table[5, tail]
    part_map = PartMap(torch.tensor([[2, 5], [0, 6]]), names)
    pixels = torch.tensor([[0, 0], [0, 1], [1, 0]])  # (row, column) of three keypoints: crown, left wing, tail
    parts = torch.tensor([crown, left_wing, tail])
    assert table[part_map.labels[pixels[:, 0], pixels[:, 1]], parts].tolist() == [True, True, False]


def test_parse_vocabulary():
    assert parse_vocabulary(" bird head,  bird  beak ,", "clipseg") == ("bird head", "bird beak")
    assert parse_vocabulary(["bird eye"], "clipseg") == ("bird eye",)
    with pytest.raises(XaikitError, match="segmenter 'san' got the part name 'bird head' twice"):
        parse_vocabulary(["Bird Head", "bird head"], "san")
    with pytest.raises(XaikitError, match="needs at least one part name"):
        parse_vocabulary([], "vlpart")
