"""KLC's gallery: prototype selection, the parts cache file and retrieval bookkeeping."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from xaikit.errors import XaikitError
from xaikit.types import Sample
from xaikit_klc.gallery import GalleryParts, PrototypeIndex, load_parts, part_rows, sample_key, save_parts, select_prototypes


def test_first_selection_keeps_dataset_order_per_class():
    labels = np.array([1, 0, 1, 1, 0, 2, 1])
    assert select_prototypes(labels, 2, "first").tolist() == [1, 4, 0, 2, 5]
    assert select_prototypes(labels, None, "first").tolist() == [1, 4, 0, 2, 3, 6, 5]


def test_kmeans_selection_takes_the_image_nearest_each_centroid():
    # class 0: two tight clusters (around x and around y) plus an outlier; class 1: a single image
    cls = torch.tensor([[1, 0.02], [1, -0.02], [0.02, 1], [-0.01, 1], [1, 1], [0.5, -1]], dtype=torch.float32)
    labels = np.array([0, 0, 0, 0, 0, 1])
    chosen = select_prototypes(labels, 2, "kmeans", cls, seed=0)
    assert chosen[-1] == 5
    class0 = set(chosen[:-1].tolist())
    assert len(class0) == 2 and len(class0 & {0, 1}) == 1 and len(class0 & {2, 3}) == 1


def test_selection_refuses_bad_options():
    with pytest.raises(XaikitError, match="unknown prototype selection"):
        select_prototypes(np.zeros(3, np.int64), 1, "random")
    with pytest.raises(XaikitError, match="at least 1"):
        select_prototypes(np.zeros(3, np.int64), 0, "first")


def test_sample_key_covers_pixels_and_annotations():
    sample = Sample(image=np.zeros((4, 4, 3), np.uint8), keypoints=np.ones((2, 2), np.float32), visible=np.ones(2, bool), part_names=("a", "b"))
    assert sample_key(sample) == sample_key(dataclasses.replace(sample))
    assert sample_key(sample) != sample_key(dataclasses.replace(sample, visible=np.array([True, False])))
    assert sample_key(sample) != sample_key(dataclasses.replace(sample, image=np.ones((4, 4, 3), np.uint8)))


def test_parts_round_trip_and_a_corrupt_file_is_a_miss(tmp_path):
    parts = GalleryParts(
        owner=torch.tensor([0, 0, 1]), label=torch.tensor([2, 5, 2]), name=("beak", "crown", "beak"),
        descriptor=torch.randn(3, 4), centroid=torch.rand(3, 2),
    )
    path = tmp_path / "klc-gallery" / "entry.safetensors"
    save_parts(path, parts)
    loaded = load_parts(path)
    assert loaded is not None and loaded.name == parts.name
    assert torch.equal(loaded.descriptor, parts.descriptor) and torch.equal(loaded.owner, parts.owner)
    path.write_bytes(path.read_bytes()[:40])
    assert load_parts(path) is None
    assert load_parts(tmp_path / "absent.safetensors") is None


def test_part_rows_group_by_rank():
    owner = torch.tensor([0, 0, 1, 2, 2, 2, 3])
    rows, rank = part_rows(owner, torch.tensor([2, 0]))
    assert rows.tolist() == [3, 4, 5, 0, 1] and rank.tolist() == [0, 0, 0, 1, 1]


def test_retrieve_top_k_by_cosine():
    index = PrototypeIndex(
        dataset_index=torch.arange(3), labels=torch.tensor([0, 1, 1]), image_ids=torch.arange(3),
        cls=torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]), dim=1),
    )
    similarity, rows = index.retrieve(torch.tensor([[2.0, 0.1]]), 2)
    assert rows.tolist() == [[0, 2]] and similarity[0, 0] > similarity[0, 1]
    assert index.retrieve(torch.tensor([[1.0, 0.0]]), 10)[1].shape == (1, 3)


@pytest.mark.parametrize("position", [-1, -5, -40])
def test_a_flipped_bit_anywhere_in_the_tensors_is_a_miss(tmp_path, position):
    parts = GalleryParts(
        owner=torch.tensor([0, 1]), label=torch.tensor([2, 5]), name=("beak", "crown"),
        descriptor=torch.randn(2, 4), centroid=torch.rand(2, 2),
    )
    path = tmp_path / "entry.safetensors"
    save_parts(path, parts)
    data = bytearray(path.read_bytes())
    data[position] ^= 0x01
    path.write_bytes(bytes(data))
    assert load_parts(path) is None


def test_a_changed_part_name_is_a_miss(tmp_path):
    parts = GalleryParts(owner=torch.tensor([0]), label=torch.tensor([2]), name=("beak",), descriptor=torch.randn(1, 4), centroid=torch.rand(1, 2))
    path = tmp_path / "entry.safetensors"
    save_parts(path, parts)
    path.write_bytes(path.read_bytes().replace(b"beak", b"bead"))
    assert load_parts(path) is None
