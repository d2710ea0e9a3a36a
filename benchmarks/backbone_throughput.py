"""Backbone feature extraction: images/s and peak memory per batch size, cold versus warm cache.

Usage::

    python benchmarks/backbone_throughput.py [--backbone demo-vit] [--option KEY=VALUE ...] [--images 96]
        [--batch-sizes 1 8 32] [--device auto] [--out-json benchmarks/results/backbone_throughput.json]

One run measures every batch size on the same synthetic-birds images. Each batch size runs in a
fresh child process, so that its peak memory is its own. The peak is the maximum resident set size
on the CPU, and ``torch.cuda.max_memory_allocated`` on a GPU. Inside that process it times a cold
pass, which fills an empty feature cache, and then a warm pass, which reads the features back.
Ratios from the same run are the figures to compare.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from xaikit.cli.options import parse_options


def measure(backbone_name: str, options: dict, data: Path, batch_size: int, device: str, cache_dir: Path) -> dict[str, float]:
    """Cold and warm extraction of every image under ``data`` with one batch size (runs in a child process)."""
    import torch

    import xaikit
    from xaikit.features.cache import FeatureCache
    from xaikit.features.extract import extract_features

    images = [sample.image for sample in xaikit.create("dataset", "cub", root=data)]
    backbone = xaikit.create("backbone", backbone_name, device=device, **options)
    cache = FeatureCache(cache_dir)
    extract_features(backbone, images[:batch_size], batch_size=batch_size, cache=False)  # warm-up: kernels, allocator
    if backbone.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    timings = {}
    for phase in ("cold", "warm"):
        start = time.perf_counter()
        extract_features(backbone, images, batch_size=batch_size, cache=cache)
        if backbone.device.type == "cuda":
            torch.cuda.synchronize()
        timings[f"{phase}_images_per_s"] = round(len(images) / (time.perf_counter() - start), 2)
    peak = (
        torch.cuda.max_memory_allocated() / 2**20
        if backbone.device.type == "cuda"
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    )
    return {**timings, "warm_over_cold": round(timings["warm_images_per_s"] / timings["cold_images_per_s"], 2), "peak_memory_mib": round(peak, 1)}


def run_child(args: argparse.Namespace, data: Path, batch_size: int, scratch: Path) -> dict[str, float]:
    """Run :func:`measure` for one batch size in a fresh interpreter and return its JSON result."""
    command = [
        sys.executable, __file__, "--child", "--backbone", args.backbone, "--device", args.device,
        *[f"--option={pair}" for pair in args.option], "--data", str(data), "--batch-sizes", str(batch_size), "--cache-dir", str(scratch / f"cache-{batch_size}"),
    ]
    result = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="demo-vit", help="registered backbone name (default demo-vit)")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="backbone option, repeatable")
    parser.add_argument("--images", type=int, default=96, help="synthetic-birds images to extract (default 96)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32], help="batch sizes (default 1 8 32)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--out-json", type=Path, default=Path("benchmarks/results/backbone_throughput.json"))
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--cache-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(measure(args.backbone, parse_options(args.option), args.data, args.batch_sizes[0], args.device, args.cache_dir)))
        return

    from xaikit.data.synthetic import SynthConfig, write_synthetic_birds

    import torch

    with tempfile.TemporaryDirectory() as scratch_dir:
        scratch = Path(scratch_dir)
        classes = 4
        data = write_synthetic_birds(scratch / "birds", SynthConfig(classes=classes, per_class=max(2, -(-args.images // classes)), size=224, seed=0))
        results = {str(size): run_child(args, data, size, scratch) for size in args.batch_sizes}
    report = {
        "benchmark": "backbone_throughput",
        "backbone": args.backbone,
        "options": parse_options(args.option),
        "device": args.device,
        "images": classes * max(2, -(-args.images // classes)),
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads(), "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None},
        "per_batch_size": results,
    }
    args.out_json.parent.mkdir(parents=True, exist_ok=True)
    args.out_json.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    for size, figures in results.items():
        print(f"batch {size:>3}: cold {figures['cold_images_per_s']:8.1f} images/s, warm {figures['warm_images_per_s']:8.1f} images/s "
              f"(x{figures['warm_over_cold']}), peak {figures['peak_memory_mib']:.0f} MiB")
    print(f"wrote {args.out_json}")


if __name__ == "__main__":
    main()
