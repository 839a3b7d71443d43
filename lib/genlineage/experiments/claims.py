"""The paper's claims (section 3), each judged on a quantity that means at our scale what the
paper's means at theirs, with an interval whose unit is the model.

Rules every claim here follows:

* **The model is the unit.** A claim reads one number per model (its conf, its mean RD, its share
  of keys in a bin) and the 95% interval over models (``genlineage.intervals``). A claim is
  *held* when the whole interval lies in the claim's region, *not held* when none of it does, and
  *inconclusive* when the interval straddles the bound: three models cannot settle what they
  cannot settle. A claim about "every source" holds when it holds for each source.
* **Each method and each delta0 on its own.** Strategies 1 and 2 are judged separately (never the
  better of the two per row), and so are the paper's delta0 and the one calibrated on shadows.
* **Relative to what innocent models do.** Where the paper's number is a level that innocent
  models sit far from at their scale (a conf of 0.4, a share of keys below 0.1), ours is the
  excess over innocent models on the same keys, or the bin relative to the calibrated delta0.
* **Memorisation against the base**, on the same captions, not against a target we chose.
* **Judged once, and only where this world can test it.** Each claim is judged at the primary
  delta0 (calibrated on each source's shadows); the paper's 0.15 gives *sensitivity* rows that
  say what they would have read and are not counted. A claim this world cannot test (a baseline
  that sits at chance, a bound the number of models cannot reach even with a perfect score, a
  share set by the calibration rule itself) is **untestable here**, with its reason and what would
  test it, and is counted apart from held, not held and inconclusive.

Every function takes tables (what notebooks 02-07 print) and returns rows of
``section, paper's claim, ours, held``.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np
import pandas as pd

from ..intervals import (HELD, INCONCLUSIVE, NOT_HELD, NOT_JUDGED, SHARE, binomial_interval, cluster_difference_interval,
                         cluster_interval, judge, t_interval)

COLUMNS = ["section", "paper's claim", "ours", "held"]
UNTESTABLE = "untestable here"
PRIMARY_DELTA0 = "calibrated"   # the delta0 claims are judged at; the paper's 0.15 is the sensitivity reading
WATERMARK_CHANCE = (0.45, 0.55)  # mean bit accuracy in this band: the watermark carries no signal here


def claim(section: str, text: str, ours: str, held: str) -> dict:
    """One row of the claims table; ``held`` is held / not held / inconclusive / untestable here / n/a."""
    if held not in (HELD, NOT_HELD, INCONCLUSIVE, UNTESTABLE, NOT_JUDGED):
        raise ValueError(f"unknown verdict {held!r}")
    return {"section": section, "paper's claim": text, "ours": ours, "held": held}


def untestable(section: str, text: str, reason: str, would_test: str) -> dict:
    """A claim this world cannot test: why, and what would test it."""
    return claim(section, text, f"untestable here: {reason}; it would take {would_test}", UNTESTABLE)


def as_sensitivity(rows: pd.DataFrame, reading: str) -> pd.DataFrame:
    """The same claims read at a second setting (e.g. the paper's delta0): shown with what they
    would have read, counted in no tally (one claim, one vote)."""
    out = rows.copy()
    judged = out.held.isin([HELD, NOT_HELD, INCONCLUSIVE, UNTESTABLE])
    out.loc[judged, "ours"] = out.loc[judged, "ours"] + " (sensitivity reading at " + reading + ": would be " + \
        out.loc[judged, "held"] + ")"
    out["held"] = NOT_JUDGED
    out["section"] = out.section + " (sensitivity)"
    return out


def all_of(verdicts: Iterable[str]) -> str:
    """A claim over several cells (every source, every rho): not held if any cell is not held,
    held only if every cell is held; a cell that could not be judged (one model, no interval)
    leaves the claim inconclusive, never held; n/a when no cell exists or none could be judged."""
    verdicts = list(verdicts)
    if not verdicts or all(v == NOT_JUDGED for v in verdicts):
        return NOT_JUDGED
    if NOT_HELD in verdicts:
        return NOT_HELD
    return HELD if all(v == HELD for v in verdicts) else INCONCLUSIVE


def one_sided(p_claim: float, p_opposite: float, alpha: float = 0.05) -> str:
    """A claim decided by a one-sided test: held when its test rejects at ``alpha``, not held when
    the test in the opposite direction does, inconclusive when neither does (a p above alpha is
    no evidence against the claim)."""
    if not (np.isfinite(p_claim) and np.isfinite(p_opposite)):
        return NOT_JUDGED
    if p_claim < alpha:
        return HELD
    return NOT_HELD if p_opposite < alpha else INCONCLUSIVE


def _table(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=COLUMNS)


# --- 3.1 memorisation -------------------------------------------------------------------------

def memorisation_claims(checks: pd.DataFrame, alpha: float = 0.05) -> pd.DataFrame:
    """Fine-tuned sources memorise their training images: per source, the share of generations
    whose nearest training image is their own, against the base model's share on the same
    captions and seeds; ``checks`` holds ``p_source_above_base`` and ``p_base_above_source`` (one-
    sided paired tests over the training images). Held when every source is above its base."""
    text = ("fine-tuned sources memorise their training images (share of generations nearest their own "
            "training image, above the base's)")
    verdicts = [one_sided(a, b, alpha) for a, b in zip(checks.p_source_above_base, checks.p_base_above_source)]
    if not len(checks) or checks.p_source_above_base.isna().all():
        return _table([claim("3.1 memorisation", text, "no source could be compared with its base", NOT_JUDGED)])
    worst = checks.loc[checks.p_source_above_base.idxmax()]
    ours = (f"nearest-own share {checks.nearest_own.min():.0%}-{checks.nearest_own.max():.0%} vs the base's "
            f"{checks.base_nearest_own.min():.0%}-{checks.base_nearest_own.max():.0%} on the same captions; "
            f"above the base (paired test over images, p < {alpha:g}) for {verdicts.count(HELD)} of {len(verdicts)} "
            f"sources (largest p {worst.p_source_above_base:.2g}, {worst.source})")
    return _table([claim("3.1 memorisation", text, ours, all_of(verdicts))])


# --- Figure 6 -----------------------------------------------------------------------------------

def _per_model(confs: pd.DataFrame) -> pd.DataFrame:
    """conf per (model, strategy) of the own-lineage evaluated models, one column per strategy."""
    own = confs[confs.lineage == "same"]
    return own.pivot_table(index=["model", "source", "rho"], columns="strategy", values="conf").reset_index()


def figure6_claims(confs: pd.DataFrame, tag: str, watermark_accuracy: float | None = None,
                   key_coverage: pd.DataFrame | None = None) -> pd.DataFrame:
    """Figure 6's claims on per-model confs (:func:`instance.evaluated_confs` at one delta0).

    Per rho the models of every source are pooled (18 at the tiny profile: 6 sources x 3 seeds),
    so each interval is over models. Margins are paired within a model (the same model queried
    with both key sets). Levels the paper states for infringing models ("conf > 0.6", "about
    0.4") are judged as the excess over the innocent models' conf on the same keys, since at the
    paper's scale innocent models score near 0 and at ours they need not. ``watermark_accuracy``
    (the mean bit accuracy of Baseline 1's decoder on the infringing models' outputs) within
    ``WATERMARK_CHANCE`` makes the comparison with Baseline 1 untestable: a baseline at chance
    cannot be matched or beaten in a way that says anything about the paper's claim.
    ``key_coverage`` (per infringing evaluated model: ``rho`` and ``covered_keys``, the share of its
    Strategy-2 keys that an image the source generated into its training set lies within delta0
    of; ``world_grid.coverage_summary``) makes the level at rho = 0.3 untestable when even the
    upper end of its interval lies below the paper's level: a suspect brings back what it saw."""
    section = f"Figure 6 (delta0 {tag})"
    wide = _per_model(confs)
    inf, inn = wide[wide.rho > 0], wide[wide.rho == 0]
    rows = _margin_claims(section, wide, inf) + _watermark_claims(section, wide, inf, watermark_accuracy)
    rows += _rho03_claims(section, wide, inf, inn, key_coverage)
    if len(inn) and "generation" in wide.columns:
        rows.append(claim(section, "(ours) innocent models score low",
                          "Strategy 2 conf of innocent models "
                          f"{cluster_interval(inn['generation'], inn.source, bounds=SHARE).text()}",
                          NOT_JUDGED))
    return _table(rows)


def _margin_claims(section: str, wide: pd.DataFrame, inf: pd.DataFrame) -> list[dict]:
    """Each strategy beats Baseline 2 by more than 0.2 conf at every rho (margins paired per model)."""
    rows = []
    for strategy, name in (("generation", "Strategy 2"), ("detection", "Strategy 1")):
        if {strategy, "random"} <= set(wide.columns):
            cells = {rho: cluster_interval(g[strategy] - g["random"], g.source) for rho, g in inf.groupby("rho")}
            if not cells:
                continue
            verdict = all_of(judge(iv.low, iv.high, above=0.2) for iv in cells.values())
            worst = min(cells.items(), key=lambda kv: kv[1].mean)
            rows.append(claim(section, f"{name} beats Baseline 2 by > 0.2 conf at every rho",
                              f"smallest mean margin over models at rho = {worst[0]:g}: {worst[1].text(signed=True)}", verdict))
    return rows


def _watermark_claims(section: str, wide: pd.DataFrame, inf: pd.DataFrame, watermark_accuracy: float | None) -> list[dict]:
    """Strategy 2 within 0.1 of Baseline 1, untestable when the watermark decodes at chance."""
    text = "Strategy 2 within 0.1 of Baseline 1 (watermark)"
    at_chance = watermark_accuracy is not None and WATERMARK_CHANCE[0] <= watermark_accuracy <= WATERMARK_CHANCE[1]
    if at_chance and len(inf):
        return [untestable(section, text, f"Baseline 1's watermark is at chance here (mean bit accuracy "
                           f"{watermark_accuracy:.2f}; chance 0.50): marks do not survive generate, fine-tune and "
                           "generate again through this VAE", "a watermark that survives fine-tuning (decoded "
                           "well above chance from the infringing models' outputs)")]
    if {"generation", "watermark"} <= set(wide.columns) and len(inf):
        iv = cluster_interval(inf["watermark"] - inf["generation"], inf.source)
        return [claim(section, text, f"Baseline 1 minus Strategy 2 over every infringing model: {iv.text(signed=True)}",
                      judge(iv.low, iv.high, below=0.1))]
    return []


def _rho03_claims(section: str, wide: pd.DataFrame, inf: pd.DataFrame, inn: pd.DataFrame,
                  key_coverage: pd.DataFrame | None) -> list[dict]:
    """The levels the paper states at rho = 0.3, as excess over the innocent models; Strategy 2's
    untestable when the keys' coverage caps it below the paper's level."""
    at03 = inf[np.isclose(inf.rho, 0.3)]
    strategy2 = "Strategy 2 conf > 0.6 at rho = 0.3 (ours: excess over innocent models)"
    baseline2 = "Baseline 2 about 0.4 at rho = 0.3 (ours: excess over innocent models, 0.3-0.5)"
    if not len(at03) or not len(inn):
        return [claim(section, text, "no rho = 0.3 or no innocent model in this profile", NOT_JUDGED)
                for text in (strategy2, baseline2)]
    if not {"generation", "random"} <= set(wide.columns):
        return []
    capped = coverage_cap(key_coverage, 0.3)
    iv = cluster_difference_interval(at03["generation"], at03.source, inn["generation"], inn.source)
    measured = (f"excess {iv.text(signed=True)}; raw {at03['generation'].mean():.2f} "
                f"vs innocent {inn['generation'].mean():.2f}")
    if capped is not None and capped.high < 0.6:
        rows = [untestable(section, strategy2, f"{measured}, but the infringers at rho = 0.3 saw near-copies (within "
                           f"delta0) of only {capped.text()} of their keys among the images the source generated "
                           "for them, so conf's excess is capped below the paper's 0.6 by this world's coverage",
                           "suspects whose generated training images cover at least 60% of the keys (more "
                           "generated pairs per key, as the paper's 500-pair sets from a source's own captions)")]
    else:
        rows = [claim(section, strategy2, measured, judge(iv.low, iv.high, above=0.6))]
    iv = cluster_difference_interval(at03["random"], at03.source, inn["random"], inn.source)
    rows.append(claim(section, baseline2, f"excess {iv.text(signed=True)}; raw {at03['random'].mean():.2f} vs innocent "
                      f"{inn['random'].mean():.2f}", judge(iv.low, iv.high, above=0.3, below=0.5)))
    return rows


def coverage_cap(key_coverage: pd.DataFrame | None, rho: float):
    """The interval (bounded to [0, 1]) of the share of keys covered over the infringing models at
    ``rho``; None when no coverage was measured there."""
    if key_coverage is None or key_coverage.empty or "covered_keys" not in key_coverage:
        return None
    at = key_coverage[np.isclose(key_coverage.rho, rho)].covered_keys
    return t_interval(at, bounds=SHARE) if len(at) else None


def inheritance_claims(inh: pd.DataFrame, sources: Iterable[str] | None = None) -> pd.DataFrame:
    """rho = 1 infringing models reconstruct the keys closer than innocent ones, for every source:
    the exact permutation tests over models of :func:`instance.inheritance` decide each source
    (held: infringing closer; not held: innocent closer; inconclusive: neither test rejects). A
    source in ``sources`` with no row (no rho = 1 or no innocent model) cannot be judged."""
    text = "rho = 1 infringing models reconstruct the keys closer than innocent ones (every source)"
    own = inh[inh.lineage == "same"] if len(inh) else inh
    expected = sorted(set(sources) if sources is not None else set(own.source) if len(own) else set())
    if not expected:
        return _table([claim("Figure 6 / inheritance", text, "no source has both rho = 1 and innocent models", NOT_JUDGED)])
    by_source = own.set_index("source") if len(own) else pd.DataFrame()
    verdicts = [one_sided(by_source.loc[s, "permutation_p"], by_source.loc[s, "permutation_p_reverse"])
                if s in by_source.index else NOT_JUDGED for s in expected]
    ours = (f"infringing closer (one-sided permutation test over models, p < 0.05) for {verdicts.count(HELD)} of "
            f"{len(expected)} sources, innocent closer for {verdicts.count(NOT_HELD)}, neither for "
            f"{verdicts.count(INCONCLUSIVE)}")
    if len(own):
        ours += (f" ({int(own['infringing models'].min())} infringing vs {int(own['innocent models'].min())} innocent "
                 f"models each; mean RD gap {own.rd_gap.min():+.3f} to {own.rd_gap.max():+.3f})")
    return _table([claim("Figure 6 / inheritance", text, ours, all_of(verdicts))])


# --- Table 2 ------------------------------------------------------------------------------------

def _bin_share(per_model: pd.DataFrame, prefix: str, bins: list[str]) -> pd.Series:
    return per_model[[f"{prefix} {b}" for b in bins]].sum(axis=1)


def table2_claims(per_model: pd.DataFrame) -> pd.DataFrame:
    """Table 2's claims on the bins relative to each model's delta0 (the paper's edges scaled by
    calibrated delta0 / 0.15); the absolute bins are shown in the text, never judged."""
    section = "Table 2 (bins relative to calibrated delta0)"
    inn, inf = per_model[per_model.kind == "innocent"], per_model[per_model.kind == "infringing"]
    below15 = ["[0.00, 0.05)", "[0.05, 0.10)", "[0.10, 0.15)"]
    rows = []
    if len(inn):  # where innocent keys fall relative to delta0 is what the calibration rule chose delta0 by
        iv = cluster_interval(inn["rel [0.15, 0.20)"], inn.source, bounds=SHARE)
        reason = ("the calibrated delta0 is placed by the rule that separates the innocent shadows from the infringing "
                  "ones, so the share of innocent keys around it is set by the rule, not measured")
        would = "a delta0 fixed before any model is seen (the paper's 0.15 at the paper's scale)"
        rows.append(untestable(section, "innocent: 73.9% of keys in [0.15, 0.2) (ours: [1, 4/3) delta0, at least 60%)",
                               f"{reason} (measured {iv.text()}; absolute [0.15, 0.20): "
                               f"{inn['abs [0.15, 0.20)'].mean():.0%})", would))
        iv = cluster_interval(_bin_share(inn, "rel", below15), inn.source, bounds=SHARE)
        rows.append(untestable(section, "innocent: 4.3% of keys below 0.15 (ours: below delta0, under 10%)",
                               f"{reason} (measured {iv.text()}; absolute below 0.15: "
                               f"{_bin_share(inn, 'abs', below15).mean():.0%})", would))
    if len(inf):
        iv = cluster_interval(_bin_share(inf, "rel", below15[:2]), inf.source, bounds=SHARE)
        rows.append(claim(section, "infringing: about 20% of keys below 0.1 (ours: below 2/3 delta0, 10-30%)",
                          f"{iv.text()}; absolute below 0.1: {_bin_share(inf, 'abs', below15[:2]).mean():.0%}",
                          judge(iv.low, iv.high, above=0.1, below=0.3)))
        per_source = {s: t_interval(g["rel [0.10, 0.15)"], bounds=SHARE) for s, g in inf.groupby("source")}
        verdicts = [judge(iv.low, iv.high, above=0.4) for iv in per_source.values()]
        need = int(np.ceil(5 * len(verdicts) / 6))
        held, failed = verdicts.count(HELD), verdicts.count(NOT_HELD)
        verdict = HELD if held >= need else NOT_HELD if len(verdicts) - failed < need else INCONCLUSIVE
        rows.append(claim(section, "infringing: > 40% in [0.1, 0.15) for 5 of 6 sources (ours: [2/3, 1) delta0)",
                          f"interval above 40% for {held} of {len(verdicts)} sources, below for {failed}", verdict))
    return _table(rows)


# --- Figure 7 -----------------------------------------------------------------------------------

def figure7_claims(per_model: pd.DataFrame) -> pd.DataFrame:
    """conf grows with N for rho = 1 infringing models: the paired per-model gain between two N
    of the grid, pooled over sources (own lineage), about 0.1 (0.05-0.15). The grid's N are
    matched by position to the paper's (20, 30, 50, 100)."""
    inf = per_model[(per_model.kind == "infringing") & (per_model.lineage == "same")]
    wide = inf.pivot_table(index=["model", "source"], columns="N", values="conf")
    ns = sorted(wide.columns)
    rows = []
    if len(ns) >= 3:  # by position in the grid: the paper's is (20, 30, 50, 100), so its "30" is the second N
        for hi, lo, text in ((ns[-1], ns[1], f"largest N about 0.1 above N = 30 (ours: N = {ns[-1]} vs {ns[1]})"),
                             (ns[1], ns[0], f"N = 30 about 0.1 above N = 20 (ours: N = {ns[1]} vs {ns[0]})")):
            iv = cluster_interval(wide[hi] - wide[lo], wide.index.get_level_values("source"))
            rows.append(claim("Figure 7", text, f"gain {iv.text(signed=True)}", judge(iv.low, iv.high, above=0.05, below=0.15)))
    return _table(rows)


# --- Table 1 ------------------------------------------------------------------------------------

def table1_claims(t1: pd.DataFrame) -> pd.DataFrame:
    """The discriminator's accuracy, AUC and TPR@10%FPR for every source, each judged on its 95%
    interval over the source's evaluated models (bootstrap that resamples models). A bound that
    even a perfect score could not establish with this many models (the exact interval of n
    successes in n trials starts below it: 18 models give 0.815 < 0.85) is untestable here."""
    d = t1[t1.score == "discriminator"]
    rows = []
    for col, bound, text, count in (("accuracy", 0.85, "accuracy > 85% for every source", "n_models"),
                                    ("auc", 0.8, "AUC > 0.8 for every source", "n_infringing"),
                                    ("tpr@10%fpr", 0.7, "TPR@10%FPR > 0.7 for every source", "n_infringing")):
        n = int(d[count].min()) if len(d) else 0
        best = binomial_interval(n, n).low if n else float("nan")
        if n and best <= bound:
            rows.append(untestable("Table 1", text, f"with {n} models a source ({count.replace('n_', '')}), even a "
                                   f"perfect score's exact 95% interval starts at {best:.3f}, not above {bound:g}",
                                   f"at least {_models_for(bound)} such models a source"))
            continue
        verdicts = [judge(lo, hi, above=bound) for lo, hi in zip(d[f"{col}_low"], d[f"{col}_high"])]
        vals = d[col].to_numpy(dtype=float)
        ours = (f"lowest {np.nanmin(vals):.2f} over {len(vals)} sources; interval above {bound:g} for "
                f"{verdicts.count(HELD)}, below for {verdicts.count(NOT_HELD)}") if np.isfinite(vals).any() else "undefined"
        rows.append(claim("Table 1", text, ours, all_of(verdicts)))
    return _table(rows)


def _models_for(bound: float) -> int:
    """The fewest models whose perfect score's exact 95% interval starts above ``bound``."""
    n = 1
    while binomial_interval(n, n).low <= bound:
        n += 1
    return n


def verdict_tally(claims: pd.DataFrame) -> dict[str, int]:
    """How many claims were held, not held, inconclusive, and untestable here (n/a and
    sensitivity rows are not judged)."""
    counts = claims.held.value_counts()
    return {k: int(counts.get(k, 0)) for k in (HELD, NOT_HELD, INCONCLUSIVE, UNTESTABLE)}
