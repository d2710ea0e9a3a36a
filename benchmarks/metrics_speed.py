"""Consistency and stability: the vectorised computation against the plain-loop oracle, in one run.

Usage::

    python benchmarks/metrics_speed.py [--images 5794] [--classes 200] [--concepts 10] [--parts 15]
        [--map-size 7] [--oracle-images 500] [--threads 1] [--repeats 3] [--batch-size 32] [--device auto]
        [--out-json benchmarks/results/metrics_speed.json]

The defaults are the reference's scale: 200 classes x 10 concepts = 2000 units over the 5794 CUB test
images with 15 parts, and 7x7 activation maps (ProtoPNet at 224 px) upsampled to the 224 grid with a
36-pixel half-size. The maps are synthetic smooth blobs plus noise, one place per concept jittered
per image, and the keypoints likewise per part. Both sides take the same maps, grid keypoints and
labels and compute peaks, part hits and the consistency score, and, for stability, the hits of the
clean and of the noisy maps and the stability score. Image decoding and the explainer are left out.

The vectorised side (``xaikit_metrics.huang``) runs ``--batch-size`` images at a time, as the metrics
do, on every image. The oracle (``tests/plugins/metrics/huang_oracle.py``) loops over units, images
and parts; its cost is linear in the number of images, so it is timed on the first
``--oracle-images`` images and scaled to all of them (``--oracle-images`` equal to ``--images`` times
it in full: about 40 s for consistency and 80 s for stability per run on one core). Each side runs
``--repeats`` times and its fastest run counts. The two sides must give the same scores on the
oracle's images.

Both sides run on ``--threads`` torch threads (default 1: on a 2-core machine the small matrix
products gain nothing from a second thread, and the oracle's one-map calls lose). Times are CPU
seconds of the process, which on one thread equal the wall time of a quiet machine but do not grow
while other processes hold the CPU; wall seconds are recorded beside them.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from xaikit.backbones.device import resolve_device
from xaikit_metrics.huang import consistency_from_hits, part_hits, peak_boxes, stability_from_hits

ORACLE_PATH = Path(__file__).resolve().parents[1] / "tests" / "plugins" / "metrics" / "huang_oracle.py"
GRID, HALF_SIZE, MU = 224, 36, 0.8


def load_oracle():
    """Import the oracle module from its path under tests/ (it is not an installed package)."""
    spec = importlib.util.spec_from_file_location("huang_oracle", ORACLE_PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def synthetic(images: int, classes: int, concepts: int, parts: int, size: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Maps ``(N, K, size, size)`` clean and noisy, labels ``(N,)``, grid keypoints ``(N, P, 2)``, visible ``(N, P)``."""
    generator = torch.Generator().manual_seed(seed)
    cells = torch.arange(size, dtype=torch.float32)
    centres = torch.rand(concepts, 2, generator=generator) * (size - 1)
    centres = centres + 0.4 * torch.randn(images, concepts, 2, generator=generator)
    dy = cells.view(size, 1) - centres[..., 0, None, None]
    dx = cells.view(1, size) - centres[..., 1, None, None]
    blobs = torch.exp(-(dy**2 + dx**2) / 3)
    maps = blobs + 0.1 * torch.rand(images, concepts, size, size, generator=generator)
    noisy = maps + 0.03 * torch.randn(maps.shape, generator=generator)
    where = torch.rand(parts, 2, generator=generator) * GRID + 20 * torch.randn(images, parts, 2, generator=generator)
    return {
        "maps": maps,
        "noisy": noisy,
        "labels": torch.arange(images) % classes,
        "keypoints": where.long(),
        "visible": torch.rand(images, parts, generator=generator) < 0.8,
    }


def units(classes: torch.Tensor, concepts: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Class-agnostic units: every concept inside every class, ``(U,)`` class and ``(U,)`` concept."""
    return classes.repeat_interleave(concepts), torch.arange(concepts).repeat(len(classes))


def vectorised_hits(maps: torch.Tensor, data: dict[str, torch.Tensor], batch_size: int, device: torch.device) -> torch.Tensor:
    """``(N, K, P)`` part hits, ``batch_size`` images at a time on ``device``."""
    hits = []
    for start in range(0, len(maps), batch_size):
        stop = start + batch_size
        boxes = peak_boxes(maps[start:stop].to(device), GRID, HALF_SIZE)
        hits.append(part_hits(boxes, data["keypoints"][start:stop].to(device), data["visible"][start:stop].to(device)).cpu())
    return torch.cat(hits)


def timed(function: Callable[[], float], device: torch.device) -> tuple[float, float, float]:
    """``(result, CPU seconds, wall seconds)`` of one call."""
    cpu, wall = time.process_time(), time.perf_counter()
    result = function()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return result, time.process_time() - cpu, time.perf_counter() - wall


def run_vectorised(data: dict[str, torch.Tensor], concepts: int, batch_size: int, device: torch.device) -> dict[str, float]:
    """Seconds and scores of the vectorised consistency and stability."""
    unit_class, unit_concept = units(data["labels"].unique(), concepts)

    def consistency() -> float:
        clean = vectorised_hits(data["maps"], data, batch_size, device)
        return consistency_from_hits(clean, data["visible"], data["labels"], unit_class, unit_concept, MU).score

    def stability() -> float:
        clean = vectorised_hits(data["maps"], data, batch_size, device)
        noisy = vectorised_hits(data["noisy"], data, batch_size, device)
        return stability_from_hits(clean, noisy, data["labels"], unit_class, unit_concept).score

    return measure({"consistency": consistency, "stability": stability}, device)


def run_oracle(oracle, data: dict[str, torch.Tensor], concepts: int) -> dict[str, float]:
    """Seconds and scores of the oracle's consistency and stability."""
    unit_class, unit_concept = units(data["labels"].unique(), concepts)
    unit_list = list(zip(unit_class.tolist(), unit_concept.tolist(), strict=True))
    parts = data["keypoints"].shape[1]
    part_labels = [
        [[p, int(x), int(y)] for p, ((x, y), seen) in enumerate(zip(points.tolist(), shown.tolist(), strict=True)) if seen]
        for points, shown in zip(data["keypoints"], data["visible"], strict=True)
    ]
    maps, noisy, labels = data["maps"].numpy(), data["noisy"].numpy(), data["labels"].numpy()
    return measure(
        {
            "consistency": lambda: oracle.oracle_consistency(maps, part_labels, labels, unit_list, parts, GRID, HALF_SIZE, MU)[0],
            "stability": lambda: oracle.oracle_stability(maps, noisy, part_labels, labels, unit_list, parts, GRID, HALF_SIZE)[0],
        },
        torch.device("cpu"),
    )


def measure(functions: dict[str, Callable[[], float]], device: torch.device) -> dict[str, float]:
    """For each named score function: the score, ``<name>_cpu_s`` and ``<name>_wall_s``."""
    figures: dict[str, float] = {}
    for name, function in functions.items():
        figures[name], figures[f"{name}_cpu_s"], figures[f"{name}_wall_s"] = timed(function, device)
    return figures


def fastest(runs: list[dict[str, float]]) -> dict[str, float]:
    """Per figure, the smallest time over ``runs`` (scores are the same in every run)."""
    return {key: min(run[key] for run in runs) for key in runs[0]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5794, help="test images (default 5794, CUB's test split)")
    parser.add_argument("--classes", type=int, default=200, help="classes (default 200)")
    parser.add_argument("--concepts", type=int, default=10, help="concepts scored per class (default 10)")
    parser.add_argument("--parts", type=int, default=15, help="keypoint parts (default 15)")
    parser.add_argument("--map-size", type=int, default=7, help="side of the activation maps (default 7; IVPT's are 37)")
    parser.add_argument("--oracle-images", type=int, default=500, help="images the oracle is timed on (default 500)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for both sides (default 1)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each side; the fastest counts (default 3)")
    parser.add_argument("--batch-size", type=int, default=32, help="images per vectorised batch (default 32, the metrics' default)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N, for the vectorised side")
    parser.add_argument("--out-json", type=Path, default=Path("benchmarks/results/metrics_speed.json"))
    args = parser.parse_args(argv)
    command = " ".join(["python", "benchmarks/metrics_speed.py", *(sys.argv[1:] if argv is None else argv)])

    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    oracle_images = min(args.oracle_images, args.images)
    data = synthetic(args.images, args.classes, args.concepts, args.parts, args.map_size)
    subset = {key: value[:oracle_images] for key, value in data.items()}
    vectorised = fastest([run_vectorised(data, args.concepts, args.batch_size, device) for _ in range(args.repeats)])
    vectorised_subset = run_vectorised(subset, args.concepts, args.batch_size, device)
    oracle_module = load_oracle()
    oracle = fastest([run_oracle(oracle_module, subset, args.concepts) for _ in range(args.repeats)])
    agree = all(np.isclose(vectorised_subset[key], oracle[key]) for key in ("consistency", "stability"))
    scale = args.images / oracle_images
    metrics = ("consistency", "stability")
    speedup = {key: round(oracle[f"{key}_cpu_s"] * scale / vectorised[f"{key}_cpu_s"], 1) for key in metrics}
    report = {
        "benchmark": "metrics_speed",
        "command": command,
        "machine": {
            "platform": platform.platform(), "processor": platform.processor(), "python": platform.python_version(),
            "torch": torch.__version__, "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        },
        "threads": args.threads,
        "scale": {
            "images": args.images, "classes": args.classes, "concepts": args.concepts, "units": args.classes * args.concepts,
            "parts": args.parts, "map_size": args.map_size, "grid": GRID, "half_size": HALF_SIZE,
        },
        "repeats": args.repeats,
        "vectorised": {
            "device": str(device), "batch_size": args.batch_size,
            **{f"{key}_{clock}_s": round(vectorised[f"{key}_{clock}_s"], 3) for key in metrics for clock in ("cpu", "wall")},
        },
        "oracle": {
            "images_timed": oracle_images, "scaled_linearly_to_all_images": oracle_images < args.images,
            **{f"{key}_{clock}_s_measured": round(oracle[f"{key}_{clock}_s"], 3) for key in metrics for clock in ("cpu", "wall")},
            **{f"{key}_cpu_s": round(oracle[f"{key}_cpu_s"] * scale, 3) for key in metrics},
        },
        "speedup_cpu_time": speedup,
        "target_speedup": 20,
        "scores_agree_on_oracle_images": bool(agree),
        "scores": {key: round(vectorised[key], 4) for key in metrics},
    }
    args.out_json.parent.mkdir(parents=True, exist_ok=True)
    args.out_json.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    timed_on = "" if oracle_images == args.images else f" (timed on {oracle_images} of {args.images} images, scaled linearly)"
    for key in metrics:
        print(f"{key:>11}: vectorised {vectorised[f'{key}_cpu_s']:6.2f} s, oracle {oracle[f'{key}_cpu_s'] * scale:7.2f} s{timed_on}: "
              f"x{speedup[key]} (CPU seconds, {args.threads} thread(s))")
    print(f"scores agree on the oracle's images: {agree}; {args.classes * args.concepts} units, {args.images} images, device {device}")
    print(f"wrote {args.out_json}")
    if not agree:
        raise SystemExit("the vectorised scores differ from the oracle's")


if __name__ == "__main__":
    main()
