"""Faithfulness of concept maps: does hiding the evidence an explainer names change its decision?

Two families of tests, both on the explainer's own class scores:

- **Deletion and insertion** (Petsiuk, Das and Saenko, "RISE: Randomized Input Sampling for
  Explanation of Black-box Models", BMVC 2018). The evidence map of an image is the pixel-wise
  maximum of its upsampled concept maps (:func:`evidence_maps`). Deletion replaces the most evident
  pixels by a baseline image (black by default, as RISE does) in ``steps`` equal steps and records the
  score of the class predicted on the clean image; insertion starts from a baseline image (blurred
  by default, as RISE does) and puts the most evident pixels back. Each curve is summarised by its area on a ``[0, 1]`` x-axis
  (:func:`curve_auc`). The same pixel counts removed or restored in a random order give the
  reference curves: evidence that matters makes deletion fall faster and insertion rise faster than
  chance.
- **Infidelity and max-sensitivity** (Yeh et al., "On the (In)fidelity and Sensitivity of
  Explanations", NeurIPS 2019), computed by captum (Kokhlikyan et al., "Captum: A unified and
  generic model interpretability library for PyTorch", 2020) with the evidence map, repeated over
  the three colour channels, as the attribution. They need :meth:`Explainer.forward`.

captum is imported only when those two are computed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from xaikit.backbones.device import resolve_device
from xaikit.backbones.preprocess import Preprocess
from xaikit.errors import XaikitError
from xaikit.interfaces import Capability, Dataset, Explainer, Metric
from xaikit.types import MetricResult, Sample
from xaikit.validation import integer_option, number_option
from xaikit_metrics.concepts import checked_concept_maps

__all__ = [
    "BASELINES",
    "CURVES",
    "SCORES",
    "Faithfulness",
    "baseline_images",
    "curve_auc",
    "evidence_maps",
    "evidence_ranks",
    "gaussian_blur",
    "step_images",
]

BASELINES = ("blur", "mean", "black")
SCORES = ("probability", "raw")
CURVES = ("deletion", "insertion", "random_deletion", "random_insertion")
_RESIZE_MODES = ("squash", "center-crop")


def evidence_maps(maps: torch.Tensor, size: tuple[int, int], concepts: Sequence[int] | None = None) -> torch.Tensor:
    """How strongly the explainer points at each pixel: the maximum over concepts of the upsampled maps.

    Args:
        maps: ``(B, K, h, w)`` concept maps.
        size: ``(H, W)`` of the images.
        concepts: the channels that count (e.g. all but a background channel); default all.

    Returns:
        ``(B, H, W)`` float32, each map upsampled bilinearly (``align_corners=False``) before the maximum.
    """
    selected = maps if concepts is None else maps[:, list(concepts)]
    return F.interpolate(selected.float(), size=size, mode="bilinear", align_corners=False).amax(dim=1)


def evidence_ranks(evidence: torch.Tensor, tie_break: torch.Tensor) -> torch.Tensor:
    """Rank of every pixel by decreasing evidence, ties broken by ``tie_break``.

    Args:
        evidence: ``(B, H, W)``.
        tie_break: ``(B, H * W)`` distinct keys; among equal evidence, the smaller key ranks first.

    Returns:
        ``(B, H * W)`` ``int64`` rank, 0 for the most evident pixel.
    """
    shuffle = tie_break.argsort(dim=1)  # pixels in tie-break order
    order = shuffle.gather(1, evidence.flatten(1).gather(1, shuffle).argsort(dim=1, descending=True, stable=True))
    return _ranks(order)


def _ranks(order: torch.Tensor) -> torch.Tensor:
    """``(B, N)`` permutation listing pixels first to last -> ``(B, N)`` position of each pixel in it."""
    positions = torch.arange(order.shape[1], device=order.device).expand_as(order)
    return torch.empty_like(order).scatter_(1, order, positions)


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``(B, 3, H, W)`` images, ``sigma`` in pixels, kernel radius ``ceil(3 sigma)``, edges replicated."""
    radius = max(1, int(np.ceil(3 * sigma)))
    offsets = torch.arange(-radius, radius + 1, dtype=images.dtype, device=images.device)
    kernel = torch.exp(-(offsets**2) / (2 * sigma**2))
    kernel = (kernel / kernel.sum()).repeat(3, 1, 1, 1)  # (3, 1, 1, 2r + 1)
    padded = F.pad(images, (radius, radius, radius, radius), mode="replicate")
    across = F.conv2d(padded, kernel, groups=3)
    return F.conv2d(across, kernel.transpose(2, 3), groups=3)


def baseline_images(images: torch.Tensor, baseline: str, blur_sigma: float) -> torch.Tensor:
    """What hidden pixels are replaced by: ``(B, 3, H, W)``.

    Args:
        images: ``(B, 3, H, W)`` in ``[0, 1]``.
        baseline: ``"blur"`` (the image blurred with ``sigma = blur_sigma x max(H, W)`` pixels),
            ``"mean"`` (each image's mean colour) or ``"black"``.
        blur_sigma: blur width as a fraction of the image side.
    """
    if baseline == "blur":
        return gaussian_blur(images, blur_sigma * max(images.shape[-2:]))
    if baseline == "mean":
        return images.mean(dim=(2, 3), keepdim=True).expand_as(images)
    return torch.zeros_like(images)


def step_images(
    images: torch.Tensor, deletion_baseline: torch.Tensor, insertion_baseline: torch.Tensor, ranks: torch.Tensor, count: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The deletion and insertion images once the first ``count`` pixels by ``ranks`` are hidden or shown.

    Args:
        images: ``(B, 3, H, W)`` clean images.
        deletion_baseline: ``(B, 3, H, W)`` what deleted pixels become (:func:`baseline_images`).
        insertion_baseline: ``(B, 3, H, W)`` what insertion starts from.
        ranks: ``(B, H * W)`` from :func:`evidence_ranks` or a random permutation.
        count: number of pixels hidden (deletion) or shown (insertion).

    Returns:
        ``(B, 3, H, W)`` deletion images (those pixels from the deletion baseline, the rest from the
        image) and insertion images (those pixels from the image, the rest from the insertion baseline).
    """
    chosen = (ranks < count).view(images.shape[0], 1, *images.shape[2:])
    return torch.where(chosen, deletion_baseline, images), torch.where(chosen, images, insertion_baseline)


DEFAULT_SIDE = 224
"""The image side for an explainer that does not say what it takes (or takes a non-square input)."""


def input_side(explainer: Explainer) -> int:
    """The side of the square input ``explainer`` takes (its :attr:`~xaikit.Explainer.preprocessing`), else :data:`DEFAULT_SIDE`."""
    preprocessing = explainer.preprocessing
    if preprocessing is not None and preprocessing.size[0] == preprocessing.size[1]:
        return int(preprocessing.size[0])
    return DEFAULT_SIDE


def curve_auc(scores: torch.Tensor) -> torch.Tensor:
    """Trapezoidal area under curves sampled at ``T + 1`` evenly spaced points of ``[0, 1]``: ``(..., T + 1)`` -> ``(...)``."""
    steps = scores.shape[-1] - 1
    return (scores.sum(dim=-1) - (scores[..., 0] + scores[..., -1]) / 2) / steps


class _Batch(NamedTuple):
    """What one batch contributes: its curves ``(4, B, T + 1)`` in :data:`CURVES` order, predictions and captum values."""

    curves: torch.Tensor
    predicted: torch.Tensor
    infidelity: torch.Tensor | None
    sensitivity: torch.Tensor | None


class Faithfulness(Metric):
    """Deletion and insertion curves of the concept-map evidence against random removal, plus captum's infidelity and max-sensitivity.

    Images are resized to ``image_size`` and their evidence map (:func:`evidence_maps`) ranks the
    pixels. The recorded score is that of the class predicted on the clean image: its softmax
    probability (``score="probability"``) or the raw class score. Class scores come from
    :meth:`Explainer.forward` when the explainer is differentiable, otherwise from
    :meth:`Explainer.explain` on the images rounded to ``uint8``.

    Value: the **deletion gap**, random-deletion AUC minus deletion AUC (mean over images), in score
    units: how much faster the score falls when the named evidence is hidden than when as many
    random pixels are. Positive is faithful, 0 is no better than chance; higher is better. Each
    image's gap is a unit (:attr:`~xaikit.MetricResult.unit_values`), for an interval over images. The
    details hold all four AUCs, the insertion gap (insertion minus random insertion), the mean
    curves, per-image AUCs, and captum's infidelity and max-sensitivity (lower is better; ``null``
    with a reason when the explainer is not differentiable or ``perturb_samples`` is 0).

    Args:
        image_size: side of the square images the explainer receives; ``None`` (the default): the
            explainer's own input side (:attr:`~xaikit.Explainer.preprocessing`, when square), else 224,
            so that pixels are deleted and inserted at the resolution the model sees.
        resize: ``"squash"`` (whole image, aspect not kept) or ``"center-crop"``.
        concepts: the channels whose maps make the evidence (leave out a background channel:
            ``[0, ..., 9]`` for IVPT); default all.
        steps: number of equal steps from no pixel to all pixels (``steps + 1`` points per curve).
        deletion_baseline: what deleted pixels become: ``"black"`` (RISE), ``"mean"`` or ``"blur"``
            (:func:`baseline_images`).
        insertion_baseline: what insertion starts from: ``"blur"`` (RISE), ``"mean"`` or ``"black"``.
        blur_sigma: blur width as a fraction of the image side.
        score: ``"probability"`` or ``"raw"``.
        seed: seed of the random order and of the tie-break among equally evident pixels (drawn per
            image, so they do not depend on ``batch_size``) and of captum's perturbations (drawn per batch).
        perturb_samples: captum's ``n_perturb_samples``; 0 skips infidelity and max-sensitivity.
        noise_std: standard deviation of infidelity's Gaussian perturbation, in ``[0, 1]`` pixel units.
        sensitivity_radius: radius of max-sensitivity's uniform perturbation, in ``[0, 1]`` pixel units.
        batch_size: images explained at once (each step scores ``4 x batch_size`` images in chunks of it).
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.

    Raises:
        XaikitError: for a bad option, an empty dataset, or concept maps without the channels
            ``concepts`` names.
    """

    name = "faithfulness"
    higher_is_better = True
    requires = frozenset({Capability.CONCEPT_MAPS})

    def __init__(
        self,
        *,
        image_size: int | None = None,
        resize: str = "squash",
        concepts: list[int] | None = None,
        steps: int = 16,
        deletion_baseline: str = "black",
        insertion_baseline: str = "blur",
        blur_sigma: float = 0.05,
        score: str = "probability",
        seed: int = 0,
        perturb_samples: int = 10,
        noise_std: float = 0.003,
        sensitivity_radius: float = 0.02,
        batch_size: int = 16,
        device: str = "auto",
    ) -> None:
        choices = (
            ("resize", resize, _RESIZE_MODES), ("deletion_baseline", deletion_baseline, BASELINES),
            ("insertion_baseline", insertion_baseline, BASELINES), ("score", score, SCORES),
        )
        for option, value, allowed in choices:
            if value not in allowed:
                raise XaikitError(f"unknown {option} {value!r} for metric 'faithfulness'; use one of {', '.join(allowed)}")
        if concepts is not None:
            if not isinstance(concepts, list | tuple) or not concepts:
                raise XaikitError(f"option concepts must be a non-empty list of channel indices, got {concepts!r}")
            for concept in concepts:
                integer_option("concepts", concept, 0)
        self.image_size = None if image_size is None else integer_option("image_size", image_size, 2)
        self.resize = resize
        self.concepts = None if concepts is None else list(concepts)
        self.steps = integer_option("steps", steps, 2)
        self.deletion_baseline = deletion_baseline
        self.insertion_baseline = insertion_baseline
        self.blur_sigma = number_option("blur_sigma", blur_sigma, 1e-6)
        self.score = score
        self.seed = integer_option("seed", seed, 0)
        self.perturb_samples = integer_option("perturb_samples", perturb_samples, 0)
        self.noise_std = number_option("noise_std", noise_std, 1e-9)
        self.sensitivity_radius = number_option("sensitivity_radius", sensitivity_radius, 1e-9)
        self.batch_size = integer_option("batch_size", batch_size, 1)
        self.device = device
        self.options = {
            "image_size": image_size, "resize": resize, "concepts": self.concepts, "steps": steps,
            "deletion_baseline": deletion_baseline, "insertion_baseline": insertion_baseline, "blur_sigma": blur_sigma,
            "score": score, "seed": seed, "perturb_samples": perturb_samples, "noise_std": noise_std,
            "sensitivity_radius": sensitivity_radius, "batch_size": batch_size, "device": device,
        }

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{key}={value!r}' for key, value in self.options.items())})"

    def evaluate(self, explainer: Explainer, dataset: Dataset) -> MetricResult:
        """Deletion, insertion and (for a differentiable explainer) captum's measures on every image of ``dataset``."""
        if len(dataset) == 0:
            raise XaikitError("metric 'faithfulness' got an empty dataset")
        device = resolve_device(self.device)
        size = self.image_size or input_side(explainer)
        preprocess = Preprocess(size=(size, size), mode=self.resize, interpolation="bilinear", mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
        differentiable = Capability.DIFFERENTIABLE in explainer.capabilities
        skipped = self._captum_skipped(explainer, differentiable)
        batches, samples_seen = [], []
        for start in range(0, len(dataset), self.batch_size):
            indices = list(range(start, min(start + self.batch_size, len(dataset))))
            samples = [dataset[index] for index in indices]
            images = preprocess([sample.image for sample in samples]).to(device)
            batches.append(self._batch(explainer, images, indices, differentiable, skipped is None))
            samples_seen.extend((index, sample.image_id, sample.label) for index, sample in zip(indices, samples, strict=True))
        curves = torch.cat([batch.curves for batch in batches], dim=1).double()  # (4, N, T + 1)
        aucs = dict(zip(CURVES, curve_auc(curves), strict=True))  # each (N,)
        predicted = torch.cat([batch.predicted for batch in batches])
        means = {f"{curve}_auc": float(auc.mean()) for curve, auc in aucs.items()}
        details = {
            **means,
            "deletion_gap": means["random_deletion_auc"] - means["deletion_auc"],
            "insertion_gap": means["insertion_auc"] - means["random_insertion_auc"],
            "infidelity": None if skipped else float(torch.cat([batch.infidelity for batch in batches]).mean()),
            "sensitivity_max": None if skipped else float(torch.cat([batch.sensitivity for batch in batches]).mean()),
            "captum_skipped": skipped,
            "scores_from": "forward" if differentiable else "explain",
            "images": len(predicted),
            "image_size": size,
            "fractions": [t / self.steps for t in range(self.steps + 1)],
            "curves": {curve: values.mean(dim=0).tolist() for curve, values in zip(CURVES, curves, strict=True)},
            "per_image": [
                {"index": index, "image_id": image_id, "label": label, "predicted": prediction, **{f"{curve}_auc": float(aucs[curve][n]) for curve in CURVES}}
                for n, ((index, image_id, label), prediction) in enumerate(zip(samples_seen, predicted.tolist(), strict=True))
            ],
            "options": self.options,
        }
        gaps = aucs["random_deletion"] - aucs["deletion"]  # (N,) each image's deletion gap, whose mean is the value
        return MetricResult(self.name, details["deletion_gap"], self.higher_is_better, details, unit_values=tuple(gaps.tolist()))

    def _captum_skipped(self, explainer: Explainer, differentiable: bool) -> str | None:
        """Why infidelity and max-sensitivity are not computed, or ``None`` when they are."""
        if not differentiable:
            return f"infidelity and sensitivity_max need a differentiable explainer, and {type(explainer).__name__} is not"
        if self.perturb_samples == 0:
            return "infidelity and sensitivity_max were turned off with perturb_samples=0"
        return None

    def _batch(self, explainer: Explainer, images: torch.Tensor, indices: list[int], differentiable: bool, with_captum: bool) -> _Batch:
        """Curves and captum values of one batch of prepared ``(B, 3, S, S)`` images."""
        evidence = self._evidence(explainer, images)
        pixels = images.shape[-2] * images.shape[-1]
        ranks = (
            evidence_ranks(evidence, self._keys(indices, pixels, stream=0).to(images.device)),
            self._keys(indices, pixels, stream=1).argsort(dim=1).to(images.device),  # a random permutation is a random rank
        )
        deleted = baseline_images(images, self.deletion_baseline, self.blur_sigma)
        inserted = baseline_images(images, self.insertion_baseline, self.blur_sigma)
        ends = self._scores(explainer, torch.cat([images, deleted, inserted]), differentiable).view(3, len(images), -1)
        predicted = ends[0].argmax(dim=1)
        points = []
        for step in range(1, self.steps):
            count = round(step * pixels / self.steps)
            variants = [image for rank in ranks for image in step_images(images, deleted, inserted, rank, count)]
            points.append(self._scores(explainer, torch.cat(variants), differentiable).view(4, len(images), -1))
        picked = torch.stack(points, dim=2).gather(3, predicted.view(1, -1, 1, 1).expand(4, -1, len(points), 1))[..., 0]  # (4, B, T - 1)
        clean, all_deleted, from_insertion = ends.gather(2, predicted.view(1, -1, 1).expand(3, -1, 1))[..., 0]  # each (B,)
        first = torch.stack([clean, from_insertion, clean, from_insertion])[..., None]
        last = torch.stack([all_deleted, clean, all_deleted, clean])[..., None]
        curves = torch.cat([first, picked, last], dim=2)
        if not with_captum:
            return _Batch(curves, predicted, None, None)
        infidelity, sensitivity = self._captum(explainer, images, evidence, predicted, indices[0])
        return _Batch(curves, predicted, infidelity, sensitivity)

    def _evidence(self, explainer: Explainer, images: torch.Tensor) -> torch.Tensor:
        """``(B, S, S)`` evidence of the explainer's concept maps for ``images``."""
        maps = checked_concept_maps(explainer, images)
        if self.concepts is not None and max(self.concepts) >= maps.shape[1]:
            raise XaikitError(f"option concepts names channel {max(self.concepts)}, but the explainer gives {maps.shape[1]} concept maps")
        return evidence_maps(maps.to(images.device), tuple(images.shape[-2:]), self.concepts)

    def _keys(self, indices: list[int], pixels: int, stream: int) -> torch.Tensor:
        """``(B, pixels)`` float64 uniform keys, a fixed stream per image, seed and purpose."""
        return torch.from_numpy(np.stack([np.random.default_rng([self.seed, index, stream]).random(pixels) for index in indices]))

    def _scores(self, explainer: Explainer, images: torch.Tensor, differentiable: bool) -> torch.Tensor:
        """Class scores ``(M, C)`` float32 of ``(M, 3, S, S)`` images, in chunks of ``batch_size``, as :attr:`score` says."""
        chunks = []
        for chunk in images.split(self.batch_size):
            with torch.no_grad():
                raw = explainer.forward(chunk) if differentiable else explainer.explain(_as_samples(chunk)).scores
            chunks.append(self._transform(raw.float()).to(images.device))
        return torch.cat(chunks)

    def _transform(self, scores: torch.Tensor) -> torch.Tensor:
        return scores.softmax(dim=1) if self.score == "probability" else scores

    def _captum(self, explainer: Explainer, images: torch.Tensor, evidence: torch.Tensor, predicted: torch.Tensor, first: int) -> tuple[torch.Tensor, torch.Tensor]:
        """captum's infidelity (normalised) and max-sensitivity of the evidence attribution, ``(B,)`` each."""
        from captum.metrics import infidelity, sensitivity_max

        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + first)

        def attribution(inputs: torch.Tensor | tuple[torch.Tensor, ...]) -> tuple[torch.Tensor]:
            inputs = inputs[0] if isinstance(inputs, tuple) else inputs
            return (self._evidence(explainer, inputs)[:, None].repeat(1, 3, 1, 1),)  # captum iterates over the tuple

        def gaussian(inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            noise = (torch.randn(inputs.shape, generator=generator) * self.noise_std).to(inputs.device, inputs.dtype)
            return noise, inputs - noise

        def uniform(inputs: torch.Tensor, radius: float) -> torch.Tensor:
            return inputs + ((torch.rand(inputs.shape, generator=generator) * 2 - 1) * radius).to(inputs.device, inputs.dtype)

        def forward(inputs: torch.Tensor) -> torch.Tensor:
            return self._transform(explainer.forward(inputs).float())

        batch = len(images)
        attributions = evidence[:, None].repeat(1, 3, 1, 1)
        fidelity = infidelity(
            forward, gaussian, images, attributions, target=predicted, n_perturb_samples=self.perturb_samples,
            max_examples_per_batch=batch, normalize=True,
        )
        sensitivity = sensitivity_max(
            attribution, images, perturb_func=uniform, perturb_radius=self.sensitivity_radius,
            n_perturb_samples=self.perturb_samples, max_examples_per_batch=batch,
        )
        return fidelity.flatten().cpu(), sensitivity.flatten().cpu()


def _as_samples(images: torch.Tensor) -> list[Sample]:
    """``(B, 3, H, W)`` float in ``[0, 1]`` -> samples with the images rounded to ``uint8``."""
    pixels = (images.detach().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return [Sample(image=np.ascontiguousarray(image)) for image in pixels]
