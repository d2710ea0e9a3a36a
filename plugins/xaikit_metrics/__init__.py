"""Built-in plugin: accuracy and the consistency and stability scores of Huang et al. (ICCV 2023).

Registered through the ``xaikit`` entry-point group in xaikit's own ``pyproject.toml``; factories are
given by path, so listing them imports nothing heavy.
"""

from __future__ import annotations

from xaikit import hookimpl


@hookimpl
def register_metrics(register):
    register(
        "accuracy",
        "xaikit_metrics.accuracy:Accuracy",
        summary="Top-1 and top-5 classification accuracy in percent.",
    )
    register(
        "consistency",
        "xaikit_metrics.huang:Consistency",
        summary="Huang et al. (ICCV 2023): share of concepts whose peak region hits the same part in most images.",
    )
    register(
        "stability",
        "xaikit_metrics.huang:Stability",
        summary="Huang et al. (ICCV 2023): share of images whose part hits survive small input noise.",
    )
