"""Probes: measurements taken during training that must not change the training trajectory.

- `activation_stats`: the distribution of the input to a block's nonlinearity (the norm's output).
- `ics`: internal covariate shift by Definition 2.1 of Santurkar et al. (2018): the gradient of layer i
  before (G) and after (G') all preceding layers take their update on the same batch.
- `landscape`: loss and gradient along the gradient direction (or a random one) over step sizes:
  loss range, gradient predictiveness ‖∇L(x − ηd) − g‖ and effective β-smoothness.
- BN at inference (chapter 2): `predict` in either mode, Algorithm 2's `population_statistics`, and
  `with_statistics`, a copy of a network that normalizes with given statistics.
- `weight_norms`: each layer's ‖W_i‖², recorded at every probe (BN's effective learning rate η/‖W_i‖², chapter 4.11).
- `sharpness`: the top eigenvalue λ_max of the loss's Hessian (Lanczos on exact Hessian-vector products),
  the exact curvature along the gradient, and how well the gradient aligns with the top eigenvector.

Every probe runs inside `preserved(model)`, which restores parameters, buffers (BN running statistics)
and every random generator (global and the noisy layers' own) afterwards: a run with probes ends with
exactly the weights of the same run without them (tested in tests/test_probes.py).
Probes evaluate the model in training mode on the current batch: that is the loss SGD minimizes.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from .norms import BatchNorm, batch_moments

LossFn = Callable[[Tensor, Tensor], Tensor]
QUANTILES = (0.01, 0.05, 0.15, 0.25, 0.5, 0.75, 0.85, 0.95, 0.99)
N_SAMPLES = 2048  # activation values kept per probe, for histograms


def noise_generators(model: nn.Module) -> list[torch.Generator]:
    """The random generators of the model's noisy layers, in module order."""
    return [m.generator for m in model.modules() if isinstance(getattr(m, "generator", None), torch.Generator)]


def place_noise_generators(model: nn.Module, device: str | torch.device) -> None:
    """Put each noisy layer's generator on `device`, seeded as before, so that drawing the noise needs no
    copy from the host at every step. On the CPU it does nothing; on a GPU the draws (a different
    random-number algorithm) differ from the CPU's, as every number of a GPU run does."""
    if torch.device(device).type == "cpu":
        return
    for m in model.modules():
        g = getattr(m, "generator", None)
        if isinstance(g, torch.Generator):
            m.generator = torch.Generator(device).manual_seed(g.initial_seed())


@contextlib.contextmanager
def preserved(model: nn.Module) -> Iterator[None]:
    """Run a block of code and then put the model and all RNGs back exactly as they were."""
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    gens = [(g, g.get_state()) for g in noise_generators(model)]
    rng = torch.get_rng_state()
    grads = {n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()}
    training = model.training
    try:
        yield
    finally:
        with torch.no_grad():
            for k, v in model.state_dict().items():
                v.copy_(state[k])
        for g, s in gens:
            g.set_state(s)
        torch.set_rng_state(rng)
        for n, p in model.named_parameters():
            p.grad = grads[n]
        model.train(training)


@contextlib.contextmanager
def _same_noise(model: nn.Module) -> Iterator[None]:
    """Make every forward inside see the noise the real training step will see (noisy BN)."""
    gens = [(g, g.get_state()) for g in noise_generators(model)]
    try:
        yield
    finally:
        for g, s in gens:
            g.set_state(s)


def _hooked_forward(model: nn.Module, x: Tensor, hooks: list) -> None:
    """One forward pass of batch x in training mode, without gradients, for the `hooks` (handles) registered to
    observe it; afterwards the hooks are removed and the model and every RNG are as they were (`preserved`)."""
    try:
        with preserved(model), torch.no_grad():
            model.train()
            model(x)
    finally:
        for h in hooks:
            h.remove()


@contextlib.contextmanager
def frozen_statistics(model: nn.Module, x: Tensor) -> Iterator[None]:
    """Inside the block, every `BatchNorm` of `model` normalizes with the batch statistics it computes on input
    `x` at the current parameters, held fixed (`BatchNorm.frozen`), instead of recomputing them at each call.

    This is the landscape of the network with its normalization frozen at x₀ (public reproductions of Santurkar
    et al.'s probes freeze BN's statistics too, using the running averages): moving the weights then changes the
    loss only through the affine maps, not through μ_B and σ²_B. The statistics come from one forward pass
    (`_hooked_forward`), which leaves running averages and noise generators as they were.
    """
    layers = [m for m in model.modules() if isinstance(m, BatchNorm)]
    seen: dict[int, tuple[Tensor, Tensor]] = {}
    _hooked_forward(model, x, [m.register_forward_pre_hook(
        lambda m, inp, k=k: seen.__setitem__(k, batch_moments(inp[0].detach()))) for k, m in enumerate(layers)])
    for k, m in enumerate(layers):
        m.frozen = seen[k]
    try:
        yield
    finally:
        for m in layers:
            m.frozen = None


def base_gradient(model: nn.Module, loss_fn: LossFn, x: Tensor, y: Tensor) -> tuple[float, list[Tensor]]:
    """(L(x₀), ∇L(x₀)) on batch (x, y) in training mode, the model left as it was: the starting point that
    `ics` and `landscape` share (pass it as `base=` to compute it once per probe step)."""
    with preserved(model):
        model.train()
        return _loss_and_grads(model, loss_fn, x, y)


def _loss_and_grads(model: nn.Module, loss_fn: LossFn, x: Tensor, y: Tensor) -> tuple[float, list[Tensor]]:
    params = [p for p in model.parameters()]
    with _same_noise(model):
        loss = loss_fn(model(x), y)
    grads = torch.autograd.grad(loss, params)
    return loss.item(), [g.detach() for g in grads]


def _flat(ts: list[Tensor]) -> Tensor:
    return torch.cat([t.reshape(-1) for t in ts])


def weight_norms(model: nn.Module) -> np.ndarray:
    """‖W_i‖² of every numbered layer's weight (`model.blocks[i - 1].layer.weight`), in float64: with BN after
    layer i, the loss is invariant to W_i's scale, and a step of size η moves its direction by η/‖W_i‖²
    (the effective learning rate, chapter 2 and Arora, Li & Lyu 2019)."""
    return np.array([b.layer.weight.detach().double().pow(2).sum().item() for b in model.blocks])


def activation_stats(model: nn.Module, x: Tensor, layers: tuple[int, ...]) -> dict[str, np.ndarray]:
    """Statistics of the nonlinearity's input (the norm's output) of each layer #i in `layers` on batch x.

    Returns, per layer i: `act{i}_mean`/`act{i}_var` per channel, `act{i}_quantiles` at `QUANTILES`
    over all values, `act{i}_unit_quantiles` at `QUANTILES` over the values of channel (unit) 0 alone
    (Ioffe & Szegedy's Fig. 1 follows one sigmoid input), and `act{i}_values`, a fixed subsample of
    `N_SAMPLES` values for histograms.
    """
    captured: dict[int, Tensor] = {}
    _hooked_forward(model, x, [
        model.blocks[i - 1].norm.register_forward_hook(lambda m, inp, out, i=i: captured.__setitem__(i, out.detach()))
        for i in layers
    ])
    out: dict[str, np.ndarray] = {}
    for i in layers:
        a = captured[i].cpu()
        flat = a.reshape(-1).double()
        pick = torch.randint(flat.numel(), (N_SAMPLES,), generator=torch.Generator().manual_seed(i))
        var, mean = batch_moments(a)
        out[f"act{i}_mean"], out[f"act{i}_var"] = mean.numpy(), var.numpy()
        out[f"act{i}_quantiles"] = np.quantile(flat.numpy(), QUANTILES).astype(np.float32)
        out[f"act{i}_unit_quantiles"] = np.quantile(a[:, 0].double().numpy(), QUANTILES).astype(np.float32)
        out[f"act{i}_values"] = flat[pick].float().numpy()
    return out


def ics(
    model: nn.Module, loss_fn: LossFn, x: Tensor, y: Tensor, lr: float, layers: tuple[int, ...],
    base: tuple[float, list[Tensor]] | None = None,
) -> dict[str, np.ndarray]:
    """Internal covariate shift of layers #i (Definition 2.1 of Santurkar et al. 2018).

    G = ∇_{W_i} L at the current parameters; G' = ∇_{W_i} L after every parameter of blocks 1 … i−1
    has taken its SGD step (W − lr·∇L on this batch), all later parameters unchanged. Returns
    `ics{i}_l2` = ‖G − G'‖₂, `ics{i}_cos` = cos∠(G, G') and `ics{i}_gnorm` = ‖G‖₂.
    """
    out: dict[str, np.ndarray] = {}
    with preserved(model):
        model.train()
        names = [n for n, _ in model.named_parameters()]
        _, grads = base if base is not None else _loss_and_grads(model, loss_fn, x, y)
        grad_of = dict(zip(names, grads))
        for i in layers:
            w = model.blocks[i - 1].layer.weight
            g = grad_of[f"blocks.{i - 1}.layer.weight"]
            earlier = [
                (p, grad_of[n]) for n, p in model.named_parameters()
                if n.startswith("stem.") or (n.startswith("blocks.") and int(n.split(".")[1]) < i - 1)
            ]
            saved = [p.detach().clone() for p, _ in earlier]
            with torch.no_grad():
                for p, gp in earlier:
                    p.sub_(lr * gp)
            with _same_noise(model):
                loss = loss_fn(model(x), y)
            (g2,) = torch.autograd.grad(loss, [w])
            with torch.no_grad():
                for (p, _), s in zip(earlier, saved):
                    p.copy_(s)
            g, g2 = g.double().reshape(-1), g2.double().reshape(-1)
            out[f"ics{i}_l2"] = np.float64((g - g2).norm().item())
            out[f"ics{i}_cos"] = np.float64((g @ g2 / (g.norm() * g2.norm()).clamp_min(1e-300)).item())
            out[f"ics{i}_gnorm"] = np.float64(g.norm().item())
    return out


def landscape(
    model: nn.Module,
    loss_fn: LossFn,
    x: Tensor,
    y: Tensor,
    lr: float,
    multipliers: tuple[float, ...],
    direction: str = "gradient",
    seed: int = 0,
    prefix: str = "land",
    base: tuple[float, list[Tensor]] | None = None,
    frozen: bool = False,
) -> dict[str, np.ndarray]:
    """Loss and gradient along x(η) = x₀ − η·d for η = lr × each multiplier (Santurkar et al. Fig. 4).

    d is the gradient g = ∇L(x₀) on this batch (`direction="gradient"`) or a random Gaussian direction
    rescaled to ‖g‖ (`"random"`, drawn from a generator seeded with `seed`). All parameters move
    (weights, biases, γ, β). Returns `{prefix}_loss` (K,) = L(x(η)), `{prefix}_graddiff` (K,) =
    ‖∇L(x(η)) − g‖₂, `{prefix}_beta` = max_η ‖∇L(x(η)) − g‖₂ / ‖η d‖₂, `{prefix}_loss0` = L(x₀) and
    `{prefix}_gnorm` = ‖g‖₂. `base`: (L(x₀), g) from `base_gradient`, if already computed.
    `frozen`: every BN normalizes with the batch statistics of x₀ held fixed, at x₀ and at every x(η)
    (`frozen_statistics`; `base` is then recomputed, since g changes with it).
    """
    if direction not in ("gradient", "random"):
        raise ValueError(f"direction must be 'gradient' or 'random', got {direction!r}")
    with preserved(model), (frozen_statistics(model, x) if frozen else contextlib.nullcontext()):
        if frozen:
            base = None
        model.train()
        params = list(model.parameters())
        x0 = [p.detach().clone() for p in params]
        loss0, g = base if base is not None else _loss_and_grads(model, loss_fn, x, y)
        g_flat = _flat(g).double()
        if direction == "gradient":
            d = g
        else:
            gen = torch.Generator().manual_seed(seed)
            r = [torch.randn(p.shape, generator=gen, dtype=p.dtype).to(p.device) for p in params]
            scale = g_flat.norm() / _flat(r).double().norm()
            d = [t * scale.to(t.dtype) for t in r]
        d_norm = _flat(d).double().norm().item()
        losses, diffs = [], []
        for k in multipliers:
            eta = lr * k
            with torch.no_grad():
                for p, p0, dp in zip(params, x0, d):
                    p.copy_(p0 - eta * dp)
            loss, grad = _loss_and_grads(model, loss_fn, x, y)
            losses.append(loss)
            diffs.append((_flat(grad).double() - g_flat).norm().item())
    etas = lr * np.asarray(multipliers, dtype=np.float64)
    diffs_a = np.asarray(diffs)
    with np.errstate(divide="ignore", invalid="ignore"):
        beta = np.max(diffs_a / (etas * d_norm)) if d_norm > 0 else np.nan
    return {
        f"{prefix}_loss": np.asarray(losses),
        f"{prefix}_graddiff": diffs_a,
        f"{prefix}_beta": np.float64(beta),
        f"{prefix}_loss0": np.float64(loss0),
        f"{prefix}_gnorm": np.float64(g_flat.norm().item()),
    }


def end_to_end(model: nn.Module, x: Tensor) -> Tensor:
    """The deep linear network's end-to-end matrix M on batch x, in training mode: x ↦ M x + c.

    Each block multiplies by W_i and, where it has a BN, by diag(γ/√(σ²_B + ε)) with σ²_B the batch variance of
    that layer's input (the shift terms go into c); the input BN, if any, comes first. Without norms, M is
    the product W_depth ⋯ W_1. Its singular values show whether the product has collapsed to low rank.
    """
    scales: dict[int, Tensor] = {}
    layers = [m for m in model.modules() if isinstance(m, BatchNorm)]

    def hook(k: int):
        def record(m: BatchNorm, inp: tuple[Tensor, ...]) -> None:
            var, _ = batch_moments(inp[0].detach())
            scales[k] = (m.weight.detach() * torch.rsqrt(var + m.eps)).double()
        return record

    _hooked_forward(model, x, [m.register_forward_pre_hook(hook(k)) for k, m in enumerate(layers)])
    index = {id(m): k for k, m in enumerate(layers)}
    h = model.blocks[0].layer.weight.shape[1]
    M = torch.eye(h, dtype=torch.float64)
    if getattr(model, "stem", None) is not None:
        M = scales[index[id(model.stem)]][:, None] * M
    for b in model.blocks:
        M = b.layer.weight.detach().double() @ M
        if id(b.norm) in index:
            M = scales[index[id(b.norm)]][:, None] * M
    return M


# Lanczos iterations per sharpness probe. The top Ritz value converges first: on the book's VGG after 60 steps,
# 10 and 20 iterations agree to 4 digits (8.568 vs 8.568 standard, 36.907 vs 36.908 BN). Each iteration is one
# Hessian-vector product, about 4 (standard) to 7 (BN) training steps' worth of work.
SHARPNESS_STEPS = 10
SHARPNESS_KEYS = ("sharp_lmax", "sharp_grad", "sharp_cos")


def lanczos(
    matvec: Callable[[Tensor], Tensor], dim: int, steps: int, generator: torch.Generator,
    dtype: torch.dtype = torch.float64, device: str | torch.device = "cpu",
) -> tuple[Tensor, Tensor]:
    """Ritz values (ascending) and Ritz vectors (columns) of a symmetric operator after `steps` Lanczos steps
    with full reorthogonalization. Every Ritz value lies in [λ_min, λ_max] and the extreme ones converge
    first; a negative Ritz value certifies, through its Ritz vector v (vᵀHv < 0), that H is not ⪰ 0.
    The start vector is drawn on the CPU from `generator` (the same on every device); the vectors live on
    `device`."""
    steps = min(steps, dim)
    Q = torch.zeros(dim, steps, dtype=dtype, device=device)
    alpha = torch.zeros(steps, dtype=dtype, device=device)
    beta = torch.zeros(steps, dtype=dtype, device=device)
    q = torch.randn(dim, generator=generator, dtype=dtype).to(device)
    q = q / q.norm()
    k = 0
    for k in range(steps):
        Q[:, k] = q
        w = matvec(q)
        alpha[k] = q @ w
        w = w - Q[:, : k + 1] @ (Q[:, : k + 1].T @ w)
        w = w - Q[:, : k + 1] @ (Q[:, : k + 1].T @ w)  # twice is enough
        beta[k] = w.norm()
        if k + 1 == steps or float(beta[k]) < 1e-12 * float(alpha[: k + 1].abs().max().clamp_min(1e-300)):
            break
        q = w / beta[k]
    n = k + 1
    Tm = torch.diag(alpha[:n]) + torch.diag(beta[: n - 1], 1) + torch.diag(beta[: n - 1], -1)
    vals, vecs = torch.linalg.eigh(Tm)
    return vals, Q[:, :n] @ vecs



def sharpness(
    model: nn.Module, loss_fn: LossFn, x: Tensor, y: Tensor, steps: int = SHARPNESS_STEPS, seed: int = 0,
    base: tuple[float, list[Tensor]] | None = None,
) -> dict[str, np.ndarray]:
    """The curvature of the loss on batch (x, y), in training mode, at the current parameters.

    H is the Hessian of that loss with respect to every parameter; its products with a vector are exact
    (double backward, through BN's batch statistics: `bnbook.norms` rebuilds its backward differentiably).
    Returns `sharp_lmax`, the top Ritz value after `steps` Lanczos steps from a start vector seeded with
    `seed` (a lower bound on λ_max(H) that converges from below; the edge of stability of gradient descent
    is lr·λ_max = 2, Cohen et al. 2021); `sharp_grad` = gᵀHg/‖g‖², the exact curvature along the gradient
    g, which the landscape probe's effective β estimates by finite secants; and `sharp_cos` = |cos∠(g, v₁)|
    with v₁ the top Ritz vector. Non-finite values (a diverging run) give NaN.
    """
    nan = {k: np.float64(np.nan) for k in SHARPNESS_KEYS}
    with preserved(model):
        model.train()
        params = list(model.parameters())
        sizes = [p.numel() for p in params]
        _, g = base if base is not None else _loss_and_grads(model, loss_fn, x, y)
        g_flat = _flat(g).double()
        if not torch.isfinite(g_flat).all() or g_flat.norm() == 0:
            return nan
        with _same_noise(model):
            loss = loss_fn(model(x), y)
        grads = torch.autograd.grad(loss, params, create_graph=True)

        def hvp(v: Tensor) -> Tensor:
            vs = [t.view_as(p).to(p.dtype) for t, p in zip(torch.split(v, sizes), params)]
            dot = sum((gi * vi).sum() for gi, vi in zip(grads, vs))
            return _flat(torch.autograd.grad(dot, params, retain_graph=True)).double()

        u = g_flat / g_flat.norm()
        along = float(u @ hvp(u))
        if not np.isfinite(along):
            return nan
        try:
            vals, vecs = lanczos(hvp, g_flat.numel(), steps, torch.Generator().manual_seed(seed), device=g_flat.device)
        except RuntimeError:  # eigh of a tridiagonal matrix with non-finite entries: the curvature overflowed
            return nan
    if not torch.isfinite(vals).all():
        return nan
    return {
        "sharp_lmax": np.float64(vals[-1].item()),
        "sharp_grad": np.float64(along),
        "sharp_cos": np.float64(abs(float(u @ vecs[:, -1]))),
    }


# --- BN at inference (chapter 2): Algorithm 2 and the two ways to evaluate a trained BN network ---

def _bn_layers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, (BatchNorm, _BatchNorm))]


def predict(
    model: nn.Module, x: Tensor, batch_size: int = 1000, batch_stats: bool = False, order: Tensor | None = None
) -> Tensor:
    """Predicted classes of `model` on `x`, evaluated `batch_size` inputs at a time.

    `batch_stats=False`: inference mode (BN uses its stored statistics, so the batching is irrelevant).
    `batch_stats=True`: training mode, every BN layer normalizes with the statistics of the batch the
    input happens to be in; `order` (a permutation of range(len(x))) chooses the batches. The model's
    running statistics and mode are left untouched. Predictions come back in the original order; the
    last batch may be smaller (it must hold ≥ 2 inputs with batch statistics).
    """
    order = torch.arange(len(x)) if order is None else torch.as_tensor(order)
    out = torch.empty(len(x), dtype=torch.long)
    with preserved(model), torch.no_grad():
        model.train(batch_stats)
        for i in range(0, len(x), batch_size):
            idx = order[i : i + batch_size]
            out[idx] = model(x[idx]).argmax(1)
    return out


def population_statistics(model: nn.Module, x: Tensor, batch_size: int) -> list[tuple[Tensor, Tensor]]:
    """Algorithm 2 of Ioffe & Szegedy: every BN layer's population mean and variance over mini-batches of `x`.

    The network runs in training mode on the consecutive mini-batches of `batch_size` inputs (the last
    incomplete one dropped); each BN layer's batch mean μ_B and biased variance σ²_B are recorded and
    averaged: E[x] = E_B[μ_B], Var[x] = m/(m − 1)·E_B[σ²_B], with m the values per channel in a batch
    (batch × height × width for convolutions). Returns [(mean, var), …], one pair per BN layer in module
    order. The model's parameters and running statistics are left untouched.
    """
    n = len(x) // batch_size
    if n < 1 or batch_size < 2:
        raise ValueError(f"need batch_size >= 2 and at least one full batch; got batch_size={batch_size}, {len(x)} inputs")
    layers = _bn_layers(model)
    means: list[list[Tensor]] = [[] for _ in layers]
    variances: list[list[Tensor]] = [[] for _ in layers]
    m = {}  # values per channel in one batch, per layer

    def record(k: int):
        def hook(module: nn.Module, inputs: tuple[Tensor, ...]) -> None:
            a = inputs[0].detach().double()
            var, mean = torch.var_mean(a, (0,) if a.dim() == 2 else (0, 2, 3), correction=0)
            means[k].append(mean)
            variances[k].append(var)
            m[k] = a.numel() // a.shape[1]
        return hook

    handles = [layer.register_forward_pre_hook(record(k)) for k, layer in enumerate(layers)]
    try:
        with preserved(model), torch.no_grad():
            model.train()
            for i in range(n):
                model(x[i * batch_size : (i + 1) * batch_size])
    finally:
        for h in handles:
            h.remove()
    return [
        (torch.stack(means[k]).mean(0).float(), (torch.stack(variances[k]).mean(0) * m[k] / (m[k] - 1)).float())
        for k in range(len(layers))
    ]


def with_statistics(model: nn.Module, stats: list[tuple[Tensor, Tensor]]) -> nn.Module:
    """A copy of `model` in inference mode whose BN layers use `stats` ([(mean, var), …], module order)."""
    new = copy.deepcopy(model).eval()
    layers = _bn_layers(new)
    if len(layers) != len(stats):
        raise ValueError(f"the model has {len(layers)} BN layers but {len(stats)} statistics were given")
    with torch.no_grad():
        for layer, (mean, var) in zip(layers, stats):
            layer.running_mean.copy_(mean)
            layer.running_var.copy_(var)
    return new
