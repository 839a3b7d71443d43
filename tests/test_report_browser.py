"""report.html as a browser shows it: headless Chromium opens the file with the network off and
reports what it reads: the verdict and its badge's colour, whether every image (the statistic's
figure, each key pair) decoded, the decision table's effect and null make-up, the keys' order."""
from __future__ import annotations

import json

import pytest

from browser import find_or_install_chromium, headless_chromium
from test_report_html import planted_verdict

from genlineage.verify.report import write_report

READ = """JSON.stringify((() => {
  const badge = document.getElementById('verdict'), figure = document.getElementById('statistic-figure');
  const facts = Object.fromEntries([...document.querySelectorAll('#decision tr')]
      .map(r => [r.querySelector('th').textContent, r.querySelector('td').textContent]));
  return {verdict: badge.textContent, background: getComputedStyle(badge).backgroundColor,
          figure: !!figure && figure.complete && figure.naturalWidth > 0 && figure.getBoundingClientRect().width > 0,
          images: [...document.images].map(i => i.complete && i.naturalWidth > 0),
          pairs: document.querySelectorAll('img.pair').length, facts,
          order: [...document.querySelectorAll('#keys td.order')].map(c => c.textContent),
          keyIds: [...document.querySelectorAll('#keys td.key-id')].map(c => c.textContent),
          mismatch: document.getElementById('mismatch')?.textContent ?? null};
})())"""


@pytest.fixture(scope="module")
def chromium() -> str:
    binary, why = find_or_install_chromium()
    if binary is None:
        pytest.skip(why)
    return binary


def _rgb(css: str) -> tuple[int, ...]:
    return tuple(int(x) for x in css[css.index("(") + 1:css.index(")")].split(",")[:3])


def test_the_page_shows_the_verdict_the_statistic_the_null_and_the_keys_in_order(chromium, tmp_path):
    shown = {}
    not_shown = planted_verdict(null_population={**planted_verdict().null_population, "mismatch": "other base",
                                                 "allowed": True})
    for name, v in {"not shown": not_shown, "infringing": planted_verdict(verdict="infringing")}.items():
        write_report(v, tmp_path / name)
    with headless_chromium(chromium) as page:
        for name in ("not shown", "infringing"):
            page.open((tmp_path / name / "report.html").as_uri())
            shown[name] = json.loads(page.evaluate(READ))
    clean, guilty = shown["not shown"], shown["infringing"]
    assert clean["verdict"] == "not shown" and guilty["verdict"] == "infringing"
    r, g, b = _rgb(clean["background"])
    assert not (g > r and g > b), f"'not shown' must not read as a green 'cleared': {clean['background']}"
    r, g, b = _rgb(guilty["background"])
    assert r > g and r > b, guilty["background"]
    assert clean["figure"] and clean["pairs"] == 4 and len(clean["images"]) == 5 and all(clean["images"]), clean
    assert "standard deviations of the innocent shadows' scores above their mean" in clean["facts"]["effect"]
    assert clean["facts"]["innocent null"].startswith("5 innocent shadows; bases: tiny-base (3), other-base (2)")
    assert clean["facts"]["suspect's score"] == "-0.1588"
    assert clean["order"] == ["1", "2", "3", "4"] and clean["keyIds"] == ["2", "1", "0", "3"]
    assert "The owner accepted a null made differently from the suspect: other base" in clean["mismatch"]
    assert guilty["mismatch"] is None
