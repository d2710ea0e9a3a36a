"""IVPT's training loop: Adam, StepLR, gradient clipping, checkpoints, resume and data parallelism.

The recipe is the reference code's (``../shared/reference/ivpt-and-metrics.md`` section 5): Adam
(0.9, 0.999) without weight decay in two parameter groups (tokens, position embedding, prototypes
and bias maps at 2e-4; fusion layers, modulation and head at 1e-2), StepLR every 4 epochs x 0.5,
gradient-norm clipping at 2.0, float32.

Every random draw is derived from ``(seed, epoch, step)``: the epoch's shuffle, the augmentation of
each image of the global batch, the batch's equivariance transform and the Gumbel noise. So a run
resumed from a checkpoint continues exactly as the uninterrupted run would have, and ``N``
data-parallel processes that split each global batch see the same images, augmentations and
transforms as one process would (only the Gumbel noise is drawn per process).

Data parallelism: under ``torchrun`` (``WORLD_SIZE > 1``) the model is wrapped in
``DistributedDataParallel`` (gloo on CPU, nccl on CUDA); ``batch_size`` is the global batch, each
process takes its ``batch_size / N`` share, gradients are averaged, and only rank 0 writes. The
presence loss takes its maximum over each process's share, as the reference code (4 GPUs x 4) did.
"""

from __future__ import annotations

import contextlib
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from xaikit.backbones.preprocess import Preprocess
from xaikit.errors import XaikitError
from xaikit.interfaces import Dataset
from xaikit.distributed import Distributed
from xaikit.training import TrainProgress
from xaikit.validation import choice_option, integer_option, number_option
from xaikit_ivpt.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from xaikit_ivpt.geometry import random_affine
from xaikit_ivpt.losses import LossOptions, LossWeights
from xaikit_ivpt.model import GROUPINGS, IVPTModel
from xaikit_ivpt.objective import loss_terms

__all__ = [
    "AUGMENTATIONS",
    "TrainSettings",
    "augment",
    "draw_augmentation",
    "epoch_batches",
    "step_generator",
    "train_model",
]

AUGMENTATIONS = ("none", "flip", "reference")
"""``flip``: horizontal flip with probability 0.5 (default); ``reference``: flip, then the reference
recipe's RandomAffine (rotation +-90 degrees, translation 0.2, scale 0.8-1.2) on the model input."""


@dataclass(frozen=True)
class TrainSettings:
    """How IVPT is trained (defaults: the reference recipe, except ``epochs`` and ``augment``).

    Attributes:
        epochs: passes over the training split (the reference trains 25).
        batch_size: images per optimiser step, over all processes (reference 16 = 4 GPUs x 4).
        lr_tokens: learning rate of tokens, position embedding, prototypes and bias maps.
        lr_head: learning rate of the fusion layers, modulation and head.
        step_size, gamma: StepLR: the rates are multiplied by ``gamma`` every ``step_size`` epochs.
        clip: maximum gradient norm.
        seed: seeds the model's initialisation and every random draw of training.
        augment: one of :data:`AUGMENTATIONS`.
        grouping: ``gumbel`` (the method) or ``softmax`` (noiseless grouping during training too).
        precision: ``fp32`` (the reference) or ``bf16`` (autocast on CUDA).
        workers: image-decoding worker processes.
        weights: the loss weights.
        losses: how the loss terms are computed (the reference code's by default).
    """

    epochs: int = 10
    batch_size: int = 16
    lr_tokens: float = 2e-4
    lr_head: float = 1e-2
    step_size: int = 4
    gamma: float = 0.5
    clip: float = 2.0
    seed: int = 42
    augment: str = "flip"
    grouping: str = "gumbel"
    precision: str = "fp32"
    workers: int = 0
    weights: LossWeights = field(default_factory=LossWeights)
    losses: LossOptions = field(default_factory=LossOptions)

    def __post_init__(self) -> None:
        integer_option("epochs", self.epochs, 0)
        integer_option("train_batch_size", self.batch_size, 1)
        number_option("lr_tokens", self.lr_tokens, 0.0)
        number_option("lr_head", self.lr_head, 0.0)
        integer_option("step_size", self.step_size, 1)
        number_option("gamma", self.gamma, 0.0, 1.0)
        number_option("clip", self.clip, 0.0)
        integer_option("seed", self.seed, 0)
        choice_option("augment", self.augment, AUGMENTATIONS)
        choice_option("train_grouping", self.grouping, GROUPINGS)
        choice_option("precision", self.precision, ("fp32", "bf16"))
        integer_option("workers", self.workers, 0)


def step_generator(seed: int, epoch: int, step: int) -> torch.Generator:
    """A CPU generator seeded from ``(seed, epoch, step)`` (``step = -1`` for the epoch's shuffle)."""
    digest = hashlib.blake2b(f"{seed}:{epoch}:{step}".encode(), digest_size=8).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest, "little") & (2**63 - 1))


def epoch_batches(size: int, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """The epoch's global batches: a seeded permutation of ``range(size)`` cut into full batches (a partial last batch is dropped)."""
    order = torch.randperm(size, generator=step_generator(seed, epoch, -1)).tolist()
    return [order[start : start + batch_size] for start in range(0, size - batch_size + 1, batch_size)]


def draw_augmentation(kind: str, generator: torch.Generator, batch: int, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Draw the augmentation of a global batch of ``batch`` images of ``size = (H, W)``, image by image.

    Drawing for the whole global batch, whichever share a process trains on, keeps every image's
    augmentation independent of the number of processes.

    Returns:
        ``(flips, theta)``: ``(B,)`` bool horizontal flips, and ``(B, 2, 3)`` affine matrices for
        ``F.affine_grid`` (``None`` unless ``kind`` is ``reference``).
    """
    flips = torch.rand(batch, generator=generator) < 0.5 if kind != "none" else torch.zeros(batch, dtype=torch.bool)
    if kind != "reference":
        return flips, None
    transforms = [random_affine(generator, degrees=90.0, translate=0.2, scale=(0.8, 1.2)) for _ in range(batch)]
    return flips, torch.stack([affine.theta(size) for affine in transforms])


def augment(pixels: torch.Tensor, flips: torch.Tensor, theta: torch.Tensor | None) -> torch.Tensor:
    """Apply drawn augmentations to model input ``(B, 3, H, W)``: flips ``(B,)``, then the affine ``theta`` ``(B, 2, 3)`` (zero fill)."""
    pixels = torch.where(flips.to(pixels.device).view(-1, 1, 1, 1), pixels.flip(-1), pixels)
    if theta is None:
        return pixels
    grid = F.affine_grid(theta.to(pixels), list(pixels.shape), align_corners=False)
    return F.grid_sample(pixels, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


class _Images(torch.utils.data.Dataset):
    """Preprocessed images and labels of a dataset, decoded on demand (in worker processes when asked)."""

    def __init__(self, dataset: Dataset, preprocess: Preprocess) -> None:
        self.dataset, self.preprocess = dataset, preprocess

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        sample = self.dataset[index]
        return self.preprocess.one(sample.image), int(sample.label)


def _autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    if precision == "bf16" and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _reduce_means(sums: dict[str, float], count: int, distributed: Distributed, device: torch.device) -> dict[str, float]:
    """Average per-step term sums over steps and processes."""
    names = sorted(sums)
    values = torch.tensor([sums[name] for name in names] + [float(count)], dtype=torch.float64, device=device)
    if distributed.active:
        import torch.distributed as dist

        dist.all_reduce(values)
    return {name: float(value / values[-1]) for name, value in zip(names, values[:-1], strict=True)}


def train_model(
    model: IVPTModel,
    preprocess: Preprocess,
    dataset: Dataset,
    settings: TrainSettings,
    *,
    device: torch.device,
    checkpoint: Path | None = None,
    resume: bool = False,
    metadata: dict[str, Any] | None = None,
    progress: TrainProgress | None = None,
    distributed: Distributed | None = None,
) -> list[dict[str, float]]:
    """Train ``model`` on ``dataset`` (its training split) and return the per-epoch mean loss terms.

    Args:
        model: the IVPT module, on ``device``.
        preprocess: the backbone's preprocessing (images -> normalised model input).
        dataset: the training images.
        settings: the recipe.
        device: where the batches go.
        checkpoint: the checkpoint file written after every epoch (by rank 0), or ``None``.
        resume: continue from ``checkpoint`` (its model, optimiser, scheduler and history).
        metadata: JSON facts stored in every checkpoint (architecture, backbone, classes, ...).
        progress: receives events (rank 0 only).
        distributed: this process's place in a data-parallel run (default: from the environment).

    Raises:
        XaikitError: too few images for one batch, a batch that does not split over the
            processes, or a checkpoint that does not fit the model.
    """
    distributed = distributed or Distributed.from_environment()
    progress = progress if progress is not None and distributed.writes else TrainProgress()
    share, remainder = divmod(settings.batch_size, distributed.world)
    if remainder or not share:
        raise XaikitError(f"train_batch_size {settings.batch_size} does not split evenly over {distributed.world} processes")
    if len(dataset) < settings.batch_size:
        raise XaikitError(f"the training split has {len(dataset)} images, fewer than one batch of {settings.batch_size}")
    optimizer = torch.optim.Adam(model.parameter_groups(settings.lr_tokens, settings.lr_head), betas=(0.9, 0.999), weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=settings.step_size, gamma=settings.gamma)
    history: list[dict[str, float]] = []
    first_epoch = 0
    if resume and checkpoint is not None and checkpoint.is_file():
        state = load_checkpoint(checkpoint)
        _load_training_state(model, optimizer, scheduler, state)
        history = list(state.metadata.get("history", []))
        first_epoch = int(state.metadata["epoch"]) + 1
    trained = model
    if distributed.active:
        from torch.nn.parallel import DistributedDataParallel

        trained = DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None, broadcast_buffers=False)
    images = _Images(dataset, preprocess)
    parameters = [parameter for parameter in model.parameters() if parameter.requires_grad]
    steps = len(dataset) // settings.batch_size
    progress.start(settings.epochs, steps, first_epoch)
    model.train()
    for epoch in range(first_epoch, settings.epochs):
        batches = epoch_batches(len(dataset), settings.batch_size, settings.seed, epoch)
        shares = [batch[distributed.rank * share : (distributed.rank + 1) * share] for batch in batches]
        loader = torch.utils.data.DataLoader(images, batch_sampler=shares, num_workers=settings.workers)
        sums: dict[str, float] = {}
        for step, (pixels, labels) in enumerate(loader):
            generator = step_generator(settings.seed, epoch, step)
            rows = slice(distributed.rank * share, (distributed.rank + 1) * share)
            flips, theta = draw_augmentation(settings.augment, generator, settings.batch_size, tuple(pixels.shape[-2:]))
            pixels = augment(pixels.to(device), flips[rows], None if theta is None else theta[rows])
            equivariance = random_affine(generator)
            torch.manual_seed(int(torch.randint(2**62, (1,), generator=generator)) + distributed.rank)  # Gumbel noise
            with _autocast(device, settings.precision):
                terms = loss_terms(trained, pixels, labels.to(device), settings.weights, equivariance, settings.grouping, settings.losses)
            total = settings.weights.total(terms)
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            torch.nn.utils.clip_grad_norm_(parameters, settings.clip)
            optimizer.step()
            values = {name: float(value.detach()) for name, value in terms.items()} | {"total": float(total.detach())}
            for name, value in values.items():
                sums[name] = sums.get(name, 0.0) + value
            progress.step(values)
        scheduler.step()
        means = _reduce_means(sums, steps, distributed, device)
        history.append({"epoch": epoch, **means})
        if checkpoint is not None and distributed.writes:
            save_checkpoint(
                checkpoint,
                Checkpoint(
                    model=model.state_dict(), optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(),
                    metadata={**(metadata or {}), "epoch": epoch, "epochs": settings.epochs, "history": history},
                ),
            )
        progress.epoch(epoch, means)
    model.eval()
    progress.finish()
    return history


def _load_training_state(model: IVPTModel, optimizer: torch.optim.Optimizer, scheduler: Any, state: Checkpoint) -> None:
    """Restore a checkpoint's model, optimiser and scheduler, refusing one that does not fit."""
    try:
        model.load_state_dict(state.model)
        if state.optimizer is not None:
            optimizer.load_state_dict(state.optimizer)
        if state.scheduler is not None:
            scheduler.load_state_dict(state.scheduler)
    except (RuntimeError, ValueError, KeyError) as error:
        raise XaikitError(f"the checkpoint does not fit this model: {str(error).splitlines()[0]}") from None

