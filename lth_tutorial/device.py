"""Choosing the device the tutorial runs on."""

from __future__ import annotations

import torch

__all__ = ["pick", "configure_threads"]


def pick(name: str = "auto") -> torch.device:
    """``"auto"`` = the first CUDA GPU when present, else Apple's MPS when present, else the CPU.

    Any other string is passed to ``torch.device`` after checking that the device exists (for ``cuda:N``: that
    GPU ``N`` exists), with a clear error.
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
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        count = torch.cuda.device_count()
        raise ValueError(f"device {name!r} requested but this machine has {count} CUDA GPU(s) "
                         f"(cuda:0{f'..cuda:{count - 1}' if count > 1 else ''}); use --device cuda or auto")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {name!r} requested but MPS is not available; use --device cpu or auto")
    return device


def configure_threads(threads: int | None, quick: bool, device: torch.device) -> int:
    """Set PyTorch's intra-op thread count for this process and return the count in use.

    ``threads`` given: use it. Otherwise, in quick mode on the CPU use 1 thread: the quick-mode models are so small
    that splitting each matrix product over threads costs more than it saves (measured: ``lth imp`` 39.5 s with one
    thread vs 50.3 s with two on a 2-core CPU), and a second busy process cannot make the threads fight over cores.
    Full mode, or a GPU, keeps PyTorch's default. Called by the entry points (``lth`` and the notebooks' set-up
    cell) only; library functions never change it.
    """
    if threads is not None:
        if int(threads) < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        torch.set_num_threads(int(threads))
    elif quick and torch.device(device).type == "cpu":
        torch.set_num_threads(1)
    return torch.get_num_threads()
