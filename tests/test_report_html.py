"""report.html on its own: escaped values, embedded images, the decision first."""
from __future__ import annotations

import io

from PIL import Image

from genlineage.verify.report_html import render_html


def _png(colour: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 4), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def page(**over) -> str:
    args = dict(verdict="not shown", summary="s", warning=None, facts=[("verdict", "not shown")],
                histogram_png=_png((0, 0, 255)), keys=[{"rank": 0, "prompt": "a <script>alert(1)</script> face",
                                                       "rd": 0.25, "hit": False, "png": _png((255, 0, 0))}],
                settings={"out": "/tmp/<b>"})
    return render_html(**{**args, **over})


def test_a_prompt_or_a_setting_is_text_never_markup():
    html = page()
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "&lt;b&gt;" in html


def test_the_verdict_is_styled_by_what_it_says():
    assert 'class="verdict not-shown">not shown<' in page()
    assert 'class="verdict infringing">infringing<' in page(verdict="infringing")
