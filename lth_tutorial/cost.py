"""Training cost accounting: iterations and an estimate of floating-point operations (FLOPs).

The estimate counts only multiply-accumulates of *unpruned* weights in Linear and Conv layers (2 FLOPs each per
use), i.e. the cost an ideal sparse kernel would pay; biases, activations, normalisation and the optimizer are
ignored. A training step costs about 3x a forward pass (forward + backward for activations and for weights).
On dense hardware a masked network costs as much as the dense one: this is the *potential* saving, not a speed-up.
"""

from __future__ import annotations

import torch
from torch import nn

from .masks import PRUNABLE_MODULES, Mask

__all__ = ["weight_uses", "forward_flops", "train_flops"]

TRAIN_STEP_FACTOR = 3  # forward + backward (activation grads) + backward (weight grads)


@torch.no_grad()
def weight_uses(model: nn.Module, input_shape) -> dict[str, int]:
    """How often each prunable weight is used in one forward pass of one example.

    1 for a Linear layer; the number of output positions for a Conv layer (e.g. 32*32 for a same-padded conv on
    32x32 maps). Measured by running one zero example through the model on the CPU.
    """
    uses: dict[str, int] = {}
    hooks = []
    for name, module in model.named_modules():
        if isinstance(module, PRUNABLE_MODULES):
            key = f"{name}.weight" if name else "weight"

            def hook(mod, inp, out, key=key):
                uses[key] = 1 if isinstance(mod, nn.Linear) else int(out[0, 0].numel())

            hooks.append(module.register_forward_hook(hook))
    was_training = model.training
    device = next(model.parameters()).device
    try:
        model.eval()
        model(torch.zeros((1, *input_shape), device=device))
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return uses


def forward_flops(model: nn.Module, input_shape, mask: Mask | None = None,
                  uses: dict[str, int] | None = None) -> int:
    """FLOPs of one forward pass of one example, counting only weights kept by ``mask`` (all when None).

    ``uses`` (from :func:`weight_uses`) may be passed to skip re-measuring it."""
    uses = weight_uses(model, input_shape) if uses is None else uses
    params = dict(model.named_parameters())
    total = 0
    for name, n_uses in uses.items():
        kept = int(mask[name].sum()) if mask is not None and name in mask else params[name].numel()
        total += 2 * kept * n_uses
    return total


def train_flops(model: nn.Module, input_shape, iterations: int, batch_size: int, mask: Mask | None = None,
                uses: dict[str, int] | None = None) -> int:
    """Estimated FLOPs of ``iterations`` training steps at ``batch_size`` (3 x forward per example)."""
    per_example = forward_flops(model, input_shape, mask, uses)
    return TRAIN_STEP_FACTOR * per_example * int(iterations) * int(batch_size)
