"""report.html on its own: escaped values, embedded images, the decision first, a neutral badge for
'not shown', and the evidence (effect, the null's make-up, keys in order) on the page."""
from __future__ import annotations

import io
import re
from html.parser import HTMLParser

import numpy as np
import pandas as pd
from PIL import Image

from genlineage.verify.verdict import Verdict
from genlineage.verify.report import write_report
from genlineage.verify.report_html import PAGE, render_html

# innocent shadows' scores planted 0.0001 apart from the suspect's: three digits would print them all alike
INNOCENT = [-0.1589, -0.1590, -0.1591, -0.1592, -0.1595]
# key ids 0..3 planted so that closest first reads 2, 1, 0, 3 (the review saw "3, 1, 0, 2" under "closest first")
KEY_RD = [0.1601, 0.1571, 0.1562, 0.1618]


def _png(colour: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 4), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def planted_verdict(**over) -> Verdict:
    """A shadow-null Verdict with planted numbers (score -0.1588 against shadows at -0.1589..-0.1595)."""
    innocent = np.asarray(over.pop("innocent_scores", INNOCENT), dtype=float)
    score = over.pop("score", -0.1588)
    n = len(KEY_RD)
    keys = pd.DataFrame({"rank": range(n), "prompt": [f"prompt {i}" for i in range(n)], "rd": KEY_RD,
                         "best_seed": [0] * n, "hit": [x < 0.158 for x in KEY_RD]})
    images = np.zeros((n, 8, 8, 3), np.uint8)
    args = dict(verdict="not shown", p_value=1 / 6, null="innocent shadows (5)", target_fpr=0.05, conf=0.5,
                delta0=0.158, delta0_from="calibrated on the shadows", n_keys=n, key_hits=2, queries=8,
                discriminator_score=0.87, empirical_p_value=1 / 6, mean_rd=0.1588,
                innocent_mean_rds=[-x for x in INNOCENT], settings={"target_fpr": 0.05}, warning="",
                statistic="mean_rd", statistic_label="mean distance over the keys (sign flipped: higher = closer)",
                score=score, innocent_scores=[float(x) for x in innocent],
                effect=float((score - innocent.mean()) / innocent.std(ddof=1)), rank_p_value=1 / 6,
                parametric_p_value=0.031, p_from="rank", normality_p=0.4,
                null_population={"count": 5, "bases": {"tiny-base": 3, "other-base": 2}, "methods": {"full": 5},
                                 "suspect_base": "tiny-base", "suspect_method": None, "mismatch": "", "allowed": False},
                keys=keys, null_rds=np.linspace(0.155, 0.165, 20), reconstructions=images, references=images)
    return Verdict(**{**args, **over})


def controls_verdict(**over) -> Verdict:
    """A controls-null Verdict (no shadows): every shadow statistic None, the controls' distances as the null."""
    none = dict.fromkeys(["score", "innocent_scores", "effect", "rank_p_value", "parametric_p_value", "normality_p",
                          "innocent_mean_rds", "empirical_p_value", "discriminator_score"])
    args = dict(verdict="infringing", p_value=0.002, null="control samples (Fisher exact)", p_from="fisher",
                statistic="fisher", statistic_label="key hits against control hits below delta0",
                null_population={}, warning="The controls null assumes x.",
                null_rds=np.random.default_rng(1).normal(0.17, 0.005, 30))
    v = planted_verdict()
    return Verdict(**{**{f: getattr(v, f) for f in v.__dataclass_fields__}, **none, **args, **over})


def page(**over) -> str:
    args = dict(verdict="not shown", summary="s", warning=None, facts=[("verdict", "not shown")],
                figure_png=_png((0, 0, 255)), keys=[{"order": 1, "key": 0, "prompt": "a <script>alert(1)</script> face",
                                                    "rd": "0.2500", "hit": False, "png": _png((255, 0, 0))}],
                settings={"out": "/tmp/<b>"})
    return render_html(**{**args, **over})


class _Cells(HTMLParser):
    """The text of each table cell of one table (by id), row by row."""

    def __init__(self, table_id: str):
        super().__init__()
        self.table_id, self.inside, self.rows = table_id, False, []

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.inside = dict(attrs).get("id") == self.table_id
        elif self.inside and tag == "tr":
            self.rows.append([])
        elif self.inside and tag in ("td", "th"):
            self.rows[-1].append("")

    def handle_endtag(self, tag):
        if tag == "table":
            self.inside = False

    def handle_data(self, data):
        if self.inside and self.rows and self.rows[-1]:
            self.rows[-1][-1] += data


def cells(html: str, table_id: str) -> list[list[str]]:
    parser = _Cells(table_id)
    parser.feed(html)
    return [[c.strip() for c in row] for row in parser.rows]


def test_a_prompt_or_a_setting_is_text_never_markup():
    html = page()
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "&lt;b&gt;" in html


def test_the_verdict_is_styled_by_what_it_says():
    assert 'class="verdict not-shown">not shown<' in page()
    assert 'class="verdict infringing">infringing<' in page(verdict="infringing")


def _background(css_class: str) -> tuple[int, int, int]:
    colour = re.search(rf"\.{css_class} {{ background: #([0-9a-f]{{6}})", PAGE).group(1)
    return tuple(int(colour[i:i + 2], 16) for i in (0, 2, 4))


def test_not_shown_is_a_neutral_badge_and_infringing_a_red_one():
    """Green reads as 'cleared'; 'not shown' is not a clearance."""
    r, g, b = _background("not-shown")
    assert not (g > r and g > b) and max(r, g, b) - min(r, g, b) < 20, (r, g, b)
    r, g, b = _background("infringing")
    assert r > g and r > b


def test_a_mismatched_null_shows_in_a_warning_box():
    html = page(mismatch="The owner accepted a null made differently from the suspect: bases differ")
    assert re.search(r'id="mismatch" class="warning"><strong>[^<]*</strong> The owner accepted a null made '
                     r"differently from the suspect: bases differ", html)
    assert 'id="mismatch"' not in page()


def test_the_report_page_shows_the_effect_the_null_and_keys_in_order(tmp_path):
    v = planted_verdict(null_population={**planted_verdict().null_population, "mismatch": "suspect base unknown",
                                         "allowed": True})
    write_report(v, tmp_path)
    html = (tmp_path / "report.html").read_text()
    facts = {row[0]: row[1] for row in cells(html, "decision")}
    assert "standard deviations of the innocent shadows' scores above their mean" in facts["effect"]
    assert facts["suspect's score"] == "-0.1588" and "-0.1589, -0.1590" in facts["innocent shadows' scores"]
    assert facts["innocent null"].startswith("5 innocent shadows") and "tiny-base (3), other-base (2)" in facts["innocent null"]
    assert facts["suspect (as known)"] == "base tiny-base, method unknown"
    assert facts["discriminator score"].startswith("0.87 (probability of infringing, 0 to 1")
    assert "The owner accepted a null made differently from the suspect: suspect base unknown" in html
    table = cells(html, "keys")
    assert table[0][:2] == ["order", "key #"]
    assert [row[0] for row in table[1:]] == ["1", "2", "3", "4"] and [row[1] for row in table[1:]] == ["2", "1", "0", "3"]
    assert [row[3] for row in table[1:]] == ["0.1562", "0.1571", "0.1601", "0.1618"]
    assert html.count('src="data:image/png;base64,') == 5 and 'id="statistic-figure"' in html
