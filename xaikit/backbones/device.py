"""Turn a device request (``auto``, ``cpu``, ``cuda``, ``cuda:1``) into a usable ``torch.device``."""

from __future__ import annotations

import torch

from xaikit.errors import DeviceError


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` picks CUDA when available, else CPU; an unavailable CUDA request is refused.

    Raises:
        DeviceError: for ``cuda`` without a usable GPU, or a device string torch does not know.
    """
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise DeviceError(f"unknown device '{device}'; use auto, cpu, cuda or cuda:<index>") from None
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"device '{device}' was requested but torch sees no CUDA GPU; use --device cpu")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise DeviceError(f"device '{device}' does not exist; this machine has {torch.cuda.device_count()} GPU(s)")
    return resolved
