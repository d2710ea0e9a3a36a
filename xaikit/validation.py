"""Validation of component options: one clear sentence for a value of the wrong type or range.

Plugins call these in their constructors, so every component refuses a bad option the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from xaikit.errors import XaikitError

__all__ = ["choice_option", "flag_option", "integer_option", "number_option"]


def integer_option(name: str, value: Any, minimum: int) -> int:
    """``value`` if it is an integer (not a bool) of at least ``minimum``.

    Raises:
        XaikitError: naming the option, the bound and the value.
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise XaikitError(f"option {name} must be an integer of at least {minimum}, got {value!r}")
    return value


def number_option(name: str, value: Any, low: float, high: float = float("inf")) -> float:
    """``value`` as a float if it is a number (not a bool) in ``[low, high]``.

    Raises:
        XaikitError: naming the option, the bounds and the value.
    """
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        bounds = f"at least {low}" if high == float("inf") else f"between {low} and {high}"
        raise XaikitError(f"option {name} must be a number {bounds}, got {value!r}")
    return float(value)


def choice_option(name: str, value: Any, choices: Sequence[str]) -> str:
    """``value`` if it is one of ``choices``.

    Raises:
        XaikitError: naming the option, the value and the choices.
    """
    if value not in choices:
        raise XaikitError(f"unknown {name} {value!r}; use one of {', '.join(choices)}")
    return value


def flag_option(name: str, value: Any) -> bool:
    """``value`` if it is a bool.

    Raises:
        XaikitError: naming the option and the value.
    """
    if not isinstance(value, bool):
        raise XaikitError(f"option {name} must be true or false, got {value!r}")
    return value
