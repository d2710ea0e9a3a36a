"""The benchmark runner behind ``xaikit bench``: components by name, a crash-safe run directory, metrics.

The runner (and torch with it) is imported on first use of :func:`run_bench` or :class:`BenchResult`,
so that the command line can describe ``xaikit bench`` without importing torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from xaikit.bench.config import BenchConfig, split_options
from xaikit.bench.progress import Progress
from xaikit.bench.sampling import REFERENCE_SEED, sample_indices

if TYPE_CHECKING:
    from xaikit.bench.runner import BenchResult, run_bench

__all__ = ["REFERENCE_SEED", "BenchConfig", "BenchResult", "Progress", "run_bench", "sample_indices", "split_options"]


def __getattr__(name: str) -> Any:
    if name in ("BenchResult", "run_bench"):
        from xaikit.bench import runner

        return getattr(runner, name)
    raise AttributeError(f"module 'xaikit.bench' has no attribute {name!r}")
