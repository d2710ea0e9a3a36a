"""Figure text that is never cut off and never collides: wrapping, greedy label placement, layout checks."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from xaikit.figure_layout import INK, RIGHT, WRONG, Box, Canvas, font, place_labels, readable_class_name, verdict_lines, wrap


@pytest.mark.parametrize("width", [1, 30, 80, 400])
def test_wrap_keeps_every_character_and_every_line_fits(width):
    typeface = font(12)
    text = "White crowned Orange throated Green winged Fan tailed Hookbill " + "x" * 70
    lines = wrap(text, typeface, width)
    assert "".join(lines).replace(" ", "") == text.replace(" ", "")  # nothing dropped
    assert all(typeface.getlength(line) <= width or len(line) == 1 for line in lines)
    assert wrap("", typeface, width) == [""]


def test_wrap_breaks_at_spaces_where_it_can():
    typeface = font(12)
    width = typeface.getlength("Orange throated")
    assert wrap("Orange throated Green winged", typeface, width) == ["Orange throated", "Green winged"]


def test_readable_class_names_and_verdicts():
    assert readable_class_name("001.Black_footed_Albatross") == "Black footed Albatross"
    assert readable_class_name("sparrow") == "sparrow" and readable_class_name("7") == "7"
    assert verdict_lines("A", None) == [("predicted: A", INK)]
    assert verdict_lines("A", "A") == [("true: A", INK), ("predicted: A · correct", RIGHT)]
    assert verdict_lines("A", "B") == [("true: B", INK), ("predicted: A · wrong", WRONG)]


def test_a_label_takes_the_first_free_candidate_above_right_of_its_anchor():
    bounds = Box(0, 0, 200, 100)
    first, second = place_labels(np.array([[100.0, 50.0], [100.0, 50.0]]), np.array([[30, 10], [30, 10]]), bounds, [], clearance=4)
    assert first == Box(104, 36, 134, 46)  # above right, 4 pixels away in x and y
    assert second == Box(104, 54, 134, 64)  # the same anchor again: below right
    assert not first.overlaps(second)


def test_labels_avoid_taken_boxes_and_stay_in_bounds_or_are_left_out():
    bounds = Box(0, 0, 60, 40)
    taken = [Box(0, 0, 60, 20)]  # the top half is taken
    placed = place_labels(np.array([[30.0, 30.0]] * 8), np.array([[20, 8]] * 8), bounds, taken, clearance=2)
    boxes = [box for box in placed if box is not None]
    assert boxes and None in placed  # some fit below, the rest have no room
    for index, box in enumerate(boxes):
        assert box.inside(bounds) and not box.overlaps(taken[0])
        assert not any(box.overlaps(other) for other in boxes[index + 1 :])


def test_many_labels_around_one_point_never_overlap():
    rng = np.random.default_rng(0)
    anchors = rng.uniform(40, 60, (30, 2))
    sizes = rng.integers(10, 40, (30, 2))
    bounds = Box(0, 0, 100, 100)
    boxes = [box for box in place_labels(anchors, sizes, bounds, [], clearance=5) if box is not None]
    assert len(boxes) > 5
    assert all(box.inside(bounds) for box in boxes)
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1 :])


def test_a_canvas_records_its_texts_and_the_figure_reports_layout_problems():
    canvas = Canvas(Image.new("RGB", (120, 60), "white"))
    first = canvas.text((2, 2), "hello", font(12), INK)
    canvas.label(Box(60, 2, 100, 18), "label", font(12), (INK, (230, 230, 230), None))
    figure = canvas.figure()
    assert [text.text for text in figure.texts] == ["hello", "label"] and figure.texts[0].box == first
    assert figure.problems() == [] and figure.image.shape == (60, 120, 3)
    canvas.text((4, 4), "again", font(12), INK)  # on top of "hello"
    canvas.text((110, 50), "edge", font(12), INK)  # past the right and bottom edges
    problems = canvas.figure().problems()
    assert len(problems) == 2
    assert "'edge'" in problems[0] and "outside the 120x60 canvas" in problems[0]
    assert "'hello'" in problems[1] and "overlaps 'again'" in problems[1]
