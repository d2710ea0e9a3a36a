"""Property test of the CUB reader: any bytes in any of its text files give a dataset or one DatasetError, nothing else.

Whatever the reader accepts is sane: every path stays inside the root, every number is finite and in
range, and every sample either decodes or raises :class:`~xaikit.errors.DatasetError` (a recorded skip).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from xaikit.data.cub import CUBDataset
from xaikit.errors import DatasetError

FILES = {
    "images.txt": "1 a/one.png\n2 a/two.png\n",
    "classes.txt": "1 001.A\n",
    "image_class_labels.txt": "1 1\n2 1\n",
    "train_test_split.txt": "1 1\n2 0\n",
    "bounding_boxes.txt": "1 1.0 1.0 6.0 5.0\n2 0.0 0.0 8.0 8.0\n",
    "parts/parts.txt": "1 beak\n2 tail\n",
    "parts/part_locs.txt": "1 1 2.0 3.0 1\n1 2 0.0 0.0 0\n2 1 4.0 4.0 1\n2 2 7.5 1.0 1\n",
}

# Rows of plausible tokens (ids, numbers of every kind, paths that escape), so that many examples parse.
_TOKEN = st.one_of(
    st.integers(-2, 4).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.sampled_from(["nan", "inf", "-inf", "1e400", "0", "1", "2", "a/one.png", "a/two.png", "../x.png", "/etc/passwd", "a/../../x.png", "C:\\x.png", "yes"]),
    st.text(alphabet="0123456789.-eE/a\x00é", min_size=1, max_size=6),
)
_ROWS = st.lists(st.lists(_TOKEN, min_size=1, max_size=6).map(" ".join), max_size=6).map(lambda rows: "\n".join(rows).encode())
_ARBITRARY = st.one_of(_ROWS, st.binary(max_size=200), st.sampled_from([b"", b"\n", b"\xef\xbb\xbf1 a/one.png\n"]))


@st.composite
def contents(draw: st.DrawFn, name: str) -> bytes:
    """Bytes for file ``name``: arbitrary, or its valid text with a few tokens replaced (so the rest still parses)."""
    if draw(st.booleans()):
        return draw(_ARBITRARY)
    rows = [line.split() for line in FILES[name].splitlines()]
    for _ in range(draw(st.integers(1, 3))):
        row = draw(st.integers(0, len(rows) - 1))
        rows[row][draw(st.integers(0, len(rows[row]) - 1))] = draw(_TOKEN)
    return ("\n".join(" ".join(row) for row in rows) + "\n").encode()


def _layout(root: Path, name: str, content: bytes) -> None:
    for file, text in FILES.items():
        (root / file).parent.mkdir(parents=True, exist_ok=True)
        (root / file).write_text(text)
    (root / name).write_bytes(content)
    (root / "images" / "a").mkdir(parents=True)
    for image in ("one.png", "two.png"):
        Image.fromarray(np.full((8, 8, 3), 90, np.uint8)).save(root / "images" / "a" / image)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(sorted(FILES)), data=st.data(), crop=st.booleans())
def test_any_bytes_give_a_sane_dataset_or_one_dataset_error(name, data, crop):
    content = data.draw(contents(name))
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder) / "cub"
        _layout(root, name, content)
        try:
            dataset = CUBDataset(root, crop_to_bbox=crop)
        except DatasetError as error:
            assert str(error) and "\n" not in str(error)
            return
        notes = dataset._annotations
        assert np.isfinite(notes.keypoints).all() and (notes.keypoints >= 0).all()
        if notes.bboxes is not None:
            assert np.isfinite(notes.bboxes).all() and (notes.bboxes[:, 2:] > 0).all()
        for relative in notes.paths:
            assert (root / "images" / relative).resolve().is_relative_to(root.resolve())
        for index in range(len(dataset)):
            try:
                sample = dataset[index]
            except DatasetError:
                continue
            assert sample.image.ndim == 3 and sample.image.size > 0
