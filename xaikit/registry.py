"""The component registry: loads plugins, records what they register, and builds components by name.

Plugins come from entry points in the group ``xaikit`` (xaikit's own built-ins included, declared in
its ``pyproject.toml`` exactly as a third party declares them) or from :meth:`Registry.register_plugin`.
Each plugin is isolated: if it fails to import, to pass pluggy's validation, or raises while
registering, none of its components are kept, the failure is recorded as its ``error`` status, and
everything else keeps working. Listing never imports a component's module: factories given as
``"module:attribute"`` strings are imported only by :meth:`Registry.create`.

Set the environment variable ``XAIKIT_DISABLE_PLUGIN_AUTOLOAD=1`` to skip third-party entry points
(xaikit's built-in plugins still load); such plugins are then listed with status ``disabled``.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import inspect
import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import pluggy

from xaikit import hookspecs
from xaikit.options import coerce_options
from xaikit.errors import (
    DuplicateComponentError,
    MissingDependencyError,
    PluginError,
    UnknownComponentError,
    UnknownKindError,
    UnknownOptionError,
    suggest,
)

ENTRY_POINT_GROUP = "xaikit"
DISABLE_AUTOLOAD_ENV = "XAIKIT_DISABLE_PLUGIN_AUTOLOAD"
PROJECT_DISTRIBUTION = "xaikit"
KINDS = hookspecs.KINDS
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.+-]*$")
_INTERFACES = {
    "backbone": "Backbone",
    "segmenter": "Segmenter",
    "matcher": "Matcher",
    "explainer": "Explainer",
    "metric": "Metric",
    "dataset": "Dataset",
}


def _as_json(record: Any) -> dict[str, Any]:
    return {key: list(value) if isinstance(value, tuple) else value for key, value in asdict(record).items()}


@dataclass(frozen=True)
class ComponentInfo:
    """What :func:`xaikit.list_components` reports about one registered component.

    ``status`` is ``"ok"``; ``"unavailable"`` when a required optional dependency is missing;
    or ``"error"`` when the name is ambiguous because two plugins register it (see ``error``).
    """

    kind: str
    name: str
    summary: str
    plugin: str
    version: str | None
    status: str = "ok"
    error: str | None = None
    requires: tuple[str, ...] = ()
    variant_arg: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict of every field (tuples become lists)."""
        return _as_json(self)


@dataclass(frozen=True)
class PluginInfo:
    """What :func:`xaikit.list_plugins` reports about one plugin.

    ``status`` is ``"ok"``, ``"error"`` (it failed to import or register; see ``error``) or
    ``"disabled"`` (a third-party entry point skipped because autoloading is turned off).
    """

    name: str
    distribution: str | None
    version: str | None
    builtin: bool
    status: str = "ok"
    error: str | None = None
    components: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict of every field (tuples become lists)."""
        return _as_json(self)


@dataclass(frozen=True)
class _Entry:
    """One registration as a plugin made it."""

    kind: str
    name: str
    factory: Callable[..., Any] | str
    summary: str
    plugin: str
    version: str | None
    requires: tuple[str, ...]
    install: str | None
    variant_arg: str | None


@dataclass
class _Collector:
    """The ``register`` callback handed to one plugin's hooks; validates and stages registrations."""

    kind: str
    plugin: str
    version: str | None
    entries: list[_Entry] = field(default_factory=list)

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
        if not isinstance(name, str) or not _NAME.match(name):
            raise PluginError(
                f"{self.kind} name {name!r} is invalid: use lower case letters, digits and '_.+-'"
            )
        if isinstance(factory, str):
            if not re.match(r"^[\w.]+:[\w.]+$", factory):
                raise PluginError(f"{self.kind} '{name}' factory {factory!r} is not 'module:attribute'")
            if not summary:
                raise PluginError(f"{self.kind} '{name}' is registered by path, so it needs a summary")
        elif not callable(factory):
            raise PluginError(f"{self.kind} '{name}' factory must be callable or 'module:attribute'")
        if summary is None:
            summary = inspect.getdoc(factory) or ""
        self.entries.append(
            _Entry(
                kind=self.kind,
                name=name,
                factory=factory,
                summary=summary.strip().splitlines()[0] if summary.strip() else "",
                plugin=self.plugin,
                version=self.version,
                requires=tuple(requires),
                install=install,
                variant_arg=variant_arg,
            )
        )


def normalise_kind(kind: str) -> str:
    """Accept ``"segmenter"`` or ``"segmenters"``; refuse anything else with a suggestion."""
    singular = kind[:-1] if kind.endswith("s") and kind[:-1] in KINDS else kind
    if singular not in KINDS:
        raise UnknownKindError(
            f"unknown kind '{kind}'{suggest(kind, KINDS) or '; kinds are ' + ', '.join(KINDS)}"
        )
    return singular


def _installed(module: str) -> bool:
    """Whether ``module`` can be imported, found without importing it (a dotted name imports its parent)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _missing(requires: Iterable[str]) -> list[str]:
    """The required import names that are not installed."""
    return [module for module in requires if not _installed(module)]


def _load_attribute(path: str) -> Any:
    """Import ``"module:attr.sub"`` and return the attribute."""
    module_name, _, qualname = path.partition(":")
    target: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        target = getattr(target, part)
    return target


def _dist_of(entry_point: importlib.metadata.EntryPoint) -> tuple[str | None, str | None]:
    dist = entry_point.dist
    return (dist.metadata["Name"], dist.version) if dist is not None else (None, None)


def _is_builtin(distribution: str | None) -> bool:
    return distribution is not None and distribution.lower() == PROJECT_DISTRIBUTION


class Registry:
    """Plugins and the components they register.

    Most code uses the process-wide registry through :func:`xaikit.create`,
    :func:`xaikit.list_components` and :func:`xaikit.register_plugin`; tests build their own.
    """

    def __init__(self) -> None:
        self._pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self._pm.add_hookspecs(hookspecs)
        self._plugins: dict[str, PluginInfo] = {}
        self._entries: dict[tuple[str, str], list[_Entry]] = {}

    # ----------------------------------------------------------------------------------- loading
    def load_entry_points(self, *, third_party: bool | None = None) -> None:
        """Register every plugin declared in the ``xaikit`` entry-point group.

        Args:
            third_party: load entry points of distributions other than xaikit; defaults to true
                unless ``XAIKIT_DISABLE_PLUGIN_AUTOLOAD`` is set to a non-empty value other than 0.
        """
        if third_party is None:
            third_party = os.environ.get(DISABLE_AUTOLOAD_ENV, "") in ("", "0")
        for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            distribution, version = _dist_of(entry_point)
            builtin = _is_builtin(distribution)
            taken = self._plugins.get(entry_point.name)
            if taken is not None:
                if taken.distribution != distribution:
                    message = (
                        f"plugin name '{entry_point.name}' is already taken by distribution "
                        f"'{taken.distribution}'; one of the two must rename its entry point"
                    )
                    self._record(PluginInfo(f"{entry_point.name} ({distribution})", distribution, version, builtin, "error", message))
                continue
            if not builtin and not third_party:
                self._record(PluginInfo(entry_point.name, distribution, version, builtin, "disabled"))
                continue
            try:
                plugin = entry_point.load()
            except BaseException as error:  # noqa: BLE001 - a broken plugin must never stop the host
                if isinstance(error, KeyboardInterrupt):
                    raise
                message = f"cannot import {entry_point.value!r}: {type(error).__name__}: {error}"
                self._record(PluginInfo(entry_point.name, distribution, version, builtin, "error", message))
                continue
            self.register_plugin(plugin, entry_point.name, distribution=distribution, version=version)

    def register_plugin(
        self,
        plugin: object,
        name: str | None = None,
        *,
        distribution: str | None = None,
        version: str | None = None,
    ) -> PluginInfo:
        """Register a plugin object (usually a module) and collect its components.

        A plugin that fails pluggy's validation, implements an unknown hook, or raises while
        registering is not kept; the returned :class:`PluginInfo` then has status ``"error"``.

        Args:
            plugin: an object with ``@xaikit.hookimpl`` functions.
            name: the plugin's name; defaults to the object's ``__name__``.
            distribution: the installed distribution providing it, if any.
            version: the plugin's version, if known.

        Raises:
            PluginError: when ``name`` is already taken by another plugin.
        """
        name = name or getattr(plugin, "__name__", None) or type(plugin).__name__
        if name in self._plugins:
            raise PluginError(f"a plugin named '{name}' is already registered")
        builtin = _is_builtin(distribution)
        try:
            self._pm.register(plugin, name)
        except (ValueError, pluggy.PluginValidationError) as error:
            return self._record(PluginInfo(name, distribution, version, builtin, "error", str(error)))
        try:
            self._pm.check_pending()
            staged = self._collect(plugin, name, version)
        except Exception as error:  # noqa: BLE001 - isolate the plugin, keep the host running
            self._pm.unregister(plugin)
            message = f"{type(error).__name__}: {error}" if not isinstance(error, PluginError) else str(error)
            return self._record(PluginInfo(name, distribution, version, builtin, "error", message))
        for entry in staged:
            self._entries.setdefault((entry.kind, entry.name), []).append(entry)
        components = tuple(f"{entry.kind}:{entry.name}" for entry in staged)
        return self._record(PluginInfo(name, distribution, version, builtin, "ok", None, components))

    def unregister_plugin(self, name: str) -> None:
        """Remove a plugin and every component it registered (no error if it is unknown)."""
        self._plugins.pop(name, None)
        if self._pm.has_plugin(name):
            self._pm.unregister(name=name)
        for key in list(self._entries):
            kept = [entry for entry in self._entries[key] if entry.plugin != name]
            if kept:
                self._entries[key] = kept
            else:
                del self._entries[key]

    def _record(self, info: PluginInfo) -> PluginInfo:
        self._plugins[info.name] = info
        return info

    def _collect(self, plugin: object, name: str, version: str | None) -> list[_Entry]:
        """Call each ``register_<kind>s`` hook this plugin implements; return what it registered."""
        staged: list[_Entry] = []
        for kind in KINDS:
            caller = getattr(self._pm.hook, f"register_{kind}s")
            for impl in caller.get_hookimpls():
                if impl.plugin is not plugin:
                    continue
                if impl.hookwrapper or impl.wrapper:
                    raise PluginError(f"hook register_{kind}s of plugin '{name}' must be a plain hookimpl, not a wrapper")
                collector = _Collector(kind, name, version)
                impl.function(*[{"register": collector}[arg] for arg in impl.argnames])
                staged.extend(collector.entries)
        return staged

    # ----------------------------------------------------------------------------------- listing
    def plugins(self) -> list[PluginInfo]:
        """Every plugin seen, registered or not, sorted by name."""
        return sorted(self._plugins.values(), key=lambda info: info.name)

    def components(self, kind: str | None = None) -> list[ComponentInfo]:
        """Registered components, sorted by kind (in :data:`KINDS` order) then name.

        Nothing is imported: availability is checked with :func:`importlib.util.find_spec`.
        """
        kinds = KINDS if kind is None else (normalise_kind(kind),)
        found = []
        for (entry_kind, _), entries in self._entries.items():
            if entry_kind not in kinds:
                continue
            conflict = self._conflict_message(entries)
            for entry in entries:
                missing = _missing(entry.requires)
                status, error = "ok", None
                if conflict:
                    status, error = "error", conflict
                elif missing:
                    status, error = "unavailable", self._missing_message(entry, missing)
                found.append(
                    ComponentInfo(
                        kind=entry.kind,
                        name=entry.name,
                        summary=entry.summary,
                        plugin=entry.plugin,
                        version=entry.version,
                        status=status,
                        error=error,
                        requires=entry.requires,
                        variant_arg=entry.variant_arg,
                    )
                )
        return sorted(found, key=lambda info: (KINDS.index(info.kind), info.name, info.plugin))

    @staticmethod
    def _conflict_message(entries: list[_Entry]) -> str | None:
        if len(entries) < 2:
            return None
        plugins = " and ".join(sorted(f"'{entry.plugin}'" for entry in entries))
        return (
            f"{entries[0].kind} '{entries[0].name}' is registered by both {plugins}; "
            "uninstall one of them"
        )

    @staticmethod
    def _missing_message(entry: _Entry, missing: list[str]) -> str:
        packages = ", ".join(f"'{module}'" for module in missing)
        hint = f"; install it with: {entry.install}" if entry.install else ""
        verb = "is" if len(missing) == 1 else "are"
        return f"{entry.kind} '{entry.name}' needs {packages}, which {verb} not installed{hint}"

    # ---------------------------------------------------------------------------------- building
    def resolve(self, kind: str, name: str, *, check_dependencies: bool = True) -> tuple[_Entry, str | None]:
        """Find the registration behind ``name`` and split off a ``family:variant`` suffix.

        With ``check_dependencies=False`` a component whose optional dependency is missing is
        resolved too (``xaikit info`` documents it before it is installed).

        Raises:
            UnknownKindError: ``kind`` is not one of :data:`KINDS`.
            UnknownComponentError: no such name, or a variant where none is taken (or missing).
            DuplicateComponentError: two plugins register the name.
            MissingDependencyError: an optional dependency of the component is not installed.
        """
        kind = normalise_kind(kind)
        family, colon, variant = name.partition(":")
        entries = self._entries.get((kind, family))
        if not entries:
            raise UnknownComponentError(self._unknown_message(kind, name))
        conflict = self._conflict_message(entries)
        if conflict:
            raise DuplicateComponentError(conflict)
        entry = entries[0]
        if entry.variant_arg is None and colon:
            raise UnknownComponentError(f"{kind} '{family}' takes no ':variant' suffix, got '{name}'")
        if entry.variant_arg is not None and not variant and check_dependencies:
            raise UnknownComponentError(
                f"{kind} '{family}' needs a variant: write '{family}:<{entry.variant_arg}>'"
            )
        missing = _missing(entry.requires) if check_dependencies else []
        if missing:
            raise MissingDependencyError(self._missing_message(entry, missing))
        return entry, variant or None

    def _unknown_message(self, kind: str, name: str) -> str:
        known = sorted(n for (k, n) in self._entries if k == kind)
        hint = suggest(name, known)
        if not hint:
            other_kinds = sorted(k for (k, n) in self._entries if n == name and k != kind)
            if other_kinds:
                hint = f"; '{name}' is a {other_kinds[0]}"
            elif known:
                hint = f"; known {kind}s: {', '.join(known)}"
            else:
                hint = f"; no {kind}s are registered"
        return f"unknown {kind} '{name}'{hint}{self.broken_plugins_note()}"

    def broken_plugins_note(self) -> str:
        """``"; plugin 'x' failed to load and may provide it: <error> (see xaikit plugins)"``, or ``""``.

        Ends every "unknown name" message, so that a component a broken plugin would have provided
        does not vanish without a trace where the user looks.
        """
        broken = [info for info in self._plugins.values() if info.status == "error"]
        if not broken:
            return ""
        first = broken[0]
        more = f" (and {len(broken) - 1} more)" if len(broken) > 1 else ""
        return f"; plugin '{first.name}'{more} failed to load and may provide it: {first.error} (see xaikit plugins)"

    def factory(self, kind: str, name: str) -> Callable[..., Any]:
        """Import and return the factory registered for ``kind``/``name`` (variant suffix ignored).

        Raises:
            MissingDependencyError: when importing it fails for want of a module.
            PluginError: when it cannot be imported for another reason.
        """
        entry, _ = self.resolve(kind, name)
        if not isinstance(entry.factory, str):
            return entry.factory
        try:
            return _load_attribute(entry.factory)
        except ModuleNotFoundError as error:
            plugin_module = entry.factory.partition(":")[0]
            if error.name and not plugin_module.startswith(error.name):
                raise MissingDependencyError(
                    f"{entry.kind} '{entry.name}' needs the Python module '{error.name}', which is not "
                    f"installed{'; install it with: ' + entry.install if entry.install else ''}"
                ) from error
            raise PluginError(
                f"plugin '{entry.plugin}' registers {entry.kind} '{entry.name}' as "
                f"'{entry.factory}', which cannot be imported: {error}"
            ) from error
        except (ImportError, AttributeError) as error:
            raise PluginError(
                f"plugin '{entry.plugin}' registers {entry.kind} '{entry.name}' as "
                f"'{entry.factory}', which cannot be imported: {error}"
            ) from error

    def create(self, kind: str, name: str, /, **options: Any) -> Any:
        """Build the component registered as ``name`` with ``options`` as keyword arguments.

        Raises:
            UnknownComponentError: no such name.
            UnknownOptionError: an option the factory does not take, or a required one missing.
            OptionTypeError: a value that is not of the type the factory declares (see :mod:`xaikit.options`).
            PluginFailure: a third-party factory raised an unexpected exception (see :mod:`xaikit.boundary`).
            DuplicateComponentError: two plugins register the name.
            MissingDependencyError: an optional dependency of the component is not installed.
            PluginError: the factory cannot be imported, or built something of the wrong kind.
        """
        kind = normalise_kind(kind)
        entry, variant = self.resolve(kind, name)
        factory = self.factory(kind, name)
        if entry.variant_arg is not None:
            options = {**options, entry.variant_arg: variant}
        _check_options(f"{kind} '{name}'", factory, options)
        from xaikit import interfaces  # deferred: they import torch, which listing must not
        from xaikit.boundary import Origin, blame, guard

        plugin = self._plugins.get(entry.plugin)
        origin = Origin(entry.plugin, entry.version, kind, name, builtin=plugin is not None and plugin.builtin)
        with blame(origin, "factory"):
            component = factory(**coerce_options(f"{kind} '{name}'", factory, options))
        interface = getattr(interfaces, _INTERFACES[kind])
        if not isinstance(component, interface):
            raise PluginError(
                f"plugin '{entry.plugin}' built {kind} '{name}' as a {type(component).__name__}, "
                f"which is not an xaikit.{interface.__name__}"
            )
        return guard(component, origin)


    def coerce(self, kind: str, name: str, options: dict[str, Any]) -> dict[str, Any]:
        """``options`` converted to the types the factory of ``kind``/``name`` declares, as :meth:`create` passes them.

        Raises:
            OptionTypeError: a value its declared type cannot take.
        """
        return coerce_options(f"{normalise_kind(kind)} '{name}'", self.factory(kind, name), options)

    def check_options(self, kind: str, name: str, options: dict[str, Any]) -> None:
        """Refuse, as :meth:`build` would and building nothing, an unregistered ``name`` or an option its factory does not take.

        Options the caller supplies later (a runner's ``backbone`` object, a dataset's ``root``) may be
        missing; values are not checked here (:meth:`coerce` does that).

        Raises:
            UnknownComponentError, UnknownOptionError: naming the component and the option.
        """
        kind = normalise_kind(kind)
        self.resolve(kind, name)
        _check_options(f"{kind} '{name}'", self.factory(kind, name), options, required=False)

    def accepts(self, kind: str, name: str, option: str) -> bool:
        """Whether the factory of ``kind``/``name`` takes the keyword ``option`` (or any via ``**kwargs``)."""
        signature = keyword_options(self.factory(kind, name))
        if signature is None:
            return False
        named, any_keyword = signature
        return any_keyword or any(parameter.name == option for parameter in named)

    def build(self, kind: str, spec: Any, /, *, offer: dict[str, Any] | None = None, **options: Any) -> Any:
        """A component from a registered name, or ``spec`` itself when it is already a component.

        Args:
            kind: the component kind.
            spec: a registered name (``"dinov2"``, ``"timm:<model>"``) or a built component.
            offer: shared objects (e.g. ``backbone=``) passed only to factories that take them.
            **options: keyword arguments every factory must accept.
        """
        if not isinstance(spec, str):
            return spec
        offered = {key: value for key, value in (offer or {}).items() if self.accepts(kind, spec, key) and key not in options}
        return self.create(kind, spec, **options, **offered)


_KEYWORD_KINDS = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)


def keyword_options(factory: Callable[..., Any]) -> tuple[list[inspect.Parameter], bool] | None:
    """The named keyword parameters a factory takes and whether it also takes ``**kwargs``.

    Returns ``None`` for a callable without a readable signature (some builtins).
    """
    try:
        parameters = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return None
    named = [p for p in parameters if p.kind in _KEYWORD_KINDS]
    return named, any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


def _check_options(label: str, factory: Callable[..., Any], options: dict[str, Any], *, required: bool = True) -> None:
    """Refuse options the factory does not take, and (with ``required``) required options that are missing."""
    found = keyword_options(factory)
    if found is None or found[1]:  # no signature, or **kwargs: let the call decide
        return
    parameters = found[0]
    accepted = [p.name for p in parameters]
    for option in options:
        if option not in accepted:
            hint = suggest(option, accepted) or (
                f"; its options are {', '.join(accepted)}" if accepted else "; it takes no options"
            )
            raise UnknownOptionError(f"{label} has no option '{option}'{hint}")
    for parameter in parameters if required else ():
        if parameter.default is inspect.Parameter.empty and parameter.name not in options:
            raise UnknownOptionError(f"{label} needs the option '{parameter.name}'")
