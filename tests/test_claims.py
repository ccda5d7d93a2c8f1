"""Claim records: validation, round trip through the chapter files, the tables the claims page shows."""

import numpy as np
import pytest

from bnbook import claims
from bnbook.claims import Claim

C = dict(section="3.1 Fig. 1: BN helps", claim="BN trains faster", paper="83% vs 80%", book="58.7% vs 40.5%",
         scale="VGG-11 ×0.125, 600 steps", verdict="partly")


def test_record_and_load_round_trip_in_chapter_order(tmp_path, monkeypatch):
    monkeypatch.setenv("BNBOOK_CLAIMS", str(tmp_path))
    claims.record(3, [Claim(3, **C)])
    claims.record(1, [Claim(1, **C | {"verdict": "reproduced"}), Claim(1, **C | {"claim": "x"})])
    claims.record(3, [Claim(3, **C | {"verdict": "reversed"})])  # re-executing a chapter replaces its claims
    got = claims.load()
    assert [(c.chapter, c.verdict) for c in got] == [(1, "reproduced"), (1, "partly"), (3, "reversed")]
    assert claims.summary(got) == {"reproduced": 1, "partly": 1, "reversed": 1}
    assert not list(tmp_path.glob(".*.tmp"))


def test_tables_escape_and_link():
    c = Claim(3, **C | {"book": "a < b"})
    html = claims.table([c])
    assert '<a href="03_noisy_bn_ics.html#fig-1-bn-helps">3</a>' in html and "a &lt; b" in html
    text = claims.table([c], html=False)
    assert "verdict: partly" in text and "a < b" not in text  # the text nbval compares has no measured numbers


@pytest.mark.parametrize("bad", [{"verdict": "yes"}, {"book": " "}])
def test_bad_claims_are_rejected_with_the_field(bad):
    with pytest.raises(ValueError, match="verdict|book"):
        Claim(3, **C | bad)
    with pytest.raises(ValueError, match="chapter"):
        Claim(7, **C)


def test_record_refuses_another_chapters_claims(tmp_path, monkeypatch):
    monkeypatch.setenv("BNBOOK_CLAIMS", str(tmp_path))
    with pytest.raises(ValueError, match="chapter 3"):
        claims.record(1, [Claim(3, **C)])


# --- claims decided over seeds ---

import dataclasses  # noqa: E402

from bnbook.experiments import BOOK_VGG  # noqa: E402
from bnbook.train import Run  # noqa: E402


def _run(norm, lr, seed, train_acc, test_acc, diverged=False):
    cfg = dataclasses.replace(BOOK_VGG, norm=norm, lr=lr, seed=seed)
    final = {"status": "diverged" if diverged else "ok", "train_acc": train_acc, "test_acc": test_acc,
             "train_loss": 2.3, "diverged_at": 5 if diverged else -1}
    return Run(cfg, {}, final, {})


def test_decide_follows_its_rule():
    hold, fail = claims.above([0.2, 0.25, 0.3], 0.1), claims.below([0.2, 0.25, 0.3], 0.1)
    split = claims.above([1.0, -1.0, 1.0, -1.0, 0.5], 0.0)  # the seeds disagree: the interval contains 0
    assert (hold.decision, fail.decision, split.decision) == (True, False, None)
    assert claims.decide({"a": hold, "b": hold}) == "reproduced"
    assert claims.decide({"a": hold, "b": fail}) == "partly"
    assert claims.decide({"a": hold, "b": split}) == "not robust"
    assert claims.decide({"a": fail, "b": split}) == "not robust"
    assert claims.decide({"a": fail}) == "not reproduced"
    # the opposite holding reverses the claim; undecided, it leaves it "not reproduced"
    assert claims.decide({"a": fail}, reverse={"not a": hold}) == "reversed"
    assert claims.decide({"a": fail}, reverse={"not a": split}) == "not reproduced"
    assert claims.decide({"a": split}, reverse={"not a": hold}) == "not robust"
    with pytest.raises(ValueError, match="at least one"):
        claims.decide({})


def test_a_condition_is_decided_on_the_ensemble_by_the_confidence_interval_of_its_mean():
    assert claims.t975(2) == 4.303 and claims.t975(4) == 2.776
    assert abs(claims.t975(30) - 2.042) < 1e-3 and abs(claims.t975(60) - 2.000) < 1e-3
    with pytest.raises(ValueError, match="2 seeds"):
        claims.t975(0)
    # margins 1, 2, 3: mean 2, sd 1; the 95% interval is 2 ± 4.303/sqrt(3): it contains 0, undecided
    c = claims.above([1.1, 2.1, 3.1], 0.1)
    mean, lo, hi = c.interval()
    assert mean == pytest.approx(2.0) and lo == pytest.approx(2 - 4.303 / 3 ** 0.5) and c.decision is None
    # two more seeds narrow the interval: it holds
    assert claims.above([1, 2, 3, 2, 2], 0.0).decision is True
    # one seed short of the threshold does not decide the ensemble, but the count shows it
    c = claims.above([0.3, 0.3, 0.09, 0.3, 0.3], 0.1)
    assert c.decision is True and c.held == [True, True, False, True, True]
    assert c.text().startswith("holds (4/5 seeds; margin +0.158, 95% CI +0.")
    # a ratio is tested on its log: 6 against 3 clears by a factor 2
    r = claims.above([6.0, 6.0, 6.0], 3.0, log=True)
    assert r.interval() == pytest.approx((np.log(2),) * 3) and "×2 " in r.text().replace(",", " ")
    assert claims.below([0.5, 0.5], 1.0, log=True).decision is True
    # no interval without finite margins: then every seed must agree
    assert claims.above([np.inf, 2.0, 3.0], 1.0, log=True).decision is True
    assert claims.above([np.inf, 0.5, 3.0], 1.0, log=True).decision is None
    assert claims.above([0.0, 0.0], 1.0, log=True).decision is False  # a zero ratio clears nothing
    both = claims.all_of(claims.above([0.3, 0.2], 0.1), claims.above([0.15, 0.5], 0.1))
    assert both.margins == pytest.approx((0.05, 0.1))
    with pytest.raises(ValueError, match="one kind"):
        claims.all_of(claims.above([1.0], 0.5), claims.above([1.0], 0.5, log=True))
    with pytest.raises(ValueError, match="positive"):
        claims.above([1.0], 0.0, log=True)
    assert claims.counts({"a": claims.above([1.0, 2.0], 0.0)}).startswith("a: undecided (2/2 seeds; margin +1.5")


def test_spread_and_pairing_by_seed():
    assert claims.spread([0.5, 0.6, 0.7], scale=100) == "60.0 ± 10.0 (50.0 to 70.0)"
    a = [_run("none", 0.1, s, 0.3, 0.3) for s in range(5)]
    b = [_run("noise", 0.1, s, 0.2, 0.2) for s in (2, 0, 1)]
    assert [(x.config.seed, y.config.seed) for x, y in claims.paired(a, b)] == [(0, 0), (1, 1), (2, 2)]
    assert claims.seed_label(a) == "5 seeds (0-4)" and claims.seed_label(a[:1]) == "1 seed (0)"


def _vgg_ensembles(bn_test=(0.5, 0.5, 0.5, 0.5, 0.5)):
    v = {}
    for lr in (0.1, 0.5):
        v["none", lr] = [_run("none", lr, s, 0.3 if lr == 0.1 else 0.1, 0.3 if lr == 0.1 else 0.1) for s in range(5)]
        v["batch", lr] = [_run("batch", lr, s, 0.5, bn_test[s]) for s in range(5)]
    return v


def test_a_claim_over_seeds_counts_every_seed_and_keeps_its_numbers(tmp_path, monkeypatch):
    c = claims.bn_trains_faster(_vgg_ensembles())
    assert c.verdict == "reproduced" and c.seeds == "5 seeds (0-4) per configuration"
    assert c.held == {"lr 0.1": [True] * 5, "lr 0.5": [True] * 5}
    assert c.values["test acc, BN, lr 0.1"] == [0.5] * 5 and "> 5 points" in c.rule and "95% confidence" in c.rule
    # one seed a little short of the margin at lr 0.1: the ensemble still clears it, and the count says 4/5
    short = claims.bn_trains_faster(_vgg_ensembles(bn_test=(0.5, 0.5, 0.34, 0.5, 0.5)))
    assert short.verdict == "reproduced" and short.held["lr 0.1"] == [True, True, False, True, True]
    assert "lr 0.1: holds (4/5 seeds" in short.report()
    # two seeds where BN is behind: the interval contains the threshold, the claim is not robust
    worse = claims.bn_trains_faster(_vgg_ensembles(bn_test=(0.5, 0.2, 0.5, 0.25, 0.5)))
    assert worse.verdict == "not robust" and worse.line().endswith("-> not robust")
    assert "lr 0.1: undecided (3/5 seeds" in worse.report()
    monkeypatch.setattr(claims, "REFERENCE_DIR", tmp_path / "none")  # no committed record: the verdict must match
    with pytest.raises(AssertionError, match="not robust"):
        claims.check(worse, "reproduced")
    # values and conditions survive the round trip through the chapter's file; the nbval text has no numbers
    monkeypatch.setenv("BNBOOK_CLAIMS", str(tmp_path))
    worse = claims.check(worse, "not robust")
    claims.record(3, [worse])
    (back,) = claims.load()
    assert back.conditions == worse.conditions and back.values == worse.values and back.rule == worse.rule
    assert back.basis == worse.conditions and back.stated == "not robust"
    text = claims.table([back], html=False)
    assert "seeds: 5 seeds" in text and "rule: conditions:" in text and back.book not in text


def test_check_accepts_a_run_that_differs_from_the_committed_record_only_in_undecided_conditions(tmp_path, monkeypatch):
    monkeypatch.setattr(claims, "REFERENCE_DIR", tmp_path)
    monkeypatch.setenv("BNBOOK_CLAIMS", str(tmp_path))
    committed = claims.check(claims.bn_trains_faster(_vgg_ensembles()), "reproduced")  # the machine that wrote it
    claims.record(3, [committed])
    # another machine: at lr 0.1 the interval now reaches the threshold (undecided): consistent, the stated verdict stands
    other = claims.bn_trains_faster(_vgg_ensembles(bn_test=(0.5, 0.2, 0.5, 0.25, 0.5)))
    assert other.verdict == "not robust"
    stated = claims.check(other, "reproduced")
    assert stated.stated == "reproduced" and stated.verdict == "not robust"
    assert stated.line().endswith("-> reproduced") and "the chapter states: reproduced" in stated.report()
    assert "verdict: reproduced" in claims.table([stated], html=False) and "this run: not robust" in claims.table([stated])
    assert claims.summary([stated]) == {"reproduced": 1}
    assert stated.basis == committed.conditions
    # recorded over the committed file (as the README's test command does), it still carries the first basis:
    # a third run is compared with that, not with the second
    claims.record(3, [stated])
    (back,) = claims.load()
    assert back.basis == committed.conditions and back.conditions == other.conditions
    assert claims.check(other, "reproduced").basis == committed.conditions
    # the same decisions with the mean margin moved by many seed standard deviations: another experiment
    v = _vgg_ensembles()
    v["batch", 0.1] = [_run("batch", 0.1, i, 0.95, t) for i, t in enumerate((0.95, 0.9, 0.95, 0.9, 0.92))]
    moved = claims.bn_trains_faster(v)
    assert moved.verdict == "reproduced" and claims.shift(moved.conditions["lr 0.1"], committed.conditions["lr 0.1"]) > 5
    with pytest.raises(AssertionError, match="moved by"):
        claims.check(moved, "reproduced")
    # where every seed lands alike, a move of under half the committed margin does not count (the sd's floor)
    tight = claims.above([0.99999, 0.999991, 0.999989], 0.99)
    assert claims.shift(claims.above([0.99998, 0.999979, 0.999981], 0.99), tight) < 0.1
    assert claims.shift(claims.above([0.9999] * 3, 0.99), tight) == pytest.approx(0.00009 / 0.000999, rel=1e-3)
    # on plain numbers (an artifact's ensemble against one recomputed here): the pooled sd, or a tenth of the mean
    assert claims.mean_shift([4.0, 6.0], [1.0, 3.0]) == pytest.approx(3 / np.sqrt(2))
    assert claims.mean_shift([2.1e6, 2.1e6], [2.0e6, 2.0e6]) == pytest.approx(0.5)
    assert claims.mean_shift([np.inf, 1.0], [1.0, 2.0]) == 0.0  # not finite: no measure (callers check finiteness)
    # a machine where BN loses at lr 0.1 contradicts the record (holds there, fails here): the check stops
    lost = claims.bn_trains_faster(_vgg_ensembles(bn_test=(0.2, 0.2, 0.21, 0.2, 0.2)))
    assert lost.conditions["lr 0.1"].decision is False
    with pytest.raises(AssertionError, match="contradict"):
        claims.check(lost, "reproduced")
    # and a verdict the committed record does not state is not accepted through it either
    with pytest.raises(AssertionError, match="no committed record"):
        claims.check(other, "partly")
    # a chapter that restates its verdict (here: to what this run shows) starts a new basis, this run's
    restated = claims.check(other, "not robust")
    assert restated.basis == other.conditions
    # a claim whose check failed (or never ran) is not recorded: it would become the next run's reference
    with pytest.raises(ValueError, match="not checked"):
        claims.record(3, [lost])


def test_a_diverged_run_counts_as_not_training():
    v = _vgg_ensembles()
    v["none", 0.5][3] = _run("none", 0.5, 3, float("nan"), float("nan"), diverged=True)
    c = claims.standard_stuck_at_05(v)
    assert c.verdict == "reproduced" and "1 of 5 diverged" in c.book
    v["none", 0.5][1] = _run("none", 0.5, 1, 0.35, 0.36)  # one seed that trains
    assert claims.standard_stuck_at_05(v).verdict == "not robust"


def test_chapter5_claims_decide_the_trained_networks_over_seeds():
    runs = [_run("batch", 0.1, s, 0.5, 0.5) for s in range(5)]
    larger = [{"batch": 128, "shrink": [1.3 + 0.1 * s, 2.0], "scale": [1.3, 2.0], "removed": [1e-5, 1e-4],
               "pos": [0.5, 0.5]} for s in range(5)]
    c = claims.bn_gradient_smaller(runs, larger)
    assert c.verdict == "reversed" and c.values["|dL/dy|^2/|g|^2, lowest layer"][4] == pytest.approx(1.7)
    mixed = [dict(st, shrink=[0.5 if s % 2 else 1.5, 2.0]) for s, st in enumerate(larger)]
    assert claims.bn_gradient_smaller(runs, mixed).verdict == "not reproduced"  # neither every layer smaller, nor larger
    def curv(r7, r8):
        return [{k: {"reduced": r, "pos": r, "cert": -0.02, "batch": 128, "channels": 16} for k, r in ((7, r7[s]), (8, r8[s]))}
                for s in range(5)]
    assert claims.bn_curvature_reduced(runs, curv([0.75] * 5, [0.7] * 5)).verdict == "reproduced"
    assert claims.bn_curvature_reduced(runs, curv([0.75] * 5, [0.25] * 5)).verdict == "partly"
    noisy = claims.bn_curvature_reduced(runs, curv([0.75] * 5, [0.3, 0.7, 0.5, 0.6, 0.4]))
    assert noisy.verdict == "not robust" and "H not PSD (a negative v'Hv) after layer #7 on 5 of 5 seeds" in noisy.book


def test_ray_closer_rebuilds_the_initialization_from_the_seed():
    from bnbook.train import build_model

    cfg = dataclasses.replace(BOOK_VGG, width=1 / 32)
    runs = []
    for s in range(3):
        c = dataclasses.replace(cfg, seed=s)
        trained = {k: 1.5 * v for k, v in build_model(c).state_dict().items()}  # W* = 1.5 W0: the ray passes through W0
        runs.append(Run(c, {}, {"status": "ok"}, trained))
    c = claims.ray_closer(runs)
    assert c.verdict == "reproduced" and c.values["min cos(W0, W*) over layers"] == pytest.approx([1.0] * 3)
    assert c.values["share saved, lowest layer"] == pytest.approx([1.0] * 3)  # the ray reaches W0 itself
    runs = [Run(r.config, {}, r.final, {k: -v if k.endswith("layer.weight") else v for k, v in r.state.items()})
            for r in runs]  # W* = -1.5 W0: the lemma's condition fails in every layer
    c = claims.ray_closer(runs)
    assert c.verdict == "not reproduced" and np.isnan(c.values["share saved, lowest layer"]).all()


# --- chapter 4.9's sweep claims, on rows built by hand (the artifact's format, `analysis.lr_sweep_row`) ---

def _sweep(acc, edge, seeds=3):
    """(norm, lr) → rows: test accuracy `acc(norm, lr, seed)`, lr·λ_max `edge(norm, lr, seed)` at every probe."""
    from bnbook.experiments import BOOK_VGG
    import dataclasses
    import json

    out = {}
    for norm in ("none", "batch"):
        for lr in (0.025, 0.05, 0.1, 0.2, 0.4, 0.8):
            cfg = json.loads(dataclasses.replace(BOOK_VGG, norm=norm, lr=lr).to_json())
            out[norm, lr] = [{"config": cfg | {"seed": s}, "final": {"status": "ok", "test_acc": acc(norm, lr, s)},
                              "sharp_step": [0, 100, 200, 300], "lr_lmax": [50.0] + [edge(norm, lr, s)] * 3}
                             for s in range(seeds)]
    return out


def test_sweep_claims_follow_their_rules():
    # BN trains everywhere, the standard network up to 0.1: the largest rate 8x; BN at the edge, lambda_max = 2.4/lr
    sweep = _sweep(lambda n, lr, s: 0.5 if n == "batch" or lr <= 0.1 else 0.1, lambda n, lr, s: 2.4 + 0.1 * s)
    c = claims.bn_tolerates_larger_lr(sweep)
    assert c.verdict == "reproduced" and c.values["largest lr that trains, standard"] == [0.1] * 3
    assert claims.sweep_bn_at_edge(sweep).verdict == "reproduced"
    k = claims.sweep_sharpness_inverse_lr(sweep)
    assert k.verdict == "reproduced" and np.allclose(k.values["exponent k, BN"], -1.0)
    # the standard network at the same lr·λ_max: BN's lambda_max neither lower nor higher (undecided)
    assert claims.sweep_bn_lowers_sharpness(sweep).verdict == "not robust"
    sharper_std = _sweep(lambda n, lr, s: 0.5, lambda n, lr, s: (2.0 if n == "batch" else 4.0) + 0.1 * s)
    assert claims.sweep_bn_lowers_sharpness(sharper_std).verdict == "reproduced"
    sharper_bn = _sweep(lambda n, lr, s: 0.5, lambda n, lr, s: (4.0 if n == "batch" else 2.0) + 0.1 * s)
    assert claims.sweep_bn_lowers_sharpness(sharper_bn).verdict == "reversed"
    # a sharpness that does not depend on the learning rate (k = 0) fails the scaling law and the band
    flat = _sweep(lambda n, lr, s: 0.5, lambda n, lr, s: 12.0 * lr)
    assert claims.sweep_sharpness_inverse_lr(flat).verdict == "not reproduced"
    assert claims.sweep_bn_at_edge(flat).verdict == "partly"  # in the band only at 0.1 and 0.2, where 12·lr is in 1-4
    # the standard network trains as far as BN: not 4x
    same = _sweep(lambda n, lr, s: 0.5, lambda n, lr, s: 2.0)
    assert claims.bn_tolerates_larger_lr(same).verdict == "not reproduced"


def test_vgg_landscape_normalized_divides_out_the_gradient():
    from bnbook.experiments import BOOK_VGG
    from bnbook.train import Run
    import dataclasses

    def run(norm, seed, gnorm, loss_range, graddiff):
        steps = np.arange(0, 400, 50)
        h = {"probe_step": steps, "land_gnorm": np.full(8, gnorm),
             "land_loss": np.stack([np.full(8, 1.0), np.full(8, 1.0 + loss_range)], 1),
             "land_graddiff": np.stack([np.zeros(8), np.full(8, graddiff)], 1)}
        return Run(dataclasses.replace(BOOK_VGG, norm=norm, seed=seed), h, {"status": "ok"}, {})

    # the same raw numbers, but BN's gradient 4x larger: normalized, the standard network is the rougher one
    vgg = {("none", 0.1): [run("none", s, 1.0, 1.0 + 0.01 * s, 1.0) for s in range(3)],
           ("batch", 0.1): [run("batch", s, 4.0, 1.0, 1.0) for s in range(3)]}
    c = claims.vgg_landscape_normalized(vgg)
    assert c.verdict == "reproduced"
    assert np.allclose(c.values["median gradient change / ‖g‖, standard / BN"], 4.0)
    vgg["batch", 0.1] = [run("batch", s, 0.25, 1.0, 1.0) for s in range(3)]  # now BN's is the smaller gradient
    assert claims.vgg_landscape_normalized(vgg).verdict == "reversed"


def _probed(norm, lr, seed, wnorm2, early_loss=2.3, test_acc=0.4, train_acc=0.4, init="glorot"):
    """A run whose history holds what the effective-rate and plateau claims read."""
    cfg = dataclasses.replace(BOOK_VGG, norm=norm, lr=lr, seed=seed, init=init)
    history = {"probe_step": np.array([0, 390]), "wnorm2": np.asarray(wnorm2, dtype=float),
               "train_loss": np.full(400, early_loss)}
    final = {"status": "ok", "train_acc": train_acc, "test_acc": test_acc, "train_loss": 1.5, "diverged_at": -1}
    return Run(cfg, history, final, {})


def test_auto_rate_tuning_compares_the_effective_rates_at_the_last_probe():
    start = [[1.0, 2.0], [1.0, 2.0]]
    v = {("batch", 0.1): [_probed("batch", 0.1, s, [[1.0, 2.0], [1.1, 2.2]]) for s in range(5)]}
    # lr 0.5 grew the weights 2x more (ratio 5/2 = 2.5 < 5/1.5) in every layer: reproduced
    v["batch", 0.5] = [_probed("batch", 0.5, s, [[1.0, 2.0], [2.2, 4.4 + 0.01 * s]]) for s in range(5)]
    c = claims.bn_auto_rate_tuning(v)
    assert c.verdict == "reproduced" and c.values["layer 1, lr 0.5 / lr 0.1"] == pytest.approx([2.5] * 5)
    # one layer whose norm did not grow: its ratio stays 5 and the claim fails; every layer at 5 is not reversed
    v["batch", 0.5] = [_probed("batch", 0.5, s, [[1.0, 2.0], [2.2, 2.2]]) for s in range(5)]
    assert claims.bn_auto_rate_tuning(v).verdict == "not reproduced"
    v["batch", 0.5] = [_probed("batch", 0.5, s, start[:1] + [[1.1 / (1.2 + 0.01 * s), 2.2 / 1.2]]) for s in range(5)]
    assert claims.bn_auto_rate_tuning(v).verdict == "reversed"  # the weights shrank at the larger rate: ratio 6
    # a run that diverged has fewer probes: each pair is compared at the last probe both reached
    v["batch", 0.5] = [_probed("batch", 0.5, s, [[1.0, 2.0], [2.2, 4.4]]) for s in range(5)]
    v["batch", 0.1][0] = dataclasses.replace(v["batch", 0.1][0], history=v["batch", 0.1][0].history | {
        "probe_step": np.array([0, 390, 400]), "wnorm2": np.array([[1.0, 2.0], [1.1, 2.2], [9.0, 9.0]])})
    assert claims.bn_auto_rate_tuning(v).values["layer 1, lr 0.5 / lr 0.1"] == pytest.approx([2.5] * 5)


def test_the_he_control_reads_the_plateau_and_the_accuracy_gap():
    w = [[1.0], [1.0]]
    vgg = {("none", 0.1): [_probed("none", 0.1, s, w, early_loss=2.3, test_acc=0.35) for s in range(5)],
           ("batch", 0.1): [_probed("batch", 0.1, s, w, early_loss=1.9, test_acc=0.55, train_acc=0.6) for s in range(5)]}
    he = [_probed("none", 0.1, s, w, early_loss=2.0 + 0.01 * s, test_acc=0.45, train_acc=0.45, init="he") for s in range(3)]
    plateau = claims.he_removes_plateau(vgg, he)
    assert plateau.verdict == "reproduced" and plateau.seeds == "3 seeds (0-2) per configuration"
    assert plateau.values["early loss, He"] == pytest.approx([2.0, 2.01, 2.02]) and "He init" in plateau.scale
    assert claims.bn_faster_than_he(vgg, he).verdict == "reproduced"  # 10 points in both accuracies
    he_close = [dataclasses.replace(r, final=r.final | {"test_acc": 0.53, "train_acc": 0.58}) for r in he]
    assert claims.bn_faster_than_he(vgg, he_close).verdict == "not reproduced"
    he_ahead = [dataclasses.replace(r, final=r.final | {"test_acc": 0.65 + 0.01 * k, "train_acc": 0.7})
                for k, r in enumerate(he)]
    assert claims.bn_faster_than_he(vgg, he_ahead).verdict == "reversed"  # He 10 points above BN in both
    later = [_probed("none", 0.1, s, w, early_loss=2.5 + 0.01 * s, init="he") for s in range(3)]
    assert claims.he_removes_plateau(vgg, later).verdict == "reversed"
