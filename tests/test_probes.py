"""Probes measure what they claim and leave the training trajectory untouched."""

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from bnbook import models, probes, train
from bnbook.norms import BatchNorm

from conftest import TINY_VGG, assert_same_run


@pytest.mark.parametrize("norm", ["batch", "noisy", "none"])
def test_probes_do_not_change_the_trajectory(fake_cifar, norm):
    plain = dataclasses.replace(TINY_VGG, norm=norm, steps=6)
    probed = dataclasses.replace(
        plain, probe_every=2, act_layers=(1, 8), ics_layers=(2, 5), landscape=(0.5, 2.0), random_direction=True,
        sharpness_every=4,
    )
    a, b = train.train(plain), train.train(probed)
    for k in a.state:
        assert torch.equal(a.state[k], b.state[k]), k
    np.testing.assert_array_equal(a.history["train_loss"], b.history["train_loss"])
    assert b.history["probe_step"].tolist() == [0, 2, 4]
    # the per-step shift record sees only the training forward passes, never the probes' extra ones
    plain_shift = train.train(dataclasses.replace(plain, act_layers=(1, 8), probe_every=0))
    assert b.history["step_act1_mean"].shape == (6, 8) and b.history["step_act8_var"].shape == (6, 64)
    np.testing.assert_array_equal(b.history["step_act8_var"], plain_shift.history["step_act8_var"])
    assert b.history["act8_unit_quantiles"].shape == (3, len(probes.QUANTILES))
    assert b.history["act8_values"].shape == (3, probes.N_SAMPLES)
    assert b.history["land_graddiff"].shape == (3, 2) and b.history["rand_loss"].shape == (3, 2)
    # the sharpness probe at steps 0 and 4, NaN at the probe step between
    assert np.isfinite(b.history["sharp_lmax"][[0, 2]]).all() and np.isnan(b.history["sharp_lmax"][1])
    assert_same_run(b, train.train(probed))  # probes themselves are deterministic
    # every probe records each layer's ||W_i||^2: at step 0, the initial weights'
    init = models.vgg("A", TINY_VGG.width, norm, seed=TINY_VGG.seed)
    assert b.history["wnorm2"].shape == (3, 8)
    np.testing.assert_allclose(b.history["wnorm2"][0], [float(m.layer.weight.double().pow(2).sum()) for m in init.blocks])


def _dln_loss(model, x, y):
    return train.squared_error(model(x), y)


def test_ics_matches_definition_2_1_by_hand():
    torch.manual_seed(0)
    model = models.deep_linear(depth=4, width=3, norm="batch", seed=0).double()
    x, y = torch.randn(20, 3, dtype=torch.float64), torch.randn(20, 3, dtype=torch.float64)
    lr = 1e-2
    out = probes.ics(model, train.squared_error, x, y, lr, (1, 3))
    # by hand: G at W^t; G' after blocks 0 and 1 (weights, γ, β) take their SGD step
    params = dict(model.named_parameters())
    grads = dict(zip(params, torch.autograd.grad(_dln_loss(model, x, y), list(params.values()))))
    g = grads["blocks.2.layer.weight"]
    moved = models.deep_linear(depth=4, width=3, norm="batch", seed=0).double()
    with torch.no_grad():
        for n, p in moved.named_parameters():
            p.copy_(params[n] - (lr * grads[n] if n.split(".")[1] in ("0", "1") else 0))
    (g2,) = torch.autograd.grad(_dln_loss(moved, x, y), [moved.blocks[2].layer.weight])
    assert out["ics3_l2"] == pytest.approx((g - g2).norm().item(), rel=1e-10)
    cos = (g * g2).sum() / (g.norm() * g2.norm())
    assert out["ics3_cos"] == pytest.approx(cos.item(), rel=1e-10)
    assert out["ics3_l2"] > 0
    # layer #1 has no preceding layers: G' = G
    assert out["ics1_l2"] == 0 and out["ics1_cos"] == pytest.approx(1.0)


def test_landscape_on_a_quadratic_is_exact():
    """For one linear layer and squared error, L(x − ηg) and ∇L(x − ηg) − g = −ηHg are known in closed form."""
    model = models.deep_linear(depth=1, width=4, seed=0).double()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(30, 4, generator=gen, dtype=torch.float64)
    y = torch.randn(30, 4, generator=gen, dtype=torch.float64)
    mults, lr = (0.5, 1.0, 2.0), 1e-3
    out = probes.landscape(model, train.squared_error, x, y, lr, mults)
    w = model.blocks[0].layer.weight.detach()
    g = 2 * (x @ w.T - y).T @ x  # ∇_W ‖x Wᵀ − y‖²
    hg = 2 * g @ (x.T @ x)  # H g
    l0 = ((x @ w.T - y) ** 2).sum()
    for k, eta in enumerate(lr * np.array(mults)):
        expected = l0 - eta * (g * g).sum() + eta**2 / 2 * (g * hg).sum()
        assert out["land_loss"][k] == pytest.approx(expected.item(), rel=1e-10)
        assert out["land_graddiff"][k] == pytest.approx(eta * hg.norm().item(), rel=1e-10)
    assert out["land_beta"] == pytest.approx((hg.norm() / g.norm()).item(), rel=1e-10)
    assert out["land_gnorm"] == pytest.approx(g.norm().item(), rel=1e-10)


def test_random_direction_has_the_gradients_norm_and_differs():
    model = models.deep_linear(depth=3, width=4, norm="batch", seed=0).double()
    x, y = torch.randn(16, 4, dtype=torch.float64), torch.randn(16, 4, dtype=torch.float64)
    a = probes.landscape(model, train.squared_error, x, y, 1e-2, (1.0,), "gradient")
    b = probes.landscape(model, train.squared_error, x, y, 1e-2, (1.0,), "random", seed=3)
    assert a["land_loss0"] == b["land_loss0"]
    assert a["land_loss"][0] < a["land_loss0"]  # a small gradient step decreases the loss
    assert b["land_loss"][0] != a["land_loss"][0]
    with pytest.raises(ValueError, match="direction"):
        probes.landscape(model, train.squared_error, x, y, 1e-2, (1.0,), "sideways")


def test_activation_stats_describe_the_norm_output(fake_cifar):
    model = models.vgg("A", 0.125, "batch")
    x = fake_cifar["train"][0][:64]
    out = probes.activation_stats(model, x, (2,))
    # BN output with γ=1, β=0 in training mode: per-channel mean 0, variance 1
    assert np.abs(out["act2_mean"]).max() < 1e-5
    assert np.abs(out["act2_var"] - 1).max() < 1e-3
    assert out["act2_quantiles"][4] == pytest.approx(np.median(out["act2_values"]), abs=0.1)


@pytest.mark.parametrize("norm", ["batch", "noisy"])
def test_a_shared_base_gradient_gives_the_same_probes(fake_cifar, norm):
    """`run_probes` computes ∇L(x₀) once for ICS and both landscape probes: the numbers are the same bits."""
    model = train.build_model(dataclasses.replace(TINY_VGG, norm=norm)).train()
    x, y = fake_cifar["train"][0][:32], fake_cifar["train"][1][:32]
    loss_fn = torch.nn.functional.cross_entropy
    base = probes.base_gradient(model, loss_fn, x, y)
    pairs = [(probes.ics(model, loss_fn, x, y, 0.1, (2, 5)), probes.ics(model, loss_fn, x, y, 0.1, (2, 5), base=base)),
             (probes.landscape(model, loss_fn, x, y, 0.1, (0.5, 2.0)),
              probes.landscape(model, loss_fn, x, y, 0.1, (0.5, 2.0), base=base)),
             (probes.landscape(model, loss_fn, x, y, 0.1, (1.0,), "random", seed=3, prefix="rand"),
              probes.landscape(model, loss_fn, x, y, 0.1, (1.0,), "random", seed=3, prefix="rand", base=base))]
    for alone, shared in pairs:
        assert alone.keys() == shared.keys()
        for k in alone:
            np.testing.assert_array_equal(alone[k], shared[k], err_msg=k)


def _flat_hessian(model, loss_fn, x, y):
    """The exact Hessian of the training-mode loss w.r.t. every parameter, in float64, column by column."""
    params = list(model.parameters())
    grads = torch.autograd.grad(loss_fn(model(x), y), params, create_graph=True)
    g = torch.cat([t.reshape(-1) for t in grads])
    rows = [torch.cat([t.reshape(-1) for t in torch.autograd.grad(g[i], params, retain_graph=True)])
            for i in range(g.numel())]
    return torch.stack(rows)


@pytest.mark.parametrize("norm", ["none", "batch"])
def test_sharpness_is_the_top_eigenvalue_of_the_exact_hessian(norm):
    torch.manual_seed(0)
    model = models.deep_linear(4, 3, norm, seed=1).double().train()
    x, y = torch.randn(16, 3, dtype=torch.float64), torch.randn(16, 3, dtype=torch.float64)
    H = _flat_hessian(model, _dln_loss_fn, x, y)
    np.testing.assert_allclose(H, H.T, rtol=1e-9, atol=1e-9)
    evals, evecs = torch.linalg.eigh(H)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    s = probes.sharpness(model, _dln_loss_fn, x, y, steps=H.shape[0])  # a full Lanczos run is exact
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # running statistics too
    assert s["sharp_lmax"] == pytest.approx(evals[-1].item(), rel=1e-8)
    grads = torch.autograd.grad(_dln_loss_fn(model(x), y), list(model.parameters()))
    g = torch.cat([t.reshape(-1) for t in grads])
    assert s["sharp_grad"] == pytest.approx((g @ H @ g / (g @ g)).item(), rel=1e-8)
    assert s["sharp_cos"] == pytest.approx(abs((g @ evecs[:, -1] / g.norm()).item()), rel=1e-6)
    # few steps: a lower bound that is already close, as for the book's runs
    few = probes.sharpness(model, _dln_loss_fn, x, y, steps=3)["sharp_lmax"]
    assert few <= evals[-1].item() * (1 + 1e-9)


def _dln_loss_fn(pred, target):
    return train.squared_error(pred, target)


def test_end_to_end_matrix_is_the_networks_linear_map():
    """`probes.end_to_end`: the product of the W_i (no norm); with BN, out = x Mᵀ + c with c the same for every sample."""
    x = torch.randn(30, 4, dtype=torch.float64)
    for norm, input_norm in (("none", False), ("batch", False), ("batch", True)):
        net = models.deep_linear(depth=4, width=4, norm=norm, seed=1, input_norm=input_norm).double().train()
        M = probes.end_to_end(net, x)
        c = net(x).detach() - x @ M.T
        assert torch.allclose(c, c[:1].expand_as(c), atol=1e-10), norm
        if norm == "none":
            prod = torch.eye(4, dtype=torch.float64)
            for b in net.blocks:
                prod = b.layer.weight.detach() @ prod
            assert torch.allclose(M, prod, atol=1e-12) and torch.allclose(c, torch.zeros_like(c), atol=1e-10)


def test_frozen_statistics_fix_bns_mean_and_variance_at_x0():
    """With statistics frozen, the loss at x₀ is unchanged but no longer depends on the weights through μ_B, σ²_B:
    scaling W_1 (which BN undoes exactly with live statistics) now changes the output."""
    torch.manual_seed(0)
    x, y = torch.randn(40, 5, dtype=torch.float64), torch.randn(40, 5, dtype=torch.float64)
    net = models.deep_linear(depth=3, width=5, norm="batch", seed=2).double().train()
    live = net(x).detach()
    running = net.blocks[0].norm.running_mean.clone()
    with probes.frozen_statistics(net, x):
        assert torch.allclose(net(x), live, atol=1e-10)
        with torch.no_grad():
            net.blocks[0].layer.weight.mul_(2.0)
        assert not torch.allclose(net(x), live, atol=1e-3)
    assert torch.equal(net.blocks[0].norm.running_mean, running)  # freezing updated no running average
    # live statistics: the scale of W_1 drops out again (up to ε = 1e-5 against σ², which scaled by 4)
    assert torch.allclose(net(x).detach(), live, atol=1e-4)
    frozen = probes.landscape(net, train.squared_error, x, y, 1e-3, (1.0, 4.0), frozen=True)
    batch = probes.landscape(net, train.squared_error, x, y, 1e-3, (1.0, 4.0))
    assert frozen["land_loss0"] == pytest.approx(batch["land_loss0"], rel=1e-12)
    assert frozen["land_gnorm"] != pytest.approx(batch["land_gnorm"], rel=1e-6)  # g itself changes with the mode
    # the probed loss at x(η) is the frozen network's, by hand: statistics of x₀, gradient of the frozen loss
    params = list(net.parameters())
    x0 = [p.detach().clone() for p in params]
    with probes.frozen_statistics(net, x):
        g = torch.autograd.grad(train.squared_error(net(x), y), params)
        with torch.no_grad():
            for p, g_p in zip(params, g):
                p.sub_(4e-3 * g_p)
        by_hand = train.squared_error(net(x), y).item()
    with torch.no_grad():
        for p, p0 in zip(params, x0):
            p.copy_(p0)
    assert frozen["land_loss"][1] == pytest.approx(by_hand, rel=1e-10)
    assert batch["land_loss"][1] != pytest.approx(by_hand, rel=1e-6)


# --- BN at inference ---

def _bn_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(5, 4), BatchNorm(4), nn.Sigmoid(), nn.Linear(4, 3))
    with torch.no_grad():
        net[1].weight.uniform_(0.5, 2.0)
        net[1].bias.uniform_(-1.0, 1.0)
    return net


def test_predict_modes_and_no_side_effects():
    net = _bn_net()
    x = torch.randn(40, 5) * 3 + 1
    net[1].running_mean.fill_(0.3)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    net.eval()
    assert torch.equal(probes.predict(net, x, batch_size=7), net(x).argmax(1))
    pred = probes.predict(net, x, batch_size=40, batch_stats=True)
    assert not net.training  # mode restored
    for k, v in net.state_dict().items():  # running statistics untouched
        assert torch.equal(v, before[k]), k
    with torch.no_grad():
        assert torch.equal(pred, net.train()(x).argmax(1))
    # batches follow `order`, predictions come back in the original order
    net.load_state_dict(before)
    order = torch.randperm(40, generator=torch.Generator().manual_seed(1))
    pred2 = probes.predict(net, x, batch_size=10, batch_stats=True, order=order)
    with torch.no_grad():
        net.train()
        for i in range(0, 40, 10):
            idx = order[i : i + 10]
            assert torch.equal(pred2[idx], net(x[idx]).argmax(1))


@pytest.mark.parametrize("shape", [(60, 4), (12, 4, 3, 5)])
def test_population_statistics_is_algorithm_2(shape):
    bn = BatchNorm(4)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(2)) * 2 + 0.5
    (mean, var), = probes.population_statistics(bn, x, batch_size=len(x) // 3)
    dims = (0,) if len(shape) == 2 else (0, 2, 3)
    chunks = x.double().chunk(3)
    m = chunks[0].numel() // shape[1]
    mu_b = torch.stack([c.mean(dims) for c in chunks])
    var_b = torch.stack([c.var(dims, unbiased=False) for c in chunks])
    assert torch.allclose(mean.double(), mu_b.mean(0), atol=1e-6)
    assert torch.allclose(var.double(), var_b.mean(0) * m / (m - 1), atol=1e-6)
    assert torch.equal(bn.running_mean, torch.zeros(4)) and bn.training  # untouched
    inf = probes.with_statistics(bn, [(mean, var)])
    assert not inf.training and torch.equal(inf.running_var, var)
    assert torch.allclose(inf(x), (x - mean.view(1, -1, *[1] * (len(shape) - 2))) / torch.sqrt(
        var.view(1, -1, *[1] * (len(shape) - 2)) + bn.eps), atol=1e-5)
    with pytest.raises(ValueError):
        probes.with_statistics(bn, [])
    with pytest.raises(ValueError):
        probes.population_statistics(bn, x, batch_size=1)


def test_population_statistics_of_a_deeper_net_sees_normalized_inputs():
    """The second BN layer's statistics are those of what it sees in training mode (batch-normalized inputs)."""
    net = nn.Sequential(nn.Linear(5, 4), BatchNorm(4), nn.Linear(4, 4), BatchNorm(4))
    x = torch.randn(64, 5, generator=torch.Generator().manual_seed(3))
    stats = probes.population_statistics(net, x, batch_size=64)
    with torch.no_grad():
        h = net[2](net[1](net[0](x)))  # training mode: batch statistics in the first BN
    assert torch.allclose(stats[1][0], h.mean(0), atol=1e-5)
    assert torch.allclose(stats[1][1], h.var(0, unbiased=True), atol=1e-5)
