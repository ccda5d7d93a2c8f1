"""The chapter 1–2 summaries: Fig. 1 percentiles and drift, steps to an accuracy, BN at inference."""

import numpy as np
import pytest
import torch
from torch import nn

from bnbook import analysis
from bnbook.norms import BatchNorm
from bnbook.probes import QUANTILES
from bnbook.experiments import BOOK_MLP
from bnbook.train import Run


def _run(history: dict) -> Run:
    return Run(BOOK_MLP, {k: np.asarray(v) for k, v in history.items()}, {"status": "ok"}, {})


def test_unit_percentiles_picks_the_recorded_columns():
    q = np.tile(np.asarray(QUANTILES, dtype=np.float32), (4, 1))  # each column holds its own quantile level
    run = _run({"act3_unit_quantiles": q, "probe_step": np.arange(4) * 50})
    assert np.allclose(analysis.unit_percentiles(run, 3), [[0.15, 0.5, 0.85]] * 4)
    with pytest.raises(ValueError, match="not recorded"):
        analysis.unit_percentiles(run, 3, (0.3,))


def test_percentile_drift_of_a_ramp_and_of_a_constant():
    n, window = 40, 5
    ramp = np.linspace(0.0, 3.9, n)  # 0.1 per probe
    q = np.zeros((n, len(QUANTILES)))
    for k, level in enumerate(QUANTILES):
        q[:, k] = ramp * level + level  # percentiles move at different speeds
    d = analysis.percentile_drift(_run({"act3_unit_quantiles": q}), 3, window=window)
    speeds = np.array([0.15, 0.5, 0.85])
    # the averaged trajectory runs from the mean of the first window to the mean of the last one
    assert np.allclose(d["start"], speeds * 0.2 + speeds)
    assert np.allclose(d["shift"], speeds * (3.9 - 0.4))
    assert np.allclose(d["range"], d["shift"])
    assert np.allclose(d["noise"], 0.0)  # a smooth ramp has no probe-to-probe noise
    assert np.isclose(d["spread_start"], d["start"][2] - d["start"][0])
    flat = analysis.percentile_drift(_run({"act3_unit_quantiles": np.ones((n, len(QUANTILES)))}), 3)
    assert np.allclose(flat["range"], 0) and np.allclose(flat["shift"], 0)


def test_percentile_drift_noise_estimates_the_sampling_noise():
    rng = np.random.default_rng(0)
    q = np.zeros((4000, len(QUANTILES))) + rng.normal(0, 0.2, (4000, 1))
    d = analysis.percentile_drift(_run({"act3_unit_quantiles": q}), 3)
    assert np.allclose(d["noise"], 0.2, rtol=0.05)


def test_unit_drift_in_pooled_standard_deviations():
    steps, units = 300, 4
    mu = np.zeros((steps, units))
    mu[200:] = [0.0, 1.0, -2.0, 0.5]
    var = np.ones((steps, units))
    var[200:, 3] = 4.0
    d = analysis.unit_drift(_run({"step_act3_mean": mu, "step_act3_var": var}), 3, window=100)
    assert np.allclose(d["mean_shift"], [0.0, 1.0, 2.0, 0.5 / np.sqrt(2.5)])
    assert np.allclose(d["std_ratio"], [1, 1, 1, 2])
    with pytest.raises(ValueError):
        analysis.unit_drift(_run({"step_act3_mean": mu, "step_act3_var": var}), 3, window=200)


def test_first_eval_reaching():
    run = _run({"eval_step": [100, 200, 300], "test_acc": [0.1, 0.35, 0.3]})
    assert analysis.first_eval_reaching(run, 0.3) == 200
    assert analysis.first_eval_reaching(run, 0.1) == 100
    assert analysis.first_eval_reaching(run, 0.5) is None


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
    assert torch.equal(analysis.predict(net, x, batch_size=7), net(x).argmax(1))
    pred = analysis.predict(net, x, batch_size=40, batch_stats=True)
    assert not net.training  # mode restored
    for k, v in net.state_dict().items():  # running statistics untouched
        assert torch.equal(v, before[k]), k
    with torch.no_grad():
        assert torch.equal(pred, net.train()(x).argmax(1))
    # batches follow `order`, predictions come back in the original order
    net.load_state_dict(before)
    order = torch.randperm(40, generator=torch.Generator().manual_seed(1))
    pred2 = analysis.predict(net, x, batch_size=10, batch_stats=True, order=order)
    with torch.no_grad():
        net.train()
        for i in range(0, 40, 10):
            idx = order[i : i + 10]
            assert torch.equal(pred2[idx], net(x[idx]).argmax(1))


@pytest.mark.parametrize("shape", [(60, 4), (12, 4, 3, 5)])
def test_population_statistics_is_algorithm_2(shape):
    bn = BatchNorm(4)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(2)) * 2 + 0.5
    (mean, var), = analysis.population_statistics(bn, x, batch_size=len(x) // 3)
    dims = (0,) if len(shape) == 2 else (0, 2, 3)
    chunks = x.double().chunk(3)
    m = chunks[0].numel() // shape[1]
    mu_b = torch.stack([c.mean(dims) for c in chunks])
    var_b = torch.stack([c.var(dims, unbiased=False) for c in chunks])
    assert torch.allclose(mean.double(), mu_b.mean(0), atol=1e-6)
    assert torch.allclose(var.double(), var_b.mean(0) * m / (m - 1), atol=1e-6)
    assert torch.equal(bn.running_mean, torch.zeros(4)) and bn.training  # untouched
    inf = analysis.with_statistics(bn, [(mean, var)])
    assert not inf.training and torch.equal(inf.running_var, var)
    assert torch.allclose(inf(x), (x - mean.view(1, -1, *[1] * (len(shape) - 2))) / torch.sqrt(
        var.view(1, -1, *[1] * (len(shape) - 2)) + bn.eps), atol=1e-5)
    with pytest.raises(ValueError):
        analysis.with_statistics(bn, [])
    with pytest.raises(ValueError):
        analysis.population_statistics(bn, x, batch_size=1)


def test_population_statistics_of_a_deeper_net_sees_normalized_inputs():
    """The second BN layer's statistics are those of what it sees in training mode (batch-normalized inputs)."""
    net = nn.Sequential(nn.Linear(5, 4), BatchNorm(4), nn.Linear(4, 4), BatchNorm(4))
    x = torch.randn(64, 5, generator=torch.Generator().manual_seed(3))
    stats = analysis.population_statistics(net, x, batch_size=64)
    with torch.no_grad():
        h = net[2](net[1](net[0](x)))  # training mode: batch statistics in the first BN
    assert torch.allclose(stats[1][0], h.mean(0), atol=1e-5)
    assert torch.allclose(stats[1][1], h.var(0, unbiased=True), atol=1e-5)
