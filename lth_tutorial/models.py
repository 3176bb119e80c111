"""Architectures by name, initialised reproducibly from a seed.

=================  ====================================================  ======================
name               architecture                                          initialisation
=================  ====================================================  ======================
lenet_300_100      flatten -> FC 300 -> FC 100 -> FC classes (any input)   Glorot normal (F&C)
conv2/4/6          Frankle & Carbin's CIFAR convnets: pairs of 3x3 convs  Glorot normal (F&C)
                   (64, 128, 256 channels) with max-pooling, then
                   FC 256 -> FC 256 -> FC classes
vgg11/16/19        CIFAR-style VGG with batch norm, global average pool,  Kaiming normal
                   one FC layer (as in open_lth)
resnet20           CIFAR ResNet (He et al. 2016): 3 stages x 3 basic      Kaiming normal
                   blocks, 16/32/64 channels, projection shortcuts
mnist1d_cnn        three 1-D convs (32 channels, kernel 5, stride 2)      Kaiming normal
                   -> FC classes, for sequences ``(L,)`` or ``(1, L)``
vgg1d              1-D VGG with batch norm (16, M, 32, M, 64 channels),   Kaiming normal
                   global average pool, one FC layer, for sequences
                   (chapter 07's network slimming)
gap_cnn            three 1-D (kernel 5) or 2-D (kernel 3) convs, 32      Kaiming normal
                   channels, stride 2, global average pooling -> FC
lstm_lm(_medium)   word-level LSTM language model: embedding -> LSTM ->   U(-0.1, 0.1) emb./decoder
                   decoder (32 wide, 1 layer; medium: 650, 2 layers)     (word_language_model)
transformer_lm     causal pre-norm Transformer language model (d 32,    N(0, 1/d) embedding,
(_wt2)             1 layer; wt2: d 200, 2 layers), sinusoidal positions  Glorot
actor_critic_mlp   separate policy and value MLPs (2 x 64 tanh), output  orthogonal (SB3)
                   (B, actions + 1): logits, then the state value
=================  ====================================================  ======================

Biases start at zero; batch-norm layers at weight 1, bias 0, or -- with ``build(..., batchnorm_init="uniform")`` or a
name ending in ``_bn_uniform`` (``resnet20_bn_uniform``, ``vgg19_bn_uniform``, ...) -- weights drawn from U(0, 1), as
open_lth initialises them (``batchnorm_init='uniform'``, the default of its CIFAR ResNets and VGGs;
facebookresearch/open_lth, ``models/initializers.py: bn_uniform``). Modules are created on the ``meta`` device and then
initialised from a private ``torch.Generator`` seeded with ``seed``, so :func:`build` never touches (or depends on)
PyTorch's global random state: the same ``(name, input_shape, num_classes, seed)`` always gives the same weights.
Max-pooling layers are skipped once the feature map is 1 pixel wide, so every conv net also runs on 8x8 ``digits``.
"""

from __future__ import annotations

import math
import re
from typing import Callable

import torch
from torch import nn

__all__ = ["build", "names", "output_weight_name", "count_parameters", "reinitialize", "BATCHNORM_INITS"]

#: batch-norm weight initialisations :func:`build` accepts: ``"ones"`` (PyTorch's default) or ``"uniform"`` (U(0, 1),
#: open_lth's). Biases start at 0 either way.
BATCHNORM_INITS = ("ones", "uniform")
_BN_UNIFORM_SUFFIX = "_bn_uniform"


def _check_image_shape(name: str, input_shape: tuple[int, ...]) -> tuple[int, int, int]:
    if len(input_shape) != 3:
        raise ValueError(
            f"{name} needs image inputs shaped (channels, height, width), got input_shape={tuple(input_shape)}; "
            f"use lenet_300_100 or mnist1d_cnn for flat or 1-D data"
        )
    return tuple(input_shape)  # type: ignore[return-value]


class LeNet300100(nn.Module):
    """Fully connected LeNet-300-100 (LeCun et al. 1998) on flattened inputs of any shape."""

    def __init__(self, input_shape, num_classes, hidden=(300, 100)):
        super().__init__()
        sizes = [math.prod(input_shape), *hidden]
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.fc = nn.Linear(sizes[-1], num_classes)

    def forward(self, x):
        x = x.flatten(1)
        for layer in self.hidden:
            x = torch.relu(layer(x))
        return self.fc(x)


class ConvNet(nn.Module):
    """Frankle & Carbin's Conv-2/4/6: ``stages`` pairs of 3x3 convs + max-pool, then FC 256-256-classes."""

    def __init__(self, input_shape, num_classes, stages: int):
        super().__init__()
        c, h, w = input_shape
        layers: list[nn.Module] = []
        for width in (64, 128, 256)[:stages]:
            layers += [nn.Conv2d(c, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, width, 3, padding=1), nn.ReLU()]
            if min(h, w) > 1:
                layers.append(nn.MaxPool2d(2))
                h, w = h // 2, w // 2
            c = width
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, 256), nn.ReLU(),
                                        nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, num_classes))

    def forward(self, x):
        return self.classifier(self.features(x))


VGG_CONFIGS = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512],
}


class VGG(nn.Module):
    """CIFAR-style VGG with batch norm; global average pooling and a single FC layer."""

    def __init__(self, input_shape, num_classes, config):
        super().__init__()
        c, h, w = input_shape
        layers: list[nn.Module] = []
        for item in config:
            if item == "M":
                if min(h, w) > 1:
                    layers.append(nn.MaxPool2d(2))
                    h, w = h // 2, w // 2
            else:
                layers += [nn.Conv2d(c, item, 3, padding=1, bias=False), nn.BatchNorm2d(item), nn.ReLU()]
                c = item
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x):
        return self.fc(self.features(x).mean(dim=(2, 3)))


class VGG1d(nn.Module):
    """The VGG above in one dimension, for sequences ``(L,)`` or ``(1, L)`` (MNIST-1D): Conv1d (kernel 3, no bias)
    -> BatchNorm1d -> ReLU per entry of ``config`` ("M" = max-pool 2), global average pooling, one FC layer.

    ``vgg1d`` = ``[16, "M", 32, "M", 64]``: batch norm after every conv, small enough to train in seconds on a
    CPU; chapter 07 slims its channels by their batch-norm scales (network slimming, Liu et al. 2017).
    """

    def __init__(self, input_shape, num_classes, config=(16, "M", 32, "M", 64)):
        super().__init__()
        if len(input_shape) not in (1, 2):
            raise ValueError(f"vgg1d needs inputs shaped (length,) or (channels, length), got {input_shape}")
        c, length = (1, input_shape[0]) if len(input_shape) == 1 else input_shape
        layers: list[nn.Module] = []
        for item in config:
            if item == "M":
                if length > 1:
                    layers.append(nn.MaxPool1d(2))
                    length //= 2
            else:
                layers += [nn.Conv1d(c, item, 3, padding=1, bias=False), nn.BatchNorm1d(item), nn.ReLU()]
                c = item
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x):
        if x.dim() == 2:
            x = x.unsqueeze(1)
        return self.fc(self.features(x).mean(dim=2))


class BasicBlock(nn.Module):
    def __init__(self, c_in, c_out, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class ResNetCifar(nn.Module):
    """He et al.'s CIFAR ResNet-(6n+2); n=3 gives ResNet-20 (~0.27M parameters)."""

    def __init__(self, input_shape, num_classes, blocks_per_stage=3, width=16):
        super().__init__()
        c, _, _ = input_shape
        self.conv = nn.Conv2d(c, width, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(width)
        blocks: list[nn.Module] = []
        c_in = width
        for stage, c_out in enumerate((width, 2 * width, 4 * width)):
            for i in range(blocks_per_stage):
                blocks.append(BasicBlock(c_in, c_out, stride=2 if stage > 0 and i == 0 else 1))
                c_in = c_out
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(c_in, num_classes)

    def forward(self, x):
        out = self.blocks(torch.relu(self.bn(self.conv(x))))
        return self.fc(out.mean(dim=(2, 3)))


class Mnist1dCNN(nn.Module):
    """Small 1-D CNN for MNIST-1D: 3 x (Conv1d 32 channels, kernel 5, stride 2) -> FC classes."""

    def __init__(self, input_shape, num_classes, channels=32):
        super().__init__()
        if len(input_shape) == 1:
            c, length = 1, input_shape[0]
        elif len(input_shape) == 2:
            c, length = input_shape
        else:
            raise ValueError(f"mnist1d_cnn needs inputs shaped (length,) or (channels, length), got {input_shape}")
        layers: list[nn.Module] = []
        for _ in range(3):
            layers += [nn.Conv1d(c, channels, 5, stride=2, padding=2), nn.ReLU()]
            c, length = channels, (length + 2 * 2 - 5) // 2 + 1
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(c * length, num_classes)

    def forward(self, x):
        if x.dim() == 2:
            x = x.unsqueeze(1)
        return self.fc(self.features(x).flatten(1))


class ResidualMLP(nn.Module):
    """The MNIST-1D authors' MLP with one residual hidden layer: ``x (N, L) -> h1 = relu(W1 x) -> h2 = h1 +
    relu(W2 h1) -> logits (N, classes) = W3 h2``, hidden width ``hidden`` (their lottery notebook uses 500).

    Source: greydanus/mnist1d, ``notebooks/models.py`` (``MLPBase``) and ``notebooks/lottery-tickets.ipynb``
    (``SparseMLP``), commit 7878d96. :func:`build` names it ``"residual_mlp"`` (width 500) or ``"residual_mlp_W"``
    (width W) and gives it the library's seeded Kaiming-normal init with zero biases (their code keeps PyTorch's
    default uniform init).
    """

    def __init__(self, input_shape, num_classes: int, hidden: int = 500):
        super().__init__()
        self.linear1 = nn.Linear(math.prod(input_shape), hidden)
        self.linear2 = nn.Linear(hidden, hidden)
        self.linear3 = nn.Linear(hidden, num_classes)

    def forward(self, x):
        h = torch.relu(self.linear1(x.flatten(1)))
        h = h + torch.relu(self.linear2(h))
        return self.linear3(h)


class GapCNN(nn.Module):
    """Conv trunk + global average pooling + one FC layer, for ticket transfer (Morcos et al. 2019).

    ``(L,)`` or ``(C, L)`` inputs use Conv1d (kernel 5), ``(C, H, W)`` inputs Conv2d (kernel 3): ``channels``
    convs at stride 2, each followed by ReLU; then the mean over every position (global average pooling) and
    ``fc``: ``(N, channels[-1]) -> (N, classes)``. Because of the pooling, every parameter except ``fc``'s has a
    shape independent of the input's length / height / width, so a trunk found on one input size trains on another
    (Morcos et al. put global average pooling before the classifier for this reason).
    """

    def __init__(self, input_shape, num_classes, channels=(32, 32, 32)):
        super().__init__()
        if len(input_shape) in (1, 2):
            c, conv, kernel = (1 if len(input_shape) == 1 else input_shape[0]), nn.Conv1d, 5
        elif len(input_shape) == 3:
            c, conv, kernel = input_shape[0], nn.Conv2d, 3
        else:
            raise ValueError(f"gap_cnn needs inputs shaped (length,), (channels, length) or (channels, height, "
                             f"width), got {tuple(input_shape)}")
        self.sequence_input = len(input_shape) == 1
        layers: list[nn.Module] = []
        for width in channels:
            layers += [conv(c, width, kernel, stride=2, padding=kernel // 2), nn.ReLU()]
            c = width
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x):
        if self.sequence_input:
            x = x.unsqueeze(1)
        return self.fc(self.features(x).flatten(2).mean(2))


class LSTMLM(nn.Module):
    """Word-level LSTM language model: token ids ``(B, L)`` -> embedding ``(B, L, E)`` -> LSTM layers ``(B, L, H)``
    -> linear decoder -> next-token logits ``(B, L, V)`` (``V = num_classes``, ``input_shape = (L,)``).

    Source setting: the LSTM ``RNNModel`` of PyTorch's ``examples/word_language_model`` (untied embedding and
    decoder; embedding and decoder weights drawn from U(-0.1, 0.1), decoder bias 0, LSTM weights PyTorch's
    U(-1/sqrt(H), 1/sqrt(H))), the kind of WikiText-2 LSTM language model Yu et al. (2019) prune. ``lstm_lm`` is
    the quick size (one layer, E = H = 32); ``lstm_lm_medium`` is Zaremba et al.'s (2014) "medium" size (two layers
    of 650). No dropout (it would draw from PyTorch's global random state).
    """

    def __init__(self, input_shape, num_classes, width: int = 32, layers: int = 1):
        super().__init__()
        if len(input_shape) != 1:
            raise ValueError(f"a language model needs inputs shaped (sequence length,), got {tuple(input_shape)}")
        self.embedding = nn.Embedding(num_classes, width)
        self.rnn = nn.LSTM(width, width, num_layers=layers, batch_first=True)
        self.decoder = nn.Linear(width, num_classes)

    def refine_initialization(self, generator: torch.Generator) -> None:
        """word_language_model's ``init_weights``: embedding and decoder weights ~ U(-0.1, 0.1), decoder bias 0."""
        with torch.no_grad():
            self.embedding.weight.uniform_(-0.1, 0.1, generator=generator)
            self.decoder.weight.uniform_(-0.1, 0.1, generator=generator)
            self.decoder.bias.zero_()

    def forward(self, tokens):
        return self.decoder(self.rnn(self.embedding(tokens))[0])


def _sinusoids(length: int, width: int) -> torch.Tensor:
    """Vaswani et al.'s sinusoidal position table ``(length, width)``."""
    position = torch.arange(length, dtype=torch.float32).unsqueeze(1)
    frequency = torch.exp(torch.arange(0, width, 2, dtype=torch.float32) * (-math.log(10000.0) / width))
    table = torch.zeros(length, width)
    table[:, 0::2] = torch.sin(position * frequency)
    table[:, 1::2] = torch.cos(position * frequency[: width // 2])
    return table


class TransformerLM(nn.Module):
    """Causal Transformer language model: token ids ``(B, L)`` -> embedding x sqrt(d) + sinusoidal positions ->
    ``layers`` pre-norm encoder layers with a causal attention mask (``d`` wide, ``heads`` heads, feed-forward
    ``ff`` wide, no dropout) -> final layer norm -> linear decoder -> logits ``(B, L, V)``.

    Source setting: Vaswani et al. (2017) (embedding scaled by sqrt(d), sinusoidal positions; embedding drawn from
    N(0, 1/d) as in fairseq's Transformer, the code base of Yu et al.'s (2019) Transformer tickets); the sizes of
    ``transformer_lm_wt2`` are the Transformer of PyTorch's ``examples/word_language_model`` (d = 200, 2 heads, 2
    layers, feed-forward 200) for WikiText-2; ``transformer_lm`` is the quick size (d = 32, 2 heads, one layer,
    feed-forward 64). Prunable: embedding, attention input projection, attention output projection,
    feed-forward layers, decoder.
    """

    def __init__(self, input_shape, num_classes, width: int = 32, heads: int = 2, layers: int = 1, ff: int = 64):
        super().__init__()
        if len(input_shape) != 1:
            raise ValueError(f"a language model needs inputs shaped (sequence length,), got {tuple(input_shape)}")
        length = int(input_shape[0])
        self.width = width
        self.embedding = nn.Embedding(num_classes, width)
        self.blocks = nn.ModuleList(nn.TransformerEncoderLayer(width, heads, dim_feedforward=ff, dropout=0.0,
                                                               batch_first=True, norm_first=True)
                                    for _ in range(layers))
        self.norm = nn.LayerNorm(width)
        self.decoder = nn.Linear(width, num_classes)
        self.register_buffer("positions", _sinusoids(length, width), persistent=False)

    def refine_initialization(self, generator: torch.Generator) -> None:
        """The sinusoidal table (buffers start empty on the meta device) and the embedding ~ N(0, 1/d)."""
        with torch.no_grad():
            self.positions.copy_(_sinusoids(*self.positions.shape))
            self.embedding.weight.normal_(0.0, self.width ** -0.5, generator=generator)

    def forward(self, tokens):
        length = tokens.shape[1]
        causal = torch.triu(torch.full((length, length), float("-inf"), device=tokens.device), diagonal=1)
        h = self.embedding(tokens) * math.sqrt(self.width) + self.positions[:length]
        for block in self.blocks:
            h = block(h, src_mask=causal, is_causal=True)
        return self.decoder(self.norm(h))


class ActorCriticMLP(nn.Module):
    """Actor-critic for discrete actions: observations ``(B, obs_dim)`` -> ``(B, actions + 1)``: the policy's
    logits over ``num_classes`` actions, then the state value.

    Source setting: stable-baselines3's ``MlpPolicy`` for A2C/PPO (``ActorCriticPolicy``): separate policy and
    value networks, each two tanh layers of 64, orthogonal initialisation with gain sqrt(2) for hidden layers,
    0.01 for the policy head and 1 for the value head, biases 0 (as in OpenAI baselines).
    """

    def __init__(self, input_shape, num_classes, width: int = 64):
        super().__init__()
        d = math.prod(input_shape)
        self.policy = nn.Sequential(nn.Linear(d, width), nn.Tanh(), nn.Linear(width, width), nn.Tanh(),
                                    nn.Linear(width, num_classes))
        self.value = nn.Sequential(nn.Linear(d, width), nn.Tanh(), nn.Linear(width, width), nn.Tanh(),
                                   nn.Linear(width, 1))

    def refine_initialization(self, generator: torch.Generator) -> None:
        """SB3's orthogonal initialisation (gains sqrt(2) hidden, 0.01 policy head, 1 value head; biases 0)."""
        with torch.no_grad():
            for net, head_gain in ((self.policy, 0.01), (self.value, 1.0)):
                linears = [m for m in net if isinstance(m, nn.Linear)]
                for i, layer in enumerate(linears):
                    nn.init.orthogonal_(layer.weight, gain=head_gain if i == len(linears) - 1 else math.sqrt(2),
                                        generator=generator)
                    layer.bias.zero_()

    def forward(self, obs):
        obs = obs.flatten(1)
        return torch.cat([self.policy(obs), self.value(obs)], dim=1)


_GLOROT, _KAIMING = "glorot", "kaiming"

_BUILDERS: dict[str, tuple[Callable[..., nn.Module], str]] = {
    "lenet_300_100": (lambda s, k: LeNet300100(s, k), _GLOROT),
    "conv2": (lambda s, k: ConvNet(_check_image_shape("conv2", s), k, 1), _GLOROT),
    "conv4": (lambda s, k: ConvNet(_check_image_shape("conv4", s), k, 2), _GLOROT),
    "conv6": (lambda s, k: ConvNet(_check_image_shape("conv6", s), k, 3), _GLOROT),
    "vgg11": (lambda s, k: VGG(_check_image_shape("vgg11", s), k, VGG_CONFIGS["vgg11"]), _KAIMING),
    "vgg16": (lambda s, k: VGG(_check_image_shape("vgg16", s), k, VGG_CONFIGS["vgg16"]), _KAIMING),
    "vgg19": (lambda s, k: VGG(_check_image_shape("vgg19", s), k, VGG_CONFIGS["vgg19"]), _KAIMING),
    "resnet20": (lambda s, k: ResNetCifar(_check_image_shape("resnet20", s), k, 3), _KAIMING),
    "mnist1d_cnn": (lambda s, k: Mnist1dCNN(s, k), _KAIMING),
    "vgg1d": (lambda s, k: VGG1d(s, k), _KAIMING),
    "residual_mlp": (lambda s, k, width=500: ResidualMLP(s, k, width), _KAIMING),
    "gap_cnn": (lambda s, k: GapCNN(s, k), _KAIMING),
    "lstm_lm": (lambda s, k: LSTMLM(s, k), _GLOROT),
    "lstm_lm_medium": (lambda s, k: LSTMLM(s, k, width=650, layers=2), _GLOROT),
    "transformer_lm": (lambda s, k: TransformerLM(s, k), _GLOROT),
    "transformer_lm_wt2": (lambda s, k: TransformerLM(s, k, width=200, heads=2, layers=2, ff=200), _GLOROT),
    "actor_critic_mlp": (lambda s, k: ActorCriticMLP(s, k), _GLOROT),
}


def _has_batchnorm(name: str) -> bool:
    return name.startswith(("vgg", "resnet"))


def names() -> tuple[str, ...]:
    """All architecture names :func:`build` accepts (each one with batch norm also as ``<name>_bn_uniform``)."""
    return tuple(_BUILDERS)


def reinitialize(model: nn.Module, scheme: str, generator: torch.Generator) -> nn.Module:
    """Re-draw every parameter of ``model`` in place from ``generator``.

    Weights of Linear/Conv layers: ``"glorot"`` (normal, Glorot & Bengio 2010) or ``"kaiming"`` (normal, fan-in,
    ReLU gain; He et al. 2015). Biases 0; batch-norm and layer-norm weight 1, bias 0, running statistics reset.
    Sequence layers get PyTorch's own default schemes, drawn from ``generator``: embeddings N(0, 1); every LSTM
    weight and bias U(-1/sqrt(hidden), 1/sqrt(hidden)); attention input projections Glorot-uniform, biases 0.
    A module with parameters of another type raises ``ValueError`` (no parameter is ever left uninitialised).
    """
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Embedding):
                module.weight.normal_(0.0, 1.0, generator=generator)
            elif isinstance(module, nn.LSTM):
                bound = 1.0 / math.sqrt(module.hidden_size)
                for p in module.parameters(recurse=False):
                    p.uniform_(-bound, bound, generator=generator)
            elif isinstance(module, nn.MultiheadAttention):
                for name in ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight"):
                    if getattr(module, name) is not None:
                        nn.init.xavier_uniform_(getattr(module, name), generator=generator)
                for name in ("in_proj_bias", "bias_k", "bias_v"):
                    if getattr(module, name) is not None:
                        getattr(module, name).zero_()
            elif isinstance(module, nn.LayerNorm):
                if module.weight is not None:
                    module.weight.fill_(1.0)
                if module.bias is not None:
                    module.bias.zero_()
            elif isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d)):
                if scheme == _GLOROT:
                    nn.init.xavier_normal_(module.weight, generator=generator)
                elif scheme == _KAIMING:
                    nn.init.kaiming_normal_(module.weight, nonlinearity="relu", generator=generator)
                else:
                    raise ValueError(f"unknown init scheme {scheme!r}; use 'glorot' or 'kaiming'")
                if module.bias is not None:
                    module.bias.zero_()
            elif isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
                module.reset_running_stats()
                module.weight.fill_(1.0)
                module.bias.zero_()
            elif list(module.parameters(recurse=False)):
                raise ValueError(f"reinitialize has no scheme for {type(module).__name__} layers; add one")
    return model


def build(name: str, input_shape, num_classes: int, seed: int = 0, device: str | torch.device = "cpu",
          batchnorm_init: str | None = None) -> nn.Module:
    """Build architecture ``name`` for inputs of ``input_shape`` (one example, no batch dim) and ``num_classes``.

    The weights depend only on ``(name, input_shape, num_classes, seed, batchnorm_init)``; ``model.arch_name``
    records ``name``.

    Args:
        batchnorm_init: ``"ones"`` or ``"uniform"`` (batch-norm weights ~ U(0, 1), open_lth's ``bn_uniform``;
            drawn from the same seeded generator after every other parameter, so the conv and linear weights are
            those of ``"ones"``). ``None`` = ``"uniform"`` for names ending in ``_bn_uniform`` (the form a preset or
            :func:`lth_tutorial.imp.run` passes on), else ``"ones"``.
    """
    arch = name[:-len(_BN_UNIFORM_SUFFIX)] if name.endswith(_BN_UNIFORM_SUFFIX) else name
    width = re.fullmatch(r"residual_mlp_([1-9][0-9]*)", arch)
    options = {}
    if width:  # "residual_mlp_W": the residual MLP of width W
        arch, options = "residual_mlp", {"width": int(width.group(1))}
    if arch not in _BUILDERS or (arch != name and not options and not _has_batchnorm(arch)):
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(names())} (and residual_mlp_W for "
                         f"width W)")
    if batchnorm_init is None:
        batchnorm_init = "uniform" if arch != name else "ones"
    if batchnorm_init not in BATCHNORM_INITS:
        raise ValueError(f"batchnorm_init must be one of {BATCHNORM_INITS}, got {batchnorm_init!r}")
    if arch != name and batchnorm_init != "uniform":
        raise ValueError(f"{name!r} asks for batchnorm_init='uniform' by its name; got batchnorm_init="
                         f"{batchnorm_init!r} (use {arch!r} for other initialisations)")
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    make, scheme = _BUILDERS[arch]
    with torch.device("meta"):
        model = make(tuple(int(s) for s in input_shape), int(num_classes), **options)
    model = model.to_empty(device="cpu")
    generator = torch.Generator().manual_seed(int(seed))
    reinitialize(model, scheme, generator)
    if hasattr(model, "refine_initialization"):  # an architecture whose source initialises some layers its own way
        model.refine_initialization(generator)
    if batchnorm_init == "uniform":
        with torch.no_grad():
            for module in model.modules():
                if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
                    module.weight.uniform_(0.0, 1.0, generator=generator)
    model.arch_name = name
    return model.to(device)


def output_weight_name(model: nn.Module) -> str:
    """Name of the output layer's weight (the last Linear layer), e.g. ``"fc.weight"``."""
    last = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            last = name
    if last is None:
        raise ValueError("model has no Linear layer")
    return f"{last}.weight"


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (all of them, prunable or not)."""
    return sum(p.numel() for p in model.parameters())
