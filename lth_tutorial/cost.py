"""Training cost accounting: iterations and an estimate of floating-point operations (FLOPs).

The estimate counts only multiply-accumulates of *unpruned* prunable weights (:func:`lth_tutorial.masks.
prunable_parameters`: Linear, Conv, LSTM and attention projections; 2 FLOPs each per use; an embedding is a lookup
and counts 0), i.e. the cost an ideal sparse kernel would pay; biases, activations, normalisation and the optimizer are
ignored. A training step costs about 3x a forward pass (forward + backward for activations and for weights).
On dense hardware a masked network costs as much as the dense one: this is the *potential* saving, not a speed-up.
"""

from __future__ import annotations

import torch
from torch import nn

from . import masks
from .masks import PRUNABLE_MODULES, Mask

__all__ = ["weight_uses", "forward_flops", "train_flops"]

TRAIN_STEP_FACTOR = 3  # forward + backward (activation grads) + backward (weight grads)


def _uses_of(module: nn.Module, out) -> dict[str, int]:
    """``{parameter name within module: uses per example}`` of one prunable module, from its forward output."""
    if isinstance(module, nn.Linear):  # once per output row: 1, or once per token of a sequence
        return {"weight": int(out[0].numel() // module.out_features)}
    if isinstance(module, (nn.Conv1d, nn.Conv2d)):  # once per output position
        return {"weight": int(out[0, 0].numel())}
    if isinstance(module, nn.Embedding):  # a lookup, no multiply-accumulates
        return {"weight": 0}
    if isinstance(module, nn.LSTM):  # every weight once per time step
        steps = out[0].shape[1] if module.batch_first else out[0].shape[0]
        return {name: int(steps) for name in masks.prunable_names(module)}
    if isinstance(module, nn.MultiheadAttention):  # the input projection once per query position
        steps = out[0].shape[1] if module.batch_first else out[0].shape[0]
        return {name: int(steps) for name in masks.prunable_names(module)}
    raise TypeError(f"no FLOP count for {type(module).__name__}")


def weight_uses(model: nn.Module, input_shape, input_dtype: torch.dtype = torch.float32) -> dict[str, int]:
    """How often each prunable weight is used in one forward pass of one example.

    1 for a Linear layer on a vector (L on a sequence of L); the number of output positions for a Conv layer
    (e.g. 32*32 for a same-padded conv on 32x32 maps); L for recurrent and attention input projections; 0 for an
    embedding. Measured by running one all-zero example of ``input_dtype`` (``torch.long`` for token ids) through
    the model. Autograd stays on, so ``nn.TransformerEncoderLayer`` takes its ordinary path (its inference fast
    path bypasses the submodules' hooks).
    """
    uses: dict[str, int] = {}
    hooks = []
    for name, module in model.named_modules():
        if isinstance(module, PRUNABLE_MODULES):
            prefix = f"{name}." if name else ""

            def hook(mod, inp, out, prefix=prefix):
                uses.update({prefix + n: k for n, k in _uses_of(mod, out).items()})

            hooks.append(module.register_forward_hook(hook))
    was_training = model.training
    device = next(model.parameters()).device
    try:
        model.eval()
        model(torch.zeros((1, *input_shape), device=device, dtype=input_dtype))
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
