"""The IVPT figure: the image, one concept overlay per layer and the final concepts' importance bars."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from xaikit.errors import XaikitError
from xaikit.figure_layout import RIGHT, WRONG, Figure, font, line_height
from xaikit_ivpt.figure import (
    CHART_MIN_WIDTH,
    GAP,
    MARGIN,
    OVERLAY_ALPHA,
    ROW_HEIGHT,
    UNLINKED_GREY,
    concept_colour,
    draw_ivpt,
)

FLAT_RGB = (40, 90, 160)


def _image(height: int = 48, width: int = 64, *, flat: bool = False) -> np.ndarray:
    """A flat image, or a deterministic random one."""
    if flat:
        image = np.empty((height, width, 3), np.uint8)
        image[:] = FLAT_RGB
        return image
    return np.random.default_rng(1).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _one_hot(labels: np.ndarray, channels: int) -> np.ndarray:
    """A ``(channels, h, w)`` float32 map whose argmax is ``labels``."""
    probabilities = np.full((channels, *labels.shape), 0.1 / channels, np.float32)
    for channel in range(channels):
        probabilities[channel][labels == channel] = 0.9
    return probabilities


def _random_maps(channels: list[int], size: tuple[int, int] = (6, 6)) -> list[np.ndarray]:
    rng = np.random.default_rng(2)
    return [rng.random((n, *size)).astype(np.float32) for n in channels]


def _inputs(channels: list[int], **changes):
    """Consistent keyword arguments for layers of ``channels`` concepts each, with ``changes`` applied."""
    groups = channels[-1] - 1
    arguments = dict(
        image=_image(),
        layer_maps=_random_maps(channels),
        layer_names=[f"layer {index}" for index in range(len(channels))],
        importance=[float(value) for value in np.linspace(0.9, -0.3, groups)],
        concept_names=[f"concept {index + 1}" for index in range(groups)],
        hierarchy=[[index % groups for index in range(n - 1)] for n in channels[:-1]],
        predicted="Orange crowned Warbler",
        panel_size=40,
    )
    arguments.update(changes)
    return arguments


def _panel(drawn: Figure, index: int) -> np.ndarray:
    """Panel ``index`` (0 = the image, ``l`` = layer ``l``, counted from 1) of a drawn figure."""
    box = drawn.regions["input" if index == 0 else f"layer {index}"]
    return drawn.image[int(box.top) : int(box.bottom), int(box.left) : int(box.right)]


def _blend(base, colour) -> np.ndarray:
    return np.rint(np.asarray(base, np.float64) * (1 - OVERLAY_ALPHA) + np.asarray(colour) * OVERLAY_ALPHA)


def _chart_row(drawn: Figure, concept: int) -> np.ndarray:
    """The middle pixel row of ``concept``'s bar in the importance chart (after its heading line)."""
    top = int(drawn.regions["chart"].top) + line_height(font(12)) + concept * ROW_HEIGHT
    return drawn.image[top + ROW_HEIGHT // 2]


def _runs(row: np.ndarray, colour) -> list[tuple[int, int]]:
    """``[start, stop)`` column runs of pixels exactly ``colour`` in one figure row."""
    hit = np.all(row == np.asarray(colour, np.uint8), axis=-1).astype(np.int8)
    edges = np.flatnonzero(np.diff(np.concatenate([[0], hit, [0]])))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist()))


def _bar(drawn: Figure, concept: int) -> tuple[int, int]:
    """The longest run of ``concept``'s colour on its chart row: its bar (the swatch is shorter)."""
    runs = _runs(_chart_row(drawn, concept), concept_colour(concept))
    return max(runs, key=lambda run: run[1] - run[0])


def test_returns_an_rgb_uint8_figure_of_the_documented_size():
    drawn = draw_ivpt(**_inputs([17, 14, 11, 8, 5], panel_size=160))
    figure = drawn.image
    assert figure.dtype == np.uint8 and figure.ndim == 3 and figure.shape[2] == 3
    assert figure.shape[1] == 2 * MARGIN + 6 * 160 + 5 * GAP  # the image and five layers
    lefts = [drawn.regions[name].left for name in ("input", "layer 1", "layer 2", "layer 3", "layer 4", "layer 5")]
    assert lefts == [MARGIN + index * (160 + GAP) for index in range(6)]
    chart = drawn.regions["chart"]
    assert chart.top > drawn.regions["input"].bottom and chart.bottom == figure.shape[0] - MARGIN
    assert chart.height == line_height(font(12)) + 4 * ROW_HEIGHT


def test_the_figure_widens_with_every_layer():
    widths = [draw_ivpt(**_inputs([5] * layers, panel_size=160)).image.shape[1] for layers in (1, 2, 3, 4)]
    assert widths == sorted(set(widths))
    assert widths[0] >= CHART_MIN_WIDTH


def test_the_image_panel_is_the_resized_image():
    image = _image()
    drawn = draw_ivpt(**_inputs([5], image=image))
    expected = np.asarray(Image.fromarray(image).resize((40, 40), Image.Resampling.BILINEAR))
    np.testing.assert_array_equal(_panel(drawn, 0), expected)


def test_a_final_concept_region_is_blended_in_its_colour_and_background_left_alone():
    labels = np.zeros((4, 6), np.int64)
    labels[:, 3:] = 2  # left half: concept 0, right half: background (channel 2 of 3)
    drawn = draw_ivpt(**_inputs([3], layer_maps=[_one_hot(labels, 3)], panel_size=60))
    plain, overlay = _panel(drawn, 0), _panel(drawn, 1)
    np.testing.assert_array_equal(overlay[:, 30:], plain[:, 30:])
    assert not np.array_equal(overlay[:, :30], plain[:, :30])
    for y, x in ((30, 15), (10, 10), (50, 20)):
        np.testing.assert_array_equal(overlay[y, x], _blend(plain[y, x], concept_colour(0)))


def test_fine_concepts_take_their_coarse_concept_colour_and_unlinked_ones_grey():
    fine = np.repeat(np.array([[0, 0, 1, 1, 3, 3]]), 4, axis=0)  # fine 0 | fine 1 | background
    final = np.ones((4, 6), np.int64)  # everywhere final concept 1 of 2
    arguments = _inputs(
        [4, 3],
        image=_image(flat=True),
        layer_maps=[_one_hot(fine, 4), _one_hot(final, 3)],
        hierarchy=[[1, None, 0]],
        panel_size=60,
    )
    drawn = draw_ivpt(**arguments)
    fine_panel, final_panel = _panel(drawn, 1), _panel(drawn, 2)
    np.testing.assert_array_equal(fine_panel[30, 10], _blend(FLAT_RGB, concept_colour(1)))
    np.testing.assert_array_equal(fine_panel[30, 30], _blend(FLAT_RGB, UNLINKED_GREY))
    np.testing.assert_array_equal(fine_panel[30, 50], FLAT_RGB)
    # the coarse concept the fine one is grouped into shows the same colour in the final layer
    np.testing.assert_array_equal(final_panel[30, 30], fine_panel[30, 10])


def test_the_largest_importance_has_the_longest_bar():
    drawn = draw_ivpt(**_inputs([5], importance=[0.2, 0.9, 0.5, 0.05]))
    lengths = [stop - start for start, stop in (_bar(drawn, concept) for concept in range(4))]
    assert lengths[1] == max(lengths)
    assert lengths[1] > lengths[2] > lengths[0]
    assert lengths[1] / lengths[2] == pytest.approx(0.9 / 0.5, rel=0.05)


def test_negative_importance_is_drawn_left_of_the_zero_axis():
    drawn = draw_ivpt(**_inputs([4], importance=[0.6, -0.3, 0.0]))
    positive, negative = _bar(drawn, 0), _bar(drawn, 1)
    assert negative[1] < positive[0]  # the negative bar ends before the axis, the positive one starts after it
    assert positive[0] - negative[1] <= 2
    assert (positive[1] - positive[0]) / (negative[1] - negative[0]) == pytest.approx(2.0, rel=0.05)
    assert len(_runs(_chart_row(drawn, 2), concept_colour(2))) == 1  # a zero value: only its swatch


def test_all_negative_importance_draws_every_bar_leftwards_of_one_axis():
    drawn = draw_ivpt(**_inputs([3], importance=[-0.4, -0.8]))
    first, second = _bar(drawn, 0), _bar(drawn, 1)
    assert first[1] == second[1]
    assert second[1] - second[0] > first[1] - first[0]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"layer_names": ["only one"]}, "layer names"),
        ({"hierarchy": []}, "hierarchy"),
        ({"hierarchy": [[0, 1, 2], [0, 1]]}, "hierarchy"),
        ({"hierarchy": [[0, 1, 2], [0, 1, 2, 0]]}, "links"),
        ({"hierarchy": [[0, 1, 2, 0, 1], [0, 1, 2, 4]]}, "links to 4"),
        ({"importance": [0.1, 0.2]}, "importance"),
        ({"importance": [0.1, float("nan"), 0.2]}, "finite"),
        ({"concept_names": ["a", "b", "c", "d"]}, "concept names"),
        ({"layer_maps": []}, "at least one"),
        ({"layer_maps": _random_maps([6, 5, 4])[:2] + [np.zeros((4, 6), np.float32)]}, "(n, h, w)"),
        ({"layer_maps": _random_maps([6, 5, 4])[:2] + [np.zeros((1, 4, 6), np.float32)]}, "channels"),
        ({"image": np.zeros((8, 8), np.uint8)}, "uint8"),
        ({"image": np.zeros((8, 8, 4), np.uint8)}, "uint8"),
        ({"image": np.zeros((8, 8, 3), np.float32)}, "uint8"),
        ({"image": np.zeros((0, 8, 3), np.uint8)}, "uint8"),
        ({"panel_size": 0}, "panel size"),
    ],
)
def test_inconsistent_inputs_raise_one_sentence(changes, message):
    with pytest.raises(XaikitError) as raised:
        draw_ivpt(**_inputs([6, 5, 4], **changes)).image
    text = str(raised.value)
    assert message in text and text.endswith(".") and "\n" not in text


@pytest.mark.parametrize(
    ("image_shape", "map_shapes", "panel_size"),
    [
        ((20, 30), [(3, 2, 3)], 160),
        ((20, 30), [(7, 3, 5), (2, 1, 1)], 16),
        ((31, 17), [(9, 5, 11), (4, 2, 7), (6, 13, 3)], 33),
        ((600, 900), [(17, 14, 14), (14, 14, 14), (5, 28, 7)], 160),
    ],
)
def test_tiny_large_and_non_square_inputs_render(image_shape, map_shapes, panel_size):
    rng = np.random.default_rng(3)
    maps = [rng.random(shape).astype(np.float32) for shape in map_shapes]
    groups = map_shapes[-1][0] - 1
    drawn = draw_ivpt(
        **_inputs(
            [shape[0] for shape in map_shapes],
            image=_image(*image_shape),
            layer_maps=maps,
            importance=rng.normal(size=groups).tolist(),
            panel_size=panel_size,
        )
    )
    layers = len(map_shapes)
    assert drawn.image.dtype == np.uint8
    assert drawn.image.shape[1] >= max(2 * MARGIN + (layers + 1) * panel_size + layers * GAP, CHART_MIN_WIDTH)
    assert drawn.problems() == []


def test_unused_channels_all_background_maps_and_zero_importance():
    background = np.zeros((5, 4, 4), np.float32)
    background[-1] = 1.0
    only_first = np.zeros((6, 3, 3), np.float32)
    only_first[0] = 1.0  # the other four concepts are never the argmax
    arguments = _inputs([6, 5], layer_maps=[only_first, background], importance=[0.0] * 4)
    drawn = draw_ivpt(**arguments)
    np.testing.assert_array_equal(_panel(drawn, 2), _panel(drawn, 0))
    for concept in range(4):  # no bars, only swatches
        assert len(_runs(_chart_row(drawn, concept), concept_colour(concept))) == 1


def test_many_concepts_wrap_around_the_palette():
    drawn = draw_ivpt(**_inputs([41], importance=list(np.linspace(-1, 1, 40))))
    assert drawn.regions["chart"].height == line_height(font(12)) + 40 * ROW_HEIGHT
    assert drawn.problems() == []


@pytest.mark.parametrize("true", [None, "Orange crowned Warbler", "White crowned Orange throated Green winged Fan tailed Hookbill"])
def test_the_true_class_and_the_verdict_are_written_in_green_or_red(true):
    drawn = draw_ivpt(**_inputs([5], true=true))
    texts = {text.text: text.box for text in drawn.texts}
    if true is None:
        assert "predicted: Orange crowned Warbler" in texts and not any(text.startswith("true") for text in texts)
        return
    right = true == "Orange crowned Warbler"
    verdict = f"predicted: Orange crowned Warbler · {'correct' if right else 'wrong'}"
    assert verdict in texts
    box = texts[verdict]
    pixels = drawn.image[int(box.top) : int(box.bottom), int(box.left) : int(box.right)]
    assert (pixels == (RIGHT if right else WRONG)).all(axis=-1).any()
    assert drawn.problems() == []


@pytest.mark.parametrize("panel_size", [16, 40, 160])
def test_long_names_wrap_or_widen_the_figure_and_nothing_overlaps(panel_size):
    long_class = "001.White_crowned_Orange_throated_Green_winged_Fan_tailed_Hookbill".split(".", 1)[1].replace("_", " ")
    names = ["right wing", "concept 2", "a concept named after a long list of parts", "Pseudo" + "x" * 60]
    drawn = draw_ivpt(
        **_inputs(
            [9, 5], layer_names=["block 11 of a very deep transformer", "final"], concept_names=names,
            predicted=long_class, true="Pseudo" + "y" * 60, panel_size=panel_size,
        )
    )
    assert drawn.problems() == []
    texts = [text.text for text in drawn.texts]
    assert all(name in texts for name in names)  # chart names are never cut: the figure widens
    written = "".join(texts).replace(" ", "")
    assert long_class.replace(" ", "") in written and "block11ofaverydeeptransformer" in written
    assert not any(text.endswith("...") for text in texts)


def test_rendering_is_deterministic():
    first = draw_ivpt(**_inputs([17, 14, 11, 8, 5])).image
    second = draw_ivpt(**_inputs([17, 14, 11, 8, 5])).image
    np.testing.assert_array_equal(first, second)
