"""The verdict as one self-contained web page: ``report.html``, every image embedded, no network.

Why a page beside ``report.md``: a markdown report shows its images only in a viewer that resolves
relative paths; a model owner sends the verdict to a lawyer or a colleague as one file that any
browser opens. The page puts the decision first, the evidence below it (each key reference beside
the suspect's best reconstruction, the suspect's distances against the innocent null) and the
settings last. Every value is escaped (a prompt or a path is text, never markup).
"""
from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Sequence

from jinja2 import Environment

PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>genlineage verify: {{ verdict }}</title>
<style>
body { font-family: system-ui, sans-serif; max-width: 60rem; margin: 2rem auto; padding: 0 1rem; color: #222; }
.verdict { font-size: 1.6rem; padding: .6rem 1rem; border-radius: .4rem; display: inline-block; }
.infringing { background: #fde2e1; color: #8a1c17; } .not-shown { background: #e3f1e4; color: #1e5b26; }
.warning { background: #fff4d6; padding: .6rem 1rem; border-left: .3rem solid #d9a400; }
table { border-collapse: collapse; margin: 1rem 0; } td, th { border-bottom: 1px solid #ddd; padding: .3rem .6rem;
text-align: left; vertical-align: middle; } img { image-rendering: pixelated; max-width: 100%; }
pre { background: #f5f5f5; padding: 1rem; overflow-x: auto; }
</style></head><body>
<h1>genlineage verify</h1>
<p id="verdict" class="verdict {{ css }}">{{ verdict }}</p>
<p id="summary">{{ summary }}</p>
{% if warning %}<p class="warning"><strong>Warning.</strong> {{ warning }}</p>{% endif %}
<h2>Decision</h2>
<table id="decision">{% for name, value in facts %}<tr><th>{{ name }}</th><td>{{ value }}</td></tr>{% endfor %}</table>
<h2>Distances against the innocent null</h2>
<img id="histogram" alt="reconstruction distances of the suspect against the null" src="data:image/png;base64,{{ histogram }}">
<h2>Key samples, closest first: reference | suspect's best reconstruction</h2>
<table id="keys"><tr><th>rank</th><th>prompt</th><th>RD</th><th>below delta0</th><th>reference / reconstruction</th></tr>
{% for key in keys %}<tr><td>{{ key.rank }}</td><td>{{ key.prompt }}</td><td>{{ "%.4f"|format(key.rd) }}</td>
<td>{{ "yes" if key.hit else "no" }}</td><td><img class="pair" alt="key {{ key.rank }}" src="data:image/png;base64,{{ key.png }}"></td></tr>
{% endfor %}</table>
<h2>Settings</h2>
<pre id="settings">{{ settings }}</pre>
<p>How the p-value is computed: <code>genlineage.verify.null</code> (its docstring).</p>
</body></html>
"""


def _b64(png: bytes) -> str:
    return base64.b64encode(png).decode("ascii")


def render_html(*, verdict: str, summary: str, warning: str | None, facts: Sequence[tuple[str, str]],
                histogram_png: bytes, keys: Sequence[dict], settings: dict) -> str:
    """The page: ``keys`` are dicts of rank, prompt, rd, hit and png (the pair image's bytes)."""
    template = Environment(autoescape=True).from_string(PAGE)
    return template.render(verdict=verdict, css="infringing" if verdict == "infringing" else "not-shown",
                           summary=summary, warning=warning, facts=facts, histogram=_b64(histogram_png),
                           keys=[{**k, "png": _b64(k["png"])} for k in keys],
                           settings=json.dumps(settings, indent=2, default=str))


def write_html(path: Path, **page) -> Path:
    from ..io import write_text

    write_text(path, render_html(**page))
    return path
