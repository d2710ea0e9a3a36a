"""The ``clipseg`` segmenter: text-prompted parts with CLIPSeg through transformers.

CLIPSeg: Lüddecke and Ecker, "Image Segmentation Using Text and Image Prompts", CVPR 2022. Each
vocabulary entry becomes one prompt; CLIPSeg predicts an independent sigmoid map per prompt. The
maps are upsampled to the image, a constant background plane at ``threshold`` is added, and the
argmax over the planes is the label map (as OV-PARTS' ``preds_to_semantic_inds``). No detectron2;
runs on CPU and GPU.

Shapes: ``B`` images per forward pass, ``N`` prompts, ``S x S`` the processor's input size (352
for ``CIDAS/clipseg-rd64-refined``), ``h x w`` the logit grid, ``H x W`` an image.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from xaikit.backbones.device import resolve_device
from xaikit.backbones.pretrained import missing_model, pretrained_source
from xaikit.errors import MissingDependencyError, XaikitError
from xaikit.interfaces import Segmenter
from xaikit.types import PartMap, Sample
from xaikit_segmenters.external import spec_digest
from xaikit_segmenters.vocabulary import BIRD_VOCABULARY, parse_vocabulary

__all__ = ["DEFAULT_MODEL", "DEFAULT_THRESHOLD", "CLIPSegSegmenter", "planes_to_labels", "prompt_logits"]

DEFAULT_MODEL = "CIDAS/clipseg-rd64-refined"
DEFAULT_THRESHOLD = 0.4
"""Background plane, a sigmoid probability: a pixel is background unless some prompt's probability
exceeds it. CLIPSeg's maps for small parts rarely reach 0.5, and below about 0.3 the diffuse halo
around the bird is labelled too; 0.4 sits between (a starting point, not tuned on CUB)."""


def _transformers() -> Any:
    try:
        import transformers
    except ImportError:
        raise MissingDependencyError("segmenter 'clipseg' needs transformers: pip install 'xaikit[transformers]'") from None
    return transformers


def _load(transformers: Any, model: str) -> tuple[torch.nn.Module, Any]:
    """The CLIPSeg model and its processor, with one-sentence errors for missing or wrong models."""
    local = Path(model).expanduser()
    source = pretrained_source(model)
    try:
        config = transformers.AutoConfig.from_pretrained(source)
        if config.model_type != "clipseg":
            raise XaikitError(f"'{model}' is a {config.model_type} model, not CLIPSeg")
        network = transformers.CLIPSegForImageSegmentation.from_pretrained(source)
        processor = transformers.CLIPSegProcessor.from_pretrained(source)
    except (OSError, ValueError) as error:
        if local.exists():
            raise XaikitError(f"{local} is not a transformers CLIPSeg directory with its processor: {error}") from None
        raise missing_model("CLIPSeg", model) from None
    return network, processor


def prompt_logits(logits: torch.Tensor, images: int, prompts: int) -> torch.Tensor:
    """CLIPSeg's logits as ``(B, N, h, w)``, from a forward pass over ``B * N`` image-prompt rows.

    transformers before 4.27 squeezed the logits with ``.squeeze()``, so one row came back as
    ``(h, w)``; later versions use ``.squeeze(1)`` and return ``(B * N, h, w)``. Both reshape alike.
    """
    return logits.reshape(images, prompts, *logits.shape[-2:])


def planes_to_labels(probabilities: torch.Tensor, threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Argmax over the prompt planes and a constant background plane at ``threshold``.

    Args:
        probabilities: ``(N, H, W)`` per-prompt probabilities, ``N >= 1``.
        threshold: the background plane's value; a pixel whose best prompt does not exceed it
            is background (a tie goes to the background, which comes first).

    Returns:
        ``labels`` ``(H, W)`` ``int64`` (``i + 1`` for prompt ``i``, 0 for background) and
        ``scores`` ``(H, W)``: the best prompt's probability at each pixel (below ``threshold``
        on background pixels).
    """
    scores, best = probabilities.max(dim=0)
    labels = torch.where(scores > threshold, best + 1, torch.zeros_like(best))
    return labels, scores


def _weights_digest(model: torch.nn.Module) -> str:
    """SHA-256 of every parameter and buffer (name, dtype, shape, bytes)."""
    digest = hashlib.sha256()
    for key, tensor in sorted(model.state_dict().items()):
        digest.update(f"{key}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


class CLIPSegSegmenter(Segmenter):
    """Parts named by text prompts, segmented by CLIPSeg (``CLIPSegForImageSegmentation``).

    Label ``i + 1`` is ``vocabulary[i]``. The model, the processor and the prompt embeddings are
    built once, when the segmenter is.

    Args:
        model: a hub id or a local directory holding the model and its processor (tokenizer and
            image processor), as ``save_pretrained`` writes them.
        vocabulary: part names, a list or one comma-separated string; default the shared bird
            vocabulary (``"bird head"``, ``"bird beak"``, ...).
        prompt_template: turns a part name into its prompt; ``{}`` stands for the name.
        threshold: the background plane, a sigmoid probability in ``[0, 1)`` (default 0.4).
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        batch_size: images per forward pass; each brings one row per prompt.

    Raises:
        XaikitError: an option out of range, or a directory that is not a CLIPSeg model.
        WeightsUnavailableError: a hub id whose weights are not on this machine, offline.
    """

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        vocabulary: str | Sequence[str] | None = None,
        prompt_template: str = "a photo of a {}.",
        threshold: float = DEFAULT_THRESHOLD,
        device: str = "auto",
        batch_size: int = 4,
    ) -> None:
        if "{}" not in prompt_template:
            raise XaikitError(f"clipseg prompt_template must contain {{}} where the part name goes, got {prompt_template!r}")
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 <= threshold < 1:
            raise XaikitError(f"clipseg threshold is a probability in [0, 1), got {threshold!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise XaikitError(f"clipseg batch_size must be an integer of at least 1, got {batch_size!r}")
        self.vocabulary = parse_vocabulary(BIRD_VOCABULARY if vocabulary is None else vocabulary, "clipseg")
        self.prompts = tuple(prompt_template.replace("{}", name) for name in self.vocabulary)
        self.threshold = float(threshold)
        self.batch_size = batch_size
        self.model_name = model
        self.device = resolve_device(device)
        network, self.processor = _load(_transformers(), model)
        self.model = network.eval().requires_grad_(False).to(self.device)
        self.embeddings = self._embed(self.prompts)
        self._names = {index: name for index, name in enumerate(self.vocabulary, start=1)}
        self._fingerprint: str | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model={self.model_name!r}, parts={len(self.vocabulary)}, threshold={self.threshold})"

    def _embed(self, prompts: Sequence[str]) -> torch.Tensor:
        """The conditional (text) embeddings of the prompts, ``(N, projection_dim)``."""
        tokens = self.processor.tokenizer(list(prompts), padding=True, return_tensors="pt").to(self.device)
        with torch.no_grad():
            return self.model.get_conditional_embeddings(
                batch_size=len(prompts), input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"]
            )

    @property
    def fingerprint(self) -> str:
        """Model name, weights, image processor, prompts and threshold."""
        if self._fingerprint is None:
            self._fingerprint = spec_digest({
                "segmenter": "clipseg", "version": 1, "model": self.model_name, "weights": _weights_digest(self.model),
                "image_processor": self.processor.image_processor.to_dict(), "prompts": list(self.prompts),
                "names": list(self.vocabulary), "threshold": self.threshold,
            })
        return self._fingerprint

    def segment(self, samples: Sequence[Sample]) -> list[PartMap]:
        """One :class:`~xaikit.PartMap` per sample, labels ``(H, W)`` ``int64`` on the CPU with ``scores``."""
        maps: list[PartMap] = []
        for start in range(0, len(samples), self.batch_size):
            maps.extend(self._segment_batch(samples[start : start + self.batch_size]))
        return maps

    def _segment_batch(self, samples: Sequence[Sample]) -> list[PartMap]:
        """All prompts of all ``B`` images in one forward pass of ``B * N`` rows."""
        count = len(self.prompts)
        pixels = self.processor.image_processor(
            images=[sample.image for sample in samples], input_data_format="channels_last", return_tensors="pt"
        )["pixel_values"].to(self.device)  # (B, 3, S, S)
        with torch.no_grad():
            output = self.model(
                pixel_values=pixels.repeat_interleave(count, dim=0),
                conditional_embeddings=self.embeddings.repeat(len(samples), 1),
            )
        logits = prompt_logits(output.logits.float(), len(samples), count)
        maps = []
        for sample, planes in zip(samples, logits):
            probabilities = F.interpolate(planes[None], size=sample.size, mode="bilinear", align_corners=False)[0].sigmoid()
            labels, scores = planes_to_labels(probabilities, self.threshold)
            maps.append(PartMap(labels=labels.cpu(), names=self._names, scores=scores.cpu()))
        return maps
