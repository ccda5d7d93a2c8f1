"""The built book renders offline: math is typeset by the bundled MathJax, every image is local and
exists, and no page shows a failed cell. Opens the built pages in headless Chromium with all network
access routed to a dead proxy, and saves screenshots to `_build/screenshots/`.

Needs a built book (`jupyter-book build .`) and Debian's `chromium`. Locally the test skips without
them; CI sets BNBOOK_REQUIRE_RENDER=1 (after building the book), so there a missing piece fails it.
"""

import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

ROOT = Path(__file__).resolve().parent.parent
HTML = ROOT / "_build" / "html"
SHOTS = ROOT / "_build" / "screenshots"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
REQUIRED = os.environ.get("BNBOOK_REQUIRE_RENDER") == "1"


def _pages() -> list[Path]:
    return sorted(HTML.glob("chapters/*.html"))


def _need(condition: bool, reason: str) -> None:
    if not condition:
        if REQUIRED:
            pytest.fail(reason + " (BNBOOK_REQUIRE_RENDER=1)")
        pytest.skip(reason)


def _chromium(*args: str) -> str:
    cmd = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync",
        "--disable-background-networking", "--disable-component-update", "--disable-quic",
        "--proxy-server=http://127.0.0.1:9", "--proxy-bypass-list=<-loopback>",  # no network at all
        "--user-data-dir=" + str(ROOT / "_build" / ".chromium"), "--virtual-time-budget=15000", *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180).stdout


class _Refs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.refs: list[tuple[str, str]] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag in ("img", "script") and a.get("src"):
            self.refs.append((tag, a["src"]))
        if tag == "link" and a.get("rel") and "stylesheet" in a["rel"] and a.get("href"):
            self.refs.append((tag, a["href"]))


@pytest.fixture(scope="module")
def built():
    _need(HTML.joinpath("index.html").exists(), f"no built book at {HTML}: run `jupyter-book build .` first")
    _need(CHROMIUM is not None, "Debian's chromium is not installed (apt-get install chromium)")
    _need(len(_pages()) >= 2, "the built book has no chapter pages")
    return _pages()


def test_every_resource_is_local_and_exists(built):
    for page in built:
        parser = _Refs()
        parser.feed(page.read_text())
        for tag, ref in parser.refs:
            url = urlparse(ref)
            assert url.scheme in ("", "file"), f"{page.name} loads {ref} from the network"
            if ref.startswith("data:"):
                continue
            target = (page.parent / unquote(url.path)).resolve()
            assert target.exists(), f"{page.name}: <{tag}> {ref} does not exist"


def test_pages_render_math_offline_without_errors(built):
    for page in built:
        dom = _chromium("--dump-dom", page.as_uri())
        assert "</html>" in dom, f"chromium rendered nothing for {page.name}"
        text = re.sub(r"<[^>]+>", " ", dom)
        for bad in ("Traceback (most recent call last)", "CellExecutionError", "Error executing"):
            assert bad not in text, f"{page.name} shows an error: {bad}"
        assert 'class="output error' not in dom and "cell_output error" not in dom, f"{page.name}: error output"
        source = page.read_text()
        if "math notranslate" in source:  # the page has math: MathJax must have typeset it
            assert "<mjx-container" in dom, f"{page.name}: math was not typeset (is MathJax served locally?)"
            assert "Math input error" not in dom, f"{page.name}: MathJax could not parse some math"


def test_screenshots(built):
    SHOTS.mkdir(parents=True, exist_ok=True)
    for page in built:  # every page, top of the page at a laptop's window size
        out = SHOTS / f"{page.stem}.png"
        out.unlink(missing_ok=True)
        _chromium(f"--screenshot={out}", "--window-size=1280,1600", page.as_uri())
        assert out.exists() and out.stat().st_size > 10_000, f"no screenshot of {page.name}"


def test_claims_page_links_reach_their_sections(built):
    page = HTML / "chapters" / "06_claims.html"
    _need(page.exists(), "the claims page was not built")
    links = re.findall(r'href="(\d\d_[a-z_]+\.html)#([^"]+)"', page.read_text())
    assert links, "the claims page links to no section"
    for target, anchor in set(links):
        assert f'id="{anchor}"' in (page.parent / target).read_text(), f"claims page: {target}#{anchor} does not exist"


# Marks every element that sticks out of the page's content column, or that scrolls sideways inside it (a wide
# table, a long output line in a <pre>), and writes what it found into the page for --dump-dom to read back.
_OVERFLOW_JS = """
<script>
window.addEventListener('load', () => setTimeout(() => {
  const col = document.querySelector('article.bd-article') || document.querySelector('main');
  const right = col.getBoundingClientRect().right;
  const bad = [];
  for (const el of col.querySelectorAll('*')) {
    // inside typeset math only the display equation's own box counts (MathJax's inner boxes overlap by design)
    const display = el.matches('mjx-container[display="true"]');
    if ((!display && el.closest('mjx-container, .anim-controls, script, style')) || !el.getClientRects().length) continue;
    const r = el.getBoundingClientRect(), st = getComputedStyle(el);
    const scrolls = (display || ['auto', 'scroll'].includes(st.overflowX)) && el.scrollWidth > el.clientWidth + 2;
    if (r.right > right + 2 || scrolls) {
      const what = (el.innerText || el.tagName).trim().split('\\n')[0].slice(0, 80);
      bad.push(el.tagName.toLowerCase() + '.' + (el.className || '').toString().split(' ')[0] + ': ' + what);
    }
  }
  const out = document.createElement('pre');
  out.id = 'bnbook-overflow';
  out.textContent = JSON.stringify(bad.slice(0, 20));
  document.body.appendChild(out);
}, 500));
</script>
"""


def test_no_page_scrolls_sideways(built):
    """Tables and outputs fit the content column at a laptop's window width (1280 px): nothing sticks out of it and
    nothing inside it needs a horizontal scroll bar."""
    import json

    found = {}
    for page in built:
        probe = page.with_name(f".overflow-{page.name}")
        probe.write_text(page.read_text().replace("</body>", _OVERFLOW_JS + "</body>"))
        try:
            dom = _chromium("--dump-dom", "--window-size=1280,1600", probe.as_uri())
        finally:
            probe.unlink()
        m = re.search(r'<pre id="bnbook-overflow"[^>]*>(.*?)</pre>', dom, re.S)
        assert m, f"{page.name}: the overflow check did not run"
        bad = json.loads(m.group(1).replace("&quot;", '"').replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">"))
        if bad:
            found[page.name] = bad
    assert not found, "content wider than the column (scrolls sideways):\n" + "\n".join(
        f"{name}: {len(items)}+ elements, e.g. " + "; ".join(items[:4]) for name, items in found.items())
