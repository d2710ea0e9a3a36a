"""The ``synthetic-birds`` dataset factory: generate once into the user cache, then read it as CUB."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from xaikit.data.cub import CUBDataset
from xaikit.data.synthetic import GENERATOR_VERSION, SynthConfig, write_synthetic_birds
from xaikit.io import exclusive
from xaikit.paths import cache_dir


def default_root(config: SynthConfig) -> Path:
    """Where the cache keeps the dataset for ``config`` (one directory per configuration)."""
    name = f"v{GENERATOR_VERSION}-c{config.classes}-n{config.per_class}-s{config.size}-seed{config.seed}"
    return cache_dir() / "synthetic-birds" / name


def synthetic_birds(
    root: str | os.PathLike[str] | None = None,
    classes: int = 10,
    per_class: int = 40,
    size: int = 224,
    seed: int = 0,
    split: str = "all",
    crop_to_bbox: bool = True,
) -> CUBDataset:
    """Synthetic birds with known parts, generated on first use and read back as CUB.

    Args:
        root: where the dataset lives; generated there when it holds no ``images.txt``. Defaults
            to a directory per configuration under the xaikit cache (``XAIKIT_CACHE_DIR``).
        classes: number of species.
        per_class: images per species (the first half of each species is the training split).
        size: image side in pixels.
        seed: generator seed; the same configuration always gives the same bytes.
        split: ``"all"``, ``"train"`` or ``"test"``.
        crop_to_bbox: crop samples to their bounding boxes (the default, as Huang et al. evaluate
            CUB): a full-frame synthetic bird is small, and at demo-vit's 112-pixel input one of its
            parts covers less than a patch. ``False`` gives the full frames.
    """
    config = SynthConfig(classes=classes, per_class=per_class, size=size, seed=seed)
    path = Path(root).expanduser() if root is not None else default_root(config)
    if not (path / "images.txt").exists():
        with exclusive(f"synthetic-birds {path.absolute()}"):  # torchrun's processes: one generates, the others wait and read
            if not (path / "images.txt").exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                images = classes * per_class
                print(f"generating synthetic-birds ({images} images of {size} px) into {path}, once; later runs read it", file=sys.stderr, flush=True)
                write_synthetic_birds(path, config)
    return CUBDataset(path, split=split, crop_to_bbox=crop_to_bbox)
