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
import os
import tarfile
from pathlib import Path

import pytest

VENDOR = Path(__file__).resolve().parents[2].parent / "shared" / "vendor"
"""The shared source snapshots (``detectron2-*.tar.gz``, ``VLPart-*.tar.gz``, ``SAN-*.tar.gz``)."""
RUN_TIER = "python -m pytest -m real tests/integration"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip ``real`` tests unless the marker expression asks for them."""
    if "real" in (config.getoption("markexpr") or ""):
        return
    skip = pytest.mark.skip(reason=f"integration tier (real third-party code, minutes): run it with {RUN_TIER}")
    for item in items:
        if "real" in item.keywords:
            item.add_marker(skip)


def vendor_cache() -> Path:
    """Where the snapshots are extracted: ``$XAIKIT_TEST_VENDOR_CACHE`` or ``~/.cache/xaikit-tests/vendor``."""
    return Path(os.environ.get("XAIKIT_TEST_VENDOR_CACHE", Path.home() / ".cache" / "xaikit-tests" / "vendor")).expanduser()


def extracted(project: str) -> Path:
    """The checkout of ``project`` (``"VLPart"``, ``"SAN"``, ``"detectron2"``) from its snapshot, or skip.

    The tarball ``<project>-<commit>.tar.gz`` is extracted once into ``vendor_cache()/<project>-<commit>/``;
    a folder that exists is reused (it is complete: extraction goes to a temporary name first).
    """
    tarballs = sorted(VENDOR.glob(f"{project}-*.tar.gz"))
    if not tarballs:
        pytest.skip(f"no {project} source snapshot in {VENDOR} (the shared/vendor folder beside the clone)")
    name = tarballs[-1].name.removesuffix(".tar.gz")
    target = vendor_cache() / name
    if not target.is_dir():
        partial = target.with_name(f"{name}.partial-{os.getpid()}")
        partial.mkdir(parents=True)
        with tarfile.open(tarballs[-1]) as archive:
            archive.extractall(partial, filter="data")
        partial.rename(target)
    return target / project


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
    import torch
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model

    from xaikit.quiet import captured
    from xaikit_segmenters.external import source_root
    from xaikit_segmenters.vlpart import DEFAULT_CONFIG, absolute_metadata_paths

    source_root(str(vlpart_source), "vlpart", "vlpart", "VLPart")
    import vlpart

    cfg = get_cfg()
    vlpart.add_vlpart_config(cfg)
    cfg.merge_from_file(str(vlpart_source / DEFAULT_CONFIG))
    cfg.MODEL.DEVICE, cfg.MODEL.WEIGHTS, cfg.MODEL.TIMM.PRETRAINED = "cpu", "", False
    absolute_metadata_paths(cfg, vlpart_source)
    torch.manual_seed(0)
    with captured("test: random vlpart"):
        model = build_model(cfg)
    path = tmp_path_factory.mktemp("vlpart") / "r50_pascalpart_random.pth"
    torch.save({"model": model.state_dict()}, path)
    return path


@pytest.fixture(scope="session")
def san_weights(san_source: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A seeded random checkpoint of SAN's CLIP ViT-B/16 model, saved by detectron2's checkpointer as SAN's training does."""
    import torch
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model
    from detectron2.projects.deeplab import add_deeplab_config

    from xaikit.quiet import captured
    from xaikit_segmenters.external import source_root
    from xaikit_segmenters.san import DEFAULT_CONFIG
    from xaikit_segmenters.san_compat import patched_san

    source_root(str(san_source), "san", "san", "SAN")
    import san
    import san.model.san

    cfg = get_cfg()
    add_deeplab_config(cfg)
    san.add_san_config(cfg)
    cfg.merge_from_file(str(san_source / DEFAULT_CONFIG))
    cfg.MODEL.DEVICE, cfg.MODEL.SAN.CLIP_PRETRAINED_NAME = "cpu", ""
    torch.manual_seed(0)
    with captured("test: random san"), patched_san(san.model.san):
        model = build_model(cfg)
    folder = tmp_path_factory.mktemp("san")
    DetectionCheckpointer(model, save_dir=str(folder)).save("san_vit_b_16_random", iteration=0)
    return folder / "san_vit_b_16_random.pth"
