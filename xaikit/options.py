"""Typed component options: every value is converted to the type its factory declares, or refused in one sentence.

Values typed on the command line (``--option KEY=TEXT``) arrive as :class:`OptionText` and are read
according to the parameter's annotation (or, without one, the type of its default): ``bool`` accepts
``true/false/1/0/yes/no`` only, ``int`` and ``float`` must parse (``nan`` is refused), ``str`` keeps
the text exactly as typed, lists are JSON (``[8, 9]``), and ``null``/``none`` fills an optional
parameter. Values given from Python are checked against the same types, so ``"maybe"`` is never taken
as true by ``bool(str)``. A parameter without a usable annotation or default receives the text parsed
as JSON when it parses, else the text itself.
"""

from __future__ import annotations

import collections.abc
import inspect
import json
import math
import types
import typing
from collections.abc import Callable
from typing import Any

from xaikit.errors import OptionTypeError

__all__ = ["OptionText", "coerce_options"]

_TRUE = frozenset({"true", "1", "yes"})
_FALSE = frozenset({"false", "0", "no"})
_SEQUENCES = (list, tuple, collections.abc.Sequence)


class OptionText(str):
    """An option value exactly as typed on the command line, converted once its component's types are known."""

    def parsed(self) -> Any:
        """The text read as JSON when it parses (numbers, booleans, null, lists, objects), else the text."""
        try:
            return json.loads(self)
        except json.JSONDecodeError:
            return str(self)


class _Refused(Exception):
    """This type cannot take the value (the next member of a union may)."""


def coerce_options(label: str, factory: Callable[..., Any], options: dict[str, Any]) -> dict[str, Any]:
    """``options`` with every value converted to the type ``factory`` declares for it.

    Args:
        label: how the component is named in messages, e.g. ``"segmenter 'dino-parts'"``.
        factory: the component's factory (a class or function); its annotations and defaults give the types.
        options: keyword options, from Python or as :class:`OptionText` from the command line.

    Raises:
        OptionTypeError: a value its declared type cannot take, naming the option and the component.
    """
    types_by_name = _declared_types(factory)
    converted = {}
    for name, value in options.items():
        declared = types_by_name.get(name)
        if declared is None:
            converted[name] = value.parsed() if isinstance(value, OptionText) else value
            continue
        try:
            converted[name] = _convert(value, declared)
        except _Refused:
            shown = str(value) if isinstance(value, OptionText) else value
            raise OptionTypeError(f"{label} option '{name}' must be {_describe(declared)}, got {shown!r}") from None
    return converted


def _declared_types(factory: Callable[..., Any]) -> dict[str, Any]:
    """Parameter name -> annotation (resolved), or the type of its default where the annotation is unusable."""
    target = factory.__init__ if inspect.isclass(factory) else factory
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):
        return {}
    try:
        hints = typing.get_type_hints(target)
    except Exception:  # noqa: BLE001 - unresolvable annotations (names under TYPE_CHECKING): fall back on defaults
        hints = {}
    declared = {}
    for parameter in signature.parameters.values():
        hint = hints.get(parameter.name)
        if hint is None or hint is Any:
            default = parameter.default
            hint = type(default) if isinstance(default, bool | int | float | str) else None
        if hint is not None:
            declared[parameter.name] = hint
    return declared


def _members(declared: Any) -> list[Any]:
    """The members of a union in the order they are tried: None, bool, int, float, containers, others, str."""
    members = list(typing.get_args(declared)) if _is_union(declared) else [declared]
    order = {type(None): 0, bool: 1, int: 2, float: 3, str: 6}
    return sorted(members, key=lambda member: order.get(member, 4 if typing.get_origin(member) in _SEQUENCES or member in _SEQUENCES else 5))


def _is_union(declared: Any) -> bool:
    return typing.get_origin(declared) in (typing.Union, types.UnionType)


def _convert(value: Any, declared: Any) -> Any:
    """``value`` as ``declared``; :class:`_Refused` when no member of it takes the value."""
    for member in _members(declared):
        try:
            return _convert_one(value, member)
        except _Refused:
            continue
    raise _Refused


def _convert_one(value: Any, member: Any) -> Any:
    text = str(value).strip() if isinstance(value, OptionText) else None
    if member is type(None):
        if value is None or (text is not None and text.lower() in ("null", "none")):
            return None
        raise _Refused
    if member is bool:
        return _boolean(value, text)
    if member is int:
        return _integer(value, text)
    if member is float:
        return _number(value, text)
    if member is str:
        if isinstance(value, str):
            return str(value)
        raise _Refused
    origin = typing.get_origin(member) or member
    if origin in _SEQUENCES:
        return _sequence(value, text, member, origin)
    if typing.get_origin(member) is typing.Literal:
        choice = value.parsed() if isinstance(value, OptionText) else value
        if choice in typing.get_args(member):
            return choice
        raise _Refused
    if origin in (dict, collections.abc.Mapping):
        mapping = value.parsed() if text is not None else value
        if isinstance(mapping, dict):
            return mapping
        raise _Refused
    if isinstance(origin, type):
        if isinstance(value, OptionText):
            raise _Refused  # text is never an object of a class other than str
        try:
            if isinstance(value, origin):
                return value
        except TypeError:  # a Protocol that cannot be checked at run time
            return value
        raise _Refused
    return value.parsed() if isinstance(value, OptionText) else value  # a type we cannot check (a TypeVar)


def _boolean(value: Any, text: str | None) -> bool:
    if isinstance(value, bool):
        return value
    word = text.lower() if text is not None else value.lower() if isinstance(value, str) else None
    if word in _TRUE or (type(value) is int and value == 1):
        return True
    if word in _FALSE or (type(value) is int and value == 0):
        return False
    raise _Refused


def _integer(value: Any, text: str | None) -> int:
    if text is not None:
        try:
            return int(text)
        except ValueError:
            raise _Refused from None
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Refused
    return value


def _number(value: Any, text: str | None) -> float:
    if text is not None:
        try:
            number = float(text)
        except ValueError:
            raise _Refused from None
    elif isinstance(value, bool) or not isinstance(value, int | float):
        raise _Refused
    else:
        number = float(value)
    if math.isnan(number):
        raise _Refused
    return number


def _sequence(value: Any, text: str | None, member: Any, origin: Any) -> Any:
    items = value.parsed() if text is not None else value
    if isinstance(items, str) or not isinstance(items, list | tuple):
        raise _Refused
    arguments = [argument for argument in typing.get_args(member) if argument is not Ellipsis]
    converted = [_convert(item, arguments[0]) for item in items] if arguments else list(items)
    return tuple(converted) if origin is tuple else converted


def _describe(declared: Any) -> str:
    """``"a number"``, ``"an integer or null"``, ``"true or false"``: what the type takes, for messages."""
    words = {type(None): "null", bool: "true or false (or yes/no, 1/0)", int: "an integer", float: "a number", str: "text"}
    described = []
    for member in _members(declared):
        origin = typing.get_origin(member) or member
        if member in words:
            described.append(words[member])
        elif origin in _SEQUENCES:
            described.append("a list such as [1, 2]")
        elif typing.get_origin(member) is typing.Literal:
            described.append("one of " + ", ".join(map(str, typing.get_args(member))))
        else:
            described.append(f"a {getattr(member, '__name__', member)}")
    return " or ".join(dict.fromkeys(described))
