"""``xaikit plugins``, ``xaikit list KIND`` and ``xaikit info KIND NAME``: what is installed."""

from __future__ import annotations

import argparse
import fnmatch
import json
from typing import Any

from rich.markup import escape
from rich.table import Table

import xaikit
from xaikit.cli.console import add_debug, stdout
from xaikit.errors import XaikitError
from xaikit.hookspecs import KINDS
from xaikit.introspect import describe_factory
from xaikit.registry import ComponentInfo, normalise_kind

_STATUS_STYLE = {"ok": "green", "error": "bold red", "unavailable": "yellow", "disabled": "dim"}


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Attach ``plugins``, ``list`` and ``info`` to the top-level subcommands."""
    plugins = commands.add_parser(
        "plugins",
        help="list plugins and the components they register",
        description="List every plugin xaikit found (including broken ones) and every component it registers.",
    )
    plugins.add_argument("--json", action="store_true", help="print JSON: {plugins: [...], components: [...]}")
    add_debug(plugins)
    plugins.set_defaults(handler=run_plugins)

    listing = commands.add_parser(
        "list",
        help="list the components of one kind",
        description=f"List the registered components of one kind ({', '.join(KINDS)}).",
    )
    listing.add_argument("kind", metavar="KIND", help="backbone, segmenter, matcher, explainer, metric or dataset")
    listing.add_argument("pattern", metavar="PATTERN", nargs="?", default="*", help="shell-style name filter, e.g. 'dino*'")
    listing.add_argument("--json", action="store_true", help="print a JSON list")
    add_debug(listing)
    listing.set_defaults(handler=run_list)

    info = commands.add_parser(
        "info",
        help="show one component's documentation and options",
        description="Show a component's documentation, options and providing plugin (imports it, builds nothing).",
    )
    info.add_argument("kind", metavar="KIND", help="backbone, segmenter, matcher, explainer, metric or dataset")
    info.add_argument("name", metavar="NAME", nargs="?", help="the component's registered name")
    add_debug(info)
    info.set_defaults(handler=run_info)


def _status(status: str) -> str:
    return f"[{_STATUS_STYLE.get(status, 'white')}]{status}[/]"


def _components_table(components: list[ComponentInfo], *, title: str) -> Table:
    table = Table(title=title, title_justify="left", expand=False)
    for column in ("kind", "name", "status", "plugin", "summary"):
        table.add_column(column, no_wrap=column != "summary", overflow="fold")
    for info in components:
        name = f"{info.name}:<{info.variant_arg}>" if info.variant_arg else info.name
        summary = escape(info.summary) + (f"\n[red]{escape(info.error)}[/]" if info.error else "")
        table.add_row(info.kind, escape(name), _status(info.status), escape(info.plugin), summary)
    return table


def run_plugins(args: argparse.Namespace) -> int:
    """Print every plugin and component; JSON with ``--json``."""
    plugins = xaikit.list_plugins()
    components = xaikit.list_components()
    if args.json:
        payload = {"plugins": [p.to_dict() for p in plugins], "components": [c.to_dict() for c in components]}
        print(json.dumps(payload, indent=2))
        return 0
    table = Table(title="plugins", title_justify="left")
    for column in ("plugin", "distribution", "version", "status", "components / error"):
        table.add_column(column, no_wrap=column != "components / error", overflow="fold")
    for plugin in plugins:
        detail = plugin.error or ", ".join(plugin.components)
        table.add_row(
            escape(plugin.name), escape(plugin.distribution or "-"), plugin.version or "-",
            _status(plugin.status), escape(detail),
        )
    stdout.print(table)
    stdout.print(_components_table(components, title="components"))
    return 0


def run_list(args: argparse.Namespace) -> int:
    """Print the components of one kind whose names match the pattern."""
    kind = normalise_kind(args.kind)
    matching = [c for c in xaikit.list_components(kind) if fnmatch.fnmatchcase(c.name, args.pattern)]
    if args.json:
        print(json.dumps([c.to_dict() for c in matching], indent=2))
        return 0
    if not matching:
        note = xaikit.get_registry().broken_plugins_note()
        stdout.print(f"no {kind}s match '{escape(args.pattern)}'{escape(note)}")
        return 0
    stdout.print(_components_table(matching, title=f"{kind}s"))
    return 0


def run_info(args: argparse.Namespace) -> int:
    """Print one component's summary, documentation and options, without importing it (see :mod:`xaikit.introspect`)."""
    registry = xaikit.get_registry()
    if args.name is None:
        raise XaikitError(_missing_name(registry, args.kind))
    kind = normalise_kind(args.kind)
    entry, _ = registry.resolve(kind, args.name, check_dependencies=False)
    info = next(c for c in registry.components(kind) if c.name == entry.name and c.plugin == entry.plugin)
    described = describe_factory(entry.factory, lambda: registry.factory(kind, args.name))
    stdout.print(f"[bold]{kind} {escape(args.name)}[/] - {escape(info.summary)}")
    stdout.print(f"plugin: {escape(info.plugin)} {info.version or ''}  status: {_status(info.status)}")
    if info.error:
        stdout.print(escape(info.error))
    options = [option for option in described.options if option[0] != info.variant_arg]
    if options:
        stdout.print("options: " + ", ".join(f"{escape(name)}={escape(default)}" for name, default in options))
    if described.doc:
        stdout.print()
        stdout.print(escape(described.doc))
    return 0


def _missing_name(registry: Any, given: str) -> str:
    """The sentence for ``xaikit info WORD``: the command it meant, when ``WORD`` is a component's name or a kind."""
    kinds = sorted({component.kind for component in registry.components() if component.name == given})
    if kinds:
        return f"xaikit info takes KIND NAME; '{given}' is a {' and a '.join(kinds)}: xaikit info {kinds[0]} {given}"
    kind = normalise_kind(given)  # an unknown word is refused here, naming the kinds
    names = ", ".join(sorted({component.name for component in registry.components(kind)}))
    return f"xaikit info {kind} needs the component's NAME, one of: {names}"
