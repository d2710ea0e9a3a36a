"""The ``ov-parts`` segmenter: OV-PARTS' fine-tuned CLIPSeg and CATSeg baselines (user-installed).

OV-PARTS: Wei et al., "OV-PARTS: Towards Open-Vocabulary Part Segmentation", NeurIPS 2023
Datasets and Benchmarks (OpenRobotLab/OV_PARTS). Its baselines score object-conditioned part
classes ("bird's beak", Pascal-Part-116) and run only through detectron2 with constraints that
this adapter cannot lift, documented in ``docs/segmenters.md``:

* the repository has **no license**;
* inference is **oracle-object**: the model is told which objects the image contains (from the
  ground truth) and scores only their parts. Here the oracle is ``object_name`` ("bird")
  everywhere in the image, which suits CUB, where every image shows one bird;
* the baselines are **CUDA only** (the CLIPSeg baseline hard-codes ``device="cuda"``), and the
  CLIPSeg baseline reads the image from a file and loads ``CIDAS/clipseg-rd64-refined`` from the hub.

The output is the model's ``sem_seg``: ``(C, H, W)`` sigmoid scores over the dataset's part
classes, with other objects' classes set to 0 or -1. :func:`ov_parts_to_part_map` keeps the
object's classes, adds a background plane at ``threshold`` and takes the argmax, as ``clipseg``.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

from xaikit.backbones.device import resolve_device
from xaikit.errors import DeviceError, WeightsUnavailableError, XaikitError
from xaikit.interfaces import Segmenter
from xaikit.types import PartMap, Sample
from xaikit.validation import flag_option
from xaikit_segmenters.clipseg import DEFAULT_THRESHOLD, planes_to_labels
from xaikit_segmenters.external import (
    Setup,
    checkpoint,
    config_file,
    file_digest,
    import_module,
    source_root,
    spec_digest,
    weights_loader,
)
from xaikit_segmenters.vocabulary import object_part

__all__ = ["DEFAULT_CONFIG", "SETUP", "OVPartsSegmenter", "object_classes", "oracle_input", "ov_parts_to_part_map", "shortest_edge_size"]

DEFAULT_CONFIG = "configs/zero_shot/clipseg_voc.yaml"
_INSTALL = "install detectron2 and OV-PARTS' requirements as docs/segmenters.md#ov-parts describes"
SETUP = Setup(
    segmenter="ov-parts",
    package="baselines",
    clone="https://github.com/OpenRobotLab/OV_PARTS",
    config=DEFAULT_CONFIG,
    download="a Pascal-Part-116 checkpoint (CLIPSeg or CATSeg) from the links in OV_PARTS' README.md",
    cuda=True,
)
"""OV-PARTS' checkout and checkpoint; its requirements are not listed here (it is not vendored, so untried)."""


def object_classes(class_names: Sequence[str], object_name: str) -> list[int]:
    """Indices of the classes that are parts of ``object_name`` (``"bird's beak"`` for ``"bird"``)."""
    return [index for index, name in enumerate(class_names) if object_part(name)[0] == object_name]


def ov_parts_to_part_map(output: Mapping[str, Any], class_names: Sequence[str], object_name: str, threshold: float) -> PartMap:
    """Turn OV-PARTS' semantic output into a :class:`~xaikit.PartMap` of ``object_name``'s parts.

    Args:
        output: ``{"sem_seg": (C, H, W)}``, per-class scores in ``[0, 1]`` (other objects' classes
            0 or -1); ``C`` may fall short of ``len(class_names)`` (the CLIPSeg baseline drops the
            last class), the scores then follow the first ``C`` names.
        class_names: the dataset's part classes (``stuff_classes`` of Pascal-Part-116).
        object_name: the oracle object whose parts are kept.
        threshold: the background plane (see :func:`~xaikit_segmenters.clipseg.planes_to_labels`).

    Returns:
        Label ``k`` is the ``k``-th of the object's classes in dataset order, named as the dataset
        names it (``"bird's beak"``); ``scores`` is the best of those classes' scores.

    Raises:
        XaikitError: ``object_name`` has no part among the scored classes.
    """
    scores = torch.as_tensor(output["sem_seg"]).float().cpu()
    kept = object_classes(class_names[: scores.shape[0]], object_name)
    if not kept:
        raise XaikitError(f"OV-PARTS scores no part of '{object_name}'; its objects are named as in its dataset (e.g. bird)")
    labels, best = planes_to_labels(scores[kept], threshold)
    return PartMap(labels=labels, names={label: class_names[index] for label, index in enumerate(kept, start=1)}, scores=best)


def shortest_edge_size(height: int, width: int, short: int, longest: int) -> tuple[int, int]:
    """detectron2's ``ResizeShortestEdge`` output size: short side ``short``, long side at most ``longest``."""
    scale = short / min(height, width)
    if max(height, width) * scale > longest:
        scale = longest / max(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


def oracle_input(image: np.ndarray, object_id: int, size: tuple[int, int], image_format: str) -> dict[str, Any]:
    """The test-time input OV-PARTS' dataset mapper would build, with ``object_id`` as the oracle everywhere.

    Args:
        image: RGB ``(H, W, 3)`` ``uint8``.
        object_id: index of the oracle object in the dataset's object classes.
        size: ``(h, w)`` the model input, from :func:`shortest_edge_size`.
        image_format: the config's ``INPUT.FORMAT``, ``"RGB"`` or ``"BGR"``.

    Returns:
        ``image`` ``(3, h, w)`` ``uint8`` in ``image_format``, ``height``/``width`` of the original
        (the output resolution), and ``sem_seg`` ``(h, w)`` ``int64`` filled with ``object_id``.
    """
    resized = np.asarray(Image.fromarray(image).resize((size[1], size[0]), Image.BILINEAR))
    if image_format == "BGR":
        resized = resized[:, :, ::-1]
    return {
        "image": torch.from_numpy(np.ascontiguousarray(resized.transpose(2, 0, 1))),
        "height": image.shape[0],
        "width": image.shape[1],
        "sem_seg": torch.full(size, object_id, dtype=torch.int64),
    }


class OVPartsSegmenter(Segmenter):
    """Parts of one object class from an OV-PARTS baseline, with that object as the oracle.

    Label ``k`` is the ``k``-th of ``object_name``'s classes in the dataset's order, named as the
    dataset names it: for Pascal-Part-116 birds, ``"bird's wing"``, ``"bird's tail"``,
    ``"bird's head"``, ``"bird's eye"``, ``"bird's beak"``, ``"bird's torso"``, ``"bird's neck"``,
    ``"bird's leg"``, ``"bird's foot"``. Bird is an unseen class of the zero-shot split.

    Args:
        source: a checkout of OpenRobotLab/OV_PARTS (put on ``sys.path``; ``import baselines``).
        config: the baseline's config, absolute or relative to ``source``.
        weights: the checkpoint matching ``config``.
        object_name: the oracle object, as the dataset's object classes name it.
        threshold: the background plane on the sigmoid scores (default 0.4, as ``clipseg``; OV-PARTS
            itself uses none, since its oracle object mask already excludes the background).
        trust_pickle: let detectron2's checkpointer unpickle ``weights``; off by default, since a
            pickle can run code (``.pth`` files are read with ``torch.load(weights_only=True)``).
        device: a CUDA device; anything else is refused.

    Raises:
        XaikitError: no or a wrong checkout or config, an object the dataset does not know.
        DeviceError: no CUDA device.
        WeightsUnavailableError: no checkpoint, or the CLIPSeg baseline's hub model is not cached.
        MissingDependencyError: detectron2 or an OV-PARTS requirement is not installed.
    """

    def __init__(
        self,
        source: str | None = None,
        config: str = DEFAULT_CONFIG,
        weights: str | None = None,
        object_name: str = "bird",
        threshold: float = DEFAULT_THRESHOLD,
        trust_pickle: bool = False,
        device: str = "cuda",
    ) -> None:
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 <= threshold < 1:
            raise XaikitError(f"ov-parts threshold is a probability in [0, 1), got {threshold!r}")
        self.trust_pickle = flag_option("ov-parts trust_pickle", trust_pickle)
        self.root = source_root(source, SETUP.package, SETUP.segmenter, SETUP.clone)
        self.config = config_file(config, self.root, SETUP.segmenter)
        self.weights = checkpoint(weights, SETUP.segmenter, SETUP.download)
        self.device = resolve_device(device)
        if self.device.type != "cuda":
            raise DeviceError(f"ov-parts runs only on CUDA (OV-PARTS' baselines hard-code it), not on '{device}'")
        self.object_name = object_name
        self.threshold = float(threshold)
        self.cfg, self.model = self._build()
        metadata = import_module("detectron2.data", "ov-parts", _INSTALL).MetadataCatalog.get(self.cfg.DATASETS.TEST[0])
        self.class_names = tuple(metadata.stuff_classes)
        kept = object_classes(self.class_names, object_name)
        if object_name not in metadata.obj_classes or not kept:
            raise XaikitError(f"OV-PARTS' dataset has no object '{object_name}'; its objects are {', '.join(metadata.obj_classes)}")
        self.object_id = list(metadata.obj_classes).index(object_name)
        self.vocabulary = tuple(self.class_names[index] for index in kept)
        self._fingerprint: str | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(config={self.config.name!r}, object={self.object_name!r}, parts={len(self.vocabulary)})"

    def _build(self) -> tuple[Any, torch.nn.Module]:
        """The config and the model with the checkpoint loaded, in eval mode."""
        get_cfg = import_module("detectron2.config", "ov-parts", _INSTALL).get_cfg
        add_deeplab_config = import_module("detectron2.projects.deeplab", "ov-parts", _INSTALL).add_deeplab_config
        modeling = import_module("detectron2.modeling", "ov-parts", _INSTALL)
        baselines = import_module("baselines", "ov-parts", _INSTALL)  # registers the meta-architectures and datasets
        cfg = get_cfg()
        add_deeplab_config(cfg)
        baselines.add_mask_former_config(cfg)
        cfg.merge_from_file(str(self.config))
        cfg.MODEL.WEIGHTS = ""
        cfg.MODEL.DEVICE = str(self.device)
        cfg.freeze()
        load = weights_loader(self.weights, "ov-parts", self.trust_pickle)  # refuses an unsafe file before building
        try:
            model = modeling.build_model(cfg)
        except OSError as error:
            raise WeightsUnavailableError(
                f"OV-PARTS could not load a model it fetches from the hub ({error}); download it where there is network"
            ) from None
        load(model)
        return cfg, model.eval()

    @property
    def fingerprint(self) -> str:
        """Config and checkpoint contents, the oracle object and the threshold."""
        if self._fingerprint is None:
            self._fingerprint = spec_digest({
                "segmenter": "ov-parts", "version": 1, "config": file_digest(self.config), "weights": file_digest(self.weights),
                "object": self.object_name, "threshold": self.threshold,
            })
        return self._fingerprint

    def segment(self, samples: Sequence[Sample]) -> list[PartMap]:
        """One :class:`~xaikit.PartMap` per sample at full resolution."""
        instances_class = import_module("detectron2.structures", "ov-parts", _INSTALL).Instances
        maps = []
        for sample in samples:
            size = shortest_edge_size(*sample.size, self.cfg.INPUT.MIN_SIZE_TEST, self.cfg.INPUT.MAX_SIZE_TEST)
            inputs = oracle_input(sample.image, self.object_id, size, self.cfg.INPUT.FORMAT)
            instances = instances_class(size)
            instances.gt_classes = torch.tensor([self.object_id])
            instances.gt_masks = torch.ones(1, *size, dtype=torch.bool)
            inputs["instances"] = instances  # CATSeg reads the oracle object here
            with tempfile.TemporaryDirectory() as folder:  # the CLIPSeg baseline reads the image from its file
                inputs["file_name"] = os.path.join(folder, "image.png")
                Image.fromarray(sample.image).save(inputs["file_name"])
                with torch.no_grad():
                    output = self.model([inputs])[0]
            maps.append(ov_parts_to_part_map(output, self.class_names, self.object_name, self.threshold))
        return maps
