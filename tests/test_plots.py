"""bnbook.plots: tables as Markdown, the offline player, labels."""

import base64
import io
import re

import matplotlib
import pytest

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from PIL import Image  # noqa: E402

from bnbook import plots  # noqa: E402
from bnbook.experiments import BOOK_DLN, BOOK_VGG  # noqa: E402


def test_table_is_markdown_with_escaped_cells_and_checked_shape():
    t = plots.table(["claim", "a|b"], [["x", 1.5], ["y|z", "2\n3"]])
    assert t.data.split("\n") == ["| claim | a\\|b |", "|:---|---:|", "| x | 1.5 |", "| y\\|z | 2 3 |"]
    assert plots.table(["a", "b"], [[1, 2]], align="cr").data.split("\n")[1] == "|:---:|---:|"
    with pytest.raises(ValueError, match="every row needs 2 cells"):
        plots.table(["a", "b"], [[1]])
    with pytest.raises(ValueError, match="align needs"):
        plots.table(["a", "b"], [[1, 2]], align="lx")


def test_verdict_counts_counts_the_stated_verdict_by_chapter():
    from bnbook.claims import Claim

    def claim(chapter, verdict, stated=""):
        return Claim(chapter, "s", "c", "p", "b", "scale", verdict, stated=stated)

    t = plots.verdict_counts([claim(1, "reproduced"), claim(1, "not robust", stated="reproduced"),
                              claim(3, "partly"), claim(3, "confirmed")])
    assert t.data.split("\n") == ["| verdict | ch. 1 | ch. 3 | all |", "|:---|---:|---:|---:|",
                                   "| reproduced | 2 | – | 2 |", "| partly | – | 1 | 1 |",
                                   "| confirmed | – | 1 | 1 |", "| all | 2 | 2 | 4 |"]

def test_player_is_self_contained_and_shows_every_frame():
    plots.use_style()  # the book's style saves at 150 dpi: the player's frames stay at 100
    fig, ax = plt.subplots(figsize=(3, 2))
    (line,) = ax.plot([0, 1], [0, 0])
    drawn = []

    def draw(i):
        drawn.append(i)
        line.set_ydata([0, i])

    html = plots.player(fig, draw, frames=4).data
    assert set(drawn) >= {0, 1, 2, 3}
    assert html.count("data:image/png;base64,") >= 4  # every frame is embedded
    assert not re.search(r"(src|href)=\"https?://", html) and "fa fa-" not in html  # nothing from a CDN
    buttons = re.findall(r"<button[^>]*>\s*([^<]*?)\s*</button>", html)
    assert buttons == ["−", "|◀◀", "|◀", "◀", "❚❚", "▶", "▶|", "▶▶|", "+"]  # every button keeps an icon
    assert not plt.fignum_exists(fig.number)
    png = re.search(r"data:image/png;base64,([^\"]+)", html).group(1)
    assert Image.open(io.BytesIO(base64.b64decode(png))).size[0] == 300  # 3 in at 100 dpi, whatever the style says


def test_network_names_the_scale_without_norm_lr_or_seed():
    assert plots.network(BOOK_VGG) == "VGG-11 ×0.125 width"
    assert plots.network(BOOK_DLN).startswith("DLN 25×10")
    assert "norm" not in plots.network(BOOK_DLN)


def test_span_and_percent():
    assert plots.span([0.12, 0.5, 0.31], ".2f") == "0.12–0.50"
    assert plots.span([2.001, 2.004], ".2f") == "2.00"
    assert plots.percent(0.1234) == "12.3%" and plots.percent(1, 0) == "100%"


def test_landscape_comparison_puts_the_paper_beside_each_quantity():
    row = {"median_a": 20.9, "median_b": 14.1, "ratio": 1.4823, "max_a": 56.6, "max_b": 25.3, "wins": 0.625}
    t = plots.landscape_comparison({"beta": row}, {"beta": "BN flat ≈ 20"}).data.split("\n")
    assert t[0] == ("| quantity | paper | median, standard | median, BN | ratio | worst, standard | worst, BN "
                    "| standard rougher |")
    assert t[1] == "|:---|:---|---:|---:|---:|---:|---:|---:|"
    assert t[2] == "| effective β | BN flat ≈ 20 | 20.9 | 14.1 | 1.48 | 56.6 | 25.3 | 62% of probes |"


def test_fold_keeps_every_line_within_the_column_and_words_whole():
    text = "first " + "word " * 40 + "\n\nsecond-line-with-hyphens " * 4 + "\n" + "x" * 90
    out = plots.fold(text, indent="  ")
    lines = out.split("\n")
    assert all(len(l) <= plots.TEXT_WIDTH for l in lines if not l.strip().startswith("x"))
    assert "x" * 90 in lines  # a word longer than the column stays whole
    assert "" in lines  # blank lines are kept
    assert lines[1].startswith("  word") and not lines[0].startswith(" ")
    assert out.replace("\n  ", " ").split() == text.split()  # nothing lost or split
