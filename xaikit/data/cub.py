"""Reader for the official CUB-200-2011 layout (and anything written in it, such as synthetic-birds).

Layout under ``root`` (Wah et al., 2011)::

    images/<class dir>/<file>.jpg
    images.txt                  <image_id> <path under images/>
    classes.txt                 <class_id> <class name>
    image_class_labels.txt      <image_id> <class_id>
    train_test_split.txt        <image_id> <1 = train, 0 = test>
    bounding_boxes.txt          <image_id> <x> <y> <width> <height>       (optional)
    parts/parts.txt             <part_id> <part name>                       (optional)
    parts/part_locs.txt         <image_id> <part_id> <x> <y> <visible>      (optional)
    segmentations/<path>.png    foreground masks, 0..255                    (optional)
    part_masks/<path>.png       per-pixel part ids, 0 = background          (optional, xaikit's own)

Ids are the official ones and need not be contiguous. Classes are indexed in ascending class-id
order, so with the full ``classes.txt`` a label is ``class_id - 1``, as in the reference code.
"""

from __future__ import annotations

import copy
import math
import os
import struct
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from xaikit.errors import DatasetError
from xaikit.interfaces import Dataset
from xaikit.types import Sample

__all__ = ["CUBDataset", "decode_image"]

SPLITS = ("all", "train", "test")
_Field = Callable[[str], Any]


def _read_rows(path: Path, fields: tuple[tuple[str, _Field], ...], *, rest: bool = False) -> list[tuple[int, tuple]]:
    """Parse a whitespace-separated annotation file into ``(line number, values)`` rows.

    Args:
        path: the file.
        fields: ``(name, converter)`` per column, for the error message and conversion.
        rest: the last column takes the remainder of the line (names and paths).

    Raises:
        DatasetError: naming the file and line of the first malformed row.
    """
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DatasetError(f"CUB layout at {path.parent} is missing {path.name}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise DatasetError(f"cannot read {path}: {error}") from None
    expected = " ".join(f"<{name}>" for name, _ in fields)
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split(maxsplit=len(fields) - 1) if rest else line.split()
        try:
            if len(parts) != len(fields):
                raise ValueError
            values = tuple(convert(part) for (_, convert), part in zip(fields, parts, strict=True))
        except ValueError as error:
            reason = f" ({error})" if isinstance(error, _FieldError) else ""
            raise DatasetError(f"{path}, line {number}: expected '{expected}', got {line.strip()!r}{reason}") from None
        rows.append((number, values))
    return rows


def _visibility(text: str) -> int:
    if text not in ("0", "1"):
        raise ValueError(text)
    return int(text)


class _FieldError(ValueError):
    """A column value that parses but is out of range; its message says why, for the row's error."""


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _FieldError(f"{text} is not a finite number")
    return value


def _non_negative(text: str) -> float:
    value = _finite(text)
    if value < 0:
        raise _FieldError(f"{text} is negative")
    return value


def _positive(text: str) -> float:
    value = _finite(text)
    if value <= 0:
        raise _FieldError(f"a box side of {text} is empty")
    return value


def _relative_path(text: str) -> str:
    """A path under ``images/``: relative, with no ``..`` part (symlinks are checked when the file is opened)."""
    path = PurePosixPath(text.replace("\\", "/"))
    if "\x00" in text or path.is_absolute() or PureWindowsPath(text).drive or ".." in path.parts:
        raise _FieldError(f"{text} is not a path inside images/")
    return text


def _unique_ids(path: Path, rows: list[tuple[int, tuple]]) -> dict[int, int]:
    """Map each id in the first column to its row index; refuse duplicates."""
    index: dict[int, int] = {}
    for position, (number, values) in enumerate(rows):
        if values[0] in index:
            raise DatasetError(f"{path}, line {number}: id {values[0]} appears twice")
        index[values[0]] = position
    return index


def _lookup(path: Path, number: int, table: dict[int, int], key: int, what: str) -> int:
    try:
        return table[key]
    except KeyError:
        raise DatasetError(f"{path}, line {number}: {what} {key} is not defined") from None


def _per_image(
    path: Path, rows: list[tuple[int, tuple]], image_index: dict[int, int], count: int, *, required: bool
) -> tuple[list[tuple], np.ndarray]:
    """Order one-row-per-image annotations by image; return values and a ``(N,)`` present mask."""
    values: list[tuple] = [()] * count
    present = np.zeros(count, bool)
    for number, row in rows:
        position = _lookup(path, number, image_index, row[0], "image id")
        if present[position]:
            raise DatasetError(f"{path}, line {number}: image id {row[0]} appears twice")
        values[position], present[position] = row[1:], True
    if required and not present.all():
        missing = [image_id for image_id, position in image_index.items() if not present[position]]
        raise DatasetError(f"{path} has no row for image id {missing[0]} ({len(missing)} images lack one)")
    return values, present


@dataclass(frozen=True)
class _Annotations:
    """Everything parsed from the text files, for every image in ``images.txt`` order."""

    root: Path
    image_ids: np.ndarray  # (N,) int64
    paths: tuple[str, ...]  # (N,) relative to images/
    class_ids: np.ndarray  # (C,) int64, ascending
    classes: tuple[str, ...]  # (C,)
    labels: np.ndarray  # (N,) int64 index into classes
    is_train: np.ndarray  # (N,) bool
    bboxes: np.ndarray | None  # (N, 4) float32 x, y, w, h
    part_names: tuple[str, ...]  # (P,)
    keypoints: np.ndarray  # (N, P, 2) float32
    visible: np.ndarray  # (N, P) bool

    @classmethod
    def read(cls, root: Path) -> _Annotations:
        images_path = root / "images.txt"
        image_rows = _read_rows(images_path, (("image_id", int), ("path", _relative_path)), rest=True)
        image_index = _unique_ids(images_path, image_rows)
        count = len(image_rows)
        if count == 0:
            raise DatasetError(f"{images_path} lists no images")

        classes_path = root / "classes.txt"
        class_rows = sorted(_read_rows(classes_path, (("class_id", int), ("name", str)), rest=True), key=lambda r: r[1][0])
        class_index = _unique_ids(classes_path, class_rows)

        labels_path = root / "image_class_labels.txt"
        label_rows = _read_rows(labels_path, (("image_id", int), ("class_id", int)))
        for number, (_, class_id) in label_rows:
            _lookup(labels_path, number, class_index, class_id, "class id")
        labels, _ = _per_image(labels_path, label_rows, image_index, count, required=True)

        split_path = root / "train_test_split.txt"
        split_rows = _read_rows(split_path, (("image_id", int), ("is_training_image", _visibility)))
        splits, _ = _per_image(split_path, split_rows, image_index, count, required=True)

        bboxes = None
        boxes_path = root / "bounding_boxes.txt"
        if boxes_path.exists():
            box_fields = (("image_id", int), ("x", _finite), ("y", _finite), ("width", _positive), ("height", _positive))
            boxes, _ = _per_image(boxes_path, _read_rows(boxes_path, box_fields), image_index, count, required=True)
            bboxes = np.array(boxes, dtype=np.float32).reshape(count, 4)

        part_names, keypoints, visible = cls._read_parts(root, image_index, count)
        return cls(
            root=root,
            image_ids=np.array([r[1][0] for r in image_rows], dtype=np.int64),
            paths=tuple(r[1][1] for r in image_rows),
            class_ids=np.array([r[1][0] for r in class_rows], dtype=np.int64),
            classes=tuple(r[1][1] for r in class_rows),
            labels=np.array([class_index[value[0]] for value in labels], dtype=np.int64),
            is_train=np.array([s[0] for s in splits], dtype=bool),
            bboxes=bboxes,
            part_names=part_names,
            keypoints=keypoints,
            visible=visible,
        )

    @staticmethod
    def _read_parts(root: Path, image_index: dict[int, int], count: int) -> tuple[tuple[str, ...], np.ndarray, np.ndarray]:
        parts_path = root / "parts" / "parts.txt"
        if not parts_path.exists():
            return (), np.zeros((count, 0, 2), np.float32), np.zeros((count, 0), bool)
        part_rows = sorted(_read_rows(parts_path, (("part_id", int), ("name", str)), rest=True), key=lambda r: r[1][0])
        part_index = _unique_ids(parts_path, part_rows)
        keypoints = np.zeros((count, len(part_rows), 2), np.float32)
        visible = np.zeros((count, len(part_rows)), bool)
        locs_path = root / "parts" / "part_locs.txt"
        if not locs_path.exists():
            raise DatasetError(
                f"CUB layout at {root} has parts/parts.txt but no parts/part_locs.txt, so no image would have parts; "
                "add part_locs.txt, or remove parts.txt for a dataset without keypoints"
            )
        fields = (("image_id", int), ("part_id", int), ("x", _non_negative), ("y", _non_negative), ("visible", _visibility))
        for number, (image_id, part_id, x, y, seen) in _read_rows(locs_path, fields):
            image = _lookup(locs_path, number, image_index, image_id, "image id")
            part = _lookup(locs_path, number, part_index, part_id, "part id")
            keypoints[image, part] = (x, y)
            visible[image, part] = bool(seen)
        return tuple(r[1][1] for r in part_rows), keypoints, visible


class CUBDataset(Dataset):
    """CUB-200-2011 (or any dataset in its layout) as a :class:`~xaikit.Dataset` of samples.

    Annotation files are parsed once and shared by :meth:`split` views; images and masks are
    decoded on access. Keypoint rows follow ``parts/parts.txt`` in ascending part-id order.

    Args:
        root: the directory holding ``images.txt`` and ``images/``.
        split: ``"all"``, ``"train"`` or ``"test"`` (from ``train_test_split.txt``).
        crop_to_bbox: crop every sample to its bounding box (corners truncated to int, end
            ``x + w``) with keypoints and masks mapped into the crop, as Huang et al. evaluate.
        check_files: verify up front that every listed image file exists.

    Raises:
        DatasetError: for a missing file, a malformed row (with file name and line number), an id
            that is not defined, or a missing image (with its path).
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        split: str = "all",
        crop_to_bbox: bool = False,
        check_files: bool = True,
    ) -> None:
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise DatasetError(f"CUB root {self.root} is not a directory")
        self._annotations = _Annotations.read(self.root)
        if crop_to_bbox and self._annotations.bboxes is None:
            raise DatasetError(f"cannot crop to bounding boxes: {self.root / 'bounding_boxes.txt'} is missing")
        self.crop_to_bbox = crop_to_bbox
        self._indices = self._select(split)
        self._split = split
        if check_files:
            self._check_files()

    def _check_files(self) -> None:
        for image_id, relative in zip(self._annotations.image_ids, self._annotations.paths, strict=True):
            path = self._inside("images", relative)
            if not path.is_file():
                raise DatasetError(f"image file {path} (image id {image_id}) does not exist")

    def _inside(self, folder: str, relative: str | Path) -> Path:
        """``root/folder/relative``, refused when it resolves (through ``..`` or a symlink) to a file outside the root.

        Raises:
            DatasetError: naming the path and where it leads.
        """
        path = self.root / folder / relative
        try:
            resolved = path.resolve()
        except (OSError, RuntimeError, ValueError) as error:  # a loop of symlinks, a name the file system refuses
            raise DatasetError(f"{path} cannot be resolved: {error}") from None
        if not resolved.is_relative_to(self.root.resolve()):
            raise DatasetError(
                f"{path} leads to {resolved}, outside the dataset root {self.root}; xaikit reads only files inside the root "
                "(link the whole root, not a folder inside it, to keep a dataset on another disk)"
            )
        return path

    def _select(self, split: str) -> np.ndarray:
        if split not in SPLITS:
            raise DatasetError(f"unknown split '{split}'; use one of {', '.join(SPLITS)}")
        if split == "all":
            return np.arange(len(self._annotations.image_ids))
        return np.flatnonzero(self._annotations.is_train == (split == "train"))

    @property
    def classes(self) -> tuple[str, ...]:  # type: ignore[override]
        """Class names in ascending class-id order; ``Sample.label`` indexes this tuple."""
        return self._annotations.classes

    @property
    def class_ids(self) -> np.ndarray:
        """Official class id of each class, ``(C,)`` ``int64``."""
        return self._annotations.class_ids

    @property
    def part_names(self) -> tuple[str, ...]:  # type: ignore[override]
        """Keypoint part names in ascending part-id order."""
        return self._annotations.part_names

    @property
    def split_name(self) -> str:
        """Which split this view holds: ``"all"``, ``"train"`` or ``"test"``."""
        return self._split

    @property
    def labels(self) -> np.ndarray:
        """Class index of every sample in this view, ``(N,)`` ``int64``."""
        return self._annotations.labels[self._indices]

    @property
    def image_ids(self) -> np.ndarray:
        """Official image id of every sample in this view, ``(N,)`` ``int64``."""
        return self._annotations.image_ids[self._indices]

    def split(self, name: str) -> CUBDataset:
        """A view of the ``"train"``, ``"test"`` or ``"all"`` images of the whole dataset."""
        view = copy.copy(self)
        view._indices = self._select(name)
        view._split = name
        return view

    def __len__(self) -> int:
        return len(self._indices)

    def __repr__(self) -> str:
        return f"CUBDataset(root={str(self.root)!r}, split={self._split!r}, images={len(self)}, classes={len(self.classes)})"

    def __getitem__(self, index: int) -> Sample:
        if not -len(self) <= index < len(self):
            raise IndexError(f"sample {index} is out of range for {len(self)} samples")
        row = int(self._indices[index])
        notes = self._annotations
        relative = notes.paths[row]
        path = self._inside("images", relative)
        image = decode_image(path, "RGB")
        mask_name = Path(relative).with_suffix(".png")
        part_mask = self._optional_mask(self._inside("part_masks", mask_name), image.shape[:2])
        foreground = self._optional_mask(self._inside("segmentations", mask_name), image.shape[:2])
        if part_mask is not None and part_mask.max(initial=0) > len(notes.part_names):
            raise DatasetError(f"part mask {self.root / 'part_masks' / mask_name} holds ids beyond the {len(notes.part_names)} parts")
        sample = Sample(
            image=image,
            label=int(notes.labels[row]),
            image_id=int(notes.image_ids[row]),
            keypoints=notes.keypoints[row].copy(),
            visible=notes.visible[row].copy(),
            part_names=notes.part_names,
            bbox=None if notes.bboxes is None else notes.bboxes[row].copy(),
            part_mask=part_mask,
            foreground=None if foreground is None else foreground > 127,
            path=path,
            is_train=bool(notes.is_train[row]),
        )
        if not self.crop_to_bbox:
            return sample
        try:
            return sample.crop_to_bbox()
        except ValueError:
            x, y, w, h = (float(v) for v in sample.bbox)
            raise DatasetError(
                f"image {path}: its bounding box (x {x:g}, y {y:g}, width {w:g}, height {h:g}) does not overlap "
                f"the {image.shape[1]}x{image.shape[0]} image"
            ) from None

    @staticmethod
    def _optional_mask(path: Path, size: tuple[int, int]) -> np.ndarray | None:
        if not path.exists():
            return None
        mask = decode_image(path, "L")
        if mask.shape != size:
            raise DatasetError(f"mask {path} is {mask.shape[1]}x{mask.shape[0]} but its image is {size[1]}x{size[0]}")
        return mask


def decode_image(path: str | os.PathLike[str], mode: str = "RGB", *, exif_transpose: bool = False) -> np.ndarray:
    """Decode an image file to a ``uint8`` array in PIL ``mode`` (``"RGB"``: (H, W, 3), ``"L"``: (H, W)).

    16-bit greyscale images (PIL modes ``I;16*`` and ``I``) are scaled to 8 bits (``round(v / 257)``)
    for ``"RGB"``; for ``"L"`` (masks of ids) their values are kept and must fit in 8 bits. Palette,
    alpha, CMYK and 1-bit images are converted by PIL; floating-point images are refused. Images over
    PIL's decompression-bomb limit (:data:`PIL.Image.MAX_IMAGE_PIXELS`) are refused before decoding.

    Args:
        path: the file.
        mode: ``"RGB"`` or ``"L"``.
        exif_transpose: apply the EXIF orientation tag (for a user's photo). Datasets do not: CUB's
            boxes and keypoints were annotated on the stored pixels, as the reference code reads them.

    Raises:
        DatasetError: the file is missing, too large, of an unsupported kind, or cannot be decoded
            (one sentence naming the path).
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                if exif_transpose:
                    image = ImageOps.exif_transpose(image)
                return _to_uint8(image, mode, path)
    except FileNotFoundError:
        raise DatasetError(f"image file {path} does not exist") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise DatasetError(f"image {path} is too large to decode safely ({error})") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, struct.error, EOFError) as error:
        raise DatasetError(f"cannot decode image {path}: {error}") from None


def _to_uint8(image: Image.Image, mode: str, path: str | os.PathLike[str]) -> np.ndarray:
    """``image`` as ``uint8`` in ``mode``, with 16-bit greyscale scaled (RGB) or checked (L) instead of clipped."""
    if image.mode == "F":
        raise DatasetError(f"image {path} holds floating-point pixels (PIL mode F), which xaikit does not read; save it as 8-bit")
    if image.mode.startswith("I"):  # 16- or 32-bit integer greyscale
        values = np.asarray(image, dtype=np.int64)
        if values.min(initial=0) < 0 or values.max(initial=0) > 65535:
            raise DatasetError(f"image {path} holds values outside 0..65535 (PIL mode {image.mode}), which xaikit does not read")
        if mode == "L":
            if values.max(initial=0) > 255:
                raise DatasetError(f"mask {path} holds values above 255")
            return values.astype(np.uint8)
        grey = np.rint(values / 257.0).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2) if mode == "RGB" else grey
    return np.array(image.convert(mode), dtype=np.uint8)
