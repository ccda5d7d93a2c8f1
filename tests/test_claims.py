"""Claim records: validation, round trip through the chapter files, the tables the claims page shows."""

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
