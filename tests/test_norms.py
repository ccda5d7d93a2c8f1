"""BN from scratch against torch.nn.BatchNorm, the noisy-BN noise, ℓp layers, the norm switch."""

import math

import pytest
import torch

from bnbook import norms


@pytest.mark.parametrize("shape", [(32, 6), (8, 6, 5, 7)])
def test_batchnorm_matches_torch_outputs_gradients_and_buffers(shape):
    torch.manual_seed(0)
    ours = norms.BatchNorm(6, eps=1e-5, momentum=0.1).double()
    ref = (torch.nn.BatchNorm1d(6) if len(shape) == 2 else torch.nn.BatchNorm2d(6)).double()
    with torch.no_grad():
        for m in (ours, ref):
            m.weight.copy_(torch.linspace(0.5, 2.0, 6))
            m.bias.copy_(torch.linspace(-1.0, 1.0, 6))
    for step in range(3):  # several steps so the running buffers accumulate
        x = (torch.randn(shape, dtype=torch.float64) * 3 + 2).requires_grad_()
        g = torch.randn(shape, dtype=torch.float64)
        y1, y2 = ours(x), ref(x)
        assert torch.allclose(y1, y2, atol=1e-12), (y1 - y2).abs().max()
        grads1 = torch.autograd.grad(y1, (x, ours.weight, ours.bias), g)
        grads2 = torch.autograd.grad(y2, (x, ref.weight, ref.bias), g)
        for a, b in zip(grads1, grads2):
            assert torch.allclose(a, b, atol=1e-10), (a - b).abs().max()
    assert torch.allclose(ours.running_mean, ref.running_mean, atol=1e-12)
    assert torch.allclose(ours.running_var, ref.running_var, atol=1e-12)
    assert int(ours.num_batches_tracked) == int(ref.num_batches_tracked) == 3
    ours.eval(), ref.eval()
    x = torch.randn(shape, dtype=torch.float64)
    assert torch.allclose(ours(x), ref(x), atol=1e-12)


def test_batchnorm_float32_agrees_with_torch():
    x = torch.randn(64, 16, 8, 8) * 5 + 3
    ours, ref = norms.BatchNorm(16), torch.nn.BatchNorm2d(16)
    assert (ours(x) - ref(x)).abs().max() < 1e-5


def _reference_bn(x, gamma, beta, eps=1e-5):
    """Algorithm 1 with plain torch ops, differentiated by autograd: an independent reference."""
    mu = x.mean((0, 2, 3), keepdim=True)
    var = ((x - mu) ** 2).mean((0, 2, 3), keepdim=True)
    return (x - mu) / torch.sqrt(var + eps) * gamma.view(1, -1, 1, 1) + beta.view(1, -1, 1, 1)


def test_paper_backward_matches_autograd_of_plain_ops():
    x = torch.randn(10, 4, 3, 3, dtype=torch.float64, requires_grad=True)
    gamma = (torch.rand(4, dtype=torch.float64) + 0.5).requires_grad_()
    beta = torch.randn(4, dtype=torch.float64).requires_grad_()
    dy = torch.randn(10, 4, 3, 3, dtype=torch.float64)
    auto = torch.autograd.grad(_reference_bn(x, gamma, beta), (x, gamma, beta), dy)
    manual = norms.batch_norm_backward(dy, x.detach(), gamma.detach())
    ours = torch.autograd.grad(norms.batch_norm_forward(x, gamma, beta), (x, gamma, beta), dy)
    for a, m, o in zip(auto, manual, ours):
        assert torch.allclose(a, m, atol=1e-12)
        assert torch.allclose(a, o, atol=1e-12)


def test_second_derivatives_through_bn_are_correct():
    """Hessian-vector products through the custom BN node agree with plain-op autograd."""
    x = torch.randn(6, 3, 2, 2, dtype=torch.float64, requires_grad=True)
    gamma = (torch.rand(3, dtype=torch.float64) + 0.5).requires_grad_()
    beta = torch.randn(3, dtype=torch.float64).requires_grad_()
    w = torch.randn(6, 3, 2, 2, dtype=torch.float64)
    v = torch.randn(6, 3, 2, 2, dtype=torch.float64)

    def hvp(f):
        loss = (f(x, gamma, beta) ** 2 * w).sum()  # a non-quadratic loss of the BN output
        (g,) = torch.autograd.grad(loss, x, create_graph=True)
        return torch.autograd.grad((g * v).sum(), (x, gamma))

    for a, b in zip(hvp(_reference_bn), hvp(norms.batch_norm_forward)):
        assert torch.allclose(a, b, atol=1e-10), (a - b).abs().max()
    assert torch.autograd.gradgradcheck(lambda a, g, b: norms.batch_norm_forward(a, g, b), (x, gamma, beta))


def test_batchnorm_rejects_single_value_per_channel_in_training():
    with pytest.raises(ValueError, match="more than one value"):
        norms.BatchNorm(3)(torch.randn(1, 3))
    with pytest.raises(ValueError, match="shape"):
        norms.BatchNorm(3)(torch.randn(4, 3, 2))


def test_noise_statistics_match_the_papers_recipe():
    """With a = 0 the output is m_ij; with a = 1 it is s_ij + m_ij: check their distributions."""
    gen = torch.Generator().manual_seed(0)
    n, c, draws = 64, 32, 400
    ms, ss = [], []
    for _ in range(draws):
        state = gen.get_state()
        m = norms.inject_noise(torch.zeros(n, c), gen)
        gen.set_state(state)
        s = norms.inject_noise(torch.ones(n, c), gen) - m
        ms.append(m), ss.append(s)
    m, s = torch.stack(ms), torch.stack(ss)  # draws × n × c
    # per-step channel offsets μ_j ~ U(−0.5, 0.5): the within-step mean over samples recovers them
    mu_j = m.mean(1)
    assert mu_j.abs().max() <= 0.5 + 0.1
    assert abs(mu_j.var().item() - 1 / 12) < 0.01  # Var U(−.5,.5) = 1/12
    # within a step, m_ij − μ_j ~ U(−0.1, 0.1): spread bounded by r_μ
    assert (m - m.mean(1, keepdim=True)).abs().max() <= 0.2 + 1e-6
    # σ_j ~ U(1, 1.25); s_ij ~ N(σ_j, 0.1²)
    sigma_j = s.mean(1)
    assert 0.93 < sigma_j.min() and sigma_j.max() < 1.32  # σ_j ± 5 std of a 64-sample mean
    assert abs(sigma_j.mean().item() - 1.125) < 0.01
    assert abs((s - s.mean(1, keepdim=True)).std().item() - 0.1) < 0.005
    # the noise changes from step to step
    assert (m[0] - m[1]).abs().mean() > 0.1


def test_noisy_bn_is_seeded_train_only_and_per_channel_for_convs():
    x = torch.randn(16, 4, 5, 5)
    a, b = norms.NoisyBatchNorm(4, seed=3), norms.NoisyBatchNorm(4, seed=3)
    y1, y2 = a(x), b(x)
    assert torch.equal(y1, y2)
    assert not torch.equal(a(x), y1)  # fresh noise at the next step
    clean = norms.BatchNorm(4)(x)
    ratio = (y1 - y1.mean((2, 3), keepdim=True)) / (clean - clean.mean((2, 3), keepdim=True))
    # s_ij is the same at every spatial position of (sample i, channel j)
    assert torch.allclose(ratio, ratio[:, :, :1, :1].expand_as(ratio), atol=1e-4)
    a.eval()
    bn = norms.BatchNorm(4)
    bn(x)
    a.running_mean.copy_(bn.running_mean), a.running_var.copy_(bn.running_var)
    assert torch.allclose(a(x), bn.eval()(x))


@pytest.mark.parametrize("p", [1, 2, math.inf])
def test_lp_norm(p):
    x = torch.randn(50, 3, 4, 4, dtype=torch.float64) * 2 + 1
    layer = norms.LpNorm(3, p).double()
    y = layer(x)
    flat = x.transpose(0, 1).reshape(3, -1)
    nu = {1: flat.abs().mean(1), 2: flat.pow(2).mean(1).sqrt(), math.inf: flat.abs().amax(1)}[p]
    expected = (flat - flat.mean(1, keepdim=True)) / (nu[:, None] + layer.eps)
    assert torch.allclose(y.transpose(0, 1).reshape(3, -1), expected, atol=1e-12)
    assert torch.allclose(layer.running_nu, 0.9 + 0.1 * nu)
    assert layer.eval()(x).shape == x.shape


def test_make_norm_switch_and_errors():
    assert isinstance(norms.make_norm("batch", 3), norms.BatchNorm)
    assert isinstance(norms.make_norm("noisy", 3), norms.NoisyBatchNorm)
    assert isinstance(norms.make_norm("noise", 3), norms.Noise)
    assert norms.make_norm("linf", 3).p == math.inf
    assert isinstance(norms.make_norm("none", 3), torch.nn.Identity)
    with pytest.raises(ValueError, match="unknown norm 'bn'.*batch"):
        norms.make_norm("bn", 3)
    with pytest.raises(ValueError, match="p = 1, 2"):
        norms.LpNorm(3, p=3)
