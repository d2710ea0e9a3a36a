"""The integration tier: the real third-party code and architectures, with seeded random weights.

Every test here is marked ``real`` and runs only when asked for, ``python -m pytest -m real
tests/integration`` (``.ci/run`` does it after the README's test command), so the README's plain
``python -m pytest`` skips the tier with one reason. Inside the tier, a test skips with a reason
where what it needs is absent: detectron2 (built from source), or the source snapshots in
``../shared/vendor`` (extracted once into a cache outside the clone, ``$XAIKIT_TEST_VENDOR_CACHE``,
default ``~/.cache/xaikit-tests/vendor``, one folder per tarball name).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

_spec = importlib.util.spec_from_file_location("xaikit_tests_seeded", Path(__file__).with_name("seeded.py"))
seeded = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(seeded)
"""``seeded.py``: the vendored checkouts and seeded random checkpoints (also loaded by ``benchmarks/segmenters_cost.py``)."""

RUN_TIER = "python -m pytest -m real tests/integration"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip ``real`` tests unless the marker expression asks for them."""
    if "real" in (config.getoption("markexpr") or ""):
        return
    skip = pytest.mark.skip(reason=f"integration tier (real third-party code, minutes): run it with {RUN_TIER}")
    for item in items:
        if "real" in item.keywords:
            item.add_marker(skip)


def extracted(project: str) -> Path:
    """The checkout of ``project`` from its snapshot (see ``seeded.extract``), or skip."""
    checkout = seeded.extract(project)
    if checkout is None:
        pytest.skip(f"no {project} source snapshot in {seeded.VENDOR} (the shared/vendor folder beside the clone)")
    return checkout


@pytest.fixture(scope="session")
def seeded_helpers() -> ModuleType:
    """The :mod:`seeded` module, for tests that make seeded files of their own."""
    return seeded


@pytest.fixture(scope="session")
def detectron2() -> None:
    """Skip unless detectron2 is installed with its compiled operators."""
    if importlib.util.find_spec("detectron2") is None:
        pytest.skip("detectron2 is not installed: build it from ../shared/vendor as .ci/run does")
    try:
        import detectron2._C  # noqa: F401
    except ImportError as error:
        pytest.skip(f"detectron2 is installed without its C++ operators ({error})")


@pytest.fixture(scope="session")
def vlpart_source(detectron2: None) -> Path:
    """A VLPart checkout (configs, ``vlpart/``, ``datasets/metadata`` classifiers)."""
    return extracted("VLPart")


@pytest.fixture(scope="session")
def san_source(detectron2: None) -> Path:
    """A SAN checkout."""
    return extracted("SAN")


@pytest.fixture(scope="session")
def vlpart_weights(vlpart_source: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A seeded random checkpoint of VLPart's R50 Pascal-Part model, saved as the released ``.pth`` files are."""
    return seeded.random_vlpart_checkpoint(vlpart_source, tmp_path_factory.mktemp("vlpart") / "r50_pascalpart_random.pth")


@pytest.fixture(scope="session")
def san_weights(san_source: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A seeded random checkpoint of SAN's CLIP ViT-B/16 model, saved by detectron2's checkpointer as SAN's training does."""
    return seeded.random_san_checkpoint(san_source, tmp_path_factory.mktemp("san"))
