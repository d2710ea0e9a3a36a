"""Built-in plugin: standard attribution baselines (Grad-CAM, Integrated Gradients) on a linear CLS probe.

Registered through the ``xaikit`` entry-point group in xaikit's own ``pyproject.toml``; factories are
given by path, so listing them imports neither torch nor captum.
"""

from __future__ import annotations

from xaikit import hookimpl


@hookimpl
def register_explainers(register):
    register(
        "gradcam",
        "xaikit_baselines.attributions:GradCAM",
        summary="Baseline: a linear probe on CLS features explained by Grad-CAM on the last block's patch tokens; one map per class.",
    )
    register(
        "integrated-gradients",
        "xaikit_baselines.attributions:IntegratedGradients",
        summary="Baseline: a linear probe on CLS features explained by captum's Integrated Gradients, pooled per patch; one map per class.",
        requires=("captum",),
        install="pip install 'xaikit[captum]'",
    )
