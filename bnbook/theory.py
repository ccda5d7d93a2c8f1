"""The theory of Santurkar et al. (2018), Section 4 and Appendix C, as computations that can be checked.

Conventions. One BN unit (channel) j sees a batch of m pre-normalization values y_j ∈ R^m. Tensors of
shape (m, n) hold n units side by side, one per column (a conv layer's channel is one column of
N·H·W rows, see `channels_as_columns`). ŷ_j = (y_j − μ_j)/σ_j with the biased batch variance and
σ_j = √(Var_B[y_j] + ε); z_j = γ_j ŷ_j + β_j; g = ∂L̂/∂z_j is the gradient arriving at the BN output, which
the paper writes ∇_{y_j} L (the standard network's gradient at the same activations). γ, β are constants.
Everything here is meant to run in float64: pass float64 tensors.

- Fact C.1 / Theorem 4.1: `normalize`, `bn_input_grad` (closed form), `bn_input_grad_autograd` (through
  `bnbook.norms.batch_norm_forward`), `thm41_sides` (both sides, both published coefficients c_m).
- Theorem 4.2: `thm42_terms` (Hessian quadratic forms by double backward), `quad_form`, `hessian_block`,
  `hessian_block_matvec`, `lanczos` (from `bnbook.probes`), `mlp_head`, `network_head`.
- Observation 4.3: `bn_params_reproducing`, `bn_from_standard` (a BN network that computes exactly what a
  trained standard network computes).
- Theorem 4.4: `thm44_sides`, `worst_case_inputs` (an input matrix that attains the bound).
- Lemma 4.5: `ray_distance`, `bn_regression_loss`, `least_squares`.
- Real networks: `record_bn_layers` (x, y, g, ∂L̂/∂y, ∂L̂/∂W at every BN layer of a model on one batch),
  `network_head` (a network split at one BN layer, for Theorem 4.2); what a trained network shows, per seed:
  `thm41_on_network`, `thm42_on_network`, `ray_on_network`.
"""

from __future__ import annotations

import copy
import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass

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
