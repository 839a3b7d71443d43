"""The verdict as evidence: ``report.md`` for a person, ``report.html`` for a browser (one file,
images embedded: :mod:`genlineage.verify.report_html`), ``verdict.json`` for a machine, the key
samples beside the suspect's best reconstructions, and a figure of the test statistic.

Why this shape: a verdict someone may have to defend needs the images (a reader sees the
inherited copies, or that there are none), the numbers behind the decision at a precision that
tells the suspect from the innocent shadows, the size of the difference in units of their spread,
what the null was made of, and the exact settings to re-run it.
"""
from __future__ import annotations

import io
import json
import math
import re
from pathlib import Path
from typing import Sequence

import numpy as np
from matplotlib.figure import Figure  # no pyplot: the report never touches the caller's backend
from PIL import Image

from ..io import atomic_path, write_text
from ..outdir import check_output_folder, staged_output
from .verdict import Verdict
from .report_html import write_html

FIGURE = "rd_histogram.png"  # the name the tests and older reports know; it now shows the statistic
NORMALITY_DOUBT = 0.05       # a Shapiro-Wilk p below this makes the parametric p doubtful
CLASSIFIER = "probability of infringing, 0 to 1, from a logistic classifier fitted on your shadow models"


# --- numbers a reader can tell apart ----------------------------------------------------------------

def digits_apart(focus: float | None, others: Sequence[float], min_significant: int = 3,
                 max_decimals: int = 12) -> int:
    """Decimals at which ``focus`` prints differently from each of ``others`` that differs from it.

    Why: three digits printed a suspect at 0.1588 and shadows at 0.1589-0.1595 all as 0.159, hiding
    the evidence. Start at ``min_significant`` digits of the largest value (and of ``focus``, so a
    suspect at 0.008 among shadows at 0.2 is not printed as one digit), then add decimals until the
    nearest distinct value shows its gap (capped: a gap of 1e-15 is noise, not evidence)."""
    values = [float(x) for x in [focus, *others] if x is not None and math.isfinite(float(x))]
    d = _decimals_for(max((abs(x) for x in values), default=0.0), min_significant)
    if focus is None or not math.isfinite(float(focus)):
        return d
    d = max(d, min(_decimals_for(abs(float(focus)), min_significant), 6))  # the focus itself stays readable
    rivals = [float(x) for x in others if x is not None and math.isfinite(float(x)) and float(x) != float(focus)]
    while d < max_decimals and any(f"{float(focus):.{d}f}" == f"{x:.{d}f}" for x in rivals):
        d += 1
    return d


def _decimals_for(scale: float, significant: int) -> int:
    """Decimals that give ``significant`` digits at ``scale`` (0 for large values)."""
    return max(0, significant - 1 - math.floor(math.log10(scale))) if scale > 0 else significant


def fixed(x: float, decimals: int) -> str:
    return f"{x:.{decimals}f}"


def effect_text(effect: float | None) -> str:
    """The effect in words a reader can weigh: how many of the innocent shadows' standard deviations."""
    if effect is None:
        return "n/a (no innocent shadows' scores)"
    if not math.isfinite(effect):
        return "not defined (the innocent shadows' scores do not vary)"
    side = "above" if effect >= 0 else "below"
    return f"{abs(effect):.1f} standard deviations of the innocent shadows' scores {side} their mean"


# --- markdown that a caption cannot break -----------------------------------------------------------

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_MARKDOWN = re.compile(r"([\\`*_\[\]#!|~])")


def md_text(value: object) -> str:
    """``value`` as inert markdown text: one line, every markdown and HTML metacharacter escaped.
    Why: a prompt is the owner's (or anyone's) text; in report.md it must not forge a heading, a
    verdict, a link or an image."""
    text = _CONTROL.sub(" ", str(value))
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _MARKDOWN.sub(r"\\\1", text)


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Cells go in as given: callers escape text with :func:`md_text` (an image link stays a link)."""
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(r) + " |" for r in rows)]


def _fence(text: str) -> str:
    """A code fence longer than any run of backticks inside ``text``, so it cannot be closed early."""
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    return "`" * max(3, longest + 1)


# --- what the numbers say ---------------------------------------------------------------------------

def _has_scores(v: Verdict) -> bool:
    return v.score is not None and bool(v.innocent_scores)


def statistic_words(v: Verdict) -> str:
    """The statistic's label, with its direction unless the label already says it."""
    label = v.statistic_label
    return label if "higher" in label else f"{label} (higher = closer to the source)"


def _score_decimals(v: Verdict) -> int:
    return digits_apart(v.score, v.innocent_scores or [])


def _scores_text(v: Verdict, d: int, limit: int = 8) -> str:
    """The innocent shadows' scores: all of them highest first when few, else their mean and range."""
    s = sorted(v.innocent_scores, reverse=True)
    if len(s) <= limit:
        return "highest first: " + ", ".join(fixed(x, d) for x in s)
    return f"mean {fixed(float(np.mean(s)), d)}, from {fixed(s[-1], d)} to {fixed(s[0], d)}"


def _above(v: Verdict) -> str:
    n, below = len(v.innocent_scores), sum(x < v.score for x in v.innocent_scores)
    return f"above all {n} innocent shadows" if below == n else f"above {below} of the {n} innocent shadows"


def _rank_p(v: Verdict) -> float | None:
    return v.rank_p_value if v.rank_p_value is not None else v.empirical_p_value


def _rank_words(n: int) -> str:
    return (f"rank among the {n} innocent shadows: exact with no assumption, cannot go below "
            f"1/({n}+1) = {1 / (n + 1):.3g}")


def _parametric_words(v: Verdict) -> str:
    words = "Student-t prediction from the shadows' mean and spread: assumes their scores are normally spread"
    if v.normality_p is None:
        return words
    words += f"; Shapiro-Wilk p = {v.normality_p:.2g}"
    if v.normality_p < NORMALITY_DOUBT:
        words += f", below {NORMALITY_DOUBT:g}: they do not look normal, so the parametric p is doubtful"
    return words


def p_values(v: Verdict) -> list[tuple[str, str]]:
    """The primary p-value with where it comes from, then the other one with how it differs.
    Why: two unexplained p-values let a reader pick the one they like."""
    if not _has_scores(v):
        return [("p-value (decides)", f"{v.p_value:.3g} ({v.null})")]
    n, rank = len(v.innocent_scores), _rank_p(v)
    words = {"rank": _rank_words(n), "parametric": _parametric_words(v)}
    other = "parametric" if v.p_from == "rank" else "rank"
    rows = [("p-value (decides)", f"{v.p_value:.3g}, from the {v.p_from} test: {words.get(v.p_from, v.null)}")]
    other_p = v.parametric_p_value if other == "parametric" else rank
    if other_p is not None:
        rows.append((f"{other} p-value (shown, not used)", f"{other_p:.3g}: {words[other]}"))
    return rows


def _counts(d: object) -> str:
    return ", ".join(f"{k} ({n})" for k, n in d.items()) if isinstance(d, dict) and d else "not recorded"


def null_makeup(v: Verdict) -> tuple[str, str]:
    """(what the innocent shadows were, what is known of the suspect): a null made differently from
    the suspect (another base, another method) answers a different question."""
    pop = v.null_population or {}
    count = pop.get("count", len(v.innocent_scores) if v.innocent_scores else None)
    if count is None and not pop:
        return "not recorded", "not recorded"
    shadows = f"{count} innocent shadows; bases: {_counts(pop.get('bases'))}; methods: {_counts(pop.get('methods'))}"
    suspect = f"base {pop.get('suspect_base') or 'unknown'}, method {pop.get('suspect_method') or 'unknown'}"
    if pop.get("suspect_evidence"):
        suspect += f" (known from: {pop['suspect_evidence']})"
    return shadows, suspect


def mismatch_note(v: Verdict) -> str:
    """The box a reader must not miss when the null was made differently from the suspect."""
    pop = v.null_population or {}
    mismatch = pop.get("mismatch") or ""
    if not mismatch:
        return ""
    who = "The owner accepted a null made differently from the suspect" if pop.get("allowed") else \
        "The null was made differently from the suspect"
    return f"{who}: {mismatch}"


def discriminator_text(v: Verdict) -> str:
    if v.discriminator_score is None:
        return "n/a (needs infringing and innocent shadows)"
    return f"{v.discriminator_score:.2f} ({CLASSIFIER})"


def summary_paragraph(v: Verdict) -> str:
    """The plain-language summary a model owner can quote: the statistic in words, the suspect's
    value against the innocent shadows' (at a precision that tells them apart), the effect in
    their standard deviations, the deciding p-value and the verdict."""
    spent = f"The check spent {v.queries} queries of the suspect."
    return " ".join([_evidence_sentence(v), _verdict_sentence(v), spent])


def _rd_decimals(v: Verdict) -> int:
    """Decimals for distances beside delta0: four digits, more where a key sits next to delta0."""
    return digits_apart(v.delta0, v.keys.rd.tolist(), min_significant=4)


def _mean_rd_decimals(v: Verdict) -> int:
    return digits_apart(v.mean_rd, v.innocent_mean_rds or [], min_significant=4)


def _keys_sentence(v: Verdict) -> str:
    d, md = _rd_decimals(v), _mean_rd_decimals(v)
    return (f"It reconstructed {v.key_hits} of {v.n_keys} of the source model's key samples more closely than "
            f"delta0 = {fixed(v.delta0, d)} (conf {v.conf:.2f}; mean distance {fixed(v.mean_rd, md)}).")


def _evidence_sentence(v: Verdict) -> str:
    if not _has_scores(v):
        return _keys_sentence(v)
    d = _score_decimals(v)
    return (f"The test statistic is the {statistic_words(v)}. The suspect scores "
            f"{fixed(v.score, d)}, {_above(v)} (their scores, {_scores_text(v, d)}); that is "
            f"{effect_text(v.effect)}. {_keys_sentence(v)}")


def _verdict_sentence(v: Verdict) -> str:
    """The deciding p-value against the target rate, and the verdict it gives."""
    source = (f"score this high with probability {v.p_value:.3g} (the {v.p_from} test among the innocent shadows)"
              if _has_scores(v) else f"come this close with probability {v.p_value:.3g} under the null from {v.null}")
    if v.verdict == "infringing":
        return (f"A model that never saw the source's outputs would {source}, below the target false-positive rate "
                f"{v.target_fpr:g}. Verdict: infringing; the suspect is judged to have been fine-tuned on data "
                "generated by the source model.")
    return (f"An innocent model would {source}, which is not below the target false-positive rate {v.target_fpr:g}. "
            "Verdict: not shown; fine-tuning on the source's outputs is not shown. This is not proof of innocence: "
            "a suspect trained briefly or on few generated images may inherit too little to detect.")


def decision_facts(v: Verdict) -> list[tuple[str, str]]:
    """The decision table, deciding numbers first (shared by report.md and report.html)."""
    facts = [("verdict", v.verdict), *p_values(v), ("target false-positive rate", f"{v.target_fpr:g}"),
             ("null", v.null)]
    if _has_scores(v):
        d = _score_decimals(v)
        shadows, suspect = null_makeup(v)
        facts += [("statistic", f"{statistic_words(v)} [{v.statistic}]"), ("suspect's score", fixed(v.score, d)),
                  ("innocent shadows' scores", f"{_scores_text(v, d, limit=40)} (the suspect is {_above(v)})"),
                  ("effect", effect_text(v.effect)),
                  ("innocent null", shadows), ("suspect (as known)", suspect)]
    elif v.statistic != "mean_rd":  # the controls null names its own test (an older Verdict keeps the default)
        facts.append(("statistic", f"{v.statistic_label} [{v.statistic}]"))
    md = _mean_rd_decimals(v)
    facts += [("conf", f"{v.conf:.3f} ({v.key_hits} of {v.n_keys} keys below delta0)"),
              ("delta0", f"{fixed(v.delta0, _rd_decimals(v))} ({v.delta0_from})"),
              ("discriminator score", discriminator_text(v)),
              ("mean distance over the keys", fixed(v.mean_rd, md)),
              ("innocent shadows' mean distances", "n/a" if v.innocent_mean_rds is None
               else ", ".join(fixed(x, md) for x in v.innocent_mean_rds)),
              ("queries of the suspect", str(v.queries))]
    return facts


# --- the figure -------------------------------------------------------------------------------------

def fitted_limits(values: Sequence[float], margin: float = 0.08) -> tuple[float, float]:
    """min..max of the finite values with a margin, never forced to 0: a suspect at 0.1588 among
    shadows at 0.1589-0.1595 must not share one bar of a 0-0.175 axis."""
    x = np.asarray([float(v) for v in values], dtype=float)
    x = x[np.isfinite(x)]
    if not len(x):
        return 0.0, 1.0
    lo, hi = float(x.min()), float(x.max())
    span = hi - lo if hi > lo else max(abs(hi), 1e-6) * 0.02
    return lo - margin * span, hi + margin * span


def rank_threshold(innocent: Sequence[float], alpha: float) -> float | None:
    """The innocent score the suspect must exceed for a rank p <= alpha (None: unreachable with so
    few shadows). p = (1 + #innocent >= score) / (n + 1)."""
    allowed = math.floor(alpha * (len(innocent) + 1) - 1 + 1e-9)
    if allowed < 0 or allowed >= len(innocent):
        return None
    return float(sorted(innocent, reverse=True)[allowed])


def _jitter(n: int, seed: int, width: float = 0.22) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-width, width, n)


def _plain_axis(ax) -> None:
    ax.ticklabel_format(axis="x", useOffset=False, style="plain")
    ax.tick_params(axis="x", labelsize=8)


def _strip(ax, v: Verdict) -> None:
    """One dot per innocent shadow, the suspect's score as a red diamond, the rank threshold."""
    innocent = np.asarray(v.innocent_scores, dtype=float)
    threshold = rank_threshold(innocent, v.target_fpr)
    ax.scatter(innocent, _jitter(len(innocent), 0), s=28, color="#607d8b", alpha=0.8,
               label=f"innocent shadows ({len(innocent)})")
    ax.scatter([v.score], [0], s=140, marker="D", color="#c62828", edgecolor="k", zorder=3, label="suspect")
    if threshold is not None:
        ax.axvline(threshold, color="k", ls="--", lw=1, label=f"rank threshold (p <= {v.target_fpr:g} above it)")
    ax.set_xlim(*fitted_limits([*innocent, v.score]))
    ax.set_ylim(-0.5, 0.8)  # room above the dots for the legend
    ax.set_yticks([])
    ax.set_xlabel(f"{v.statistic_label}\nhigher (right) = closer to the source, more like an infringer", fontsize=9)
    effect = "" if v.effect is None or not math.isfinite(v.effect) else f", {v.effect:+.1f} SD from the innocent mean"
    ax.set_title(f"Test statistic: suspect {fixed(v.score, _score_decimals(v))}{effect}", fontsize=10)
    ax.legend(fontsize=7, loc="upper left", ncol=3, frameon=False)
    _plain_axis(ax)


def _key_panel(ax, v: Verdict) -> None:
    """Per-key distances: the suspect's keys against the innocent shadows' key distances."""
    suspect, others = v.keys.rd.to_numpy(dtype=float), np.asarray(v.null_rds, dtype=float)
    ax.scatter(others, 0 + _jitter(len(others), 1), s=8, color="#607d8b", alpha=0.35)
    ax.scatter(suspect, 1 + _jitter(len(suspect), 2), s=22, color="#c62828")
    lo, hi = fitted_limits([*suspect, *others])
    if lo <= v.delta0 <= hi:
        ax.axvline(v.delta0, color="k", ls=":", lw=1, label=f"delta0 = {fixed(v.delta0, _rd_decimals(v))}")
        ax.legend(fontsize=7, loc="upper right", frameon=False)
    ax.set_xlim(lo, hi)
    ax.set_ylim(-0.6, 1.6)
    ax.set_yticks([0, 1], ["innocent shadows' keys", "suspect's keys"], fontsize=8)
    ax.set_xlabel("reconstruction distance per key (lower, left = closer to the source)", fontsize=9)
    _plain_axis(ax)


def _control_histogram(ax, v: Verdict) -> None:
    """The controls null: the suspect's key distances against its own control distances."""
    suspect, controls = v.keys.rd.to_numpy(dtype=float), np.asarray(v.null_rds, dtype=float)
    bins = np.linspace(*fitted_limits([*suspect, *controls, v.delta0]), 25)
    if len(controls):
        ax.hist(controls, bins=bins, alpha=0.5, color="#607d8b", label=f"suspect on control samples ({len(controls)})")
    ax.hist(suspect, bins=bins, alpha=0.7, color="#c62828", label=f"suspect on key samples ({len(suspect)})")
    ax.axvline(v.delta0, color="k", ls="--", label=f"delta0 = {fixed(v.delta0, _rd_decimals(v))}")
    ax.set_xlabel("reconstruction distance (lower, left = closer to the source)", fontsize=9)
    ax.set_ylabel("samples", fontsize=9)
    ax.legend(fontsize=7, frameon=False)
    _plain_axis(ax)


def statistic_figure(v: Verdict) -> tuple[Figure, str]:
    """The statistic strip (and per-key distances) under the shadow null, else the key-vs-control
    histogram; with the figure's description for alt text and captions."""
    if _has_scores(v):
        fig = Figure(figsize=(7, 4.4))
        top, bottom = fig.subplots(2, 1, gridspec_kw={"height_ratios": [1.2, 1]})
        _strip(top, v)
        _key_panel(bottom, v)
        what = (f"Above: the suspect's score against the innocent shadows' (one dot each), the statistic being the "
                f"{statistic_words(v)}. Below: each key's reconstruction distance, "
                "the suspect's keys against the innocent shadows'")
    else:
        fig = Figure(figsize=(7, 3.2))
        _control_histogram(fig.subplots(), v)
        what = "The suspect's reconstruction distances on the key samples against its own on the control samples"
    fig.tight_layout()
    return fig, what


# Where report.md turns from the decision to the evidence (a comment: invisible when rendered), so a
# reader such as notebook 08 can show the decision part alone.
EVIDENCE_MARK = "<!-- evidence -->"


def figure_heading(v: Verdict) -> str:
    return ("The test statistic: the suspect against the innocent shadows" if _has_scores(v)
            else "The suspect's distances: key samples against control samples")


def write_figure(v: Verdict, path: Path) -> str:
    """Save :func:`statistic_figure` as a PNG; its description."""
    fig, what = statistic_figure(v)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    return what


# --- the key table ----------------------------------------------------------------------------------

def _pair_image(reference: np.ndarray, reconstruction: np.ndarray, scale: int = 4) -> Image.Image:
    pair = np.concatenate([reference, np.full((reference.shape[0], 2, 3), 255, np.uint8), reconstruction], axis=1)
    img = Image.fromarray(pair)
    return img.resize((img.width * scale, img.height * scale), Image.NEAREST) if reference.shape[0] < 128 else img


def key_rows(v: Verdict, out: Path, max_images: int) -> list[dict]:
    """The keys closest first (``order`` 1..n), each with its id in the key set (``key``: 0 = the
    source's best key) and its pair image written under ``out/pairs``."""
    rd = v.keys.rd.to_numpy(dtype=float)
    d = _rd_decimals(v)
    rows = []
    for order, i in enumerate(np.argsort(rd, kind="stable")[:max_images], start=1):
        r, buffer = v.keys.iloc[i], io.BytesIO()
        _pair_image(v.references[i], v.reconstructions[i]).save(buffer, format="PNG")
        name = f"pairs/key_{int(r['rank']):03d}.png"
        with atomic_path(out / name) as tmp:
            tmp.write_bytes(buffer.getvalue())
        rows.append({"order": order, "key": int(r["rank"]), "prompt": str(r.prompt), "rd": fixed(float(r.rd), d),
                     "hit": bool(r.hit), "png": buffer.getvalue(), "file": name})
    return rows


def key_heading(v: Verdict, shown: int) -> str:
    part = f"the {shown} closest of {v.n_keys}" if shown < len(v.keys) else f"all {shown}"
    return f"Key samples ({part}), closest first"


KEY_NOTE = ("Sorted by the suspect's reconstruction distance (RD): order 1 = the closest. Key # is the key's place "
            "in the owner's key set (0 = the source's best key). Each image: reference | suspect's best "
            "reconstruction.")


# --- the files --------------------------------------------------------------------------------------

def _markdown(v: Verdict, facts: list[tuple[str, str]], keys: list[dict], figure_alt: str) -> str:
    warning, mismatch = md_text(v.warning), md_text(mismatch_note(v))
    rows = [[str(k["order"]), str(k["key"]), md_text(k["prompt"]), k["rd"], "yes" if k["hit"] else "no",
             f"![key {k['key']}]({k['file']})"] for k in keys]
    settings = json.dumps(v.settings, indent=2, default=str)
    return "\n".join([
        f"# genlineage verify: **{v.verdict}**", "", md_text(summary_paragraph(v)), "",
        *([f"> **Warning.** {warning}", ""] if v.warning else []),
        *([f"> **Null made differently from the suspect.** {mismatch}", ""] if mismatch else []),
        "## Decision", "", *_md_table(["", "value"], [[md_text(a), md_text(b)] for a, b in facts]), "",
        EVIDENCE_MARK, f"## {figure_heading(v)}", "", md_text(figure_alt) + ".", "", f"![]({FIGURE})", "",
        f"## {md_text(key_heading(v, len(keys)))}", "", md_text(KEY_NOTE), "",
        *_md_table(["order", "key #", "prompt", "RD", "below delta0", "reference / reconstruction"], rows), "",
        "## Settings", "", _fence(settings) + "json", settings, _fence(settings), "",
        "How the p-values are computed: `genlineage.verify.null` and `genlineage.verify.statistics` (docstrings).", "",
    ])


def write_report(v: Verdict, out: str | Path, max_images: int = 30) -> Path:
    """Write ``verdict.json``, ``report.md``, ``report.html``, ``rd_histogram.png`` (the statistic's
    figure) and ``pairs/`` into ``out``; the path of ``report.md``. ``out`` must be new, empty or
    an earlier verify's output (:mod:`genlineage.outdir`); the files are written beside it and moved
    in together, so a failure leaves ``out`` as it was and a link planted in it is never followed."""
    final = Path(out)
    check_output_folder(final, "verify", [])
    with staged_output(final, "verify") as stage:
        _write_report_files(v, stage, max_images)
    return final / "report.md"


def _write_report_files(v: Verdict, out: Path, max_images: int) -> None:
    """The report's files, into the fresh folder ``out``."""
    (out / "pairs").mkdir(parents=True, exist_ok=True)
    write_text(out / "verdict.json", json.dumps(v.to_json(), indent=2, default=float) + "\n")
    figure_alt = write_figure(v, out / FIGURE)
    keys, facts = key_rows(v, out, max_images), decision_facts(v)
    write_text(out / "report.md", _markdown(v, facts, keys, figure_alt))
    write_html(out / "report.html", verdict=v.verdict, summary=summary_paragraph(v), warning=v.warning,
               mismatch=mismatch_note(v), facts=facts, figure_png=(out / FIGURE).read_bytes(), figure_alt=figure_alt,
               figure_heading=figure_heading(v), keys=keys, key_heading=key_heading(v, len(keys)), key_note=KEY_NOTE,
               settings=v.settings)
