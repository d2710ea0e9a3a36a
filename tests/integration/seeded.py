"""The vendored checkouts and seeded random checkpoints of the real VLPart and SAN architectures.

Plain functions, no pytest: ``conftest.py`` wraps them in fixtures, and
``benchmarks/segmenters_cost.py`` loads this file by path to time the same models.
"""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

VENDOR = Path(__file__).resolve().parents[2].parent / "shared" / "vendor"
"""The shared source snapshots (``detectron2-*.tar.gz``, ``VLPart-*.tar.gz``, ``SAN-*.tar.gz``)."""


def vendor_cache() -> Path:
    """Where the snapshots are extracted: ``$XAIKIT_TEST_VENDOR_CACHE`` or ``~/.cache/xaikit-tests/vendor``."""
    return Path(os.environ.get("XAIKIT_TEST_VENDOR_CACHE", Path.home() / ".cache" / "xaikit-tests" / "vendor")).expanduser()


def extract(project: str) -> Path | None:
    """The checkout of ``project`` (``"VLPart"``, ``"SAN"``, ``"detectron2"``) from its snapshot; ``None`` without one.

    The tarball ``<project>-<commit>.tar.gz`` is extracted once into ``vendor_cache()/<project>-<commit>/``;
    a folder that exists is reused (it is complete: extraction goes to a temporary name first).
    """
    tarballs = sorted(VENDOR.glob(f"{project}-*.tar.gz"))
    if not tarballs:
        return None
    name = tarballs[-1].name.removesuffix(".tar.gz")
    target = vendor_cache() / name
    if not target.is_dir():
        partial = target.with_name(f"{name}.partial-{os.getpid()}")
        partial.mkdir(parents=True)
        with tarfile.open(tarballs[-1]) as archive:
            archive.extractall(partial, filter="data")
        partial.rename(target)
    return target / project


def random_vlpart_checkpoint(source: Path, path: Path) -> Path:
    """Save a seeded random checkpoint of VLPart's R50 Pascal-Part model at ``path``, as the released ``.pth`` files are."""
    import torch
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model

    from xaikit.quiet import captured
    from xaikit_segmenters.external import source_root
    from xaikit_segmenters.vlpart import DEFAULT_CONFIG, absolute_metadata_paths

    source_root(str(source), "vlpart", "vlpart", "VLPart")
    import vlpart

    cfg = get_cfg()
    vlpart.add_vlpart_config(cfg)
    cfg.merge_from_file(str(source / DEFAULT_CONFIG))
    cfg.MODEL.DEVICE, cfg.MODEL.WEIGHTS, cfg.MODEL.TIMM.PRETRAINED = "cpu", "", False
    absolute_metadata_paths(cfg, source)
    torch.manual_seed(0)
    with captured("test: random vlpart"):
        model = build_model(cfg)
    torch.save({"model": model.state_dict()}, path)
    return path


def random_san_checkpoint(source: Path, folder: Path) -> Path:
    """Save a seeded random checkpoint of SAN's CLIP ViT-B/16 model in ``folder``, by detectron2's checkpointer as SAN's training does."""
    import torch
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model
    from detectron2.projects.deeplab import add_deeplab_config

    from xaikit.quiet import captured
    from xaikit_segmenters.external import source_root
    from xaikit_segmenters.san import DEFAULT_CONFIG
    from xaikit_segmenters.san_compat import patched_san

    source_root(str(source), "san", "san", "SAN")
    import san
    import san.model.san

    cfg = get_cfg()
    add_deeplab_config(cfg)
    san.add_san_config(cfg)
    cfg.merge_from_file(str(source / DEFAULT_CONFIG))
    cfg.MODEL.DEVICE, cfg.MODEL.SAN.CLIP_PRETRAINED_NAME = "cpu", ""
    torch.manual_seed(0)
    with captured("test: random san"), patched_san(san.model.san):
        model = build_model(cfg)
    DetectionCheckpointer(model, save_dir=str(folder)).save("san_vit_b_16_random", iteration=0)
    return folder / "san_vit_b_16_random.pth"


def random_text_embeddings(path: Path, rows: int) -> Path:
    """Save ``(rows, 1024)`` seeded random unit text embeddings at ``path`` (``.npy``), a stand-in for CLIP RN50's.

    With them as VLPart's classifier every detection is one of ``rows`` parts, so part maps and
    matches are not empty even with random weights.
    """
    import numpy as np

    weight = np.random.default_rng(0).standard_normal((rows, 1024)).astype("float32")
    np.save(path, weight / np.linalg.norm(weight, axis=1, keepdims=True))
    return path
