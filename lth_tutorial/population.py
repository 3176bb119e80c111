"""N networks of one architecture as one computation: stacked weights, batched matmuls, grouped convolutions.

:func:`stack` turns N models of the same architecture into one *population* module. Every ``nn.Linear``,
``nn.Conv1d``/``nn.Conv2d`` and ``nn.BatchNorm1d``/``nn.BatchNorm2d`` is replaced by a stacked twin whose parameters
and buffers carry a leading member axis (``weight``: ``(N, out, in)`` instead of ``(out, in)``); parameter names stay
those of a single member. Everything else -- the model's own ``forward``, activations, pooling, flattening, residual
additions -- is reused unchanged, because activations are kept *member-major*: a population's batch is ``(N * B,
...)``, rows ``i * B ... (i + 1) * B - 1`` belonging to member ``i``. Per-sample operations therefore act on each
member's rows as they would on its own batch, and only the layers with parameters need to know about members:

* Linear: ``(N·B, in) -> (N, B, in)`` and one ``torch.baddbmm`` with the stacked ``(N, in, out)`` weights;
* Conv: members moved into the channel axis, ``(B, N·C, ...)``, and one convolution with ``groups = N · groups``;
* BatchNorm: the same channel trick, so each member normalises with the statistics of its own rows and keeps its own
  running statistics.

The population's output for a batch equals, member by member, what each model would compute on its own rows (within
float rounding: the summation order of a batched matmul differs). The requirement on a model is that its ``forward``
treats samples independently except through batch-norm -- true of every architecture in
:mod:`lth_tutorial.models`; :func:`unsupported` names the modules that cannot be stacked (a model with any of them
trains alone).

Measured on a 2-core CPU, eight stacked LeNet-300-100s run at about twice the samples per second of one
(``benchmarks/bench_population.py``): at these sizes a single network leaves most of the matmul peak unused.
"""

from __future__ import annotations

import copy
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["stack", "unsupported", "check_same_architecture", "member_state", "load_member", "members_of", "StackedLinear", "StackedConv",
           "StackedBatchNorm"]

_CONVS = (nn.Conv1d, nn.Conv2d)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d)


class StackedLinear(nn.Module):
    """``N`` linear layers: ``weight (N, out, in)``, ``bias (N, out)``; input ``(N·B, ..., in)`` member-major."""

    def __init__(self, layers: Sequence[nn.Linear]):
        super().__init__()
        self.members = len(layers)
        self.weight = nn.Parameter(torch.stack([m.weight.detach() for m in layers]))
        self.bias = (nn.Parameter(torch.stack([m.bias.detach() for m in layers]))
                     if layers[0].bias is not None else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # out^T = W x^T, so the weight gradient comes out as (N, out, in) like the weight itself; the other order
        # (x W^T) returns it as (N, in, out) and transposing that weight-sized copy cost a third of a step on a CPU
        rows_t = x.reshape(self.members, -1, x.shape[-1]).transpose(1, 2)     # (N, in, B·...)
        out_t = (torch.bmm(self.weight, rows_t) if self.bias is None
                 else torch.baddbmm(self.bias.unsqueeze(2), self.weight, rows_t))  # (N, out, B·...)
        return out_t.transpose(1, 2).reshape(*x.shape[:-1], out_t.shape[1])


def _members_to_channels(x: torch.Tensor, n: int) -> torch.Tensor:
    """``(N·B, C, *S) -> (B, N·C, *S)``."""
    b = x.shape[0] // n
    return x.reshape(n, b, *x.shape[1:]).transpose(0, 1).reshape(b, n * x.shape[1], *x.shape[2:])


def _channels_to_members(x: torch.Tensor, n: int) -> torch.Tensor:
    """``(B, N·C, *S) -> (N·B, C, *S)``."""
    b, c = x.shape[0], x.shape[1] // n
    return x.reshape(b, n, c, *x.shape[2:]).transpose(0, 1).reshape(n * b, c, *x.shape[2:])


class StackedConv(nn.Module):
    """``N`` convolutions (1-D or 2-D) as one grouped convolution: ``weight (N, out, in / groups, *kernel)``."""

    def __init__(self, layers: Sequence[nn.Conv1d | nn.Conv2d]):
        super().__init__()
        first = layers[0]
        self.members = len(layers)
        self.conv = F.conv1d if isinstance(first, nn.Conv1d) else F.conv2d
        self.stride, self.padding, self.dilation, self.groups = first.stride, first.padding, first.dilation, first.groups
        self.weight = nn.Parameter(torch.stack([m.weight.detach() for m in layers]))
        self.bias = (nn.Parameter(torch.stack([m.bias.detach() for m in layers]))
                     if first.bias is not None else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = self.members
        w = self.weight.reshape(-1, *self.weight.shape[2:])         # (N·out, in / groups, *kernel)
        b = None if self.bias is None else self.bias.reshape(-1)
        out = self.conv(_members_to_channels(x, n), w, b, self.stride, self.padding, self.dilation, n * self.groups)
        return _channels_to_members(out, n)


class StackedBatchNorm(nn.Module):
    """``N`` batch-norm layers: each member normalises over its own rows and keeps its own running statistics
    (``running_mean``/``running_var``: ``(N, C)``; ``num_batches_tracked``: ``(N,)``)."""

    def __init__(self, layers: Sequence[nn.BatchNorm1d | nn.BatchNorm2d]):
        super().__init__()
        first = layers[0]
        self.members = len(layers)
        self.eps, self.momentum = first.eps, first.momentum
        self.weight = nn.Parameter(torch.stack([m.weight.detach() for m in layers])) if first.affine else None
        self.bias = nn.Parameter(torch.stack([m.bias.detach() for m in layers])) if first.affine else None
        self.register_buffer("running_mean", torch.stack([m.running_mean for m in layers]).clone())
        self.register_buffer("running_var", torch.stack([m.running_var for m in layers]).clone())
        self.register_buffer("num_batches_tracked", torch.stack([m.num_batches_tracked for m in layers]).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = self.members
        if self.training:
            self.num_batches_tracked.add_(1)
        flat = lambda t: None if t is None else t.reshape(-1)  # noqa: E731 -- views: running stats update in place
        out = F.batch_norm(_members_to_channels(x, n), flat(self.running_mean), flat(self.running_var),
                           flat(self.weight), flat(self.bias), self.training, self.momentum, self.eps)
        return _channels_to_members(out, n)


def unsupported(model: nn.Module) -> list[str]:
    """Names (and types) of the modules that keep ``model`` from being stacked; empty when it can be.

    Stackable: modules without parameters or buffers of their own (containers, activations, pooling, ...),
    ``nn.Linear``, ``nn.Conv1d``/``nn.Conv2d`` with zero padding, and ``nn.BatchNorm1d``/``nn.BatchNorm2d`` that
    track running statistics with a fixed momentum.
    """
    problems = []
    for name, module in model.named_modules():
        own = list(module.parameters(recurse=False)) + list(module.buffers(recurse=False))
        if isinstance(module, nn.Linear) and type(module) is nn.Linear:
            continue
        if type(module) in _CONVS and module.padding_mode == "zeros" and not isinstance(module.padding, str):
            continue
        if type(module) in _NORMS and module.track_running_stats and module.momentum is not None:
            continue
        if own:
            problems.append(f"{name or '(model)'} ({type(module).__name__})")
    return problems


def _signature(model: nn.Module) -> list:
    """What must agree between members: module types and every parameter's and buffer's name and shape."""
    return ([(n, type(m).__name__) for n, m in model.named_modules()]
            + [(n, tuple(t.shape), t.dtype) for n, t in model.state_dict().items()])


def check_same_architecture(models: Sequence[nn.Module]) -> None:
    """``ValueError`` unless there is at least one model and all have the same module types and the same
    parameter and buffer names, shapes and dtypes (the message names member ``i`` and the first difference)."""
    if not models:
        raise ValueError("a population needs at least one member (got N = 0)")
    reference = _signature(models[0])
    for i, m in enumerate(models[1:], start=1):
        other = _signature(m)
        if other != reference:
            diff = next((a, b) for a, b in zip(reference + [None], other + [None]) if a != b)
            raise ValueError(f"member {i} has a different architecture from member 0 (first difference: "
                             f"{diff[1]} vs {diff[0]}); a population holds models of one architecture")


def stack(models: Sequence[nn.Module]) -> nn.Module:
    """One population module computing all ``models`` at once (see the module docstring).

    The models are left untouched; the population holds copies of their current weights and buffers. It is a
    deep copy of ``models[0]`` with its Linear / Conv / BatchNorm layers replaced, so attributes such as
    ``arch_name`` carry over, and ``population.members`` says how many it holds.

    Raises:
        ValueError: no models; models of different architectures (naming the first difference); a model with
            modules that cannot be stacked (see :func:`unsupported`).
    """
    models = list(models)
    check_same_architecture(models)
    problems = unsupported(models[0])
    if problems:
        raise ValueError(f"cannot stack {type(models[0]).__name__}: unsupported modules {', '.join(problems)}; "
                         f"train these models one at a time")
    population = copy.deepcopy(models[0])
    modules = [dict(m.named_modules()) for m in models]
    for name, module in list(population.named_modules()):
        kind = (StackedLinear if isinstance(module, nn.Linear) else StackedConv if isinstance(module, _CONVS)
                else StackedBatchNorm if isinstance(module, _NORMS) else None)
        if kind is None:
            continue
        stacked = kind([mods[name] for mods in modules])
        stacked.train(module.training)
        if not name:  # the model itself is one layer
            population = stacked
            break
        parent_name, _, child = name.rpartition(".")
        setattr(population.get_submodule(parent_name), child, stacked)
    population.members = len(models)
    return population


def members_of(population: nn.Module) -> int:
    """How many members a population (from :func:`stack`) holds."""
    return int(population.members)


def member_state(population: nn.Module, index: int) -> dict[str, torch.Tensor]:
    """The ``state_dict`` of member ``index`` as a single model would have it (views into the population)."""
    return {k: v[index] for k, v in population.state_dict().items()}


@torch.no_grad()
def load_member(population: nn.Module, index: int, state: dict[str, torch.Tensor]) -> None:
    """Copy a single model's ``state_dict`` into member ``index`` of the population."""
    for k, v in population.state_dict().items():
        v[index].copy_(state[k])
