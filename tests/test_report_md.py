"""report.md and what both reports share: numbers printed so the suspect and the innocent shadows
differ, the effect in their standard deviations, one deciding p-value with the other explained,
the null's make-up, keys in a stated order, a figure fitted to the data, and prompts that cannot
inject markdown."""
from __future__ import annotations

import math

from test_report_html import controls_verdict, planted_verdict

from genlineage.verify.report import (decision_facts, digits_apart, effect_text, fitted_limits, md_text,
                                      rank_threshold, statistic_figure, summary_paragraph, write_report)


# --- precision ------------------------------------------------------------------------------------

def test_digits_apart_shows_the_gap_to_the_nearest_innocent_value():
    """The review's case: 0.1588 against 0.1589-0.1595 printed as 0.159 everywhere."""
    d = digits_apart(0.1588, [0.1589, 0.1590, 0.1595])
    assert d == 4 and f"{0.1588:.{d}f}" == "0.1588" and f"{0.1589:.{d}f}" == "0.1589"
    d = digits_apart(0.15885, [0.15895])  # a gap of one unit in the 4th decimal that rounding could hide
    assert f"{0.15885:.{d}f}" != f"{0.15895:.{d}f}"
    assert digits_apart(-0.1588, [-0.15882]) == 5


def test_digits_apart_keeps_three_significant_digits_ignores_equal_values_and_is_capped():
    assert digits_apart(0.5, [0.9]) == 3 and digits_apart(123.4, [150.0]) == 0 and digits_apart(0.0, [0.0]) == 3
    assert digits_apart(0.1588, [0.1588, 0.3]) == 3, "an equal value cannot be told apart: it adds no digits"
    assert digits_apart(0.1, [0.1 + 1e-15]) == 12, "capped"
    assert digits_apart(-0.00808, [-0.219, -0.222]) == 5, "the suspect's own value keeps three digits"
    assert digits_apart(1e-12, [0.5]) == 6, "but a value near 0 does not ask for twelve"
    assert digits_apart(None, [0.25]) == 3 and digits_apart(float("nan"), [0.25, float("inf")]) == 3


def test_effect_is_said_in_standard_deviations_of_the_innocent_shadows():
    assert effect_text(2.34) == "2.3 standard deviations of the innocent shadows' scores above their mean"
    assert effect_text(-0.5) == "0.5 standard deviations of the innocent shadows' scores below their mean"
    assert "do not vary" in effect_text(math.inf) and effect_text(None).startswith("n/a")


# --- the figure -----------------------------------------------------------------------------------

def test_fitted_limits_hug_the_data_and_are_never_forced_to_zero():
    lo, hi = fitted_limits([0.1588, 0.1595, float("nan")])
    assert 0.158 < lo < 0.1588 and 0.1595 < hi < 0.1596
    lo, hi = fitted_limits([0.2, 0.2])
    assert lo < 0.2 < hi and hi - lo < 0.01


def test_the_rank_threshold_is_the_score_to_beat_for_the_target_rate():
    scores = [float(x) for x in range(19)]  # 19 shadows: p = (1 + #>=) / 20
    assert rank_threshold(scores, 0.05) == 18.0  # beat the highest: p = 1/20
    assert rank_threshold(scores, 0.1) == 17.0  # one at or above allowed: p = 2/20
    assert rank_threshold(scores[:5], 0.05) is None, "5 shadows cannot reach 1/20"


def test_the_statistic_strip_is_fitted_to_the_scores_and_labelled_in_words():
    fig, what = statistic_figure(planted_verdict())
    strip, keys = fig.axes
    lo, hi = strip.get_xlim()
    assert -0.1597 < lo < -0.1595 and -0.1588 < hi < -0.1586, (lo, hi)
    assert strip.get_xlabel().startswith("mean distance over the keys (sign flipped: higher = closer)")
    assert "closer to the source" in strip.get_xlabel() and "closer to the source" in keys.get_xlabel()
    assert keys.get_xlim()[0] > 0.15, "the per-key panel is fitted too"
    assert "one dot each" in what


def test_under_the_controls_null_the_figure_is_a_fitted_histogram_of_key_and_control_distances():
    fig, what = statistic_figure(controls_verdict())
    (ax,) = fig.axes
    assert ax.get_xlim()[0] > 0.14 and "control" in what and "closer to the source" in ax.get_xlabel()


# --- the numbers in words -------------------------------------------------------------------------

def test_the_summary_says_the_statistic_the_values_apart_the_effect_the_p_and_the_verdict():
    v = planted_verdict()
    text = summary_paragraph(v)
    assert "The test statistic is the mean distance over the keys (sign flipped: higher = closer). The" in text
    assert "The suspect scores -0.1588, above all 5 innocent shadows" in text
    assert "-0.1589, -0.1590, -0.1591, -0.1592, -0.1595" in text
    assert f"{v.effect:.1f} standard deviations of the innocent shadows' scores above their mean" in text
    assert "probability 0.167 (the rank test among the innocent shadows)" in text and "Verdict: not shown" in text


def test_the_summary_under_the_controls_null_needs_no_shadow_scores():
    v = controls_verdict()
    text = summary_paragraph(v)
    assert "Verdict: infringing" in text and "control samples" in text and "standard deviations" not in text
    facts = dict(decision_facts(v))
    assert facts["statistic"] == "key hits against control hits below delta0 [fisher]" and "effect" not in facts


def test_the_statistic_is_named_with_its_direction_once():
    facts = dict(decision_facts(planted_verdict()))
    assert facts["statistic"] == "mean distance over the keys (sign flipped: higher = closer) [mean_rd]"
    facts = dict(decision_facts(planted_verdict(statistic="conf", statistic_label="share of keys closer than delta0")))
    assert facts["statistic"] == "share of keys closer than delta0 (higher = closer to the source) [conf]"


def test_one_p_value_decides_and_the_other_says_how_it_differs():
    facts = dict(decision_facts(planted_verdict()))
    assert facts["p-value (decides)"].startswith("0.167, from the rank test: rank among the 5 innocent shadows")
    assert "cannot go below 1/(5+1)" in facts["p-value (decides)"]
    other = facts["parametric p-value (shown, not used)"]
    assert other.startswith("0.031: Student-t prediction") and "Shapiro-Wilk p = 0.4" in other and "doubtful" not in other
    facts = dict(decision_facts(planted_verdict(p_from="parametric", p_value=0.031, normality_p=0.01)))
    assert "doubtful" in facts["p-value (decides)"] and facts["rank p-value (shown, not used)"].startswith("0.167: rank")
    assert [k for k in facts if "p-value" in k] == ["p-value (decides)", "rank p-value (shown, not used)"]


def test_the_discriminator_score_carries_its_scale():
    facts = dict(decision_facts(planted_verdict()))
    assert facts["discriminator score"] == ("0.87 (probability of infringing, 0 to 1, from a logistic classifier "
                                            "fitted on your shadow models)")


def test_the_null_population_tolerates_missing_keys():
    facts = dict(decision_facts(planted_verdict(null_population={"bases": {"b": 2}})))
    assert facts["innocent null"] == "5 innocent shadows; bases: b (2); methods: not recorded"
    assert facts["suspect (as known)"] == "base unknown, method unknown"
    facts = dict(decision_facts(planted_verdict(null_population={"suspect_method": "lora",
                                                                 "suspect_evidence": "LoRA file's declared base"})))
    assert facts["suspect (as known)"] == "base unknown, method lora (known from: LoRA file's declared base)"


# --- report.md ------------------------------------------------------------------------------------

INJECTION = "x\n# genlineage verify: **not shown**\n<img src=http://e/x>"


def test_md_text_is_one_inert_line():
    assert md_text("a|b\r\nc\x00d") == "a\\|b  c d"
    assert md_text("![x](y) *b* _i_ `c` # h <i> & ~s~") == \
        "\\!\\[x\\](y) \\*b\\* \\_i\\_ \\`c\\` \\# h &lt;i&gt; &amp; \\~s\\~"


def test_a_prompt_cannot_forge_a_heading_or_an_image_in_report_md(tmp_path):
    v = planted_verdict()
    v.keys.loc[1, "prompt"] = INJECTION
    text = write_report(v, tmp_path).read_text()
    assert [line for line in text.splitlines() if line.startswith("# ")] == ["# genlineage verify: **not shown**"]
    assert "<img" not in text and "**not shown**" not in text.split("\n", 1)[1]
    row = next(line for line in text.splitlines() if "genlineage verify" in line and line.startswith("| "))
    assert row.count(" | ") == 5, "the prompt stays in its cell"


def test_report_md_shows_the_evidence_and_keys_in_a_stated_order(tmp_path):
    v = planted_verdict(null_population={**planted_verdict().null_population, "mismatch": "other base", "allowed": True})
    text = write_report(v, tmp_path).read_text()
    assert "> **Null made differently from the suspect.** The owner accepted a null made differently from the " \
           "suspect: other base" in text
    assert "| effect | 1.5 standard deviations of the innocent shadows' scores above their mean |" in text
    assert "| suspect's score | -0.1588 |" in text and "| innocent null | 5 innocent shadows; bases:" in text
    assert "## Key samples (all 4), closest first" in text and "order 1 = the closest. Key \\# is the key's place" in text
    rows = [line.split(" | ") for line in text.splitlines() if line.startswith("| ") and "pairs/key_" in line]
    assert [r[0] for r in rows] == ["| 1", "| 2", "| 3", "| 4"] and [r[1] for r in rows] == ["2", "1", "0", "3"]
    assert "![](rd_histogram.png)" in text and (tmp_path / "rd_histogram.png").is_file()


def test_a_settings_value_cannot_close_the_code_fence(tmp_path):
    v = planted_verdict(settings={"suspect": "a ``` b"})
    text = write_report(v, tmp_path).read_text()
    assert "````json" in text and text.count("````") == 2


def test_only_the_closest_keys_are_shown_and_the_heading_says_so(tmp_path):
    text = write_report(planted_verdict(), tmp_path, max_images=2).read_text()
    assert "the 2 closest of 4" in text and len(list((tmp_path / "pairs").glob("*.png"))) == 2
