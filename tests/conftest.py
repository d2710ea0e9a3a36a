"""Shared fixtures: an isolated cache and registry per test, throwaway plugin distributions, CUB data."""

from __future__ import annotations

import os
import sys
import textwrap
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import xaikit

# Tests never reach a model hub: fail fast instead of hanging on a download.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

CUB_MINI = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cub200-mini"



@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Each test gets its own cache directory and a fresh process-wide registry without third-party plugins."""
    monkeypatch.setenv("XAIKIT_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.setenv("XAIKIT_DISABLE_PLUGIN_AUTOLOAD", "1")
    monkeypatch.setattr(xaikit, "_registry", None)
    yield


@pytest.fixture
def builtin_plugins() -> list[str]:
    """Names of the plugins xaikit ships, sorted, as its ``pyproject.toml`` declares them."""
    with (Path(__file__).resolve().parents[1] / "pyproject.toml").open("rb") as file:
        return sorted(tomllib.load(file)["project"]["entry-points"]["xaikit"])


@pytest.fixture
def cub_mini() -> Path:
    """The 60 real CUB-200-2011 photographs shipped beside the repository, or skip."""
    if not (CUB_MINI / "images.txt").exists():
        pytest.skip(f"real CUB photographs not found at {CUB_MINI} (the shared/data/cub200-mini folder)")
    return CUB_MINI


@pytest.fixture(scope="session")
def tiny_birds(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic-birds dataset (4 species x 8 images, 128 px), written once per session.

    Read it with ``xaikit.create("dataset", "synthetic-birds", root=tiny_birds)`` (cropped to the
    boxes, the factory's default) or ``xaikit.CUBDataset(tiny_birds)``; it must not be modified.
    """
    from xaikit.data.synthetic import SynthConfig, write_synthetic_birds

    root = tmp_path_factory.mktemp("tiny-birds") / "birds"
    write_synthetic_birds(root, SynthConfig(classes=4, per_class=8, size=128, seed=3))
    return root


PluginDist = Callable[..., Path]


@pytest.fixture
def plugin_dist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[PluginDist]:
    """Write an installed distribution (module + .dist-info with an ``xaikit`` entry point) and put it on sys.path.

    This is a real entry-point registration, the same files ``pip install`` leaves behind; the
    directory it returns can also be put on ``PYTHONPATH`` for a subprocess.
    """
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    modules: list[str] = []

    def make(distribution: str, module: str, source: str, *, entry_name: str | None = None, version: str = "1.0") -> Path:
        (site / f"{module}.py").write_text(textwrap.dedent(source))
        info = site / f"{distribution.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {distribution}\nVersion: {version}\n")
        (info / "entry_points.txt").write_text(f"[xaikit]\n{entry_name or module} = {module}\n")
        modules.append(module)
        return site

    yield make
    for module in modules:
        sys.modules.pop(module, None)
