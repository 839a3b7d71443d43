"""Every claim function on planted tables, on both sides of its threshold (genlineage.experiments.claims)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from genlineage.experiments.claims import (UNTESTABLE, all_of, as_sensitivity, claim, untestable, figure6_claims, figure7_claims,
                                           inheritance_claims, memorisation_claims, table1_claims, table2_claims, verdict_tally)
from genlineage.intervals import HELD, INCONCLUSIVE, NOT_HELD, NOT_JUDGED

SOURCES = ["v1", "v1-cc3m", "v1-celeba", "v2", "v2-cc3m", "v2-celeba"]
RHOS = [0.3, 0.5, 0.7, 1.0]


def _held(table: pd.DataFrame, startswith: str) -> str:
    row = table[table["paper's claim"].str.startswith(startswith)]
    assert len(row) == 1, f"no single claim starting {startswith!r}: " + repr(list(table["paper's claim"]))
    return row.held.iloc[0]


def test_all_of_and_claim_rows():
    assert all_of([HELD, HELD]) == HELD
    assert all_of([HELD, INCONCLUSIVE]) == INCONCLUSIVE
    assert all_of([HELD, NOT_HELD, INCONCLUSIVE]) == NOT_HELD
    assert all_of([NOT_JUDGED]) == NOT_JUDGED and all_of([]) == NOT_JUDGED
    assert all_of([NOT_JUDGED, HELD]) == INCONCLUSIVE, "a cell that cannot be judged never lets a claim hold"
    with pytest.raises(ValueError):
        claim("s", "c", "o", "true")
    t = pd.DataFrame([claim("s", "a", "o", HELD), claim("s", "b", "o", INCONCLUSIVE), claim("s", "c", "o", NOT_JUDGED),
                      untestable("s", "d", "a baseline at chance", "a better baseline")])
    assert verdict_tally(t) == {HELD: 1, NOT_HELD: 0, INCONCLUSIVE: 1, UNTESTABLE: 1}
    assert t.ours.iloc[3] == "untestable here: a baseline at chance; it would take a better baseline"


def test_a_sensitivity_reading_says_what_it_would_be_and_is_never_counted():
    t = as_sensitivity(pd.DataFrame([claim("Figure 6", "a", "margin +0.3", HELD), claim("Figure 6", "b", "x", NOT_JUDGED)]),
                       "delta0 = 0.15")
    assert verdict_tally(t) == {HELD: 0, NOT_HELD: 0, INCONCLUSIVE: 0, UNTESTABLE: 0}
    assert t.ours.iloc[0] == "margin +0.3 (sensitivity reading at delta0 = 0.15: would be held)"
    assert t.ours.iloc[1] == "x" and set(t.section) == {"Figure 6 (sensitivity)"}


# --- memorisation ---

def _checks(ps: list[float], reverse: list[float] | None = None) -> pd.DataFrame:
    return pd.DataFrame({"source": [f"s{i}" for i in range(len(ps))], "nearest_own": 0.8, "base_nearest_own": 0.1,
                         "p_source_above_base": ps, "p_base_above_source": reverse or [0.9] * len(ps)})


def test_memorisation_claim_needs_every_source_above_its_base():
    assert memorisation_claims(_checks([0.001, 0.01, 0.04])).held.iloc[0] == HELD
    assert memorisation_claims(_checks([0.001, 0.01, 0.06])).held.iloc[0] == INCONCLUSIVE
    assert memorisation_claims(_checks([0.001, 0.01, 0.9], [0.9, 0.9, 0.01])).held.iloc[0] == NOT_HELD
    assert memorisation_claims(_checks([float("nan")] * 2, [float("nan")] * 2)).held.iloc[0] == NOT_JUDGED


def test_memorisation_checks_compare_each_source_with_its_base_image_by_image():
    from genlineage.experiments.memorisation import memorisation_checks

    summary = pd.DataFrame([
        {"model": "v1-celeba", "base": "v1", "domain": "celeba", "finetuned": True, "nearest_own": 0.8, "chance": 0.05,
         "rd_own_median": 0.1, "rd_heldout_median": 0.2, "own_below_heldout_p": 0.001},
        {"model": "v1 (base) on celeba", "base": "v1", "domain": "celeba", "finetuned": False, "nearest_own": 0.1,
         "chance": 0.05, "rd_own_median": 0.2, "rd_heldout_median": 0.2, "own_below_heldout_p": 0.5}])
    rng = np.random.default_rng(0)
    def rows(model, shares):
        return pd.DataFrame({"model": model, "split": "own", "id": range(20), "nearest_own": shares})
    high, low = rng.uniform(0.6, 1.0, 20), rng.uniform(0.0, 0.3, 20)
    above = memorisation_checks(summary, pd.concat([rows("v1-celeba", high), rows("v1 (base) on celeba", low)]))
    assert above.p_source_above_base.iloc[0] < 0.001 and above.p_base_above_source.iloc[0] > 0.5
    below = memorisation_checks(summary, pd.concat([rows("v1-celeba", low), rows("v1 (base) on celeba", high)]))
    assert below.p_source_above_base.iloc[0] > 0.5 and below.p_base_above_source.iloc[0] < 0.001
    assert memorisation_claims(below).held.iloc[0] == NOT_HELD


# --- Figure 6 ---

def _confs(levels: dict[str, float], innocent: dict[str, float], spread: float = 0.01, n: int = 3,
           by_rho: dict[float, dict[str, float]] | None = None, seed: int = 0) -> pd.DataFrame:
    """Per-model confs: ``n`` infringing models per (source, rho) at ``levels`` (per strategy),
    2n innocent models per source at ``innocent``, each with a little noise."""
    rng = np.random.default_rng(seed)
    rows = []
    for source in SOURCES:
        plan = [(rho, r) for rho in RHOS for r in range(n)] + [(0.0, r) for r in range(2 * n)]
        for rho, r in plan:
            name = f"{source}__rho{rho}__{r}"
            base = innocent if rho == 0 else {**levels, **((by_rho or {}).get(rho, {}))}
            for strategy, level in base.items():
                rows.append({"model": name, "source": source, "lineage": "same", "rho": rho, "strategy": strategy,
                             "role": "evaluated", "label": int(rho > 0),
                             "conf": float(np.clip(level + rng.normal(0, spread), 0, 1))})
    return pd.DataFrame(rows)


GOOD = {"generation": 0.9, "detection": 0.85, "random": 0.45, "watermark": 0.95}
INNOCENT = {"generation": 0.05, "detection": 0.05, "random": 0.05, "watermark": 0.0}


def test_figure6_claims_hold_on_a_paper_like_table():
    t = figure6_claims(_confs(GOOD, INNOCENT), "calibrated")
    assert set(t.section) == {"Figure 6 (delta0 calibrated)"}
    assert _held(t, "Strategy 2 beats Baseline 2") == HELD
    assert _held(t, "Strategy 1 beats Baseline 2") == HELD
    assert _held(t, "Strategy 2 within 0.1 of Baseline 1") == HELD
    assert _held(t, "Strategy 2 conf > 0.6") == HELD
    assert _held(t, "Baseline 2 about 0.4") == HELD
    assert _held(t, "(ours) innocent") == NOT_JUDGED


def test_figure6_claims_fail_on_the_other_side_and_judge_each_strategy_alone():
    weak = {"generation": 0.5, "detection": 0.9, "random": 0.45, "watermark": 0.95}
    t = figure6_claims(_confs(weak, INNOCENT), "paper")
    assert _held(t, "Strategy 2 beats Baseline 2") == NOT_HELD, "Strategy 1 must not rescue Strategy 2"
    assert _held(t, "Strategy 1 beats Baseline 2") == HELD
    assert _held(t, "Strategy 2 within 0.1 of Baseline 1") == NOT_HELD
    assert _held(t, "Strategy 2 conf > 0.6") == NOT_HELD


def test_figure6_levels_are_judged_as_excess_over_innocent_models():
    """Baseline 2 at 0.4 means nothing when innocent models score 0.34 on the same keys."""
    t = figure6_claims(_confs(GOOD | {"random": 0.40}, INNOCENT | {"random": 0.34}), "calibrated")
    assert _held(t, "Baseline 2 about 0.4") == NOT_HELD


def test_figure6_margin_must_hold_at_every_rho():
    t = figure6_claims(_confs(GOOD, INNOCENT, by_rho={0.3: {"generation": 0.5}}), "calibrated")
    assert _held(t, "Strategy 2 beats Baseline 2") == NOT_HELD


def test_figure6_noisy_margin_is_inconclusive():
    t = figure6_claims(_confs(GOOD | {"generation": 0.7}, INNOCENT, spread=0.2), "calibrated")
    assert _held(t, "Strategy 2 beats Baseline 2") == INCONCLUSIVE


def test_a_level_the_worlds_coverage_caps_is_untestable_and_a_covered_one_is_judged():
    """Infringers that saw near-copies of a tenth of their keys cannot show conf 0.6 over innocents."""
    def coverage(share: float) -> pd.DataFrame:
        return pd.DataFrame({"rho": [0.3] * 4 + [1.0] * 4,
                             "covered_keys": [share, share + 0.02, share - 0.02, share, 1, 1, 1, 1]})

    capped = figure6_claims(_confs(GOOD, INNOCENT), "calibrated", key_coverage=coverage(0.1))
    assert _held(capped, "Strategy 2 conf > 0.6") == UNTESTABLE
    assert "saw near-copies" in capped.set_index("paper's claim").ours.filter(like="conf > 0.6").iloc[0]
    covered = figure6_claims(_confs(GOOD, INNOCENT), "calibrated", key_coverage=coverage(0.9))
    assert _held(covered, "Strategy 2 conf > 0.6") == HELD


# --- inheritance ---

def _inheritance(verdicts: list[str]) -> pd.DataFrame:
    p = {HELD: (0.01, 0.99), NOT_HELD: (0.99, 0.01), INCONCLUSIVE: (0.3, 0.7)}
    return pd.DataFrame({"source": SOURCES[:len(verdicts)], "lineage": "same", "infringing models": 3, "innocent models": 6,
                         "rd_gap": 0.01, "permutation_p": [p[v][0] for v in verdicts],
                         "permutation_p_reverse": [p[v][1] for v in verdicts]})


def test_inheritance_claim_needs_every_source():
    assert inheritance_claims(_inheritance([HELD] * 6)).held.iloc[0] == HELD
    t = inheritance_claims(_inheritance([HELD] * 5 + [NOT_HELD]))
    assert t.held.iloc[0] == NOT_HELD and "5 of 6" in t.ours.iloc[0]
    assert inheritance_claims(_inheritance([HELD] * 5 + [INCONCLUSIVE])).held.iloc[0] == INCONCLUSIVE
    missing = inheritance_claims(_inheritance([HELD] * 5), sources=SOURCES)
    assert missing.held.iloc[0] == INCONCLUSIVE, "a source with no test cannot let the claim hold"
    assert inheritance_claims(pd.DataFrame()).held.iloc[0] == NOT_JUDGED


def _planted_models(gap: float, replicates=(0, 1, 2), n_keys: int = 10, seed: int = 0, source: str = "v1-celeba",
                    offset: float = 0.0):
    """models and per-sample tables of one source: per replicate one rho = 1 infringing model whose
    keys sit ``gap`` closer than two innocent models' (at 0.2 + ``offset``), plus one shadow of each kind."""
    rng = np.random.default_rng(seed)
    models, rows = [], []
    for rep in replicates:
        plan = [("evaluated", 1.0, "i"), ("evaluated", 0.0, "a"), ("evaluated", 0.0, "b"),
                ("shadow", 1.0, "s"), ("shadow", 0.0, "t")]
        for role, rho, tag in plan:
            name = f"{source}-m{tag}{rep}"
            models.append({"name": name, "source": source, "role": role, "lineage": "same", "base": "v1", "rho": rho,
                           "label": int(rho > 0), "replicate": rep, "watermark_conf": 0.0})
            level = 0.2 + offset - (gap if rho > 0 else 0.0)
            for k in range(n_keys):
                rows.append({"model": name, "strategy": "generation", "rank": k, "rd": level + rng.normal(0, 0.005)})
    return pd.DataFrame(models), pd.DataFrame(rows)


PROFILE = {"attribution": {"key_seeds": [1000, 1001], "query_seeds": [0, 1], "n_keys": 10, "main_strategy": "generation",
                           "delta0": 0.15, "delta0_grid": {"start": 0.1, "stop": 0.25, "step": 0.01}}}


def test_inheritance_from_planted_models_both_directions():
    from genlineage.config import Profile
    from genlineage.experiments.instance_tables import inheritance

    models, per_sample = _planted_models(0.05)
    inh = inheritance(Profile(PROFILE), models, per_sample, {"v1-celeba": 0.18})
    row = inh.iloc[0]
    assert row["infringing models"] == 3 and row["innocent models"] == 6
    assert row.permutation_p == pytest.approx(1 / 84) and row.rd_gap == pytest.approx(0.05, abs=0.01)
    assert inheritance_claims(inh).held.iloc[0] == HELD
    models, per_sample = _planted_models(-0.05)
    inh = inheritance(Profile(PROFILE), models, per_sample, {"v1-celeba": 0.18})
    assert inh.permutation_p.iloc[0] == pytest.approx(1.0) and inheritance_claims(inh).held.iloc[0] == NOT_HELD


def test_each_source_is_scored_at_its_own_delta0():
    from genlineage.config import Profile
    from genlineage.experiments.instance_tables import deltas, evaluated_confs

    near, near_rd = _planted_models(0.05)
    far, far_rd = _planted_models(0.05, source="v2-cc3m", offset=0.03, seed=1)
    models, per_sample = pd.concat([near, far], ignore_index=True), pd.concat([near_rd, far_rd], ignore_index=True)
    confs = evaluated_confs(Profile(PROFILE), models, per_sample, {"v1-celeba": 0.1, "v2-cc3m": 0.19})
    inf = confs[(confs.strategy == "generation") & (confs.rho == 1.0)].groupby("source").conf.mean()
    assert dict(inf) == {"v1-celeba": 0.0, "v2-cc3m": 1.0}, "RD 0.15 is above delta0 0.1; RD 0.18 is below 0.19"
    D, curve = deltas(Profile(PROFILE), models, per_sample)
    assert set(D["calibrated"]) == {"v1-celeba", "v2-cc3m"} == set(curve.source)
    assert 0.15 < D["calibrated"]["v1-celeba"] <= 0.2 and 0.18 < D["calibrated"]["v2-cc3m"] <= 0.23, \
        "each calibrated on its own shadows, between its two levels"
    assert D["calibrated"]["v2-cc3m"] > D["calibrated"]["v1-celeba"]


# --- Table 2 ---

def _table2_models(innocent_rel: dict[str, float], infringing_rel: dict[str, float], n: int = 3, spread: float = 0.01,
                   seed: int = 0) -> pd.DataFrame:
    """Per-model bin shares (relative and absolute alike), planted per kind."""
    rng = np.random.default_rng(seed)
    bins = ["[0.00, 0.05)", "[0.05, 0.10)", "[0.10, 0.15)", "[0.15, 0.20)", "[0.20, inf)"]
    rows = []
    for source in SOURCES:
        for kind, shares, count in (("infringing", infringing_rel, n), ("innocent", innocent_rel, 2 * n)):
            for r in range(count):
                noisy = {b: max(0.0, shares.get(b, 0.0) + rng.normal(0, spread)) for b in bins}
                rows.append({"model": f"{source}-{kind}-{r}", "source": source, "kind": kind,
                             **{f"rel {b}": v for b, v in noisy.items()}, **{f"abs {b}": v for b, v in noisy.items()}})
    return pd.DataFrame(rows)


TABLE2_CLAIMS = ("innocent: 73.9%", "innocent: 4.3%", "infringing: about 20%", "infringing: > 40%")


def _assert_every_table2_claim(t: pd.DataFrame, want: str) -> None:
    """The infringing claims read ``want``; the innocent ones are untestable whatever the data
    (their share around delta0 is set by the rule that places the calibrated delta0)."""
    for start in TABLE2_CLAIMS:
        assert _held(t, start) == (UNTESTABLE if start.startswith("innocent") else want), start


PAPER_INNOCENT = {"[0.10, 0.15)": 0.04, "[0.15, 0.20)": 0.74, "[0.20, inf)": 0.22}
PAPER_INFRINGING = {"[0.00, 0.05)": 0.05, "[0.05, 0.10)": 0.15, "[0.10, 0.15)": 0.55, "[0.15, 0.20)": 0.25}


def test_table2_claims_hold_on_paper_like_bins():
    _assert_every_table2_claim(table2_claims(_table2_models(PAPER_INNOCENT, PAPER_INFRINGING)), HELD)


def test_table2_claims_fail_on_the_other_side():
    innocent = {"[0.05, 0.10)": 0.3, "[0.15, 0.20)": 0.3, "[0.20, inf)": 0.4}
    infringing = {"[0.00, 0.05)": 0.3, "[0.05, 0.10)": 0.4, "[0.10, 0.15)": 0.1, "[0.20, inf)": 0.2}
    _assert_every_table2_claim(table2_claims(_table2_models(innocent, infringing)), NOT_HELD)


def test_table2_claims_judge_relative_bins_not_absolute():
    t = _table2_models(PAPER_INNOCENT, PAPER_INFRINGING)
    t[[c for c in t if c.startswith("abs ")]] = 0.0
    t["abs [0.20, inf)"] = 1.0  # every absolute distance above 0.2, as on our scale
    assert _held(table2_claims(t), "infringing: about 20%") == HELD


# --- Figure 7 ---

def _f7(gains: tuple[float, float], spread: float = 0.01, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for source in SOURCES:
        for r in range(3):
            base = 0.5
            for n, level in ((10, base), (20, base + gains[0]), (30, base + gains[0]), (50, base + gains[0] + gains[1])):
                rows.append({"model": f"{source}-{r}", "source": source, "lineage": "same", "kind": "infringing", "N": n,
                             "conf": level + rng.normal(0, spread)})
    return pd.DataFrame(rows)


def test_figure7_claims_both_sides():
    t = figure7_claims(_f7((0.1, 0.1)))
    assert _held(t, "largest N") == HELD and _held(t, "N = 30") == HELD
    t = figure7_claims(_f7((0.0, 0.3)))
    assert _held(t, "largest N") == NOT_HELD and _held(t, "N = 30") == NOT_HELD


# --- Table 1 ---

def _t1(lows: dict[str, float], highs: dict[str, float], n_models: int = 100, n_infringing: int = 60) -> pd.DataFrame:
    rows = []
    for source in SOURCES:
        row = {"source": source, "score": "discriminator", "n_models": n_models, "n_infringing": n_infringing}
        for col in ("accuracy", "auc", "tpr@10%fpr"):
            row[col], row[f"{col}_low"], row[f"{col}_high"] = (lows[col] + highs[col]) / 2, lows[col], highs[col]
        rows.append(row)
    return pd.DataFrame(rows)


def test_table1_claims_on_intervals_over_models():
    t = table1_claims(_t1({"accuracy": 0.9, "auc": 0.85, "tpr@10%fpr": 0.75}, {"accuracy": 1.0, "auc": 1.0, "tpr@10%fpr": 1.0}))
    assert set(t.held) == {HELD}
    t = table1_claims(_t1({"accuracy": 0.5, "auc": 0.4, "tpr@10%fpr": 0.2}, {"accuracy": 0.8, "auc": 0.75, "tpr@10%fpr": 0.6}))
    assert set(t.held) == {NOT_HELD}
    t = table1_claims(_t1({"accuracy": 0.6, "auc": 0.6, "tpr@10%fpr": 0.5}, {"accuracy": 1.0, "auc": 1.0, "tpr@10%fpr": 1.0}))
    assert set(t.held) == {INCONCLUSIVE}


def test_table1_bounds_that_the_models_cannot_reach_are_untestable():
    """18 models a source (12 infringing): 18/18 correct has an exact interval from 0.815, never
    above 0.85; 12/12 from 0.735, never above 0.8, but above 0.7."""
    t = table1_claims(_t1({"accuracy": 0.9, "auc": 0.85, "tpr@10%fpr": 0.75}, {"accuracy": 1.0, "auc": 1.0, "tpr@10%fpr": 1.0},
                          n_models=18, n_infringing=12)).set_index("paper's claim")
    assert t.held["accuracy > 85% for every source"] == UNTESTABLE
    assert "0.815" in t.ours["accuracy > 85% for every source"]
    assert "at least 23 such models" in t.ours["accuracy > 85% for every source"]
    assert t.held["AUC > 0.8 for every source"] == UNTESTABLE
    assert t.held["TPR@10%FPR > 0.7 for every source"] == HELD


def test_a_watermark_at_chance_makes_its_comparison_untestable():
    t = figure6_claims(_confs(GOOD, INNOCENT), "calibrated", watermark_accuracy=0.51)
    assert _held(t, "Strategy 2 within 0.1 of Baseline 1") == UNTESTABLE
    assert "chance" in t[t["paper's claim"].str.startswith("Strategy 2 within")].ours.iloc[0]
    t = figure6_claims(_confs(GOOD, INNOCENT), "calibrated", watermark_accuracy=0.9)
    assert _held(t, "Strategy 2 within 0.1 of Baseline 1") != UNTESTABLE
