"""Measure how many ``synthetic-birds`` images per second one CPU core writes, encoding and disk included.

Usage::

    python benchmarks/synthetic_throughput.py [--classes 10] [--per-class 20] [--size 128 224]
        [--out-json benchmarks/results/synthetic_throughput.json]

The process is pinned to its first allowed CPU (where the OS supports it) and BLAS/OpenMP pools are limited
to one thread, then a full dataset is written to a temporary directory once per size and timed.
"""

from __future__ import annotations

import os

for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import pathlib  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import PIL  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from xaikit.data.synthetic import GENERATOR_VERSION, SynthConfig, write_synthetic_birds  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Return the command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=int, default=10, help="species per run (default 10)")
    parser.add_argument("--per-class", type=int, default=20, help="images per species (default 20)")
    parser.add_argument("--size", type=int, nargs="+", default=[128, 224], help="image sizes (default 128 224)")
    parser.add_argument(
        "--out-json",
        type=pathlib.Path,
        default=pathlib.Path("benchmarks/results/synthetic_throughput.json"),
        help="where to write the results",
    )
    return parser.parse_args(argv)


def pin_to_one_core() -> int | None:
    """Pin this process to its first allowed CPU and return it, or None where affinity is unsupported."""
    if not hasattr(os, "sched_setaffinity"):
        return None
    cpu = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    return cpu


def cpu_model() -> str:
    """Return the CPU model name from ``/proc/cpuinfo``, else what :mod:`platform` reports."""
    cpuinfo = pathlib.Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def time_one_size(config: SynthConfig) -> dict[str, float | int]:
    """Write one dataset into a temporary directory and return its image count, seconds and images/s."""
    with tempfile.TemporaryDirectory(prefix="synthetic-birds-bench-") as scratch:
        start = time.perf_counter()
        write_synthetic_birds(pathlib.Path(scratch) / "birds", config)
        seconds = time.perf_counter() - start
    images = config.classes * config.per_class
    return {"images": images, "seconds": round(seconds, 3), "images_per_s": round(images / seconds, 1)}


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark for every requested size and write the JSON report."""
    args = parse_args(argv)
    cpu = pin_to_one_core()
    results = {
        str(size): time_one_size(SynthConfig(classes=args.classes, per_class=args.per_class, size=size))
        for size in args.size
    }
    report = {
        "benchmark": "synthetic_throughput",
        "generator_version": GENERATOR_VERSION,
        "machine": {
            "platform": platform.platform(),
            "cpu_model": cpu_model(),
            "cpu_count": os.cpu_count(),
            "pinned_cpu": cpu,
        },
        "python": platform.python_version(),
        "numpy": np.__version__,
        "pillow": PIL.__version__,
        "classes": args.classes,
        "per_class": args.per_class,
        "sizes": results,
    }
    args.out_json.parent.mkdir(parents=True, exist_ok=True)
    args.out_json.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    for size, result in results.items():
        print(f"size {size}: {result['images_per_s']} images/s ({result['images']} images in {result['seconds']} s)")
    print(f"wrote {args.out_json}")


if __name__ == "__main__":
    main()
