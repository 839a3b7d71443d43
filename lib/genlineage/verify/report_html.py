"""The verdict as one self-contained web page: ``report.html``, every image embedded, no network.

Why a page beside ``report.md``: a markdown report shows its images only in a viewer that resolves
relative paths; a model owner sends the verdict to a lawyer or a colleague as one file that any
browser opens. The page puts the decision first, the evidence below it (each key reference beside
the suspect's best reconstruction, the figure of the test statistic against the innocent null) and the
settings last. Every value is escaped (a prompt or a path is text, never markup).
"""
from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Sequence

from jinja2 import Environment

from ..io import write_text

PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>genlineage verify: {{ verdict }}</title>
<style>
body { font-family: system-ui, sans-serif; max-width: 60rem; margin: 2rem auto; padding: 0 1rem; color: #222; }
.verdict { font-size: 1.6rem; padding: .6rem 1rem; border-radius: .4rem; display: inline-block; }
.infringing { background: #fde2e1; color: #8a1c17; } .not-shown { background: #e4e9ef; color: #37474f; }
.warning { background: #fff4d6; padding: .6rem 1rem; border-left: .3rem solid #d9a400; }
table { border-collapse: collapse; margin: 1rem 0; } td, th { border-bottom: 1px solid #ddd; padding: .3rem .6rem;
text-align: left; vertical-align: middle; } img { image-rendering: pixelated; max-width: 100%; }
#statistic-figure { image-rendering: auto; } .figure-caption { color: #555; font-size: .9rem; }
pre { background: #f5f5f5; padding: 1rem; overflow-x: auto; }
</style></head><body>
<h1>genlineage verify</h1>
<p id="verdict" class="verdict {{ css }}">{{ verdict }}</p>
<p id="summary">{{ summary }}</p>
{% if warning %}<p class="warning"><strong>Warning.</strong> {{ warning }}</p>{% endif %}
{% if mismatch -%}
<p id="mismatch" class="warning"><strong>Null made differently from the suspect.</strong> {{ mismatch }}</p>{% endif %}
<h2>Decision</h2>
<table id="decision">{% for name, value in facts %}<tr><th>{{ name }}</th><td>{{ value }}</td></tr>{% endfor %}</table>
<h2>{{ figure_heading }}</h2>
<p class="figure-caption">{{ figure_alt }}.</p>
<img id="statistic-figure" alt="{{ figure_alt }}" src="data:image/png;base64,{{ figure }}">
<h2>{{ key_heading }}</h2>
<p id="key-note">{{ key_note }}</p>
<table id="keys"><tr><th>order</th><th>key #</th><th>prompt</th><th>RD</th><th>below delta0</th>
{#- #}<th>reference / reconstruction</th></tr>
{% for key in keys %}<tr><td class="order">{{ key.order }}</td><td class="key-id">{{ key.key }}</td>
{#- #}<td>{{ key.prompt }}</td><td>{{ key.rd }}</td>
<td>{{ "yes" if key.hit else "no" }}</td>
{#- #}<td><img class="pair" alt="key {{ key.key }}" src="data:image/png;base64,{{ key.png }}"></td></tr>
{% endfor %}</table>
<h2>Settings</h2>
<pre id="settings">{{ settings }}</pre>
<p>How the p-values are computed: <code>genlineage.verify.null</code> and <code>genlineage.verify.statistics</code>
{#- #} (their docstrings).</p>
</body></html>
"""


def _b64(png: bytes) -> str:
    return base64.b64encode(png).decode("ascii")


def render_html(*, verdict: str, summary: str, warning: str | None, facts: Sequence[tuple[str, str]],
                figure_png: bytes, keys: Sequence[dict], settings: dict, mismatch: str = "",
                figure_alt: str = "the test statistic of the suspect against the innocent null",
                figure_heading: str = "The test statistic: the suspect against the innocent null",
                key_heading: str = "Key samples, closest first",
                key_note: str = "order 1 = the closest reconstruction; key # = the key's place in the key set") -> str:
    """The page: ``keys`` are dicts of order (1 = closest), key (its id in the key set), prompt, rd
    (already formatted), hit and png (the pair image's bytes). ``mismatch`` is shown in a warning box."""
    template = Environment(autoescape=True).from_string(PAGE)
    return template.render(verdict=verdict, css="infringing" if verdict == "infringing" else "not-shown",
                           summary=summary, warning=warning, mismatch=mismatch, facts=facts,
                           figure=_b64(figure_png), figure_alt=figure_alt,
                           figure_heading=figure_heading, key_heading=key_heading,
                           key_note=key_note,
                           keys=[{**k, "png": _b64(k["png"])} for k in keys],
                           settings=json.dumps(settings, indent=2, default=str))


def write_html(path: Path, **page) -> Path:
    write_text(path, render_html(**page))
    return path
