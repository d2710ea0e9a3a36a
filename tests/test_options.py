"""Typed options: command-line text and Python values are converted to the declared type or refused in one sentence."""

from __future__ import annotations

import os
from collections.abc import Sequence

import pytest

import xaikit

from xaikit.cli.options import parse_options
from xaikit.interfaces import Backbone
from xaikit.errors import OptionTypeError
from xaikit.options import OptionText, coerce_options


class Factory:
    """A component factory declaring one option of every kind of type xaikit's built-ins use."""

    def __init__(
        self,
        flag: bool = False,
        count: int = 1,
        ratio: float = 0.5,
        name: str = "x",
        limit: int | None = None,
        layers: list[int] | None = None,
        sizes: Sequence[int] = (1,),
        backbone: str | Backbone = "demo-vit",
        vocabulary: str | Sequence[str] | None = None,
        root: str | os.PathLike[str] | None = None,
        untyped=3,  # noqa: ANN001 - the default's type decides
        anything=None,  # noqa: ANN001 - nothing to go by: JSON or text
    ) -> None:
        pass


def coerce(**options):
    return coerce_options("toy 'factory'", Factory, {key: OptionText(value) if isinstance(value, str) else value for key, value in options.items()})


@pytest.mark.parametrize(("text", "value"), [("true", True), ("False", False), ("1", True), ("0", False), ("yes", True), ("NO", False)])
def test_booleans_accept_only_the_documented_words(text, value):
    assert coerce(flag=text) == {"flag": value}


@pytest.mark.parametrize("text", ["maybe", "2", "", "truee", "null"])
def test_a_word_that_is_not_a_boolean_is_refused_naming_the_option(text):
    with pytest.raises(OptionTypeError, match=r"^toy 'factory' option 'flag' must be true or false"):
        coerce(flag=text)


def test_python_values_are_checked_too():
    assert coerce_options("toy", Factory, {"flag": "false", "ratio": 2}) == {"flag": False, "ratio": 2.0}
    with pytest.raises(OptionTypeError, match="'flag' must be true or false"):
        coerce_options("toy", Factory, {"flag": "maybe"})
    with pytest.raises(OptionTypeError, match="'count' must be an integer, got 2.5"):
        coerce_options("toy", Factory, {"count": 2.5})
    with pytest.raises(OptionTypeError, match="'count' must be an integer, got True"):
        coerce_options("toy", Factory, {"count": True})


@pytest.mark.parametrize(("option", "text"), [("count", "abc"), ("count", "2.5"), ("ratio", "abc"), ("ratio", "nan"), ("limit", "three")])
def test_numbers_must_parse(option, text):
    with pytest.raises(OptionTypeError, match=f"option '{option}' must be"):
        coerce(**{option: text})


def test_numbers_none_and_lists_parse_to_their_types():
    assert coerce(count="7", ratio="1e-3", limit="none", layers="[8, 9]", sizes="[2, 3]") == {
        "count": 7, "ratio": 0.001, "limit": None, "layers": [8, 9], "sizes": [2, 3],
    }
    with pytest.raises(OptionTypeError, match="'layers' must be null or a list"):
        coerce(layers='["a"]')


def test_text_stays_exactly_as_typed():
    assert coerce(name="007", backbone="1e5", root="123", vocabulary="bird head,bird wing") == {
        "name": "007", "backbone": "1e5", "root": "123", "vocabulary": "bird head,bird wing",
    }
    assert coerce(vocabulary='["bird head", "bird wing"]') == {"vocabulary": ["bird head", "bird wing"]}


def test_objects_pass_where_their_class_is_declared():
    built = xaikit.create("backbone", "demo-vit", device="cpu")
    assert coerce_options("toy", Factory, {"backbone": built})["backbone"] is built
    with pytest.raises(OptionTypeError, match="'backbone' must be a Backbone or text"):
        coerce_options("toy", Factory, {"backbone": 3})


def test_without_an_annotation_the_default_decides_and_else_json():
    assert coerce(untyped="4", anything="[1, 2]") == {"untyped": 4, "anything": [1, 2]}
    assert coerce(anything="plain words") == {"anything": "plain words"}
    with pytest.raises(OptionTypeError, match="'untyped' must be an integer"):
        coerce(untyped="four")


def test_the_command_line_keeps_text_until_the_component_is_known():
    parsed = parse_options(["k=3", "name=007"])
    assert parsed == {"k": "3", "name": "007"} and all(isinstance(value, OptionText) for value in parsed.values())
