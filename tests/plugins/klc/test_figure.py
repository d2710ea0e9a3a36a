"""The KLC figure: the query beside each prototype, matched parts joined by coloured lines, nothing cut or overlapping."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from xaikit import figure_layout
from xaikit.figure_layout import RIGHT, WRONG, Box, Figure
from xaikit_klc import figure
from xaikit_klc.figure import (
    FALLBACK_TEXT,
    GAP,
    MARGIN,
    UNMATCHED_GREY,
    draw_explanation,
    part_colour,
    save_explanation,
)

HEAD, WING = 1, 2
QUERY_BG = (40, 90, 160)
HEAD_RGB = (240, 200, 40)
WING_RGB = (200, 60, 200)
LONG_NAME = "001.White_crowned_Orange_throated_Green_winged_Fan_tailed_Hookbill"  # synthetic-birds' 60-character names
CUB_PARTS = (
    "back", "beak", "belly", "breast", "crown", "forehead", "left eye", "left leg", "left wing", "nape",
    "right eye", "right leg", "right wing", "tail", "throat",
)


def _scene(size: tuple[int, int], background: tuple[int, int, int], rects: dict[int, tuple[int, int, int, int]]):
    """A flat image with rectangular parts ``label -> (x1, y1, x2, y2)``, its part map and part entries."""
    height, width = size
    image = np.empty((height, width, 3), np.uint8)
    image[:] = background
    labels = torch.zeros(size, dtype=torch.int64)
    parts = []
    for label, (x1, y1, x2, y2) in rects.items():
        image[y1:y2, x1:x2] = HEAD_RGB if label == HEAD else WING_RGB
        labels[y1:y2, x1:x2] = label
        name = "head" if label == HEAD else "wing"
        parts.append({"label": label, "name": name, "keypoint": [(x1 + x2) / 2, (y1 + y2) / 2]})
    return image, labels, parts


@pytest.fixture
def case():
    """A 120x160 query (head matched to prototype 0, wing unmatched) and prototypes of other shapes."""
    query, query_labels, query_parts = _scene(
        (120, 160), QUERY_BG, {HEAD: (10, 10, 60, 50), WING: (90, 70, 150, 110)}
    )
    wide, wide_labels, wide_parts = _scene(
        (60, 200), (90, 160, 60), {HEAD: (20, 10, 80, 40), WING: (120, 20, 180, 50)}
    )
    tall, tall_labels, tall_parts = _scene((200, 100), (230, 230, 230), {WING: (20, 120, 80, 180)})
    detail = {
        "prediction": 3,
        "label": 3,
        "fallback": False,
        "prototypes": [
            {"gallery_index": 7, "image_id": 70, "label": 3, "similarity": 0.87},
            {"gallery_index": 2, "image_id": 20, "label": 1, "similarity": 0.61},
        ],
        "query_parts": query_parts,
        "prototype_parts": [wide_parts, tall_parts],
        "matches": [{"query_part": 0, "prototype": 0, "prototype_part": 0, "similarity": 0.9}],
    }
    return {
        "query": query,
        "prototypes": [wide, tall],
        "detail": json.loads(json.dumps(detail)),
        "query_labels": query_labels,
        "prototype_labels": [wide_labels, tall_labels],
    }


def _draw(case, detail=None, **options) -> Figure:
    return draw_explanation(case["query"], case["prototypes"], case["detail"] if detail is None else detail, height=120, **options)


def _to_figure(point, region: Box, scale: float):
    """Pillow pixel coordinate of an image keypoint in a panel ``region`` scaled by ``scale``."""
    return region.left + point[0] * scale - 0.5, region.top + point[1] * scale - 0.5


def _crop(out: np.ndarray, region: Box) -> np.ndarray:
    return out[int(region.top) : int(region.bottom), int(region.left) : int(region.right)]


def _has_colour_near(out, xy, colour, radius=1):
    x, y = round(xy[0]), round(xy[1])
    window = out[y - radius : y + radius + 1, x - radius : x + radius + 1]
    return bool(np.all(window == colour, axis=-1).any())


def _text(drawn: Figure, start: str) -> figure_layout.TextBox:
    return next(text for text in drawn.texts if text.text.startswith(start))


def test_one_row_per_prototype_each_pairing_the_query_with_it(case):
    drawn = _draw(case)
    out = drawn.image
    assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3
    assert out.shape[1] == 2 * MARGIN + 160 + GAP + 400  # query, gap, widest prototype (the wide one at 120 rows)
    query_1, query_2 = drawn.regions["query 1"], drawn.regions["query 2"]
    assert (query_1.width, query_1.height) == (query_2.width, query_2.height) == (160, 120)
    assert query_1.left == query_2.left == MARGIN and query_2.top > query_1.bottom
    for rank, size in ((1, (400, 120)), (2, (60, 120))):
        prototype = drawn.regions[f"prototype {rank}"]
        query = drawn.regions[f"query {rank}"]
        assert (prototype.width, prototype.height) == size
        assert prototype.left == query.right + GAP and prototype.top == query.top
    assert drawn.problems() == []


def test_a_match_is_a_line_of_its_colour_between_the_two_keypoints_in_its_row_only(case):
    drawn = _draw(case)
    out = drawn.image
    start = _to_figure(case["detail"]["query_parts"][0]["keypoint"], drawn.regions["query 1"], 1.0)
    end = _to_figure(case["detail"]["prototype_parts"][0][0]["keypoint"], drawn.regions["prototype 1"], 2.0)
    colour = part_colour(HEAD)
    for t in (0.3, 0.5, 0.7):
        point = (start[0] + t * (end[0] - start[0]), start[1] + t * (end[1] - start[1]))
        assert _has_colour_near(out, point, colour), f"no line pixel at t={t}"
    assert _has_colour_near(out, start, colour, radius=2) and _has_colour_near(out, end, colour, radius=2)  # markers
    second_row = Box(0, drawn.regions["query 2"].top, out.shape[1], drawn.regions["query 2"].bottom)
    assert not np.all(_crop(out, second_row) == colour, axis=-1).any()  # the match to prototype 1 stays in row 1


def test_unmatched_regions_are_dimmed_matched_and_background_are_not(case):
    drawn = _draw(case, query_labels=case["query_labels"], prototype_labels=case["prototype_labels"])
    panel = _crop(drawn.image, drawn.regions["query 1"]).astype(np.float64)
    query = case["query"].astype(np.float64)
    wing = (slice(100, 110), slice(90, 110))  # away from the wing's marker and name
    head = (slice(42, 50), slice(10, 25))  # away from the head's marker, name and line
    corner = (slice(112, 120), slice(0, 8))
    assert panel[wing].mean() < query[wing].mean() - 10  # darker
    assert panel[wing].std(axis=-1).mean() < query[wing].std(axis=-1).mean() / 2  # greyer
    np.testing.assert_allclose(panel[wing], np.rint(query[wing] * 0.4 + 128 * 0.6))
    assert panel[head].mean() == query[head].mean()
    np.testing.assert_array_equal(panel[corner], query[corner])
    # the prototype's unmatched wing is dimmed too (panel scaled by 2, wing at x 120..180, y 20..50)
    proto = _crop(drawn.image, drawn.regions["prototype 1"])[90:98, 250:270].astype(np.float64)
    assert proto.mean() < np.mean(WING_RGB) - 10
    # in row 2 the head has no match, so it is dimmed there
    second = _crop(drawn.image, drawn.regions["query 2"]).astype(np.float64)
    np.testing.assert_allclose(second[head], np.rint(query[head] * 0.4 + 128 * 0.6))


def test_without_part_maps_nothing_is_dimmed(case):
    drawn = _draw(case)
    wing = _crop(drawn.image, drawn.regions["query 1"])[100:110, 90:110]
    np.testing.assert_array_equal(wing, case["query"][100:110, 90:110])


def test_unmatched_parts_get_grey_markers_and_names(case):
    drawn = _draw(case)
    wing = _to_figure(case["detail"]["query_parts"][1]["keypoint"], drawn.regions["query 1"], 1.0)
    assert _has_colour_near(drawn.image, wing, UNMATCHED_GREY, radius=4)
    assert not _has_colour_near(drawn.image, wing, part_colour(WING), radius=6)
    assert [text.text for text in drawn.texts].count("wing") == 4  # query and prototype, both rows


@pytest.mark.parametrize("k", [1, 5])
def test_k_prototypes_of_any_size(k):
    rng = np.random.default_rng(k)
    query = np.full((90, 70, 3), 200, np.uint8)
    sizes = [(40, 300), (300, 40), (64, 64), (17, 23), (250, 120)][:k]
    prototypes = [np.full((h, w, 3), 30 * (j + 1), np.uint8) for j, (h, w) in enumerate(sizes)]
    parts = [[{"label": 1, "name": "head", "keypoint": [w / 2, h / 2]}] for h, w in sizes]
    detail = {
        "prediction": 0, "label": -1, "fallback": False,
        "prototypes": [
            {"gallery_index": j, "image_id": j, "label": 0, "similarity": float(rng.random())} for j in range(k)
        ],
        "query_parts": [{"label": 1, "name": "head", "keypoint": [35.0, 45.0]}],
        "prototype_parts": parts,
        "matches": [{"query_part": 0, "prototype": j, "prototype_part": 0, "similarity": 0.5} for j in range(k)],
    }
    drawn = draw_explanation(query, prototypes, detail, height=100, class_names=["sparrow"])
    widths = [max(1, round(w * 100 / h)) for h, w in sizes]
    assert drawn.image.shape[1] == 2 * MARGIN + round(70 * 100 / 90) + GAP + max(widths)
    titles = [text.text for text in drawn.texts if text.text.startswith("#")]
    assert titles == [f"#{rank} sparrow" for rank in range(1, k + 1)]  # every prototype has a title
    for rank, width in enumerate(widths, start=1):
        assert drawn.regions[f"prototype {rank}"].width == width
    assert _text(drawn, "predicted").text == "predicted: sparrow"  # no true class: no verdict
    assert drawn.problems() == []


def test_zero_matches_draw_no_part_colour_and_dim_every_part(case):
    detail = dict(case["detail"], matches=[])
    drawn = _draw(case, detail, query_labels=case["query_labels"], prototype_labels=case["prototype_labels"])
    for label in (HEAD, WING):
        assert not np.all(drawn.image == part_colour(label), axis=-1).any()
    head = _crop(drawn.image, drawn.regions["query 1"])[42:50, 10:25].astype(np.float64)
    np.testing.assert_allclose(head, np.rint(np.array(HEAD_RGB) * 0.4 + 128 * 0.6) + np.zeros_like(head))
    assert "0 matched parts" in " ".join(text.text for text in drawn.texts)


def test_fallback_is_said_in_red_over_the_rows(case):
    drawn = _draw(case, dict(case["detail"], matches=[], fallback=True))
    note = _text(drawn, FALLBACK_TEXT.split()[0])
    assert " ".join(text.text for text in drawn.texts).count(FALLBACK_TEXT) == 1
    assert note.box.bottom <= drawn.regions["query 1"].top
    assert (_crop(drawn.image, note.box) == WRONG).all(axis=-1).any()
    assert drawn.problems() == []


@pytest.mark.parametrize(("label", "verdict", "colour"), [(3, "correct", RIGHT), (4, "wrong", WRONG)])
def test_the_true_class_and_the_verdict_are_written_in_green_or_red(case, label, verdict, colour):
    names = [f"class {index}" for index in range(5)]
    drawn = _draw(case, dict(case["detail"], label=label), class_names=names)
    assert _text(drawn, "true:").text == f"true: class {label}"
    predicted = _text(drawn, "predicted:")
    assert predicted.text == f"predicted: class 3 · {verdict}"
    assert (_crop(drawn.image, predicted.box) == colour).all(axis=-1).any()


def test_nan_keypoints_are_skipped(case):
    detail = case["detail"]
    detail["query_parts"].append({"label": 3, "name": "tail", "keypoint": [math.nan, math.nan]})
    detail["prototype_parts"][1].append({"label": 3, "name": "tail", "keypoint": [math.nan, 5.0]})
    detail["matches"].append({"query_part": 2, "prototype": 1, "prototype_part": 1, "similarity": 0.4})
    drawn = _draw(case, json.loads(json.dumps(detail)))
    assert not np.all(drawn.image == part_colour(3), axis=-1).any()  # neither line nor markers for the NaN pair
    start = _to_figure(detail["query_parts"][0]["keypoint"], drawn.regions["query 1"], 1.0)
    end = _to_figure(detail["prototype_parts"][0][0]["keypoint"], drawn.regions["prototype 1"], 2.0)
    assert _has_colour_near(drawn.image, ((start[0] + end[0]) / 2, (start[1] + end[1]) / 2), part_colour(HEAD))
    assert "tail" not in [text.text for text in drawn.texts]


def _crowded(k: int, *, fallback: bool = False, parts: int = 15, name: str = LONG_NAME) -> dict:
    """Images and a detail with ``parts`` CUB parts crowded into each bird, half of them matched."""
    rng = np.random.default_rng(k * 100 + parts)
    shapes = [(120, 180), *[(int(rng.integers(60, 240)), int(rng.integers(60, 240))) for _ in range(k)]]
    images = [rng.integers(0, 256, (*shape, 3), dtype=np.uint8) for shape in shapes]

    def part_list(shape):
        height, width = shape  # keypoints bunched in the middle third, as on a bird
        points = rng.uniform([width / 3, height / 3], [2 * width / 3, 2 * height / 3], (parts, 2))
        return [{"label": p + 1, "name": CUB_PARTS[p % 15], "keypoint": points[p].round(2).tolist()} for p in range(parts)]

    matches = [
        {"query_part": p, "prototype": j, "prototype_part": p, "similarity": 0.5}
        for j in range(k) for p in range(0 if fallback else parts // 2)
    ]
    detail = {
        "prediction": 0, "label": 1, "fallback": fallback,
        "prototypes": [{"gallery_index": j, "image_id": j, "label": j % 2, "similarity": 0.9 - j / 10} for j in range(k)],
        "query_parts": part_list(shapes[0]), "prototype_parts": [part_list(shape) for shape in shapes[1:]], "matches": matches,
    }
    return {"query": images[0], "prototypes": images[1:], "detail": detail, "class_names": [name, name[::-1]]}


@pytest.mark.parametrize(
    "crowd",
    [
        _crowded(1),
        _crowded(3),
        _crowded(5),
        _crowded(3, fallback=True),
        _crowded(3, parts=40),
        _crowded(2, name="Pseudo" + "x" * 60),  # one 66-character word
    ],
    ids=["k1", "k3", "k5", "fallback", "40-parts", "one-long-word"],
)
@pytest.mark.parametrize("height", [80, 280])
def test_no_text_is_cut_off_outside_the_canvas_or_overlapping(crowd, height):
    drawn = draw_explanation(crowd["query"], crowd["prototypes"], crowd["detail"], height=height, class_names=crowd["class_names"])
    assert drawn.problems() == []
    texts = [text.text for text in drawn.texts]
    assert not any(text.endswith("...") for text in texts)
    written = "".join(texts).replace(" ", "")
    for name in crowd["class_names"]:  # every class name is written in full, wrapped or not
        readable = figure_layout.readable_class_name(name).replace(" ", "")
        assert readable in written
    for rank, parts in enumerate(crowd["detail"]["prototype_parts"], start=1):
        shown = [text for text in texts if not text.startswith(("#", "true", "predicted", "similarity"))]
        assert drawn.regions[f"prototype {rank}"].height == height
        for part in parts:  # every part is named, on a label or in an "unlabelled" caption
            assert any(part["name"] in text for text in shown)


def test_crowded_labels_go_to_an_unlabelled_caption_under_their_panel():
    crowd = _crowded(1, parts=40)
    drawn = draw_explanation(crowd["query"], crowd["prototypes"], crowd["detail"], height=80, class_names=crowd["class_names"])
    captions = [text for text in drawn.texts if text.text.startswith("unlabelled:")]
    assert captions and all(text.box.top >= drawn.regions["query 1"].bottom for text in captions)


def _add_match(query_part, prototype, prototype_part):
    def change(case):
        indices = {"query_part": query_part, "prototype": prototype, "prototype_part": prototype_part}
        case["detail"]["matches"].append({**indices, "similarity": 1.0})

    return change


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (_add_match(5, 0, 0), "query part 5"),
        (_add_match(-1, 0, 0), "query part -1"),
        (_add_match(0, 2, 0), "prototype 2"),
        (_add_match(0, 1, 1), "part 1 of prototype 1"),
        (_add_match(0, None, 0), "Match 1 needs integer"),
        (lambda c: c["prototypes"].pop(), "'prototypes' has 2 entries but 1"),
        (lambda c: c["detail"]["prototype_parts"].pop(), "'prototype_parts' has 1 entries"),
        (lambda c: c["prototype_labels"].pop(), "1 prototype part maps"),
        (lambda c: c.update(prototype_labels=[]), "0 prototype part maps"),
        (lambda c: c.update(query_labels=c["query_labels"][:, :-1]), "part map of the query"),
        (lambda c: c["prototype_labels"].__setitem__(1, c["prototype_labels"][1].T), "part map of prototype 1"),
        (lambda c: c["detail"].pop("matches"), "no 'matches'"),
        (lambda c: c["detail"].pop("prediction"), "no 'prediction'"),
        (lambda c: c.update(query=c["query"][..., 0]), "query must be"),
    ],
)
def test_inconsistent_input_is_refused(case, change, message):
    change(case)
    with pytest.raises(ValueError, match=message):
        draw_explanation(
            case["query"], case["prototypes"], case["detail"],
            query_labels=case["query_labels"], prototype_labels=case["prototype_labels"], height=120,
        )


def test_no_prototypes_is_refused(case):
    detail = dict(case["detail"], prototypes=[], prototype_parts=[], matches=[])
    with pytest.raises(ValueError, match="at least one prototype"):
        draw_explanation(case["query"], [], detail)


def test_save_writes_the_same_pixels_as_png_and_no_temp_file(case, tmp_path: Path):
    out = _draw(case).image
    path = tmp_path / "klc.png"
    save_explanation(path, out)
    with Image.open(path) as image:
        assert image.format == "PNG" and image.mode == "RGB"
        np.testing.assert_array_equal(np.asarray(image), out)
    assert os.listdir(tmp_path) == ["klc.png"]


def test_a_failed_save_leaves_the_old_file_and_no_temp_file(case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    path = tmp_path / "klc.png"
    path.write_bytes(b"old")

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(figure.os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        save_explanation(path, _draw(case).image)
    assert os.listdir(tmp_path) == ["klc.png"] and path.read_bytes() == b"old"


def test_without_a_scalable_font_the_bitmap_font_is_used(case, monkeypatch: pytest.MonkeyPatch):
    original = figure_layout.ImageFont.load_default

    def old_pillow(*args, **kwargs):
        if args or kwargs:
            raise TypeError("load_default() takes no arguments")
        return original()

    monkeypatch.setattr(figure_layout.ImageFont, "load_default", old_pillow)
    figure_layout.font.cache_clear()
    try:
        drawn = _draw(case, dict(case["detail"], fallback=True))
    finally:
        figure_layout.font.cache_clear()
    assert drawn.problems() == []
    assert FALLBACK_TEXT in " ".join(text.text for text in drawn.texts)
