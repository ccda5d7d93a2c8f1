"""The claims the book checks: each chapter records its own, the claims page lists them all.

A chapter's last cell calls `record(chapter, [Claim(...), ...])` with numbers it has just computed and a
verdict decided by code from those numbers; that writes `data/artifacts/claims/chapter{N}.json`
(committed, so the claims page also renders on its own). The claims page reads every chapter's file
with `load()` and shows `table(...)`. Nothing in it is typed by hand: re-executing a chapter rewrites
its file, and nbval compares the claims page's text table with the committed one.
"""

from __future__ import annotations

import json
import os
from html import escape
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from .data import atomic_write

CLAIMS_ENV = "BNBOOK_CLAIMS"
VERDICTS = ("reproduced", "partly", "not reproduced", "reversed", "confirmed", "refuted")
# the notebook of each chapter, for links from the claims page to the section that checks a claim
NOTEBOOKS = {1: "01_ics", 2: "02_bn_algorithm", 3: "03_noisy_bn_ics", 4: "04_landscape", 5: "05_theory"}


@dataclass(frozen=True)
class Claim:
    """One checked claim: what the paper says and reports, what the book measured, at which scale.

    `section` is the exact title of the section that checks it (the link target). `verdict` is one of
    `VERDICTS`: "reproduced"/"partly"/"not reproduced"/"reversed" for experimental claims, and
    "confirmed"/"refuted" for mathematical statements checked numerically.
    """

    chapter: int
    section: str
    claim: str
    paper: str
    book: str
    scale: str
    verdict: str

    def __post_init__(self) -> None:
        if self.chapter not in NOTEBOOKS:
            raise ValueError(f"chapter={self.chapter!r} must be one of {sorted(NOTEBOOKS)}")
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict={self.verdict!r} must be one of {VERDICTS}")
        for f in fields(self):
            if f.name != "chapter" and not str(getattr(self, f.name)).strip():
                raise ValueError(f"Claim.{f.name} is empty")

    def link(self) -> str:
        """The HTML page and anchor of the section that checks the claim (Sphinx's section id)."""
        from docutils.nodes import make_id  # Sphinx's own rule for section ids; docutils comes with the book

        return f"{NOTEBOOKS[self.chapter]}.html#{make_id(self.section)}"


def claims_dir() -> Path:
    """`$BNBOOK_CLAIMS`, else `data/artifacts/claims` in the repository."""
    env = os.environ.get(CLAIMS_ENV)
    return Path(env).resolve() if env else Path(__file__).resolve().parent.parent / "data" / "artifacts" / "claims"


def record(chapter: int, claims: list[Claim]) -> Path:
    """Replace `chapter`'s recorded claims by `claims` (atomically) and return the file."""
    wrong = [c for c in claims if c.chapter != chapter]
    if wrong:
        raise ValueError(f"record({chapter}, ...) got claims of chapter {wrong[0].chapter}")
    path = claims_dir() / f"chapter{chapter}.json"
    text = json.dumps([asdict(c) for c in claims], indent=1, ensure_ascii=False) + "\n"
    atomic_write(path, lambda f: f.write(text.encode()))
    return path


def load() -> list[Claim]:
    """Every recorded claim, by chapter and in each chapter's order; a chapter with no file is skipped."""
    out: list[Claim] = []
    for chapter in sorted(NOTEBOOKS):
        path = claims_dir() / f"chapter{chapter}.json"
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
        cols = ("claim", "paper", "scale", "verdict")
        return "\n".join(f"[{c.chapter}] {c.section}\n" + "".join(f"  {k}: {getattr(c, k)}\n" for k in cols)
                         for c in claims)
    def td(text: str, style: str = "") -> str:
        return f'<td style="vertical-align: top; {style}">{text}</td>'

    rows = [
        "<tr>" + td(f'<a href="{escape(c.link())}">{c.chapter}</a>') + td(escape(c.claim)) + td(escape(c.paper))
        + td(f'{escape(c.book)}<br><small style="opacity: 0.7">{escape(c.scale)}</small>')
        + td(f"<b>{escape(c.verdict)}</b>", "white-space: nowrap") + "</tr>"
        for c in claims
    ]
    head = "".join(f"<th>{k}</th>" for k in ("§", "claim", "paper", "book (scale)", "verdict"))
    # the book's content column is narrow: smaller type, and the table scrolls sideways rather than overflow
    return (f'<div style="overflow-x: auto"><table class="claims" style="font-size: 0.8em">'
            f'<thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table></div>')


def summary(claims: list[Claim]) -> dict[str, int]:
    """How many claims have each verdict."""
    return {v: n for v in VERDICTS if (n := sum(c.verdict == v for c in claims))}
