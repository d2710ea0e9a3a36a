"""Atomic writes: whole files, usual permissions, nothing left behind on failure."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image

from xaikit.io import write_bytes_atomically, write_json_atomically, write_image_atomically


def test_files_are_written_whole_with_usual_permissions(tmp_path):
    write_json_atomically(tmp_path / "a.json", {"b": 1, "a": [1, 2]})
    assert json.loads((tmp_path / "a.json").read_text()) == {"a": [1, 2], "b": 1}
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o666 & ~umask
    image = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    write_image_atomically(tmp_path / "x.png", image)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "x.png")), image)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "x.png"]


def test_images_are_written_in_the_format_their_suffix_names(tmp_path):
    image = np.zeros((8, 12, 3), dtype=np.uint8)
    image[:, 6:] = 255
    for name, form in (("a.png", "PNG"), ("b.JPG", "JPEG"), ("c.jpeg", "JPEG"), ("d.pdf", "PDF")):
        write_image_atomically(tmp_path / name, image)
        assert (tmp_path / name).read_bytes()[:4] in {"PNG": [b"\x89PNG"], "JPEG": [b"\xff\xd8\xff\xe0", b"\xff\xd8\xff\xdb"], "PDF": [b"%PDF"]}[form]
    assert np.asarray(Image.open(tmp_path / "b.JPG")).shape == (8, 12, 3)
    with pytest.raises(ValueError, match=r"x.txt: an image file ends in .png, .jpg, .jpeg, .pdf, not '.txt'"):
        write_image_atomically(tmp_path / "x.txt", image)
    assert not (tmp_path / "x.txt").exists()


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    write_bytes_atomically(tmp_path / "f", b"old")
    with pytest.raises(TypeError):
        write_bytes_atomically(tmp_path / "f", object())  # type: ignore[arg-type]
    assert (tmp_path / "f").read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["f"]
