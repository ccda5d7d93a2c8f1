"""The claims the book checks: one definition each, the chapters decide them, the claims page lists them.

A claim about training is one function here (`bn_trains_faster`, `vgg_ics_not_reduced`, ...): it takes
the ensembles of runs it rests on (every seed of each configuration), computes its statistic on each
seed, and returns a `Claim` with the numbers (mean ± sd, min to max over seeds, and the per-seed values),
the paper's numbers, the rule and the verdict that the rule decides (`decide`). Each condition of a rule is
decided on the ensemble, by the 95% confidence interval of its mean margin over the seeds (`Condition`),
never by whether one seed clears it: another machine's rounding moves every seed. The chapter cell calls it,
shows its table and asserts its verdict; thresholds live here only. Mathematical statements checked
numerically are written as `Claim(...)` in their chapter, with the tolerance as their rule.

A chapter's last cell calls `record(chapter, [...])`, which writes `data/artifacts/claims/chapter{N}.json`
(committed, so the claims page also renders on its own). The claims page reads every chapter's file
with `load()` and shows `table(...)`. Nothing in it is typed by hand: re-executing a chapter rewrites
its file, and nbval compares the claims page's text table (no measured numbers) with the committed one.
"""

from __future__ import annotations

import json
import os
from html import escape
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import torch

from .analysis import LANDSCAPE_NAMES
from .data import atomic_write
from .plots import fold

CLAIMS_ENV = "BNBOOK_CLAIMS"
VERDICTS = ("reproduced", "partly", "not robust", "not reproduced", "reversed", "confirmed", "refuted")
# the notebook of each chapter, for links from the claims page to the section that checks a claim
NOTEBOOKS = {1: "01_ics", 2: "02_bn_algorithm", 3: "03_noisy_bn_ics", 4: "04_landscape", 5: "05_theory"}


@dataclass(frozen=True)
class Claim:
    """One checked claim: what the paper says and reports, what the book measured, at which scale.

    `section` is the exact title of the section that checks it (the link target). `verdict` is one of
    `VERDICTS`: "reproduced"/"partly"/"not robust"/"not reproduced"/"reversed" for experimental claims
    (see `decide`), and "confirmed"/"refuted" for mathematical statements checked numerically. `rule`
    says how the verdict is decided (statistic, threshold, margin); `seeds`, for a claim about training,
    the ensemble it rests on; `values`, the per-seed numbers behind `book` (name → one value per seed);
    `conditions`, the rule's conditions with their per-seed margins (what `decide` read, the opposite's
    included where the claim can be reversed); `held`, whether each cleared its threshold seed by seed.
    `stated`: the verdict the chapter states, once `check` has found this run consistent with it (see there):
    the verdict of the book, where `verdict` is this run's. `basis`: the conditions of the run that stated it
    (the committed record's, carried over unchanged by every later run that `check` accepts).
    """

    chapter: int
    section: str
    claim: str
    paper: str
    book: str
    scale: str
    verdict: str
    rule: str = ""
    seeds: str = ""
    values: dict[str, list[float]] = field(default_factory=dict, compare=False)
    conditions: dict[str, Condition] = field(default_factory=dict, compare=False)
    stated: str = ""
    basis: dict[str, Condition] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        # from a chapter's JSON file the conditions come back as dicts
        for name in ("conditions", "basis"):
            object.__setattr__(self, name, {k: c if isinstance(c, Condition) else Condition(**c)
                                            for k, c in getattr(self, name).items()})
        if self.chapter not in NOTEBOOKS:
            raise ValueError(f"chapter={self.chapter!r} must be one of {sorted(NOTEBOOKS)}")
        for name in ("verdict", "stated"):
            if getattr(self, name) not in VERDICTS + (("",) if name == "stated" else ()):
                raise ValueError(f"{name}={getattr(self, name)!r} must be one of {VERDICTS}")
        for f in fields(self):
            if f.name in ("chapter", "rule", "seeds", "values", "conditions", "stated", "basis"):
                continue
            if not str(getattr(self, f.name)).strip():
                raise ValueError(f"Claim.{f.name} is empty")

    @property
    def held(self) -> dict[str, list[bool]]:
        """Whether each condition cleared its threshold, seed by seed."""
        return {k: c.held for k, c in self.conditions.items()}

    def line(self) -> str:
        """The claim, its ensemble and the book's verdict (`stated`, once checked): the same on any machine."""
        return fold(f"{self.claim} [{self.seeds or 'no training'}] -> {self.stated or self.verdict}")

    def report(self) -> str:
        """Everything about the claim, its measured numbers included (they vary by machine: not for nbval)."""
        lines = [f"claim: {self.claim}", f"paper: {self.paper}", f"book ({self.scale}): {self.book}"]
        lines += [f"{k}: {getattr(self, k)}" for k in ("seeds", "rule") if getattr(self, k)]
        if self.conditions:
            lines.append(f"conditions: {counts(self.conditions)}")
        lines.append(f"verdict: {self.verdict}")
        if self.stated and self.stated != self.verdict:
            lines.append(f"the chapter states: {self.stated} (this run differs only in conditions that one of the two "
                         "leaves undecided; see `check`)")
        return "\n".join([fold(line) for line in lines] + ([self.values_table()] if self.values else []))

    def values_table(self) -> str:
        """The per-seed numbers as text, one quantity per line (in the order of the runs' seeds)."""
        if not self.values:
            return ""
        return "\n".join(["per seed:"] + [fold(f"  {k}: " + ", ".join(f"{x:.4g}" for x in v), "      ")
                                          for k, v in self.values.items()])

    def link(self) -> str:
        """The HTML page and anchor of the section that checks the claim (Sphinx's section id)."""
        from docutils.nodes import make_id  # Sphinx's own rule for section ids; docutils comes with the book

        return f"{NOTEBOOKS[self.chapter]}.html#{make_id(self.section)}"


REFERENCE_DIR = Path(__file__).resolve().parent.parent / "data" / "artifacts" / "claims"  # committed


def claims_dir() -> Path:
    """Where chapters record their claims: `$BNBOOK_CLAIMS`, else `REFERENCE_DIR` (the committed records)."""
    env = os.environ.get(CLAIMS_ENV)
    return Path(env).resolve() if env else REFERENCE_DIR


def record(chapter: int, claims: list[Claim]) -> Path:
    """Replace `chapter`'s recorded claims by `claims` (atomically) and return the file."""
    wrong = [c for c in claims if c.chapter != chapter]
    if wrong:
        raise ValueError(f"record({chapter}, ...) got claims of chapter {wrong[0].chapter}")
    unchecked = [c.claim for c in claims if c.conditions and not c.stated]
    if unchecked:  # a claim whose check failed (or never ran) must not become the next run's reference
        raise ValueError(f"record({chapter}, ...): not checked against the chapter's verdict (claims.check): {unchecked}")
    path = claims_dir() / f"chapter{chapter}.json"
    text = json.dumps([asdict(c) for c in claims], indent=1, ensure_ascii=False) + "\n"
    atomic_write(path, lambda f: f.write(text.encode()))
    return path


def load(folder: Path | None = None, chapters: Sequence[int] | None = None) -> list[Claim]:
    """Every recorded claim in `folder` (default `claims_dir()`) of `chapters` (default: all), by chapter and in
    each chapter's order; a chapter with no file is skipped."""
    out: list[Claim] = []
    for chapter in sorted(NOTEBOOKS if chapters is None else chapters):
        path = (folder or claims_dir()) / f"chapter{chapter}.json"
        if path.exists():
            out += [Claim(**d) for d in json.loads(path.read_text())]
    return out


def table(claims: list[Claim], html: bool = True) -> str:
    """The claims as an HTML table with links to their sections (for the book) or as plain text (for nbval).

    The text form leaves out the book's measured numbers: nbval compares it digit by digit, and those
    numbers differ from one machine to the next (each chapter checks its own against their tolerances).
    What it keeps, the claims, the papers' values, the scales and the verdicts, must be the same anywhere.
    """
    if not html:
        cols = ("claim", "paper", "scale", "seeds", "rule")
        return "\n".join(f"[{c.chapter}] {c.section}\n"
                         + "".join(f"  {k}: {getattr(c, k)}\n" for k in cols if getattr(c, k))
                         + f"  verdict: {c.stated or c.verdict}\n" for c in claims)
    def td(text: str) -> str:
        return f'<td style="vertical-align: top; overflow-wrap: anywhere">{text}</td>'

    rows = [
        "<tr>" + td(f'<a href="{escape(c.link())}">{c.chapter}</a>') + td(escape(c.claim)) + td(escape(c.paper))
        + td(f'{escape(c.book)}<br><small style="opacity: 0.7">{escape(c.scale)}'
             + (f"; {escape(c.seeds)}" if c.seeds else "") + "</small>"
             + (f'<br><small style="opacity: 0.7">rule: {escape(c.rule)}</small>' if c.rule else "")
             + (f'<br><small style="opacity: 0.7">conditions: {escape(counts(c.conditions))}</small>' if c.conditions else ""))
        + td(f"<b>{escape(c.stated or c.verdict)}</b>"
             + (f'<br><small style="opacity: 0.7">this run: {escape(c.verdict)}</small>' if c.stated not in ("", c.verdict) else "")
             ) + "</tr>"
        for c in claims
    ]
    widths = {"§": 5, "claim": 22, "paper": 21, "book (scale)": 37, "verdict": 15}  # percent of the column
    head = "".join(f"<th>{k}</th>" for k in widths)
    cols = "".join(f'<col style="width: {w}%">' for w in widths.values())
    # the book's content column is narrow: small type, fixed column shares, long words broken, so it never scrolls
    return (f'<table class="claims" style="font-size: 0.8em; width: 100%; table-layout: fixed">'
            f'<colgroup>{cols}</colgroup><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>')


def summary(claims: list[Claim]) -> dict[str, int]:
    """How many claims have each verdict (the book's: `stated`, where the chapter checked it)."""
    return {v: n for v in VERDICTS if (n := sum((c.stated or c.verdict) == v for c in claims))}


# --- deciding a claim over seeds ---

RULE = ("each condition's margin (how far a seed's statistic clears its threshold; for a ratio, the factor) is "
        "averaged over the seeds: the condition holds if the 95% confidence interval of that mean (Student's t) "
        "clears the threshold, fails if it lies wholly on the other side, and is undecided if it contains it; "
        "reproduced if every condition holds, partly if some hold and the others fail, not robust if one is "
        "undecided, not reproduced if all fail")

# Student's t, 97.5th percentile, by degrees of freedom (the two-sided 95% interval of a mean over n seeds
# has n - 1); numpy has no t quantile and the book needs no scipy for 15 numbers
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131)


def t975(df: int) -> float:
    """The 97.5th percentile of Student's t with `df` degrees of freedom (beyond the table, the Cornish-Fisher
    expansion around the normal's 1.96, within 0.001 of the exact value there)."""
    if df < 1:
        raise ValueError(f"df={df}: a confidence interval needs at least 2 seeds")
    if df <= len(_T975):
        return _T975[df - 1]
    z = 1.959964
    return z + (z ** 3 + z) / (4 * df) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * df ** 2)


@dataclass(frozen=True)
class Condition:
    """One condition of a claim, measured on every seed: `margins[i]` > 0 where seed i's statistic clears the
    threshold (the difference from it; for a ratio, `log=True`, the log of the factor by which it clears it).

    The condition is decided on the ensemble, not seed by seed (`decision`): another machine's rounding moves
    every trajectory, so a rule that any one seed can flip (the least stable statistic there is) gives
    another verdict there; the mean over seeds, with its confidence interval, is what an ensemble pins down.
    """

    margins: tuple[float, ...]
    log: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "margins", tuple(float(m) for m in np.ravel(self.margins)))
        if not self.margins:
            raise ValueError("a condition needs at least one seed")

    @property
    def held(self) -> list[bool]:
        """Whether each seed cleared the threshold (what the counts show; the decision is the ensemble's)."""
        return [m > 0 for m in self.margins]

    def interval(self) -> tuple[float, float, float]:
        """(mean margin, lower, upper end of its 95% confidence interval); one seed: its margin thrice."""
        m = np.asarray(self.margins)
        if len(m) == 1 or not np.isfinite(m).all():
            return float(m.mean()), float(m.min()), float(m.max())
        half = t975(len(m) - 1) * m.std(ddof=1) / np.sqrt(len(m))
        return float(m.mean()), float(m.mean() - half), float(m.mean() + half)

    @property
    def decision(self) -> bool | None:
        """True (holds) if the interval lies above 0, False (fails) if below, None (undecided) if it contains 0.

        A non-finite margin (an overflowed probe) leaves no interval: then the condition holds or fails only
        if every seed agrees. A single seed is decided by its sign alone (no ensemble to speak of).
        """
        _, lo, hi = self.interval()
        if np.isnan(lo) or np.isnan(hi):
            return None
        return True if lo > 0 else False if hi < 0 else None

    def text(self) -> str:
        """"holds (5/5 seeds; margin 0.12, 95% CI 0.08 to 0.16)"; for a ratio the factors: "×2.3 (×1.5 to ×3.4)"."""
        word = {True: "holds", False: "fails", None: "undecided"}[self.decision]
        mean, lo, hi = self.interval()
        f = (lambda v: f"×{np.exp(v):.3g}") if self.log else (lambda v: f"{v:+.3g}")
        if len(self.margins) == 1:
            ci = f"margin {f(mean)}"
        elif np.isfinite(self.margins).all():
            ci = f"margin {f(mean)}, 95% CI {f(lo)} to {f(hi)}"
        else:  # no interval: the seeds' range
            ci = f"margins {f(lo)} to {f(hi)}, not all finite"
        return f"{word} ({sum(self.held)}/{len(self.margins)} seeds; {ci})"


def _margins(x, threshold: float, log: bool, sign: float) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if log:
        if threshold <= 0:
            raise ValueError(f"threshold={threshold}: a ratio's threshold must be positive")
        with np.errstate(divide="ignore", invalid="ignore"):  # a ratio of 0 clears nothing: log 0 = -inf
            return sign * (np.log(x) - np.log(threshold))
    return sign * (x - threshold)


def above(x: Sequence[float], threshold: float, log: bool = False) -> Condition:
    """The condition "x > threshold", seed by seed; `log`: x is a ratio, its margin the log of x / threshold."""
    return Condition(_margins(x, threshold, log, 1.0), log)


def below(x: Sequence[float], threshold: float, log: bool = False) -> Condition:
    """The condition "x < threshold", seed by seed (see `above`)."""
    return Condition(_margins(x, threshold, log, -1.0), log)


def all_of(*conditions: Condition) -> Condition:
    """Several conditions that must all hold, as one: seed by seed, the smallest margin (same units only)."""
    if len({c.log for c in conditions}) != 1 or len({len(c.margins) for c in conditions}) != 1:
        raise ValueError("all_of needs conditions of one kind (all ratios or all differences) on the same seeds")
    return Condition(np.min([c.margins for c in conditions], axis=0), conditions[0].log)


def reference(claim: Claim) -> Claim | None:
    """The committed record of `claim` (same chapter and text, in `REFERENCE_DIR`), or None."""
    return next((c for c in load(REFERENCE_DIR, [claim.chapter]) if c.claim == claim.claim), None)


# How far a condition's mean margin may move from the committed record's, in seed standard deviations (pooled
# over the two ensembles), before the run counts as another experiment rather than another machine. A machine
# moves an ensemble's mean as a new draw of its seeds does: by about sd * sqrt(2/n), 0.6-0.8 sd for 3-5 seeds;
# measured between the two float configurations here, the largest move (Welch's t) was 2.3 standard errors of
# 94 conditions. 5 sd is about 6-8 standard errors of the difference. The sd has a floor of a tenth of the
# committed mean margin: where every seed lands alike (a cosine of 0.99999 +- 1e-6 against a threshold of 0.99), the
# seeds' sd says nothing about what another CPU's rounding does, and a move of less than half the margin by which
# the committed run cleared its threshold is no sign of another experiment.
SHIFT_LIMIT = 5.0


def shift(live: Condition, ref: Condition) -> float:
    """|mean margin of `live` - that of `ref`| in seed standard deviations (pooled, at least a tenth of `ref`'s mean
    margin: see `SHIFT_LIMIT`); 0 where either is not finite or has a single seed."""
    return mean_shift(live.margins, ref.margins)


def mean_shift(live: Sequence[float], ref: Sequence[float]) -> float:
    """How far the mean of one ensemble's numbers (`live`, e.g. recomputed on this machine) is from another's (`ref`,
    e.g. a committed artifact's), in seed standard deviations: pooled, at least a tenth of `ref`'s mean (see
    `SHIFT_LIMIT`); 0 where either has a number that is not finite or a single seed."""
    a, b = np.asarray(live, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    if not (np.isfinite(a).all() and np.isfinite(b).all()) or len(a) < 2 or len(b) < 2:
        return 0.0
    sd = max(np.sqrt((a.var(ddof=1) + b.var(ddof=1)) / 2), abs(b.mean()) / 10)
    diff = abs(a.mean() - b.mean())
    return float(diff / sd) if sd > 0 else (0.0 if diff <= 1e-12 * max(1.0, abs(b.mean())) else float("inf"))


def _basis(ref: Claim) -> dict[str, Condition]:
    return ref.basis or ref.conditions


def contradictions(claim: Claim, ref: Claim) -> list[str]:
    """The conditions that hold in `claim` and fail in the committed `ref`'s basis, or the other way round
    (undecided in either: no contradiction), and those whose mean margin moved by more than `SHIFT_LIMIT`
    seed standard deviations. Both must have the same conditions (the same rule)."""
    basis = _basis(ref)
    if set(claim.conditions) != set(basis):
        raise ValueError(f"not the same rule: conditions {sorted(set(claim.conditions) ^ set(basis))} differ")
    return [k for k, c in claim.conditions.items()
            if {c.decision, basis[k].decision} == {True, False} or shift(c, basis[k]) > SHIFT_LIMIT]


def check(claim: Claim, expected: str) -> Claim:
    """The claim with `stated=expected`, if this run is consistent with the verdict the chapter states; else stop.

    With no committed record of the claim under the same rule (`reference`: same conditions, same rule text),
    the verdict must be `expected`, and this run becomes the basis of the stated verdict. With one, the run is
    compared with the record's basis: no condition may hold in one and fail in the other, nor move its mean
    margin by more than `SHIFT_LIMIT` seed standard deviations (`contradictions`); then the verdict may differ
    from `expected` only in conditions that one of the two leaves undecided. On another machine every
    trajectory moves: a condition whose confidence interval reaches its threshold on one machine may clear it
    on the next (measured: chapter 3's ICS cosine at layer #6, t = 1.0 natively and 13.8 with the AVX2
    kernels), so the claim reads "not robust" on one and "reproduced" on the other; that is the uncertainty
    its ensemble leaves, not a contradiction. The basis is carried over unchanged, so a run recorded over the
    committed one (the README's test command does that) cannot move the next comparison.
    """
    ref = reference(claim) if claim.conditions else None
    same_rule = ref is not None and ref.rule == claim.rule and set(_basis(ref)) == set(claim.conditions)
    # the record is the reference only for the verdict it states: a chapter that states another restates it
    same_rule = same_rule and (ref.stated or ref.verdict) == expected
    bad = contradictions(claim, ref) if same_rule else []
    if bad:
        basis = _basis(ref)
        raise AssertionError(
            f"verdict {claim.verdict!r}, the chapter says {expected!r}; these conditions contradict the committed record "
            f"({REFERENCE_DIR.name}/chapter{claim.chapter}.json; delete it to restate the chapter's claims on purpose): "
            + "; ".join(f"{k}: this run {claim.conditions[k].text()}, committed {basis[k].text()}, mean moved by "
                        f"{shift(claim.conditions[k], basis[k]):.1f} sd" for k in bad) + f"\n{claim.report()}")
    if claim.verdict != expected and not same_rule:
        raise AssertionError(f"verdict {claim.verdict!r}, the chapter says {expected!r} (and no committed record of that "
                             f"verdict under the same rule):\n{claim.report()}")
    return replace(claim, stated=expected, basis=_basis(ref) if same_rule else claim.conditions)


def decide(conditions: dict[str, Condition], reverse: dict[str, Condition] | None = None) -> str:
    """The verdict of a claim from its conditions, each decided on the ensemble (`RULE`, `Condition.decision`).

    `conditions` maps each condition (e.g. "lr 0.1", "layer #3") to its per-seed margins. One undecided
    condition makes the claim "not robust": the ensemble does not pin it down, so the verdict would depend
    on the seeds, as on another machine it would depend on the rounding.
    `reverse`: conditions for the opposite of the claim; when all of them hold (and the claim's own all
    fail), the verdict is "reversed".
    """
    if not conditions:
        raise ValueError("decide needs at least one condition")
    own = [c.decision for c in conditions.values()]
    if reverse and all(c.decision is True for c in reverse.values()) and all(d is False for d in own):
        return "reversed"
    if all(d is True for d in own):
        return "reproduced"
    if any(d is None for d in own):
        return "not robust"
    return "partly" if any(own) else "not reproduced"


def counts(conditions: dict[str, Condition]) -> str:
    """Each condition's decision, its count of seeds and its margin: "lr 0.1: holds (5/5 seeds; margin ...)"."""
    return "; ".join(f"{k}: {c.text()}" for k, c in conditions.items())


def spread(values: Sequence[float], fmt: str = ".1f", scale: float = 1.0) -> str:
    """Numbers over seeds as "mean ± sd (min to max)" (× `scale`, e.g. 100 for percentages).

    NaN (a diverged run's accuracy) is left out and counted: "... (min to max; 1 of 5 NaN)".
    """
    from .analysis import mean_spread

    v = scale * np.asarray(values, dtype=np.float64)
    finite = v[np.isfinite(v)]
    if finite.size == 0:
        return f"n/a ({v.size} of {v.size} not finite)"
    mean, sd, lo, hi = mean_spread(finite)
    missing = f"; {v.size - finite.size} of {v.size} not finite" if finite.size < v.size else ""
    return f"{mean:{fmt}} ± {sd:{fmt}} ({lo:{fmt}} to {hi:{fmt}}{missing})"


def seed_label(runs: Sequence) -> str:
    """The ensemble of `runs` as text: "5 seeds (0-4)"."""
    s = sorted(r.config.seed for r in runs)
    if len(s) == 1:
        return f"1 seed ({s[0]})"
    return f"{len(s)} seeds ({s[0]}-{s[-1]})" if s == list(range(s[0], s[0] + len(s))) else f"seeds {s}"


def scale_of(run_or_config) -> str:
    """A run's (or a configuration's) scale without its norm, learning rate and seed (which the claims vary)."""
    c = getattr(run_or_config, "config", run_or_config)
    return c.label().replace(f"norm={c.norm}, lr={c.lr:g}, ", "").rsplit(", seed", 1)[0]


def lr_text(lr: float) -> str:
    """A learning rate as the papers write it: 0.1, 0.01, 1e-6."""
    return f"{lr:g}" if lr >= 1e-3 else f"{lr:.0e}".replace("e-0", "e-")


def paired(*ensembles: Sequence) -> list[tuple]:
    """The runs of several ensembles seed by seed, over the seeds they share (in seed order)."""
    by_seed = [{r.config.seed: r for r in e} for e in ensembles]
    common = sorted(set.intersection(*(set(b) for b in by_seed)))
    if not common:
        raise ValueError("the ensembles share no seed")
    return [tuple(b[s] for b in by_seed) for s in common]


def _claim(chapter: int, section: str, claim: str, paper: str, book: str, scale: str,
           holds: dict[str, Condition], test: str, runs: Sequence | str, values: dict[str, Sequence[float]],
           reverse: dict[str, Condition] | None = None) -> Claim:
    """A training claim decided by `decide(holds, reverse)`; `test` is its conditions in words (each tested on
    every seed); `runs`, one ensemble the claim rests on (or its seeds in words, where configurations have
    different ensembles)."""
    seeds = runs if isinstance(runs, str) else f"{seed_label(runs)} per configuration"
    rule = f"conditions: {test}; {RULE}" + ("; reversed if the opposite's conditions all hold" if reverse else "")
    return Claim(chapter, section, claim, paper, book, scale, decide(holds, reverse), rule=rule, seeds=seeds,
                 values={k: [float(x) for x in v] for k, v in values.items()}, conditions=holds | (reverse or {}))


# --- chapter 3: BN helps; distributions; noisy BN; ICS (Santurkar et al. Figs. 1-3) ---

S3_FIG1 = "3.2 BN helps, yet the distributions are not what changes most (Fig. 1)"
S3_DIST = "The distributions"
S3_NOISY = "Training with unstable distributions"
S3_VGG = "VGG"
S3_DLN = "The 25-layer deep linear network"
CHANCE = 0.1  # CIFAR-10 has 10 balanced classes


def accuracy(run, key: str = "test_acc") -> float:
    """A run's final accuracy ("test_acc", "train_acc"); a diverged run's is chance: it does not train."""
    return CHANCE if run.diverged else float(run.final[key])


FASTER_BY = 0.05  # "trains faster": final training and test accuracy each more than 5 points higher


def _faster(pairs: Sequence[tuple]) -> Condition:
    """Per seed's (slower, faster) pair: the faster run's final training and test accuracy each exceed the slower
    one's by more than `FASTER_BY` (a diverged run's accuracy counts as chance)."""
    return all_of(*(above([accuracy(b, k) - accuracy(s, k) for s, b in pairs], FASTER_BY)
                    for k in ("train_acc", "test_acc")))


def bn_trains_faster(vgg: dict[tuple[str, float], Sequence]) -> Claim:
    """Santurkar et al. Fig. 1: with BN the VGG trains faster, at lr 0.1 and at lr 0.5.

    `vgg[(norm, lr)]`: the ensemble of the book's VGG for norm "none"/"batch" and lr 0.1/0.5. Per seed
    and rate: BN's training accuracy (last 100 steps) and test accuracy both exceed the standard
    network's by more than 5 points (a diverged run's accuracy counts as chance).
    """
    holds, values = {}, {}
    for lr in (0.1, 0.5):
        pairs = paired(vgg["none", lr], vgg["batch", lr])
        holds[f"lr {lr:g}"] = _faster(pairs)
        values[f"test acc, standard, lr {lr:g}"] = [accuracy(s) for s, _ in pairs]
        values[f"test acc, BN, lr {lr:g}"] = [accuracy(b) for _, b in pairs]
    gap = np.subtract(values["test acc, BN, lr 0.1"], values["test acc, standard, lr 0.1"])
    book = "; ".join(f"test acc BN {spread(values[f'test acc, BN, lr {lr:g}'], scale=100)}% vs standard "
                     f"{spread(values[f'test acc, standard, lr {lr:g}'], scale=100)}% (lr {lr:g})" for lr in (0.1, 0.5))
    book += f"; BN − standard at lr 0.1: {spread(gap, scale=100)} points"
    return _claim(3, S3_FIG1, "BN trains faster than the standard network at learning rates 0.1 and 0.5.",
                  "test acc 83% (BN) vs 80% (standard) at lr 0.1; ≈ 80% vs ≈ 10% at lr 0.5 (15k steps, one seed)",
                  book, scale_of(vgg["none", 0.1][0]), holds,
                  "BN's final training and test accuracy each > 5 points above the standard network's", vgg["none", 0.1],
                  values)


def standard_stuck_at_05(vgg: dict[tuple[str, float], Sequence]) -> Claim:
    """Santurkar et al. Fig. 1: without BN the VGG does not train at lr 0.5 (it stays at chance).

    Per seed: the standard network's test accuracy and training accuracy (last 100 steps) stay below
    chance + 10 points (20%); a diverged run counts as not training (chance accuracy).
    """
    runs = vgg["none", 0.5]
    stuck = below([max(accuracy(r), accuracy(r, "train_acc")) for r in runs], CHANCE + 0.1)
    values = {"test acc": [np.nan if r.diverged else r.final["test_acc"] for r in runs],
              "train loss": [r.final["train_loss"] for r in runs]}
    book = (f"test acc {spread(values['test acc'], scale=100)}%, train loss {spread(values['train loss'], '.3f')} "
            f"(ln 10 = {np.log(10):.3f}); {sum(r.diverged for r in runs)} of {len(runs)} diverged")
    return _claim(3, S3_FIG1, "Without BN the VGG does not train at learning rate 0.5.",
                  "≈ 10% test accuracy at lr 0.5", book, scale_of(runs[0]), {"lr 0.5": stuck},
                  "the standard network's test and training accuracy below chance + 10 points (20%; diverged: chance)",
                  runs, values)


def distributions_alike(vgg: dict[tuple[str, float], Sequence], layers: tuple[int, ...] = (2, 8),
                        since: tuple[int, ...] = (0, 100)) -> Claim:
    """Santurkar et al. Fig. 1(c): with and without BN the activation distributions evolve alike.

    Per seed, layer and starting step: the standard network's drift at the end of training
    (`analysis.quantile_drift`) is less than 3× BN's (the paper's claim holds there).
    """
    from .analysis import quantile_drift

    pairs = paired(vgg["none", 0.1], vgg["batch", 0.1])
    holds, values = {}, {}
    for layer in layers:
        for s0 in since:
            d = [(quantile_drift(s, layer, s0)[-1], quantile_drift(b, layer, s0)[-1]) for s, b in pairs]
            holds[f"layer #{layer} from step {s0}"] = below([ds / db for ds, db in d], 3.0, log=True)
            values[f"drift #{layer} from {s0}, standard"] = [ds for ds, _ in d]
            values[f"drift #{layer} from {s0}, BN"] = [db for _, db in d]
    L, S = layers[-1], since
    book = (f"drift of layer #{L} (widths) from step {S[0]}: standard {spread(values[f'drift #{L} from {S[0]}, standard'], '.2f')}, "
            f"BN {spread(values[f'drift #{L} from {S[0]}, BN'], '.3f')}; from step {S[1]}: standard "
            f"{spread(values[f'drift #{L} from {S[1]}, standard'], '.2f')}, BN {spread(values[f'drift #{L} from {S[1]}, BN'], '.3f')}")
    return _claim(3, S3_DIST, "With and without BN the activation distributions evolve far less differently than "
                  "performance does.", "Fig. 1(c), layers #3, #11: distributions differ much less than performance "
                  "(test acc 83% vs 80%)", book, f"{scale_of(pairs[0][0])}, lr 0.1", holds,
                  "the standard network's distribution drift (mean |quantile shift| / reference width) < 3× BN's, "
                  "at each layer and starting step",
                  vgg["none", 0.1], values)


def noisy_trains_nearly_as_fast(vgg: dict[tuple[str, float], Sequence]) -> Claim:
    """Santurkar et al. Fig. 2: noisy BN trains nearly as fast as BN and much faster than the standard network.

    Per seed: noisy BN's training accuracy (last 100 steps) is at most 8 points below BN's and more than
    10 points above the standard network's.
    """
    trios = paired(vgg["none", 0.1], vgg["batch", 0.1], vgg["noisy", 0.1])
    acc = {k: [t[i].final["train_acc"] for t in trios] for i, k in enumerate(("standard", "BN", "noisy BN"))}
    holds = {"near BN": above(np.subtract(acc["noisy BN"], acc["BN"]), -0.08),
             "above standard": above(np.subtract(acc["noisy BN"], acc["standard"]), 0.10)}
    book = "train acc " + ", ".join(f"{k} {spread(v, scale=100)}%" for k, v in acc.items())
    return _claim(3, S3_NOISY, "BN with noise of non-zero mean and non-unit variance (noisy BN) trains nearly as fast as BN.",
                  "Fig. 2: noisy BN nearly as fast as BN, much faster than standard (lr 0.1)", book,
                  f"{scale_of(trios[0][0])}, lr 0.1", holds,
                  "noisy BN's training accuracy > BN's − 8 points (near BN) and > the standard network's + 10 points",
                  [t[0] for t in trios], {f"train acc, {k}": v for k, v in acc.items()})


def noisy_least_stable(vgg: dict[tuple[str, float], Sequence], layers: tuple[int, ...]) -> Claim:
    """Santurkar et al. (appendix): noisy BN's distributions shift most from step to step.

    Per seed: noisy BN's mean shift and variance shift between successive steps (`analysis.mean_step_shift`,
    absolute) exceed 3× the standard network's at every layer in `layers`; and, relative to each
    channel's own variance, its variance shift exceeds the standard network's at every layer.
    """
    from .analysis import mean_step_shift

    pairs = paired(vgg["none", 0.1], vgg["noisy", 0.1])
    sh = [({l: mean_step_shift(s, l) for l in layers}, {l: mean_step_shift(n, l) for l in layers}) for s, n in pairs]
    holds = {"absolute shift > 3× standard": above([min(n[l][q] / s[l][q] for l in layers for q in ("mean", "var"))
                                                    for s, n in sh], 3.0, log=True),
             "relative variance shift > standard": above([min(n[l]["rel_var"] / s[l]["rel_var"] for l in layers)
                                                          for s, n in sh], 1.0, log=True)}
    values = {}
    for l in layers:
        values[f"|d mean| noisy / standard, #{l}"] = [n[l]["mean"] / s[l]["mean"] for s, n in sh]
        values[f"|d var| noisy / standard, #{l}"] = [n[l]["var"] / s[l]["var"] for s, n in sh]
        values[f"rel. |d var| noisy / standard, #{l}"] = [n[l]["rel_var"] / s[l]["rel_var"] for s, n in sh]
    book = ("noisy BN / standard, |d mean| per step: " + ", ".join(
        f"#{l} {spread(values[f'|d mean| noisy / standard, #{l}'])}" for l in layers)
        + "; relative variance shift: " + ", ".join(f"#{l} {spread(values[f'rel. |d var| noisy / standard, #{l}'], '.2f')}"
                                                   for l in layers))
    return _claim(3, S3_NOISY, "Noisy BN's distributions are the least stable: its mean and variance shift most between steps.",
                  "appendix: noisy BN's step-to-step shift of mean and variance far higher than the standard network's",
                  book, f"{scale_of(pairs[0][0])}, lr 0.1", holds,
                  "noisy BN's step-to-step shift of mean and of variance > 3× the standard network's at every probed "
                  "layer; its variance shift relative to the channel's variance > the standard network's",
                  vgg["noisy", 0.1], values)


def noise_stops_standard(vgg: dict[tuple[str, float], Sequence]) -> Claim:
    """Santurkar et al. Fig. 2: the same noise without BN stops the standard network from training.

    Per seed: with noise, the standard network's training accuracy (last 100 steps) is below 15%
    ("stops"); and it is more than 5 points below the same network's without noise ("hurts").
    """
    pairs = paired(vgg["none", 0.1], vgg["noise", 0.1])
    acc = {"without noise": [s.final["train_acc"] for s, _ in pairs], "with noise": [n.final["train_acc"] for _, n in pairs]}
    holds = {"stops (< 15%)": below(acc["with noise"], CHANCE + 0.05),
             "hurts (> 5 points below)": below(np.subtract(acc["with noise"], acc["without noise"]), -0.05)}
    book = f"train acc {spread(acc['with noise'], scale=100)}% with noise vs {spread(acc['without noise'], scale=100)}% without"
    return _claim(3, S3_NOISY, "The same noise without BN stops the standard network from training.",
                  "Fig. 2: standard + noise does not train", book, f"{scale_of(pairs[0][0])}, lr 0.1", holds,
                  "with noise, the standard network's training accuracy < 15% (stops), and > 5 points below its "
                  "accuracy without noise (hurts)", [n for _, n in pairs], {f"train acc {k}": v for k, v in acc.items()})


def vgg_ics_not_reduced(vgg: dict[tuple[str, float], Sequence], layers: tuple[int, ...],
                        lrs: tuple[float, ...] = (0.1, 0.01)) -> Claim:
    """Santurkar et al. Fig. 3: in the VGG, BN does not reduce ICS (Definition 2.1): ICS similar or higher.

    Per seed, rate and layer (`analysis.ics_summary`, medians over the probes): BN's ‖G − G'‖ is higher
    than the standard network's, and its cos(G, G') at most 0.05 above it ("similar or lower").
    """
    from .analysis import ics_summary

    holds, values = {}, {}
    for lr in lrs:
        pairs = paired(vgg["none", lr], vgg["batch", lr])
        for layer in layers:
            t = [(ics_summary(s, layer), ics_summary(b, layer)) for s, b in pairs]
            holds[f"||G-G'|| higher, lr {lr:g}, #{layer}"] = above([b["l2"] / s["l2"] for s, b in t], 1.0, log=True)
            holds[f"cos similar or lower, lr {lr:g}, #{layer}"] = below([b["cos"] - s["cos"] for s, b in t], 0.05)
            values[f"cos standard, lr {lr:g}, #{layer}"] = [s["cos"] for s, _ in t]
            values[f"cos BN, lr {lr:g}, #{layer}"] = [b["cos"] for _, b in t]
            values[f"||G-G'|| BN / standard, lr {lr:g}, #{layer}"] = [b["l2"] / s["l2"] for s, b in t]
    ratio = "||G-G'|| BN / standard"

    def cell(what: str, lr: float, layer: int) -> str:
        return spread(values[f"{what}, lr {lr:g}, #{layer}"], ".2f")

    book = "; ".join(f"lr {lr:g}, #{l}: ||G-G'|| BN / standard {cell(ratio, lr, l)}, "
                     f"cos BN {cell('cos BN', lr, l)} vs standard {cell('cos standard', lr, l)}" for lr in lrs for l in layers)
    return _claim(3, S3_VGG, "In the VGG, BN does not reduce internal covariate shift (Definition 2.1): ICS similar or higher.",
                  "Fig. 3: lr 0.1 and 0.01, layers #5, #10 of 13: BN's ||G-G'|| similar or higher, cos(G, G') similar or lower",
                  book, f"{scale_of(vgg['none', lrs[0]][0])}, lr {'/'.join(f'{lr:g}' for lr in lrs)}, layers "
                  + ", ".join(f"#{l}" for l in layers), holds,
                  "median over probes, BN's ||G-G'|| > the standard network's; BN's cos(G, G') <= the standard network's + 0.05",
                  ", ".join(f"{seed_label(vgg['none', lr])} at lr {lr:g}" for lr in lrs), values)


def dln_uncorrelated(dln: dict[tuple[str, float], Sequence], layers: tuple[int, ...],
                     lrs: tuple[float, ...] = (1e-6, 1e-7)) -> Claim:
    """Santurkar et al. Fig. 3 (DLN): BN's G and G' are nearly uncorrelated; the standard network's cosine ≈ 1.

    Per seed, rate and layer: the standard network's median cos(G, G') > 0.99, and BN's < 0.2 ("nearly
    uncorrelated", the book's reading of the paper's plot).
    """
    from .analysis import ics_summary

    holds, values = {}, {}
    for lr in lrs:
        pairs = paired(dln["none", lr], dln["batch", lr])
        for layer in layers:
            t = [(ics_summary(s, layer)["cos"], ics_summary(b, layer)["cos"]) for s, b in pairs]
            holds[f"standard ≈ 1, lr {lr_text(lr)}, #{layer}"] = above([s for s, _ in t], 0.99)
            holds[f"BN < 0.2, lr {lr_text(lr)}, #{layer}"] = below([b for _, b in t], 0.2)
            values[f"cos standard, lr {lr_text(lr)}, #{layer}"] = [s for s, _ in t]
            values[f"cos BN, lr {lr_text(lr)}, #{layer}"] = [b for _, b in t]
    std_min = min(min(v) for k, v in values.items() if k.startswith("cos standard"))
    book = f"median cos: standard ≥ {std_min:.4f}; BN " + "; ".join(
        f"{spread(values[f'cos BN, lr {lr_text(lr)}, #{l}'], '.2f')} (lr {lr_text(lr)}, #{l})" for lr in lrs for l in layers)
    return _claim(3, S3_DLN, "In the deep linear network BN's G and G' are nearly uncorrelated (median cosine below 0.2); the "
                  "standard network's cosine stays ≈ 1.", "Fig. 3: DLN, lr 1e-6 and 1e-7, layers #9, #17", book,
                  scale_of(dln["none", lrs[0]][0]), holds,
                  "median over probes, the standard network's cos(G, G') > 0.99 and BN's < 0.2", dln["none", lrs[0]], values)


def dln_lower_loss(dln: dict[tuple[str, float], Sequence]) -> Claim:
    """Santurkar et al. Fig. 3 (DLN): BN reaches a much lower loss than the standard network.

    Per seed: BN's final loss (mean of the last 100 steps) is below half the standard network's at
    lr 1e-6 and below 3/4 of it at lr 1e-7 (the paper's plot shows a factor 3-6 at 1e-6).
    """
    margin = {1e-6: 0.5, 1e-7: 0.75}
    holds, values = {}, {}
    for lr, m in margin.items():
        pairs = paired(dln["none", lr], dln["batch", lr])
        holds[f"lr {lr_text(lr)}: BN < {m:g}× standard"] = below([b.final["train_loss"] / s.final["train_loss"]
                                                                  for s, b in pairs], m, log=True)
        values[f"final loss standard, lr {lr_text(lr)}"] = [s.final["train_loss"] for s, _ in pairs]
        values[f"final loss BN, lr {lr_text(lr)}"] = [b.final["train_loss"] for _, b in pairs]
    values["initial loss"] = [float(r.history["train_loss"][0]) for r in dln["none", 1e-6]]
    book = (f"start {spread(values['initial loss'], '.3g')}; after {dln['none', 1e-6][0].config.steps} steps " + "; ".join(
        f"BN {spread(values[f'final loss BN, lr {lr_text(lr)}'], '.0f')} vs standard {spread(values[f'final loss standard, lr {lr_text(lr)}'], '.0f')} "
        f"(lr {lr_text(lr)})" for lr in margin))
    return _claim(3, S3_DLN, "In the deep linear network BN reaches a much lower loss than the standard network.",
                  "loss starts ≈ 10⁴; after 10k steps (lr 1e-6) BN ≈ 5–7·10², standard ≈ 2–4·10³", book,
                  scale_of(dln["none", 1e-6][0]), holds,
                  "BN's final loss < 0.5× the standard network's at lr 1e-6 and < 0.75× at lr 1e-7", dln["none", 1e-6], values)


# --- chapter 4: other normalizations (Santurkar et al. Section 3.3, Fig. 14-ish "lp normalizations") ---

S4_LP = "4.6 Other normalizations: $\\ell_1$, $\\ell_2$, $\\ell_\\infty$"
S4_LP_DIST = "Distributions"
S4_LP_LAND = "Their landscapes"
LP_NORMS = ("l1", "l2", "linf")
LP_LABEL = {"l1": "ℓ1", "l2": "ℓ2", "linf": "ℓ∞"}
_NORM_NAME = {"none": "standard", "batch": "BN"} | LP_LABEL  # norms as the claims' numbers name them


def lp_train_like_bn(vgg: dict[str, Sequence]) -> Claim:
    """Santurkar et al.: ℓ1, ℓ2 and ℓ∞ normalizations train the VGG about as well as BN.

    `vgg[norm]`: the lr-0.1 ensembles of "none", "batch" and each ℓp norm. Per seed and norm: its
    training accuracy (last 100 steps) within 3 points of BN's, and more than 10 points above the
    standard network's.
    """
    sets = paired(vgg["none"], vgg["batch"], *(vgg[n] for n in LP_NORMS))
    acc = {k: [t[i].final["train_acc"] for t in sets] for i, k in enumerate(("none", "batch") + LP_NORMS)}
    holds = {LP_LABEL[n]: all_of(below(np.abs(np.subtract(acc[n], acc["batch"])), 0.03),
                                 above(np.subtract(acc[n], acc["none"]), 0.10)) for n in LP_NORMS}
    book = "training accuracy " + ", ".join(f"{_NORM_NAME[n]} "
                                            f"{spread(v, scale=100)}%" for n, v in acc.items())
    return _claim(4, S4_LP, "VGG: ℓ1, ℓ2 and ℓ∞ normalizations train about as well as BN",
                  "about as fast as BN (training accuracy, 15k steps)", book, f"{scale_of(sets[0][0])}, lr 0.1", holds,
                  "the normalization's final training accuracy within 3 points of BN's and > 10 points above the "
                  "standard network's", [t[0] for t in sets], {f"train acc, {k}": v for k, v in acc.items()})


def lp_l1_beats_bn(dln: dict[str, Sequence]) -> Claim:
    """Santurkar et al.: in the deep linear network ℓ1 normalization trains better than BN (≈1e2 vs ≈5e2).

    `dln[norm]`: the lr-1e-6 ensembles of "none", "batch" and each ℓp norm. Per seed: ℓ1's final loss is
    below half of BN's (the paper's factor is about 5); the opposite, ℓ1's above 1.2× BN's, reverses it.
    """
    sets = paired(dln["none"], dln["batch"], *(dln[n] for n in LP_NORMS))
    loss = {k: [t[i].final["train_loss"] for t in sets] for i, k in enumerate(("none", "batch") + LP_NORMS)}
    ratio = np.divide(loss["l1"], loss["batch"])
    holds = {"ℓ1 < 0.5× BN": below(ratio, 0.5, log=True)}
    reverse = {"ℓ1 > 1.2× BN": above(ratio, 1.2, log=True)}
    book = "final loss " + ", ".join(f"{_NORM_NAME[n]} "
                                     f"{spread(v, '.0f')}" for n, v in loss.items())
    return _claim(4, S4_LP, "DLN: ℓ1 normalization trains better than BN", "loss ≈ 1e2 with ℓ1 vs ≈ 5e2 with BN",
                  book, scale_of(sets[0][0]), holds, "ℓ1's final loss < 0.5× BN's", [t[0] for t in sets],
                  {f"final loss, {k}": v for k, v in loss.items()}, reverse)


def lp_distributions(vgg: dict[str, Sequence], layers: tuple[int, ...]) -> Claim:
    """Santurkar et al.: the ℓp layer inputs shift more than the standard network's (they do not control them).

    Per seed and norm, medians over `layers`: the step-to-step relative variance shift
    (`analysis.mean_step_shift`, rel_var) and the drift from initialization (`analysis.quantile_drift`) both
    exceed the standard network's (the paper's claim); and the step-to-step shift exceeds 5× BN's (they
    control the distributions less than BN does, the part the book reproduces).
    """
    from .analysis import mean_step_shift, quantile_drift

    sets = paired(vgg["none"], vgg["batch"], *(vgg[n] for n in LP_NORMS))
    names = ("none", "batch") + LP_NORMS
    sv = {k: [float(np.median([mean_step_shift(t[i], l)["rel_var"] for l in layers])) for t in sets] for i, k in enumerate(names)}
    dr = {k: [float(np.median([quantile_drift(t[i], l)[-1] for l in layers])) for t in sets] for i, k in enumerate(names)}
    holds = {}
    for n in LP_NORMS:
        holds[f"{LP_LABEL[n]} shifts more than standard"] = above(np.minimum(np.divide(sv[n], sv["none"]),
                                                                         np.divide(dr[n], dr["none"])), 1.0, log=True)
        holds[f"{LP_LABEL[n]} shifts > 5× BN"] = above(np.divide(sv[n], sv["batch"]), 5.0, log=True)
    step = {n: [a / b for a, b in zip(sv[n], sv["batch"])] for n in LP_NORMS}
    drift = {n: [s / d for s, d in zip(dr["none"], dr[n])] for n in LP_NORMS}
    values = {f"step var shift / BN's, {LP_LABEL[n]}": step[n] for n in LP_NORMS}
    values |= {f"standard's drift / {LP_LABEL[n]}'s": drift[n] for n in LP_NORMS}
    book = ("step-to-step variance shift / BN's: " + ", ".join(f"{LP_LABEL[n]} {spread(step[n], '.0f')}" for n in LP_NORMS)
            + "; standard network's drift from initialization / theirs: "
            + ", ".join(f"{LP_LABEL[n]} {spread(drift[n], '.0f')}" for n in LP_NORMS))
    return _claim(4, S4_LP_DIST, "ℓp layer inputs shift more than the standard network's",
                  "ℓp distributions shift more than the standard network's (and are not Gaussian)", book,
                  f"{scale_of(sets[0][0])}, lr 0.1, layers " + ", ".join(f"#{l}" for l in layers), holds,
                  "median over the layers, the normalization's step-to-step relative variance shift and drift from "
                  "initialization > the standard network's (the paper's claim); its step-to-step shift > 5× BN's",
                  [t[0] for t in sets], values)


def lp_smooth_landscape(vgg: dict[str, Sequence], dln: dict[str, Sequence], since: int) -> Claim:
    """Santurkar et al.: ℓp normalizations smooth the landscape, as BN does.

    Per seed and norm. VGG (lr 0.1, the probes from step `since` on): the standard network's worst probe
    and its probe-to-probe spread are > 1.5× the normalized network's, for the loss range, the gradient
    change and the effective β (it removes the spikes). DLN (lr 1e-6, every probe): the standard
    network's median effective β is the higher one (smoother with the normalization).
    """
    from .analysis import LANDSCAPE_QUANTITIES, landscape_table

    vsets = paired(vgg["none"], *(vgg[n] for n in LP_NORMS))
    dsets = paired(dln["none"], *(dln[n] for n in LP_NORMS))
    holds, values = {}, {}
    for k, n in enumerate(LP_NORMS, start=1):
        vt = [landscape_table(t[0], t[k], since=since) for t in vsets]
        dt = [landscape_table(t[0], t[k]) for t in dsets]
        holds[f"VGG, {LP_LABEL[n]}: spikes removed"] = above(
            [min(t[q][k] for q in LANDSCAPE_QUANTITIES for k in ("max_ratio", "spread_ratio")) for t in vt], 1.5, log=True)
        holds[f"DLN, {LP_LABEL[n]}: smoother"] = above([t["beta"]["ratio"] for t in dt], 1.0, log=True)
        values[f"VGG worst grad. change, standard / {LP_LABEL[n]}"] = [t["graddiff"]["max_ratio"] for t in vt]
        values[f"DLN median beta, {LP_LABEL[n]} / standard"] = [1 / t["beta"]["ratio"] for t in dt]
    book = ("VGG: standard's worst gradient change / the normalized network's: " + ", ".join(
        f"{LP_LABEL[n]} {spread(values[f'VGG worst grad. change, standard / {LP_LABEL[n]}'])}" for n in LP_NORMS)
        + "; DLN: their median β / the standard network's: " + ", ".join(
        f"{LP_LABEL[n]} {spread(values[f'DLN median beta, {LP_LABEL[n]} / standard'], '.0f')}" for n in LP_NORMS))
    return _claim(4, S4_LP_LAND, "ℓp normalizations smooth the landscape, as BN does",
                  "ℓp normalizations smooth the landscape like BN", book,
                  f"{scale_of(vsets[0][0])}, lr 0.1, probes from step {since}; {scale_of(dsets[0][0])}, lr 1e-6", holds,
                  "VGG: the standard network's worst probe and probe-to-probe spread > 1.5× the normalized network's "
                  "(loss range, gradient change, effective β); DLN: the standard network's median β the higher",
                  f"{seed_label([t[0] for t in vsets])} (VGG), {seed_label([t[0] for t in dsets])} (DLN) per configuration",
                  values)


# --- chapter 2: the trained BN network at inference, and its scale invariance (Ioffe & Szegedy §3.1-3.3) ---

S2_INFER = "2.4 Training vs inference"
S2_SCALE = "2.5 Scale invariance"
TEST_BATCHES = (1000, 60, 16, 4, 2)  # test batch sizes for training-mode evaluation, largest first


def inference_stats(run, xtr, xte, yte, shuffle_seed: int = 12) -> dict[str, float]:
    """One trained BN network evaluated the three ways of §2.4 (the first `len(xte)` test images).

    `acc_running`: inference mode with the running averages (what the book reports); `acc_pop`: with
    Algorithm 2's population statistics over the full training batches of `xtr`; `acc_m{k}`: training mode,
    normalized with the statistics of test batches of k (`TEST_BATCHES`); `changed{k}`: the share of
    predictions that change when the test set is reshuffled before batching (k = 60, 16); `var_gap`: the
    largest |running variance / population variance − 1| over every BN unit.
    """
    from .probes import population_statistics, predict, with_statistics

    model = run.model()
    pop = population_statistics(model, xtr, batch_size=run.config.batch_size)
    running = [(blk.norm.running_mean, blk.norm.running_var) for blk in model.blocks]
    acc = lambda pred: float((pred == yte).double().mean())
    out = {"acc_running": acc(predict(model, xte)), "acc_pop": acc(predict(with_statistics(model, pop), xte)),
           "var_gap": max(float((r[1] / p[1] - 1).abs().max()) for p, r in zip(pop, running))}
    out |= {f"acc_m{k}": acc(predict(model, xte, k, batch_stats=True)) for k in TEST_BATCHES}
    shuffle = torch.randperm(len(xte), generator=torch.Generator().manual_seed(shuffle_seed))
    out |= {f"changed{k}": float((predict(model, xte, k, batch_stats=True)
                                  != predict(model, xte, k, batch_stats=True, order=shuffle)).double().mean())
            for k in (60, 16)}
    return out


def running_averages_suffice(runs: Sequence, stats: Sequence[dict[str, float]]) -> Claim:
    """Ioffe & Szegedy §3.1: moving averages are a practical substitute for Algorithm 2's population statistics.

    `stats`: `inference_stats` of each BN run in `runs`. Per seed: the two test accuracies within 1 point.
    """
    gap = [100 * abs(s["acc_pop"] - s["acc_running"]) for s in stats]
    values = {"test acc, running averages": [s["acc_running"] for s in stats],
              "test acc, population statistics": [s["acc_pop"] for s in stats],
              "max |var ratio - 1|": [s["var_gap"] for s in stats]}
    book = (f"test accuracy {spread(values['test acc, running averages'], '.2f', 100)}% with running averages vs "
            f"{spread(values['test acc, population statistics'], '.2f', 100)}% with population statistics (running variances "
            f"off by up to {spread(values['max |var ratio - 1|'], '.0f', 100)}%)")
    return _claim(2, S2_INFER, "Moving averages are a practical substitute for Algorithm 2's population statistics",
                  "moving averages are the usual practical substitute", book, scale_of(runs[0]),
                  {"within 1 point": below(gap, 1.0)},
                  "the test accuracies with running averages and with population statistics within 1 point", runs, values)


def inference_needs_fixed_statistics(runs: Sequence, stats: Sequence[dict[str, float]]) -> Claim:
    """Ioffe & Szegedy §3.1: at inference BN must be a fixed map; with batch statistics the output depends on the batch.

    Per seed (training-mode evaluation, `inference_stats`): accuracy falls with every smaller test batch
    (`TEST_BATCHES`), batches of 2 lose > 15 points against the running averages, and reshuffling the test
    set before batching by 60 changes > 5% of the predictions.
    """
    holds = {"falls with the batch size": above([min(s[f"acc_m{a}"] - s[f"acc_m{b}"] for a, b in zip(TEST_BATCHES, TEST_BATCHES[1:]))
                                                 for s in stats], 0.0),
             "m = 2 loses > 15 points": above([s["acc_running"] - s["acc_m2"] for s in stats], 0.15),
             "m = 60 depends on the batch (> 5% change)": above([s["changed60"] for s in stats], 0.05)}
    values = {f"test acc, batches of {k}": [s[f"acc_m{k}"] for s in stats] for k in TEST_BATCHES}
    values["changed by reshuffling, m = 60"] = [s["changed60"] for s in stats]
    book = ("training-mode test accuracy " + ", ".join(f"{spread(values[f'test acc, batches of {k}'], '.1f', 100)}% (m = {k})"
                                                       for k in (1000, 4, 2))
            + f"; reshuffling changes {spread(values['changed by reshuffling, m = 60'], '.1f', 100)}% of predictions at m = 60")
    return _claim(2, S2_INFER, "At inference BN must use fixed statistics: with batch statistics the output depends on the batch",
                  "Algorithm 2: inference is a fixed affine map", book, scale_of(runs[0]), holds,
                  "training-mode accuracy lower at every smaller test batch (1000, 60, 16, 4, 2); batches of 2 > 15 points below "
                  "the running averages; reshuffling changes > 5% of predictions at m = 60", runs, values)


def weight_gradient_cosines(run, x, y) -> np.ndarray:
    """|cos(w_j, ∂ℓ/∂w_j)| for every hidden unit of a trained MLP, on one batch, in training mode."""
    import torch.nn.functional as F

    model = run.model().train()  # a fresh copy in training mode: the gradient SGD takes (batch statistics)
    weights = [blk.layer.weight for blk in model.blocks]
    grads = torch.autograd.grad(F.cross_entropy(model(x), y), weights)
    return np.concatenate([((w * g).sum(1) / (w.norm(dim=1) * g.norm(dim=1))).abs().detach().numpy()
                           for w, g in zip(weights, grads)])


def trained_weights_orthogonal(mlp: dict[str, Sequence], x, y) -> Claim:
    """Ioffe & Szegedy §3.3 (scale invariance): in a trained BN network each unit's weight gradient is orthogonal
    to its weights. Per seed, on the batch (x, y): BN's largest |cos(w_j, ∂ℓ/∂w_j)| over the hidden units is
    < 1e-3 (float32), and the standard network's median is > 100× BN's median."""
    pairs = paired(mlp["none"], mlp["batch"])
    cos = [(weight_gradient_cosines(s, x, y), weight_gradient_cosines(b, x, y)) for s, b in pairs]
    holds = {"orthogonal with BN": below([float(b.max()) for _, b in cos], 1e-3, log=True),
             "not without: standard's median > 100× BN's": above([np.median(s) / np.median(b) for s, b in cos], 100.0, log=True)}
    values = {"median |cos|, BN": [float(np.median(b)) for _, b in cos], "max |cos|, BN": [float(b.max()) for _, b in cos],
              "median |cos|, standard": [float(np.median(s)) for s, _ in cos]}
    book = (f"median |cos(w_j, grad w_j)| {spread(values['median |cos|, BN'], '.1e')} with BN vs "
            f"{spread(values['median |cos|, standard'], '.1e')} without ({len(cos[0][1])} units, one batch of {len(x)}, float32)")
    return _claim(2, S2_SCALE, "In a trained BN network each unit's weight gradient is orthogonal to its weights",
                  "follows from scale invariance", book, scale_of(pairs[0][0]), holds,
                  "BN's largest |cos(w_j, grad w_j)| < 1e-3 and the standard network's median > 100× BN's",
                  [b for _, b in pairs], values)


# --- chapter 4: the landscape along the gradient (Santurkar et al. Fig. 4, 5 and the appendix) ---

S4_VGG = "4.2 VGG: the landscape along the gradient"
S4_ETA = "4.3 Gradient error against step size"
S4_DLN = "4.4 The deep linear network"
S4_RAND = "4.5 Random directions"
S4_EDGE = "4.7 Smoother landscape, more predictive gradients, larger steps"
LATE = 100  # VGG: the standard network leaves its initial plateau around this step; probes from here on
DESCENT_LIMIT = 2.0  # the descent lemma: a step of size lr decreases the loss when lr·β < 2
_PAPER_FIG4 = {
    "loss_range": ("VGG: along the gradient, the loss varies less with BN (narrow band) than without (wide spikes)",
                   "Fig. 4(a): loss range, standard wide spikes, BN a narrow band (≈ 10⁰…10¹, log scale; 15k steps)"),
    "graddiff": ("VGG: with BN the gradient is more predictive: it changes less along the step",
                 "Fig. 4(b): ‖∇L(x(η)) − g‖ standard spikes to ≈ 250, BN ≤ ≈ 30 (15k steps)"),
    "beta": ("VGG: BN's effective β-smoothness is flat, the standard network's fluctuates higher",
             "Fig. 4(c): BN flat ≈ 20; standard fluctuates ≈ 5…45 (15k steps)"),
}


def lr_beta(run, since: int | None = None) -> np.ndarray:
    """lr × the effective β at each probe from step `since` on: the descent lemma's number (< 2: safe step)."""
    from .analysis import landscape_per_probe, probe_window

    return run.config.lr * landscape_per_probe(run, "beta")[probe_window(run, since=since)]


def vgg_landscape(vgg: dict[tuple[str, float], Sequence], quantity: str, since: int = LATE) -> Claim:
    """Santurkar et al. Fig. 4, one panel: along the gradient the VGG's landscape is smoother with BN.

    `quantity`: "loss_range" (a), "graddiff" (b) or "beta" (c). Per seed, over the probes from step
    `since` on (`analysis.landscape_table`, standard / BN): typical, the standard network's median is the
    higher; spikes, its worst probe and its probe-to-probe spread (sd of log10) are each > 1.5× BN's (for
    β: its spread > 1.5× BN's and its worst probe past the descent lemma's lr·β = 2 and above BN's worst;
    BN's own worst sits at that limit, §4.7, so whether it is just under or just over 2 is rounding, not a
    condition). Reversed: the standard network's median and worst probe both below BN's.
    """
    from .analysis import landscape_table

    pairs = paired(vgg["none", 0.1], vgg["batch", 0.1])
    t = [landscape_table(s, b, since=since)[quantity] for s, b in pairs]
    if quantity == "beta":
        lb = [(lr_beta(s, since).max(), lr_beta(b, since).max()) for s, b in pairs]
        spikes = all_of(above([r["spread_ratio"] for r in t], 1.5, log=True), above([ls for ls, _ in lb], DESCENT_LIMIT, log=True),
                        above([ls / lbn for ls, lbn in lb], 1.0, log=True))
        spike_test = ("its spread > 1.5× BN's, its worst lr·β past 2 and above BN's worst")
    else:
        spikes = above([min(r["max_ratio"], r["spread_ratio"]) for r in t], 1.5, log=True)
        spike_test = "its worst probe and its spread > 1.5× BN's"
    holds = {"typical: standard's median higher": above([r["ratio"] for r in t], 1.0, log=True), "spikes: removed by BN": spikes}
    reverse = {"BN rougher: median and worst probe": below([max(r["ratio"], r["max_ratio"]) for r in t], 1.0, log=True)}
    values = {"median, standard / BN": [r["ratio"] for r in t], "worst probe, standard / BN": [r["max_ratio"] for r in t],
              "spread, standard / BN": [r["spread_ratio"] for r in t]}
    name = LANDSCAPE_NAMES[quantity]
    book = (f"{name}, standard / BN: median {spread(values['median, standard / BN'], '.2f')}, worst probe "
            f"{spread(values['worst probe, standard / BN'], '.2f')}, probe-to-probe spread {spread(values['spread, standard / BN'], '.2f')}")
    if quantity == "beta":
        values["worst lr·β, standard"] = [a for a, _ in lb]
        values["worst lr·β, BN"] = [b for _, b in lb]
        book += (f"; worst lr·β standard {spread(values['worst lr·β, standard'], '.2f')}, BN "
                 f"{spread(values['worst lr·β, BN'], '.2f')} (the descent lemma's limit: 2)")
    claim, paper = _PAPER_FIG4[quantity]
    return _claim(4, S4_VGG, claim, paper, book, f"{scale_of(pairs[0][0])}, lr 0.1, probes from step {since} on", holds,
                  f"over the probes from step {since} on, the standard network's median {name} > BN's (typical); "
                  f"{spike_test} (spikes)", [s for s, _ in pairs], values, reverse)


def vgg_landscape_normalized(vgg: dict[tuple[str, float], Sequence], since: int = LATE) -> Claim:
    """Fig. 4 (a) and (b) normalized for the gradient's size (`analysis.NORMALIZED_QUANTITIES`): the loss range
    over lr·‖g‖² and the gradient change over ‖g‖. BN's gradient is larger (67× at step 0 on seed 0, 1.5-2.2× over the probes from step 100 on), so at
    equal η its probe moves farther, and the raw quantities compare unequal steps. Per seed at lr 0.1, over the
    probes from step `since` on: the standard network's median of each is above BN's. Reversed: below for both."""
    from .analysis import NORMALIZED_QUANTITIES, landscape_table

    pairs = paired(vgg["none", 0.1], vgg["batch", 0.1])
    t = [landscape_table(s, b, since=since, quantities=NORMALIZED_QUANTITIES) for s, b in pairs]
    values = {f"median {LANDSCAPE_NAMES[q]}, standard / BN": [r[q]["ratio"] for r in t] for q in NORMALIZED_QUANTITIES}
    holds = {f"{LANDSCAPE_NAMES[q]}: standard's median higher": above(v, 1.0, log=True)
             for q, v in zip(NORMALIZED_QUANTITIES, values.values())}
    reverse = {f"{LANDSCAPE_NAMES[q]}: BN's median higher": below(v, 1.0, log=True)
               for q, v in zip(NORMALIZED_QUANTITIES, values.values())}
    book = "standard / BN: " + "; ".join(f"{k.split(', ')[0][len('median '):]} {spread(v, '.2f')}" for k, v in values.items())
    return _claim(4, S4_VGG, "Normalized for the gradient's size, the standard network's landscape is the rougher one.",
                  "not normalized by Santurkar et al. (their Fig. 4 (a), (b): raw loss range and gradient change, "
                  "smoother with BN)", book, f"{scale_of(pairs[0][0])}, lr 0.1, probes from step {since} on", holds,
                  f"over the probes from step {since} on, the standard network's median loss range / (lr·‖g‖²) and "
                  f"gradient change / ‖g‖ each > BN's", [s for s, _ in pairs], values, reverse)


def vgg_gradient_vs_step(vgg: dict[tuple[str, float], Sequence]) -> Claim:
    """Santurkar et al., appendix: the VGG's gradient change grows far more with the step size without BN.

    Per seed, over every probe and step size (`land_graddiff`): the standard network's values span more
    than one decade more than BN's (its curves fan out), and its largest is > 5× BN's largest (the
    paper's tops, ≈ 250 against ≈ 35, are about 7× apart).
    """
    pairs = paired(vgg["none", 0.1], vgg["batch", 0.1])
    span = lambda r: (float(r.history["land_graddiff"].min()), float(r.history["land_graddiff"].max()))
    sp = [(span(s), span(b)) for s, b in pairs]
    decades = [np.log10(a[1] / a[0]) - np.log10(b[1] / b[0]) for a, b in sp]
    top = [a[1] / b[1] for a, b in sp]
    holds = {"fans out: > 1 decade wider": above(decades, 1.0), "tops > 5× apart": above(top, 5.0, log=True)}
    values = {"decades, standard − BN": decades, "top, standard / BN": top,
              "top, standard": [a[1] for a, _ in sp], "top, BN": [b[1] for _, b in sp]}
    book = (f"largest gradient change standard {spread(values['top, standard'], '.0f')}, BN {spread(values['top, BN'], '.1f')} "
            f"(ratio {spread(top, '.1f')}); the standard network's values span {spread(decades, '.1f')} decades more")
    return _claim(4, S4_ETA, "VGG: the gradient change grows far more with the step size without BN",
                  "appendix: ‖∇L(x(η)) − g‖ standard ≤ ≈ 250, BN ≤ ≈ 35 (tops ≈ 7× apart; 15k steps)", book,
                  f"{scale_of(pairs[0][0])}, lr 0.1, every probe", holds,
                  "over every probe and step size, the standard network's gradient change spans > 1 decade more than BN's, "
                  "and its largest value is > 5× BN's", [s for s, _ in pairs], values)


def dln_landscape(dln: dict[tuple[str, float], Sequence]) -> Claim:
    """Santurkar et al. Fig. 5 (DLN): the standard network's landscape is rougher than BN's by orders of magnitude.

    Per seed at lr 1e-6, every probe: the standard network's median loss range, gradient change and
    effective β are each > 10× BN's. Reversed: BN's are each > 10× the standard network's.
    """
    from .analysis import LANDSCAPE_QUANTITIES, landscape_table

    pairs = paired(dln["none", 1e-6], dln["batch", 1e-6])
    t = [landscape_table(s, b) for s, b in pairs]
    holds = {"standard > 10× BN, all three": above([min(r[q]["ratio"] for q in LANDSCAPE_QUANTITIES) for r in t], 10.0, log=True)}
    reverse = {"BN > 10× standard, all three": below([max(r[q]["ratio"] for q in LANDSCAPE_QUANTITIES) for r in t], 0.1, log=True)}
    values = {f"median {LANDSCAPE_NAMES[q]}, BN / standard": [1 / r[q]["ratio"] for r in t] for q in LANDSCAPE_QUANTITIES}
    values["median β, standard"] = [r["beta"]["median_a"] for r in t]
    values["median β, BN"] = [r["beta"]["median_b"] for r in t]
    book = (f"median β standard {spread(values['median β, standard'], '.3g')}, BN {spread(values['median β, BN'], '.3g')}; "
            "BN / standard, median " + ", ".join(f"{LANDSCAPE_NAMES[q]} {spread(values[f'median {LANDSCAPE_NAMES[q]}, BN / standard'], '.2g')}"
                                                 for q in LANDSCAPE_QUANTITIES))
    return _claim(4, S4_DLN, "DLN: the standard network's landscape is rougher than BN's by many orders of magnitude",
                  "standard: loss variation up to ≈ 10¹⁴, β up to ≈ 10¹⁵ early; BN β ≈ 10⁷, flat", book,
                  f"{scale_of(pairs[0][0])}, lr 1e-6, every probe", holds,
                  "the standard network's median loss range, gradient change and effective β each > 10× BN's",
                  [s for s, _ in pairs], values, reverse)


def random_directions(vgg: dict[tuple[str, float], Sequence], dln: dict[tuple[str, float], Sequence]) -> Claim:
    """Santurkar et al.: along random directions the landscape "behaves similarly" (smoother with BN).

    Per seed, every probe along a random direction of the gradient's norm (`rand_*`): BN's median
    gradient change and effective β are lower than the standard network's, in the VGG (lr 0.1) and in
    the DLN (lr 1e-6). Reversed: in both networks BN's are > 1.5× the standard network's.
    """
    from .analysis import landscape_table

    holds, reverse, values = {}, {}, {}
    for net, ens, lr in (("VGG", vgg, 0.1), ("DLN", dln, 1e-6)):
        t = [landscape_table(s, b, prefix="rand") for s, b in paired(ens["none", lr], ens["batch", lr])]
        holds[f"{net}: BN smoother"] = above([min(r["graddiff"]["ratio"], r["beta"]["ratio"]) for r in t], 1.0, log=True)
        reverse[f"{net}: BN > 1.5× rougher"] = below([max(r["graddiff"]["ratio"], r["beta"]["ratio"]) for r in t], 1 / 1.5, log=True)
        values[f"{net} median β, BN / standard"] = [1 / r["beta"]["ratio"] for r in t]
        values[f"{net} median gradient change, BN / standard"] = [1 / r["graddiff"]["ratio"] for r in t]
    book = "along random directions, BN / standard: " + "; ".join(
        f"{net} median β {spread(values[f'{net} median β, BN / standard'], '.2f')}, gradient change "
        f"{spread(values[f'{net} median gradient change, BN / standard'], '.3g')}" for net in ("VGG", "DLN"))
    v, d = vgg["none", 0.1], dln["none", 1e-6]
    return _claim(4, S4_RAND, "Along random directions the landscape behaves similarly (BN smoother)",
                  "random directions behave similarly (no numbers given)", book,
                  f"{scale_of(v[0])}, lr 0.1; {scale_of(d[0])}, lr 1e-6; every probe", holds,
                  "along a random direction, BN's median gradient change and effective β < the standard network's",
                  f"{seed_label(v)} (VGG), {seed_label(d)} (DLN) per configuration", values, reverse)


def larger_steps(vgg: dict[tuple[str, float], Sequence], since: int = LATE) -> Claim:
    """Santurkar et al.: BN's smoother landscape lets the VGG train at a larger learning rate (0.5).

    Per seed: at lr 0.5 the standard network fails (test accuracy < 15%) and BN trains (> 30%); BN's
    median lr·β at lr 0.5 (probes from step `since` on) stays within 1-2, at the descent lemma's limit
    rather than past it; and its first layer's weights grow > 1.25× as much as at lr 0.1 (`analysis.
    weight_growth`: the larger steps enlarge the weights, which BN's scale invariance turns into a smaller
    effective step).
    """
    from .analysis import weight_growth

    quads = paired(vgg["none", 0.5], vgg["batch", 0.5], vgg["batch", 0.1])
    med = [float(np.median(lr_beta(b, since))) for _, b, _ in quads]
    growth = [(float(weight_growth(b5)[0]), float(weight_growth(b1)[0])) for _, b5, b1 in quads]
    holds = {"lr 0.5: standard fails": below([accuracy(s) for s, _, _ in quads], 0.15),
             "lr 0.5: BN trains": above([accuracy(b) for _, b, _ in quads], 0.3),
             "BN at the limit: median lr·β in 1-2": all_of(above(med, 1.0, log=True), below(med, DESCENT_LIMIT, log=True)),
             "BN's weights grow > 1.25× more": above([g5 / g1 for g5, g1 in growth], 1.25, log=True)}
    values = {"test acc lr 0.5, standard": [accuracy(s) for s, _, _ in quads],
              "test acc lr 0.5, BN": [accuracy(b) for _, b, _ in quads],
              "median lr·β, BN, lr 0.5": med, "weight growth #1, BN, lr 0.5": [g for g, _ in growth],
              "weight growth #1, BN, lr 0.1": [g for _, g in growth]}
    book = (f"test accuracy at lr 0.5: BN {spread(values['test acc lr 0.5, BN'], scale=100)}%, standard "
            f"{spread(values['test acc lr 0.5, standard'], scale=100)}%; BN's median lr·β {spread(med, '.2f')}; its layer-1 "
            f"weights grow {spread(values['weight growth #1, BN, lr 0.5'], '.2f')}× (lr 0.5) vs "
            f"{spread(values['weight growth #1, BN, lr 0.1'], '.2f')}× (lr 0.1)")
    return _claim(4, S4_EDGE, "BN's smoother landscape lets it train at a larger learning rate (0.5), where the standard network fails",
                  "test accuracy at lr 0.5: BN ≈ 80%, standard ≈ 10% (15k steps)", book,
                  f"{scale_of(quads[0][0])}, lr 0.5 (and 0.1), probes from step {since} on", holds,
                  "at lr 0.5 the standard network's test accuracy < 15% and BN's > 30%; BN's median lr·β within 1-2; "
                  "BN's layer-1 weight growth > 1.25× its growth at lr 0.1", [q[0] for q in quads], values)



S4_EOS = "4.8 The edge of stability"
EDGE_BAND = (1.0, 4.0)  # "at the edge": lr·λ_max within a factor 2 of the critical 2, on either side
EOS_SINCE = {"vgg": LATE, "dln": 1000}  # the sharpness probes after the first (VGG: after the plateau)


def lr_sharpness(run, key: str = "sharp_lmax", since: int | None = None) -> np.ndarray:
    """lr × a curvature of the sharpness probe (`probes.sharpness`: "sharp_lmax", "sharp_grad") at the probe
    steps where it ran, from step `since` on (default `EOS_SINCE` of the model; 0 for every one). A probe
    that overflowed (NaN where the probe ran) counts as +inf; a run with no such probe is an error."""
    from .analysis import sharpness_steps

    since = EOS_SINCE[run.config.model] if since is None else since
    steps = sharpness_steps(run)
    steps = steps[steps >= since]
    if len(steps) == 0:
        raise ValueError(f"no sharpness probe from step {since} on in {run.config.label()}")
    v = np.asarray(run.history[key], dtype=np.float64)[np.isin(run.history["probe_step"], steps)]
    return run.config.lr * np.where(np.isfinite(v), v, np.inf)


def _eos_configs(vgg: dict[tuple[str, float], Sequence], dln: dict[tuple[str, float], Sequence]) -> list[tuple[str, str, float, Sequence]]:
    return [("VGG", n, lr, vgg[n, lr]) for lr in (0.1, 0.5) for n in ("none", "batch")] + [
        ("DLN", n, lr, dln[n, lr]) for lr in (1e-6, 1e-7) for n in ("none", "batch")]


def _eos_scope(vgg_runs: Sequence, dln_runs: Sequence, lrs: tuple[float, float] | None = None) -> tuple[str, str]:
    """(scale, seeds) of a §4.8 claim resting on a VGG and a DLN ensemble; `lrs`: their learning rates, if one each."""
    at = [f", lr {lr_text(lr)}" for lr in lrs] if lrs else ["", ""]
    scale = (f"{scale_of(vgg_runs[0])}{at[0]}; {scale_of(dln_runs[0])}{at[1]}; the sharpness probes from step "
             f"{EOS_SINCE['vgg']} (VGG), {EOS_SINCE['dln']} (DLN) on")
    return scale, f"{seed_label(vgg_runs)} (VGG), {seed_label(dln_runs)} (DLN) per configuration"


def bn_at_edge_of_stability(vgg: dict[tuple[str, float], Sequence], dln: dict[tuple[str, float], Sequence]) -> Claim:
    """Cohen et al. (2021): training raises the sharpness until lr·λ_max ≈ 2 and holds it there. For BN.

    Per seed, for BN in the VGG (lr 0.1, 0.5) and the DLN (lr 1e-6, 1e-7): the median of lr·λ_max over the
    sharpness probes from `EOS_SINCE` on lies in `EDGE_BAND` (within a factor 2 of the edge). The standard
    networks' numbers are reported beside it (`values`), not tested.
    """
    holds, values = {}, {}
    for net, n, lr, runs in _eos_configs(vgg, dln):
        med = [float(np.median(lr_sharpness(r))) for r in runs]
        name = f"{net} {_NORM_NAME[n]} lr {lr_text(lr)}"
        values[f"median lr·λ_max, {name}"] = med
        if n == "batch":
            holds[f"{name}: in {EDGE_BAND[0]:g}-{EDGE_BAND[1]:g}"] = all_of(above(med, EDGE_BAND[0], log=True),
                                                                              below(med, EDGE_BAND[1], log=True))
    book = "median lr·λ_max: " + "; ".join(f"{k.split(', ', 1)[1]} {spread(v, '.2f')}" for k, v in values.items())
    scale, seeds = _eos_scope(vgg["batch", 0.1], dln["batch", 1e-6])
    return _claim(4, S4_EOS, "With BN, training holds the sharpness at the edge of stability: lr·λ_max ≈ 2",
                  "not measured by Santurkar et al.; Cohen et al. (2021): the sharpness rises to 2/lr and hovers there "
                  "(full-batch gradient descent)", book, scale, holds,
                  f"the median of lr·λ_max over the sharpness probes lies in [{EDGE_BAND[0]:g}, {EDGE_BAND[1]:g}] "
                  "(within 2× of the edge, 2), for each BN configuration", seeds, values)


def bn_lowers_sharpness(vgg: dict[tuple[str, float], Sequence], dln: dict[tuple[str, float], Sequence]) -> Claim:
    """Santurkar et al.'s "smoother", measured as curvature: BN lowers the Hessian's top eigenvalue.

    Per seed, at the learning rates of the paper's figures (VGG 0.1, DLN 1e-6): BN's median λ_max over the
    sharpness probes from `EOS_SINCE` on is below the standard network's. Reversed: above it in both.
    """
    holds, reverse, values = {}, {}, {}
    for net, ens, lr in (("VGG", vgg, 0.1), ("DLN", dln, 1e-6)):
        pairs = paired(ens["none", lr], ens["batch", lr])
        ratio = [float(np.median(lr_sharpness(b)) / np.median(lr_sharpness(s))) for s, b in pairs]
        values[f"{net} median λ_max, BN / standard"] = ratio
        holds[f"{net}: BN's lower"] = below(ratio, 1.0, log=True)
        reverse[f"{net}: BN's higher"] = above(ratio, 1.0, log=True)
    book = "median λ_max, BN / standard: " + "; ".join(f"{k.split(' ')[0]} {spread(v, '.3g')}" for k, v in values.items())
    scale, seeds = _eos_scope(vgg["none", 0.1], dln["none", 1e-6], lrs=(0.1, 1e-6))
    return _claim(4, S4_EOS, "BN makes the landscape smoother in curvature: a lower top Hessian eigenvalue",
                  "Santurkar et al.: smoother (effective β, Fig. 4c, 5); Ghorbani et al. (2019): BN removes the Hessian's "
                  "outlier eigenvalues", book, scale, holds,
                  "BN's median λ_max < the standard network's", seeds, values, reverse)

# --- chapter 4.10: the same claims at the extended scale (the artifact `experiments.load_grid("extended")`) ---

S4_EXT = "4.10 At a larger scale"


def variant(claim: Claim, section: str, name: str) -> Claim:
    """A claim decided by the same definition on another ensemble (a larger scale, a control), as its own record:
    its text marked "(`name`)" and linked to `section`, so that the claims page lists it beside the book's own."""
    return replace(claim, claim=f"{claim.claim} ({name})", section=section, stated="", basis={})


# --- chapter 4.11: BN's effective learning rate over training; 4.12: the He-initialized control ---

S4_EFF = "4.11 The effective learning rate over training"
S4_HE = "4.12 A control: He initialization"


def bn_auto_rate_tuning(vgg: dict[tuple[str, float], Sequence]) -> Claim:
    """Arora, Li & Lyu (2019): the weights before a BN are scale-invariant, and SGD tunes their effective learning
    rate η/‖W‖² itself, a larger η growing ‖W‖ faster. The BN VGG at lr 0.5 and 0.1 starts from the same weights
    (paired by seed), so each layer's effective rates are 5× apart at step 0. Per seed, at the last probe
    (`analysis.effective_lr_history`): the largest over the layers of the effective rate at 0.5 over that at 0.1;
    the condition is that it is below 5/1.5 (the learning rates' ratio closed by more than 1.5×). Reversed: the
    smallest over the layers above 5 (the gap widened in every layer)."""
    from .analysis import effective_lr_ratio

    pairs = paired(vgg["batch", 0.1], vgg["batch", 0.5])
    lr_ratio = pairs[0][1].config.lr / pairs[0][0].config.lr
    ratios = [effective_lr_ratio(hi, lo) for lo, hi in pairs]
    end = [r[-1] for r in ratios]  # at the last probe both runs of a pair reached
    values = {"largest over layers, lr 0.5 / lr 0.1": [float(r.max()) for r in end],
              "smallest over layers, lr 0.5 / lr 0.1": [float(r.min()) for r in end],
              "layer 1, lr 0.5 / lr 0.1": [float(r[0]) for r in end]}
    step = int(pairs[0][0].history["probe_step"][len(ratios[0]) - 1])
    book = (f"η/‖W_i‖² at lr 0.5 over lr 0.1 at step {step} (5 at step 0): largest over the layers "
            f"{spread(values['largest over layers, lr 0.5 / lr 0.1'], '.2f')}, smallest "
            f"{spread(values['smallest over layers, lr 0.5 / lr 0.1'], '.2f')}")
    return _claim(4, S4_EFF, "With BN, a 5× larger learning rate gives a much less than 5× larger effective learning "
                  "rate η/‖W‖²: the scale-invariant weights tune their own step.",
                  "not measured by Santurkar et al.; Arora, Li & Lyu (2019): auto rate-tuning of scale-invariant weights",
                  book, f"{scale_of(pairs[0][0])}; lr 0.5 beside it", 
                  {"every layer: ratio < 5/1.5": below(values["largest over layers, lr 0.5 / lr 0.1"], lr_ratio / 1.5, log=True)},
                  f"per seed, at the last probe, each layer's η/‖W_i‖² at lr 0.5 over that at lr 0.1; the largest "
                  f"over the layers < {lr_ratio:g}/1.5 (reversed: the smallest > {lr_ratio:g})", [lo for lo, _ in pairs],
                  values, {"every layer: ratio > 5": above(values["smallest over layers, lr 0.5 / lr 0.1"], lr_ratio, log=True)})


PLATEAU_GAP = 0.05  # nats: "no plateau" when the early training loss is this much lower


def he_removes_plateau(vgg: dict[tuple[str, float], Sequence], he: Sequence) -> Claim:
    """The standard VGG's initial plateau is its Glorot initialization's (He et al. 2015: Glorot's variance halves
    the signal at every ReLU layer). Per seed (the standard network at lr 0.1, Glorot and He paired by seed): the
    mean training loss over the first `LATE` steps, Glorot's minus He's > `PLATEAU_GAP` nats; the final test
    accuracies are reported beside it. Reversed: He's higher by as much."""
    pairs = paired(vgg["none", 0.1], he)
    early = lambda r: float(np.mean(r.history["train_loss"][:LATE]))
    gap = [early(g) - early(h) for g, h in pairs]
    values = {"early loss, Glorot": [early(g) for g, _ in pairs], "early loss, He": [early(h) for _, h in pairs],
              "test acc, Glorot": [accuracy(g) for g, _ in pairs], "test acc, He": [accuracy(h) for _, h in pairs]}
    book = (f"mean training loss over steps 0-{LATE - 1}: Glorot {spread(values['early loss, Glorot'], '.3f')}, He "
            f"{spread(values['early loss, He'], '.3f')} (ln 10 = {np.log(10):.3f}); final test acc Glorot "
            f"{spread(values['test acc, Glorot'], scale=100)}%, He {spread(values['test acc, He'], scale=100)}%")
    return _claim(4, S4_HE, "The standard VGG's initial plateau is its Glorot initialization's: with He initialization "
                  "its early training loss is lower.", "not tested by Santurkar et al. (their VGG: Glorot initialization throughout)", book,
                  scale_of(he[0]), {"Glorot's early loss higher": above(gap, PLATEAU_GAP)},
                  f"per seed, the mean training loss over the first {LATE} steps, Glorot's − He's > {PLATEAU_GAP:g} "
                  f"nats (reversed: He's higher by as much)", he, values,
                  {"He's early loss higher": below(gap, -PLATEAU_GAP)})


def bn_faster_than_he(vgg: dict[tuple[str, float], Sequence], he: Sequence) -> Claim:
    """`bn_trains_faster`'s rule at lr 0.1 against the standard network with He initialization: per seed, BN's
    final training and test accuracy each more than 5 points above the He network's (`_faster`). Reversed: the He
    network's each more than 5 points above BN's."""
    pairs = paired(he, vgg["batch", 0.1])
    values = {"test acc, He standard": [accuracy(h) for h, _ in pairs], "test acc, BN": [accuracy(b) for _, b in pairs]}
    gap = np.subtract(values["test acc, BN"], values["test acc, He standard"])
    book = (f"test acc BN {spread(values['test acc, BN'], scale=100)}% vs He standard "
            f"{spread(values['test acc, He standard'], scale=100)}%; BN − He: {spread(gap, scale=100)} points")
    return _claim(4, S4_HE, "BN trains faster than the standard network also when that one starts with He "
                  "initialization.", "not tested by Santurkar et al. (Fig. 1: BN 83% vs standard 80% at lr 0.1, "
                  "Glorot initialization)", book, scale_of(he[0]), {"lr 0.1": _faster(pairs)},
                  "BN's final training and test accuracy each > 5 points above the He network's (reversed: the He "
                  "network's above BN's)", he, values, {"He faster, lr 0.1": _faster([(b, h) for h, b in pairs])})


# --- chapter 4.9: the learning-rate sweep (the artifact `experiments.load_grid("lr-sweep")`, by `analysis.sweep_cells`) ---

S4_SWEEP = "4.9 Over a range of learning rates"
TRAINS = CHANCE + 0.1  # a run "trains" when its test accuracy exceeds chance by 10 points, as in standard_stuck_at_05


def sweep_accuracy(row: dict) -> float:
    """A sweep run's final test accuracy (its row in the artifact); a diverged run's is chance, as in `accuracy`."""
    return CHANCE if row["final"]["status"] == "diverged" else float(row["final"]["test_acc"])


def sweep_sharpness(row: dict, since: int = EOS_SINCE["vgg"]) -> float:
    """A sweep run's median lr·λ_max over its sharpness probes from step `since` on (an overflowed probe, or
    none after a divergence: +inf)."""
    v = [np.inf if x is None else x for x, s in zip(row["lr_lmax"], row["sharp_step"]) if s >= since]
    return float(np.median(v)) if v else np.inf


def _sweep_scope(sweep: dict[tuple[str, float], list[dict]]) -> tuple[str, str, list[float]]:
    """(scale, seeds, learning rates) of a §4.9 claim; the scale is the sweep's lr-0.1 runs' without norm and lr.
    Every cell's rows are in seed order (`analysis.sweep_cells`), so that row i is seed i's run everywhere."""
    from .train import config_from_dict

    lrs = sorted({lr for _, lr in sweep})
    rows = sweep["none", 0.1]
    seeds = sorted(r["config"]["seed"] for r in rows)
    scale = scale_of(config_from_dict(rows[0]["config"]))
    return (f"{scale}; learning rates {', '.join(map(lr_text, lrs))}",
            f"{len(seeds)} seeds ({seeds[0]}-{seeds[-1]}) per configuration", lrs)


def _largest_trained(rows: list[dict], lrs: list[float]) -> list[float]:
    """Per seed, the largest learning rate of the sweep at which the run trains (`TRAINS`); 0 where none does."""
    return [max([lr for lr in lrs if sweep_accuracy(rows[lr][i]) > TRAINS], default=0.0) for i in range(len(rows[lrs[0]]))]


def bn_tolerates_larger_lr(sweep: dict[tuple[str, float], list[dict]]) -> Claim:
    """Ioffe & Szegedy's headline: BN allows much larger learning rates. Over the sweep (factor 2 apart), per
    seed: the largest learning rate at which each network trains (test accuracy > `TRAINS`; diverged: chance);
    the condition is BN's over the standard network's > 2, i.e. at least 4× (two steps of the sweep). Where
    BN trains at the sweep's largest rate, its ratio is a lower bound."""
    scale, seeds, lrs = _sweep_scope(sweep)
    by = {n: {lr: sweep[n, lr] for lr in lrs} for n in ("none", "batch")}
    std, bn = _largest_trained(by["none"], lrs), _largest_trained(by["batch"], lrs)
    ratio = [b / s if s else np.inf for s, b in zip(std, bn)]
    values = {"largest lr that trains, standard": std, "largest lr that trains, BN": bn,
              **{f"test acc, {_NORM_NAME[n]}, lr {lr_text(lr)}": [sweep_accuracy(r) for r in by[n][lr]]
                 for n in ("none", "batch") for lr in lrs}}
    book = (f"largest learning rate that trains, per seed: BN {', '.join(f'{x:g}' for x in bn)}; standard "
            f"{', '.join(f'{x:g}' for x in std)}; "
            f"BN trains at {sum(a > TRAINS for r in by['batch'].values() for a in map(sweep_accuracy, r))} of "
            f"{len(lrs) * len(std)} runs, the standard network at "
            f"{sum(a > TRAINS for r in by['none'].values() for a in map(sweep_accuracy, r))}")
    return _claim(4, S4_SWEEP, "BN trains at learning rates at least 4× larger than the standard network does.",
                  "Ioffe & Szegedy: BN-x5 and BN-x30 train Inception at 5× and 30× its learning rate; Santurkar et al. "
                  "Fig. 1: at lr 0.5 the standard VGG stays at ≈ 10%, BN reaches ≈ 80%", book, scale,
                  {"largest lr, BN / standard": above(ratio, 2.0, log=True)},
                  f"per seed, the largest learning rate at which each network's test accuracy exceeds "
                  f"{100 * TRAINS:.0f}% (diverged: chance); BN's over the standard's > 2 (the sweep's rates are 2× "
                  f"apart: at least 4×)", seeds, values)


def sweep_bn_at_edge(sweep: dict[tuple[str, float], list[dict]]) -> Claim:
    """Cohen et al.'s edge of stability over the sweep: at every learning rate, BN's median lr·λ_max over the
    sharpness probes from `EOS_SINCE` on lies in `EDGE_BAND`, i.e. BN's sharpness is ≈ 2/lr: set by the learning
    rate. The standard network's numbers are reported beside it (`values`), not tested."""
    scale, seeds, lrs = _sweep_scope(sweep)
    holds, values = {}, {}
    for n in ("batch", "none"):
        for lr in lrs:
            med = [sweep_sharpness(r) for r in sweep[n, lr]]
            values[f"median lr·λ_max, {_NORM_NAME[n]}, lr {lr_text(lr)}"] = med
            if n == "batch":
                holds[f"BN lr {lr_text(lr)}: in {EDGE_BAND[0]:g}-{EDGE_BAND[1]:g}"] = all_of(
                    above(med, EDGE_BAND[0], log=True), below(med, EDGE_BAND[1], log=True))
    book = "median lr·λ_max, BN: " + "; ".join(
        f"lr {lr_text(lr)} {spread(values[f'median lr·λ_max, BN, lr {lr_text(lr)}'], '.2f')}" for lr in lrs)
    return _claim(4, S4_SWEEP, f"Over a {lrs[-1] / lrs[0]:.0f}-fold range of learning rates, BN's sharpness settles at "
                  "the edge of stability, 2/lr.", "not measured by Santurkar et al.; Cohen et al. (2021): the sharpness rises to 2/lr and "
                  "hovers there", book, scale + f"; the sharpness probes from step {EOS_SINCE['vgg']} on", holds,
                  f"the median of lr·λ_max over the sharpness probes lies in [{EDGE_BAND[0]:g}, {EDGE_BAND[1]:g}] "
                  "(within 2× of the edge, 2), at each learning rate", seeds, values)


def sweep_exponent(rows_by_lr: dict[float, dict]) -> float:
    """The least-squares slope of log λ_max (`sweep_sharpness` / lr) against log lr, over one seed's runs at the
    sweep's learning rates: −1 where the sharpness is set by the learning rate (λ_max ∝ 1/lr)."""
    lrs = sorted(rows_by_lr)
    lmax = [sweep_sharpness(rows_by_lr[lr]) / lr for lr in lrs]
    return float(np.polyfit(np.log(lrs), np.log(lmax), 1)[0]) if np.all(np.isfinite(lmax)) else np.nan


SWEEP_EXPONENT_TOLERANCE = 0.5  # λ_max ∝ lr^k with k within 0.5 of −1: closer to 1/lr than to a constant (k = 0)


def sweep_sharpness_inverse_lr(sweep: dict[tuple[str, float], list[dict]]) -> Claim:
    """The edge of stability as a scaling law: BN's λ_max ∝ 1/lr over the sweep. Per seed, the exponent k of
    λ_max ∝ lr^k (`sweep_exponent`, over all six rates); the condition: |k + 1| < `SWEEP_EXPONENT_TOLERANCE`.
    A sharpness the architecture set, whatever the learning rate, would give k = 0."""
    scale, seeds, lrs = _sweep_scope(sweep)
    ks = [sweep_exponent({lr: sweep["batch", lr][i] for lr in lrs})
          for i in range(len(sweep["batch", lrs[0]]))]
    tol = SWEEP_EXPONENT_TOLERANCE
    return _claim(4, S4_SWEEP, "With BN, the sharpness scales as 1/lr over the sweep: λ_max ∝ lr^k with k ≈ −1.",
                  "not measured by Santurkar et al.; Cohen et al. (2021): λ_max ≈ 2/lr at the edge of stability",
                  f"exponent k over {len(lrs)} learning rates: {spread(ks, '.2f')}", scale +
                  f"; λ_max the median over the sharpness probes from step {EOS_SINCE['vgg']} on",
                  {"BN: |k + 1| < 0.5": below([abs(k + 1) for k in ks], tol)},
                  f"per seed, the least-squares slope k of log λ_max against log lr over the sweep; |k + 1| < {tol:g}",
                  seeds, {"exponent k, BN": ks})


def sweep_bn_lowers_sharpness(sweep: dict[tuple[str, float], list[dict]]) -> Claim:
    """`bn_lowers_sharpness` over the sweep: at each learning rate at which both networks train on every seed
    (test accuracy > `TRAINS`), BN's median λ_max over the sharpness probes from `EOS_SINCE` on is below the
    standard network's, seed by seed. Reversed: above it at every such rate. (Where the standard network does
    not train, its ReLUs have died and its sharpness collapsed: no comparison of landscapes.)"""
    scale, seeds, lrs = _sweep_scope(sweep)
    holds, reverse, values = {}, {}, {}
    for lr in lrs:
        std, bn = sweep["none", lr], sweep["batch", lr]
        if not all(sweep_accuracy(r) > TRAINS for r in std + bn):
            continue
        ratio = [sweep_sharpness(b) / sweep_sharpness(s) for s, b in zip(std, bn)]
        values[f"λ_max BN / standard, lr {lr_text(lr)}"] = ratio
        holds[f"lr {lr_text(lr)}: BN's lower"] = below(ratio, 1.0, log=True)
        reverse[f"lr {lr_text(lr)}: BN's higher"] = above(ratio, 1.0, log=True)
    if not holds:
        raise ValueError("no learning rate of the sweep at which both networks train on every seed")
    book = "median λ_max, BN / standard: " + "; ".join(f"{k.rsplit(', ', 1)[1]} {spread(v, '.3g')}"
                                                     for k, v in values.items())
    return _claim(4, S4_SWEEP, "At equal learning rate, BN lowers the top Hessian eigenvalue, wherever both networks train.",
                  "Santurkar et al.: smoother with BN (effective β, Fig. 4c, 5); not measured as λ_max", book,
                  scale + f"; the sharpness probes from step {EOS_SINCE['vgg']} on", holds,
                  f"BN's median λ_max < the standard network's, at each learning rate at which both networks' test "
                  f"accuracy exceeds {100 * TRAINS:.0f}% on every seed", seeds, values, reverse)


# --- chapter 1: Ioffe & Szegedy's Fig. 1 (the sigmoid MLP) ---

S1_FIG1 = "1.3 The evidence: Ioffe & Szegedy's Fig. 1, on CIFAR-10"
S1_WHY = "1.4 Is this stability *why* BN works?"


def fig1_stats(std, bn, layer: int = 3) -> dict[str, float]:
    """Ioffe & Szegedy's Fig. 1 in numbers, for one seed's standard and BN MLPs (layer #`layer`, unit 0 and all units).

    `acc_*`: final test accuracy; `steps_*`: first evaluation at which each reaches the standard network's
    final accuracy; `first_*`: test accuracy at the first evaluation; `range_*`/`noise_*`: the three
    percentiles' mean range (5-probe averages) and single-probe noise (`analysis.percentile_drift`);
    `range_k_*`: the range of each percentile; `shift_*`/`ratio_*`: median over the layer's units of the
    mean's move and the sd's change factor (`analysis.unit_drift`); `moved_early`: the share of the standard
    network's eventual percentile travel covered when BN reaches its final accuracy; `gain_*`: test accuracy
    gained over the last 10 evaluations against the 10 before.
    """
    from .analysis import first_eval_reaching, percentile_drift, unit_drift, unit_percentiles

    out: dict[str, float] = {}
    acc = {"std": std.final["test_acc"], "bn": bn.final["test_acc"]}
    for k, r in (("std", std), ("bn", bn)):
        d, u = percentile_drift(r, layer, window=5), unit_drift(r, layer, window=100)
        steps = first_eval_reaching(r, acc["std"])
        out |= {f"acc_{k}": acc[k], f"first_{k}": float(r.history["test_acc"][0]),
                f"steps_{k}": float("inf") if steps is None else float(steps),
                f"range_{k}": float(d["range"].mean()), f"noise_{k}": float(d["noise"].mean()),
                f"shift_{k}": float(np.median(u["mean_shift"])), f"ratio_{k}": float(np.median(u["std_ratio"])),
                f"gain_{k}": float(r.history["test_acc"][-10:].mean() - r.history["test_acc"][-20:-10].mean())}
        out |= {f"range{i}_{k}": float(v) for i, v in enumerate(d["range"])}
    p = unit_percentiles(std, layer)
    early = std.history["probe_step"] <= out["steps_bn"]
    out["moved_early"] = float(np.abs(p[early] - p[0]).max() / np.abs(p - p[0]).max())
    return out


def _fig1(mlp: dict[str, Sequence]) -> tuple[list[dict[str, float]], list]:
    pairs = paired(mlp["none"], mlp["batch"])
    return [fig1_stats(s, b) for s, b in pairs], [s for s, _ in pairs]


def _col(stats: list[dict[str, float]], key: str) -> list[float]:
    return [s[key] for s in stats]


def mlp_bn_faster(mlp: dict[str, Sequence]) -> Claim:
    """Ioffe & Szegedy Fig. 1(a): BN trains faster. Per seed: BN reaches the standard network's final test
    accuracy in at most a fifth of the steps the standard network takes. `mlp[norm]`: the MLP ensembles."""
    st, runs = _fig1(mlp)
    holds = {"5× fewer steps": above([s["steps_std"] / s["steps_bn"] for s in st], 5.0, log=True)}
    speed = [s["steps_std"] / s["steps_bn"] for s in st]
    return _claim(1, S1_FIG1, "BN trains faster (Fig. 1a)", "BN faster (MNIST, 50,000 steps; plot only)",
                  f"steps to the standard net's final test accuracy: BN {spread(_col(st, 'steps_bn'), '.0f')}, standard "
                  f"{spread(_col(st, 'steps_std'), '.0f')} ({spread(speed)}x fewer with BN)", scale_of(runs[0]), holds,
                  "BN reaches the standard network's final test accuracy in <= 1/5 of the standard network's steps",
                  runs, {"steps, BN": _col(st, "steps_bn"), "steps, standard": _col(st, "steps_std")})


def mlp_bn_higher(mlp: dict[str, Sequence]) -> Claim:
    """Ioffe & Szegedy Fig. 1(a): BN ends at a higher test accuracy. Per seed: by more than 5 points."""
    st, runs = _fig1(mlp)
    holds = {"> 5 points higher": above([s["acc_bn"] - s["acc_std"] for s in st], 0.05)}
    return _claim(1, S1_FIG1, "BN ends at a higher test accuracy (Fig. 1a)", "BN ends higher (MNIST, 50,000 steps; plot only)",
                  f"final test accuracy {spread(_col(st, 'acc_bn'), '.2f', 100)}% with BN vs {spread(_col(st, 'acc_std'), '.2f', 100)}% "
                  f"without; the standard net still gained {spread(_col(st, 'gain_std'), '.1f', 100)} points over its last 10 "
                  "evaluations", scale_of(runs[0]), holds, "BN's final test accuracy > the standard network's + 5 points",
                  runs, {"test acc, BN": _col(st, "acc_bn"), "test acc, standard": _col(st, "acc_std")})


def mlp_percentiles_drift(mlp: dict[str, Sequence]) -> Claim:
    """Ioffe & Szegedy Fig. 1(b): without BN a sigmoid input's percentiles drift. Per seed: each of the 15th,
    50th and 85th percentiles travels further than with BN, and their mean range is > 2.5× BN's."""
    st, runs = _fig1(mlp)
    holds = {"each percentile drifts more than BN's": above([min(s[f"range{i}_std"] / s[f"range{i}_bn"] for i in range(3))
                                                             for s in st], 1.0, log=True),
             "mean range > 2.5× BN's": above([s["range_std"] / s["range_bn"] for s in st], 2.5, log=True)}
    return _claim(1, S1_FIG1, "Without BN the 15th/50th/85th percentiles of a last-layer sigmoid input drift (Fig. 1b)",
                  "drift markedly (plot only)", f"mean range of the three percentiles {spread(_col(st, 'range_std'), '.3f')} "
                  f"without BN vs {spread(_col(st, 'range_bn'), '.3f')} with BN", scale_of(runs[0]), holds,
                  "each percentile's range (5-probe averages) > BN's, and their mean range > 2.5× BN's", runs,
                  {"mean range, standard": _col(st, "range_std"), "mean range, BN": _col(st, "range_bn")})


def mlp_percentiles_stable(mlp: dict[str, Sequence]) -> Claim:
    """Ioffe & Szegedy Fig. 1(c): with BN the percentiles are stable. Per seed: BN's mean range is below 3.5×
    the single-probe sampling noise, the standard network's above 7×."""
    st, runs = _fig1(mlp)
    bn_x, std_x = ([s[f"range_{k}"] / s[f"noise_{k}"] for s in st] for k in ("bn", "std"))
    holds = {"BN within noise": below(bn_x, 3.5, log=True), "standard not": above(std_x, 7.0, log=True)}
    return _claim(1, S1_FIG1, "With BN the same percentiles are stable (Fig. 1c)", "stable (plot only)",
                  f"mean range / single-probe sampling noise: BN {spread(bn_x)}, without BN {spread(std_x)}",
                  scale_of(runs[0]), holds, "BN's mean percentile range < 3.5× its single-probe noise; the standard "
                  "network's > 7×", runs, {"range / noise, BN": bn_x, "range / noise, standard": std_x})


def mlp_whole_layer(mlp: dict[str, Sequence]) -> Claim:
    """Fig. 1(b, c) for every unit of the layer: per seed, the median unit's mean moves > 10× as far (in pooled
    sd) without BN, the standard network's sd changes > 5-fold and BN's by less than 25%."""
    st, runs = _fig1(mlp)
    holds = {"the mean moves > 10× BN's": above([s["shift_std"] / s["shift_bn"] for s in st], 10.0, log=True),
             "the sd changes > 5× without BN": above(_col(st, "ratio_std"), 5.0, log=True),
             "and by < 25% with BN": all_of(above(_col(st, "ratio_bn"), 0.8, log=True), below(_col(st, "ratio_bn"), 1.25, log=True))}
    return _claim(1, S1_FIG1, "The drift and the stability hold for the whole layer, not one unit (Fig. 1b, c)",
                  "one unit shown", f"median over the 100 units of layer #3: mean moved {spread(_col(st, 'shift_std'), '.3f')} "
                  f"vs {spread(_col(st, 'shift_bn'), '.3f')} pooled sd, sd changed by a factor {spread(_col(st, 'ratio_std'), '.2f')} "
                  f"vs {spread(_col(st, 'ratio_bn'), '.2f')}", scale_of(runs[0]), holds,
                  "the median unit's mean move > 10× BN's, its sd change > 5× without BN and within 0.8-1.25 with BN",
                  runs, {"mean move, standard": _col(st, "shift_std"), "mean move, BN": _col(st, "shift_bn")})


def mlp_not_by_drift(mlp: dict[str, Sequence]) -> Claim:
    """Ioffe & Szegedy's explanation: BN trains faster because it removes the drift. Its two conditions: BN is
    not > 15 points ahead at the first evaluation (before there was drift to remove), and the standard
    network's percentiles have covered >= 20% of their eventual travel when BN reaches the standard network's
    final accuracy. Both failing contradicts the explanation ("not reproduced"); one failing leaves it "partly"
    supported (where the old per-seed rule, "contradicted only if both fail", read it as reproduced)."""
    st, runs = _fig1(mlp)
    holds = {"BN not > 15 points ahead at the first evaluation": below([s["first_bn"] - s["first_std"] for s in st], 0.15),
             "the drift under way (>= 20% covered) when BN catches up": above(_col(st, "moved_early"), 0.2)}
    return _claim(1, S1_WHY, "BN trains faster because it removes internal covariate shift (the drift)",
                  "the paper's explanation; Fig. 1 as its evidence",
                  f"test accuracy at the first evaluation BN {spread(_col(st, 'first_bn'), '.1f', 100)}% vs "
                  f"{spread(_col(st, 'first_std'), '.1f', 100)}%; BN reaches the standard net's final accuracy when the standard "
                  f"net's percentiles have covered {spread(_col(st, 'moved_early'), '.0f', 100)}% of their eventual drift",
                  scale_of(runs[0]), holds, "BN is not > 15 points ahead at the first evaluation; when it reaches the standard "
                  "network's final accuracy, the standard network's percentiles have covered >= 20% of their travel", runs, {"share of drift covered, %": [100 * v for v in _col(st, "moved_early")]})


# --- chapter 5: Section 4's theory on trained networks (Santurkar et al. Theorems 4.1, 4.2, Lemma 4.5) ---

S5_41 = "Theorem 4.1 on the layers of a trained VGG"
S5_42 = "Theorem 4.2 on the trained VGG"
S5_45 = "5.7 Lemma 4.5: a ray of minima, closer to the initialization"


def bn_gradient_smaller(runs: Sequence, stats: Sequence[dict]) -> Claim:
    """The reading of Theorem 4.1 that BN makes the gradient smaller (γ²/σ² small, "σ_j typically large", and two
    components removed). `stats`: `theory.thm41_on_network` of each run. Per seed: every BN layer's median
    ‖∂L̂/∂y_j‖²/‖g‖² (the network's own backward pass) below 1; reversed if every layer's is above 1."""
    lo, hi = [min(s["shrink"]) for s in stats], [max(s["shrink"]) for s in stats]
    values = {"|dL/dy|^2/|g|^2, lowest layer": lo, "|dL/dy|^2/|g|^2, highest layer": hi,
              "gamma^2/sigma^2, lowest layer": [min(s["scale"]) for s in stats],
              "gamma^2/sigma^2, highest layer": [max(s["scale"]) for s in stats],
              "removed share of |g|^2, highest layer": [max(s["removed"]) for s in stats]}
    book = (f"median |dL/dy|^2/|g|^2 per layer from {spread(lo, '.2f')} (lowest layer) to {spread(hi, '.2f')} (highest); "
            f"median gamma^2/sigma^2 per layer {spread(values['gamma^2/sigma^2, lowest layer'], '.2f')} to "
            f"{spread(values['gamma^2/sigma^2, highest layer'], '.2f')}; removed components at most "
            f"{spread(values['removed share of |g|^2, highest layer'], '.1e')} of |g|^2")
    return _claim(5, S5_41, "BN makes the gradient smaller: it scales it by gamma^2/sigma^2 (sigma_j typically large) and "
                  "removes two components", "reading of Theorem 4.1: sigma_j is typically large", book,
                  f"{scale_of(runs[0])}; one batch of {stats[0]['batch']}, float64",
                  {"every layer's median below 1": below(hi, 1.0, log=True)},
                  "every BN layer's median (over its channels) |dL/dy_j|^2/|g|^2 below 1, the network's own gradients",
                  runs, values, reverse={"every layer's median above 1": above(lo, 1.0, log=True)})


def bn_curvature_reduced(runs: Sequence, stats: Sequence[dict[int, dict]]) -> Claim:
    """Theorem 4.2's smoothing reading on a trained network: BN's curvature along its gradient G is below
    γ²/σ² GᵀHG. `stats`: `theory.thm42_on_network` of each run (ε = 0 at the probed layer).
    Per seed: at each probed layer, more than half of the channels have it reduced."""
    layers = sorted(stats[0])
    values = {f"share reduced, layer #{k}": [s[k]["reduced"] for s in stats] for k in layers}
    values |= {f"share <g_hat,y_hat> > 0, layer #{k}": [s[k]["pos"] for s in stats] for k in layers}
    values |= {f"v'Hv/lambda_max, layer #{k}": [s[k]["cert"] for s in stats] for k in layers}
    holds = {f"layer #{k}: most channels": above(values[f"share reduced, layer #{k}"], 0.5) for k in layers}
    negative, n = sum(s[layers[0]]["cert"] < 0 for s in stats), stats[0][layers[0]]["channels"]
    book = ("curvature along the gradient reduced on " + ", ".join(
        f"{spread(values[f'share reduced, layer #{k}'], '.0f', 100)}% (layer #{k})" for k in layers)
        + f" of {n} channels; H not PSD (a negative v'Hv) after layer #{layers[0]} on {negative} of {len(stats)} seeds")
    return _claim(5, S5_42, "BN reduces the curvature along the gradient in a trained network (the theorem's smoothing reading)",
                  "conditions: H PSD and <y_hat, g_hat> > 0", book,
                  f"{scale_of(runs[0])}; one batch of {stats[0][layers[0]]['batch']}, eps = 0 at the probed layer, float64",
                  holds, "at each of layers " + ", ".join(f"#{k}" for k in layers) + ", the curvature along the gradient "
                  f"G'H_hat G below gamma^2/sigma^2 G'HG on more than half of {n} channels", runs, values)


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().reshape(-1).double(), b.detach().reshape(-1).double()
    return float(a @ b / (a.norm() * b.norm()))


def ray_closer(runs: Sequence) -> Claim:
    """Lemma 4.5 on a trained network: the ray {k W*} brings the trained weights closer to the initialization W₀,
    which needs ⟨W₀, W*⟩ > 0. Per seed (`runs`: standard networks; W₀ rebuilt from the seed): the smallest cosine
    between W₀ and W* over the conv layers is above 0. The share of ‖W₀ − W*‖² the ray saves is reported."""
    from .theory import ray_on_network
    from .train import build_model

    cos, lo, hi = [], [], []
    for r in runs:
        init, trained = build_model(r.config), r.model()
        layer_cos = [_cosine(b0.layer.weight, b1.layer.weight) for b0, b1 in zip(init.blocks, trained.blocks, strict=True)]
        # the lemma (and `ray_distance`) applies only where <W0, W*> > 0: elsewhere there is no share to report
        shares = [d.gain / d.dist2_point for d in ray_on_network(init, trained)] if min(layer_cos) > 0 else [np.nan]
        cos.append(min(layer_cos))
        lo.append(min(shares))
        hi.append(max(shares))
    values = {"min cos(W0, W*) over layers": cos, "share saved, lowest layer": lo, "share saved, highest layer": hi}
    return _claim(5, S5_45, "The ray brings the trained weights closer to the initialization", "Lemma 4.5 (for a minimum W*)",
                  f"smallest cos(W0, W*) over the conv layers {spread(cos, '.3f')}; the ray saves {spread(lo, '.1f', 100)}% "
                  f"(lowest layer) to {spread(hi, '.1f', 100)}% (highest) of |W0 - W*|^2 (W* = weights after "
                  f"{runs[0].config.steps} steps, not a minimum)", scale_of(runs[0]),
                  {"<W0, W*> > 0 in every layer": above(cos, 0.0)},
                  "<W0, W*> > 0 in every conv layer (the lemma's condition; then the ray's closest point is closer to W0 than W*)",
                  runs, values)


# --- what varies between machines: the claims of two float configurations, side by side ---

SECOND_DIR = REFERENCE_DIR / "avx2"  # the chapters re-executed under .ci/second_configuration (see `.ci/record_second`), committed


# Sections whose claims are decided from committed artifacts (`experiments.GRIDS`), not from runs the chapter trains:
# the same on every machine, so `compare` leaves them out.
ARTIFACT_SECTIONS = (S4_SWEEP, S4_EXT)


def compare(first: list[Claim], second: list[Claim]) -> list[dict]:
    """The training claims of two executions of the book (e.g. `load(REFERENCE_DIR)`, `load(SECOND_DIR)`), side
    by side: for each claim both verdicts, the conditions whose decision differs (and whether any contradicts,
    holding in one and failing in the other), and the largest shift of a per-seed quantity's mean between the
    two, in units of its standard deviation over the seeds (how far the machine moved it, against the seeds): the
    median over the claim's quantities (`shift_sd`), since one nearly constant quantity (a loss pinned at ln 10)
    makes any move look large in its own units, and the largest (`shift_sd_max`)."""
    other = {(c.chapter, c.claim): c for c in second}
    rows = []
    for a in first:
        b = other.get((a.chapter, a.claim))
        if b is None or not a.conditions or a.section in ARTIFACT_SECTIONS:
            continue
        a_cond = a.basis or a.conditions  # the run that stated the verdict, even where a later one was recorded over it
        changed = [k for k, c in a_cond.items() if k in b.conditions and c.decision != b.conditions[k].decision]
        shift = [abs(np.mean(v) - np.mean(b.values[k])) / np.std(v, ddof=1) for k, v in a.values.items()
                 if k in b.values and len(v) > 1 and np.all(np.isfinite(v)) and np.all(np.isfinite(b.values[k]))
                 and np.std(v, ddof=1) > 0]
        rows.append({"chapter": a.chapter, "claim": a.claim, "first": a.verdict, "second": b.verdict,
                     "conditions": len(a.conditions), "changed": changed,
                     "contradicted": [k for k in changed if {a_cond[k].decision, b.conditions[k].decision} == {True, False}],
                     "shift_sd": float(np.median(shift)) if shift else float("nan"),
                     "shift_sd_max": float(max(shift)) if shift else float("nan")})
    return rows


def second_provenance() -> dict:
    """Where and how `SECOND_DIR`'s records were computed (its `provenance.json`, written by `.ci/record_second`)."""
    path = SECOND_DIR / "provenance.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run `bash .ci/record_second` to record the second configuration")
    return json.loads(path.read_text())
