"""A factory's documentation and options, read from its source without importing it.

``xaikit info`` shows a component's docstring and options. Importing the factory's module would import
torch (about 4 s) and fail for a component whose optional dependency is missing, so for a factory
registered as ``"module:attribute"`` the module's source is parsed instead (:mod:`ast`); the import is
the fallback only where the source does not define the attribute plainly.
"""

from __future__ import annotations

import ast
import importlib.util
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["FactoryDoc", "describe_factory"]


@dataclass(frozen=True)
class FactoryDoc:
    """What ``xaikit info`` prints about a factory.

    Attributes:
        doc: its docstring (a class's, or a function's), or ``None``.
        options: ``(name, default)`` for each keyword option, the default as written in the source
            (or ``"required"``).
    """

    doc: str | None
    options: list[tuple[str, str]]


def describe_factory(factory: str | Callable[..., Any], load: Callable[[], Callable[..., Any]]) -> FactoryDoc:
    """Document ``factory``: from its source when it is a ``"module:attribute"`` string, else by inspection.

    Args:
        factory: the registered factory.
        load: imports the factory; called only when the source cannot be read (the fallback).
    """
    if isinstance(factory, str):
        found = _from_source(factory)
        if found is not None:
            return found
        factory = load()
    return _from_object(factory)


def _from_source(target: str) -> FactoryDoc | None:
    module, _, attribute = target.partition(":")
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return None
    try:
        tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
    except (OSError, SyntaxError, UnicodeDecodeError):
        return None
    node = next((item for item in tree.body if isinstance(item, ast.ClassDef | ast.FunctionDef) and item.name == attribute), None)
    if isinstance(node, ast.ClassDef):
        init = next((item for item in node.body if isinstance(item, ast.FunctionDef) and item.name == "__init__"), None)
        return None if init is None else FactoryDoc(ast.get_docstring(node), _options(init.args, skip_first=True))
    if isinstance(node, ast.FunctionDef):
        return FactoryDoc(ast.get_docstring(node), _options(node.args, skip_first=False))
    return None


def _options(arguments: ast.arguments, *, skip_first: bool) -> list[tuple[str, str]]:
    """``(name, default)`` of the keyword-capable parameters, as :func:`inspect.signature` would give them."""
    parameters = [*arguments.posonlyargs, *arguments.args]
    defaults: list[ast.expr | None] = [None] * (len(parameters) - len(arguments.defaults)) + list(arguments.defaults)
    pairs = list(zip(parameters, defaults, strict=True))[1 if skip_first else 0 :]
    pairs = [(argument, default) for argument, default in pairs if argument not in arguments.posonlyargs]
    pairs += list(zip(arguments.kwonlyargs, arguments.kw_defaults, strict=True))
    return [(argument.arg, "required" if default is None else ast.unparse(default)) for argument, default in pairs]


def _from_object(factory: Callable[..., Any]) -> FactoryDoc:
    from xaikit.registry import keyword_options

    found = keyword_options(factory)
    options = [(p.name, "required" if p.default is inspect.Parameter.empty else repr(p.default)) for p in (found[0] if found else [])]
    return FactoryDoc(inspect.getdoc(factory), options)
