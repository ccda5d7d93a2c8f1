"""bnbook.analysis: the summaries the chapters report, on histories built by hand and on real tiny runs.

Sections follow the module: distributions and ICS (Fig. 1 of Ioffe & Szegedy, chapter 3's shift and ICS), then the
landscape (chapter 4).
"""

import dataclasses

import numpy as np
import pytest

from bnbook import analysis
from bnbook.experiments import BOOK_MLP, BOOK_VGG
from bnbook.probes import QUANTILES
from bnbook.train import Run, train

from conftest import TINY_VGG


# --- distributions, drift and ICS (chapters 1 and 3) ---

def mlp_run(history: dict) -> Run:
    return Run(BOOK_MLP, {k: np.asarray(v) for k, v in history.items()}, {"status": "ok"}, {})


def test_unit_percentiles_picks_the_recorded_columns():
    q = np.tile(np.asarray(QUANTILES, dtype=np.float32), (4, 1))  # each column holds its own quantile level
    run = mlp_run({"act3_unit_quantiles": q, "probe_step": np.arange(4) * 50})
    assert np.allclose(analysis.unit_percentiles(run, 3), [[0.15, 0.5, 0.85]] * 4)
    with pytest.raises(ValueError, match="not recorded"):
        analysis.unit_percentiles(run, 3, (0.3,))


def test_percentile_drift_of_a_ramp_and_of_a_constant():
    n, window = 40, 5
    ramp = np.linspace(0.0, 3.9, n)  # 0.1 per probe
    q = np.zeros((n, len(QUANTILES)))
    for k, level in enumerate(QUANTILES):
        q[:, k] = ramp * level + level  # percentiles move at different speeds
    d = analysis.percentile_drift(mlp_run({"act3_unit_quantiles": q}), 3, window=window)
    speeds = np.array([0.15, 0.5, 0.85])
    # the averaged trajectory runs from the mean of the first window to the mean of the last one
    assert np.allclose(d["start"], speeds * 0.2 + speeds)
    assert np.allclose(d["shift"], speeds * (3.9 - 0.4))
    assert np.allclose(d["range"], d["shift"])
    assert np.allclose(d["noise"], 0.0)  # a smooth ramp has no probe-to-probe noise
    assert np.isclose(d["spread_start"], d["start"][2] - d["start"][0])
    flat = analysis.percentile_drift(mlp_run({"act3_unit_quantiles": np.ones((n, len(QUANTILES)))}), 3)
    assert np.allclose(flat["range"], 0) and np.allclose(flat["shift"], 0)


def test_percentile_drift_noise_estimates_the_sampling_noise():
    rng = np.random.default_rng(0)
    q = np.zeros((4000, len(QUANTILES))) + rng.normal(0, 0.2, (4000, 1))
    d = analysis.percentile_drift(mlp_run({"act3_unit_quantiles": q}), 3)
    assert np.allclose(d["noise"], 0.2, rtol=0.05)


def test_unit_drift_in_pooled_standard_deviations():
    steps, units = 300, 4
    mu = np.zeros((steps, units))
    mu[200:] = [0.0, 1.0, -2.0, 0.5]
    var = np.ones((steps, units))
    var[200:, 3] = 4.0
    d = analysis.unit_drift(mlp_run({"step_act3_mean": mu, "step_act3_var": var}), 3, window=100)
    assert np.allclose(d["mean_shift"], [0.0, 1.0, 2.0, 0.5 / np.sqrt(2.5)])
    assert np.allclose(d["std_ratio"], [1, 1, 1, 2])
    with pytest.raises(ValueError):
        analysis.unit_drift(mlp_run({"step_act3_mean": mu, "step_act3_var": var}), 3, window=200)


def test_first_eval_reaching():
    run = mlp_run({"eval_step": [100, 200, 300], "test_acc": [0.1, 0.35, 0.3]})
    assert analysis.first_eval_reaching(run, 0.3) == 200
    assert analysis.first_eval_reaching(run, 0.1) == 100
    assert analysis.first_eval_reaching(run, 0.5) is None


def vgg_history(**history) -> Run:
    return Run(BOOK_VGG, {k: np.asarray(v) for k, v in history.items()}, {"status": "ok"}, {})


def test_mean_step_shift_averages_the_successive_differences():
    # two channels; the means move by 0.5 and 0.1 per step, the variances alternate 1 ↔ 4
    steps = 5
    mu = np.stack([0.5 * np.arange(steps), -0.1 * np.arange(steps)], axis=1)
    var = np.stack([np.where(np.arange(steps) % 2, 4.0, 1.0)] * 2, axis=1)
    run = vgg_history(step_act2_mean=mu, step_act2_var=var)
    s = analysis.mean_step_shift(run, 2)
    assert s["mean"] == pytest.approx(0.3)
    assert s["var"] == pytest.approx(3.0)
    # relative to the scale at step t: σ_t alternates 1, 2 → |Δμ|/σ_t averages (0.3/1 + 0.3/2)/2 over pairs
    assert s["rel_mean"] == pytest.approx(np.mean([0.3, 0.15, 0.3, 0.15]))
    assert s["rel_var"] == pytest.approx(np.mean([3.0, 0.75, 3.0, 0.75]))
    assert analysis.mean_step_shift(run, 2, skip=3)["rel_mean"] == pytest.approx(0.15)


def test_quantile_drift_is_zero_for_a_still_distribution_and_counts_in_initial_spreads():
    q0 = np.array(QUANTILES) * 2.0  # 15 % → 0.3, 85 % → 1.7: spread 1.4
    q = np.stack([q0, q0, q0 + 0.7, 3 * q0])
    run = vgg_history(act5_quantiles=q, probe_step=np.array([0, 50, 100, 150]))
    d = analysis.quantile_drift(run, 5)
    assert d[0] == 0 and d[1] == 0
    assert d[2] == pytest.approx(0.5)
    assert d[3] == pytest.approx(np.mean(2 * q0) / 1.4)
    # measured from step 100 on: the reference is the third probe, whose spread is also 1.4
    d100 = analysis.quantile_drift(run, 5, since=100)
    assert d100[2] == 0 and d100[0] == pytest.approx(0.5)
    assert d100[3] == pytest.approx(np.mean(np.abs(3 * q0 - q0 - 0.7)) / 1.4)


def test_steps_to_uses_the_trailing_mean():
    acc = np.r_[np.zeros(10), np.ones(10)]
    run = vgg_history(train_acc=acc)
    assert analysis.steps_to(run, 1.0, window=1) == 11
    assert analysis.steps_to(run, 0.5, window=4) == 12  # the mean of steps 9..12 is 0.5
    assert analysis.steps_to(run, 1.01, window=1) is None
    assert analysis.steps_to(vgg_history(train_acc=np.zeros(0)), 0.1) is None


def test_ics_summary_takes_medians_over_the_probes_from_start():
    run = vgg_history(
        probe_step=np.array([0, 50, 100, 150]),
        ics3_l2=np.array([100.0, 1.0, 2.0, 3.0]),
        ics3_gnorm=np.array([1.0, 10.0, 10.0, 10.0]),
        ics3_cos=np.array([-1.0, 0.9, 0.8, 0.7]),
    )
    s = analysis.ics_summary(run, 3, start=50)
    assert s == pytest.approx({"l2": 2.0, "cos": 0.8, "gnorm": 10.0, "rel": 0.2, "n": 3})
    assert analysis.ics_summary(run, 3)["n"] == 4


def test_mean_spread():
    assert analysis.mean_spread([1.0, 2.0, 3.0]) == pytest.approx((2.0, 1.0, 1.0, 3.0))
    assert analysis.mean_spread([5.0]) == (5.0, 0.0, 5.0, 5.0)
    with pytest.raises(ValueError):
        analysis.mean_spread([])


# --- landscape (chapter 4) ---

def landscape_run(loss, graddiff, beta, steps=None, norm="none", prefix="land", **extra):
    loss, graddiff = np.asarray(loss, float), np.asarray(graddiff, float)
    steps = np.arange(len(loss)) * 50 if steps is None else np.asarray(steps)
    h = {"probe_step": steps, f"{prefix}_loss": loss, f"{prefix}_graddiff": graddiff,
         f"{prefix}_beta": np.asarray(beta, float)} | extra
    return Run(dataclasses.replace(BOOK_VGG, norm=norm), h, {"status": "ok"}, {})


def test_per_probe_quantities_by_hand():
    run = landscape_run([[2.0, 1.0, 5.0], [1.0, 1.0, 1.5]], [[1.0, 3.0, 2.0], [0.5, 0.25, 4.0]], [7.0, 8.0])
    np.testing.assert_allclose(analysis.landscape_per_probe(run, "loss_range"), [4.0, 0.5])
    np.testing.assert_allclose(analysis.landscape_per_probe(run, "graddiff"), [3.0, 4.0])
    np.testing.assert_allclose(analysis.landscape_per_probe(run, "beta"), [7.0, 8.0])
    with pytest.raises(ValueError, match="unknown landscape quantity"):
        analysis.landscape_per_probe(run, "curvature")


def test_overflowed_probes_count_as_infinitely_rough():
    run = landscape_run([[1.0, np.nan], [1.0, np.inf], [1.0, 2.0]], [[1.0, np.nan], [1.0, 2.0], [1.0, 2.0]],
                   [np.nan, 1.0, 1.0])
    assert analysis.landscape_per_probe(run, "loss_range").tolist() == [np.inf, np.inf, 1.0]
    assert analysis.landscape_per_probe(run, "graddiff").tolist() == [np.inf, 2.0, 2.0]
    assert analysis.landscape_per_probe(run, "beta")[0] == np.inf
    # the median of three with one inf stays finite: an overflow moves a median, it does not poison it
    assert analysis.landscape_median(run, "beta") == 1.0


def test_median_ratio_and_wins_over_the_first_steps():
    rough = landscape_run(np.zeros((4, 2)), [[0, 10], [0, 30], [0, 20], [0, 1]], [1, 1, 1, 1])
    smooth = landscape_run(np.zeros((4, 2)), [[0, 1], [0, 2], [0, 3], [0, 4]], [1, 1, 1, 1], norm="batch")
    # probed steps 0, 50, 100, 150; "until 150" keeps the first three
    assert analysis.probe_window(rough, until=150).tolist() == [True, True, True, False]
    assert analysis.probe_window(rough, since=50, until=150).tolist() == [False, True, True, False]
    assert analysis.landscape_median(rough, "graddiff", since=50, until=150) == 25.0
    assert analysis.landscape_wins(rough, smooth, "graddiff", since=150) == 0.0
    assert analysis.landscape_median(rough, "graddiff", until=150) == 20.0
    assert analysis.landscape_median(smooth, "graddiff", until=150) == 2.0
    assert analysis.landscape_ratio(rough, smooth, "graddiff", until=150) == pytest.approx(10.0)
    assert analysis.landscape_ratio(rough, smooth, "graddiff") == pytest.approx(15.0 / 2.5)
    assert analysis.landscape_wins(rough, smooth, "graddiff") == 0.75
    assert analysis.landscape_wins(rough, smooth, "graddiff", until=150) == 1.0
    with pytest.raises(ValueError, match="no probed step"):
        analysis.landscape_median(rough, "graddiff", until=0)
    with pytest.raises(ValueError, match="no probed step"):
        analysis.landscape_median(rough, "graddiff", since=200)


def test_wins_uses_the_shared_probes_of_a_diverged_run_and_refuses_mismatched_steps():
    a = landscape_run(np.zeros((2, 2)), [[0, 5], [0, 5]], [1, 1])  # diverged after two probes
    b = landscape_run(np.zeros((4, 2)), [[0, 1], [0, 9], [0, 1], [0, 1]], [1, 1, 1, 1])
    assert analysis.landscape_wins(a, b, "graddiff") == 0.5
    c = landscape_run(np.zeros((2, 2)), [[0, 1], [0, 1]], [1, 1], steps=[0, 7])
    with pytest.raises(ValueError, match="different steps"):
        analysis.landscape_wins(a, c, "graddiff")


def test_random_direction_prefix_and_step_sizes():
    run = landscape_run([[1.0, 3.0]], [[2.0, 6.0]], [9.0], prefix="rand")
    assert analysis.landscape_median(run, "loss_range", prefix="rand") == 2.0
    np.testing.assert_allclose(analysis.step_sizes(run), 0.1 * np.asarray(BOOK_VGG.landscape))
    np.testing.assert_allclose(analysis.step_sizes(run)[::2], [0.05, 0.1, 0.2, 0.4])  # √2 apart, ½× to 4× lr


def test_step_shift_by_hand():
    mean = np.array([[0.0, 1.0], [1.0, 1.0], [1.0, 3.0]])
    var = np.array([[1.0, 4.0], [2.0, 4.0], [2.0, 2.0]])
    run = landscape_run(np.zeros((1, 2)), np.zeros((1, 2)), [1], step_act2_mean=mean, step_act2_var=var)
    s = analysis.step_shift(run, 2)
    np.testing.assert_allclose(s["mean"], [0.5, 1.0])
    np.testing.assert_allclose(s["var"], [0.5, 1.0])
    np.testing.assert_allclose(s["rel_mean"], [(1 / 1 + 0) / 2, (0 + 2 / 2) / 2])
    np.testing.assert_allclose(s["rel_var"], [(1 / 1 + 0) / 2, (0 + 2 / 4) / 2])


def test_excess_kurtosis():
    gen = np.random.default_rng(0)
    g = gen.standard_normal((3, 200_000))
    np.testing.assert_allclose(analysis.excess_kurtosis(g), 0.0, atol=0.05)
    u = gen.uniform(-1, 1, 200_000)
    assert analysis.excess_kurtosis(u) == pytest.approx(-1.2, abs=0.02)  # uniform: 9/5 − 3
    lap = gen.laplace(size=200_000)
    assert analysis.excess_kurtosis(lap) == pytest.approx(3.0, abs=0.3)  # heavy tails: a noisy estimate


def test_summaries_of_a_real_probed_run(fake_cifar):
    cfg = dataclasses.replace(TINY_VGG, norm="batch", steps=6, probe_every=2, landscape=(0.5, 1.0, 2.0),
                              random_direction=True, act_layers=(2,))
    run = train(cfg)
    for prefix in ("land", "rand"):
        for q in analysis.LANDSCAPE_QUANTITIES:
            v = analysis.landscape_per_probe(run, q, prefix)
            assert v.shape == (3,) and np.all(np.isfinite(v)) and np.all(v >= 0), (prefix, q)
    # β is the largest gradient change per unit of distance moved
    gnorm = run.history["land_gnorm"]
    beta = (run.history["land_graddiff"] / (analysis.step_sizes(run)[None] * gnorm[:, None])).max(1)
    np.testing.assert_allclose(analysis.landscape_per_probe(run, "beta"), beta, rtol=1e-9)
    assert analysis.step_shift(run, 2)["mean"].shape == (5,)


def test_landscape_table_collects_medians_maxima_ratios_and_wins():
    rough = landscape_run([[0, 4], [0, 2], [0, 9]], [[0, 10], [0, 30], [0, 20]], [5, 50, 8])
    smooth = landscape_run([[0, 1], [0, 1], [0, 1]], [[0, 1], [0, 2], [0, 40]], [1, 2, 3], norm="batch")
    t = analysis.landscape_table(rough, smooth)
    assert set(t) == set(analysis.LANDSCAPE_QUANTITIES)
    row = t["graddiff"]
    assert {k: row[k] for k in ("median_a", "median_b", "max_a", "max_b", "ratio", "max_ratio")} == {
        "median_a": 20.0, "median_b": 2.0, "max_a": 30.0, "max_b": 40.0, "ratio": 10.0, "max_ratio": 0.75}
    assert row["wins"] == pytest.approx(2 / 3)
    assert row["spread_a"] == pytest.approx(np.std(np.log10([10, 30, 20])))
    assert row["spread_ratio"] == pytest.approx(row["spread_a"] / np.std(np.log10([1, 2, 40])))
    assert t["loss_range"]["ratio"] == 4.0 and t["beta"]["max_a"] == 50.0
    assert analysis.landscape_table(rough, smooth, until=100)["graddiff"]["wins"] == 1.0


def test_weight_growth_is_one_at_initialization_and_tracks_rescaling():
    from bnbook.train import build_model

    cfg = dataclasses.replace(BOOK_VGG, norm="batch")
    state = build_model(cfg).state_dict()
    run = Run(cfg, {}, {"status": "ok"}, state)
    np.testing.assert_allclose(analysis.weight_growth(run), np.ones(cfg.num_layers()))
    grown = dict(state) | {"blocks.2.layer.weight": 3 * state["blocks.2.layer.weight"]}
    g = analysis.weight_growth(Run(cfg, {}, {"status": "ok"}, grown))
    assert g[2] == pytest.approx(3.0) and np.allclose(np.delete(g, 2), 1.0)


def test_spread_is_zero_when_flat_and_one_for_decade_swings():
    flat = landscape_run(np.zeros((3, 2)), [[0, 5], [0, 5], [0, 5]], [2, 2, 2])
    assert analysis.landscape_spread(flat, "graddiff") == 0.0
    swing = landscape_run(np.zeros((2, 2)), [[0, 1], [0, 100]], [1, np.nan])
    assert analysis.landscape_spread(swing, "graddiff") == pytest.approx(1.0)
    assert analysis.landscape_spread(swing, "beta") == np.inf  # an overflowed probe
    assert analysis.landscape_spread(swing, "graddiff", since=50) == 0.0


def test_first_steps_cuts_every_history_at_the_step_and_keeps_the_last_evaluation(fake_cifar):
    cfg = dataclasses.replace(TINY_VGG, probe_every=2, landscape=(0.5, 1.0), act_layers=(2,))
    run = train(cfg)
    short = analysis.first_steps(run, 5)
    assert short.history["probe_step"].tolist() == [0, 2, 4] and short.history["land_loss"].shape == (3, 2)
    assert short.history["step"].tolist() == [0, 1, 2, 3, 4] and len(short.history["train_loss"]) == 5
    assert short.history["step_act2_mean"].shape[0] == 5 and short.history["act2_mean"].shape[0] == 3
    assert short.history["eval_step"].tolist() == [4] and short.final["test_acc"] == run.history["test_acc"][0]
    assert short.config.steps == 5 and run.config.steps == cfg.steps  # the run itself is unchanged


def test_thinned_probes_are_what_the_sparser_probes_record(fake_cifar):
    dense = dataclasses.replace(TINY_VGG, norm="batch", steps=8, probe_every=2, landscape=(0.5, 1.0, 2.0),
                                random_direction=True, act_layers=(2,), ics_layers=(3,))
    sparse = dataclasses.replace(dense, probe_every=4, landscape=(0.5, 2.0))
    got, want = analysis.thinned(train(dense), 4, (0.5, 2.0)), train(sparse)
    assert got.config == want.config and set(got.history) == set(want.history)
    for k, v in want.history.items():
        if k == "rand_beta":  # recomputed with |d| = |g|: the random direction's length differs by rounding
            np.testing.assert_allclose(got.history[k], v, rtol=1e-6)
        else:
            np.testing.assert_array_equal(got.history[k], v, err_msg=k)
    with pytest.raises(ValueError, match="not a subset"):
        analysis.thinned(got, 2, (0.5,))


def test_normalized_landscape_quantities_divide_by_the_gradients_size():
    h = {"probe_step": np.array([0, 50]), "land_loss": np.array([[1.0, 3.0], [2.0, 2.5]]),
         "land_graddiff": np.array([[0.5, 2.0], [1.0, 4.0]]), "land_gnorm": np.array([2.0, 4.0])}
    run = Run(dataclasses.replace(BOOK_VGG, lr=0.1), h, {"status": "ok"}, {})
    np.testing.assert_allclose(analysis.landscape_per_probe(run, "loss_range_rel"), [2.0 / (0.1 * 4), 0.5 / (0.1 * 16)])
    np.testing.assert_allclose(analysis.landscape_per_probe(run, "graddiff_rel"), [2.0 / 2.0, 4.0 / 4.0])


def test_effective_lr_history_and_the_growth_of_scale_invariant_weights(fake_cifar):
    # with BN after every convolution the loss is invariant to each W_i's scale: the gradient is orthogonal to W_i,
    # so every SGD step lengthens it (||W||^2 grows by lr^2 ||grad||^2) and the effective rate lr/||W||^2 only falls
    cfg = dataclasses.replace(TINY_VGG, norm="batch", lr=0.5, steps=12, probe_every=1)
    run = train(cfg)
    eff = analysis.effective_lr_history(run)
    assert eff.shape == (12, 8)
    np.testing.assert_allclose(eff, cfg.lr / run.history["wnorm2"])
    assert (np.diff(run.history["wnorm2"], axis=0) / run.history["wnorm2"][:-1] > -1e-5).all()
    assert (eff[-1] < eff[0]).all()
    # without BN nothing makes the steps orthogonal: some layer's norm falls at some step
    plain = train(dataclasses.replace(cfg, norm="none", lr=0.1))
    assert (np.diff(plain.history["wnorm2"], axis=0) < 0).any()
    # the ratio of two runs' effective rates: at the probes both reached, only if probed at the same steps
    short = dataclasses.replace(run, history=run.history | {k: run.history[k][:5] for k in ("probe_step", "wnorm2")})
    np.testing.assert_allclose(analysis.effective_lr_ratio(run, short), np.ones((5, 8)))
    shifted = dataclasses.replace(short, history=short.history | {"probe_step": short.history["probe_step"] + 1})
    with pytest.raises(ValueError, match="different steps"):
        analysis.effective_lr_ratio(run, shifted)
