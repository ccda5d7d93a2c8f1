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
    assert claims.decide({"a": [True] * 5, "b": [True] * 5}) == "reproduced"
    assert claims.decide({"a": [True] * 5, "b": [False] * 5}) == "partly"
    assert claims.decide({"a": [True] * 5, "b": [True, True, False, True, True]}) == "not robust"
    assert claims.decide({"a": [False] * 3, "b": [True, False, False]}) == "not robust"
    assert claims.decide({"a": [False] * 3}) == "not reproduced"
    # the opposite holding on every seed reverses the claim; holding on some leaves it "not reproduced"
    assert claims.decide({"a": [False] * 3}, reverse={"not a": [True] * 3}) == "reversed"
    assert claims.decide({"a": [False] * 3}, reverse={"not a": [True, False, True]}) == "not reproduced"
    with pytest.raises(ValueError, match="at least one"):
        claims.decide({})
    assert claims.counts({"lr 0.1": [True, False, True]}) == "lr 0.1: 2/3 seeds"


def test_an_undecided_seed_makes_a_condition_not_robust():
    # within the band of its threshold a seed is undecided: neither held nor failed
    assert claims.clears(3.2, 3.0, 0.5) is None and claims.clears(2.5, 3.0, 0.5) is None
    assert claims.clears(3.6, 3.0, 0.5) is True and claims.clears(3.6, 3.0, 0.5, above=False) is False
    assert claims.decide({"a": [True, None, True]}) == "not robust"
    assert claims.decide({"a": [False, None, False]}) == "not robust"
    assert claims.decide({"a": [False] * 3, "b": [True] * 3}) == "partly"
    assert claims.decide({"a": [None, False]}, reverse={"not a": [True, True]}) == "not robust"
    assert claims.counts({"a": [True, None, False]}) == "a: 1/3 seeds (1 undecided)"
    # numpy's booleans (what comparisons of measured numbers give) count as booleans
    assert claims.decide({"a": list(np.array([1.0, 2.0]) > 0)}) == "reproduced"


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
    assert c.values["test acc, BN, lr 0.1"] == [0.5] * 5 and "> 5 points" in c.rule
    # one seed where BN is not ahead (by the margin) at lr 0.1: the claim is not robust, and the line says so
    worse = claims.bn_trains_faster(_vgg_ensembles(bn_test=(0.5, 0.5, 0.34, 0.5, 0.5)))
    assert worse.verdict == "not robust" and worse.held["lr 0.1"] == [True, True, False, True, True]
    assert worse.line().endswith("-> not robust") and "lr 0.1: 4/5 seeds" in worse.report()
    with pytest.raises(AssertionError, match="not robust"):
        claims.check(worse, "reproduced")
    # values and held survive the round trip through the chapter's file; the nbval text has no numbers
    monkeypatch.setenv("BNBOOK_CLAIMS", str(tmp_path))
    claims.record(3, [worse])
    (back,) = claims.load()
    assert back.held == worse.held and back.values == worse.values and back.rule == worse.rule
    text = claims.table([back], html=False)
    assert "seeds: 5 seeds" in text and "rule: per seed" in text and back.book not in text


def test_a_diverged_run_counts_as_not_training():
    v = _vgg_ensembles()
    v["none", 0.5][3] = _run("none", 0.5, 3, float("nan"), float("nan"), diverged=True)
    c = claims.standard_stuck_at_05(v)
    assert c.verdict == "reproduced" and "1 of 5 diverged" in c.book
    v["none", 0.5][1] = _run("none", 0.5, 1, 0.35, 0.36)  # one seed that trains
    assert claims.standard_stuck_at_05(v).verdict == "not robust"
