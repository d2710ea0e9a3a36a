"""Parsing of repeated ``--option key=value`` arguments into keyword arguments for a component."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from xaikit.errors import XaikitError
from xaikit.options import OptionText


def parse_options(pairs: Sequence[str]) -> dict[str, Any]:
    """``["k=3", "layers=[8, 9]"]`` -> ``{"k": OptionText("3"), "layers": OptionText("[8, 9]")}``.

    Values stay text (:class:`~xaikit.options.OptionText`) until the component they go to is known:
    :func:`~xaikit.options.coerce_options` then reads each as the type its factory declares.

    Raises:
        XaikitError: for a pair without ``=`` or with an empty key, or a key given twice.
    """
    options: dict[str, Any] = {}
    for pair in pairs:
        key, equals, text = pair.partition("=")
        key = key.strip()
        if not equals or not key:
            raise XaikitError(f"option {pair!r} is not key=value")
        if key in options:
            raise XaikitError(f"option '{key}' is given twice")
        options[key] = OptionText(text)
    return options
