"""Tests of the ``synthetic-birds`` generator: on-disk format, ground-truth invariants, determinism, errors."""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import pathlib
import re

import numpy as np
import pytest
from PIL import Image

from xaikit.data import synthetic
from xaikit.data.parts import CUB_PART_NAMES
from xaikit.data.synthetic import GENERATOR_VERSION, SynthConfig, write_synthetic_birds
from xaikit.errors import DatasetError

CONFIG = SynthConfig(classes=6, per_class=7, size=96, seed=3)
PART_IDS = {name: i for i, name in enumerate(CUB_PART_NAMES, start=1)}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """Write the small dataset that the read-only tests share."""
    return write_synthetic_birds(tmp_path_factory.mktemp("synth") / "birds", CONFIG)


def read_rows(path: pathlib.Path) -> list[list[str]]:
    """Return the space-separated fields of each line, checking the line format on the way."""
    text = path.read_text(encoding="ascii")
    assert text.endswith("\n") and "\r" not in text and "\n\n" not in text
    rows = [line.split(" ") for line in text[:-1].split("\n")]
    assert all(all(fields) for fields in rows), "double or edge spaces"
    return rows


def tree_digest(root: pathlib.Path) -> dict[str, str]:
    """Return the SHA-256 of every file under ``root`` by relative path."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def part_locs(root: pathlib.Path) -> dict[int, list[tuple[float, float, int]]]:
    """Return the 15 ``(x, y, visible)`` records of each image id."""
    out: dict[int, list[tuple[float, float, int]]] = {}
    for image_id, part_id, x, y, visible in read_rows(root / "parts" / "part_locs.txt"):
        records = out.setdefault(int(image_id), [])
        assert int(part_id) == len(records) + 1
        records.append((float(x), float(y), int(visible)))
    return out


def image_paths(root: pathlib.Path) -> dict[int, str]:
    """Return the relative image path of each image id."""
    return {int(i): rel for i, rel in read_rows(root / "images.txt")}


def load_mask(root: pathlib.Path, folder: str, rel: str) -> np.ndarray:
    """Return a ``(h, w)`` uint8 mask written for the image at ``rel``."""
    with Image.open(root / folder / rel.replace(".jpg", ".png")) as mask:
        assert mask.mode == "L"
        return np.asarray(mask)


# ------------------------------------------------------------------------------------------- file format


def test_text_files_follow_the_cub_layout(dataset: pathlib.Path) -> None:
    n = CONFIG.classes * CONFIG.per_class
    classes = read_rows(dataset / "classes.txt")
    assert [int(c[0]) for c in classes] == list(range(1, CONFIG.classes + 1))
    for class_id, folder in classes:
        match = re.fullmatch(r"(\d{3})\.([A-Za-z_]+)", folder)
        assert match and int(match[1]) == int(class_id)
    names = [folder.split(".", 1)[1] for _, folder in classes]
    assert len(set(names)) == len(names)

    images = read_rows(dataset / "images.txt")
    labels = read_rows(dataset / "image_class_labels.txt")
    assert [int(r[0]) for r in images] == [int(r[0]) for r in labels] == list(range(1, n + 1))
    for (image_id, rel), (_, class_id) in zip(images, labels):
        class_index, within = divmod(int(image_id) - 1, CONFIG.per_class)
        name = names[class_index]
        assert int(class_id) == class_index + 1
        assert rel == f"{class_index + 1:03d}.{name}/{name}_{within + 1:04d}.jpg"

    split = read_rows(dataset / "train_test_split.txt")
    assert [int(r[0]) for r in split] == list(range(1, n + 1))
    flags = np.array([int(r[1]) for r in split]).reshape(CONFIG.classes, CONFIG.per_class)
    train = math.ceil(CONFIG.per_class / 2)
    assert (flags[:, :train] == 1).all() and (flags[:, train:] == 0).all()

    boxes = read_rows(dataset / "bounding_boxes.txt")
    assert [int(r[0]) for r in boxes] == list(range(1, n + 1))
    assert all(re.fullmatch(r"\d+\.\d", v) for r in boxes for v in r[1:])

    assert read_rows(dataset / "parts" / "parts.txt") == [
        [str(i), *name.split(" ")] for i, name in enumerate(CUB_PART_NAMES, start=1)
    ]
    locs = read_rows(dataset / "parts" / "part_locs.txt")
    assert len(locs) == 15 * n
    assert [(int(r[0]), int(r[1])) for r in locs] == [(i, p) for i in range(1, n + 1) for p in range(1, 16)]
    assert all(re.fullmatch(r"\d+\.\d", r[2]) and re.fullmatch(r"\d+\.\d", r[3]) and r[4] in "01" for r in locs)


def test_invisible_parts_are_written_as_official_cub(dataset: pathlib.Path) -> None:
    lines = (dataset / "parts" / "part_locs.txt").read_text().splitlines()
    hidden = [line for line in lines if line.endswith(" 0")]
    assert hidden, "expected some invisible parts"
    assert all(line.split(" ", 2)[2] == "0.0 0.0 0" for line in hidden)


def test_images_and_masks_have_the_right_size_and_mode(dataset: pathlib.Path) -> None:
    for rel in image_paths(dataset).values():
        with Image.open(dataset / "images" / rel) as image:
            assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (CONFIG.size, CONFIG.size))
        part_mask = load_mask(dataset, "part_masks", rel)
        foreground = load_mask(dataset, "segmentations", rel)
        assert part_mask.shape == foreground.shape == (CONFIG.size, CONFIG.size)
        assert part_mask.max() <= 15
        assert set(np.unique(foreground)) <= {0, 255}
        np.testing.assert_array_equal(foreground == 255, part_mask > 0)


def test_metadata_records_version_config_and_attributes(dataset: pathlib.Path) -> None:
    text = (dataset / "synthetic_birds.json").read_text()
    meta = json.loads(text)
    assert text == json.dumps(meta, sort_keys=True, indent=2) + "\n"
    assert meta["generator"] == "synthetic-birds" and meta["generator_version"] == GENERATOR_VERSION
    assert meta["config"] == {"classes": 6, "per_class": 7, "seed": 3, "size": 96}
    folders = [r[1].split(".", 1)[1] for r in read_rows(dataset / "classes.txt")]
    assert [c["name"] for c in meta["classes"]] == folders
    assert [c["id"] for c in meta["classes"]] == list(range(1, CONFIG.classes + 1))
    for entry in meta["classes"]:
        attrs = entry["part_attributes"]
        assert set(attrs) == {"beak", "crown_color", "tail", "throat_color", "wing_color", "wing_pattern"}
        assert entry["name"].startswith(f"{attrs['crown_color']}_crowned_{attrs['throat_color']}_throated_")


# ------------------------------------------------------------------------------------------- ground truth


def test_visible_keypoints_lie_on_their_part(dataset: pathlib.Path) -> None:
    locs, paths = part_locs(dataset), image_paths(dataset)
    seen: set[int] = set()
    for image_id, rel in paths.items():
        mask = load_mask(dataset, "part_masks", rel)
        for part_id, (x, y, visible) in enumerate(locs[image_id], start=1):
            if visible:
                assert mask[int(y), int(x)] == part_id, (rel, CUB_PART_NAMES[part_id - 1])
                seen.add(part_id)
    assert seen == set(range(1, 16)), "every CUB part should be visible somewhere"


def test_bounding_box_is_the_tight_foreground_box(dataset: pathlib.Path) -> None:
    locs, paths = part_locs(dataset), image_paths(dataset)
    for image_id, x, y, w, h in read_rows(dataset / "bounding_boxes.txt"):
        foreground = load_mask(dataset, "segmentations", paths[int(image_id)]) > 0
        ys, xs = np.nonzero(foreground)
        expected = (xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1)
        box = tuple(float(v) for v in (x, y, w, h))
        assert box == tuple(float(v) for v in expected)
        for kx, ky, visible in locs[int(image_id)]:
            if visible:
                assert box[0] <= kx < box[0] + box[2] and box[1] <= ky < box[1] + box[3]


def test_eye_visibility_follows_the_facing_direction(dataset: pathlib.Path) -> None:
    left, right, beak, nape = (PART_IDS[n] - 1 for n in ("left eye", "right eye", "beak", "nape"))
    checked = 0
    for records in part_locs(dataset).values():
        assert records[left][2] + records[right][2] <= 1
        eye = left if records[left][2] else right if records[right][2] else None
        if eye is not None and records[beak][2] and records[nape][2]:
            facing_right = records[beak][0] > records[nape][0]
            assert facing_right == (eye == left)
            checked += 1
    assert checked >= 10


def test_flip_swaps_the_visible_side() -> None:
    species = synthetic._make_species(CONFIG.classes, CONFIG.seed)
    samples = [synthetic._render_sample(species[0], CONFIG, 1, i) for i in range(1, 25)]
    assert {s.flipped for s in samples} == {False, True}
    for s in samples:
        hidden_eye = PART_IDS["left eye" if s.flipped else "right eye"]
        assert not s.present[hidden_eye - 1] and not s.visible[hidden_eye - 1]
        near = "right" if s.flipped else "left"
        assert s.present[PART_IDS[f"{near} wing"] - 1] and s.present[PART_IDS[f"{near} leg"] - 1]


def test_occlusion_hides_parts_in_some_images() -> None:
    species = synthetic._make_species(CONFIG.classes, CONFIG.seed)
    samples = [synthetic._render_sample(k, CONFIG, c, i) for c, k in enumerate(species, 1) for i in range(1, 11)]
    occluded = [s for s in samples if s.occluded]
    assert 0.1 < len(occluded) / len(samples) < 0.5
    assert any((s.present & ~s.visible).any() for s in occluded)
    for s in samples:
        if not s.occluded:
            np.testing.assert_array_equal(s.visible, s.present)
        assert not (s.visible & ~s.present).any()


# ----------------------------------------------------------------------------------------------- species


def test_species_are_distinct_in_at_least_two_part_attributes() -> None:
    species = synthetic._make_species(200, seed=11)
    attributes = [synthetic._part_attributes(s) for s in species]
    for a, b in itertools.combinations(attributes, 2):
        assert sum(a[k] != b[k] for k in a) >= 2
    names = [s.name for s in species]
    assert len(set(names)) == 200 and all(re.fullmatch(r"[A-Za-z_]+", n) for n in names)


def test_species_depend_on_the_seed_only() -> None:
    assert synthetic._make_species(20, 5) == synthetic._make_species(20, 5)
    assert synthetic._make_species(20, 5) != synthetic._make_species(20, 6)


def test_body_palette_is_shared_across_species(dataset: pathlib.Path) -> None:
    meta = json.loads((dataset / "synthetic_birds.json").read_text())
    palettes = [c["body_palette"] for c in meta["classes"]]
    assert max(palettes.count(p) for p in palettes) >= 2
    wide = [s.body_palette for s in synthetic._make_species(40, 0)]
    assert all(wide.count(p) == 10 for p in set(wide))


def test_global_mean_colour_does_not_identify_the_species(dataset: pathlib.Path) -> None:
    paths = image_paths(dataset)
    labels = np.array([(i - 1) // CONFIG.per_class for i in paths])
    means = []
    for rel in paths.values():
        with Image.open(dataset / "images" / rel) as image:
            means.append(np.asarray(image, dtype=np.float64).reshape(-1, 3).mean(axis=0))
    features = np.array(means)
    correct = 0
    for j in range(len(labels)):  # leave-one-out nearest class centroid
        others = np.arange(len(labels)) != j
        centroids = np.array([features[others & (labels == c)].mean(axis=0) for c in range(CONFIG.classes)])
        correct += int(np.argmin(((centroids - features[j]) ** 2).sum(axis=1)) == labels[j])
    assert correct / len(labels) < 0.4  # chance is 1/6


# ---------------------------------------------------------------------------------------------- determinism


def test_same_config_gives_byte_identical_trees(tmp_path: pathlib.Path) -> None:
    config = SynthConfig(classes=2, per_class=3, size=64, seed=7)
    first = write_synthetic_birds(tmp_path / "a", config)
    second = write_synthetic_birds(tmp_path / "b", config)
    assert tree_digest(first) == tree_digest(second)
    assert len(tree_digest(first)) == 8 + 3 * 6


def test_different_seed_gives_different_images(tmp_path: pathlib.Path) -> None:
    a = write_synthetic_birds(tmp_path / "a", SynthConfig(classes=2, per_class=2, size=64, seed=1))
    b = write_synthetic_birds(tmp_path / "b", SynthConfig(classes=2, per_class=2, size=64, seed=2))
    pixels = []
    for root in (a, b):
        with Image.open(root / "images" / image_paths(root)[1]) as image:
            pixels.append(np.asarray(image, dtype=np.int16))
    assert np.abs(pixels[0] - pixels[1]).mean() > 10
    assert (a / "bounding_boxes.txt").read_bytes() != (b / "bounding_boxes.txt").read_bytes()


# ------------------------------------------------------------------------------------------ unhappy paths


def test_existing_non_empty_directory_is_refused(tmp_path: pathlib.Path) -> None:
    out = tmp_path / "birds"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(DatasetError, match="not empty"):
        write_synthetic_birds(out, SynthConfig(classes=1, per_class=2, size=64))
    assert (out / "keep.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["birds"]


def test_overwrite_replaces_a_synthetic_dataset(tmp_path: pathlib.Path) -> None:
    out = tmp_path / "birds"
    write_synthetic_birds(out, SynthConfig(classes=2, per_class=2, size=64))
    write_synthetic_birds(out, SynthConfig(classes=1, per_class=2, size=64), overwrite=True)
    assert (out / "classes.txt").read_text().count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["birds"]


@pytest.mark.parametrize("extra", ["thesis.tex", None])
def test_overwrite_never_deletes_a_directory_it_did_not_write(tmp_path: pathlib.Path, extra: str | None) -> None:
    out = tmp_path / "birds"
    if extra is None:  # a user's folder that merely looks like a dataset
        out.mkdir()
        (out / "images.txt").write_text("mine")
    else:  # a synthetic dataset the user has added a file to
        write_synthetic_birds(out, SynthConfig(classes=1, per_class=2, size=64))
        (out / extra).write_text("mine")
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    with pytest.raises(DatasetError, match="refusing to overwrite"):
        write_synthetic_birds(out, SynthConfig(classes=1, per_class=2, size=64), overwrite=True)
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before


def test_empty_existing_directory_is_filled(tmp_path: pathlib.Path) -> None:
    out = tmp_path / "birds"
    out.mkdir()
    assert write_synthetic_birds(out, SynthConfig(classes=1, per_class=2, size=64)) == out
    assert (out / "classes.txt").read_text().startswith("1 001.")


def test_a_file_in_the_way_is_refused(tmp_path: pathlib.Path) -> None:
    (tmp_path / "birds").write_text("x")
    with pytest.raises(DatasetError, match="not a directory"):
        write_synthetic_birds(tmp_path / "birds", SynthConfig(classes=1, per_class=2, size=64), overwrite=True)


@pytest.mark.parametrize(
    "fields",
    [
        {"classes": 0},
        {"classes": 1000},
        {"per_class": 1},
        {"size": 63},
        {"seed": -1},
        {"size": 96.0},
        {"classes": True},
    ],
)
def test_invalid_configs_are_refused(fields: dict[str, object]) -> None:
    with pytest.raises(DatasetError):
        SynthConfig(**fields)  # type: ignore[arg-type]


def test_too_many_species_for_the_attribute_space() -> None:
    with pytest.raises(DatasetError, match="distinct species"):
        synthetic._make_species(synthetic._MAX_SPECIES + 1, 0)


@pytest.mark.parametrize("existing", [False, True])
def test_interrupted_write_leaves_nothing_behind(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, existing: bool
) -> None:
    out = tmp_path / "birds"
    if existing:
        write_synthetic_birds(out, SynthConfig(classes=1, per_class=2, size=64))
    before = sorted(p.relative_to(out) for p in out.rglob("*")) if existing else []
    real_write = synthetic._write_jpeg
    calls = []

    def failing_write(path: pathlib.Path, rgb: np.ndarray) -> None:
        calls.append(path)
        if len(calls) == 3:
            raise RuntimeError("disk full")
        real_write(path, rgb)

    monkeypatch.setattr(synthetic, "_write_jpeg", failing_write)
    with pytest.raises(RuntimeError, match="disk full"):
        write_synthetic_birds(out, SynthConfig(classes=2, per_class=2, size=64), overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == (["birds"] if existing else [])
    if existing:
        assert sorted(p.relative_to(out) for p in out.rglob("*")) == before


def test_processes_asking_for_the_dataset_at_once_generate_it_once(tmp_path: pathlib.Path) -> None:
    """torchrun's processes all create synthetic-birds on first use: one generates, the others wait and read it."""
    import os
    import subprocess
    import sys

    code = "import xaikit; print(len(xaikit.create('dataset', 'synthetic-birds', classes=2, per_class=4, size=64)))"
    env = {**os.environ, "XAIKIT_CACHE_DIR": str(tmp_path / "cache"), "PYTHONPATH": os.pathsep.join(sys.path)}
    processes = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(3)]
    results = [process.communicate(timeout=300) for process in processes]
    assert [process.returncode for process in processes] == [0, 0, 0], [err[-2000:] for _, err in results]
    assert [out.strip() for out, _ in results] == ["8", "8", "8"]
    assert sum(err.count("generating synthetic-birds") for _, err in results) == 1
    assert [entry.name for entry in (tmp_path / "cache" / "synthetic-birds").iterdir()] == [f"v{GENERATOR_VERSION}-c2-n4-s64-seed0"]
