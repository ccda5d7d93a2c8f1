"""Normalization layers, written from scratch.

- `BatchNorm`: Algorithm 1 of Ioffe & Szegedy (2015) in training (batch statistics) and the running
  statistics that stand in for Algorithm 2's population statistics at inference.
- `NoisyBatchNorm`: BN followed by the time-varying noise of Santurkar et al. (2018), Fig. 2.
- `Noise`: the same noise without normalization (the "noise hurts the standard network" control).
- `LpNorm`: mean subtraction, then division by the average ℓp norm (p = 1, 2, ∞) instead of the std.

`make_norm(name, num_features)` is the one switch that the models use; `NORMS` lists the names.
The layers accept (N, C) and (N, C, H, W) inputs; statistics are per channel, over every other axis.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

NORMS = ("none", "batch", "noisy", "noise", "l1", "l2", "linf")


def _reduce_dims(x: Tensor) -> tuple[int, ...]:
    if x.dim() == 2:
        return (0,)
    if x.dim() == 4:
        return (0, 2, 3)
    raise ValueError(f"expected a (N, C) or (N, C, H, W) input, got shape {tuple(x.shape)}")


# Layout. The book's convolutions run in PyTorch's channels_last memory format (N, H, W, C in memory),
# where oneDNN's kernels are fastest. Seen in that order, a 4-D tensor is a matrix of N rows, one per
# sample, of H·W·C values with the channel index varying fastest. The BN layer works on that matrix:
# - per-channel sums are column sums of its (N·H·W, C) view, which PyTorch vectorizes well;
# - per-channel vectors are tiled H·W times to one row of length H·W·C, so that every elementwise
#   operation broadcasts one long contiguous row over the samples. Broadcasting a (1, C, 1, 1) vector
#   instead makes the innermost loop only C long (8 channels in the book's first layer): measured, up
#   to 1.7x slower per operation.


def _sample_rows(x: Tensor) -> tuple[Tensor, int]:
    """(x as an (N, H·W·C) matrix in channel-last order, H·W); a view when x is channels_last (or 2-D)."""
    if x.dim() == 2:
        return x, 1
    if x.dim() == 4:
        n, c, h, w = x.shape
        return x.permute(0, 2, 3, 1).reshape(n, h * w * c), h * w
    raise ValueError(f"expected a (N, C) or (N, C, H, W) input, got shape {tuple(x.shape)}")


def _like(rows: Tensor, x: Tensor) -> Tensor:
    """The inverse of `_sample_rows`: an (N, H·W·C) matrix back to x's shape (channels_last strides)."""
    if x.dim() == 2:
        return rows
    n, c, h, w = x.shape
    return rows.view(n, h, w, c).permute(0, 3, 1, 2)


def _row_like(row: Tensor, x: Tensor) -> Tensor:
    """A tiled (H·W·C,) row as a (1, C, H, W) tensor with channels_last strides, to broadcast over x's samples.

    An elementwise op of `_like(rows, x)` with such rows loops exactly as on the (N, H·W·C) matrix (the same
    contiguous inner loop, the same bits), but its result is a new channels_last tensor rather than a view, so
    that the nonlinearity after the norm can work in place on it (autograd forbids that on a custom
    Function's view output).
    """
    n, c, h, w = x.shape
    return row.view(1, h, w, c).permute(0, 3, 1, 2)


def _tile(reps: int, *vs: Tensor) -> list[Tensor]:
    """Per-channel (C,) vectors, each repeated `reps` times to match one row of `_sample_rows` (one op)."""
    if reps == 1:
        return list(vs)
    return list(torch.stack(vs).repeat(1, reps).unbind(0))


def _column_sums(rows: Tensor, c: int) -> Tensor:
    """Per-channel sums of an (N, H·W·C) matrix: the column sums of its (N·H·W, C) view."""
    return rows.reshape(-1, c).sum(0)


def _column_dots(a: Tensor, b: Tensor, c: int) -> Tensor:
    """Per-channel Σ a·b of two (N, H·W·C) matrices (Σ (x − μ)² for σ², Σ ∂ℓ/∂y·(x − μ) for ∂ℓ/∂γ).

    With few channels the C × C matrix product (a as columns)ᵀ(b as columns), of which only the
    diagonal is used, reads a and b once and writes no temporary: in the book's first two layers
    (8 and 16 channels, the largest activations) it is 1.1-1.3x faster than multiplying and summing.
    """
    if c <= 16:
        return torch.mm(a.reshape(-1, c).T, b.reshape(-1, c)).diagonal()
    return _column_sums(a * b, c)


def _centred_moments(x: Tensor) -> tuple[Tensor, int, Tensor, Tensor, Tensor]:
    """(x as `_sample_rows`, its H·W, x − μ_B in that layout, σ²_B, μ_B): the two passes of Algorithm 1's
    statistics, shared by `batch_moments` and the BN layer (which keeps x − μ_B for its backward pass)."""
    rows, reps = _sample_rows(x)
    c = x.shape[1]
    if reps == 1:  # (N, C): small layers are dominated by the number of operations; one fused op
        var, mean = torch.var_mean(rows, 0, correction=0)
        return rows, reps, rows - mean, var, mean
    mean = rows.reshape(-1, c).mean(0)
    (mean_t,) = _tile(reps, mean)
    centred = rows - mean_t
    return rows, reps, centred, _column_dots(centred, centred, c) / (rows.numel() // c), mean


def batch_moments(x: Tensor) -> tuple[Tensor, Tensor]:
    """(σ², μ) per channel over the batch (and spatial axes): biased variance and mean, as in Algorithm 1.

    Two passes (the mean, then the mean squared deviation from it), as numerically careful as
    `torch.var_mean` and, on the layout above, several times faster than it (`torch.var_mean` over
    (0, 2, 3) costs more than the convolutions around it).
    """
    if x.dim() == 2:  # (N, C): one fused op is fastest (layers this small are dominated by op count)
        return torch.var_mean(x, 0, correction=0)
    _, _, _, var, mean = _centred_moments(x)
    return var, mean


def _per_channel(v: Tensor, x: Tensor) -> Tensor:
    """Reshape a (C,) vector so that it broadcasts against x along the channel axis."""
    return v.view(1, -1) if x.dim() == 2 else v.view(1, -1, 1, 1)


def batch_norm_backward(
    dy: Tensor, x: Tensor, gamma: Tensor, eps: float = 1e-5
) -> tuple[Tensor, Tensor, Tensor]:
    """The backward pass of Algorithm 1, written out as in Ioffe & Szegedy (2015), Section 3.

    Returns (∂ℓ/∂x, ∂ℓ/∂γ, ∂ℓ/∂β) given the upstream gradient ∂ℓ/∂y: the chain rule through the batch
    statistics μ_B and σ²_B. Built from differentiable operations on x, so it can itself be
    differentiated (second derivatives, Hessian-vector products).
    """
    dims = _reduce_dims(x)
    m = x.numel() // x.shape[1]
    mu = _per_channel(x.mean(dims), x)
    var = _per_channel(x.var(dims, unbiased=False), x)
    inv_std = 1.0 / torch.sqrt(var + eps)
    x_hat = (x - mu) * inv_std
    dx_hat = dy * _per_channel(gamma, x)
    dvar = (dx_hat * (x - mu)).sum(dims, keepdim=True) * -0.5 * inv_std**3
    dmu = (-dx_hat * inv_std).sum(dims, keepdim=True) + dvar * (-2.0 * (x - mu)).sum(
        dims, keepdim=True
    ) / m
    dx = dx_hat * inv_std + dvar * 2.0 * (x - mu) / m + dmu / m
    return dx, (dy * x_hat).sum(dims), dy.sum(dims)


class _BatchNormFunction(torch.autograd.Function):
    """Algorithm 1 as one autograd node, with the paper's backward pass.

    One node instead of a dozen keeps small networks (the 25-layer DLN) from being dominated by
    autograd overhead, and lets the forward pass compute the batch statistics and the centred input
    x − μ_B once, for the output and for the backward pass. First derivatives use the closed form of
    `batch_norm_backward`, ∂ℓ/∂x = γ/(m√(σ²+ε)) · (m ∂ℓ/∂y − Σ∂ℓ/∂y − x̂ Σ ∂ℓ/∂y·x̂); when a second
    derivative is being built (create_graph), the backward is recomputed from the saved input with
    differentiable operations, so Hessian-vector products stay exact.
    Outputs: y, and the batch statistics σ²_B, μ_B (not differentiable; for the running averages).
    """

    @staticmethod
    def forward(ctx, x: Tensor, gamma: Tensor, beta: Tensor, eps: float) -> tuple[Tensor, Tensor, Tensor]:
        rows, reps, centred, var, mean = _centred_moments(x)  # centred = x − μ_B
        inv_std = torch.rsqrt(var + eps)
        scale = gamma * inv_std  # γ/√(σ²_B + ε), also the backward's k
        if reps == 1:  # (N, C): nothing to tile or reshape (the DLN's 24 layers are dominated by op count)
            y = torch.addcmul(beta, centred, scale)
        else:
            beta_t, scale_t = _tile(reps, beta, scale)
            # y = γ x̂ + β = β + (x − μ_B)·γ/√(σ²_B + ε)
            y = torch.addcmul(_row_like(beta_t, x), _like(centred, x), _row_like(scale_t, x))
        ctx.eps = eps
        ctx.save_for_backward(x, gamma, centred, inv_std, scale)
        ctx.mark_non_differentiable(var, mean)
        ctx.set_materialize_grads(False)  # the statistics get no gradient: no zero tensors for them
        return y, var, mean

    @staticmethod
    def backward(ctx, dy: Tensor | None, _dvar: None, _dmean: None):
        x, gamma, centred, inv_std, k = ctx.saved_tensors  # k = γ/√(σ²_B + ε)
        if dy is None:  # y was not used by the loss
            return None, None, None, None
        if torch.is_grad_enabled():  # building a graph of the gradient: differentiate through the stats
            dx, dgamma, dbeta = batch_norm_backward(dy, x, gamma, ctx.eps)
            return dx, dgamma, dbeta, None
        c = gamma.numel()
        if dy.dim() == 2:  # (N, C): the same operations as below, without the layout's views and tiling
            m = dy.shape[0]
            dbeta = _column_sums(dy, c)
            dgamma = _column_dots(dy, centred, c) * inv_std  # its choice of mm or multiply-and-sum, in one place
            km = k / -m
            dx = torch.addcmul(km * dbeta, dy, k).addcmul_(centred, km * inv_std * dgamma)
            return dx, dgamma, dbeta, None
        rows, reps = _sample_rows(dy)
        m = rows.numel() // c
        dbeta = _column_sums(rows, c)  # Σ ∂ℓ/∂y
        dgamma = _column_dots(rows, centred, c) * inv_std  # Σ ∂ℓ/∂y · x̂
        km = k / -m
        # ∂ℓ/∂x = k·∂ℓ/∂y − k·Σ∂ℓ/∂y/m − x̂·k·Σ(∂ℓ/∂y·x̂)/m, with x̂ = (x − μ_B)·inv_std; two fused passes
        shift_t, k_t, slope_t = _tile(reps, km * dbeta, k, km * inv_std * dgamma)
        dx = torch.addcmul(shift_t, rows, k_t).addcmul_(centred, slope_t)
        return _like(dx, x), dgamma, dbeta, None


def batch_norm_train(x: Tensor, gamma: Tensor, beta: Tensor, eps: float = 1e-5) -> tuple[Tensor, Tensor, Tensor]:
    """Algorithm 1 in training mode: (y, σ²_B, μ_B), y normalized with the batch's own statistics.

    μ_B = mean, σ²_B = biased variance over the batch (and spatial axes), x̂ = (x − μ_B)/√(σ²_B + ε),
    y = γ x̂ + β. Gradients are the paper's backward pass (`batch_norm_backward`), through μ_B and σ²_B;
    the statistics are returned detached, for the running averages.
    """
    if x.dim() not in (2, 4):
        raise ValueError(f"expected a (N, C) or (N, C, H, W) input, got shape {tuple(x.shape)}")
    return _BatchNormFunction.apply(x, gamma, beta, eps)


def batch_norm_forward(x: Tensor, gamma: Tensor, beta: Tensor, eps: float = 1e-5) -> Tensor:
    """y = BN_γ,β(x) of Algorithm 1 in training mode (the output of `batch_norm_train` alone)."""
    return batch_norm_train(x, gamma, beta, eps)[0]


class BatchNorm(nn.Module):
    """Batch normalization from scratch, a drop-in for `torch.nn.BatchNorm1d/2d`.

    Training: normalize with the batch statistics (Algorithm 1) and update running estimates,
    running ← (1 − momentum)·running + momentum·batch, with the *unbiased* batch variance
    (m/(m−1) σ²_B, as in Algorithm 2). Inference: the affine map with the running statistics.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1, affine: bool = True) -> None:
        super().__init__()
        if num_features < 1:
            raise ValueError(f"num_features must be >= 1, got {num_features}")
        self.num_features, self.eps, self.momentum, self.affine = num_features, eps, momentum, affine
        if affine:
            self.weight = nn.Parameter(torch.ones(num_features))
            self.bias = nn.Parameter(torch.zeros(num_features))
        else:  # x̂ itself: γ = 1 and β = 0, fixed (buffers, so that no optimizer or probe moves them)
            self.register_buffer("weight", torch.ones(num_features))
            self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))
        # (σ², μ) that replace the batch's own statistics while set (`probes.frozen_statistics`); None: Algorithm 1
        self.frozen: tuple[Tensor, Tensor] | None = None

    def forward(self, x: Tensor) -> Tensor:
        if self.frozen is not None:  # constants: the output depends on x (and γ, β), not through μ_B, σ²_B
            var, mean = self.frozen
            scale = self.weight * torch.rsqrt(var + self.eps)
            return _per_channel(self.bias - mean * scale, x) + x * _per_channel(scale, x)
        if not self.training:
            scale = self.weight / torch.sqrt(self.running_var + self.eps)
            rows, reps = _sample_rows(x)
            if reps == 1:
                return torch.addcmul(self.bias - self.running_mean * scale, x, scale)
            shift_t, scale_t = _tile(reps, self.bias - self.running_mean * scale, scale)
            return torch.addcmul(_row_like(shift_t, x), _like(rows, x), _row_like(scale_t, x))
        m = x.numel() // x.shape[1]
        if m < 2:
            raise ValueError(
                f"BatchNorm needs more than one value per channel in training mode, got input shape "
                f"{tuple(x.shape)}; use a larger batch or call model.eval()"
            )
        y, var, mean = _BatchNormFunction.apply(x, self.weight, self.bias, self.eps)
        # the statistics are outputs that take no gradient, so these in-place updates record nothing; add_
        # rather than += keeps nn.Module's attribute machinery out of the step (25 µs a layer, measured)
        self.running_mean.lerp_(mean, self.momentum)
        self.running_var.lerp_(var * (m / (m - 1)), self.momentum)
        self.num_batches_tracked.add_(1)
        return y

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}" + ("" if self.affine else ", affine=False")


def inject_noise(
    a: Tensor,
    generator: torch.Generator,
    n_mu: float = 0.5,
    n_sigma: float = 1.25,
    r_mu: float = 0.1,
    r_sigma: float = 0.1,
) -> Tensor:
    """The noise of Santurkar et al. (2018), Fig. 2, redrawn at every call (every training step).

    Per channel j: μ_j ~ U(−n_μ, n_μ), σ_j ~ U(1, n_σ). Per sample i and channel j:
    m_ij ~ U(μ_j − r_μ, μ_j + r_μ), s_ij ~ N(σ_j, r_σ²) (r_σ read as a standard deviation);
    a_ij ← s_ij · a_ij + m_ij, the same (s_ij, m_ij) at every spatial position of channel j.
    """
    n, c = a.shape[0], a.shape[1]
    opts = dict(generator=generator, dtype=a.dtype, device=generator.device)
    mu = (torch.rand(c, **opts) * 2 - 1) * n_mu
    sigma = 1 + torch.rand(c, **opts) * (n_sigma - 1)
    m = (mu + (torch.rand(n, c, **opts) * 2 - 1) * r_mu).to(a.device)
    s = (sigma + torch.randn(n, c, **opts) * r_sigma).to(a.device)
    if a.dim() == 2:
        return torch.addcmul(m, s, a)
    # one (s, m) per sample and channel, broadcast over the spatial positions; on a channels_last a the loop runs
    # channel fastest, and the result is a new channels_last tensor (not a view: see `_row_like`)
    return torch.addcmul(m[:, :, None, None], s[:, :, None, None], a)


class NoisyBatchNorm(BatchNorm):
    """BN whose output is perturbed, in training only, by `inject_noise` (Santurkar et al. Fig. 2).

    The noise comes from the layer's own seeded generator, never from the global RNG, so runs are
    reproducible and probes can save and restore it. At inference it is plain BN.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1, seed: int = 0) -> None:
        super().__init__(num_features, eps, momentum)
        self.generator = torch.Generator().manual_seed(seed)

    def forward(self, x: Tensor) -> Tensor:
        y = super().forward(x)
        return inject_noise(y, self.generator) if self.training else y


class Noise(nn.Module):
    """The noisy-BN perturbation without the normalization: the standard network plus the same noise."""

    def __init__(self, num_features: int, seed: int = 0) -> None:
        super().__init__()
        self.num_features = num_features
        self.generator = torch.Generator().manual_seed(seed)

    def forward(self, x: Tensor) -> Tensor:
        return inject_noise(x, self.generator) if self.training else x


class LpNorm(nn.Module):
    """ℓp normalization (Santurkar et al. 2018, §3.3): y ← γ (y − μ)/ν_p + β, per channel.

    ν_1 = mean |y|, ν_2 = √(mean y²), ν_∞ = max |y|, computed before centering, over the batch (and
    spatial axes). Like BN it keeps running estimates of μ and ν for inference.
    """

    def __init__(self, num_features: int, p: float, eps: float = 1e-5, momentum: float = 0.1) -> None:
        super().__init__()
        if p not in (1, 2, math.inf):
            raise ValueError(f"LpNorm supports p = 1, 2 or math.inf, got p={p!r}")
        self.num_features, self.p, self.eps, self.momentum = num_features, p, eps, momentum
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_nu", torch.ones(num_features))

    def forward(self, x: Tensor) -> Tensor:
        rows, reps = _sample_rows(x)  # the layout of BatchNorm: per-channel columns, tiled vectors
        c = x.shape[1]
        if self.training:
            cols = rows.reshape(-1, c)
            mean = cols.mean(0)
            if self.p == 1:
                nu = cols.abs().mean(0)
            elif self.p == 2:
                nu = cols.pow(2).mean(0).sqrt()
            else:
                nu = cols.abs().amax(0)
            with torch.no_grad():
                self.running_mean.lerp_(mean, self.momentum)
                self.running_nu.lerp_(nu, self.momentum)
        else:
            mean, nu = self.running_mean, self.running_nu
        # y = γ (x − μ)/(ν + ε) + β, as one multiply-add per value
        scale = self.weight / (nu + self.eps)
        if reps == 1:
            return torch.addcmul(self.bias - mean * scale, rows, scale)
        shift_t, scale_t = _tile(reps, self.bias - mean * scale, scale)
        return torch.addcmul(_row_like(shift_t, x), _like(rows, x), _row_like(scale_t, x))

    def extra_repr(self) -> str:
        return f"{self.num_features}, p={self.p}"


def make_norm(name: str, num_features: int, seed: int = 0, affine: bool = True) -> nn.Module:
    """The one switch between normalizations: a name from `NORMS` → a layer for `num_features` channels.

    `seed` seeds the noise generator of "noisy" and "noise" layers (each layer gets its own). `affine=False`
    (BN only): no learned γ, β.
    """
    if not affine and name != "batch":
        raise ValueError(f"affine=False is for norm 'batch' only, got norm {name!r}")
    if name == "none":
        return nn.Identity()
    if name == "batch":
        return BatchNorm(num_features, affine=affine)
    if name == "noisy":
        return NoisyBatchNorm(num_features, seed=seed)
    if name == "noise":
        return Noise(num_features, seed=seed)
    if name in ("l1", "l2", "linf"):
        return LpNorm(num_features, p={"l1": 1, "l2": 2, "linf": math.inf}[name])
    raise ValueError(f"unknown norm {name!r}; choose one of {', '.join(NORMS)}")


def has_affine(name: str) -> bool:
    """Whether the norm has its own shift β, which makes the preceding layer's bias redundant."""
    return name in ("batch", "noisy", "l1", "l2", "linf")
