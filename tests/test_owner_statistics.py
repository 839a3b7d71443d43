"""The owner's test statistics (genlineage.verify.statistics) on planted tables: an infringing
planted model is caught, an innocent one is not, the calibration is exact by rank, and the choice
among candidates follows the written rule on shadows alone."""
from __future__ import annotations

import numpy as np
import pytest

from genlineage.confidence import calibrate_delta0, delta_grid
from genlineage.verify import null
from genlineage.verify.statistics import (STATISTICS, StatisticSettings, Unit, calibrated_delta0, chosen_statistic,
                                          conformal_test, get_statistic, ideal_unit, primary_p, Reference,
                                          selection_summary, selection_table, shadows_needed)

N_KEYS, N_CONTROLS = 30, 30
SETTINGS = StatisticSettings(k_smallest=5, variance_prior=4.0, delta0=0.15)


def planted_model(rng: np.random.Generator, inherited: int = 0, offset_sd: float = 0.02) -> Unit:
    """A model of the planted world: an offset every key and control shares (how close this model
    comes to everything), per-key noise, and ``inherited`` keys that come back close (sparse
    inheritance)."""
    offset = rng.normal(0, offset_sd)
    keys = 0.25 + offset + rng.normal(0, 0.01, N_KEYS)
    keys[:inherited] -= 0.12
    controls = 0.26 + offset + rng.normal(0, 0.01, N_CONTROLS)
    return Unit(np.clip(keys, 0, None), np.clip(controls, 0, None))


def planted_world(seed: int = 0, n_innocent: int = 19, n_infringing: int = 4, inherited: int = 6):
    rng = np.random.default_rng(seed)
    innocent = [planted_model(rng) for _ in range(n_innocent)]
    infringing = [planted_model(rng, inherited) for _ in range(n_infringing)]
    return rng, innocent, infringing


@pytest.mark.parametrize("name", list(STATISTICS))
def test_every_statistic_catches_a_planted_infringer_and_clears_an_innocent(name):
    rng, innocent, infringing = planted_world()
    stat = get_statistic(name)
    guilty = conformal_test(stat, planted_model(rng, inherited=25, offset_sd=0.0), innocent, infringing, SETTINGS)
    clean = conformal_test(stat, Unit(np.median([u.keys for u in innocent], axis=0),
                                      np.median([u.controls for u in innocent], axis=0)), innocent, infringing, SETTINGS)
    assert guilty.rank_p == pytest.approx(1 / 20)  # beats all 19 innocent shadows: the rank's floor
    assert guilty.score > clean.score
    assert clean.rank_p > 0.2 and clean.parametric_p > 0.1


def test_the_contrast_cancels_a_per_model_offset_that_the_mean_does_not():
    """An innocent model that comes closer to *everything* (keys and controls alike) looks
    infringing to the mean distance, not to the key-vs-control contrast."""
    rng, innocent, infringing = planted_world(seed=1)
    close = planted_model(rng)
    close = Unit(close.keys - 0.08, close.controls - 0.08)
    mean = conformal_test(get_statistic("mean_rd"), close, innocent, infringing, SETTINGS)
    contrast = conformal_test(get_statistic("key_control_contrast"), close, innocent, infringing, SETTINGS)
    assert mean.rank_p <= 0.05 and contrast.rank_p > 0.05


def test_innocent_p_values_are_uniform_by_rank():
    """Fresh innocent models of the planted world, each against the same 19 shadows: the rank p
    calls about alpha of them (exact under exchangeability), for each statistic."""
    rng, innocent, infringing = planted_world(seed=2)
    for name in ("mean_rd", "per_key_z", "key_control_contrast"):
        stat = get_statistic(name)
        calls = [conformal_test(stat, planted_model(rng), innocent, infringing, SETTINGS).rank_p <= 0.1
                 for _ in range(300)]
        assert 0.04 < np.mean(calls) < 0.18, name


def test_scores_against_references_leave_the_scored_unit_out():
    """A reference-fitted statistic scores the suspect against every shadow and each innocent
    shadow against the others: never against itself, and the suspect is no one's reference."""
    _, innocent, infringing = planted_world(seed=3, n_innocent=4)
    stat = get_statistic("per_key_z")
    suspect = Unit(np.full(N_KEYS, 0.1))
    test = conformal_test(stat, suspect, innocent, infringing, SETTINGS)
    assert test.score == pytest.approx(stat.score(suspect, Reference(tuple(innocent)), SETTINGS))
    assert test.innocent_scores[0] == pytest.approx(stat.score(innocent[0], Reference(tuple(innocent[1:])), SETTINGS))


def test_primary_p_takes_the_rank_only_when_the_shadows_can_reach_the_target():
    assert primary_p(0.05, 0.001, 19, 0.05) == (0.05, "rank")
    assert primary_p(1 / 19, 0.001, 18, 0.05) == (0.001, "parametric")
    assert shadows_needed(0.05) == 19 and shadows_needed(0.01) == 99 and shadows_needed(0.1) == 9


def test_parametric_p_is_the_null_modules_t_prediction_with_the_sign_flipped():
    _, innocent, infringing = planted_world(seed=4, n_innocent=6)
    suspect = Unit(np.full(N_KEYS, 0.2))
    test = conformal_test(get_statistic("mean_rd"), suspect, innocent, infringing, SETTINGS)
    means = np.array([u.keys.mean() for u in innocent])
    assert test.parametric_p == pytest.approx(null.prediction_pvalue(0.2, means))
    assert test.rank_p == pytest.approx(null.empirical_pvalue(0.2, means))
    assert test.effect == pytest.approx((means.mean() - 0.2) / means.std(ddof=1))


def test_calibrated_delta0_separates_the_references():
    inf = (Unit(np.array([0.05, 0.06, 0.3])), Unit(np.array([0.07, 0.3, 0.3])))
    inn = (Unit(np.array([0.2, 0.3, 0.3])), Unit(np.array([0.25, 0.3, 0.3])))
    assert calibrated_delta0(Reference(inn, inf), SETTINGS) == pytest.approx(0.075)  # every low key in, no innocent one
    grid = delta_grid({"start": 0.01, "stop": 0.40, "step": 0.005})
    assert calibrated_delta0(Reference(inn, inf), SETTINGS) == pytest.approx(
        calibrate_delta0([u.keys for u in inf], [u.keys for u in inn], grid)[0])  # the pipeline's own rule
    assert calibrated_delta0(Reference(inn), SETTINGS) == SETTINGS.delta0  # nothing to calibrate on


def test_ideal_unit_is_a_perfect_copy():
    _, innocent, _ = planted_world(seed=5, n_innocent=3)
    best = ideal_unit(innocent)
    assert (best.keys == 0).all() and best.controls == pytest.approx(np.mean([u.controls for u in innocent], axis=0))


def test_selection_follows_the_rule_on_shadows_alone():
    """Planted: the mean distance drowns sparse inheritance in per-model offsets, the contrast
    does not; the rule picks the contrast, and a candidate that cannot be computed everywhere is
    not eligible."""
    per_source = {}
    for s in range(2):
        rng, innocent, infringing = planted_world(seed=10 + s, n_innocent=19, n_infringing=4, inherited=8)
        per_source[f"src{s}"] = (innocent, infringing)
    no_controls = [Unit(u.keys) for u in per_source["src1"][0]], per_source["src1"][1]
    table = selection_table(per_source, ["mean_rd", "key_control_contrast"], 0.05, SETTINGS)
    summary = selection_summary(table, ["mean_rd", "key_control_contrast"], 0.05)
    assert chosen_statistic(summary) == "key_control_contrast"
    assert summary.set_index("statistic").TPR["key_control_contrast"] > summary.set_index("statistic").TPR["mean_rd"]
    table = selection_table({"src0": per_source["src0"], "src1": no_controls}, ["mean_rd", "key_control_contrast"],
                            0.05, SETTINGS)
    summary = selection_summary(table, ["mean_rd", "key_control_contrast"], 0.05)
    assert not summary.set_index("statistic").eligible["key_control_contrast"]
    assert chosen_statistic(summary) == "mean_rd"


def test_unknown_statistic_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="choose one of mean_rd"):
        get_statistic("median")


def test_the_profile_knows_every_statistic_by_the_same_name():
    """config.OWNER_STATISTICS (what a profile and the CLI accept, read without importing torch)
    names exactly the statistics defined here."""
    from genlineage.config import OWNER_STATISTICS

    assert tuple(STATISTICS) == OWNER_STATISTICS
