"""Tests of bnbook.theory: Section 4 of Santurkar et al. (2018), each check able to fail."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from bnbook import theory as T
from bnbook.models import mlp
from bnbook.norms import BatchNorm

D = torch.float64


@pytest.fixture(autouse=True)
def one_thread():
    """These tests run many tiny float64 ops, for which one thread is fastest (and deterministic)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------------------------------------------
# Fact C.1


@pytest.mark.parametrize("m,eps", [(4, 0.0), (37, 0.0), (37, 1e-3), (500, 1e-5)])
def test_fact_c1_matches_autograd_through_an_independent_batch_norm(m: int, eps: float) -> None:
    """Against torch.nn.functional.batch_norm (ε > 0; torch refuses ε = 0) or a hand-written BN (ε = 0)."""
    y, g, gamma = T.random_bn_instance(m, 6, gen(m))
    yy = y.clone().requires_grad_(True)
    if eps > 0:
        z = F.batch_norm(yy, None, None, gamma, torch.zeros(6, dtype=D), training=True, eps=eps)
    else:
        z = gamma * (yy - yy.mean(0)) / yy.std(0, unbiased=False)
    (want,) = torch.autograd.grad((z * g).sum(), yy)
    got = T.bn_input_grad(g, y, gamma, eps)
    assert torch.allclose(got, want, rtol=1e-10, atol=1e-12 * float(want.abs().max()))


def test_fact_c1_matches_the_packages_batchnorm_module_on_conv_input() -> None:
    torch.manual_seed(0)
    bn = BatchNorm(3, eps=1e-5).to(D)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([0.5, 2.0, -1.0]))
    x = (torch.randn(4, 3, 5, 5, dtype=D) * 3 + 1).requires_grad_(True)
    g = torch.randn(4, 3, 5, 5, dtype=D)
    (want,) = torch.autograd.grad((bn(x) * g).sum(), x)
    got = T.bn_input_grad(T.channels_as_columns(g), T.channels_as_columns(x.detach()), bn.weight.detach(), bn.eps)
    assert torch.allclose(got, T.channels_as_columns(want), rtol=1e-10, atol=1e-13)


def test_fact_c1_is_not_the_naive_gradient() -> None:
    """Dropping the batch-statistics terms (γ/σ · g) must be detected: the check can fail."""
    y, g, gamma = T.random_bn_instance(16, 4, gen(1))
    _, _, sigma = T.normalize(y)
    naive = gamma / sigma * g
    assert not torch.allclose(naive, T.bn_input_grad_autograd(g, y, gamma), rtol=1e-3)


def test_normalize_properties() -> None:
    y, _, _ = T.random_bn_instance(50, 3, gen(2))
    yh, _, _ = T.normalize(y)
    assert torch.allclose(yh.sum(0), torch.zeros(3, dtype=D), atol=1e-12)
    assert torch.allclose((yh**2).sum(0), torch.full((3,), 50.0, dtype=D), rtol=1e-13)
    yh_eps, _, _ = T.normalize(y, eps=1.0)
    assert ((yh_eps**2).sum(0) < 50.0 - 1e-9).all()


# ---------------------------------------------------------------------------------------------------
# Theorem 4.1


@pytest.mark.parametrize("m", [4, 16, 128, 2048])
def test_thm41_one_over_m_is_an_equality_at_eps_zero(m: int) -> None:
    y, g, gamma = T.random_bn_instance(m, 20, gen(m))
    r = T.thm41_sides(g, y, gamma)
    err = (r.lhs - r.rhs_m).abs() / (r.scale * r.g_sq)
    assert float(err.max()) < 1e-12


@pytest.mark.parametrize("eps", [1e-5, 1e-2, 1.0])
def test_thm41_with_eps_is_a_strict_inequality_with_the_predicted_gap(eps: float) -> None:
    y, g, gamma = T.random_bn_instance(64, 20, gen(3))
    r = T.thm41_sides(g, y, gamma, eps)
    norm = r.scale * r.g_sq
    assert bool((r.lhs <= r.rhs_m + 1e-12 * norm).all())
    assert float(((r.rhs_m - r.lhs - r.eps_gap).abs() / norm).max()) < 1e-12
    assert float(r.eps_gap.max() / norm.max()) > 0  # the gap is really there (not an equality)


def test_thm41_one_over_sqrt_m_is_violated_on_an_aligned_gradient() -> None:
    y, _, gamma = T.random_bn_instance(256, 5, gen(4))
    g = T.aligned_upstream(y, noise=0.1, generator=gen(5))
    r = T.thm41_sides(g, y, gamma)
    assert bool((r.rhs_sqrt_m < 0).all())  # the printed bound claims a squared norm ≤ a negative number
    assert bool((r.lhs > 0).all())
    assert bool((r.lhs > r.rhs_sqrt_m).all())
    assert torch.allclose(r.lhs, r.rhs_m, rtol=1e-10)


def test_thm41_one_over_sqrt_m_gap_is_exactly_as_derived() -> None:
    y, g, gamma = T.random_bn_instance(100, 10, gen(6))
    r = T.thm41_sides(g, y, gamma)
    want = r.scale * r.yhat_dot_sq * (1 / 10 - 1 / 100)
    assert torch.allclose(r.lhs - r.rhs_sqrt_m, want, rtol=1e-8, atol=1e-12 * float((r.scale * r.g_sq).max()))
    assert bool((r.lhs > r.rhs_sqrt_m).all())


def test_thm41_lhs_can_come_from_a_network() -> None:
    """LayerRecord from a real (tiny) BN network: its ∂L̂/∂y agrees with Fact C.1 and Theorem 4.1 holds."""
    net = mlp(in_features=12, hidden=7, depth=2, num_classes=3, norm="batch", seed=0)
    x = torch.randn(32, 12, generator=gen(7))
    labels = torch.randint(3, (32,), generator=gen(8))
    recs = T.record_bn_layers(net, x, labels)
    assert len(recs) == 2
    for rec in recs:
        y, g, gy = rec.columns()
        assert y.dtype == D
        assert torch.allclose(gy, T.bn_input_grad(g, y, rec.gamma, rec.eps), rtol=1e-9, atol=1e-15)
        r = T.thm41_sides(g, y, rec.gamma, rec.eps, grad_y=gy)
        assert bool((r.lhs <= r.rhs_m * (1 + 1e-10)).all())
    # the model itself was left alone
    assert next(net.parameters()).dtype == torch.float32


# ---------------------------------------------------------------------------------------------------
# Theorem 4.2


def _small_net(seed: int, bn_head: bool = False, act: str = "relu"):
    g = gen(seed)
    m, d, n, h, k = 24, 6, 4, 8, 3
    X = torch.randn(m, d, generator=g, dtype=D)
    W1 = torch.randn(n, d, generator=g, dtype=D)
    W2 = torch.randn(h, n, generator=g, dtype=D) / math.sqrt(n)
    W3 = torch.randn(k, h, generator=g, dtype=D) / math.sqrt(h)
    labels = torch.randint(k, (m,), generator=g)
    gamma = torch.tensor([0.3, 1.0, 2.5, 4.0], dtype=D)
    beta = torch.randn(n, generator=g, dtype=D)
    return X @ W1.T, T.mlp_head([W2, W3], labels, act=act, bn=bn_head), gamma, beta


@pytest.mark.parametrize("bn_head,act", [(False, "relu"), (True, "relu"), (False, "tanh")])
def test_thm42_identity_holds_at_eps_zero_and_the_variant_does_not(bn_head: bool, act: str) -> None:
    y, head, gamma, beta = _small_net(0, bn_head, act)
    for j in (0, 2, 3):  # γ ≠ σ here, so the two forms differ
        r = T.thm42_terms(head, y, j, gamma, beta)
        size = abs(r.scale * r.quad_H_G) + abs(r.scale * r.ghat_dot_yhat * r.G_sq / (r.m * r.gamma))
        assert abs(r.quad_bn - r.rhs) < 1e-10 * size
        assert abs(r.quad_bn - r.rhs_variant) > 1e-3 * size


def test_thm42_quadratic_form_matches_full_hessian() -> None:
    """The double-backward quadratic form equals Gᵀ Ĥ G with Ĥ built explicitly by autograd."""
    y, head, gamma, beta = _small_net(1)
    j = 1
    r = T.thm42_terms(head, y, j, gamma, beta)

    def f(col: torch.Tensor) -> torch.Tensor:
        yy = torch.cat([y[:, :j], col.unsqueeze(1), y[:, j + 1 :]], 1)
        return head(T.batch_norm_forward(yy, gamma, beta, 0.0))

    Hhat = torch.autograd.functional.hessian(f, y[:, j].clone())
    G = T.bn_input_grad_autograd(torch.autograd.functional.jacobian(
        lambda z: head(z), T.batch_norm_forward(y, gamma, beta, 0.0))[:, j], y[:, j], gamma[j])[:, 0]
    assert math.isclose(float(G @ Hhat @ G), r.quad_bn, rel_tol=1e-9, abs_tol=1e-14)


def test_thm42_hessian_psd_exactly_when_head_is_piecewise_linear() -> None:
    y, head, gamma, beta = _small_net(2)
    z = T.batch_norm_forward(y, gamma, beta, 0.0)
    ev = torch.linalg.eigvalsh(T.hessian_block(head, z, 0))
    assert float(ev.min()) > -1e-12 * float(ev.max())
    found_negative = False
    for seed in range(3):
        y, head, gamma, beta = _small_net(seed, act="tanh")
        z = T.batch_norm_forward(y, gamma, beta, 0.0)
        ev = torch.linalg.eigvalsh(T.hessian_block(head, z, 0))
        found_negative |= float(ev.min()) < -1e-6 * float(ev.abs().max())
        if found_negative:
            break
    assert found_negative


# ---------------------------------------------------------------------------------------------------
# Observation 4.3


def test_obs43_bn_reproduces_the_standard_layer() -> None:
    X = torch.randn(40, 5, generator=gen(9), dtype=D)
    W = torch.randn(3, 5, generator=gen(10), dtype=D)
    b = torch.tensor([1.0, -2.0, 0.5], dtype=D)
    for eps in (0.0, 1e-5):
        gamma, beta = T.bn_params_reproducing(X @ W.T, eps, b)
        z = T.batch_norm_forward(X @ W.T, gamma, beta, eps)
        assert torch.allclose(z, X @ W.T + b, rtol=0, atol=1e-12)
    # using σ without ε when the layer has ε > 0 is detectably wrong
    gamma0, beta0 = T.bn_params_reproducing(X @ W.T, 0.0, b)
    y_small = X @ W.T * 1e-3
    gs, bs = T.bn_params_reproducing(y_small, 0.0, b)
    assert not torch.allclose(T.batch_norm_forward(y_small, gs, bs, 1e-5), y_small + b, rtol=0, atol=1e-6)
    assert gamma0.shape == beta0.shape == (3,)


def test_bn_from_standard_copies_a_network_exactly() -> None:
    std = mlp(in_features=10, hidden=6, depth=2, num_classes=4, norm="none", seed=1).to(D)
    bn = mlp(in_features=10, hidden=6, depth=2, num_classes=4, norm="batch", seed=2).to(D)
    x = torch.randn(30, 10, generator=gen(11), dtype=D)
    conv = T.bn_from_standard(std, bn, x)
    with torch.no_grad():
        # (a training-mode forward updates the running statistics, so it runs on a copy)
        assert torch.allclose(copy.deepcopy(conv).train()(x), std(x), atol=1e-12, rtol=0)
        x2 = torch.randn(7, 10, generator=gen(12), dtype=D)
        assert torch.allclose(conv.eval()(x2), std(x2), atol=1e-12, rtol=0)
        assert not torch.allclose(bn.train()(x), std(x), atol=1e-3)


# ---------------------------------------------------------------------------------------------------
# Theorem 4.4


def test_thm44_holds_on_random_inputs_and_is_attained_by_the_worst_case() -> None:
    g_ = gen(13)
    m, d, lam, gamma = 48, 12, 0.5, 1.7
    for _ in range(30):
        X = torch.randn(m, d, generator=g_, dtype=D)
        X = X / torch.linalg.matrix_norm(X, ord=2) * lam
        w = torch.randn(d, generator=g_, dtype=D)
        g = torch.randn(m, generator=g_, dtype=D) + 0.5
        r = T.thm44_sides(X, w, g, gamma)
        assert r.lhs <= r.bound * (1 + 1e-10)
        assert r.lhs < r.bound * 0.9  # random inputs are far from the worst case
    y = torch.randn(m, generator=g_, dtype=D) * 3 + 1
    w = torch.randn(d, generator=g_, dtype=D)
    g = T.aligned_upstream(y, noise=0.5, generator=g_)[:, 0] + 0.3
    X, w2 = T.worst_case_inputs(y, w, g, gamma, lam)
    assert torch.allclose(X @ w2, y, atol=1e-12)
    r = T.thm44_sides(X, w2, g, gamma)
    assert math.isclose(r.lam, lam, rel_tol=1e-12)
    assert math.isclose(r.lhs, r.bound, rel_tol=1e-10)
    assert r.lhs > r.bound_sqrt_m  # the 1/√m form fails at the worst case
    assert r.lhs > r.bound_unscaled_removed  # so does the form without λ² on the removed terms (λ < 1)


# ---------------------------------------------------------------------------------------------------
# Lemma 4.5


def test_lemma45_projection_is_the_closest_ray_point_and_bound_is_tight() -> None:
    g_ = gen(14)
    W0 = torch.randn(30, generator=g_, dtype=D)
    Ws = W0 + torch.randn(30, generator=g_, dtype=D)
    r = T.ray_distance(W0, Ws)
    assert math.isclose(r.dist2_ray, r.bound, rel_tol=1e-12)
    ks = torch.linspace(0.01, 3, 3001, dtype=D)
    grid = ((W0[None] - ks[:, None] * Ws[None]) ** 2).sum(1)
    assert float(grid.min()) >= r.dist2_ray - 1e-12
    assert float(grid.min()) < r.dist2_ray + 1e-3
    assert r.dist2_ray < r.dist2_point
    with pytest.raises(ValueError):
        T.ray_distance(W0, -W0)


def test_bn_regression_is_scale_invariant_and_minimized_on_the_ray() -> None:
    g_ = gen(15)
    X = torch.randn(100, 4, generator=g_, dtype=D)
    t = X @ torch.randn(4, generator=g_, dtype=D) + 2 + 0.3 * torch.randn(100, generator=g_, dtype=D)
    ws, bs = T.least_squares(X, t)
    L = float(T.regression_loss(ws, bs, X, t))
    gamma, beta = T.bn_params_reproducing((X @ ws).unsqueeze(1), 0.0, bs)
    for k in (1e-3, 1.0, 1e3):
        w = (k * ws).requires_grad_(True)
        Lh = T.bn_regression_loss(w, gamma, beta, X, t)
        (gw,) = torch.autograd.grad(Lh, w)
        assert math.isclose(float(Lh.detach()), L, rel_tol=1e-12)
        assert float(gw.norm()) < 1e-10
    # with ε > 0 the invariance breaks for small weights
    assert float(T.bn_regression_loss(1e-3 * ws, gamma, beta, X, t, eps=1e-5)) > 1.01 * L


# ---------------------------------------------------------------------------------------------------
# Real (tiny) convolutional networks


def _tiny_vgg():
    from bnbook.models import vgg

    net = vgg("A", width=1 / 32, norm="batch", seed=3)
    x = torch.randn(4, 3, 32, 32, generator=gen(16))
    labels = torch.randint(10, (4,), generator=gen(17))
    return net, x, labels


def test_records_of_a_conv_network_are_consistent() -> None:
    net, x, labels = _tiny_vgg()
    recs = T.record_bn_layers(net, x, labels)
    assert [r.index for r in recs] == list(range(1, 9))
    for rec in recs[:3]:
        X = rec.input_matrix()
        y, g, gy = rec.columns()
        W = rec.weight.reshape(rec.weight.shape[0], -1)
        assert torch.allclose(X @ W.T, y, atol=1e-12)
        assert torch.allclose(X.T @ gy, rec.grad_weight.reshape(W.shape).T, atol=1e-12)
        assert torch.allclose(gy, T.bn_input_grad(g, y, rec.gamma, rec.eps), rtol=1e-9, atol=1e-15)


def test_network_head_reproduces_the_loss_and_thm42_holds_on_it() -> None:
    net, x, labels = _tiny_vgg()
    with torch.no_grad():
        want = float(F.cross_entropy(copy.deepcopy(net).double().train()(x.double()), labels))
    for index in (7, 8):
        y, head, gamma, beta, eps = T.network_head(net, index, x, labels)
        with torch.no_grad():
            got = float(head(T.batch_norm_forward(y, gamma, beta, eps)))
        assert math.isclose(got, want, rel_tol=1e-12)
        y, head, gamma, beta, eps = T.network_head(net, index, x, labels, eps=0.0)
        r = T.thm42_terms(head, y, 0, gamma, beta, eps)
        size = abs(r.scale * r.quad_H_G) + abs(r.scale * r.ghat_dot_yhat * r.G_sq / (r.m * r.gamma))
        assert size > 0
        assert abs(r.quad_bn - r.rhs) < 1e-9 * size


def test_lanczos_finds_the_extreme_eigenvalues_of_a_hessian_block() -> None:
    y, head, gamma, beta = _small_net(3, act="tanh")
    z = T.batch_norm_forward(y, gamma, beta, 0.0)
    H = T.hessian_block(head, z, 1)
    ev = torch.linalg.eigvalsh(H)
    mv = T.hessian_block_matvec(head, z, 1)
    v = torch.randn(z.shape[0], generator=gen(18), dtype=D)
    assert torch.allclose(mv(v), H @ v, rtol=1e-10, atol=1e-14)
    vals, vecs = T.lanczos(mv, z.shape[0], z.shape[0], gen(19))
    scale = float(ev.abs().max())
    assert abs(float(vals[0] - ev[0])) < 1e-8 * scale and abs(float(vals[-1] - ev[-1])) < 1e-8 * scale
    assert float(vals[0]) < 0  # tanh head: not PSD, and the Ritz vector certifies it
    u = vecs[:, 0]
    assert float(u @ H @ u) < 0


def test_thm41_on_network_reads_the_networks_own_gradients() -> None:
    net, x, labels = _tiny_vgg()
    st = T.thm41_on_network(net, x, labels)
    assert st["layer"] == list(range(1, 9)) and st["batch"] == 4
    recs = T.record_bn_layers(net, x, labels)
    y, g, gy = recs[2].columns()
    want = float(((gy ** 2).sum(0) / (g ** 2).sum(0)).median())  # |dL/dy_j|^2 / |g|^2, median over channels
    assert math.isclose(st["shrink"][2], want, rel_tol=1e-12)
    assert all(0 <= v <= 1 for v in st["removed"] + st["pos"])
    # scaling one layer's weights by 10 leaves the network's function (BN) but divides gamma^2/sigma^2 by 100
    big = copy.deepcopy(net)
    with torch.no_grad():
        big.blocks[2].layer.weight.mul_(10)
    st_big = T.thm41_on_network(big, x, labels)
    assert math.isclose(st_big["scale"][2], st["scale"][2] / 100, rel_tol=1e-3)
    assert math.isclose(st_big["shrink"][2], st["shrink"][2] / 100, rel_tol=1e-3)


def test_thm42_on_network_is_an_identity_and_h_is_psd_after_the_last_bn() -> None:
    net, x, labels = _tiny_vgg()
    st = T.thm42_on_network(net, x, labels, layers=(7, 8), channels=3, spectra=1, lanczos_steps=4)
    assert set(st) == {7, 8} and all(s["batch"] == 4 and s["channels"] == 3 for s in st.values())
    assert all(s["err"] < 1e-9 for s in st.values())
    assert st[8]["low"] > -1e-10  # after the last BN: ReLU, max-pool, linear, cross-entropy
    assert all(s["reduced"] in (0, 1 / 3, 2 / 3, 1) and s["m"] == 4 * 2 * 2 for s in st.values())  # N·H·W at layers #7, #8


def test_ray_on_network_projects_each_layer() -> None:
    net, _, _ = _tiny_vgg()
    moved = copy.deepcopy(net)
    with torch.no_grad():
        for b in moved.blocks:
            b.layer.weight.mul_(2)
    rays = T.ray_on_network(net, moved)
    assert len(rays) == 8 and all(math.isclose(r.k, 0.5) and r.dist2_ray < 1e-20 for r in rays)
    with torch.no_grad():
        moved.blocks[0].layer.weight.neg_()
    with pytest.raises(ValueError, match="needs"):
        T.ray_on_network(net, moved)


def test_exact_hessian_matches_finite_differences_of_the_gradient_and_lanczos():
    """`theory.exact_hessian` on a small BN deep linear network: each column is the derivative of the gradient
    (central differences), and its top eigenvalue is what `probes.sharpness`'s Lanczos converges to."""
    from bnbook import models, probes
    from bnbook.train import squared_error

    torch.manual_seed(0)
    x, y = torch.randn(20, 3, dtype=torch.float64), torch.randn(20, 3, dtype=torch.float64)
    net = models.deep_linear(depth=3, width=3, norm="batch", seed=1).double()
    H = T.exact_hessian(net, squared_error, x, y)
    params = list(net.parameters())
    assert H.shape == (sum(p.numel() for p in params),) * 2

    def grad_at(shift: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            torch.nn.utils.vector_to_parameters(base + shift, params)
        g = torch.autograd.grad(squared_error(net(x), y), params)
        return torch.cat([t.reshape(-1) for t in g])

    base = torch.nn.utils.parameters_to_vector(params).detach().clone()
    h = 1e-5
    for j in (0, 7, len(base) - 1):
        e = torch.zeros_like(base)
        e[j] = h
        fd = (grad_at(e) - grad_at(-e)) / (2 * h)
        assert torch.allclose(H[:, j], fd, rtol=1e-5, atol=1e-6), j
    grad_at(torch.zeros_like(base))  # back to the point H was taken at
    top = torch.linalg.eigvalsh(H)[-1].item()
    lanczos = probes.sharpness(net, squared_error, x, y, steps=len(base))["sharp_lmax"]
    assert lanczos == pytest.approx(top, rel=1e-8)
