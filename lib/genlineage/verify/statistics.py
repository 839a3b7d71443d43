"""The owner's test statistics and their calibration with the model as the unit.

Why several: a model inherits a source's memorisation *sparsely* (a few keys come back close, most
do not), while innocent models differ in how close they come to *every* key (an offset per model
that all keys share). The mean distance over the keys mixes the two; the candidates below each
keep a different part of the signal, and notebook 08 chooses one on shadow models only
(:func:`select_statistic`), before any evaluated model is looked at.

Every statistic maps one model's answers (:class:`Unit`: its distance to each key, and to each
control pair when asked) to one number, **higher = more like an infringer**. Some need the other
models to be computed (a per-key spread, a threshold, a classifier): they are fitted on a
:class:`Reference` of the *other* units, never on the unit scored.

Calibration (:func:`conformal_test`) treats the suspect and the k innocent shadows alike, as far
as a reference allows (cross-fitting): the suspect is scored against the k innocent shadows and the
infringing shadows, each innocent shadow against the other k - 1 and the infringing shadows, so no
model is ever scored by a threshold, spread or classifier fitted on itself. (Counting the suspect
among the innocent references, as full conformal prediction would, lets an infringing suspect
drag a calibrated delta0 up for every innocent shadow; measured on planted tables, it made an
innocent shadow outscore a clear infringer.) Under the null the k + 1 scores are then exchangeable
up to one reference model more or less, so the suspect's rank among them is a p-value
(``rank_p``, no assumption on their spread, but never below 1 / (k + 1)); ``parametric_p`` is a
Student-t prediction from the innocent scores' mean and spread (any level, if they are normally
spread: Shapiro-Wilk's p is reported beside it). :func:`primary_p` takes the rank whenever k is
large enough for the target. Notebook 08 measures the false-positive rate this gives on evaluated
innocent models that took part in nothing.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import pandas as pd
from scipy.stats import shapiro

from ..discriminator import features_from_rd, fit_score
from . import null


@dataclass(frozen=True)
class Unit:
    """One model's answers: distance to each key (min over the query seeds), and to each control
    pair (pairs of the source's domain it never trained on) when they were asked."""

    keys: np.ndarray
    controls: np.ndarray | None = None


@dataclass(frozen=True)
class Reference:
    """What a unit is scored against: the other innocent units and the infringing shadows."""

    innocent: tuple[Unit, ...]
    infringing: tuple[Unit, ...] = ()

    def keys(self, which: str) -> np.ndarray:
        units = self.innocent if which == "innocent" else self.infringing
        if not units:
            return np.zeros((0, 0))
        return np.array([u.keys for u in units], dtype=float)


@dataclass(frozen=True)
class StatisticSettings:
    """The statistics' own settings (profile section ``verify``)."""

    k_smallest: int = 5                 # lowest_k_rd: how many of the closest keys are averaged
    variance_prior: float = 4.0         # per_key_z: weight (in shadows) of the pooled variance
    delta0: float = 0.15                # conf and discriminator without infringing shadows to calibrate on
    delta0_grid: tuple[float, float, float] = (0.01, 0.40, 0.005)
    classifier: str = "logistic"
    seed: int = 0


@dataclass(frozen=True)
class Statistic:
    """A candidate: its name (for profiles and the CLI), words for reports, what it needs, and the
    score of a unit against a reference."""

    name: str
    label: str
    score: Callable[[Unit, Reference, StatisticSettings], float] = field(repr=False)
    needs_controls: bool = False
    needs_infringing: bool = False
    uses_reference: bool = False        # False: the score of a unit ignores the others (no refits)


# --- the candidates -------------------------------------------------------------------------------

def _mean_rd(u: Unit, ref: Reference, s: StatisticSettings) -> float:
    return -float(np.mean(u.keys))


def _lowest_k_rd(u: Unit, ref: Reference, s: StatisticSettings) -> float:
    k = max(1, min(int(s.k_smallest), len(u.keys)))
    return -float(np.mean(np.sort(u.keys)[:k]))


def _contrast(u: Unit, ref: Reference, s: StatisticSettings) -> float:
    if u.controls is None or not len(u.controls):
        raise ValueError("the key-vs-control contrast needs the model's distances to control pairs")
    return float(np.mean(u.controls) - np.mean(u.keys))


def calibrated_delta0(ref: Reference, s: StatisticSettings) -> float:
    """The delta of the grid where the reference's infringing units' mean conf most exceeds its
    innocent units' (the first on ties); the profile's delta0 without infringing units. The rule of
    ``conf.calibrate_delta0``, on arrays: a verdict refits it once per shadow (and the choice among
    statistics once per shadow left out), where the pipeline's table-building version is too slow;
    a test checks the two agree."""
    inf, inn = ref.keys("infringing"), ref.keys("innocent")
    if not len(inf) or not len(inn):
        return float(s.delta0)
    start, stop, step = s.delta0_grid
    grid = np.round(np.arange(start, stop + step / 2, step), 6)
    gap = (inf[:, :, None] < grid).mean(axis=(0, 1)) - (inn[:, :, None] < grid).mean(axis=(0, 1))
    return float(grid[int(np.argmax(gap))])


def _conf(u: Unit, ref: Reference, s: StatisticSettings) -> float:
    return float(np.mean(u.keys < calibrated_delta0(ref, s)))


def _per_key_z(u: Unit, ref: Reference, s: StatisticSettings) -> float:
    """Each key scored against the innocent references' spread on that key (variances shrunk
    toward their pooled mean, as BaVarIA does when reference models are few), then averaged."""
    inn = ref.keys("innocent")
    if len(inn) < 2:
        raise ValueError("the per-key score needs at least 2 innocent references")
    df = len(inn) - 1
    var = inn.var(axis=0, ddof=1)
    shrunk = (df * var + s.variance_prior * var.mean()) / (df + s.variance_prior)
    return float(np.mean((inn.mean(axis=0) - u.keys) / np.sqrt(np.maximum(shrunk, 1e-12))))


def _discriminator(u: Unit, ref: Reference, s: StatisticSettings) -> float:
    """The statistical level's classifier (sorted distances and conf), fitted on the reference
    only: the probability that the unit is infringing."""
    delta0 = calibrated_delta0(ref, s)
    inn, inf = ref.keys("innocent"), ref.keys("infringing")
    x = features_from_rd(np.vstack([inn, inf]), delta0)
    y = np.repeat([0, 1], [len(inn), len(inf)])
    return float(fit_score(s.classifier, x, y, features_from_rd([u.keys], delta0), s.seed)[0][0])


STATISTICS: dict[str, Statistic] = {st.name: st for st in (
    Statistic("mean_rd", "mean distance over the keys (sign flipped: higher = closer)", _mean_rd),
    Statistic("lowest_k_rd", "mean of the k smallest key distances (sign flipped: higher = closer)", _lowest_k_rd),
    Statistic("conf", "share of keys closer than delta0 (calibrated on the other shadows)", _conf,
              needs_infringing=True, uses_reference=True),
    Statistic("key_control_contrast", "mean control distance minus mean key distance (higher = keys closer)",
              _contrast, needs_controls=True),
    Statistic("discriminator", "discriminator's probability of infringing (fitted on the other shadows)",
              _discriminator, needs_infringing=True, uses_reference=True),
    Statistic("per_key_z", "mean per-key standardised closeness against the innocent shadows", _per_key_z,
              uses_reference=True),
)}


def get_statistic(name: str) -> Statistic:
    if name not in STATISTICS:
        raise ValueError(f"unknown test statistic {name!r}; choose one of {', '.join(STATISTICS)}")
    return STATISTICS[name]


# --- calibration with the model as the unit ---------------------------------------------------------

@dataclass(frozen=True)
class ConformalTest:
    """The suspect's score against the innocent shadows' (each scored as the suspect is)."""

    statistic: str
    score: float
    innocent_scores: np.ndarray
    rank_p: float
    parametric_p: float
    normality_p: float | None

    @property
    def effect(self) -> float:
        """The suspect's score above the innocent mean, in innocent standard deviations."""
        sd = float(np.std(self.innocent_scores, ddof=1)) if len(self.innocent_scores) > 1 else float("nan")
        return (self.score - float(np.mean(self.innocent_scores))) / sd if sd > 0 else float("nan")


def rank_floor(k: int) -> float:
    """The smallest rank p-value k innocent shadows allow."""
    return 1.0 / (k + 1)


def primary_p(rank_p: float, parametric_p: float, k: int, alpha: float) -> tuple[float, str]:
    """The rank p when k innocent shadows can reach alpha by rank alone (k + 1 >= 1 / alpha),
    else the parametric one: (p, "rank" | "parametric")."""
    if rank_floor(k) <= alpha * (1 + 1e-9):
        return rank_p, "rank"
    return parametric_p, "parametric"


def unit_scores(stat: Statistic, suspect: Unit, innocent: Sequence[Unit], infringing: Sequence[Unit],
                settings: StatisticSettings) -> np.ndarray:
    """[suspect, innocent...]: the suspect scored against every shadow, each innocent shadow
    against the others (cross-fitted: never against itself)."""
    innocent, infringing = tuple(innocent), tuple(infringing)
    if not stat.uses_reference:
        empty = Reference(())
        return np.array([stat.score(u, empty, settings) for u in (suspect, *innocent)], dtype=float)
    refs = [Reference(innocent, infringing)] + [Reference(innocent[:i] + innocent[i + 1:], infringing)
                                                for i in range(len(innocent))]
    return np.array([stat.score(u, ref, settings) for u, ref in zip((suspect, *innocent), refs)], dtype=float)


def conformal_test(stat: Statistic, suspect: Unit, innocent: Sequence[Unit], infringing: Sequence[Unit],
                   settings: StatisticSettings) -> ConformalTest:
    """The suspect against ``innocent`` (at least 2) with ``stat``: rank and parametric p-values."""
    if len(innocent) < 2:
        raise ValueError(f"{len(innocent)} innocent shadow(s): the test needs at least 2")
    scores = unit_scores(stat, suspect, innocent, infringing, settings)
    if not np.isfinite(scores).all():
        raise ValueError(f"the {stat.name} statistic is not finite for {int((~np.isfinite(scores)).sum())} model(s)")
    s, x = float(scores[0]), scores[1:]
    # no spread among the shadows: the t prediction is undefined, so it claims nothing (p 1)
    parametric = null.prediction_pvalue(-s, -x) if np.ptp(x) > 0 else 1.0
    normality = float(shapiro(x).pvalue) if len(x) >= 3 and np.ptp(x) > 0 else None
    return ConformalTest(statistic=stat.name, score=s, innocent_scores=x, rank_p=null.empirical_pvalue(-s, -x),
                         parametric_p=float(parametric), normality_p=normality)


def ideal_unit(innocent: Sequence[Unit]) -> Unit:
    """A perfect copy: distance 0 to every key, and to the controls as far as innocent models are
    on average; its p-value is the best any suspect can get against these shadows."""
    controls = [u.controls for u in innocent if u.controls is not None]
    n = len(innocent[0].keys)
    return Unit(np.zeros(n), np.mean(controls, axis=0) if controls else None)


# --- choosing the statistic on shadows ------------------------------------------------------------

def leave_one_shadow_out(stat: Statistic, innocent: Sequence[Unit], infringing: Sequence[Unit],
                         alpha: float, settings: StatisticSettings) -> pd.DataFrame:
    """Each shadow of one source judged as a suspect against the other shadows (the innocent ones
    as the null, the infringing ones as references): one row per shadow with its label, primary
    p-value at ``alpha`` and standardised effect."""
    rows = []
    for label, group in ((0, innocent), (1, infringing)):
        for i, unit in enumerate(group):
            null_units = [u for j, u in enumerate(innocent) if not (label == 0 and j == i)]
            refs = [u for j, u in enumerate(infringing) if not (label == 1 and j == i)]
            test = conformal_test(stat, unit, null_units, refs, settings)
            p, how = primary_p(test.rank_p, test.parametric_p, len(null_units), alpha)
            rows.append({"statistic": stat.name, "label": label, "shadow": i, "p_value": p, "p_from": how,
                         "effect": test.effect})
    return pd.DataFrame(rows)


def selection_table(per_source: dict[str, tuple[Sequence[Unit], Sequence[Unit]]], candidates: Sequence[str],
                    alpha: float, settings: StatisticSettings) -> pd.DataFrame:
    """Leave-one-shadow-out results of every candidate on every source's shadows (one row per
    candidate, source and shadow). A candidate that needs what a source lacks (controls, or
    infringing shadows) is left out of that source, and the table's ``reason`` says why."""
    frames = []
    for name in candidates:
        stat = get_statistic(name)
        for source, (innocent, infringing) in per_source.items():
            missing = _missing_inputs(stat, innocent, infringing)
            if missing:
                frames.append(pd.DataFrame([{"statistic": name, "source": source, "reason": missing}]))
                continue
            frames.append(leave_one_shadow_out(stat, innocent, infringing, alpha, settings).assign(source=source, reason=""))
    return pd.concat(frames, ignore_index=True)


def _missing_inputs(stat: Statistic, innocent: Sequence[Unit], infringing: Sequence[Unit]) -> str:
    if stat.needs_controls and any(u.controls is None for u in [*innocent, *infringing]):
        return "needs control pairs asked of every model"
    if stat.needs_infringing and len(infringing) < 2:
        return "needs at least 2 infringing shadows (one is left out)"
    # one shadow is left out, and a statistic fitted on references fits each innocent one on the others
    least = 4 if stat.uses_reference else 3
    if len(innocent) < least:
        reference = ", one more is its reference" if stat.uses_reference else ""
        return f"needs at least {least} innocent shadows (one is left out{reference})"
    return ""


SELECTION_RULE = ("the candidate that calls the most infringing shadows at the target rate when each shadow is "
                  "left out in turn and judged against the others (leave-one-shadow-out TPR, pooled over sources); "
                  "ties broken by the lower mean log10 p-value of the infringing shadows, then by the order the "
                  "candidates are listed in. A candidate that cannot be computed for every source is not eligible.")


def selection_summary(table: pd.DataFrame, candidates: Sequence[str], alpha: float) -> pd.DataFrame:
    """One row per candidate: infringing shadows called (TPR), innocent shadows called (FPR), the
    infringing shadows' mean log10 p and median effect, eligibility, and the rank by
    ``SELECTION_RULE`` (1 = chosen)."""
    rows = []
    for order, name in enumerate(candidates):
        t = table[table.statistic == name]
        judged = t[t.reason == ""] if "reason" in t else t
        inf, inn = judged[judged.label == 1], judged[judged.label == 0]
        eligible = not (t.reason != "").any() and len(inf) > 0
        rows.append({"statistic": name, "eligible": eligible,
                     "infringing called": f"{int((inf.p_value <= alpha).sum())}/{len(inf)}",
                     "TPR": float((inf.p_value <= alpha).mean()) if len(inf) else float("nan"),
                     "innocent called": f"{int((inn.p_value <= alpha).sum())}/{len(inn)}",
                     "FPR": float((inn.p_value <= alpha).mean()) if len(inn) else float("nan"),
                     "mean log10 p (infringing)": float(np.log10(np.maximum(inf.p_value, 1e-300)).mean())
                     if len(inf) else float("nan"),
                     "median effect (infringing)": float(inf.effect.median()) if len(inf) else float("nan"),
                     "order": order})
    summary = pd.DataFrame(rows)
    ranked = summary[summary.eligible].sort_values(["TPR", "mean log10 p (infringing)", "order"],
                                                   ascending=[False, True, True])
    summary["choice rank"] = summary.statistic.map({n: i + 1 for i, n in enumerate(ranked.statistic)})
    return summary.drop(columns="order")


def chosen_statistic(summary: pd.DataFrame) -> str:
    """The candidate ranked first by :func:`selection_summary`."""
    first = summary[summary["choice rank"] == 1]
    if first.empty:
        raise ValueError("no candidate statistic could be computed on every source's shadows")
    return str(first.statistic.iloc[0])


def shadows_needed(alpha: float) -> int:
    """Innocent shadows for a rank test at ``alpha`` with no assumption: ceil(1/alpha) - 1."""
    return math.ceil(1 / alpha - 1e-9) - 1
