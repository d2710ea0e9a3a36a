"""The KLC figure: query beside its prototypes, matched parts joined by coloured lines."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from xaikit_klc import figure
from xaikit_klc.figure import (
    FOOTER_HEIGHT,
    GAP,
    HEADER_HEIGHT,
    UNMATCHED_GREY,
    part_colour,
    render_explanation,
    save_explanation,
)

HEAD, WING = 1, 2
QUERY_BG = (40, 90, 160)
HEAD_RGB = (240, 200, 40)
WING_RGB = (200, 60, 200)


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


def _expected_width(images, height):
    widths = [max(1, round(image.shape[1] * height / image.shape[0])) for image in images]
    return sum(widths) + GAP * (len(images) - 1)


def _to_figure(point, left, scale):
    """Pillow pixel coordinate of an image keypoint in a panel at ``left`` scaled by ``scale``."""
    return left + point[0] * scale - 0.5, HEADER_HEIGHT + point[1] * scale - 0.5


def _has_colour_near(out, xy, colour, radius=1):
    x, y = round(xy[0]), round(xy[1])
    window = out[y - radius : y + radius + 1, x - radius : x + radius + 1]
    return bool(np.all(window == colour, axis=-1).any())


def test_shape_is_title_band_plus_panels_and_widths_plus_gaps(case):
    out = render_explanation(case["query"], case["prototypes"], case["detail"], height=120)
    assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3
    assert out.shape[0] == HEADER_HEIGHT + 120
    assert out.shape[1] == 160 + 400 + 60 + 2 * GAP == _expected_width([case["query"], *case["prototypes"]], 120)
    assert (out[HEADER_HEIGHT + 100 :, 160 : 160 + GAP] == 255).all()  # the gap, below the match line, is white
    assert (out[:HEADER_HEIGHT] != 255).any(axis=-1)[:, :160].any()  # the query's title is written


def test_a_match_is_a_line_of_its_colour_between_the_two_keypoints(case):
    out = render_explanation(case["query"], case["prototypes"], case["detail"], height=120)
    start = _to_figure(case["detail"]["query_parts"][0]["keypoint"], 0, 1.0)
    end = _to_figure(case["detail"]["prototype_parts"][0][0]["keypoint"], 160 + GAP, 2.0)
    colour = part_colour(HEAD)
    for t in (0.3, 0.5, 0.7):
        point = (start[0] + t * (end[0] - start[0]), start[1] + t * (end[1] - start[1]))
        assert _has_colour_near(out, point, colour), f"no line pixel at t={t}"
    assert _has_colour_near(out, start, colour, radius=2) and _has_colour_near(out, end, colour, radius=2)  # markers


def test_unmatched_regions_are_dimmed_matched_and_background_are_not(case):
    out = render_explanation(
        case["query"], case["prototypes"], case["detail"],
        query_labels=case["query_labels"], prototype_labels=case["prototype_labels"], height=120,
    )
    panel = out[HEADER_HEIGHT:, :160].astype(np.float64)
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
    left = 160 + GAP
    proto = out[HEADER_HEIGHT + 90 : HEADER_HEIGHT + 98, left + 250 : left + 270].astype(np.float64)
    assert proto.mean() < np.mean(WING_RGB) - 10


def test_without_part_maps_nothing_is_dimmed(case):
    out = render_explanation(case["query"], case["prototypes"], case["detail"], height=120)
    wing = out[HEADER_HEIGHT + 100 : HEADER_HEIGHT + 110, 90:110]
    np.testing.assert_array_equal(wing, case["query"][100:110, 90:110])


def test_unmatched_parts_get_grey_markers(case):
    out = render_explanation(case["query"], case["prototypes"], case["detail"], height=120)
    wing = _to_figure(case["detail"]["query_parts"][1]["keypoint"], 0, 1.0)
    assert _has_colour_near(out, wing, UNMATCHED_GREY, radius=4)
    assert not _has_colour_near(out, wing, part_colour(WING), radius=6)


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
    out = render_explanation(query, prototypes, detail, height=100, class_names=["sparrow"])
    assert out.shape == (HEADER_HEIGHT + 100, _expected_width([query, *prototypes], 100), 3)
    left = round(70 * 100 / 90) + GAP
    for h, w in sizes:  # every prototype has a title
        width = max(1, round(w * 100 / h))
        assert (out[:HEADER_HEIGHT, left : left + width] != 255).any()
        left += width + GAP


def test_zero_matches_draw_no_part_colour_and_dim_every_part(case):
    detail = dict(case["detail"], matches=[])
    out = render_explanation(
        case["query"], case["prototypes"], detail,
        query_labels=case["query_labels"], prototype_labels=case["prototype_labels"], height=120,
    )
    for label in (HEAD, WING):
        assert not np.all(out == part_colour(label), axis=-1).any()
    head = out[HEADER_HEIGHT + 42 : HEADER_HEIGHT + 50, 10:25].astype(np.float64)
    np.testing.assert_allclose(head, np.rint(np.array(HEAD_RGB) * 0.4 + 128 * 0.6) + np.zeros_like(head))


def test_fallback_text_is_written_under_the_query(case):
    detail = dict(case["detail"], matches=[], fallback=True)
    out = render_explanation(case["query"], case["prototypes"], detail, height=120)
    assert out.shape[0] == HEADER_HEIGHT + 120 + FOOTER_HEIGHT
    footer = out[HEADER_HEIGHT + 120 :, :160]
    assert (footer != 255).any(axis=-1).sum() > 20
    plain = render_explanation(case["query"], case["prototypes"], dict(detail, fallback=False), height=120)
    np.testing.assert_array_equal(out[: HEADER_HEIGHT + 120], plain)


def test_the_verdict_depends_on_the_true_label(case):
    outs = [
        render_explanation(case["query"], case["prototypes"], dict(case["detail"], label=label), height=120)
        for label in (3, 4, -1)
    ]
    headers = [out[:HEADER_HEIGHT, :160] for out in outs]
    assert not np.array_equal(headers[0], headers[1]) and not np.array_equal(headers[0], headers[2])


def test_nan_keypoints_are_skipped(case):
    detail = case["detail"]
    detail["query_parts"].append({"label": 3, "name": "tail", "keypoint": [math.nan, math.nan]})
    detail["prototype_parts"][1].append({"label": 3, "name": "tail", "keypoint": [math.nan, 5.0]})
    detail["matches"].append({"query_part": 2, "prototype": 1, "prototype_part": 1, "similarity": 0.4})
    detail = json.loads(json.dumps(detail))
    out = render_explanation(case["query"], case["prototypes"], detail, height=120)
    assert out.shape == (HEADER_HEIGHT + 120, _expected_width([case["query"], *case["prototypes"]], 120), 3)
    assert not np.all(out == part_colour(3), axis=-1).any()  # neither line nor markers for the NaN pair
    start = _to_figure(detail["query_parts"][0]["keypoint"], 0, 1.0)
    end = _to_figure(detail["prototype_parts"][0][0]["keypoint"], 160 + GAP, 2.0)
    assert _has_colour_near(out, ((start[0] + end[0]) / 2, (start[1] + end[1]) / 2), part_colour(HEAD))


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
        (lambda c: c.update(query=c["query"][..., 0]), "query must be"),
    ],
)
def test_inconsistent_input_is_refused(case, change, message):
    change(case)
    with pytest.raises(ValueError, match=message):
        render_explanation(
            case["query"], case["prototypes"], case["detail"],
            query_labels=case["query_labels"], prototype_labels=case["prototype_labels"], height=120,
        )


def test_no_prototypes_is_refused(case):
    detail = dict(case["detail"], prototypes=[], prototype_parts=[], matches=[])
    with pytest.raises(ValueError, match="at least one prototype"):
        render_explanation(case["query"], [], detail)


def test_save_writes_the_same_pixels_as_png_and_no_temp_file(case, tmp_path: Path):
    out = render_explanation(case["query"], case["prototypes"], case["detail"], height=120)
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
        save_explanation(path, render_explanation(case["query"], case["prototypes"], case["detail"], height=120))
    assert os.listdir(tmp_path) == ["klc.png"] and path.read_bytes() == b"old"


def test_without_a_scalable_font_the_bitmap_font_is_used(case, monkeypatch: pytest.MonkeyPatch):
    original = figure.ImageFont.load_default

    def old_pillow(*args, **kwargs):
        if args or kwargs:
            raise TypeError("load_default() takes no arguments")
        return original()

    monkeypatch.setattr(figure.ImageFont, "load_default", old_pillow)
    figure._font.cache_clear()
    try:
        out = render_explanation(case["query"], case["prototypes"], dict(case["detail"], fallback=True), height=120)
    finally:
        figure._font.cache_clear()
    assert out.shape[0] == HEADER_HEIGHT + 120 + FOOTER_HEIGHT
    assert (out[:HEADER_HEIGHT, :160] != 255).any() and (out[HEADER_HEIGHT + 120 :, :160] != 255).any()
