"""Train demo-vit, the small ViT behind xaikit's offline default backbone, from scratch on synthetic-birds.

Reproduce the committed weights (2 CPU threads, no GPU, no network, no pretrained weights)::

    python -m xaikit_backbones.demo_vit.train --out plugins/xaikit_backbones/demo_vit/weights

The defaults are the committed recipe. The script writes the synthetic-birds dataset (into ``--data``, or a
temporary directory that is removed afterwards; a ``--data`` directory that already holds the dataset for the
same configuration is reused), decodes it once into memory, trains a CLS-token timm ``VisionTransformer`` with
label-smoothed cross-entropy, AdamW and a warmup + cosine schedule, evaluates it on both splits and writes
into ``--out``:

* ``config.json`` and ``model.safetensors``: a timm ``local-dir`` checkpoint, written by
  ``timm.models.save_for_hf``, that ``timm.create_model("local-dir:" + out, pretrained=True)`` rebuilds
  exactly (checked after writing: the reloaded model's test logits are bit-identical);
* ``metrics.json``: train/test accuracy, timings, the recipe, the seed and the library versions.

Everything is seeded (``torch.manual_seed``, a NumPy ``Generator`` for augmentation, the ``DataLoader``
generator for shuffling) and runs with ``torch.use_deterministic_algorithms(True)`` on 2 threads, so the
same command on the same machine and library versions gives bit-identical weights.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import shlex
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import timm
import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer
from timm.optim import create_optimizer_v2
from torch.utils.data import DataLoader, TensorDataset

from xaikit.data.cub import CUBDataset
from xaikit.data.synthetic import GENERATOR_VERSION, SynthConfig, write_synthetic_birds
from xaikit.errors import DatasetError

ARCHITECTURE = "vit_tiny_patch16_224"
"""timm architecture the model is built from; every size argument is overridden by the recipe."""

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
THREADS = 2
LOG_RATIO = (math.log(3 / 4), math.log(4 / 3))
"""Range of the log aspect ratio of random crops."""
RELOAD_CHECK_IMAGES = 256
"""Test images whose logits the reloaded checkpoint must reproduce bit for bit."""


# ---------------------------------------------------------------------------------------------- arguments


def _bounded(kind: Callable[[str], int | float], low: float, high: float | None = None) -> Callable[[str], int | float]:
    """Return an argparse ``type`` that parses ``kind`` and requires ``low <= value`` (and ``<= high``)."""

    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {kind.__name__}, got {text!r}") from None
        if value < low or (high is not None and value > high):
            bound = f">= {low}" if high is None else f"in [{low}, {high}]"
            raise argparse.ArgumentTypeError(f"must be {bound}, got {text}")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    """Return the command-line parser; its defaults are the committed demo-vit recipe."""
    parser = argparse.ArgumentParser(
        prog="python -m xaikit_backbones.demo_vit.train",
        description="Train demo-vit from scratch on synthetic-birds and write a timm local-dir checkpoint.",
    )
    parser.add_argument("--out", type=Path, required=True, help="directory for config.json, model.safetensors, metrics.json")
    parser.add_argument("--data", type=Path, default=None, help="dataset directory (default: a temporary one)")
    data = parser.add_argument_group("data (synthetic-birds)")
    data.add_argument("--classes", type=_bounded(int, 2, 999), default=10, help="species")
    data.add_argument("--per-class", type=_bounded(int, 2, 9999), default=600, help="images per species; half train")
    data.add_argument("--size", type=_bounded(int, 64), default=112, help="image side = model input side")
    data.add_argument("--data-seed", type=_bounded(int, 0), default=0, help="generator seed")
    model = parser.add_argument_group("model")
    model.add_argument("--patch-size", type=_bounded(int, 1), default=8)
    model.add_argument("--embed-dim", type=_bounded(int, 1), default=128)
    model.add_argument("--depth", type=_bounded(int, 1), default=6)
    model.add_argument("--heads", type=_bounded(int, 1), default=4)
    model.add_argument("--mlp-ratio", type=_bounded(float, 0.25), default=4.0)
    recipe = parser.add_argument_group("recipe")
    recipe.add_argument("--epochs", type=_bounded(int, 1), default=12)
    recipe.add_argument("--batch-size", type=_bounded(int, 1), default=32)
    recipe.add_argument("--lr", type=_bounded(float, 0.0), default=1e-3, help="peak learning rate")
    recipe.add_argument("--weight-decay", type=_bounded(float, 0.0), default=0.05)
    recipe.add_argument("--warmup-epochs", type=_bounded(float, 0.0), default=1.0)
    recipe.add_argument("--label-smoothing", type=_bounded(float, 0.0, 0.99), default=0.1)
    recipe.add_argument("--min-scale", type=_bounded(float, 0.05, 1.0), default=0.75, help="smallest random-crop area")
    recipe.add_argument("--grad-clip", type=_bounded(float, 0.0), default=1.0, help="max gradient norm (0: off)")
    recipe.add_argument("--seed", type=_bounded(int, 0), default=0, help="training seed")
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse ``argv`` and check the arguments that depend on each other (argparse error, exit code 2)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.size % args.patch_size:
        parser.error(f"--size {args.size} must be a multiple of --patch-size {args.patch_size}")
    if args.embed_dim % args.heads:
        parser.error(f"--embed-dim {args.embed_dim} must be a multiple of --heads {args.heads}")
    if args.warmup_epochs >= args.epochs:
        parser.error(f"--warmup-epochs {args.warmup_epochs} must be smaller than --epochs {args.epochs}")
    return args


# --------------------------------------------------------------------------------------------------- data


def synth_config(args: argparse.Namespace) -> SynthConfig:
    """Return the synthetic-birds configuration named by the arguments."""
    return SynthConfig(classes=args.classes, per_class=args.per_class, size=args.size, seed=args.data_seed)


def ensure_dataset(root: Path, config: SynthConfig) -> Path:
    """Write synthetic-birds for ``config`` into ``root``, or reuse the one already there.

    Raises:
        SystemExit: If ``root`` holds a synthetic-birds dataset of another configuration or generator version,
            or is a file or a non-empty directory without a dataset.
    """
    meta = root / "synthetic_birds.json"
    if not meta.exists():
        try:
            return write_synthetic_birds(root, config)
        except DatasetError as error:
            sys.exit(f"error: {error}")
    found = json.loads(meta.read_text())
    wanted = {"generator_version": GENERATOR_VERSION, "config": vars(config)}
    if {key: found.get(key) for key in wanted} != wanted:
        sys.exit(f"error: {root} holds a different synthetic-birds dataset; choose another --data directory")
    return root


def load_split(root: Path, split: str) -> tuple[torch.Tensor, torch.Tensor, tuple[str, ...]]:
    """Decode one split into memory.

    Returns:
        ``(N, 3, S, S)`` uint8 images, ``(N,)`` int64 labels and the class names.
    """
    dataset = CUBDataset(root, split=split)
    images = np.stack([dataset[i].image for i in range(len(dataset))])
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(dataset.labels), dataset.classes


# --------------------------------------------------------------------------------------------------- model


@contextlib.contextmanager
def deterministic(seed: int) -> Iterator[None]:
    """Seed torch, make every op deterministic and use :data:`THREADS` threads; restore the previous state on exit."""
    threads = torch.get_num_threads()
    strict, warn_only = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        torch.use_deterministic_algorithms(True)
        torch.set_num_threads(THREADS)
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(strict, warn_only=warn_only)
            torch.set_num_threads(threads)


def build_model(args: argparse.Namespace) -> VisionTransformer:
    """Return a randomly initialised CLS-token ViT for ``args.classes`` classes at ``args.size`` pixels."""
    return timm.create_model(
        ARCHITECTURE,
        pretrained=False,
        img_size=args.size,
        patch_size=args.patch_size,
        embed_dim=args.embed_dim,
        depth=args.depth,
        num_heads=args.heads,
        mlp_ratio=args.mlp_ratio,
        num_classes=args.classes,
        class_token=True,
        global_pool="token",
    )


def normalize(images: torch.Tensor) -> torch.Tensor:
    """Map ``(B, 3, H, W)`` uint8 or [0, 1] float images to ImageNet-normalised float32."""
    floats = images.float() / 255 if images.dtype == torch.uint8 else images
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (floats - mean) / std


def augment(images: torch.Tensor, rng: np.random.Generator, min_scale: float) -> torch.Tensor:
    """Random resized crop (area in ``[min_scale, 1]``, aspect 3/4 to 4/3) and horizontal flip; colours unchanged.

    Args:
        images: ``(B, 3, S, S)`` uint8.
        rng: Source of the crop and flip parameters.
        min_scale: Smallest crop area as a fraction of the image.

    Returns:
        ``(B, 3, S, S)`` float32 in [0, 1], resampled bilinearly.
    """
    count = images.shape[0]
    area = rng.uniform(min_scale, 1.0, count)
    ratio = np.exp(rng.uniform(*LOG_RATIO, count))
    width, height = np.minimum(np.sqrt(area * ratio), 1.0), np.minimum(np.sqrt(area / ratio), 1.0)
    center_x, center_y = rng.uniform(-1.0, 1.0, (2, count)) * np.stack([1.0 - width, 1.0 - height])
    flip = np.where(rng.random(count) < 0.5, -1.0, 1.0)
    theta = np.zeros((count, 2, 3))
    theta[:, 0, 0], theta[:, 0, 2] = width * flip, center_x
    theta[:, 1, 1], theta[:, 1, 2] = height, center_y
    grid = F.affine_grid(torch.from_numpy(theta).float(), list(images.shape), align_corners=False)
    return F.grid_sample(images.float() / 255, grid, mode="bilinear", padding_mode="border", align_corners=False)


# ------------------------------------------------------------------------------------------------ training


def cosine_schedule(optimizer: torch.optim.Optimizer, warmup: int, total: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Return a per-step schedule: linear warmup over ``warmup`` steps, then cosine decay to 0 at ``total``."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def train(model: VisionTransformer, images: torch.Tensor, labels: torch.Tensor, args: argparse.Namespace) -> None:
    """Train ``model`` in place on ``(N, 3, S, S)`` uint8 images and ``(N,)`` labels, printing one line per epoch."""
    loader = DataLoader(
        TensorDataset(images, labels),
        batch_size=args.batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(args.seed),
    )
    rng = np.random.default_rng(args.seed)
    optimizer = create_optimizer_v2(model, "adamw", lr=args.lr, weight_decay=args.weight_decay)
    steps = len(loader)
    scheduler = cosine_schedule(optimizer, round(args.warmup_epochs * steps), args.epochs * steps)
    start = time.perf_counter()
    model.train()
    for epoch in range(1, args.epochs + 1):
        loss_sum, correct = 0.0, 0
        for batch, target in loader:
            logits = model(normalize(augment(batch, rng, args.min_scale)))
            loss = F.cross_entropy(logits, target, label_smoothing=args.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if args.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
            optimizer.step()
            scheduler.step()
            loss_sum += loss.item() * len(target)
            correct += int((logits.argmax(1) == target).sum())
        print(
            f"epoch {epoch:3d}/{args.epochs}  loss {loss_sum / len(labels):.4f}  "
            f"augmented-train acc {correct / len(labels):.3f}  lr {scheduler.get_last_lr()[0]:.2e}  "
            f"{time.perf_counter() - start:6.0f} s",
            flush=True,
        )


@torch.no_grad()
def predict(model: VisionTransformer, images: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Return ``(N, C)`` float32 logits of ``model`` in eval mode for ``(N, 3, S, S)`` uint8 images."""
    model.eval()
    return torch.cat([model(normalize(chunk)) for chunk in images.split(batch_size)])


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Return the top-1 accuracy of ``(N, C)`` logits against ``(N,)`` labels."""
    return float((logits.argmax(1) == labels).float().mean())


# ------------------------------------------------------------------------------------------------- output


def save_checkpoint(model: VisionTransformer, out: Path, class_names: Sequence[str]) -> None:
    """Write ``model`` into ``out`` as a timm local-dir checkpoint (``config.json``, ``model.safetensors``)."""
    size = model.patch_embed.img_size
    pretrained_cfg = {
        "tag": "xaikit_synthetic_birds",
        "license": "mit",
        "input_size": (3, *size),
        "mean": IMAGENET_MEAN,
        "std": IMAGENET_STD,
        "crop_pct": 1.0,
        "crop_mode": "center",
        "interpolation": "bicubic",
    }
    model_config = {"pretrained_cfg": pretrained_cfg, "label_names": list(class_names)}
    timm.models.save_for_hf(model, str(out), model_config=model_config, safe_serialization=True)


def check_reload(out: Path, images: torch.Tensor, expected: torch.Tensor, batch_size: int) -> None:
    """Rebuild the checkpoint in ``out`` through timm's local-dir loader and require bit-identical logits.

    Raises:
        RuntimeError: If the reloaded model's logits differ from ``expected``.
    """
    reloaded = timm.create_model(f"local-dir:{out}", pretrained=True)
    if not torch.equal(predict(reloaded, images, batch_size), expected):
        raise RuntimeError(f"the checkpoint in {out} does not reproduce the trained model's logits")


def _cpu_name() -> str:
    """Return the CPU model name from ``/proc/cpuinfo``, or the machine type where that is unavailable."""
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    return names[0] if names else platform.machine()


def write_metrics(path: Path, args: argparse.Namespace, argv: Sequence[str], results: dict[str, Any]) -> None:
    """Write ``metrics.json``: ``results`` plus the recipe, the data configuration, the command and the environment."""
    recipe = {k: v for k, v in vars(args).items() if k not in ("out", "data")}
    metrics = {
        **results,
        "seed": args.seed,
        "recipe": recipe,
        "data": {"generator": "synthetic-birds", "generator_version": GENERATOR_VERSION, **vars(synth_config(args))},
        "architecture": ARCHITECTURE,
        "command": shlex.join(["python", "-m", "xaikit_backbones.demo_vit.train", *argv]),
        "environment": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "timm": timm.__version__,
            "numpy": np.__version__,
            "threads": THREADS,
            "cpu": _cpu_name(),
            "cpu_count": os.cpu_count(),
        },
    }
    path.write_text(json.dumps(metrics, indent=2) + "\n")


def run(args: argparse.Namespace, data_root: Path) -> dict[str, Any]:
    """Generate or reuse the data in ``data_root``, train, evaluate and write the checkpoint into ``args.out``.

    Returns:
        Accuracies, split sizes, parameter count and ``seconds`` spent on data, training and evaluation.
    """
    clock = time.perf_counter()
    root = ensure_dataset(data_root, synth_config(args))
    train_images, train_labels, class_names = load_split(root, "train")
    test_images, test_labels, _ = load_split(root, "test")
    data_seconds = time.perf_counter() - clock
    print(f"data: {len(train_labels)} train / {len(test_labels)} test images in {data_seconds:.0f} s", flush=True)
    with deterministic(args.seed):
        model = build_model(args)
        parameters = sum(p.numel() for p in model.parameters())
        print(f"model: {parameters:,} parameters, {model.patch_embed.grid_size} patch grid", flush=True)
        clock = time.perf_counter()
        train(model, train_images, train_labels, args)
        train_seconds = time.perf_counter() - clock
        clock = time.perf_counter()
        test_logits = predict(model, test_images, args.batch_size)
        train_accuracy = accuracy(predict(model, train_images, args.batch_size), train_labels)
        eval_seconds = time.perf_counter() - clock
        args.out.mkdir(parents=True, exist_ok=True)
        save_checkpoint(model, args.out, class_names)
        check_reload(args.out, test_images[:RELOAD_CHECK_IMAGES], test_logits[:RELOAD_CHECK_IMAGES], args.batch_size)
    return {
        "train_accuracy": train_accuracy,
        "test_accuracy": accuracy(test_logits, test_labels),
        "train_images": len(train_labels),
        "test_images": len(test_labels),
        "parameters": parameters,
        "seconds": {"data": round(data_seconds, 1), "train": round(train_seconds, 1), "eval": round(eval_seconds, 1)},
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Run the script with ``argv`` (default: ``sys.argv[1:]``) and return the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    start = time.perf_counter()
    if args.data is None:
        with tempfile.TemporaryDirectory(prefix="synthetic-birds-") as scratch:
            results = run(args, Path(scratch) / "data")
    else:
        results = run(args, args.data)
    results["seconds"]["total"] = round(time.perf_counter() - start, 1)
    write_metrics(args.out / "metrics.json", args, argv, results)
    print(
        f"train acc {results['train_accuracy']:.4f}  test acc {results['test_accuracy']:.4f}  "
        f"total {results['seconds']['total']:.0f} s  -> {args.out}",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
