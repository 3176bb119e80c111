"""Choosing the device the tutorial runs on."""

from __future__ import annotations

import torch

__all__ = ["pick"]


def pick(name: str = "auto") -> torch.device:
    """``"auto"`` = the first CUDA GPU when present, else Apple's MPS when present, else the CPU.

    Any other string is passed to ``torch.device`` after checking that the device exists, with a clear error.
    """
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ValueError(f"unknown device {name!r} ({err}); use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but no CUDA GPU is available; use --device cpu or auto")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {name!r} requested but MPS is not available; use --device cpu or auto")
    return device
