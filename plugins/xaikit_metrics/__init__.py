"""Built-in plugin: accuracy, Huang et al.'s consistency and stability, PDiscoFormer's part-discovery scores, faithfulness.

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
    register(
        "part-nmi-ari",
        "xaikit_metrics.part_discovery:PartNMIARI",
        summary="PDiscoFormer (ECCV 2024): NMI and ARI between keypoint parts and the concept channel each falls in.",
    )
    register(
        "keypoint-regression",
        "xaikit_metrics.part_discovery:KeypointRegression",
        summary="PDiscoFormer (ECCV 2024): keypoints regressed from soft concept centroids, mean L2 error (lower is better).",
    )
    register(
        "faithfulness",
        "xaikit_metrics.faithfulness:Faithfulness",
        summary="Deletion and insertion of concept-map evidence against random removal, with captum's infidelity and max-sensitivity.",
        requires=("captum",),
        install="pip install 'xaikit[captum]'",
    )
