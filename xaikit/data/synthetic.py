"""The ``synthetic-birds`` dataset: procedural bird images whose classes, parts and masks are known exactly.

Every image is a bird drawn from part polygons (body, head, beak, eye, wings, tail, legs) on a cluttered
background. Species differ only in part-level attributes (crown, throat and wing colours, beak, tail and wing
pattern) while back and belly colours come from a small palette shared by all species, so a global colour
histogram cannot tell species apart. The dataset is written in the official CUB-200-2011 layout plus
per-pixel part masks (``part_masks/``) and foreground masks (``segmentations/``); see
``docs/synthetic-birds.md``.

Part ids follow :data:`xaikit.data.parts.CUB_PART_NAMES` (1-based, 0 = background). Left and right are the
bird's own sides: a bird facing right shows its left side.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import pathlib
import secrets
import shutil
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image, ImageDraw

from xaikit.data.parts import CUB_PART_NAMES
from xaikit.errors import DatasetError

GENERATOR_VERSION: int = 1
"""Version of the generator's output; bumped whenever the bytes written for a config change."""

_GENERATOR_NAME = "synthetic-birds"
_MIN_SIZE = 64
_MAX_CLASSES = 999  # class directories are numbered with three digits
_MAX_PER_CLASS = 9999  # image files are numbered with four digits
_MIN_PART_PIXELS = 4
_OCCLUSION_PROBABILITY = 0.3
_MIN_KEPT_FOREGROUND = 0.4  # an occluder may hide at most 60 % of the bird
_JPEG_OPTIONS = {"quality": 90, "subsampling": "4:2:0", "optimize": False}
_PNG_OPTIONS = {"compress_level": 6, "optimize": False}

_RGB = tuple[int, int, int]

_COLORS: dict[str, _RGB] = {
    "Black": (28, 28, 32),
    "Blue": (40, 95, 205),
    "Brown": (120, 86, 56),
    "Buff": (226, 202, 152),
    "Chestnut": (135, 60, 30),
    "Cream": (236, 226, 182),
    "Green": (45, 150, 65),
    "Grey": (128, 130, 136),
    "Olive": (108, 114, 60),
    "Orange": (240, 135, 25),
    "Pale": (192, 196, 202),
    "Pink": (235, 125, 170),
    "Purple": (125, 55, 165),
    "Red": (205, 35, 40),
    "Slate": (72, 82, 98),
    "Teal": (25, 150, 150),
    "White": (242, 242, 236),
    "Yellow": (245, 215, 45),
}
_CROWN_COLORS = ("Red", "Orange", "Yellow", "Blue", "Black", "White", "Green", "Purple")
_THROAT_COLORS = ("Red", "Orange", "Yellow", "White", "Black", "Blue", "Pink", "Chestnut")
_WING_COLORS = ("Black", "Blue", "Green", "Red", "Teal", "Chestnut")
_BEAKS = ("short_cone", "long_thin", "hooked")
_TAILS = ("fan", "forked", "pointed")
_WING_PATTERNS = ("plain", "bars", "spots")
_BODY_PALETTES: dict[str, tuple[str, str]] = {
    "brown_buff": ("Brown", "Buff"),
    "grey_white": ("Grey", "White"),
    "olive_cream": ("Olive", "Cream"),
    "slate_pale": ("Slate", "Pale"),
}
_BEAK_NOUNS = {"short_cone": "Conebill", "long_thin": "Needlebill", "hooked": "Hookbill"}
_TAIL_WORDS = {"fan": "Fan_tailed", "forked": "Fork_tailed", "pointed": "Spike_tailed"}
_PATTERN_WORDS = {"plain": "winged", "bars": "barred", "spots": "spotted"}
_LEG_COLOR: _RGB = (150, 112, 92)
_BEAK_COLOR: _RGB = (58, 52, 46)
_EYE_COLOR: _RGB = (12, 12, 14)
_SCENERY_COLORS: tuple[_RGB, ...] = (
    (96, 140, 70),
    (60, 100, 45),
    (150, 185, 215),
    (200, 215, 225),
    (110, 85, 60),
    (170, 150, 110),
    (85, 90, 95),
)
_BRANCH_COLOR: _RGB = (95, 70, 45)
_LEAF_COLOR: _RGB = (60, 125, 50)

# The crown colour is a checksum of the other five part attributes (see _species_codes), so the number of
# distinct species is the product of the other attributes' value counts.
_MAX_SPECIES = len(_THROAT_COLORS) * len(_WING_COLORS) * len(_BEAKS) * len(_TAILS) * len(_WING_PATTERNS)

# Canonical bird frame: facing +x, y pointing down (as in images), body length 1.
_BODY_CENTER = (0.0, 0.0)
_BODY_RADII = (0.5, 0.3)
_HEAD_CENTER = (0.40, -0.28)
_HEAD_RADIUS = 0.19
_NECK_PIVOT = (0.30, -0.14)
_TAIL_ROOT = (-0.42, -0.04)
_SHOULDER = (0.16, -0.08)
_FAR_SHOULDER = (0.21, -0.13)
_NEAR_HIP = (0.06, 0.22)
_FAR_HIP = (-0.06, 0.20)
_HEAD_SECTORS = (("forehead", -15.0, 65.0), ("crown", 65.0, 140.0), ("nape", 140.0, 215.0), ("throat", 215.0, 345.0))
_BEAK_POLYGONS: dict[str, tuple[tuple[float, float], ...]] = {  # local frame: x forward, y down
    "short_cone": ((-0.04, -0.075), (0.17, 0.0), (-0.04, 0.075)),
    "long_thin": ((-0.04, -0.035), (0.45, 0.004), (0.45, 0.014), (-0.04, 0.035)),
    "hooked": (
        (-0.04, -0.07),
        (0.10, -0.075),
        (0.18, -0.05),
        (0.23, -0.005),
        (0.235, 0.05),
        (0.205, 0.03),
        (0.16, 0.02),
        (-0.04, 0.06),
    ),
}
_TAIL_POLYGONS: dict[str, tuple[tuple[float, float], ...]] = {  # local frame: u backward, v down
    "fan": ((-0.05, -0.06), (0.36, -0.19), (0.41, -0.10), (0.43, 0.0), (0.41, 0.10), (0.36, 0.19), (-0.05, 0.06)),
    "forked": ((-0.05, -0.065), (0.47, -0.15), (0.30, 0.0), (0.47, 0.15), (-0.05, 0.065)),
    "pointed": ((-0.05, -0.07), (0.25, -0.05), (0.56, 0.0), (0.25, 0.05), (-0.05, 0.07)),
}
_LEG_POLYGON = (
    (-0.018, 0.0),
    (0.018, 0.0),
    (0.018, 0.30),
    (0.11, 0.31),
    (0.11, 0.335),
    (-0.06, 0.335),
    (-0.06, 0.31),
    (-0.018, 0.30),
)


def _check_int(name: str, value: object, low: int, high: int | None) -> None:
    """Raise :class:`DatasetError` unless ``value`` is an int in ``[low, high]`` (``high`` None: unbounded)."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise DatasetError(f"synthetic-birds {name} must be an integer, got {value!r}")
    if value < low or (high is not None and value > high):
        bound = f"at least {low}" if high is None else f"between {low} and {high}"
        raise DatasetError(f"synthetic-birds {name} must be {bound}, got {value}")


@dataclass(frozen=True)
class SynthConfig:
    """Parameters of a ``synthetic-birds`` dataset.

    Attributes:
        classes: Number of species, 1 to 999.
        per_class: Images per species, 2 to 9999; the first ``ceil(per_class / 2)`` are the train split.
        size: Width and height of every image in pixels, at least 64.
        seed: Non-negative seed; the same config always gives byte-identical files.

    Raises:
        DatasetError: If a field is not an integer in its range.
    """

    classes: int = 10
    per_class: int = 40
    size: int = 224
    seed: int = 0

    def __post_init__(self) -> None:
        """Validate the fields; raise :class:`DatasetError` for the first one out of range."""
        _check_int("classes", self.classes, 1, _MAX_CLASSES)
        _check_int("per_class", self.per_class, 2, _MAX_PER_CLASS)
        _check_int("size", self.size, _MIN_SIZE, None)
        _check_int("seed", self.seed, 0, None)


@dataclass(frozen=True)
class Species:
    """Attributes of one synthetic species (one class).

    Attributes:
        name: Class name made of ASCII letters and underscores, e.g.
            ``Red_crowned_White_throated_Blue_barred_Fork_tailed_Hookbill``.
        crown_color: Colour name of the crown (the forehead is a darker shade of it).
        throat_color: Colour name of the throat (the breast is a blend of it and the belly colour).
        wing_color: Colour name of both wings (the tail is a darker shade of it).
        beak: One of ``short_cone``, ``long_thin``, ``hooked``.
        tail: One of ``fan``, ``forked``, ``pointed``.
        wing_pattern: One of ``plain``, ``bars``, ``spots``.
        body_palette: Shared back/belly palette entry, e.g. ``brown_buff``; not a distinguishing attribute.
    """

    name: str
    crown_color: str
    throat_color: str
    wing_color: str
    beak: str
    tail: str
    wing_pattern: str
    body_palette: str


@dataclass(frozen=True)
class _Pose:
    """Within-species variation of one image; angles in degrees, scale in pixels per body length."""

    flipped: bool
    head_tilt: float
    wing_angle: float
    far_wing_lift: float
    tail_angle: float
    near_leg_angle: float
    far_leg_angle: float
    rotation: float
    scale: float


@dataclass(frozen=True)
class _Shape:
    """A polygon of ``(n, 2)`` float points painted with ``color``; ``role`` None paints the image only."""

    role: str | None
    points: np.ndarray
    color: _RGB


@dataclass(frozen=True)
class _Sample:
    """One rendered image with its ground truth.

    ``image`` is ``(size, size, 3)`` uint8 RGB, ``part_mask`` ``(size, size)`` uint8 part ids, ``keypoints``
    ``(15, 2)`` int64 pixel ``(x, y)`` per part, ``visible`` and ``present`` ``(15,)`` bool (present: the part
    had enough pixels before occlusion).
    """

    image: np.ndarray
    part_mask: np.ndarray
    keypoints: np.ndarray
    visible: np.ndarray
    present: np.ndarray
    flipped: bool
    occluded: bool


def write_synthetic_birds(
    out: str | os.PathLike[str], config: SynthConfig = SynthConfig(), *, overwrite: bool = False
) -> pathlib.Path:
    """Write the dataset to ``out`` and return its path.

    The tree is generated in a temporary sibling directory whose name starts with ``.`` and renamed to
    ``out`` once complete, so ``out`` never holds a partial dataset; the temporary directory is removed if
    anything fails.

    Args:
        out: Target directory; it may be absent or empty. Missing parents are created.
        config: Dataset parameters.
        overwrite: Replace a synthetic-birds dataset already at ``out`` (only after the new dataset is
            complete); a directory holding anything else is refused.

    Returns:
        The absolute path of the written dataset.

    Raises:
        DatasetError: If ``out`` is a file, or is a non-empty directory and ``overwrite`` is false, or
            holds files the generator does not write.
    """
    target = pathlib.Path(os.path.abspath(out))
    _check_target(target, overwrite)
    target.parent.mkdir(parents=True, exist_ok=True)
    species = _make_species(config.classes, config.seed)
    staging = _hidden_sibling(target, "tmp")
    staging.mkdir()
    try:
        _write_tree(staging, config, species)
        _install(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


# ----------------------------------------------------------------------------------------------- validation


_WRITTEN = frozenset(
    {"images", "part_masks", "segmentations", "parts", "images.txt", "classes.txt", "image_class_labels.txt",
     "train_test_split.txt", "bounding_boxes.txt", "synthetic_birds.json"}
)
"""The top-level entries :func:`write_synthetic_birds` writes: the only ones ``overwrite`` may replace."""


def _check_target(target: pathlib.Path, overwrite: bool) -> None:
    """Raise :class:`DatasetError` if ``target`` cannot receive a dataset.

    ``overwrite`` replaces only a synthetic-birds dataset (a directory with ``synthetic_birds.json``
    and nothing else at its top level than what the generator writes): xaikit never deletes files it
    did not write.
    """
    if target.exists() and not target.is_dir():
        raise DatasetError(f"output path {target} exists and is not a directory")
    if not target.is_dir() or not any(target.iterdir()):
        return
    if not overwrite:
        raise DatasetError(
            f"output directory {target} already exists and is not empty; choose another one or overwrite it (overwrite=True, or --overwrite on the command line)"
        )
    foreign = sorted(entry.name for entry in target.iterdir() if entry.name not in _WRITTEN)
    if foreign or not (target / "synthetic_birds.json").is_file():
        what = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "") if foreign else "no synthetic_birds.json"
        raise DatasetError(
            f"refusing to overwrite {target}: it is not a synthetic-birds dataset written by xaikit ({what}); "
            "--overwrite replaces only such a dataset, so choose another --out"
        )


# ------------------------------------------------------------------------------------------------- species


def _species_codes() -> np.ndarray:
    """Return ``(_MAX_SPECIES, 6)`` int64 value indices (crown, throat, wing, beak, tail, pattern).

    The crown index is the sum of the other five modulo the number of crown colours. Since no other
    attribute has more values than there are crown colours, changing any one attribute also changes the
    crown, so every two codes differ in at least two part attributes.
    """
    sizes = (len(_THROAT_COLORS), len(_WING_COLORS), len(_BEAKS), len(_TAILS), len(_WING_PATTERNS))
    rest = np.array(list(itertools.product(*(range(n) for n in sizes))), dtype=np.int64)
    crown = rest.sum(axis=1) % len(_CROWN_COLORS)
    return np.column_stack([crown, rest])


def _species_name(crown: str, throat: str, wing: str, pattern: str, tail: str, beak: str) -> str:
    """Return the class name for these attribute values, e.g. ``Red_crowned_White_throated_...``."""
    wing_words = f"{wing}_{_PATTERN_WORDS[pattern]}"
    return f"{crown}_crowned_{throat}_throated_{wing_words}_{_TAIL_WORDS[tail]}_{_BEAK_NOUNS[beak]}"


def _make_species(classes: int, seed: int) -> list[Species]:
    """Return ``classes`` distinct species drawn deterministically from ``seed``.

    Body palettes are dealt round-robin (in a seeded order) so each entry is shared by many species.

    Raises:
        DatasetError: If the attribute space has fewer than ``classes`` species.
    """
    if classes > _MAX_SPECIES:
        raise DatasetError(f"synthetic-birds can make at most {_MAX_SPECIES} distinct species, got {classes}")
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0, 0]))
    codes = _species_codes()[rng.permutation(_MAX_SPECIES)[:classes]]
    palettes = [sorted(_BODY_PALETTES)[i] for i in rng.permutation(len(_BODY_PALETTES))]
    return [_species_from_code(code, palettes[rank % len(palettes)]) for rank, code in enumerate(codes)]


def _species_from_code(code: np.ndarray, body_palette: str) -> Species:
    """Return the species for a ``(6,)`` int64 attribute code and a body palette name."""
    crown, throat, wing = _CROWN_COLORS[code[0]], _THROAT_COLORS[code[1]], _WING_COLORS[code[2]]
    beak, tail, pattern = _BEAKS[code[3]], _TAILS[code[4]], _WING_PATTERNS[code[5]]
    return Species(
        name=_species_name(crown, throat, wing, pattern, tail, beak),
        crown_color=crown,
        throat_color=throat,
        wing_color=wing,
        beak=beak,
        tail=tail,
        wing_pattern=pattern,
        body_palette=body_palette,
    )


def _part_attributes(species: Species) -> dict[str, str]:
    """Return the six part-level attributes that tell species apart."""
    return {
        "beak": species.beak,
        "crown_color": species.crown_color,
        "tail": species.tail,
        "throat_color": species.throat_color,
        "wing_color": species.wing_color,
        "wing_pattern": species.wing_pattern,
    }


# ------------------------------------------------------------------------------------------------ geometry


def _rotate(points: np.ndarray, degrees: float, pivot: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """Rotate ``(n, 2)`` points counter-clockwise as seen on screen (y down) about ``pivot``."""
    a = math.radians(degrees)
    c, s = math.cos(a), math.sin(a)
    p = np.asarray(points, dtype=np.float64) - pivot
    return np.column_stack([p[:, 0] * c + p[:, 1] * s, -p[:, 0] * s + p[:, 1] * c]) + pivot


def _ellipse(center: tuple[float, float], rx: float, ry: float, n: int = 40) -> np.ndarray:
    """Return an axis-aligned ellipse as an ``(n, 2)`` float64 polygon."""
    t = np.linspace(0.0, 2.0 * np.pi, n, endpoint=False)
    return np.column_stack([center[0] + rx * np.cos(t), center[1] + ry * np.sin(t)])


def _on_circle(center: tuple[float, float], radius: float, degrees: np.ndarray | float) -> np.ndarray:
    """Return the ``(n, 2)`` (or ``(2,)``) points at screen angles ``degrees`` (0 = +x, 90 = up) on a circle."""
    phi = np.radians(degrees)
    return np.stack([center[0] + radius * np.cos(phi), center[1] - radius * np.sin(phi)], axis=-1)


def _sector(center: tuple[float, float], radius: float, start: float, end: float) -> np.ndarray:
    """Return a circular sector between screen angles ``start`` and ``end`` in degrees."""
    return np.vstack([center, _on_circle(center, radius, np.linspace(start, end, 12))])


def _clip(polygon: np.ndarray, normal: tuple[float, float], offset: float) -> np.ndarray:
    """Clip a convex ``(n, 2)`` polygon to the half-plane ``points @ normal <= offset``."""
    d = polygon @ np.asarray(normal) - offset
    kept: list[np.ndarray] = []
    for i in range(len(polygon)):
        j = (i + 1) % len(polygon)
        if d[i] <= 0:
            kept.append(polygon[i])
        if (d[i] <= 0) != (d[j] <= 0):
            kept.append(polygon[i] + (polygon[j] - polygon[i]) * (d[i] / (d[i] - d[j])))
    return np.array(kept)


def _from_local(points: tuple[tuple[float, float], ...], origin: tuple[float, float], degrees: float) -> np.ndarray:
    """Map points given relative to ``origin`` and rotated by ``degrees`` into the canonical frame."""
    return _rotate(np.asarray(points, dtype=np.float64), degrees) + origin


# ----------------------------------------------------------------------------------------------- the bird


def _to_rgb(values: np.ndarray | tuple[float, ...]) -> _RGB:
    """Round and clip three channel values to an integer RGB triple."""
    r, g, b = (int(v) for v in np.clip(np.rint(values), 0, 255))
    return r, g, b


def _shade(color: _RGB, factor: float) -> _RGB:
    """Return ``color`` scaled by ``factor``."""
    return _to_rgb(np.multiply(color, factor))


def _mix(a: _RGB, b: _RGB, weight: float) -> _RGB:
    """Return ``(1 - weight) * a + weight * b``."""
    return _to_rgb((1.0 - weight) * np.asarray(a) + weight * np.asarray(b))


def _part_colors(species: Species, rng: np.random.Generator) -> dict[str, _RGB]:
    """Return the base colour of every drawing role, jittered slightly per image."""
    back, belly = (_COLORS[n] for n in _BODY_PALETTES[species.body_palette])
    crown, throat, wing = _COLORS[species.crown_color], _COLORS[species.throat_color], _COLORS[species.wing_color]
    colors = {
        "back": back,
        "belly": belly,
        "breast": _mix(throat, belly, 0.45),
        "crown": crown,
        "forehead": _shade(crown, 0.85),
        "nape": _mix(back, crown, 0.2),
        "throat": throat,
        "beak": _BEAK_COLOR,
        "near_eye": _EYE_COLOR,
        "near_wing": wing,
        "far_wing": _shade(wing, 0.8),
        "tail": _shade(wing, 0.75),
        "near_leg": _LEG_COLOR,
        "far_leg": _shade(_LEG_COLOR, 0.8),
    }
    jitter = rng.normal(0.0, 6.0, size=(len(colors), 3))
    return {role: _to_rgb(np.add(color, j)) for (role, color), j in zip(colors.items(), jitter)}


def _sample_pose(rng: np.random.Generator, size: int) -> _Pose:
    """Draw the within-species pose, rotation, flip and scale of one image."""
    return _Pose(
        flipped=bool(rng.random() < 0.5),
        head_tilt=float(rng.uniform(-20.0, 20.0)),
        wing_angle=float(rng.uniform(-5.0, 25.0)),
        far_wing_lift=float(rng.uniform(5.0, 25.0)),
        tail_angle=float(rng.uniform(-20.0, 20.0)),
        near_leg_angle=float(rng.uniform(-20.0, 20.0)),
        far_leg_angle=float(rng.uniform(-20.0, 20.0)),
        rotation=float(rng.uniform(-30.0, 30.0)),
        scale=float(size * rng.uniform(0.25, 0.40)),
    )


def _body_shapes(colors: dict[str, _RGB]) -> list[_Shape]:
    """Return back (top), belly (rear-lower) and breast (front-lower) of the body ellipse."""
    body = _ellipse(_BODY_CENTER, *_BODY_RADII, n=48)
    lower = _clip(body, (-0.25, -1.0), 0.06)
    return [
        _Shape("back", _clip(body, (0.25, 1.0), -0.06), colors["back"]),
        _Shape("belly", _clip(lower, (1.0, 0.0), 0.05), colors["belly"]),
        _Shape("breast", _clip(lower, (-1.0, 0.0), -0.05), colors["breast"]),
    ]


def _head_shapes(species: Species, colors: dict[str, _RGB], tilt: float) -> list[_Shape]:
    """Return head sectors, beak, eye and eye highlight, tilted by ``tilt`` degrees about the neck."""
    shapes = [_Shape(role, _sector(_HEAD_CENTER, _HEAD_RADIUS, a, b), colors[role]) for role, a, b in _HEAD_SECTORS]
    beak_root = _on_circle(_HEAD_CENTER, 0.9 * _HEAD_RADIUS, -8.0)
    shapes.append(_Shape("beak", _from_local(_BEAK_POLYGONS[species.beak], tuple(beak_root), -8.0), colors["beak"]))
    eye = _on_circle(_HEAD_CENTER, 0.5 * _HEAD_RADIUS, 30.0)
    shapes.append(_Shape("near_eye", _ellipse(tuple(eye), 0.045, 0.045, n=24), colors["near_eye"]))
    shapes.append(_Shape(None, _ellipse((eye[0] + 0.013, eye[1] - 0.013), 0.014, 0.014, n=12), (235, 235, 235)))
    return [_Shape(s.role, _rotate(s.points, tilt, _NECK_PIVOT), s.color) for s in shapes]


def _wing_shapes(
    species: Species, role: str, color: _RGB, shoulder: tuple[float, float], lift: float, rng: np.random.Generator
) -> list[_Shape]:
    """Return a wing ellipse and its pattern marks, raised by ``lift`` degrees about ``shoulder``."""
    center, rx, ry = (-0.27, 0.03), 0.34, 0.12
    shapes = [_Shape(role, _ellipse(center, rx, ry), color)]
    mark = (30, 30, 30) if sum(color) > 330 else (236, 236, 226)
    inner = _ellipse(center, 0.88 * rx, 0.85 * ry)
    if species.wing_pattern == "bars":
        for u in (-0.42, -0.27, -0.12):
            bar = _clip(_clip(inner, (1.0, 0.0), u + 0.025), (-1.0, 0.0), -(u - 0.025))
            shapes.append(_Shape(None, bar, mark))
    elif species.wing_pattern == "spots":
        for _ in range(6):
            a, r = rng.uniform(0.0, 2.0 * np.pi), 0.6 * math.sqrt(rng.random())
            spot = (center[0] + r * rx * math.cos(a), center[1] + r * ry * math.sin(a))
            shapes.append(_Shape(None, _ellipse(spot, 0.032, 0.032, n=12), mark))
    return [_Shape(s.role, _rotate(s.points, -lift) + shoulder, s.color) for s in shapes]


def _tail_shape(species: Species, color: _RGB, angle: float) -> _Shape:
    """Return the tail polygon pointing backwards (-x) from the tail root, turned by ``angle`` degrees."""
    local = np.asarray(_TAIL_POLYGONS[species.tail], dtype=np.float64) * (-1.0, 1.0)
    return _Shape("tail", _rotate(local, angle) + _TAIL_ROOT, color)


def _leg_shape(role: str, color: _RGB, hip: tuple[float, float], angle: float) -> _Shape:
    """Return a leg with forward-pointing toes hanging from ``hip``, swung by ``angle`` degrees."""
    return _Shape(role, _from_local(_LEG_POLYGON, hip, angle), color)


def _bird_shapes(species: Species, pose: _Pose, rng: np.random.Generator) -> list[_Shape]:
    """Return the bird's polygons in the canonical frame, in painter's order (back to front)."""
    colors = _part_colors(species, rng)
    far_lift = pose.wing_angle + pose.far_wing_lift
    return [
        _leg_shape("far_leg", colors["far_leg"], _FAR_HIP, pose.far_leg_angle),
        *_wing_shapes(species, "far_wing", colors["far_wing"], _FAR_SHOULDER, far_lift, rng),
        _tail_shape(species, colors["tail"], pose.tail_angle),
        *_body_shapes(colors),
        _leg_shape("near_leg", colors["near_leg"], _NEAR_HIP, pose.near_leg_angle),
        *_wing_shapes(species, "near_wing", colors["near_wing"], _SHOULDER, pose.wing_angle, rng),
        *_head_shapes(species, colors, pose.head_tilt),
    ]


def _place(shapes: list[_Shape], pose: _Pose, size: int, rng: np.random.Generator) -> list[_Shape]:
    """Flip, rotate, scale and translate canonical shapes into pixel coordinates, keeping the bird mostly in frame."""
    sign = -1.0 if pose.flipped else 1.0
    moved = [_rotate(s.points * (sign * pose.scale, pose.scale), pose.rotation) for s in shapes]
    everything = np.vstack(moved)
    low, high = everything.min(axis=0), everything.max(axis=0)
    smallest, largest, centered = -0.05 * size - low, 1.05 * size - high, (size - low - high) / 2.0
    offset = np.array([rng.uniform(a, b) if a <= b else c for a, b, c in zip(smallest, largest, centered)])
    return [_Shape(s.role, points + offset, s.color) for s, points in zip(shapes, moved)]


def _role_part_ids(flipped: bool) -> dict[str, int]:
    """Map drawing roles to CUB part ids; the near side is the bird's left unless it is flipped."""
    near, far = ("right", "left") if flipped else ("left", "right")
    names = {
        "near_eye": f"{near} eye",
        "near_wing": f"{near} wing",
        "far_wing": f"{far} wing",
        "near_leg": f"{near} leg",
        "far_leg": f"{far} leg",
    }
    roles = ("back", "belly", "breast", "crown", "forehead", "nape", "throat", "beak", "tail", *names)
    return {role: CUB_PART_NAMES.index(names.get(role, role)) + 1 for role in roles}


# ------------------------------------------------------------------------------------------------ painting


def _polygon_xy(points: np.ndarray) -> list[float]:
    """Flatten ``(n, 2)`` points into the ``[x0, y0, x1, y1, ...]`` list ImageDraw takes."""
    return points.ravel().tolist()


def _random_color(rng: np.random.Generator) -> _RGB:
    """Return a clutter colour: half the time a bird colour, otherwise scenery or anything."""
    pick = rng.random()
    if pick < 0.5:
        base = list(_COLORS.values())[rng.integers(len(_COLORS))]
    elif pick < 0.8:
        base = _SCENERY_COLORS[rng.integers(len(_SCENERY_COLORS))]
    else:
        base = _to_rgb(rng.integers(0, 256, size=3))
    return _to_rgb(np.add(base, rng.normal(0.0, 12.0, size=3)))


def _ramp(size: int, angle: float) -> np.ndarray:
    """Return a ``(size, size)`` float32 linear ramp from about -0.7 to 0.7 along direction ``angle`` (radians)."""
    steps = np.arange(size, dtype=np.float32) / size - 0.5
    return steps[None, :] * np.float32(math.cos(angle)) + steps[:, None] * np.float32(math.sin(angle))


def _backdrop(rng: np.random.Generator, size: int) -> np.ndarray:
    """Return a ``(size, size, 3)`` uint8 two-colour gradient with blotchy low-frequency texture."""
    c0, c1 = (np.asarray(_SCENERY_COLORS[i], dtype=np.float32) for i in rng.integers(len(_SCENERY_COLORS), size=2))
    t = np.clip(0.5 + _ramp(size, rng.uniform(0.0, 2.0 * np.pi)), 0.0, 1.0)[..., None]
    blotches = rng.integers(0, 256, size=(6, 6, 3), dtype=np.uint8)
    texture = np.asarray(Image.fromarray(blotches).resize((size, size), Image.Resampling.BILINEAR), np.float32)
    texture -= 127.5
    texture *= 0.25
    texture += c0 + (c1 - c0) * t
    return np.clip(texture, 0, 255).astype(np.uint8)


def _clutter_polygon(rng: np.random.Generator, size: int) -> np.ndarray:
    """Return a random clutter shape: an ellipse, a leaf-like or jagged blob, or a thin twig."""
    center = rng.uniform(-0.1, 1.1, size=2) * size
    kind = rng.integers(3)
    if kind == 2:
        length, width = rng.uniform(0.2, 0.7) * size, rng.uniform(0.006, 0.02) * size
        stick = np.array([[-length, -width], [length, -width], [length, width], [-length, width]]) / 2
        return _rotate(stick, rng.uniform(0.0, 180.0)) + center
    radius = rng.uniform(0.03, 0.18) * size
    blob = _ellipse((0.0, 0.0), radius, radius * rng.uniform(0.3, 1.0), n=24)
    if kind == 1:
        blob = blob * rng.uniform(0.7, 1.0, size=(24, 1))
    return _rotate(blob, rng.uniform(0.0, 180.0)) + center


def _background(rng: np.random.Generator, size: int) -> Image.Image:
    """Return a cluttered RGB background of ``size`` x ``size`` pixels."""
    image = Image.fromarray(_backdrop(rng, size))
    draw = ImageDraw.Draw(image)
    for _ in range(rng.integers(6, 16)):
        draw.polygon(_polygon_xy(_clutter_polygon(rng, size)), fill=_random_color(rng))
    return image


def _paint(image: Image.Image, label: Image.Image, shapes: list[_Shape], part_ids: dict[str, int]) -> None:
    """Paint shapes in order into the RGB image and, for shapes with a role, their part id into ``label``."""
    draw_rgb, draw_label = ImageDraw.Draw(image), ImageDraw.Draw(label)
    for shape in shapes:
        xy = _polygon_xy(shape.points)
        draw_rgb.polygon(xy, fill=shape.color)
        if shape.role is not None:
            draw_label.polygon(xy, fill=part_ids[shape.role])


def _occluder(rng: np.random.Generator, label: np.ndarray) -> tuple[np.ndarray, _RGB]:
    """Return a branch or leaf polygon over a random bird pixel of the ``(size, size)`` label map, and its colour."""
    size = label.shape[0]
    ys, xs = np.nonzero(label)
    pick = rng.integers(len(xs))
    center = np.array([xs[pick], ys[pick]], dtype=np.float64)
    if rng.random() < 0.5:
        half = rng.uniform(0.025, 0.05) * size
        branch = np.array([[-2.0 * size, -half], [2.0 * size, -half], [2.0 * size, half], [-2.0 * size, half]])
        return _rotate(branch, rng.uniform(0.0, 180.0)) + center, _BRANCH_COLOR
    radius = rng.uniform(0.07, 0.14) * size
    leaf = _ellipse((0.0, 0.0), radius, radius * rng.uniform(0.4, 0.7), n=32)
    return _rotate(leaf, rng.uniform(0.0, 180.0)) + center, _LEAF_COLOR


def _occlude(image: Image.Image, label: np.ndarray, rng: np.random.Generator) -> np.ndarray | None:
    """Paint an occluder over the bird and return the occluded label map, or None if it hid too much.

    Args:
        image: RGB image, painted in place only when the occluder is kept.
        label: ``(size, size)`` uint8 part ids before occlusion.
        rng: The image's generator.

    Returns:
        ``(size, size)`` uint8 part ids with occluded pixels set to 0, or None.
    """
    polygon, color = _occluder(rng, label)
    cover = Image.new("L", image.size, 0)
    ImageDraw.Draw(cover).polygon(_polygon_xy(polygon), fill=1)
    hidden = np.asarray(cover, dtype=bool)
    occluded = np.where(hidden, 0, label).astype(np.uint8)
    if np.count_nonzero(occluded) < _MIN_KEPT_FOREGROUND * np.count_nonzero(label):
        return None
    ImageDraw.Draw(image).polygon(_polygon_xy(polygon), fill=_shade(color, rng.uniform(0.8, 1.2)))
    return occluded


def _light(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Apply contrast, brightness, colour cast, a lighting gradient and luminance noise to ``(h, w, 3)`` uint8."""
    contrast, brightness = rng.uniform(0.7, 1.2), rng.uniform(-25.0, 25.0)
    cast = rng.uniform(0.92, 1.08, size=3).astype(np.float32)
    gain = (1.0 + rng.uniform(0.0, 0.4) * _ramp(rgb.shape[0], rng.uniform(0.0, 2.0 * np.pi)))[..., None] * cast
    img = rgb * np.float32(contrast)
    img += rng.standard_normal((*rgb.shape[:2], 1), dtype=np.float32) * np.float32(rng.uniform(1.5, 5.0))
    img += np.float32(128.0 * (1.0 - contrast) + brightness)
    img *= gain
    img += 0.5
    return np.clip(img, 0, 255, out=img).astype(np.uint8)


# ----------------------------------------------------------------------------------------------- keypoints


def _keypoints(label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return each part's pixel nearest its centroid and its pixel count.

    Args:
        label: ``(h, w)`` uint8 part ids (0 = background).

    Returns:
        ``(15, 2)`` int64 ``(x, y)`` keypoints (0 for absent parts) and ``(15,)`` int64 pixel counts.
    """
    ys, xs = np.nonzero(label)
    ids = label[ys, xs].astype(np.intp)
    n = len(CUB_PART_NAMES) + 1
    counts = np.bincount(ids, minlength=n)
    safe = np.maximum(counts, 1)
    cx, cy = np.bincount(ids, xs, n) / safe, np.bincount(ids, ys, n) / safe
    order = np.lexsort(((xs - cx[ids]) ** 2 + (ys - cy[ids]) ** 2, ids))
    parts, first = np.unique(ids[order], return_index=True)
    keypoints = np.zeros((n, 2), dtype=np.int64)
    keypoints[parts] = np.column_stack([xs[order][first], ys[order][first]])
    return keypoints[1:], counts[1:]


def _visibility(keypoints: np.ndarray, part_mask: np.ndarray) -> np.ndarray:
    """Return ``(15,)`` bool: a part is visible iff its keypoint pixel shows it and it has enough pixels."""
    ids = np.arange(1, len(CUB_PART_NAMES) + 1)
    counts = np.bincount(part_mask.ravel(), minlength=len(ids) + 1)[1:]
    shown: np.ndarray = part_mask[keypoints[:, 1], keypoints[:, 0]] == ids
    return shown & (counts >= _MIN_PART_PIXELS)


# --------------------------------------------------------------------------------------------------- render


def _render_sample(species: Species, config: SynthConfig, class_index: int, image_index: int) -> _Sample:
    """Render image ``image_index`` (1-based) of class ``class_index`` (1-based) with its ground truth."""
    rng = np.random.default_rng(np.random.SeedSequence([config.seed, class_index, image_index]))
    pose = _sample_pose(rng, config.size)
    shapes = _place(_bird_shapes(species, pose, rng), pose, config.size, rng)
    image = _background(rng, config.size)
    label = Image.new("L", image.size, 0)
    _paint(image, label, shapes, _role_part_ids(pose.flipped))
    clean = np.asarray(label, dtype=np.uint8)
    keypoints, counts = _keypoints(clean)
    occluded = _occlude(image, clean, rng) if rng.random() < _OCCLUSION_PROBABILITY else None
    part_mask = clean if occluded is None else occluded
    return _Sample(
        image=_light(np.asarray(image), rng),
        part_mask=part_mask,
        keypoints=keypoints,
        visible=_visibility(keypoints, part_mask),
        present=counts >= _MIN_PART_PIXELS,
        flipped=pose.flipped,
        occluded=occluded is not None,
    )


# ---------------------------------------------------------------------------------------------------- disk


def _hidden_sibling(target: pathlib.Path, tag: str) -> pathlib.Path:
    """Return an unused hidden path ``.<name>.<tag>-<pid>-<random>`` next to ``target``."""
    return target.parent / f".{target.name}.{tag}-{os.getpid()}-{secrets.token_hex(4)}"


def _install(staging: pathlib.Path, target: pathlib.Path) -> None:
    """Move the complete ``staging`` tree to ``target``, replacing what is there only at the last moment."""
    if not target.exists():
        os.replace(staging, target)
        return
    previous = _hidden_sibling(target, "old")
    os.replace(target, previous)
    try:
        os.replace(staging, target)
    except BaseException:
        os.replace(previous, target)
        raise
    shutil.rmtree(previous)


def _write_jpeg(path: pathlib.Path, rgb: np.ndarray) -> None:
    """Write a ``(h, w, 3)`` uint8 array as an RGB JPEG with the fixed encoder settings."""
    Image.fromarray(rgb).save(path, "JPEG", **_JPEG_OPTIONS)


def _write_png(path: pathlib.Path, gray: np.ndarray) -> None:
    """Write a ``(h, w)`` uint8 array as an 8-bit ``L`` PNG with the fixed encoder settings."""
    Image.fromarray(gray).save(path, "PNG", **_PNG_OPTIONS)


def _write_lines(path: pathlib.Path, lines: list[str]) -> None:
    """Write one record per line with ``\\n`` endings and a trailing newline."""
    path.write_text("".join(f"{line}\n" for line in lines), encoding="ascii", newline="\n")


def _tight_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """Return ``(x, y, width, height)`` of the non-zero pixels of a ``(h, w)`` mask."""
    cols, rows = np.flatnonzero(mask.any(axis=0)), np.flatnonzero(mask.any(axis=1))
    return int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)


def _images(config: SynthConfig, species: list[Species]) -> Iterator[tuple[int, int, str, _Sample]]:
    """Yield ``(class_id, image_index, relative_stem, sample)`` for every image in image-id order."""
    for class_id, kind in enumerate(species, start=1):
        for index in range(1, config.per_class + 1):
            stem = f"{class_id:03d}.{kind.name}/{kind.name}_{index:04d}"
            yield class_id, index, stem, _render_sample(kind, config, class_id, index)


def _part_loc_lines(image_id: int, sample: _Sample) -> list[str]:
    """Return the 15 ``part_locs.txt`` records of one image; invisible parts are ``0.0 0.0 0``."""
    lines = []
    for part_id, ((x, y), visible) in enumerate(zip(sample.keypoints, sample.visible), start=1):
        coords = f"{float(x):.1f} {float(y):.1f} 1" if visible else "0.0 0.0 0"
        lines.append(f"{image_id} {part_id} {coords}")
    return lines


def _metadata(config: SynthConfig, species: list[Species]) -> dict[str, object]:
    """Return the content of ``synthetic_birds.json``."""
    classes = [
        {
            "id": class_id,
            "name": kind.name,
            "part_attributes": _part_attributes(kind),
            "body_palette": kind.body_palette,
            "back_color": _BODY_PALETTES[kind.body_palette][0],
            "belly_color": _BODY_PALETTES[kind.body_palette][1],
        }
        for class_id, kind in enumerate(species, start=1)
    ]
    return {
        "generator": _GENERATOR_NAME,
        "generator_version": GENERATOR_VERSION,
        "config": asdict(config),
        "classes": classes,
    }


def _write_tree(root: pathlib.Path, config: SynthConfig, species: list[Species]) -> None:
    """Write every file of the dataset under ``root``."""
    for kind_id, kind in enumerate(species, start=1):
        for folder in ("images", "part_masks", "segmentations"):
            (root / folder / f"{kind_id:03d}.{kind.name}").mkdir(parents=True)
    (root / "parts").mkdir()
    records: dict[str, list[str]] = {k: [] for k in ("images", "labels", "split", "boxes", "part_locs")}
    train_count = math.ceil(config.per_class / 2)
    for image_id, (class_id, index, stem, sample) in enumerate(_images(config, species), start=1):
        foreground = np.where(sample.part_mask > 0, 255, 0).astype(np.uint8)
        _write_jpeg(root / "images" / f"{stem}.jpg", sample.image)
        _write_png(root / "part_masks" / f"{stem}.png", sample.part_mask)
        _write_png(root / "segmentations" / f"{stem}.png", foreground)
        records["images"].append(f"{image_id} {stem}.jpg")
        records["labels"].append(f"{image_id} {class_id}")
        records["split"].append(f"{image_id} {1 if index <= train_count else 0}")
        records["boxes"].append(f"{image_id} " + " ".join(f"{v:.1f}" for v in _tight_box(foreground)))
        records["part_locs"].extend(_part_loc_lines(image_id, sample))
    _write_lines(root / "images.txt", records["images"])
    _write_lines(root / "classes.txt", [f"{i} {i:03d}.{s.name}" for i, s in enumerate(species, start=1)])
    _write_lines(root / "image_class_labels.txt", records["labels"])
    _write_lines(root / "train_test_split.txt", records["split"])
    _write_lines(root / "bounding_boxes.txt", records["boxes"])
    _write_lines(root / "parts" / "parts.txt", [f"{i} {n}" for i, n in enumerate(CUB_PART_NAMES, start=1)])
    _write_lines(root / "parts" / "part_locs.txt", records["part_locs"])
    text = json.dumps(_metadata(config, species), sort_keys=True, indent=2) + "\n"
    (root / "synthetic_birds.json").write_text(text, encoding="ascii", newline="\n")
