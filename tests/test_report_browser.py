"""report.html as a browser shows it: headless Chromium opens the file with the network off and
reports the verdict it reads and whether every image decoded."""
from __future__ import annotations

import pytest

from browser import find_or_install_chromium, headless_chromium
from test_report_html import _png

from genlineage.verify.report_html import write_html


@pytest.fixture(scope="module")
def chromium() -> str:
    binary, why = find_or_install_chromium()
    if binary is None:
        pytest.skip(why)
    return binary


def test_the_page_shows_the_verdict_and_every_key_image_loads(chromium, tmp_path):
    keys = [{"rank": i, "prompt": f"key {i}", "rd": 0.1 * i, "hit": i < 2, "png": _png((40 * i, 0, 0))} for i in range(5)]
    page_file = write_html(tmp_path / "report.html", verdict="infringing", summary="The suspect reconstructed 2 of 5.",
                           warning=None, facts=[("verdict", "infringing")], histogram_png=_png((0, 0, 255)), keys=keys,
                           settings={"target_fpr": 0.05})
    with headless_chromium(chromium) as page:
        page.open(page_file.as_uri())
        shown = page.evaluate("JSON.stringify({verdict: document.getElementById('verdict').textContent,"
                              " images: [...document.images].map(i => i.complete && i.naturalWidth > 0),"
                              " pairs: document.querySelectorAll('img.pair').length})")
    import json

    shown = json.loads(shown)
    assert shown["verdict"] == "infringing"
    assert shown["pairs"] == 5 and len(shown["images"]) == 6 and all(shown["images"]), shown
