"""A tiny randomly initialised CLIPSeg model and an offline processor, saved as ``save_pretrained`` does.

Shared by the clipseg, conformance and ``xaikit segment`` tests (loaded by file path, as pytest's
importlib mode has no package for the tests). The tokenizer is a real ``CLIPTokenizer`` built from
a character vocabulary and an empty merge list written here, so nothing is downloaded.
"""

from __future__ import annotations

import json
import string
from pathlib import Path

import torch
import transformers

IMAGE_SIZE = 32


def save_tiny_clipseg(path: Path, seed: int = 0) -> torch.nn.Module:
    """Write a tiny CLIPSeg (32 px input, 8 px patches, 2 vision blocks) and its processor to ``path``."""
    path.mkdir(parents=True, exist_ok=True)
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for character in string.ascii_lowercase + string.digits + "'.,:":
        vocab[character] = len(vocab)
        vocab[character + "</w>"] = len(vocab)
    (path / "vocab.json").write_text(json.dumps(vocab))
    (path / "merges.txt").write_text("#version: 0.2\n")
    config = transformers.CLIPSegConfig(
        text_config=dict(
            vocab_size=len(vocab), hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
            max_position_embeddings=64, bos_token_id=0, eos_token_id=1, pad_token_id=1,
        ),
        vision_config=dict(
            image_size=IMAGE_SIZE, patch_size=8, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
        ),
        projection_dim=8, extract_layers=[0, 1], reduce_dim=8, decoder_num_attention_heads=2, decoder_intermediate_size=16,
        conditional_layer=0,
    )
    torch.manual_seed(seed)
    model = transformers.CLIPSegForImageSegmentation(config).eval()
    model.save_pretrained(path)
    transformers.CLIPSegProcessor(
        image_processor=transformers.ViTImageProcessor(
            size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}, image_mean=[0.5, 0.5, 0.5], image_std=[0.25, 0.25, 0.25]
        ),
        tokenizer=transformers.CLIPTokenizer(str(path / "vocab.json"), str(path / "merges.txt")),
    ).save_pretrained(path)
    return model
