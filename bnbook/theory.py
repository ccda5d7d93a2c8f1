"""The theory of Santurkar et al. (2018), Section 4 and Appendix C, as computations that can be checked.

Conventions. One BN unit (channel) j sees a batch of m pre-normalization values y_j ∈ R^m. Tensors of
shape (m, n) hold n units side by side, one per column (a conv layer's channel is one column of
N·H·W rows, see `channels_as_columns`). ŷ_j = (y_j − μ_j)/σ_j with the biased batch variance and
σ_j = √(Var_B[y_j] + ε); z_j = γ_j ŷ_j + β_j; g = ∂L̂/∂z_j is the gradient arriving at the BN output, which
the paper writes ∇_{y_j} L (the standard network's gradient at the same activations). γ, β are constants.
Everything here is meant to run in float64: pass float64 tensors.

- Fact C.1 / Theorem 4.1: `normalize`, `bn_input_grad` (closed form), `bn_input_grad_autograd` (through
  `bnbook.norms.batch_norm_forward`), `thm41_sides` (both sides, both published coefficients c_m); chapter 5's
  checks `fact_c1_against_autograd`, `thm41_random_units`.
- Theorem 4.2: `thm42_terms` (Hessian quadratic forms by double backward), `quad_form`, `hessian_block`,
  `hessian_block_matvec`, `lanczos` (from `bnbook.probes`), `mlp_head`, `network_head`; chapter 5's small
  networks `small_bn_net`, `thm42_small_nets`, `thm42_summary`, `thm42_eps_error`.
- Observation 4.3: `bn_params_reproducing`, `bn_from_standard` (a BN network that computes exactly what a
  trained standard network computes).
- Theorem 4.4: `thm44_sides`, `worst_case_inputs` (an input matrix that attains the bound); chapter 5's checks
  `thm44_random_inputs`, `thm44_worst_cases`.
- Lemma 4.5: `ray_distance`, `bn_regression_loss`, `least_squares`; chapter 5's `ray_of_minima` (least squares)
  and `ray_distance_grid` (brute force).
- Real networks: `record_bn_layers` (x, y, g, ∂L̂/∂y, ∂L̂/∂W at every BN layer of a model on one batch),
  `network_head` (a network split at one BN layer, for Theorem 4.2); what a trained network shows, per seed:
  `thm41_on_network`, `thm42_on_network`, `ray_on_network`; on one network's recorded layers:
  `thm41_on_layers`, `thm44_on_layers`.
"""

from __future__ import annotations

import copy
import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .norms import BatchNorm, batch_norm_forward
from .probes import lanczos  # noqa: F401  (the book's one Lanczos, used by the training probes too)

# ---------------------------------------------------------------------------------------------------
# Fact C.1 and Theorem 4.1
# ---------------------------------------------------------------------------------------------------


def _as_cols(t: Tensor) -> Tensor:
    if t.dim() == 1:
        return t.unsqueeze(1)
    if t.dim() != 2:
        raise ValueError(f"expected an (m,) or (m, n) tensor (units in columns), got shape {tuple(t.shape)}")
    return t


def channels_as_columns(t: Tensor) -> Tensor:
    """(N, C) → itself; (N, C, H, W) → (N·H·W, C): every channel becomes one column of m = N·H·W values."""
    if t.dim() == 2:
        return t
    if t.dim() == 4:
        return t.permute(0, 2, 3, 1).reshape(-1, t.shape[1])
    raise ValueError(f"expected a (N, C) or (N, C, H, W) tensor, got shape {tuple(t.shape)}")


def normalize(y: Tensor, eps: float = 0.0) -> tuple[Tensor, Tensor, Tensor]:
    """ŷ = (y − μ)/σ per column, σ = √(biased variance + ε). Returns (ŷ, μ, σ).

    With ε = 0, ⟨1, ŷ⟩ = 0 and ‖ŷ‖² = m exactly; with ε > 0, ‖ŷ‖² = m·Var/(Var + ε) < m.
    """
    y = _as_cols(y)
    mu = y.mean(0)
    sigma = torch.sqrt(y.var(0, unbiased=False) + eps)
    return (y - mu) / sigma, mu, sigma


def bn_input_grad(g: Tensor, y: Tensor, gamma: Tensor | float, eps: float = 0.0) -> Tensor:
    """Fact C.1: ∂L̂/∂y_j = γ/(m σ_j) · (m g − 1⟨1, g⟩ − ŷ_j⟨ŷ_j, g⟩), column by column.

    g = ∂L̂/∂z (the gradient at the BN output), y the BN input, both (m, n) or (m,). Valid for any ε ≥ 0
    (σ then includes ε). The result has the shape of `y` after `_as_cols`.
    """
    g, y = _as_cols(g), _as_cols(y)
    m = y.shape[0]
    y_hat, _, sigma = normalize(y, eps)
    return gamma / (m * sigma) * (m * g - g.sum(0) - y_hat * (y_hat * g).sum(0))


def bn_input_grad_autograd(
    g: Tensor, y: Tensor, gamma: Tensor | float, eps: float = 0.0, beta: Tensor | float = 0.0
) -> Tensor:
    """∂⟨g, BN(y)⟩/∂y by autograd through `bnbook.norms.batch_norm_forward` (independent of Fact C.1)."""
    g, y = _as_cols(g), _as_cols(y)
    n = y.shape[1]
    gamma_t = torch.as_tensor(gamma, dtype=y.dtype).expand(n).clone()
    beta_t = torch.as_tensor(beta, dtype=y.dtype).expand(n).clone()
    y = y.detach().requires_grad_(True)
    z = batch_norm_forward(y, gamma_t, beta_t, eps)
    (grad,) = torch.autograd.grad((z * g).sum(), y)
    return grad


@dataclass(frozen=True)
class Thm41:
    """Both sides of Theorem 4.1 for n units (every field has shape (n,) except `m`).

    lhs = ‖∇_{y_j} L̂‖² (from `grad_y`: autograd or the network's own backward pass);
    rhs(c) = γ²/σ² · (‖g‖² − ⟨1, g⟩²/m − c·⟨ŷ, g⟩²), for c = 1/m (`rhs_m`, the appendix) and
    c = 1/√m (`rhs_sqrt_m`, the main text as printed).
    """

    m: int
    lhs: Tensor
    scale: Tensor  # γ²/σ²
    g_sq: Tensor  # ‖g‖²
    mean_term: Tensor  # ⟨1, g⟩²/m: the part of ‖g‖² along 1
    yhat_dot_sq: Tensor  # ⟨ŷ, g⟩²
    rho: Tensor  # ‖ŷ‖²/m = Var/(Var + ε): 1 when ε = 0

    def rhs(self, c: float) -> Tensor:
        return self.scale * (self.g_sq - self.mean_term - c * self.yhat_dot_sq)

    @property
    def rhs_m(self) -> Tensor:
        return self.rhs(1.0 / self.m)

    @property
    def rhs_sqrt_m(self) -> Tensor:
        return self.rhs(1.0 / math.sqrt(self.m))

    @property
    def yhat_term(self) -> Tensor:
        """⟨ŷ, g⟩²/m: the part of ‖g‖² along ŷ (ŷ/√m is a unit vector when ε = 0)."""
        return self.yhat_dot_sq / self.m

    @property
    def eps_gap(self) -> Tensor:
        """The predicted slack rhs_m − lhs = γ²/σ² · (1 − ρ)·⟨ŷ, g⟩²/m ≥ 0 (0 when ε = 0)."""
        return self.scale * (1 - self.rho) * self.yhat_dot_sq / self.m


def thm41_sides(
    g: Tensor, y: Tensor, gamma: Tensor | float, eps: float = 0.0, grad_y: Tensor | None = None
) -> Thm41:
    """Evaluate both sides of Theorem 4.1 on units (columns) y with upstream gradient g.

    If `grad_y` (∂L̂/∂y) is not given it is computed by autograd through the BN forward pass, so the
    left side never uses the closed form on the right. Derivation: with P = I − 11ᵀ/m − ŷŷᵀ/m,
    Fact C.1 reads ∂L̂/∂y = (γ/σ) P g, and ‖P g‖² = ‖g‖² − ⟨1,g⟩²/m − (2 − ρ)⟨ŷ,g⟩²/m with ρ = ‖ŷ‖²/m.
    For ε = 0, ρ = 1, P is the orthogonal projection off span{1, ŷ} and the 1/m form is an equality.
    For ε > 0, ρ < 1 and lhs = rhs_m − `eps_gap` ≤ rhs_m.
    """
    g, y = _as_cols(g), _as_cols(y)
    m = y.shape[0]
    if grad_y is None:
        grad_y = bn_input_grad_autograd(g, y, gamma, eps)
    grad_y = _as_cols(grad_y)
    y_hat, _, sigma = normalize(y, eps)
    gamma_t = torch.as_tensor(gamma, dtype=y.dtype).expand(y.shape[1])
    return Thm41(
        m=m,
        lhs=(grad_y**2).sum(0),
        scale=gamma_t**2 / sigma**2,
        g_sq=(g**2).sum(0),
        mean_term=g.sum(0) ** 2 / m,
        yhat_dot_sq=(y_hat * g).sum(0) ** 2,
        rho=(y_hat**2).sum(0) / m,
    )


def random_bn_instance(
    m: int, n: int, generator: torch.Generator, dtype: torch.dtype = torch.float64
) -> tuple[Tensor, Tensor, Tensor]:
    """A random (y, g, γ): y with per-unit offsets in ±5 and log-uniform scales in [1e-2, 1e2], Gaussian g
    with a random mean (so that its component along 1 is not negligible), γ log-uniform in [0.1, 10]."""
    opts = dict(generator=generator, dtype=dtype)
    scale = 10 ** (4 * torch.rand(n, **opts) - 2)
    y = (torch.rand(n, **opts) - 0.5) * 10 + scale * torch.randn(m, n, **opts)
    g = torch.randn(m, n, **opts) + torch.randn(n, **opts)
    gamma = 10 ** (2 * torch.rand(n, **opts) - 1)
    return y, g, gamma


def aligned_upstream(y: Tensor, eps: float = 0.0, noise: float = 0.1, generator: torch.Generator | None = None) -> Tensor:
    """An upstream gradient g = ŷ + noise·(standard normal): almost all of it along ŷ, the direction that
    BN removes. On it the 1/√m form of Theorem 4.1 has a negative right side (for m > 1)."""
    y_hat, _, _ = normalize(y, eps)
    return y_hat + noise * torch.randn(y_hat.shape, generator=generator, dtype=y_hat.dtype)


# chapter 5's checks of Fact C.1 and Theorem 4.1 (§5.2, §5.3); the chapter asserts on what they return


@dataclass(frozen=True)
class FactC1Check:
    """Fact C.1 against autograd: max |difference| over the largest |entry| of autograd's gradient."""

    module: float  # through `bnbook.norms.BatchNorm`, conv input 16×8×6×6 (m = 576 per channel), ε = 1e-5
    functional: float  # through `torch.nn.functional.batch_norm`, m = 64, 32 units, ε = 1e-3
    naive: float  # the naive γ/σ · g (the batch-statistics terms forgotten) against the same autograd gradient


def fact_c1_against_autograd(seed: int = 0) -> FactC1Check:
    """Fact C.1 (`bn_input_grad`) against two backward passes that do not use it, in float64.

    (i) Autograd through the package's `BatchNorm` layer (γ from −2 to 3, its default ε) on a convolutional
    input with an offset and a scale (seed `seed`), with a Gaussian upstream gradient (seed + 1); (ii) autograd
    through `torch.nn.functional.batch_norm` (ε = 1e-3) on a `random_bn_instance` (seed + 2). Both must agree
    to rounding; the naive γ/σ · g, which treats μ and σ as constants, must not, which shows the check can fail.
    """
    dtype = torch.float64
    bn = BatchNorm(8).to(dtype)
    with torch.no_grad():
        bn.weight.copy_(torch.linspace(-2, 3, 8, dtype=dtype))
    x = torch.randn(16, 8, 6, 6, generator=torch.Generator().manual_seed(seed), dtype=dtype) * 4 + 2
    x = x.requires_grad_(True)
    upstream = torch.randn(16, 8, 6, 6, generator=torch.Generator().manual_seed(seed + 1), dtype=dtype)
    (grad_module,) = torch.autograd.grad((bn(x) * upstream).sum(), x)
    grad_fact = bn_input_grad(channels_as_columns(upstream), channels_as_columns(x.detach()), bn.weight.detach(), bn.eps)
    err_module = float((grad_fact - channels_as_columns(grad_module)).abs().max() / grad_module.abs().max())

    y, g, gamma = random_bn_instance(64, 32, torch.Generator().manual_seed(seed + 2))
    y_leaf = y.clone().requires_grad_(True)
    z = F.batch_norm(y_leaf, None, None, gamma, None, training=True, eps=1e-3)
    (grad_torch,) = torch.autograd.grad((z * g).sum(), y_leaf)
    err_torch = float((bn_input_grad(g, y, gamma, 1e-3) - grad_torch).abs().max() / grad_torch.abs().max())
    naive = float((gamma / normalize(y, 1e-3)[2] * g - grad_torch).abs().max() / grad_torch.abs().max())
    return FactC1Check(module=err_module, functional=err_torch, naive=naive)


@dataclass(frozen=True)
class Thm41Units:
    """Theorem 4.1 on many random units (`thm41_random_units`): one entry per unit in every array.

    `norm` = γ²‖g‖²/σ², the natural scale both sides are measured against; `gap`, the predicted slack
    (`Thm41.eps_gap`). Masks: `e0` (ε = 0), `big` (m ≥ 3), `m2` (m = 2 and ε = 0). The 1/m form: `eq_err` =
    |LHS − RHS|/norm on the units with ε = 0 (an equality, so rounding only); on those with ε > 0, `slack_ok` =
    LHS ≤ RHS + 1e-12·norm on all of them, `gap_err` = |RHS − LHS − gap|/norm (the slack is the predicted one)
    and `rel_slack` = (RHS − LHS)/norm. The 1/√m form, on every unit: `viol` = LHS > RHS + 1e-12·norm and
    `neg` = RHS < 0.
    """

    ms: list[int]
    epss: list[float]
    m: np.ndarray
    eps: np.ndarray
    lhs: np.ndarray
    rhs_m: np.ndarray
    rhs_sqrt_m: np.ndarray
    norm: np.ndarray
    gap: np.ndarray
    e0: np.ndarray
    big: np.ndarray
    m2: np.ndarray
    eq_err: np.ndarray
    slack_ok: np.bool_
    gap_err: np.ndarray
    rel_slack: np.ndarray
    viol: np.ndarray
    neg: np.ndarray

    @property
    def n(self) -> int:
        """The number of units."""
        return len(self.m)

    def by_batch_size(self) -> list[tuple[int, float, float | None]]:
        """How the printed 1/√m form fails with m, at ε = 0: per m of `ms`, (m, the share of units whose right
        side is negative, the median LHS/RHS over the units where it is positive, or None where none is)."""
        out = []
        for m in self.ms:
            sel = (self.m == m) & self.e0
            pos = sel & ~self.neg
            out.append((m, self.neg[sel].mean(), np.median(self.lhs[pos] / self.rhs_sqrt_m[pos]) if pos.any() else None))
        return out


def thm41_random_units(ms: Sequence[int], epss: Sequence[float], units: int) -> Thm41Units:
    """Theorem 4.1 on `units` random units (`random_bn_instance`) for every batch size m in `ms` and ε in `epss`.

    Each (m, ε) has its own seed, 1000·m + int(10⁶·ε). The left side comes from autograd through the BN forward
    pass (`thm41_sides`), never from the formula on the right, so that finding an equality is a real check.
    """
    rows = []  # (m, eps, lhs, rhs_m, rhs_sqrt_m, norm, predicted gap) per unit
    for eps in epss:
        for m in ms:
            y, g, gamma = random_bn_instance(m, units, torch.Generator().manual_seed(1000 * m + int(eps * 1e6)))
            r = thm41_sides(g, y, gamma, eps)  # lhs by autograd
            for k in range(units):
                rows.append((m, eps, float(r.lhs[k]), float(r.rhs_m[k]), float(r.rhs_sqrt_m[k]),
                             float(r.scale[k] * r.g_sq[k]), float(r.eps_gap[k])))
    m_, eps_, lhs, rhs_m, rhs_s, norm, gap = np.array(rows).T
    e0 = eps_ == 0
    return Thm41Units(
        ms=list(ms), epss=list(epss), m=m_, eps=eps_, lhs=lhs, rhs_m=rhs_m, rhs_sqrt_m=rhs_s, norm=norm, gap=gap,
        e0=e0, big=m_ >= 3, m2=(m_ == 2) & e0,
        eq_err=np.abs(lhs - rhs_m)[e0] / norm[e0],
        slack_ok=np.all(lhs[~e0] <= rhs_m[~e0] + 1e-12 * norm[~e0]),
        gap_err=np.abs(rhs_m - lhs - gap)[~e0] / norm[~e0],
        rel_slack=((rhs_m - lhs) / norm)[~e0],
        viol=lhs > rhs_s + 1e-12 * norm,  # the 1/√m form is violated whenever ⟨ŷ, g⟩ ≠ 0
        neg=rhs_s < 0,
    )


# ---------------------------------------------------------------------------------------------------
# Theorem 4.2
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Thm42:
    """The quantities of Theorem 4.2 for one unit j (all Python floats).

    G = ∇_{y_j} L̂, ĝ = ∇_{z_j} L (gradient at the BN output), H = ∂²L/∂z_j∂z_j (the rest of the network's
    Hessian with respect to unit j's BN output), Ĥ = ∂²L̂/∂y_j∂y_j.
    """

    m: int
    gamma: float
    sigma: float
    ghat_dot_yhat: float  # ⟨ĝ, ŷ⟩ (= ∂L̂/∂γ_j)
    G_sq: float  # ‖G‖²
    ghat_sq: float  # ‖ĝ‖²
    quad_bn: float  # Gᵀ Ĥ G (exact, by double backward)
    quad_H_G: float  # Gᵀ H G
    quad_H_ghat: float  # ĝᵀ H ĝ

    @property
    def scale(self) -> float:
        return self.gamma**2 / self.sigma**2

    @property
    def size(self) -> float:
        """The natural scale of both sides, |γ²/σ² GᵀHG| + |γ²/σ² ⟨ĝ, ŷ⟩‖G‖²/(mγ)|: what errors are measured against."""
        return abs(self.scale * self.quad_H_G) + abs(self.scale * self.ghat_dot_yhat * self.G_sq / (self.m * self.gamma))

    @property
    def rhs(self) -> float:
        """The derived form: γ²/σ² · (GᵀHG − ⟨ĝ, ŷ⟩‖G‖²/(mγ)); equal to quad_bn when ε = 0."""
        return self.scale * (self.quad_H_G - self.ghat_dot_yhat * self.G_sq / (self.m * self.gamma))

    @property
    def rhs_variant(self) -> float:
        """The transcription with γ/(mσ²) inside the bracket: γ²/σ² · (GᵀHG − γ⟨ĝ, ŷ⟩‖G‖²/(mσ²))."""
        return self.scale * (self.quad_H_G - self.gamma * self.ghat_dot_yhat * self.G_sq / (self.m * self.sigma**2))

    @property
    def rhs_second(self) -> float:
        """The second form, with ĝᵀHĝ in place of GᵀHG: γ²/σ² · (ĝᵀHĝ − ⟨ĝ, ŷ⟩‖G‖²/(mγ))."""
        return self.scale * (self.quad_H_ghat - self.ghat_dot_yhat * self.G_sq / (self.m * self.gamma))


def quad_form(f: Callable[[Tensor], Tensor], x: Tensor, directions: Sequence[Tensor]) -> list[float]:
    """dᵀ ∇²f(x) d for each direction d (same shape as x), by double backward."""
    x = x.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(f(x), x, create_graph=True)
    out = []
    for i, d in enumerate(directions):
        (hv,) = torch.autograd.grad((grad * d).sum(), x, retain_graph=i + 1 < len(directions))
        out.append(float((hv * d).sum()))
    return out


def thm42_terms(
    head: Callable[[Tensor], Tensor], y: Tensor, j: int, gamma: Tensor, beta: Tensor, eps: float = 0.0
) -> Thm42:
    """Theorem 4.2 for unit j of a BN layer with input y (m, n), followed by `head` (z ↦ scalar loss).

    L̂(y) = head(BN(y; γ, β, ε)). Ĥ-quadratic form by double backward through BN; H-quadratic forms by
    double backward through `head` at z = BN(y). Only column j moves; the other columns are fixed.
    Derivation (ε = 0): Gᵀ Ĥ G = (JG)ᵀH(JG) + γ·d²/dt²⟨ĝ, ŷ(y + tG)⟩ with J = (γ/σ)P and PG = G, and
    since G ⊥ 1, ŷ: ŷ(y + tG) = (σŷ + tG)/√(σ² + t²‖G‖²/m), whose second derivative gives
    −⟨ĝ, ŷ⟩‖G‖²/(mσ²). Hence Gᵀ Ĥ G = γ²/σ² · (GᵀHG − ⟨ĝ, ŷ⟩‖G‖²/(mγ)), an identity.
    """
    y = y.detach()
    m = y.shape[0]
    gamma, beta = gamma.detach(), beta.detach()

    def lhat(yy: Tensor) -> Tensor:
        return head(batch_norm_forward(yy, gamma, beta, eps))

    yg = y.clone().requires_grad_(True)
    (G_all,) = torch.autograd.grad(lhat(yg), yg)
    E = torch.zeros_like(y)
    E[:, j] = G_all[:, j]
    (quad_bn,) = quad_form(lhat, y, [E])

    z = batch_norm_forward(y, gamma, beta, eps).detach()
    zg = z.clone().requires_grad_(True)
    (ghat_all,) = torch.autograd.grad(head(zg), zg)
    Eg = torch.zeros_like(z)
    Eg[:, j] = ghat_all[:, j]
    quad_H_G, quad_H_ghat = quad_form(head, z, [E, Eg])

    y_hat, _, sigma = normalize(y[:, j], eps)
    G, ghat = E[:, j], ghat_all[:, j]
    return Thm42(
        m=m,
        gamma=float(gamma[j]),
        sigma=float(sigma[0]),
        ghat_dot_yhat=float((ghat * y_hat[:, 0]).sum()),
        G_sq=float((G**2).sum()),
        ghat_sq=float((ghat**2).sum()),
        quad_bn=quad_bn,
        quad_H_G=quad_H_G,
        quad_H_ghat=quad_H_ghat,
    )


def hessian_block(head: Callable[[Tensor], Tensor], z: Tensor, j: int) -> Tensor:
    """H_jj = ∂²head/∂z_j∂z_j, the (m, m) Hessian of the loss with respect to column j of z."""
    z = z.detach()

    def f(col: Tensor) -> Tensor:
        zz = torch.cat([z[:, :j], col.unsqueeze(1), z[:, j + 1 :]], dim=1)
        return head(zz)

    return torch.autograd.functional.hessian(f, z[:, j].clone())


def hessian_block_matvec(head: Callable[[Tensor], Tensor], z: Tensor, j: int) -> Callable[[Tensor], Tensor]:
    """v ↦ H_jj v for the (m, m) Hessian block of `head` at z with respect to column j, by double
    backward, without forming H_jj (one graph, reused for every product)."""
    z = z.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(head(z), z, create_graph=True)

    def matvec(v: Tensor) -> Tensor:
        d = torch.zeros_like(z)
        d[:, j] = v
        (hv,) = torch.autograd.grad((grad * d).sum(), z, retain_graph=True)
        return hv[:, j].detach()

    return matvec


def mlp_head(
    weights: Sequence[Tensor],
    labels: Tensor,
    act: str = "relu",
    bn: bool = False,
    eps: float = 0.0,
) -> Callable[[Tensor], Tensor]:
    """z ↦ cross-entropy of an MLP that starts at a BN output z (m, n).

    h = act(z); for every W in weights[:-1]: h = act(BN(h Wᵀ)) if `bn` else act(h Wᵀ) (γ = 1, β = 0);
    logits = h W_lastᵀ. With act = "relu" and bn = False the head is piecewise linear followed by a
    convex loss, so its Hessian in z is positive semidefinite (Theorem 4.2's condition H ⪰ 0).
    """
    acts: dict[str, Callable[[Tensor], Tensor]] = {"relu": torch.relu, "tanh": torch.tanh, "linear": lambda t: t}
    if act not in acts:
        raise ValueError(f"act must be one of {sorted(acts)}, got {act!r}")
    phi = acts[act]

    def head(z: Tensor) -> Tensor:
        h = phi(z)
        for W in weights[:-1]:
            a = h @ W.T
            if bn:
                ones = torch.ones(W.shape[0], dtype=a.dtype)
                a = batch_norm_forward(a, ones, torch.zeros_like(ones), eps)
            h = phi(a)
        return F.cross_entropy(h @ weights[-1].T, labels)

    return head


# chapter 5's checks of Theorem 4.2 on small networks (§5.4)


def small_bn_net(seed: int, m: int = 32, units: int = 8, hidden: int = 16, act: str = "relu",
                 bn_head: bool = False) -> tuple[Tensor, Callable[[Tensor], Tensor], Tensor, Tensor]:
    """A random BN layer and the network after it, in float64, from one generator seeded by `seed`: (y, head, γ, β).

    y = X W₁ᵀ (m × `units`), X Gaussian with 10 features and each unit's weights scaled by 10^U(−1, 1); head =
    `mlp_head` with `hidden` units, 5 classes and random labels, `act` and `bn_head` as there; γ = 10^U(−1, 1),
    β = 0.5·N(0, 1). With both scales log-uniform, γ/σ ranges over about four orders of magnitude, so the forms
    of Theorem 4.2 that differ by the factor γ²/σ² are told apart.
    """
    dtype = torch.float64
    gg = torch.Generator().manual_seed(seed)
    d, k = 10, 5
    X = torch.randn(m, d, generator=gg, dtype=dtype)
    W1 = torch.randn(units, d, generator=gg, dtype=dtype) * 10 ** (2 * torch.rand(units, 1, generator=gg, dtype=dtype) - 1)
    W2 = torch.randn(hidden, units, generator=gg, dtype=dtype) / math.sqrt(units)
    W3 = torch.randn(k, hidden, generator=gg, dtype=dtype) / math.sqrt(hidden)
    labels = torch.randint(k, (m,), generator=gg)
    gamma = 10 ** (2 * torch.rand(units, generator=gg, dtype=dtype) - 1)
    beta = 0.5 * torch.randn(units, generator=gg, dtype=dtype)
    return X @ W1.T, mlp_head([W2, W3], labels, act=act, bn=bn_head), gamma, beta


def thm42_small_nets(families: dict[str, dict], seeds: Sequence[int], m: int = 32, units: int = 8,
                     hidden: int = 16) -> tuple[dict[str, list[Thm42]], dict[str, list[float]]]:
    """Theorem 4.2 (ε = 0) on every unit of `small_bn_net(seed, m, units, hidden, **families[name])`, every seed.

    Returns two dicts keyed by family: the `Thm42` of every unit (seeds, then units, in order), and per network
    the smallest eigenvalue of its first unit's Hessian block H_jj over its largest |eigenvalue|. That is ≥ 0
    up to rounding where the head is piecewise linear with a convex loss (H ⪰ 0, the theorem's first
    condition), and negative where the head has a smooth nonlinearity or a BN layer of its own.
    """
    terms: dict[str, list[Thm42]] = {}
    mineig: dict[str, list[float]] = {}
    for name, kw in families.items():
        terms[name], mineig[name] = [], []
        for seed in seeds:
            y, head, gamma, beta = small_bn_net(seed, m, units, hidden, **kw)
            terms[name] += [thm42_terms(head, y, j, gamma, beta) for j in range(units)]
            ev = torch.linalg.eigvalsh(hessian_block(head, batch_norm_forward(y, gamma, beta, 0.0), 0))
            mineig[name].append(float(ev.min() / ev.abs().max()))
    return terms, mineig


def thm42_summary(terms: Sequence[Thm42], mineig: Sequence[float]) -> dict[str, float]:
    """One family of `thm42_small_nets` in numbers, over its units with a gradient (a unit whose ReLU is dead
    on the whole batch carries none and is left out). Errors are relative to `Thm42.size`.

    `n`, those units; `err`, the derived identity's largest error (1/(mγ) inside the bracket); `var_err`, the
    γ/(mσ²) transcription's median error; `cond_pos`, the share with ⟨ĝ, ŷ⟩ > 0 (the second condition); `psd`,
    the share of networks whose H_jj has no eigenvalue below −1e-12 of its largest, and `mineig` the smallest
    such ratio; `second`, the share where the second form (with ĝᵀHĝ) holds, and of those with γ < σ
    (`second_small`) and γ > σ (`second_large`); among the units with ⟨ĝ, ŷ⟩ > 0: `reduced`, the share whose
    curvature along G is below γ²/σ² GᵀHG (the conclusion), `var_ineq`, the share where the transcription holds
    as the inequality it states (to 1e-12), and `var_fail_small`, how many of its failures have γ < σ.
    """
    rs = [r for r in terms if r.G_sq > 0]
    s = np.array([r.size for r in rs])
    return dict(
        n=len(rs),
        err=float(np.max(np.array([abs(r.quad_bn - r.rhs) for r in rs]) / s)),
        var_err=float(np.median(np.array([abs(r.quad_bn - r.rhs_variant) for r in rs]) / s)),
        cond_pos=float(np.mean([r.ghat_dot_yhat > 0 for r in rs])),
        psd=float(np.mean([e > -1e-12 for e in mineig])),
        mineig=float(min(mineig)),
        second=float(np.mean([r.quad_bn <= r.rhs_second for r in rs])),
        second_small=float(np.mean([r.quad_bn <= r.rhs_second for r in rs if r.gamma < r.sigma])),
        second_large=float(np.mean([r.quad_bn <= r.rhs_second for r in rs if r.gamma > r.sigma])),
        reduced=float(np.mean([r.quad_bn < r.scale * r.quad_H_G for r in rs if r.ghat_dot_yhat > 0])),
        var_ineq=float(np.mean([r.quad_bn <= r.rhs_variant + 1e-12 * r.size for r in rs if r.ghat_dot_yhat > 0])),
        var_fail_small=sum(r.quad_bn > r.rhs_variant + 1e-12 * r.size for r in rs if r.ghat_dot_yhat > 0 and r.gamma < r.sigma),
    )


def thm42_eps_error(epss: Sequence[float], seeds: Sequence[int], m: int = 32, units: int = 8,
                    hidden: int = 16) -> np.ndarray:
    """How inexact Theorem 4.2's identity becomes with ε > 0, on the ReLU-head `small_bn_net` of each seed.

    One row per unit with a gradient, for each ε: (ε, |GᵀĤG − RHS|/`Thm42.size`, 1 − ρ_j), ρ_j = ‖ŷ_j‖²/m =
    Var/(Var + ε). With ε > 0, G is no longer orthogonal to ŷ_j, and the error is of the order of 1 − ρ_j.
    """
    rows = []
    for eps in epss:
        for seed in seeds:
            y, head, gamma, beta = small_bn_net(seed, m, units, hidden)
            rho = normalize(y, eps)[0].pow(2).mean(0)
            for j in range(units):
                r = thm42_terms(head, y, j, gamma, beta, eps)
                if r.G_sq > 0:
                    rows.append((eps, abs(r.quad_bn - r.rhs) / r.size, 1 - float(rho[j])))
    return np.array(rows)


# ---------------------------------------------------------------------------------------------------
# Observation 4.3
# ---------------------------------------------------------------------------------------------------


def bn_params_reproducing(y: Tensor, eps: float = 0.0, bias: Tensor | float = 0.0) -> tuple[Tensor, Tensor]:
    """γ = √(Var_B[y] + ε), β = μ_B + bias: then γ ŷ + β = y + bias exactly (Observation 4.3).

    `y` (m, n) is the BN input of the BN network (Wx, no bias); `bias` is the standard network's bias b,
    so BN reproduces the standard layer's output Wx + b. (The paper writes γ = σ, β = μ.)
    """
    y = _as_cols(y)
    _, mu, sigma = normalize(y, eps)
    return sigma, mu + torch.as_tensor(bias, dtype=y.dtype)


@torch.no_grad()
def bn_from_standard(standard: nn.Module, bn_model: nn.Module, x: Tensor) -> nn.Module:
    """Observation 4.3 on a real network: a copy of `bn_model` (a BN network of the same architecture)
    that computes exactly what the trained `standard` network computes.

    Every layer's weights are copied; at each BN layer γ = √(Var + ε) and β = μ + b, where μ, Var are
    the batch statistics of that layer's pre-activation W·(input) on the batch x and b the standard
    layer's bias. The running statistics are set to the same μ and Var, so the copy agrees with the
    standard network in training mode on x and in eval mode on every input. Works in the models'
    dtype (use float64 copies for bit-level comparisons).
    """
    out = copy.deepcopy(bn_model)
    sb, bb = standard.blocks, out.blocks
    if len(sb) != len(bb):
        raise ValueError("the two models must have the same blocks")
    h = x
    for s, b in zip(sb, bb):
        if not isinstance(b.norm, BatchNorm):
            raise TypeError(f"bn_model blocks must hold bnbook.norms.BatchNorm, found {type(b.norm).__name__}")
        b.layer.weight.copy_(s.layer.weight)
        pre = F.conv2d(h, s.layer.weight, None, padding=s.layer.padding) if isinstance(s.layer, nn.Conv2d) \
            else F.linear(h, s.layer.weight)
        cols = channels_as_columns(pre)
        bias = s.layer.bias if s.layer.bias is not None else torch.zeros(cols.shape[1], dtype=cols.dtype)
        gamma, beta = bn_params_reproducing(cols, b.norm.eps, bias)
        b.norm.weight.copy_(gamma)
        b.norm.bias.copy_(beta)
        b.norm.running_mean.copy_(cols.mean(0))
        b.norm.running_var.copy_(cols.var(0, unbiased=False))
        h = s(h)
    out.head.load_state_dict(standard.head.state_dict())
    return out


# ---------------------------------------------------------------------------------------------------
# Theorem 4.4
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Thm44:
    """Theorem 4.4 for one unit: y = X w, X (m × d) with ‖X‖₂ ≤ λ, upstream gradient g at the BN output.

    lhs = ‖∇_w L̂‖² = ‖Xᵀ ∇_y L̂‖²; standard = λ²‖g‖² (= max over ‖X‖₂ ≤ λ of ‖Xᵀ g‖², the paper's g_j
    for a fixed g). `bound` is the consistent form
    γ²λ²/σ² · (‖g‖² − m μ_g² − ⟨g, ŷ⟩²/m),  μ_g = mean of g.
    """

    m: int
    lam: float
    lhs: float
    standard: float
    scale: float  # γ²/σ²
    g_sq: float
    mean_term: float  # m μ_g² = ⟨1, g⟩²/m
    yhat_dot_sq: float  # ⟨g, ŷ⟩²

    @property
    def bound(self) -> float:
        return self.scale * self.lam**2 * (self.g_sq - self.mean_term - self.yhat_dot_sq / self.m)

    @property
    def bound_sqrt_m(self) -> float:
        """The same with the main text's 1/√m on the last term."""
        return self.scale * self.lam**2 * (self.g_sq - self.mean_term - self.yhat_dot_sq / math.sqrt(self.m))

    @property
    def bound_unscaled_removed(self) -> float:
        """A form that puts λ² only on ‖g‖² (i.e. γ²/σ² · (g_j − mμ_g² − ⟨g, ŷ⟩²/m) with g_j = λ²‖g‖²)."""
        return self.scale * (self.lam**2 * self.g_sq - self.mean_term - self.yhat_dot_sq / self.m)


def thm44_sides(X: Tensor, w: Tensor, g: Tensor, gamma: float, eps: float = 0.0, lam: float | None = None) -> Thm44:
    """Both sides of Theorem 4.4 for y = X w. ∇_w L̂ by autograd of ⟨g, BN(Xw)⟩; λ = ‖X‖₂ unless given."""
    m = X.shape[0]
    w = w.detach().clone().requires_grad_(True)
    gam = torch.tensor([gamma], dtype=X.dtype)
    z = batch_norm_forward((X @ w).unsqueeze(1), gam, torch.zeros_like(gam), eps)[:, 0]
    (grad_w,) = torch.autograd.grad((z * g).sum(), w)
    lam_v = float(torch.linalg.matrix_norm(X, ord=2)) if lam is None else lam
    y_hat, _, sigma = normalize((X @ w.detach()), eps)
    return Thm44(
        m=m,
        lam=lam_v,
        lhs=float((grad_w**2).sum()),
        standard=lam_v**2 * float((g**2).sum()),
        scale=gamma**2 / float(sigma[0]) ** 2,
        g_sq=float((g**2).sum()),
        mean_term=float(g.sum()) ** 2 / m,
        yhat_dot_sq=float((y_hat[:, 0] * g).sum()) ** 2,
    )


def worst_case_inputs(
    y: Tensor, w: Tensor, g: Tensor, gamma: float, lam: float, eps: float = 0.0
) -> tuple[Tensor, Tensor]:
    """An input matrix X with ‖X‖₂ = λ and X w' = y that attains Theorem 4.4's bound with equality (ε = 0).

    G = ∇_y L̂ is orthogonal to 1 and to y − μ (Fact C.1). Take a unit v ⊥ w and
    X = λ (G/‖G‖) vᵀ + y wᵀ/‖w‖²: then X w = y, Xᵀ G = λ‖G‖ v, and the two rank-one parts have
    orthogonal column and row spaces, so ‖X‖₂ = max(λ, ‖y‖/‖w‖). w is rescaled (BN does not see its
    scale) so that ‖y‖/‖w‖ ≤ λ. Returns (X, w').
    """
    y, g = y.reshape(-1), g.reshape(-1)
    d = w.shape[0]
    if d < 2:
        raise ValueError("need d >= 2 to find v ⊥ w")
    w = w * max(1.0, float(y.norm() / (lam * w.norm())) * 1.01)
    G = bn_input_grad(g, y, gamma, eps)[:, 0]
    v = torch.zeros(d, dtype=w.dtype)
    v[int(torch.argmin(w.abs()))] = 1.0
    v = v - (v @ w) / (w @ w) * w
    v = v / v.norm()
    X = lam * torch.outer(G / G.norm(), v) + torch.outer(y, w) / (w @ w)
    return X, w


# chapter 5's checks of Theorem 4.4 (§5.6)


def thm44_random_inputs(m: int, d: int, lam: float, gamma: float, n: int = 500, seed: int = 44) -> np.ndarray:
    """Theorem 4.4 on `n` random inputs (ε = 0, float64, one generator seeded by `seed`): LHS/bound for each.

    X (m × d) is Gaussian rescaled to ‖X‖₂ = λ, w Gaussian, g Gaussian with a random mean. The bound holds if
    every ratio is ≤ 1; how far below 1 they stay shows how loose the worst-case bound is on typical inputs.
    """
    dtype = torch.float64
    gg = torch.Generator().manual_seed(seed)
    ratios = []
    for _ in range(n):
        X = torch.randn(m, d, generator=gg, dtype=dtype)
        X = X / torch.linalg.matrix_norm(X, ord=2) * lam
        w = torch.randn(d, generator=gg, dtype=dtype)
        g = torch.randn(m, generator=gg, dtype=dtype) + torch.randn(1, generator=gg, dtype=dtype)
        r = thm44_sides(X, w, g, gamma)
        ratios.append(r.lhs / r.bound)
    return np.array(ratios)


def thm44_worst_cases(m: int, d: int, lam: float, gamma: float, seeds: Sequence[int]) -> np.ndarray:
    """Theorem 4.4 at its worst case (`worst_case_inputs`, ε = 0, float64), one row per seed: (‖X‖₂, LHS/bound,
    bound with 1/√m on the last term / LHS, bound with λ² on ‖g‖² only / LHS).

    y = 3·N(0, I) + 1, a Gaussian w, and an upstream gradient mostly along ŷ (`aligned_upstream`, noise 1) plus
    0.5 times a random mean, all from one generator per seed. There the consistent form is attained (ratio 1)
    with ‖X‖₂ = λ, and a bound/LHS below 1 means that form of the theorem is violated.
    """
    dtype = torch.float64
    worst = []
    for seed in seeds:
        gg = torch.Generator().manual_seed(seed)
        y = torch.randn(m, generator=gg, dtype=dtype) * 3 + 1
        w = torch.randn(d, generator=gg, dtype=dtype)
        g = aligned_upstream(y, noise=1.0, generator=gg)[:, 0] + 0.5 * torch.randn(1, generator=gg, dtype=dtype)
        X, w2 = worst_case_inputs(y, w, g, gamma, lam)
        r = thm44_sides(X, w2, g, gamma)
        worst.append((r.lam, r.lhs / r.bound, r.bound_sqrt_m / r.lhs, r.bound_unscaled_removed / r.lhs))
    return np.array(worst)


# ---------------------------------------------------------------------------------------------------
# Lemma 4.5
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RayDistance:
    """Distances from an initialization W₀ to a minimum W* and to the ray {k W*, k > 0} (Lemma 4.5)."""

    k: float  # the closest point of the ray is k W*, k = ⟨W₀, W*⟩/‖W*‖²
    dist2_point: float  # ‖W₀ − W*‖²
    dist2_ray: float  # ‖W₀ − k W*‖²
    gain: float  # (‖W*‖² − ⟨W*, W₀⟩)²/‖W*‖²
    cos: float  # cos∠(W₀, W*)

    @property
    def bound(self) -> float:
        """Lemma 4.5's right side ‖W₀ − W*‖² − (‖W*‖² − ⟨W*, W₀⟩)²/‖W*‖²."""
        return self.dist2_point - self.gain


def ray_distance(W0: Tensor, Wstar: Tensor) -> RayDistance:
    """Project W₀ on the ray through W* (any shapes; flattened, float64). Requires ⟨W₀, W*⟩ > 0."""
    a, b = W0.reshape(-1).double(), Wstar.reshape(-1).double()
    ip, nb = float(a @ b), float(b @ b)
    if ip <= 0:
        raise ValueError(f"Lemma 4.5 needs ⟨W0, W*⟩ > 0, got {ip:.3g}")
    k = ip / nb
    return RayDistance(
        k=k,
        dist2_point=float(((a - b) ** 2).sum()),
        dist2_ray=float(((a - k * b) ** 2).sum()),
        gain=(nb - ip) ** 2 / nb,
        cos=ip / math.sqrt(nb * float(a @ a)),
    )


def least_squares(X: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    """The minimum (w*, b*) of the standard loss ‖X w + b − t‖²/m (linear regression with a bias)."""
    A = torch.cat([X, torch.ones(X.shape[0], 1, dtype=X.dtype)], dim=1)
    sol = torch.linalg.lstsq(A, t.unsqueeze(1)).solution[:, 0]
    return sol[:-1], sol[-1]


def regression_loss(w: Tensor, b: Tensor | float, X: Tensor, t: Tensor) -> Tensor:
    """The standard network: L(w, b) = mean (X w + b − t)²."""
    return ((X @ w + b - t) ** 2).mean()


def bn_regression_loss(w: Tensor, gamma: Tensor | float, beta: Tensor | float, X: Tensor, t: Tensor, eps: float = 0.0) -> Tensor:
    """The BN network: L̂(w, γ, β) = mean (γ ŷ + β − t)², ŷ = BN(X w) with batch statistics."""
    y_hat, _, _ = normalize(X @ w, eps)
    return ((gamma * y_hat[:, 0] + beta - t) ** 2).mean()


# chapter 5's checks of Lemma 4.5 on least squares (§5.7)


@dataclass(frozen=True)
class RayOfMinima:
    """Lemma 4.5 on linear regression (`ray_of_minima`): the data, the standard network's minimum, the BN
    parameters that reproduce it (Observation 4.3), and the BN network's loss along the ray {k w*}."""

    X: Tensor  # (m, d) inputs
    t: Tensor  # (m,) targets
    w_star: Tensor  # the least-squares minimum (w*, b*)
    b_star: Tensor
    L_star: float  # L(w*, b*)
    gamma_star: Tensor  # γ = σ(X w*), β = μ(X w*) + b*: the BN network then computes X w* + b*
    beta_star: Tensor
    ks: np.ndarray  # the points k w* of the ray
    along: dict[float, np.ndarray]  # per ε: L̂(k w*, γ, β) − L* at every k
    grad_norm: list[float]  # ‖(k·∇_w L̂, ∇_γ L̂, ∇_β L̂)‖ at every k w*, ε = 0 (k·∇_w does not depend on k)


def ray_of_minima(ks: np.ndarray, epss: Sequence[float] = (0.0, 1e-5), m: int = 256, d: int = 8,
                  seed: int = 45) -> RayOfMinima:
    """Linear regression t = X v + 1 + 0.5·noise (m × d, float64, one generator seeded by `seed`), its exact
    minimum, and the BN network's loss along the ray {k w*: k in `ks`} for each ε in `epss`, with its
    gradient at ε = 0.

    With ε = 0, BN is scale invariant: along the whole ray the loss stays at L* and the gradient vanishes
    (Lemma 4.5's ray of minima). With ε > 0 the invariance breaks where k²σ*² is not ≫ ε.
    """
    dtype = torch.float64
    gg = torch.Generator().manual_seed(seed)
    X = torch.randn(m, d, generator=gg, dtype=dtype)
    t = X @ torch.randn(d, generator=gg, dtype=dtype) + 1.0 + 0.5 * torch.randn(m, generator=gg, dtype=dtype)
    w_star, b_star = least_squares(X, t)
    L_star = float(regression_loss(w_star, b_star, X, t))
    gamma_star, beta_star = bn_params_reproducing((X @ w_star).unsqueeze(1), 0.0, b_star)
    along: dict[float, list[float]] = {eps: [] for eps in epss}
    grad_norm = []
    for k in ks:
        for eps in along:
            along[eps].append(float(bn_regression_loss(k * w_star, gamma_star, beta_star, X, t, eps)) - L_star)
        p = [(k * w_star).requires_grad_(True), gamma_star.clone().requires_grad_(True),
             beta_star.clone().requires_grad_(True)]
        grads = torch.autograd.grad(bn_regression_loss(p[0], p[1], p[2], X, t), p)
        grad_norm.append(float(torch.cat([q.reshape(-1) * k ** (i == 0) for i, q in enumerate(grads)]).norm()))
    return RayOfMinima(X=X, t=t, w_star=w_star, b_star=b_star, L_star=L_star, gamma_star=gamma_star,
                       beta_star=beta_star, ks=ks, along={e: np.array(v) for e, v in along.items()},
                       grad_norm=grad_norm)


def ray_distance_grid(W0: Tensor, Wstar: Tensor, k_max: float, n: int = 30001, k_min: float = 1e-3) -> float:
    """min over `n` evenly spaced k in [k_min, k_max] of ‖W₀ − k W*‖² (W₀, W* vectors): a brute-force check of
    `ray_distance`, which projects instead."""
    kk = torch.linspace(k_min, k_max, n, dtype=W0.dtype)
    return float(((W0[None] - kk[:, None] * Wstar[None]) ** 2).sum(1).min())


# ---------------------------------------------------------------------------------------------------
# Real networks
# ---------------------------------------------------------------------------------------------------


@dataclass
class LayerRecord:
    """One BN layer on one batch: the block's input x, the BN input y = W x (N, C[, H, W]), the upstream
    gradient g = ∂L̂/∂z at the BN output, the network's own ∂L̂/∂y and ∂L̂/∂W, and the layer's W, γ, ε."""

    index: int  # the block's number i ("layer #i", 1-based)
    x: Tensor
    y: Tensor
    g: Tensor
    grad_y: Tensor
    weight: Tensor
    grad_weight: Tensor
    gamma: Tensor
    eps: float

    def columns(self) -> tuple[Tensor, Tensor, Tensor]:
        """(y, g, ∂L̂/∂y) as (m, C) columns, m = N·H·W."""
        return channels_as_columns(self.y), channels_as_columns(self.g), channels_as_columns(self.grad_y)

    def input_matrix(self) -> Tensor:
        """The layer's input as an (m, d) matrix X with y_j = X w_j, w_j = W[j] flattened.

        Linear layer: X = x. 3×3 convolution (padding 1): X is the patch matrix (m = N·H·W rows,
        d = C_in·9 columns), rows in the order of `channels_as_columns`.
        """
        if self.x.dim() == 2:
            return self.x
        kh, kw = self.weight.shape[2:]
        patches = F.unfold(self.x, (kh, kw), padding=(kh // 2, kw // 2))  # (N, C_in·kh·kw, H·W)
        return patches.permute(0, 2, 1).reshape(-1, patches.shape[1])


def record_bn_layers(
    model: nn.Module,
    x: Tensor,
    labels: Tensor,
    dtype: torch.dtype = torch.float64,
    eps: float | None = None,
) -> list[LayerRecord]:
    """Run a copy of `model` in training mode (batch statistics) in `dtype` on (x, labels) with the
    cross-entropy loss, and record every block whose norm is a `bnbook.norms.BatchNorm`.

    `eps`, if given, replaces every BN layer's ε in the copy. The model itself is not touched.
    """
    net = copy.deepcopy(model).to(dtype).train()
    for p in net.parameters():
        p.grad = None
    records: list[dict] = []
    hooks = []
    for i, block in enumerate(net.blocks, start=1):
        norm = block.norm
        if not isinstance(norm, BatchNorm):
            continue
        if eps is not None:
            norm.eps = eps
        rec: dict = {"index": i, "gamma": norm.weight.detach().clone(), "eps": norm.eps, "block": block}
        records.append(rec)

        def layer_in(mod: nn.Module, inp: tuple[Tensor, ...], rec: dict = rec) -> None:
            rec["x"] = inp[0].detach()

        def norm_fwd(mod: nn.Module, inp: tuple[Tensor, ...], out: Tensor, rec: dict = rec) -> None:
            rec["y"] = inp[0].detach()
            inp[0].register_hook(lambda gr, rec=rec: rec.__setitem__("grad_y", gr.detach()))
            out.register_hook(lambda gr, rec=rec: rec.__setitem__("g", gr.detach()))

        hooks.append(block.layer.register_forward_pre_hook(layer_in))
        hooks.append(norm.register_forward_hook(norm_fwd))
    if not records:
        raise ValueError("the model has no bnbook.norms.BatchNorm layers")
    try:
        loss = F.cross_entropy(net(x.to(dtype)), labels)
        loss.backward()
    finally:
        for h in hooks:
            h.remove()
    return [
        LayerRecord(
            index=r["index"], x=r["x"], y=r["y"], g=r["g"], grad_y=r["grad_y"],
            weight=r["block"].layer.weight.detach().clone(), grad_weight=r["block"].layer.weight.grad.detach().clone(),
            gamma=r["gamma"], eps=r["eps"],
        )
        for r in records
    ]


def network_head(
    model: nn.Module, index: int, x: Tensor, labels: Tensor, dtype: torch.dtype = torch.float64, eps: float | None = None
) -> tuple[Tensor, Callable[[Tensor], Tensor], Tensor, Tensor, float]:
    """Theorem 4.2 on a real network: split a copy of `model` (training mode, `dtype`) at the BN of
    block #`index`.

    Returns (y, head, γ, β, ε): y is the BN input on batch x as (m, C) columns, and head maps BN-output
    columns z (m, C) to the cross-entropy of the rest of the network (that block's nonlinearity and
    pooling, all later blocks with their own batch statistics, the classifier). `eps`, if given,
    replaces ε of this block's BN only.
    """
    net = copy.deepcopy(model).to(dtype).train()
    for p in net.parameters():
        p.requires_grad_(False)
    blocks = list(net.blocks)
    block = blocks[index - 1]
    if not isinstance(block.norm, BatchNorm):
        raise ValueError(f"block #{index} has no bnbook.norms.BatchNorm")
    h = x.to(dtype)
    with torch.no_grad():
        if getattr(net, "flatten", False):
            h = h.flatten(1)
        for b in blocks[: index - 1]:
            h = b(h)
        y = block.layer(h)
    shape = y.shape
    norm = block.norm

    def head(z: Tensor) -> Tensor:
        if len(shape) == 4:
            n, c, hh, ww = shape
            zz = z.reshape(n, hh, ww, c).permute(0, 3, 1, 2)
        else:
            zz = z
        out = block.pool(block.act(zz))
        for b in blocks[index:]:
            out = b(out)
        return F.cross_entropy(net.head(out.flatten(1) if out.dim() > 2 else out), labels)

    return (
        channels_as_columns(y),
        head,
        norm.weight.detach().clone(),
        norm.bias.detach().clone(),
        norm.eps if eps is None else eps,
    )


# ---------------------------------------------------------------------------------------------------
# The results on a trained network: what `bnbook.claims` decides over an ensemble of seeds
# ---------------------------------------------------------------------------------------------------


def thm41_on_network(model: nn.Module, x: Tensor, labels: Tensor) -> dict[str, list[float]]:
    """Theorem 4.1's factors in every BN layer of a trained network, on one batch (float64, training mode, the
    layers' own ε), as medians over each layer's channels, one entry per BN layer in order:

    `shrink` = ‖∂L̂/∂y_j‖²/‖g‖² (the network's own backward pass: what BN does to the gradient), `scale` =
    γ_j²/σ_j² (the theorem's factor), `removed` = the share of ‖g‖² along 1 plus the share along ŷ_j, and `pos`,
    the share of channels with ⟨g, ŷ_j⟩ = ∂L̂/∂γ_j > 0 (one of Theorem 4.2's conditions); `batch`: len(x).
    """
    out: dict = {"batch": len(x), "layer": [], "shrink": [], "scale": [], "removed": [], "pos": []}
    for rec in record_bn_layers(model, x, labels):
        y, g, gy = rec.columns()
        r = thm41_sides(g, y, rec.gamma, rec.eps, grad_y=gy)
        out["layer"].append(rec.index)
        out["shrink"].append(float((r.lhs / r.g_sq).median()))
        out["scale"].append(float(r.scale.median()))
        out["removed"].append(float((r.mean_term / r.g_sq).median() + (r.yhat_term / r.g_sq).median()))
        out["pos"].append(float(((normalize(y, rec.eps)[0] * g).sum(0) > 0).double().mean()))
    return out


def thm41_on_layers(recs: Sequence[LayerRecord], recs0: Sequence[LayerRecord]) -> list[dict]:
    """Fact C.1 and Theorem 4.1 on every recorded BN layer of one network, one dict per layer (chapter 5, §5.3):
    `recs` and `recs0` are `record_bn_layers` on the same batch, with the layers' ε and with ε = 0. The left
    side is the network's own ∂L̂/∂y.

    `layer`, `m` (rows per channel), `C` (channels); `fact_err`, Fact C.1 against the network's gradient
    (relative to its largest entry); `scale_med`, `scale_min`, `scale_max`, γ²/σ² over the channels; `f_one`,
    `f_yhat`, the median shares of ‖g‖² along 1 and along ŷ (what BN removes); `shrink`, the median
    ‖∂L̂/∂y‖²/‖g‖²; `eq0`, the 1/m form's largest error at ε = 0 (relative to γ²‖g‖²/σ²); `ineq_ok`, LHS ≤ RHS
    (1/m, to 1e-12) with the layers' ε; `rel_slack`, its largest slack relative to the right side; `rand_ok`,
    the same for a Gaussian upstream gradient (seeded by the layer's number); `viol`, `neg`, the shares of
    channels where the 1/√m form is violated and where its right side is negative; `excess`, the median
    LHS/RHS(1/√m) − 1 where that side is positive; `viol_rand`, the 1/√m violations with the random gradient;
    `gy_pos`, the share with ⟨g, ŷ⟩ > 0 (Theorem 4.2's condition); `r`, the `Thm41` with the layers' ε.
    """
    table = []
    for rec, rec0 in zip(recs, recs0):
        y, g, gy = rec.columns()
        m, C = y.shape
        fact_err = float((gy - bn_input_grad(g, y, rec.gamma, rec.eps)).abs().max() / gy.abs().max())
        r = thm41_sides(g, y, rec.gamma, rec.eps, grad_y=gy)  # LHS = the network's own gradient
        y0, g0, gy0 = rec0.columns()
        r0 = thm41_sides(g0, y0, rec0.gamma, 0.0, grad_y=gy0)
        g_rand = torch.randn(g.shape, generator=torch.Generator().manual_seed(rec.index), dtype=g.dtype)
        rr = thm41_sides(g_rand, y, rec.gamma, rec.eps)  # random upstream gradient
        table.append(dict(
            layer=rec.index, m=m, C=C, fact_err=fact_err,
            scale_med=float(r.scale.median()), scale_min=float(r.scale.min()), scale_max=float(r.scale.max()),
            f_one=float((r.mean_term / r.g_sq).median()), f_yhat=float((r.yhat_term / r.g_sq).median()),
            shrink=float((r.lhs / r.g_sq).median()),
            eq0=float(((r0.lhs - r0.rhs_m).abs() / (r0.scale * r0.g_sq)).max()),
            ineq_ok=bool((r.lhs <= r.rhs_m + 1e-12 * r.scale * r.g_sq).all()),
            rel_slack=float(((r.rhs_m - r.lhs) / r.rhs_m).max()),
            rand_ok=bool((rr.lhs <= rr.rhs_m + 1e-12 * rr.scale * rr.g_sq).all()),
            viol=float((r.lhs > r.rhs_sqrt_m).double().mean()), neg=float((r.rhs_sqrt_m < 0).double().mean()),
            excess=float((r.lhs / r.rhs_sqrt_m)[r.rhs_sqrt_m > 0].median() - 1),
            viol_rand=float((rr.lhs > rr.rhs_sqrt_m).double().mean()),
            gy_pos=float(((normalize(y, rec.eps)[0] * g).sum(0) > 0).double().mean()),
            r=r,
        ))
    return table


def thm42_on_network(model: nn.Module, x: Tensor, labels: Tensor, layers: Sequence[int] = (7, 8), channels: int = 16,
                     spectra: int = 2, lanczos_steps: int = 30) -> dict[int, dict[str, float]]:
    """Theorem 4.2 at the BN layers `layers` of a trained network, on one batch (float64, training mode), with
    ε = 0 at the probed layer so that the identity is exact, for its first `channels` channels.

    Per layer: `err`, the identity's largest error relative to `Thm42.size`; `var_err`, the γ/(mσ²) transcription's
    median error; `pos`, the share of channels with ⟨ĝ, ŷ⟩ > 0 (the theorem's second condition); `reduced`, the share
    whose curvature along the gradient is below γ²/σ² GᵀHG (the theorem's conclusion); `gs`, the median γ/σ;
    and, from `lanczos_steps` Lanczos steps on the (m, m) Hessian block H_jj of each of the first `spectra` channels,
    `low` = the smallest Ritz value over the largest and `cert` = vᵀHv/λ_max for the lowest Ritz vector v,
    recomputed directly (negative: a certificate that H is not ⪰ 0, the theorem's first condition); `m`, the
    rows per channel; `channels`; `batch`, len(x).
    """
    out = {}
    for layer in layers:
        y, head, gamma, beta, eps = network_head(model, layer, x, labels, eps=0.0)
        rs = [thm42_terms(head, y, j, gamma, beta, eps) for j in range(channels)]
        z = batch_norm_forward(y, gamma, beta, eps)
        found = []
        for j in range(spectra):
            gen = torch.Generator().manual_seed(j)
            vals, vecs = lanczos(hessian_block_matvec(head, z, j), z.shape[0], lanczos_steps, gen)
            d = torch.zeros_like(z)
            d[:, j] = vecs[:, 0]
            (certificate,) = quad_form(head, z, [d])  # v'Hv for the lowest Ritz vector, recomputed directly
            found.append((float(vals[0]), float(vals[-1]), certificate))
        out[layer] = dict(
            err=max(abs(r.quad_bn - r.rhs) / r.size for r in rs),
            var_err=statistics.median(abs(r.quad_bn - r.rhs_variant) / r.size for r in rs),
            pos=sum(r.ghat_dot_yhat > 0 for r in rs) / len(rs),
            reduced=sum(r.quad_bn < r.scale * r.quad_H_G for r in rs) / len(rs),
            gs=statistics.median(r.gamma / r.sigma for r in rs),
            low=min(lo / hi for lo, hi, _ in found),
            cert=min(c / hi for _, hi, c in found),
            m=y.shape[0],
            channels=channels,
            batch=len(x),
        )
    return out


@dataclass(frozen=True)
class Thm44Layer:
    """Theorem 4.4 in one recorded BN layer (`thm44_on_layers`): the network's own weight gradient against the bound."""

    index: int  # the layer's number
    m: int  # rows of its input matrix X (N·H·W for a convolution)
    d: int  # its columns (C_in·9 for a 3×3 convolution)
    lam: float  # λ = ‖X‖₂
    ratio_median: float  # ‖∂L̂/∂w_j‖²/bound, the median over the channels j
    ratio_max: float  # and the largest: the bound holds if it is ≤ 1


def thm44_on_layers(recs: Sequence[LayerRecord]) -> list[Thm44Layer]:
    """Theorem 4.4 on every recorded BN layer of one network (`record_bn_layers`, the layers' own ε; chapter 5, §5.6).

    X is the layer's input matrix (`LayerRecord.input_matrix`: a convolution's patch matrix), λ = ‖X‖₂, the
    left side is row j of the network's own ∂L̂/∂W, and the bound is λ² times Theorem 4.1's right side (1/m),
    which holds on any input with ‖X‖₂ ≤ λ. How far below it real gradients stay shows how loose the worst case is.
    """
    out = []
    for rec in recs:
        y, g, gy = rec.columns()
        r = thm41_sides(g, y, rec.gamma, rec.eps, grad_y=gy)  # as in `thm41_on_layers`
        X = rec.input_matrix()
        lam = float(torch.linalg.eigvalsh(X.T @ X).max().sqrt())
        gw = rec.grad_weight.reshape(rec.grad_weight.shape[0], -1)
        ratio = ((gw ** 2).sum(1) / (lam ** 2 * r.rhs_m)).numpy()
        out.append(Thm44Layer(index=rec.index, m=X.shape[0], d=X.shape[1], lam=lam,
                              ratio_median=float(np.median(ratio)), ratio_max=float(ratio.max())))
    return out


def ray_on_network(initial: nn.Module, trained: nn.Module) -> list[RayDistance]:
    """Lemma 4.5 layer by layer: the distance from each block's initial weights W₀ to its trained W* and to the
    ray through W* (`ray_distance`; a layer with ⟨W₀, W*⟩ ≤ 0 raises, since the lemma does not apply)."""
    return [ray_distance(b0.layer.weight.detach(), b1.layer.weight.detach())
            for b0, b1 in zip(initial.blocks, trained.blocks, strict=True)]


def exact_hessian(model: nn.Module, loss_fn: Callable[[Tensor, Tensor], Tensor], x: Tensor, y: Tensor,
                  chunk: int = 500) -> Tensor:
    """The full Hessian of loss_fn(model(x), y) with respect to every parameter, in float64 (P × P, symmetrized).

    For networks small enough to hold it: the deep linear network has 2,500 weights (2,980 with BN's γ, β), so
    its Hessian is that many exact Hessian-vector products, `chunk` at a time (batched double backward, through BN's
    batch statistics as in `probes.sharpness`). A copy of the model in float64 and training mode is used;
    the model itself is not changed.
    """
    net = copy.deepcopy(model).double().train()
    params = [p for p in net.parameters() if p.requires_grad]
    loss = loss_fn(net(x.double()), y.double())
    g = torch.cat([t.reshape(-1) for t in torch.autograd.grad(loss, params, create_graph=True)])
    n = g.numel()
    rows = []
    for start in range(0, n, chunk):
        basis = torch.eye(n, dtype=torch.float64)[start : start + chunk]
        hv = torch.autograd.grad(g, params, basis, retain_graph=True, is_grads_batched=True)
        rows.append(torch.cat([t.reshape(len(basis), -1) for t in hv], dim=1))
    H = torch.cat(rows)
    return (H + H.T) / 2


# ---------------------------------------------------------------------------------------------------
# --- chapter 2: the BN transform, checked numerically ---
# Ioffe & Szegedy's Algorithm 1, its backward pass, what γ and β can undo, Algorithm 2's m/(m−1) and scale
# invariance, as float64 identities that `chapters/02_bn_algorithm` asserts (the asserts stay in the chapter).
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BackwardCheck:
    """What `backward_check` measured. `errors[name]` = max |difference| from the reference of y, ∂ℓ/∂x, ∂ℓ/∂γ,
    ∂ℓ/∂β; `scale` = the reference's largest |entry| of each; `g_ref` = the reference's (∂ℓ/∂x, ∂ℓ/∂γ, ∂ℓ/∂β).
    `buf_err`: running mean/var of bnbook vs torch after three training steps; `f32`: the same four differences
    in float32, bnbook vs torch, relative to torch's largest entry; `gradcheck_ok`: finite differences pass;
    `sum_dx`, `dot_dx`: per channel, ∂ℓ/∂x's sum and its dot product with x̂, relative (both 0 at ε = 0);
    `eps_term` = max over channels of ε/(σ_B² + ε), the size `dot_dx` may reach with ε > 0."""

    errors: dict[str, list[float]]
    scale: list[float]
    g_ref: tuple[Tensor, Tensor, Tensor]
    buf_err: float
    f32: list[float]
    gradcheck_ok: bool
    sum_dx: float
    dot_dx: float
    eps_term: float


def backward_check(
    x: Tensor,
    gamma: Tensor,
    beta: Tensor,
    dy: Tensor,
    reference: Callable[[Tensor, Tensor, Tensor], tuple[Tensor, Tensor, Tensor, Tensor]],
    eps: float = 1e-5,
) -> BackwardCheck:
    """Every BN implementation's output and gradients against autograd through `reference`, on one conv input.

    x (N, C, H, W), γ and β (C,) are float64 leaves with requires_grad; dy is the upstream gradient ∂ℓ/∂y.
    `reference(x, γ, β)` returns (μ_B, σ_B², x̂, y) computed with plain tensor operations (the chapter's
    `algorithm1`), so that autograd differentiating it is an independent reference. Compared with it: the
    paper's backward formulas (`norms.batch_norm_backward`), the autograd node (`norms.batch_norm_forward`),
    the `norms.BatchNorm` layer and `torch.nn.BatchNorm2d` (which calls `F.batch_norm`, with its own backward).
    Then the layers' running statistics after two more steps on batches from seeds 10 and 11, the float32
    agreement (the precision the models train in), `torch.autograd.gradcheck` on a 4x3x2x2 corner, and the
    projection the compact backward form predicts: ∂ℓ/∂x sums to zero per channel and is orthogonal to x̂
    up to ε/(σ_B² + ε). `eps` is the implementations' ε (their default); it only sets `eps_term`.
    """
    from .norms import batch_norm_backward  # the paper's formulas, only needed here

    channels, dims = x.shape[1], (0, 2, 3)

    def grads(y: Tensor, wrt: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        return torch.autograd.grad(y, wrt, dy)

    y_ref = reference(x, gamma, beta)[3]
    g_ref = grads(y_ref, (x, gamma, beta))  # (i) autograd through the plain operations
    layer = BatchNorm(channels).to(x.dtype)
    torch_bn = nn.BatchNorm2d(channels).to(x.dtype)
    with torch.no_grad():
        for mod in (layer, torch_bn):
            mod.weight.copy_(gamma)
            mod.bias.copy_(beta)
    # the order matters: each layer's first training step (its forward here) updates its running statistics
    candidates = {
        "bnbook batch_norm_backward (paper's formulas)": (y_ref, batch_norm_backward(dy, x.detach(), gamma.detach())),
        "bnbook batch_norm_forward (autograd node)": (y := batch_norm_forward(x, gamma, beta), grads(y, (x, gamma, beta))),
        "bnbook BatchNorm layer": (y := layer(x), grads(y, (x, layer.weight, layer.bias))),
        "torch.nn.BatchNorm2d": (y := torch_bn(x), grads(y, (x, torch_bn.weight, torch_bn.bias))),
    }
    errors = {name: [float((y - y_ref).detach().abs().max())] + [float((a - b).abs().max()) for a, b in zip(gs, g_ref)]
              for name, (y, gs) in candidates.items()}
    scale = [float(y_ref.detach().abs().max())] + [float(g.abs().max()) for g in g_ref]

    # running statistics after three steps on different batches
    for step in range(2):
        xb = torch.randn(*x.shape, generator=torch.Generator().manual_seed(10 + step), dtype=x.dtype) * 2 - 1
        layer(xb), torch_bn(xb)
    buf_err = max(float((layer.running_mean - torch_bn.running_mean).abs().max()),
                  float((layer.running_var - torch_bn.running_var).abs().max()))

    # float32, as the models train: bnbook vs torch
    x32 = x.detach().float().requires_grad_(True)
    l32, t32 = BatchNorm(channels), nn.BatchNorm2d(channels)
    with torch.no_grad():
        for mod in (l32, t32):
            mod.weight.copy_(gamma)
            mod.bias.copy_(beta)
    o32, r32 = l32(x32), t32(x32)
    f32 = [float((o32 - r32).detach().abs().max() / r32.detach().abs().max())] + [
        float((a - b).abs().max() / b.abs().max())
        for a, b in zip(torch.autograd.grad(o32, (x32, l32.weight, l32.bias), dy.float()),
                        torch.autograd.grad(r32, (x32, t32.weight, t32.bias), dy.float()))]

    # finite differences on a small corner of the input (gradcheck is slow: it perturbs every entry)
    small = [t.detach()[:4, :3, :2, :2].clone().requires_grad_(True) if t.dim() == 4
             else t.detach()[:3].clone().requires_grad_(True) for t in (x, gamma, beta)]
    gradcheck_ok = torch.autograd.gradcheck(lambda a, b, c: batch_norm_forward(a, b, c), small)

    # the projection: per channel, dl/dx sums to zero and is orthogonal to x_hat
    dx = g_ref[0]
    x_hat = reference(x, gamma, beta)[2].detach()
    sum_dx = float(dx.sum(dims).abs().max() / dx.abs().sum(dims).max())
    dot_dx = float((dx * x_hat).sum(dims).abs().max() / (dx.abs() * x_hat.abs()).sum(dims).max())
    eps_term = float((eps / (x.detach().var(dims, unbiased=False) + eps)).max())  # 1 - rho: exact 0 only for eps = 0
    return BackwardCheck(errors, scale, g_ref, buf_err, f32, gradcheck_ok, sum_dx, dot_dx, eps_term)


def bn_identity_error(u: Tensor, eps: float = 1e-5) -> float:
    """max |BN(u) − u| / max |u|, per unit (column), with γ = √(σ_B² + ε) and β = μ_B: BN can represent the
    identity, so normalizing loses nothing the layer could represent (Ioffe & Szegedy; Santurkar et al.'s
    Observation 4.3 in the landscape's terms). Rounding only: the float64 value is ~1e-16."""
    var_u, mu_u = torch.var_mean(u, 0, correction=0)
    identity = batch_norm_forward(u, torch.sqrt(var_u + eps), mu_u, eps)
    return float(((identity - u).abs() / u.abs().max(0).values).max())


@dataclass(frozen=True)
class BiasCheck:
    """`out_err` = max |BN(Wu + b) − BN(Wu)|; `grad_b` = max |∂ℓ/∂b| through BN (both 0 up to rounding)."""

    out_err: float
    grad_b: float


def bias_before_bn(u: Tensor, W: Tensor, bias: Tensor, gamma: Tensor, beta: Tensor, probe: Tensor) -> BiasCheck:
    """Why a layer followed by BN drops its bias: BN(u Wᵀ + b) = BN(u Wᵀ), since b shifts every value of a unit
    and its batch mean alike, and ∂ℓ/∂b = Σ_i ∂ℓ/∂x_i = 0 per unit (the backward pass's projection). The loss is
    ℓ = Σ sigmoid(BN(u Wᵀ + b)) · probe, a fixed random linear function of the activations."""
    bias = bias.detach().requires_grad_(True)
    with_bias = batch_norm_forward(u @ W.T + bias, gamma, beta)
    without_bias = batch_norm_forward(u @ W.T, gamma, beta)
    out_err = float((with_bias - without_bias).detach().abs().max())
    (grad_b,) = torch.autograd.grad((torch.sigmoid(with_bias) * probe).sum(), bias)
    return BiasCheck(out_err, float(grad_b.abs().max()))


@dataclass(frozen=True)
class ConvChannels:
    """`feat` = BN(conv(images)), (N, C, H, W); per channel over batch and positions: `chan_mean`, `chan_var`
    (biased); `pos_mean` = per channel and position, the mean over the batch only, (C, H, W); `n_params` = the
    BN layer's learned parameters."""

    feat: Tensor
    chan_mean: Tensor
    chan_var: Tensor
    pos_mean: Tensor
    n_params: int


def conv_bn_channels(images: Tensor, channels: int = 4, std: float = 0.5, seed: int = 11) -> ConvChannels:
    """A 3x3 convolution (no bias; weights N(0, std²) from `seed`) and `norms.BatchNorm(channels)` in training
    mode, in the images' dtype: BN of a conv layer normalizes each channel over the batch and every position
    together (m = N·H·W values), with one (γ, β) per channel, so single positions are not normalized."""
    conv = nn.Conv2d(images.shape[1], channels, 3, padding=1, bias=False).to(images.dtype)
    nn.init.normal_(conv.weight, 0.0, std, generator=torch.Generator().manual_seed(seed))
    conv_bn = BatchNorm(channels).to(images.dtype)
    feat = conv_bn(conv(images)).detach()
    chan_var, chan_mean = torch.var_mean(feat, (0, 2, 3), correction=0)
    pos_mean = feat.mean(0)  # per channel and position, over the batch only
    return ConvChannels(feat, chan_mean, chan_var, pos_mean, sum(p.numel() for p in conv_bn.parameters()))


def batch_variance_bias(
    ms: Sequence[int], batches: int, sd: float, seed: int, dtype: torch.dtype = torch.float64
) -> list[tuple[int, float, float, float]]:
    """Algorithm 2's m/(m−1): for each batch size m, `batches` batches of m draws from N(0, sd²) (generator
    seed + m). Returns (m, E_B[σ_B²]/Var, (m−1)/m, E_B[m/(m−1) σ_B²]/Var) per m: the biased batch variance
    underestimates the variance by (m−1)/m, since it measures the spread around the batch's own mean, and
    the m/(m−1) correction removes that."""
    rows = []
    for m in ms:
        draws = torch.randn(m, batches, generator=torch.Generator().manual_seed(seed + m), dtype=dtype) * sd
        var_b = draws.var(0, unbiased=False)  # one batch per column
        rows.append((m, float(var_b.mean() / sd**2), (m - 1) / m, float((var_b * m / (m - 1)).mean() / sd**2)))
    return rows


def batch_of_one_message(channels: int = 6) -> str:
    """The error `norms.BatchNorm` raises for a training-mode batch of one (x − μ_B = 0: nothing is left to
    normalize); raises AssertionError if the layer accepts the batch."""
    try:
        BatchNorm(channels)(torch.randn(1, channels))
    except ValueError as e:
        return str(e)
    raise AssertionError("a batch of one should be refused in training mode")


def scaled_bn_layer(W: Tensor, u: Tensor, probe: Tensor, a: float, eps: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The layer y = BN(u (aW)ᵀ) (γ = 1, β = 0, this ε) under the loss ℓ = Σ sigmoid(y) · probe: returns
    (y, ∂ℓ/∂(aW), ∂ℓ/∂u, aW). Scale invariance compares these across a."""
    ones, zeros = torch.ones(W.shape[0], dtype=W.dtype), torch.zeros(W.shape[0], dtype=W.dtype)
    Wa = (a * W).requires_grad_(True)
    uu = u.clone().requires_grad_(True)
    y = batch_norm_forward(uu @ Wa.T, ones, zeros, eps)
    gW, gu = torch.autograd.grad((torch.sigmoid(y) * probe).sum(), (Wa, uu))
    return y.detach(), gW, gu, Wa.detach()


@dataclass(frozen=True)
class ScaleInvariance:
    """`rows`: (ε, a, max |BN(aWu) − BN(Wu)|, a·∂ℓ/∂(aW) vs ∂ℓ/∂W (max |difference| relative to the largest
    entry), a‖∂ℓ/∂(aW)‖/‖∂ℓ/∂W‖, ∂ℓ/∂u at aW vs at W (relative)), one per ε and a; `var_min` = the smallest
    batch variance of a unit at a = 1; `cos` = max over units j of |cos(w_j, ∂ℓ/∂w_j)| at ε = 0, a = 1."""

    rows: list[tuple[float, float, float, float, float, float]]
    var_min: float
    cos: float


def scale_invariance(
    W: Tensor, u: Tensor, probe: Tensor, scales: Sequence[float], epss: Sequence[float] = (0.0, 1e-5)
) -> ScaleInvariance:
    """BN((aW)u) = BN(Wu), ∂ℓ/∂u unchanged and ∂ℓ/∂(aW) = ∂ℓ/∂W / a, for each factor a in `scales` and each ε
    in `epss` (exact at ε = 0, up to ~ε/(a²σ_B²) otherwise), on `scaled_bn_layer`; and the consequence
    ⟨w_j, ∂ℓ/∂w_j⟩ = 0 for every unit j: larger weights get smaller gradients, orthogonal to the weights."""
    rows = []
    for eps in epss:
        y1, gW1, gu1, _ = scaled_bn_layer(W, u, probe, 1.0, eps)
        for a in scales:
            ya, gWa, gua, Wa = scaled_bn_layer(W, u, probe, a, eps)
            rows.append((eps, a, float((ya - y1).abs().max()),
                         float((a * gWa - gW1).abs().max() / gW1.abs().max()),
                         float(gWa.norm() / gW1.norm()) * a,
                         float((gua - gu1).abs().max() / gu1.abs().max())))
    var_min = float((u @ W.T).var(0, unbiased=False).min())  # the smallest batch variance of a unit at a = 1
    _, gW1, _, W1 = scaled_bn_layer(W, u, probe, 1.0, 0.0)
    cos = ((W1 * gW1).sum(1) / (W1.norm(dim=1) * gW1.norm(dim=1))).abs().max().item()
    return ScaleInvariance(rows, var_min, cos)
