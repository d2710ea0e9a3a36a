"""The benchmark runner behind ``xaikit bench``: components by name, a crash-safe run directory, metrics."""

from xaikit.bench.config import BenchConfig, split_options
from xaikit.bench.runner import BenchResult, Progress, run_bench
from xaikit.bench.sampling import REFERENCE_SEED, sample_indices

__all__ = ["REFERENCE_SEED", "BenchConfig", "BenchResult", "Progress", "run_bench", "sample_indices", "split_options"]
