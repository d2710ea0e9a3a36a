"""Built-in plugin: the IVPT explainer (Interpretable Visual Prompt Tuning).

Wang, Y. et al., "Exploring Interpretability for Visual Prompt Tuning with Hierarchical Concepts"
(IVPT), 2025. Registered through the ``xaikit`` entry-point group in xaikit's own ``pyproject.toml``;
the factory is given by path, so listing it imports nothing heavy.
"""

from __future__ import annotations

from xaikit import hookimpl


@hookimpl
def register_explainers(register):
    register(
        "ivpt",
        "xaikit_ivpt.explainer:IVPT",
        summary="Interpretable Visual Prompt Tuning: cross-layer concept prototypes pooled into prompts, trained on a frozen ViT.",
    )
