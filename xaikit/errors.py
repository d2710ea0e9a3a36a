"""Errors xaikit raises on purpose.

Every error here carries a message that is one complete sentence meant for the user; the command line
prints it on one line and exits with :attr:`XaikitError.exit_code` (2). Anything else that escapes is a
bug: the command line reports it as an internal error (exit code 1) and ``--debug`` shows the traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class XaikitError(Exception):
    """Base class of all deliberate xaikit errors; ``str(error)`` is one sentence for the user."""

    exit_code: int = 2


class UnknownKindError(XaikitError):
    """A component kind that xaikit does not define (e.g. ``'segmentr'``)."""


class UnknownComponentError(XaikitError):
    """No plugin registers a component of this kind under this name."""


class UnknownOptionError(XaikitError):
    """An option that the component's factory does not accept."""


class OptionTypeError(XaikitError):
    """An option value that cannot be read as the type its component declares (e.g. ``radius=abc``)."""


class DuplicateComponentError(XaikitError):
    """Two plugins register the same kind and name, so the name is ambiguous."""


class PluginError(XaikitError):
    """A plugin failed to import, to register, or to build the component it registered."""


class PluginContractError(PluginError):
    """A third-party component returned something its interface rules out (a part map of the wrong size, NaN scores)."""


class PluginFailure(PluginError):
    """A third-party plugin's own code raised an unexpected exception; the message names the plugin and the error.

    Its exit code, 3, tells it apart from xaikit's refusals of bad input (2) and xaikit's own bugs (1).
    """

    exit_code: int = 3


class MissingDependencyError(XaikitError):
    """An optional dependency that a component needs is not installed."""


class DatasetError(XaikitError):
    """A dataset on disk is missing, malformed or unreadable (bad row, missing or corrupt image)."""


class CapabilityError(XaikitError):
    """An explainer cannot provide what a metric or command needs from it (e.g. concept maps)."""


def suggest(name: str, candidates: Iterable[str], *, limit: int = 3) -> str:
    """Return ``"; did you mean 'a' or 'b'?"`` for the candidates closest to ``name``, else ``""``.

    Used to end "unknown ..." messages, as in ``unknown segmenter 'clipsge'; did you mean 'clipseg'?``.
    """
    close = difflib.get_close_matches(name, sorted(set(candidates)), n=limit, cutoff=0.6)
    if not close:
        return ""
    quoted = [f"'{c}'" for c in close]
    listed = quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " or " + quoted[-1]
    return f"; did you mean {listed}?"


class WeightsUnavailableError(XaikitError):
    """A model's weights are neither on this machine nor downloadable (no network)."""


class DeviceError(XaikitError):
    """A requested device (e.g. ``cuda``) is not available."""
