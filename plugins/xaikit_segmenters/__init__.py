"""Built-in plugin: part segmenters (``annotations``, ``dino-parts``, ``clipseg``, ``vlpart``, ``san``, ``ov-parts``).

Registered through the ``xaikit`` entry-point group in xaikit's own ``pyproject.toml``; factories are
given by path, so listing them imports nothing heavy. ``vlpart``, ``san`` and ``ov-parts`` adapt research
code the user installs (detectron2 and a source checkout); without detectron2 they are listed as
unavailable, with the install hint below.
"""

from __future__ import annotations

from xaikit import hookimpl

_DETECTRON2 = "build detectron2 from source (pip install --no-build-isolation 'git+https://github.com/facebookresearch/detectron2.git')"


@hookimpl
def register_segmenters(register):
    register(
        "annotations",
        "xaikit_segmenters.annotations:AnnotationSegmenter",
        summary="Ground-truth parts: dataset part masks, else regions around the visible keypoints inside the box.",
    )
    register(
        "dino-parts",
        "xaikit_segmenters.dino_parts:DinoPartsSegmenter",
        summary="Training-free part co-segmentation of a set of images by clustering ViT patch features (Amir et al.).",
    )
    register(
        "clipseg",
        "xaikit_segmenters.clipseg:CLIPSegSegmenter",
        summary="Text-prompted parts with CLIPSeg (transformers): one sigmoid map per prompt, a background threshold, argmax.",
        requires=("transformers",),
        install="pip install 'xaikit[transformers]'",
    )
    register(
        "vlpart",
        "xaikit_segmenters.vlpart:VLPartSegmenter",
        summary="VLPart (Mask R-CNN for parts): Pascal-Part bird classes or a custom vocabulary; overlaps go to the highest score.",
        requires=("detectron2",),
        install=_DETECTRON2 + ", then clone https://github.com/facebookresearch/VLPart, pip install clip-anytorch 'setuptools<80' lvis "
        "nltk opencv-python-headless scikit-learn ftfy regex (not its requirements.txt, which pins timm 0.5) "
        "and pass source=VLPart (step by step in docs/segmenters.md#vlpart)",
    )
    register(
        "san",
        "xaikit_segmenters.san:SANSegmenter",
        summary="SAN (side adapter network on CLIP): open-vocabulary semantic parts, ids remapped through its returned vocabulary.",
        requires=("detectron2",),
        install=_DETECTRON2 + ", then clone https://github.com/MendelXu/SAN, pip install clip-anytorch 'setuptools<80' wandb "
        "opencv-python-headless ftfy regex (not its requirements.txt, which pins open_clip 2.16) "
        "and pass source=SAN (see docs/segmenters.md#san)",
    )
    register(
        "ov-parts",
        "xaikit_segmenters.ov_parts:OVPartsSegmenter",
        summary="OV-PARTS' fine-tuned CLIPSeg/CATSeg baselines with object-conditioned prompts (bird's beak); CUDA only, no license.",
        requires=("detectron2",),
        install=_DETECTRON2 + ", then clone https://github.com/OpenRobotLab/OV_PARTS, install its requirements "
        "and pass source=OV_PARTS (see docs/segmenters.md#ov-parts)",
    )
