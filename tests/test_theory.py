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


def test_fact_c1_against_autograd_agrees_to_rounding_and_catches_the_naive_gradient() -> None:
    for seed in (0, 7):
        r = T.fact_c1_against_autograd(seed)
        assert r.module < 1e-12 and r.functional < 1e-12  # both backward passes, to float64 rounding
        assert r.naive > 0.1  # γ/σ · g, with μ and σ taken as constants, is detected: the check can fail


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


def test_thm41_random_units_finds_the_equality_the_predicted_slack_and_the_sqrt_m_violation() -> None:
    ms = [2, 8, 64]
    u = T.thm41_random_units(ms, [0.0, 1e-2], 5)
    assert u.n == 30 and int(u.e0.sum()) == 15 and int(u.m2.sum()) == 5 and int(u.big.sum()) == 20
    # the entries are thm41_sides on the same instances (seed 1000·m + int(10⁶·ε)), unit by unit
    y, g, gamma = T.random_bn_instance(64, 5, gen(64000 + 10000))
    r = T.thm41_sides(g, y, gamma, 1e-2)
    sel = (u.m == 64) & (u.eps == 1e-2)
    assert u.lhs[sel].tolist() == r.lhs.tolist() and u.rhs_sqrt_m[sel].tolist() == r.rhs_sqrt_m.tolist()
    assert u.eq_err.max() < 1e-12 and u.slack_ok and u.gap_err.max() < 1e-12 and u.rel_slack.max() > 1e-6
    assert u.viol[u.e0].all() and (u.lhs[u.m2] < 1e-12 * u.norm[u.m2]).all()  # m = 2: nothing gets through
    rows = u.by_batch_size()
    assert [m for m, _, _ in rows] == ms
    assert rows[0][1] == 1.0 and rows[0][2] is None  # m = 2: the 1/√m right side is negative on every unit
    assert all(med > 1 for _, _, med in rows[1:])  # elsewhere LHS exceeds it


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


def test_thm42_small_nets_hold_the_identity_and_h_is_psd_only_for_the_relu_head() -> None:
    fams = {"relu": {}, "tanh": dict(act="tanh")}
    terms, mineig = T.thm42_small_nets(fams, range(3), m=24, units=4, hidden=8)
    assert [len(terms[f]) for f in fams] == [12, 12] and [len(mineig[f]) for f in fams] == [3, 3]
    y, head, gamma, beta = T.small_bn_net(1, m=24, units=4, hidden=8)
    assert y.shape == (24, 4) and y.dtype == D
    assert terms["relu"][4 + 2] == T.thm42_terms(head, y, 2, gamma, beta)  # seed 1, unit 2: the same numbers
    relu, tanh = (T.thm42_summary(terms[f], mineig[f]) for f in fams)
    assert relu["err"] < 1e-12 and tanh["err"] < 1e-12  # the identity, with or without H ⪰ 0
    assert relu["var_err"] > 1e-3  # the γ/(mσ²) transcription is off where γ ≠ σ
    assert relu["psd"] == 1.0 and tanh["mineig"] < 0
    assert 0 < relu["n"] <= 12 and 0 <= relu["cond_pos"] <= 1


def test_thm42_eps_error_is_rounding_at_eps_zero_and_of_the_order_of_one_minus_rho_above() -> None:
    E = T.thm42_eps_error([1e-4, 1e-2], range(2), m=16, units=4, hidden=6)
    assert E.shape[1] == 3 and set(E[:, 0].tolist()) == {1e-4, 1e-2}
    assert float(E[:, 1].min()) > 1e-14 and float((E[:, 1] / E[:, 2]).max()) < 10
    at0 = T.thm42_eps_error([0.0], range(2), m=16, units=4, hidden=6)
    assert float(at0[:, 1].max()) < 1e-12 and float(abs(at0[:, 2]).max()) < 1e-12  # ρ = 1 at ε = 0


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


def test_thm44_random_inputs_stay_below_the_bound_that_the_worst_cases_attain() -> None:
    ratios = T.thm44_random_inputs(32, 8, 0.5, 1.7, n=20, seed=1)
    assert ratios.shape == (20,) and 0 < float(ratios.min()) and float(ratios.max()) <= 1 + 1e-12
    worst = T.thm44_worst_cases(32, 8, 0.5, 1.7, seeds=range(3))
    assert worst.shape == (3, 4)
    assert float(abs(worst[:, 0] - 0.5).max()) < 1e-12 and float(abs(worst[:, 1] - 1).max()) < 1e-10
    assert (worst[:, 2] < 1).all() and (worst[:, 3] < 1).all()  # both slips are violated there


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


def test_ray_of_minima_is_flat_at_eps_zero_and_not_near_the_origin_with_eps() -> None:
    ks = torch.logspace(-4, 2, 7, dtype=D).numpy()
    r = T.ray_of_minima(ks, epss=(0.0, 1e-5), m=64, d=4, seed=3)
    assert list(r.along) == [0.0, 1e-5] and len(r.along[0.0]) == len(r.grad_norm) == 7
    assert r.L_star == float(T.regression_loss(r.w_star, r.b_star, r.X, r.t))
    assert float(abs(r.along[0.0]).max()) < 1e-12 * r.L_star and max(r.grad_norm) < 1e-10
    assert r.along[1e-5][0] > 0.1 * r.L_star  # k = 1e-4: k σ* ≪ √ε, BN no longer sees the weights' direction only
    assert abs(r.along[1e-5][-1]) < 1e-6 * r.L_star  # far along the ray ε does not matter


def test_ray_distance_grid_brackets_the_projection() -> None:
    W0 = torch.randn(6, generator=gen(20), dtype=D)
    Ws = W0 + 0.5 * torch.randn(6, generator=gen(21), dtype=D)
    rd = T.ray_distance(W0, Ws)
    brute = T.ray_distance_grid(W0, Ws, 3 * rd.k)
    assert rd.dist2_ray <= brute + 1e-12 and brute < rd.dist2_ray + 1e-6
    assert T.ray_distance_grid(W0, Ws, 3 * rd.k, n=3) > brute + 1e-6  # a coarse grid misses the closest point


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


def test_thm41_on_layers_reads_the_networks_gradients_and_holds_on_every_layer() -> None:
    net, x, labels = _tiny_vgg()
    recs, recs0 = T.record_bn_layers(net, x, labels), T.record_bn_layers(net, x, labels, eps=0.0)
    table = T.thm41_on_layers(recs, recs0)
    assert [t["layer"] for t in table] == list(range(1, 9))
    for t in table:
        assert t["fact_err"] < 1e-9 and t["eq0"] < 1e-9 and t["ineq_ok"] and t["rand_ok"]
        assert 0 <= t["f_one"] + t["f_yhat"] <= 1 and 0 <= t["viol"] <= 1 and t["scale_min"] <= t["scale_med"]
    st = T.thm41_on_network(net, x, labels)  # the same records, the same medians
    assert [t["shrink"] for t in table] == st["shrink"] and [t["gy_pos"] for t in table] == st["pos"]


def test_thm44_on_layers_stays_below_the_bound_with_lambda_the_input_matrix_norm() -> None:
    net, x, labels = _tiny_vgg()
    recs = T.record_bn_layers(net, x, labels)
    rows = T.thm44_on_layers(recs)
    assert [r.index for r in rows] == list(range(1, 9))
    for rec, r in zip(recs, rows):
        X = rec.input_matrix()
        assert (r.m, r.d) == tuple(X.shape)
        assert math.isclose(r.lam, float(torch.linalg.matrix_norm(X, ord=2)), rel_tol=1e-9)
        assert 0 < r.ratio_median <= r.ratio_max <= 1 + 1e-10


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


# ---------------------------------------------------------------------------------------------------
# --- chapter 2: the BN transform, checked numerically ---


def _plain_bn(x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor, eps: float = 1e-5):
    """Algorithm 1 in plain tensor operations, (μ, σ², x̂, y) per channel of an (N, C, H, W) input."""
    mu = x.mean((0, 2, 3), keepdim=True)
    var = ((x - mu) ** 2).mean((0, 2, 3), keepdim=True)
    x_hat = (x - mu) / torch.sqrt(var + eps)
    return mu, var, x_hat, gamma.view(1, -1, 1, 1) * x_hat + beta.view(1, -1, 1, 1)


def _conv_case(seed: int = 0) -> tuple[torch.Tensor, ...]:
    x = (torch.randn(5, 3, 4, 4, generator=gen(seed), dtype=D) * 2 - 1).requires_grad_(True)
    gamma = (torch.rand(3, generator=gen(seed + 1), dtype=D) + 0.5).requires_grad_(True)
    beta = torch.randn(3, generator=gen(seed + 2), dtype=D).requires_grad_(True)
    return x, gamma, beta, torch.randn(5, 3, 4, 4, generator=gen(seed + 3), dtype=D)


def test_backward_check_finds_every_implementation_equal_to_autograd_on_a_small_conv_input() -> None:
    r = T.backward_check(*_conv_case(), reference=_plain_bn)
    assert set(r.errors) == {"bnbook batch_norm_backward (paper's formulas)", "bnbook batch_norm_forward (autograd node)",
                             "bnbook BatchNorm layer", "torch.nn.BatchNorm2d"}
    assert all(max(e) < 1e-12 for e in r.errors.values()), r.errors
    assert r.buf_err < 1e-14 and r.gradcheck_ok and max(r.f32) < 1e-5, (r.buf_err, r.f32)
    assert r.sum_dx < 1e-14 and r.dot_dx < r.eps_term < 1e-3, (r.sum_dx, r.dot_dx, r.eps_term)
    assert all(s > 0 for s in r.scale) and r.g_ref[0].shape == (5, 3, 4, 4)
    # the reference's dl/dgamma is the textbook sum of upstream gradient times x_hat
    x, gamma, beta, dy = _conv_case()
    assert torch.allclose(r.g_ref[1], (dy * _plain_bn(x, gamma, beta)[2]).sum((0, 2, 3)).detach(), atol=1e-12)


def test_backward_check_fails_against_a_wrong_reference() -> None:
    """With the unbiased variance in the reference, every implementation disagrees with it: the check can fail."""

    def unbiased(x, gamma, beta, eps=1e-5):
        mu, _, _, _ = _plain_bn(x, gamma, beta, eps)
        var = x.var((0, 2, 3), keepdim=True)
        x_hat = (x - mu) / torch.sqrt(var + eps)
        return mu, var, x_hat, gamma.view(1, -1, 1, 1) * x_hat + beta.view(1, -1, 1, 1)

    r = T.backward_check(*_conv_case(), reference=unbiased)
    assert all(name.startswith("bnbook batch_norm_backward") or max(e) > 1e-3 for name, e in r.errors.items()), r.errors


@pytest.mark.parametrize("eps", [1e-5, 1.0])
def test_bn_identity_error_is_rounding_with_gamma_sigma_and_beta_mu(eps: float) -> None:
    u = torch.randn(40, 4, generator=gen(1), dtype=D) * torch.tensor([0.01, 1, 10, 1000], dtype=D) + 3
    assert T.bn_identity_error(u, eps) < 1e-14


def test_bias_before_bn_changes_nothing_and_gets_no_gradient() -> None:
    u, W = torch.randn(30, 8, generator=gen(2), dtype=D), torch.randn(4, 8, generator=gen(3), dtype=D)
    bias, probe = torch.randn(4, generator=gen(4), dtype=D) * 100, torch.randn(30, 4, generator=gen(5), dtype=D)
    r = T.bias_before_bn(u, W, bias, torch.ones(4, dtype=D), torch.zeros(4, dtype=D), probe)
    assert r.out_err < 1e-12 and r.grad_b < 1e-12, r
    assert not bias.requires_grad  # the caller's tensor is left alone
    # without BN the same bias would matter, and get a gradient
    b = bias.clone().requires_grad_(True)
    (g,) = torch.autograd.grad((torch.sigmoid((u @ W.T + b) / 100) * probe).sum(), b)
    assert float(g.abs().max()) > 1e-3


def test_conv_bn_channels_normalizes_each_channel_over_batch_and_positions() -> None:
    images = torch.randn(6, 3, 8, 8, generator=gen(6), dtype=D) + torch.linspace(-2, 2, 8, dtype=D)  # positions differ
    r = T.conv_bn_channels(images, channels=5, seed=1)
    assert r.feat.shape == (6, 5, 8, 8) and r.pos_mean.shape == (5, 8, 8) and r.n_params == 10
    assert float(r.chan_mean.abs().max()) < 1e-12 and float((r.chan_var - 1).abs().max()) < 1e-3
    assert float(r.pos_mean.abs().max()) > 0.1  # not normalized per position
    assert torch.equal(T.conv_bn_channels(images, channels=5, seed=1).feat, r.feat)  # the seed fixes the weights


def test_batch_variance_bias_is_m_minus_one_over_m_and_the_correction_removes_it() -> None:
    rows = T.batch_variance_bias((2, 5, 30), 20000, 3.0, seed=7)
    assert [r[0] for r in rows] == [2, 5, 30]
    for m, biased, expected, unbiased in rows:
        se = math.sqrt(2 / (m - 1) / 20000)  # relative standard error of the mean batch variance (Gaussian)
        assert expected == (m - 1) / m and abs(biased - expected) < 5 * se and abs(unbiased - 1) < 5 * se * m / (m - 1)
        assert math.isclose(unbiased, biased * m / (m - 1), rel_tol=1e-12)


def test_batch_of_one_message_is_the_layers_value_error() -> None:
    msg = T.batch_of_one_message(3)
    assert "more than one value per channel" in msg and "(1, 3)" in msg
    with pytest.raises(ValueError, match="more than one value"):
        BatchNorm(3)(torch.randn(1, 3))


def test_scale_invariance_is_exact_at_eps_zero_and_approximate_with_eps() -> None:
    W, u = torch.randn(12, 6, generator=gen(8), dtype=D), torch.randn(20, 6, generator=gen(9), dtype=D)
    probe = torch.randn(20, 12, generator=gen(10), dtype=D)
    r = T.scale_invariance(W, u, probe, (0.01, 10.0), epss=(0.0, 1e-3))
    assert [(e, a) for e, a, *_ in r.rows] == [(0.0, 0.01), (0.0, 10.0), (1e-3, 0.01), (1e-3, 10.0)]
    for eps, a, dy_, dgw, ratio, dgu in r.rows:
        if eps == 0:
            assert max(dy_, dgw, abs(ratio - 1), dgu) < 1e-10, (a, dy_, dgw, ratio, dgu)
    small_a = r.rows[2]  # eps = 1e-3 at a = 0.01: eps is comparable to a^2 sigma_B^2, the identities break
    assert small_a[2] > 1e-3, small_a
    assert r.cos < 1e-12 and r.var_min > 0
    # a < 0 flips the normalized output: BN is invariant to positive rescalings only
    y1, y_neg = T.scaled_bn_layer(W, u, probe, 1.0, 0.0)[0], T.scaled_bn_layer(W, u, probe, -2.0, 0.0)[0]
    assert torch.allclose(y_neg, -y1, atol=1e-12)
