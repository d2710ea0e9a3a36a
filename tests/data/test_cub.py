"""The CUB-200-2011 reader on a layout the tests write and on real photographs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from xaikit.data.cub import CUBDataset
from xaikit.data.parts import CUB_PART_NAMES
from xaikit.errors import DatasetError

# Non-contiguous official ids on purpose: images 10, 20, 35; classes 7 and 3 (listed out of order).
IMAGES = {10: "003.Gull/gull_a.jpg", 20: "007.Wren/wren_b.jpg", 35: "007.Wren/wren c.jpg"}
LABELS = {10: 3, 20: 7, 35: 7}
SPLIT = {10: 1, 20: 0, 35: 1}
BOXES = {10: (2.7, 3.2, 10.9, 8.5), 20: (0.0, 0.0, 16.0, 12.0), 35: (4.0, 1.0, 6.0, 6.0)}


def write_layout(root: Path) -> Path:
    """A three-image CUB layout with 16x12 images, boxes and keypoints."""
    rng = np.random.default_rng(0)
    for relative in IMAGES.values():
        path = root / "images" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (12, 16, 3), dtype=np.uint8)).save(path)
    lines = {
        "images.txt": [f"{i} {p}" for i, p in IMAGES.items()],
        "classes.txt": ["7 007.Wren", "3 003.Gull"],
        "image_class_labels.txt": [f"{i} {c}" for i, c in LABELS.items()],
        "train_test_split.txt": [f"{i} {s}" for i, s in SPLIT.items()],
        "bounding_boxes.txt": [f"{i} {x} {y} {w} {h}" for i, (x, y, w, h) in BOXES.items()],
        "parts/parts.txt": [f"{k} {name}" for k, name in enumerate(CUB_PART_NAMES, start=1)],
        "parts/part_locs.txt": [
            f"{i} {k} {float(k)} {float(k % 12)} {int(k % 3 == 0)}" for i in IMAGES for k in range(1, 16)
        ],
    }
    for name, rows in lines.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("\n".join(rows) + "\n")
    return root


@pytest.fixture
def layout(tmp_path: Path) -> Path:
    return write_layout(tmp_path / "cub")


def test_reads_official_ids_classes_and_split(layout):
    dataset = CUBDataset(layout)
    assert len(dataset) == 3
    assert dataset.classes == ("003.Gull", "007.Wren")  # ascending class id
    assert dataset.class_ids.tolist() == [3, 7]
    assert dataset.image_ids.tolist() == [10, 20, 35]
    assert dataset.labels.tolist() == [0, 1, 1]
    assert dataset.part_names == CUB_PART_NAMES
    train, test = dataset.split("train"), dataset.split("test")
    assert train.image_ids.tolist() == [10, 35] and test.image_ids.tolist() == [20]
    assert CUBDataset(layout, split="test").image_ids.tolist() == [20]
    assert train.split("all").image_ids.tolist() == [10, 20, 35]


def test_sample_fields(layout):
    sample = CUBDataset(layout)[2]
    assert sample.image_id == 35 and sample.label == 1 and sample.is_train
    assert sample.image.shape == (12, 16, 3) and sample.image.dtype == np.uint8
    assert sample.path == layout / "images" / "007.Wren/wren c.jpg"  # spaces in paths survive
    assert sample.keypoints.shape == (15, 2) and sample.keypoints.dtype == np.float32
    assert sample.keypoints[4].tolist() == [5.0, 5.0]
    assert sample.visible.tolist() == [k % 3 == 0 for k in range(1, 16)]
    assert sample.bbox.tolist() == [4.0, 1.0, 6.0, 6.0]
    assert sample.part_mask is None and sample.foreground is None


def test_crop_to_bbox_truncates_corners_and_maps_keypoints(layout):
    full = CUBDataset(layout)[0]  # box (2.7, 3.2, 10.9, 8.5) -> x 2..13, y 3..11
    cropped = CUBDataset(layout, crop_to_bbox=True)[0]
    assert cropped.image.shape == (11 - 3, 13 - 2, 3)
    np.testing.assert_array_equal(cropped.image, full.image[3:11, 2:13])
    np.testing.assert_allclose(cropped.keypoints, full.keypoints - np.array([2, 3]))
    np.testing.assert_array_equal(cropped.visible, full.visible)  # annotated visibility kept
    np.testing.assert_allclose(cropped.bbox, [0.7, 0.2, 10.3, 7.8], atol=1e-6)


def test_optional_masks_are_read(layout):
    rng = np.random.default_rng(1)
    part_mask = rng.integers(0, 16, (12, 16), dtype=np.uint8)
    for folder, array in (("part_masks", part_mask), ("segmentations", np.where(part_mask > 0, 255, 0).astype(np.uint8))):
        path = layout / folder / "003.Gull/gull_a.png"
        path.parent.mkdir(parents=True)
        Image.fromarray(array).save(path)
    sample = CUBDataset(layout)[0]
    np.testing.assert_array_equal(sample.part_mask, part_mask)
    np.testing.assert_array_equal(sample.foreground, part_mask > 0)
    cropped = CUBDataset(layout, crop_to_bbox=True)[0]
    np.testing.assert_array_equal(cropped.part_mask, part_mask[3:11, 2:13])


def test_optional_files_may_be_absent(layout):
    (layout / "bounding_boxes.txt").unlink()
    sample = CUBDataset(layout)[0]
    assert sample.bbox is None and sample.keypoints.shape == (15, 2)
    with pytest.raises(DatasetError, match="cannot crop to bounding boxes: .*bounding_boxes.txt is missing"):
        CUBDataset(layout, crop_to_bbox=True)
    (layout / "parts" / "part_locs.txt").unlink()
    with pytest.raises(DatasetError, match="has parts/parts.txt but no parts/part_locs.txt"):
        CUBDataset(layout)
    (layout / "parts" / "parts.txt").unlink()
    assert CUBDataset(layout)[0].keypoints.shape == (0, 2)


@pytest.mark.parametrize(
    ("file", "line_number", "bad_line", "message"),
    [
        ("images.txt", 2, "20", r"images.txt, line 2: expected '<image_id> <path>', got '20'"),
        ("images.txt", 3, "x 007.Wren/wren_b.jpg", r"images.txt, line 3: expected '<image_id> <path>'"),
        ("images.txt", 3, "10 007.Wren/again.jpg", r"images.txt, line 3: id 10 appears twice"),
        ("classes.txt", 1, "7", r"classes.txt, line 1: expected '<class_id> <name>', got '7'"),
        ("image_class_labels.txt", 2, "20 9", r"image_class_labels.txt, line 2: class id 9 is not defined"),
        ("image_class_labels.txt", 2, "99 7", r"image_class_labels.txt, line 2: image id 99 is not defined"),
        ("image_class_labels.txt", 2, "10 3", r"image_class_labels.txt, line 2: image id 10 appears twice"),
        ("train_test_split.txt", 3, "35 2", r"train_test_split.txt, line 3: expected '<image_id> <is_training_image>', got '35 2'"),
        ("bounding_boxes.txt", 1, "10 1.0 2.0 -3.0 4.0", r"bounding_boxes.txt, line 1: expected '<image_id> <x> <y> <width> <height>'"),
        ("bounding_boxes.txt", 1, "10 1.0 2.0 nan 4.0", r"bounding_boxes.txt, line 1"),
        ("parts/parts.txt", 4, "four breast", r"parts.txt, line 4: expected '<part_id> <name>'"),
        ("parts/part_locs.txt", 17, "20 2 1.0 2.0 yes", r"part_locs.txt, line 17: expected '<image_id> <part_id> <x> <y> <visible>'"),
        ("parts/part_locs.txt", 17, "20 16 1.0 2.0 1", r"part_locs.txt, line 17: part id 16 is not defined"),
        ("parts/part_locs.txt", 5, "10 5 1.0", r"part_locs.txt, line 5: expected"),
    ],
)
def test_malformed_rows_name_the_file_and_line(layout, file, line_number, bad_line, message):
    path = layout / file
    lines = path.read_text().splitlines()
    lines[line_number - 1] = bad_line
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError, match=message):
        CUBDataset(layout)


def test_a_missing_label_row_is_reported(layout):
    path = layout / "image_class_labels.txt"
    path.write_text("\n".join(path.read_text().splitlines()[:2]) + "\n")
    with pytest.raises(DatasetError, match=r"image_class_labels.txt has no row for image id 35 \(1 images lack one\)"):
        CUBDataset(layout)


def test_a_missing_file_is_reported(layout):
    (layout / "train_test_split.txt").unlink()
    with pytest.raises(DatasetError, match=r"CUB layout at .* is missing train_test_split.txt"):
        CUBDataset(layout)
    with pytest.raises(DatasetError, match="is not a directory"):
        CUBDataset(layout / "nowhere")


def test_a_missing_image_is_reported_with_its_path(layout):
    missing = layout / "images" / "007.Wren" / "wren_b.jpg"
    missing.unlink()
    with pytest.raises(DatasetError, match=rf"image file {missing} \(image id 20\) does not exist"):
        CUBDataset(layout)
    lazy = CUBDataset(layout, check_files=False)
    assert lazy[0].image_id == 10
    with pytest.raises(DatasetError, match=rf"image file {missing} does not exist"):
        lazy[1]


def test_a_corrupt_image_is_reported(layout):
    corrupt = layout / "images" / "003.Gull" / "gull_a.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    dataset = CUBDataset(layout)
    with pytest.raises(DatasetError, match=rf"cannot decode image {corrupt}"):
        dataset[0]
    corrupt.write_bytes(corrupt.read_bytes()[:0])
    with pytest.raises(DatasetError, match="cannot decode image"):
        dataset[0]


def test_a_mask_of_the_wrong_size_is_reported(layout):
    path = layout / "part_masks" / "003.Gull" / "gull_a.png"
    path.parent.mkdir(parents=True)
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(path)
    with pytest.raises(DatasetError, match=r"mask .*gull_a.png is 5x5 but its image is 16x12"):
        CUBDataset(layout)[0]


def test_unknown_split_and_out_of_range_index(layout):
    with pytest.raises(DatasetError, match="unknown split 'val'; use one of all, train, test"):
        CUBDataset(layout, split="val")
    dataset = CUBDataset(layout)
    with pytest.raises(IndexError):
        dataset[3]
    assert dataset[-1].image_id == 35


def test_real_photographs(cub_mini):
    dataset = CUBDataset(cub_mini)
    assert len(dataset) == 60 and len(dataset.classes) == 200
    assert len(dataset.split("train")) == 30 and len(dataset.split("test")) == 30
    # With the full classes.txt a label is the official class id - 1, as in the reference code.
    labels = dict(line.split() for line in (cub_mini / "image_class_labels.txt").read_text().splitlines())
    assert dataset.labels.tolist() == [int(labels[str(i)]) - 1 for i in dataset.image_ids]
    locs = np.loadtxt(cub_mini / "parts" / "part_locs.txt")
    first = dataset[0]
    rows = locs[locs[:, 0] == first.image_id]
    np.testing.assert_array_equal(first.keypoints, rows[:, 2:4].astype(np.float32))
    np.testing.assert_array_equal(first.visible, rows[:, 4] == 1)
    for sample in CUBDataset(cub_mini, crop_to_bbox=True, split="test"):
        x, y, w, h = np.loadtxt(cub_mini / "bounding_boxes.txt")[
            np.loadtxt(cub_mini / "bounding_boxes.txt")[:, 0] == sample.image_id
        ][0, 1:]
        assert sample.image.shape[:2] == (int(y + h) - int(y), int(x + w) - int(x))
        assert sample.image.dtype == np.uint8 and sample.image.shape[2] == 3


def test_byte_order_marks_and_windows_line_endings_are_accepted(layout):
    for name in ("images.txt", "classes.txt"):
        path = layout / name
        path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes().replace(b"\n", b"\r\n"))
    assert CUBDataset(layout).image_ids.tolist() == [10, 20, 35]
