"""Parsing of repeated ``--option key=value`` arguments into keyword arguments for a component."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from xaikit.errors import XaikitError


def parse_options(pairs: Sequence[str]) -> dict[str, Any]:
    """``["k=3", "layers=[8, 9]", "model=facebook/dinov2-base"]`` -> ``{"k": 3, "layers": [8, 9], "model": "facebook/dinov2-base"}``.

    Each value is read as JSON when it parses (numbers, booleans, null, lists, objects) and kept
    as a string otherwise.

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
        try:
            options[key] = json.loads(text)
        except json.JSONDecodeError:
            options[key] = text
    return options
