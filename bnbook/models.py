"""The networks of the two papers, each a stack of `Block`s (layer → norm → nonlinearity).

- `vgg`: VGG for 32×32 CIFAR-10 images (configuration "A" = VGG-11, "D" = VGG-16), width multiplier,
  a normalization after every convolution (Santurkar et al. 2018, Appendix A).
- `deep_linear`: the 25-layer deep linear network of Santurkar et al., optional norm between layers.
- `mlp`: the fully connected sigmoid network of Ioffe & Szegedy's MNIST figure (3 × 100).

Every model has `model.blocks` in order, so "layer #i" of the papers is `model.blocks[i - 1]`:
`block.layer` holds the weight W_i, `block.norm` the normalization, and the norm's output is the input
to the nonlinearity (the quantity whose distribution the papers plot).
Initialization is Glorot (Xavier) uniform with zero biases, as in the paper, unless `init_std` is
given, in which case weights are N(0, init_std²) ("small random Gaussian", Ioffe & Szegedy), or, for the VGG,
`init="he"`: He et al.'s (2015) N(0, 2/fan_in) for the ReLU layers (chapter 4's control for Glorot's plateau).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .norms import has_affine, make_norm

VGG_CONFIGS = {
    "A": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "D": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
}
MODELS = ("vgg", "mlp", "dln")


class Block(nn.Module):
    """One layer of the papers: `act(norm(layer(x)))`, optionally followed by 2×2 max pooling."""

    def __init__(self, layer: nn.Module, norm: nn.Module, act: nn.Module, pool: bool = False) -> None:
        super().__init__()
        self.layer, self.norm, self.act = layer, norm, act
        self.pool = nn.MaxPool2d(2) if pool else nn.Identity()
        # an Identity costs a module call and adds nothing: in the 25-layer DLN that is 50 calls a pass
        self._skip_act, self._skip_pool = isinstance(act, nn.Identity), not pool
        self._relu = isinstance(act, nn.ReLU)

    def forward(self, x: Tensor) -> Tensor:
        x = self.norm(self.layer(x))  # the norm is always called: probes hook its output
        if self._relu and not self.norm._forward_hooks:
            # in place, as a user writes ReLU(inplace=True): one tensor less to allocate and fill. Not when a hook
            # (a probe) has been handed the norm's output: it would see it rectified
            x = torch.relu_(x)
        elif not self._skip_act:
            x = self.act(x)
        return x if self._skip_pool else self.pool(x)


class Net(nn.Module):
    """`blocks` in sequence, then an optional `head` (the classifier of VGG and the MLP)."""

    def __init__(self, blocks: list[Block], head: nn.Module | None = None, flatten: bool = False,
                 stem: nn.Module | None = None) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.head = head if head is not None else nn.Identity()
        self.stem = stem  # applied to the input before block 1 (the DLN's optional input BN); None: nothing
        self.flatten = flatten
        # convolutional nets compute in the channels_last memory format (N, H, W, C in memory), where
        # oneDNN's CPU convolutions are fastest; the norms are written for it (see bnbook.norms). `vgg` sets it.
        self.channels_last = False

    def forward(self, x: Tensor) -> Tensor:
        if self.flatten:
            x = x.flatten(1)
        elif self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)  # a no-op for data stored that way
        if self.stem is not None:
            x = self.stem(x)
        for block in self.blocks:
            x = block(x)
        return self.head(x.flatten(1) if x.dim() > 2 else x)


INITS = ("glorot", "he")


def _init(model: nn.Module, init_std: float | None, generator: torch.Generator, init: str = "glorot") -> None:
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            if init == "he":
                # a ReLU follows every convolution (gain √2); the head feeds the loss directly (gain 1, fan_in)
                relu = isinstance(m, nn.Conv2d)
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu" if relu else "linear", generator=generator)
            elif init_std is None:
                nn.init.xavier_uniform_(m.weight, generator=generator)
            else:
                nn.init.normal_(m.weight, 0.0, init_std, generator=generator)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def vgg(
    config: str = "A",
    width: float = 1.0,
    norm: str = "none",
    num_classes: int = 10,
    seed: int = 0,
    init_std: float | None = None,
    init: str = "glorot",
) -> Net:
    """VGG for 32×32 inputs: the conv stack of `config` with channels × `width`, then one linear layer.

    A norm follows every convolution (bias dropped when the norm has its own β); `seed` fixes the
    initialization and the noise generators of noisy layers. `init`: "glorot" (the paper's) or "he".
    """
    if init not in INITS or (init == "he" and init_std is not None):
        raise ValueError(f"init={init!r} must be one of {INITS}, and 'he' comes without init_std (got {init_std})")
    if config not in VGG_CONFIGS:
        raise ValueError(f"unknown VGG config {config!r}; choose one of {', '.join(VGG_CONFIGS)}")
    if not width > 0:
        raise ValueError(f"width must be > 0, got {width}")
    plan = VGG_CONFIGS[config]
    blocks, c_in = [], 3
    for i, v in enumerate(plan):
        if v == "M":
            continue
        c_out = max(1, round(v * width))
        pool = i + 1 < len(plan) and plan[i + 1] == "M"
        conv = nn.Conv2d(c_in, c_out, 3, padding=1, bias=not has_affine(norm))
        blocks.append(Block(conv, make_norm(norm, c_out, seed=seed * 1000 + len(blocks)), nn.ReLU(), pool))
        c_in = c_out
    model = Net(blocks, head=nn.Linear(c_in, num_classes))
    _init(model, init_std, torch.Generator().manual_seed(seed), init)
    model.channels_last = True
    return model.to(memory_format=torch.channels_last)


def deep_linear(
    depth: int = 25, width: int = 10, norm: str = "none", seed: int = 0, init_std: float | None = None,
    input_norm: bool = False, affine: bool = True,
) -> Net:
    """A deep linear network x ↦ W_depth ⋯ W_1 x (no biases), with `norm` after every layer but the last.

    The norm sits between linear layers, so the network stays linear in each W_i but becomes
    scale-invariant in W_1 … W_{depth−1} when the norm is BN. `input_norm`: the same norm on the input
    too, before W_1 (`model.stem`). `affine=False` (BN): no γ, β.
    """
    if depth < 1 or width < 1:
        raise ValueError(f"depth and width must be >= 1, got depth={depth}, width={width}")
    if input_norm and norm == "none":
        raise ValueError("input_norm=True needs a norm (got norm='none')")
    blocks = [
        Block(
            nn.Linear(width, width, bias=False),
            make_norm(norm, width, seed=seed * 1000 + i, affine=affine) if i < depth - 1 else nn.Identity(),
            nn.Identity(),
        )
        for i in range(depth)
    ]
    stem = make_norm(norm, width, seed=seed * 1000 + 999, affine=affine) if input_norm else None
    model = Net(blocks, stem=stem)
    _init(model, init_std, torch.Generator().manual_seed(seed))
    return model


def mlp(
    in_features: int = 3 * 32 * 32,
    hidden: int = 100,
    depth: int = 3,
    num_classes: int = 10,
    norm: str = "none",
    seed: int = 0,
    init_std: float | None = None,
) -> Net:
    """The fully connected sigmoid network of Ioffe & Szegedy's Fig. 1: `depth` hidden layers of `hidden`."""
    if depth < 1 or hidden < 1:
        raise ValueError(f"depth and hidden must be >= 1, got depth={depth}, hidden={hidden}")
    blocks, d = [], in_features
    for i in range(depth):
        layer = nn.Linear(d, hidden, bias=not has_affine(norm))
        blocks.append(Block(layer, make_norm(norm, hidden, seed=seed * 1000 + i), nn.Sigmoid()))
        d = hidden
    model = Net(blocks, head=nn.Linear(d, num_classes), flatten=True)
    _init(model, init_std, torch.Generator().manual_seed(seed))
    return model
