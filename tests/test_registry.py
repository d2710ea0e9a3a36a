"""The plugin registry: loading, isolation of broken plugins, conflicts, lookup and building."""

from __future__ import annotations

import json
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest

import xaikit
from xaikit.errors import (
    DuplicateComponentError,
    MissingDependencyError,
    PluginError,
    UnknownComponentError,
    UnknownKindError,
    UnknownOptionError,
)
from xaikit.registry import Registry

GOOD_PLUGIN = """
import xaikit

@xaikit.hookimpl
def register_segmenters(register):
    register("partseg", "good_plugin_impl:Whole", summary="Pretends to be a part segmenter.")
    register("whole", "good_plugin_impl:Whole", summary="One part covering the image.")

@xaikit.hookimpl
def register_matchers(register):
    def nearest():
        '''Nearest neighbour matcher built from a callable.'''
        import good_plugin_impl
        return good_plugin_impl.Nearest()
    register("nearest", nearest)
"""

GOOD_IMPL = """
import torch
import xaikit

class Whole(xaikit.Segmenter):
    def __init__(self, name: str = "bird", threshold: float = 0.5):
        self.vocabulary = (name,)
        self.threshold = threshold

    def segment(self, samples):
        return [xaikit.PartMap(torch.ones(s.size, dtype=torch.int64), {1: self.vocabulary[0]}) for s in samples]

class Nearest(xaikit.Matcher):
    def match(self, query, candidates):
        similarity, index = (query @ candidates.T).max(dim=1)
        return xaikit.Match(torch.arange(len(query)), index, similarity)
"""


@pytest.fixture
def good_registry(plugin_dist) -> Registry:
    site = plugin_dist("good-plugin", "good_plugin", GOOD_PLUGIN, entry_name="good")
    (site / "good_plugin_impl.py").write_text(GOOD_IMPL)
    registry = Registry()
    registry.load_entry_points(third_party=True)
    yield registry
    sys.modules.pop("good_plugin_impl", None)


def test_builtin_plugins_load_through_entry_points():
    registry = Registry()
    registry.load_entry_points(third_party=False)
    (datasets,) = [p for p in registry.plugins() if p.name == "xaikit-datasets"]
    assert datasets.builtin and datasets.status == "ok" and datasets.distribution == "xaikit"
    names = {(c.kind, c.name) for c in registry.components()}
    assert {("dataset", "cub"), ("dataset", "synthetic-birds")} <= names


def test_components_carry_kind_name_summary_plugin_version_status(good_registry):
    by_name = {c.name: c for c in good_registry.components()}
    assert by_name["whole"].to_dict() == {
        "kind": "segmenter",
        "name": "whole",
        "summary": "One part covering the image.",
        "plugin": "good",
        "version": "1.0",
        "status": "ok",
        "error": None,
        "requires": [],
        "variant_arg": None,
    }
    assert by_name["nearest"].kind == "matcher"
    assert by_name["nearest"].summary == "Nearest neighbour matcher built from a callable."


def test_create_builds_by_path_and_by_callable_with_options(good_registry):
    segmenter = good_registry.create("segmenter", "whole", name="wing", threshold=0.2)
    assert isinstance(segmenter, xaikit.Segmenter) and segmenter.vocabulary == ("wing",)
    (part_map,) = segmenter.segment([xaikit.Sample(np.zeros((3, 4, 3), np.uint8))])
    assert part_map.labels.shape == (3, 4) and part_map.names == {1: "wing"}
    matcher = good_registry.create("matchers", "nearest")
    assert isinstance(matcher, xaikit.Matcher)


def test_unknown_name_suggests_the_closest(good_registry):
    with pytest.raises(UnknownComponentError, match=r"^unknown segmenter 'wholle'; did you mean 'whole'\?$"):
        good_registry.create("segmenter", "wholle")


def test_unknown_name_without_close_match_lists_the_known_ones(good_registry):
    with pytest.raises(UnknownComponentError, match=r"^unknown segmenter 'zzz'; known segmenters: annotations, clipseg, dino-parts, ov-parts, partseg, san, vlpart, whole$"):
        good_registry.create("segmenter", "zzz")
    with pytest.raises(UnknownComponentError, match=r"'nearest' is a matcher"):
        good_registry.create("segmenter", "nearest")
    with pytest.raises(UnknownComponentError, match="no explainers are registered"):
        Registry().create("explainer", "klc")  # nothing loaded


def test_unknown_kind_is_refused_with_a_suggestion(good_registry):
    with pytest.raises(UnknownKindError, match="unknown kind 'segmentr'; did you mean 'segmenter'"):
        good_registry.create("segmentr", "whole")
    with pytest.raises(UnknownKindError, match="kinds are backbone, segmenter"):
        good_registry.components("xyz")


def test_unknown_and_missing_options_are_refused(good_registry):
    with pytest.raises(UnknownOptionError, match="segmenter 'whole' has no option 'treshold'; did you mean 'threshold'"):
        good_registry.create("segmenter", "whole", treshold=0.1)
    with pytest.raises(UnknownOptionError, match="its options are name, threshold"):
        good_registry.create("segmenter", "whole", colour="red")


def test_a_plugin_that_raises_on_import_is_isolated(plugin_dist, good_registry):
    plugin_dist("broken-plugin", "broken_plugin", "raise RuntimeError('boom at import')", entry_name="broken")
    registry = Registry()
    registry.load_entry_points(third_party=True)
    plugins = {p.name: p for p in registry.plugins()}
    assert plugins["broken"].status == "error"
    assert "RuntimeError: boom at import" in plugins["broken"].error
    assert plugins["broken"].distribution == "broken-plugin"
    assert plugins["good"].status == "ok"
    assert isinstance(registry.create("segmenter", "whole"), xaikit.Segmenter)
    with pytest.raises(xaikit.UnknownComponentError, match=r"unknown segmenter 'slic-parts'.*plugin 'broken' failed to load and may provide it: .*boom at import"):
        registry.create("segmenter", "slic-parts")


def test_a_plugin_that_raises_while_registering_keeps_none_of_its_components(plugin_dist):
    plugin_dist("half", "half_plugin", """
        import xaikit

        @xaikit.hookimpl
        def register_matchers(register):
            register("first", "half_plugin:x", summary="registered before the failure")
            raise ValueError("registration failed")
    """)
    registry = Registry()
    registry.load_entry_points(third_party=True)
    (half,) = [p for p in registry.plugins() if p.name == "half_plugin"]
    assert half.status == "error" and "ValueError: registration failed" in half.error
    assert "first" not in {component.name for component in registry.components("matcher")}


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("import xaikit\n@xaikit.hookimpl\ndef register_segmenter(register): pass\n", "unknown hook 'register_segmenter'"),
        ("import xaikit\n@xaikit.hookimpl\ndef register_segmenters(register, extra): pass\n", "extra"),
        ("import xaikit\n@xaikit.hookimpl\ndef register_metrics(register):\n    register('Bad Name', print)\n", "metric name 'Bad Name' is invalid"),
        ("import xaikit\n@xaikit.hookimpl\ndef register_metrics(register):\n    register('m', 'nocolon')\n", "is not 'module:attribute'"),
        ("import xaikit\n@xaikit.hookimpl\ndef register_metrics(register):\n    register('m', 'a:b')\n", "needs a summary"),
    ],
)
def test_invalid_plugins_are_recorded_as_errors(plugin_dist, source, message, builtin_plugins):
    plugin_dist("invalid", "invalid_plugin", source)
    registry = Registry()
    registry.load_entry_points(third_party=True)
    (invalid,) = [p for p in registry.plugins() if p.name == "invalid_plugin"]
    assert invalid.status == "error" and message in invalid.error
    assert [p.status for p in registry.plugins() if p.builtin] == ["ok"] * len(builtin_plugins)


def test_two_plugins_with_one_name_conflict_naming_both(plugin_dist, good_registry):
    plugin_dist("rival", "rival_plugin", """
        import xaikit

        @xaikit.hookimpl
        def register_segmenters(register):
            register("whole", "rival_plugin:Other", summary="A rival whole-image segmenter.")
    """)
    registry = Registry()
    registry.load_entry_points(third_party=True)
    rows = [c for c in registry.components("segmenter") if c.name == "whole"]
    assert {c.plugin for c in rows} == {"good", "rival_plugin"}
    assert all(c.status == "error" for c in rows)
    with pytest.raises(DuplicateComponentError, match="segmenter 'whole' is registered by both 'good' and 'rival_plugin'"):
        registry.create("segmenter", "whole")
    assert isinstance(registry.create("segmenter", "partseg"), xaikit.Segmenter)


def test_autoload_switch_skips_third_party_but_keeps_builtins(plugin_dist, good_registry, monkeypatch, builtin_plugins):
    monkeypatch.setenv("XAIKIT_DISABLE_PLUGIN_AUTOLOAD", "1")
    registry = Registry()
    registry.load_entry_points()
    statuses = {p.name: p.status for p in registry.plugins()}
    assert statuses == {"good": "disabled"} | dict.fromkeys(builtin_plugins, "ok")
    assert "partseg" not in {component.name for component in registry.components("segmenter")}
    monkeypatch.setenv("XAIKIT_DISABLE_PLUGIN_AUTOLOAD", "0")
    registry = Registry()
    registry.load_entry_points()
    assert {p.name: p.status for p in registry.plugins()}["good"] == "ok"


def test_missing_optional_dependency_is_listed_and_refused():
    plugin = SimpleNamespace()

    @xaikit.hookimpl
    def register_segmenters(register):
        register("needy", "nowhere:Needy", summary="Needs detectron2.", requires=["detectron2_not_installed", "absent_parent.child"],
                 install="pip install detectron2 (see docs/segmenters.md)")

    plugin.register_segmenters = register_segmenters
    registry = Registry()
    registry.register_plugin(plugin, "needy-plugin")
    (needy,) = registry.components("segmenter")
    assert needy.status == "unavailable" and "'detectron2_not_installed', 'absent_parent.child'" in needy.error
    with pytest.raises(MissingDependencyError, match=r"needs 'detectron2_not_installed', 'absent_parent.child', which are not installed; install it with: pip install detectron2"):
        registry.create("segmenter", "needy")


def test_factory_importing_a_missing_module_gives_the_module_name(plugin_dist):
    site = plugin_dist("lazy", "lazy_plugin", """
        import xaikit

        @xaikit.hookimpl
        def register_segmenters(register):
            register("lazy", "lazy_plugin_impl:Lazy", summary="Imports a missing library lazily.")
            register("gone", "lazy_plugin:DoesNotExist", summary="Points at nothing.")
    """)
    (site / "lazy_plugin_impl.py").write_text("import detectron2_absent_module\n")
    registry = Registry()
    registry.load_entry_points(third_party=True)
    try:
        with pytest.raises(MissingDependencyError, match="needs the Python module 'detectron2_absent_module'"):
            registry.create("segmenter", "lazy")
        with pytest.raises(PluginError, match="'lazy_plugin:DoesNotExist', which cannot be imported"):
            registry.create("segmenter", "gone")
    finally:
        sys.modules.pop("lazy_plugin_impl", None)


def test_a_factory_that_builds_the_wrong_kind_is_refused():
    plugin = SimpleNamespace()

    @xaikit.hookimpl
    def register_matchers(register):
        register("not-a-matcher", lambda: object(), summary="Returns a plain object.")

    plugin.register_matchers = register_matchers
    registry = Registry()
    registry.register_plugin(plugin, "wrong")
    with pytest.raises(PluginError, match="built matcher 'not-a-matcher' as a object, which is not an xaikit.Matcher"):
        registry.create("matcher", "not-a-matcher")


def test_variant_families_pass_the_suffix_to_the_factory():
    plugin = SimpleNamespace()
    built = {}

    class Echo(xaikit.Matcher):
        def __init__(self, model_name: str, scale: float = 1.0):
            built.update(model_name=model_name, scale=scale)

        def match(self, query, candidates):  # pragma: no cover - not called
            raise NotImplementedError

    @xaikit.hookimpl
    def register_matchers(register):
        register("timmy", Echo, summary="A family.", variant_arg="model_name")

    plugin.register_matchers = register_matchers
    registry = Registry()
    registry.register_plugin(plugin, "family")
    registry.create("matcher", "timmy:vit_base_patch14_reg4_dinov2.lvd142m", scale=2.0)
    assert built == {"model_name": "vit_base_patch14_reg4_dinov2.lvd142m", "scale": 2.0}
    with pytest.raises(UnknownComponentError, match="needs a variant: write 'timmy:<model_name>'"):
        registry.create("matcher", "timmy")
    assert registry.components("matcher")[0].variant_arg == "model_name"


def test_suffix_on_a_plain_component_is_refused(good_registry):
    with pytest.raises(UnknownComponentError, match="takes no ':variant' suffix"):
        good_registry.create("segmenter", "whole:big")


def test_register_and_unregister_at_run_time():
    plugin = SimpleNamespace()

    @xaikit.hookimpl
    def register_metrics(register):
        register("always-one", "somewhere:AlwaysOne", summary="A metric.")

    plugin.register_metrics = register_metrics
    info = xaikit.register_plugin(plugin, "runtime")
    assert info.status == "ok" and info.components == ("metric:always-one",)
    assert "always-one" in [c.name for c in xaikit.list_components("metric")]
    with pytest.raises(PluginError, match="a plugin named 'runtime' is already registered"):
        xaikit.register_plugin(plugin, "runtime")
    xaikit.unregister_plugin("runtime")
    assert "always-one" not in [c.name for c in xaikit.list_components("metric")]


def test_listing_imports_no_heavy_library():
    code = (
        "import sys, xaikit\n"
        "xaikit.list_components(); xaikit.list_plugins()\n"
        "heavy = [m for m in ('torch', 'torchvision', 'numpy', 'PIL', 'transformers', 'timm', 'xaikit.data.cub') if m in sys.modules]\n"
        "print(heavy)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(result.stdout.replace("'", '"')) == []


def test_two_distributions_with_one_entry_point_name(plugin_dist):
    plugin_dist("first-dist", "first_plugin", "", entry_name="same")
    plugin_dist("second-dist", "second_plugin", "", entry_name="same")
    registry = Registry()
    registry.load_entry_points(third_party=True)
    records = {p.name: p for p in registry.plugins()}
    kept, clash = records["same"], next(p for name, p in records.items() if name.startswith("same ("))
    assert kept.status == "ok" and clash.status == "error"
    assert {kept.distribution, clash.distribution} == {"first-dist", "second-dist"}
    assert f"already taken by distribution '{kept.distribution}'" in clash.error


def test_a_wrapper_registration_hook_is_refused():
    plugin = SimpleNamespace()

    @xaikit.hookimpl(wrapper=True)
    def register_matchers(register):
        yield

    plugin.register_matchers = register_matchers
    registry = Registry()
    info = registry.register_plugin(plugin, "wrapping")
    assert info.status == "error" and "must be a plain hookimpl, not a wrapper" in info.error
