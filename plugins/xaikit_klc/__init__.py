"""Built-in plugin: the KLC explainer (Keypoint Labeling Classifiers) and a CLS nearest-prototype baseline.

Registered through the ``xaikit`` entry-point group in xaikit's own ``pyproject.toml``; factories are
given by path, so listing them imports nothing heavy.
"""

from __future__ import annotations

from xaikit import hookimpl


@hookimpl
def register_explainers(register):
    register(
        "klc",
        "xaikit_klc.explainer:KLC",
        summary="Keypoint Labeling Classifier: retrieve prototypes by CLS, match labelled parts (MNN), vote per class.",
    )
    register(
        "nearest-prototype",
        "xaikit_klc.baseline:NearestPrototype",
        summary="Baseline: the class of the prototype with the most similar CLS feature (no parts).",
    )
