"""Bad input against ``xaikit bench`` on real CUB photographs: a correct result, a recorded skip with its reason,
or exit 2 with one sentence; never exit 1, never a traceback, never a lost or changed file outside the run.

Every case starts from a private copy of ``../shared/data/cub200-mini`` and breaks one thing in it.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from xaikit.bench.rundir import RunDirectory
from xaikit.cli import main
from xaikit.data.cub import CUBDataset, decode_image
from xaikit.errors import DatasetError


@pytest.fixture
def cub(cub_mini: Path, tmp_path: Path) -> Path:
    """A writable copy of the 60 real photographs with their official annotations."""
    return Path(shutil.copytree(cub_mini, tmp_path / "cub"))


@pytest.fixture
def bystander(tmp_path: Path) -> Callable[[], None]:
    """A user's folder beside the run; calling the fixture's result asserts nothing in it changed."""
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "thesis.tex").write_text("\\documentclass{article}")
    before = {path.name: path.read_bytes() for path in folder.iterdir()}

    def unchanged() -> None:
        assert {path.name: path.read_bytes() for path in folder.iterdir()} == before

    return unchanged


def bench(capsys: pytest.CaptureFixture[str], root: Path, out: Path, *extra: str) -> tuple[int, str]:
    """Run ``xaikit bench`` on ``root`` in this process; return the exit code and standard error."""
    try:
        code = main(["bench", "--dataset", "cub", "--data-root", str(root), "--out", str(out), "--device", "cpu", *extra])
    except SystemExit as exit_:  # a usage error, raised by argparse
        code = exit_.code
    err = capsys.readouterr().err
    assert code != 1, f"bad input reported as an internal error: {err}"
    assert "Traceback" not in err
    if code == 2:
        errors = [line for line in err.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and err.strip().splitlines()[-1] == errors[0], err
    return code, err


def edit_line(path: Path, number: int, line: str) -> None:
    lines = path.read_text().splitlines()
    lines[number - 1] = line
    path.write_text("\n".join(lines) + "\n")


def split_images(cub: Path) -> list[tuple[int, Path]]:
    """``(image id, path)`` of the test split, in the order ``items.jsonl`` indexes it."""
    dataset = CUBDataset(cub, split="test")
    return [(int(image_id), dataset.root / "images" / dataset._annotations.paths[row]) for image_id, row in zip(dataset.image_ids, dataset._indices, strict=True)]


# ----------------------------------------------------------------------------- the run directory


def test_overwrite_refuses_a_folder_that_is_not_a_run(capsys, cub, tmp_path, bystander):
    code, err = bench(capsys, cub, tmp_path / "mine", "--overwrite", "--limit", "2")
    assert code == 2 and "thesis.tex" in err and "xaikit did not write" in err
    bystander()


def test_a_folder_of_someone_elses_files_is_never_written_into(capsys, cub, tmp_path, bystander):
    code, err = bench(capsys, cub, tmp_path / "mine", "--limit", "2")
    assert code == 2 and "no xaikit run" in err
    code, err = bench(capsys, cub, tmp_path / "mine", "--resume", "--limit", "2")
    assert code == 2
    bystander()


def test_resume_with_overwrite_is_refused_and_keeps_the_finished_run(capsys, cub, tmp_path, bystander):
    out = tmp_path / "run"
    assert bench(capsys, cub, out, "--limit", "2")[0] == 0
    before = {path.name: path.read_bytes() for path in out.iterdir()}
    code, err = bench(capsys, cub, out, "--resume", "--overwrite", "--limit", "2")
    assert code == 2 and "--resume and --overwrite" in err
    assert {path.name: path.read_bytes() for path in out.iterdir()} == before
    bystander()


def test_a_second_process_on_the_same_run_is_refused_at_once(capsys, cub, tmp_path):
    out = tmp_path / "run"
    assert bench(capsys, cub, out, "--limit", "2")[0] == 0
    items = (out / "items.jsonl").read_bytes()
    with RunDirectory.claim(out, resume=True, overwrite=False):  # another process's open file description
        for flags in (["--resume"], ["--overwrite"], []):
            code, err = bench(capsys, cub, out, *flags, "--limit", "2")
            assert code == 2 and ("in use by another xaikit process" in err or "already holds a run" in err)
    assert (out / "items.jsonl").read_bytes() == items


@pytest.mark.parametrize("line", ["{}", "[]", "null", '{"index": 0}', '{"index": -1, "status": "skipped", "reason": "x"}'])
def test_a_foreign_items_line_on_resume_is_refused_and_the_file_kept(capsys, cub, tmp_path, line):
    out = tmp_path / "run"
    assert bench(capsys, cub, out, "--limit", "2")[0] == 0
    with (out / "items.jsonl").open("a") as file:
        file.write(line + "\n")
    items = (out / "items.jsonl").read_bytes()
    code, err = bench(capsys, cub, out, "--resume", "--limit", "2")
    assert code == 2 and "items.jsonl line 3" in err
    assert (out / "items.jsonl").read_bytes() == items


@pytest.mark.parametrize(
    ("arguments", "named"),
    [
        (["--option", "segmenter.radius=abc"], "radius"),
        (["--option", "dataset.crop_to_bbox=maybe"], "crop_to_bbox"),
        (["--option", "dataset.crop_to_bbox=2"], "crop_to_bbox"),
        (["--option", "label_agreement=False", "--option", "k=2.5"], "'k'"),
        (["--option", "metric.accuracy.top=abc"], "metric"),
        (["--limit", "0"], "--limit"),
        (["--limit", "-3"], "--limit"),
        (["--batch-size", "0"], "--batch-size"),
        (["--k", "zero"], "--k"),
        (["--option", "nonsense"], "nonsense"),
    ],
)
def test_a_bad_argument_is_refused_before_anything_is_written(capsys, cub, tmp_path, arguments, named):
    code, err = bench(capsys, cub, tmp_path / "new" / "run", *arguments)
    assert code == 2 and named in err
    assert not (tmp_path / "new").exists()


def test_the_corrected_command_runs_after_a_refusal(capsys, cub, tmp_path):
    out = tmp_path / "run"
    assert bench(capsys, cub, out, "--option", "segmenter.radius=abc", "--limit", "2")[0] == 2
    code, _ = bench(capsys, cub, out, "--option", "segmenter.radius=0.1", "--option", "dataset.crop_to_bbox=False", "--limit", "2")
    assert code == 0
    recorded = json.loads((out / "config.json").read_text())["components"]
    assert recorded["segmenter"]["options"]["radius"] == 0.1 and recorded["dataset"]["options"]["crop_to_bbox"] is False


# ------------------------------------------------------------------------------ the annotation files


@pytest.mark.parametrize(
    ("file", "line", "text", "message"),
    [
        ("images.txt", 1, "1 ../../../etc/passwd", "not a path inside images/"),
        ("images.txt", 1, "1 /etc/passwd", "not a path inside images/"),
        ("images.txt", 1, "1 001.Black_footed_Albatross/../../images.txt", "not a path inside images/"),
        ("bounding_boxes.txt", 1, "1 nan 27.0 325.0 304.0", "not a finite number"),
        ("bounding_boxes.txt", 1, "1 60.0 27.0 inf 304.0", "not a finite number"),
        ("bounding_boxes.txt", 1, "1 60.0 27.0 0 304.0", "empty"),
        ("bounding_boxes.txt", 1, "1 60.0 27.0 -5 304.0", "empty"),
        ("parts/part_locs.txt", 1, "1 1 abc 2.0 1", "expected"),
        ("parts/part_locs.txt", 1, "1 1 nan 2.0 1", "not a finite number"),
        ("parts/part_locs.txt", 1, "1 1 1.0 -inf 1", "not a finite number"),
        ("parts/part_locs.txt", 1, "1 1 -4.0 2.0 1", "negative"),
        ("parts/part_locs.txt", 1, "1 1 4.0 2.0 maybe", "expected"),
        ("train_test_split.txt", 1, "1 2", "expected"),
        ("image_class_labels.txt", 1, "1 999", "class id 999 is not defined"),
    ],
)
def test_a_bad_annotation_row_is_refused_with_file_and_line(capsys, cub, tmp_path, file, line, text, message):
    edit_line(cub / file, line, text)
    code, err = bench(capsys, cub, tmp_path / "run", "--limit", "2")
    assert code == 2 and f"{Path(file).name}, line {line}" in err and message in err
    assert not (tmp_path / "run").exists()


def test_a_symlink_out_of_the_root_is_refused(capsys, cub, tmp_path):
    secret = tmp_path / "secret.jpg"
    _, first = split_images(cub)[0]
    shutil.copy(first, secret)
    first.unlink()
    first.symlink_to(secret)
    code, err = bench(capsys, cub, tmp_path / "run", "--limit", "2")
    assert code == 2 and "outside the dataset root" in err


def test_a_symlink_loop_is_refused_in_one_sentence(capsys, cub, tmp_path):
    _, first = split_images(cub)[0]
    first.unlink()
    first.symlink_to(first)
    code, err = bench(capsys, cub, tmp_path / "run", "--limit", "2")
    assert code == 2 and str(first.name) in err


def test_a_symlinked_root_is_followed(capsys, cub, tmp_path):
    link = tmp_path / "linked"
    link.symlink_to(cub, target_is_directory=True)
    assert bench(capsys, link, tmp_path / "run", "--limit", "2")[0] == 0


@pytest.mark.parametrize("missing", ["parts/part_locs.txt", "images.txt", "classes.txt", "image_class_labels.txt", "train_test_split.txt"])
def test_a_missing_annotation_file_the_dataset_needs_is_refused(capsys, cub, tmp_path, missing):
    (cub / missing).unlink()
    code, err = bench(capsys, cub, tmp_path / "run", "--limit", "2")
    assert code == 2 and Path(missing).name in err


# ---------------------------------------------------------------------------------------- images


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width x height`` pixels (a decompression bomb's header)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b"")


def test_every_kind_of_broken_or_unusual_image_gives_a_result_or_a_reasoned_skip(capsys, cub, tmp_path):
    images = split_images(cub)
    photo = np.array(Image.open(images[0][1]).convert("RGB"))
    grey16 = (photo.mean(axis=2) * 257).astype(np.uint16)
    cases: dict[str, Callable[[Path], None]] = {
        "sixteen-bit": lambda path: Image.fromarray(grey16).save(path, format="PNG"),
        "palette": lambda path: Image.open(path).convert("P").save(path, format="PNG"),
        "cmyk": lambda path: Image.open(path).convert("CMYK").save(path, format="JPEG"),
        "bomb": lambda path: path.write_bytes(png_claiming(40_000, 40_000)),
        "truncated": lambda path: path.write_bytes(path.read_bytes()[:2000]),
        "text": lambda path: path.write_text("not an image"),
        "empty": lambda path: path.write_bytes(b""),
    }
    for (_, path), make in zip(images[1:], cases.values(), strict=False):
        make(path)
    boxes = cub / "bounding_boxes.txt"
    outside_id = images[len(cases) + 1][0]
    rows = [line if line.split()[0] != str(outside_id) else f"{outside_id} 90000 90000 10 10" for line in boxes.read_text().splitlines()]
    boxes.write_text("\n".join(rows) + "\n")

    out = tmp_path / "run"
    code, _ = bench(capsys, cub, out, "--option", "dataset.crop_to_bbox=true")
    assert code == 0
    records = {record["index"]: record for record in map(json.loads, (out / "items.jsonl").read_text().splitlines())}
    assert len(records) == len(images)
    by_case = {name: records[index] for index, name in enumerate(cases, start=1)}
    for name in ("sixteen-bit", "palette", "cmyk"):
        assert by_case[name].get("status") != "skipped", by_case[name]
    for name, reason in (("bomb", "too large"), ("truncated", "cannot decode"), ("text", "cannot decode"), ("empty", "cannot decode")):
        assert by_case[name]["status"] == "skipped" and reason in by_case[name]["reason"], by_case[name]
    outside = records[len(cases) + 1]
    assert outside["status"] == "skipped" and "does not overlap" in outside["reason"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["evaluated"] == len(images) - 5


def test_a_sixteen_bit_image_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 257, 65535], [32896, 1000, 60000]], np.uint16)
    Image.fromarray(values).save(tmp_path / "grey16.png")
    decoded = decode_image(tmp_path / "grey16.png")
    assert decoded.shape == (2, 3, 3) and decoded.dtype == np.uint8
    np.testing.assert_array_equal(decoded[..., 0], np.rint(values / 257).astype(np.uint8))
    assert (decoded[..., 0] == decoded[..., 2]).all()


def test_exif_orientation_is_applied_only_where_asked(tmp_path):
    pixels = np.zeros((2, 4, 3), np.uint8)
    pixels[0, 0] = 255
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    Image.fromarray(pixels).save(tmp_path / "rotated.png", exif=exif.tobytes())
    assert decode_image(tmp_path / "rotated.png").shape == (2, 4, 3)  # datasets: the stored pixels, as annotated
    assert decode_image(tmp_path / "rotated.png", exif_transpose=True).shape == (4, 2, 3)  # a user's photo, as displayed


def test_a_floating_point_image_is_refused_in_one_sentence(tmp_path):
    Image.fromarray(np.ones((3, 3), np.float32)).save(tmp_path / "float.tiff")
    with pytest.raises(DatasetError, match="floating-point pixels"):
        decode_image(tmp_path / "float.tiff")


def test_a_sixteen_bit_mask_with_large_values_is_refused(tmp_path):
    Image.fromarray(np.full((3, 3), 4000, np.uint16)).save(tmp_path / "mask.png")
    with pytest.raises(DatasetError, match="above 255"):
        decode_image(tmp_path / "mask.png", "L")
    Image.fromarray(np.full((3, 3), 7, np.uint16)).save(tmp_path / "mask.png")
    assert (decode_image(tmp_path / "mask.png", "L") == 7).all()


def test_explain_refuses_a_bad_image_file_in_one_sentence(capsys, tmp_path):
    (tmp_path / "photo.jpg").write_bytes(io.BytesIO(b"garbage").getvalue())
    code = main(["explain", str(tmp_path / "photo.jpg"), "--segmenter", "dino-parts", "--out", str(tmp_path / "f.png")])
    err = capsys.readouterr().err
    assert code == 2 and "cannot decode image" in err and "Traceback" not in err
    assert not os.path.exists(tmp_path / "f.png")
