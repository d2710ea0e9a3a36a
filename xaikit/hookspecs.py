"""The hooks a plugin implements to add components to xaikit.

A plugin is a module (or any object) with functions marked ``@xaikit.hookimpl`` whose names are the
hooks below, made known to xaikit through an entry point in the group ``xaikit``::

    # pyproject.toml of the plugin package
    [project.entry-points.xaikit]
    my_parts = "my_parts_plugin"

    # my_parts_plugin.py
    import xaikit

    @xaikit.hookimpl
    def register_segmenters(register):
        register("grid", "my_parts_plugin.grid:GridSegmenter",
                 summary="Splits an image into a fixed grid of parts.")

There is one hook per kind of component, ``register_<kind>s(register)``. Each receives a
:class:`Register` callback and calls it once per component. Registering must be cheap: pass the
factory as a ``"module:attribute"`` string (imported only when the component is built) or as a
callable from a module that imports no heavy library at import time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

import pluggy

PROJECT_NAME = "xaikit"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)
"""Marks a plugin's hook functions: decorate ``register_<kind>s(register)`` with ``@xaikit.hookimpl``."""


class Register(Protocol):
    """The callback each ``register_<kind>s`` hook receives."""

    def __call__(
        self,
        name: str,
        factory: Callable[..., Any] | str,
        *,
        summary: str | None = None,
        requires: Sequence[str] = (),
        install: str | None = None,
        variant_arg: str | None = None,
    ) -> None:
        """Register one component.

        Args:
            name: the component's name within its kind: lower case letters, digits and ``_.+-``
                (for example ``"vlpart"``, ``"dino-parts"``). Must be unique across all plugins.
            factory: a callable that takes the component's options as keyword arguments and returns
                the component, or a ``"module:attribute"`` string naming one (preferred: nothing is
                imported until the component is built).
            summary: one line shown by ``xaikit plugins`` and ``xaikit list``; required when
                ``factory`` is a string, else the first line of the factory's docstring is used.
            requires: top-level import names of optional dependencies (``"detectron2"``); when one
                is missing the component is listed as ``unavailable`` and refused when built.
            install: what to tell the user to install when a requirement is missing.
            variant_arg: makes the component a family addressed as ``name:<variant>`` (for example
                ``timm:vit_small_patch14_dinov2``); the text after the colon is passed to the
                factory as this keyword argument.
        """


@hookspec
def register_backbones(register: Register) -> None:
    """Register :class:`xaikit.Backbone` factories by calling ``register`` once per backbone."""


@hookspec
def register_segmenters(register: Register) -> None:
    """Register :class:`xaikit.Segmenter` factories by calling ``register`` once per segmenter."""


@hookspec
def register_matchers(register: Register) -> None:
    """Register :class:`xaikit.Matcher` factories by calling ``register`` once per matcher."""


@hookspec
def register_explainers(register: Register) -> None:
    """Register :class:`xaikit.Explainer` factories by calling ``register`` once per explainer."""


@hookspec
def register_metrics(register: Register) -> None:
    """Register :class:`xaikit.Metric` factories by calling ``register`` once per metric."""


@hookspec
def register_datasets(register: Register) -> None:
    """Register :class:`xaikit.Dataset` factories by calling ``register`` once per dataset."""


KINDS: tuple[str, ...] = ("backbone", "segmenter", "matcher", "explainer", "metric", "dataset")
"""Every kind of component, in the order xaikit lists them; hook ``register_<kind>s`` adds one."""
