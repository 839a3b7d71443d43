"""``verify``: one suspect, one calibrated verdict (the model owner's question).

The same library code as the notebooks: keys from :mod:`genlineage.keys`, reconstruction distance
from :mod:`genlineage.reconstruction`, conf, delta0 calibration and the discriminator from
:mod:`genlineage.confidence` and :mod:`genlineage.discriminator`. What this adds is the decision
for a single model: a p-value against an innocent null (:mod:`.null`), a verdict at the owner's
target false-positive rate, and the evidence (:mod:`.report`).

``verify`` runs in steps, each a function below with its own tests, in the order that makes every
refusal cost the fewest queries:

1. check the inputs: ``check_settings`` (numbers, profile), ``check_models`` (folders or callables,
   an innocent null), ``check_keys`` (the key set, its seeds apart from the query seeds),
   ``open_suspect``; nothing is queried before all of them pass;
2. ``query_shadows``: the owner's shadow models asked the keys;
3. the null: ``choose_delta0`` (given, calibrated on the shadows, or the profile's) and
   ``build_null`` (the innocent shadows, or the control pairs);
4. ``plan_budget``: how many keys (and controls) to ask, refused with the smallest budget that would do;
5. ``query_suspect``: the only step that costs the suspect's queries;
6. ``decide``: p-value, verdict at the target false-positive rate, discriminator score, warning;
7. the report: ``run_record`` (the settings to re-run it) and ``assemble_verdict``.
"""
from __future__ import annotations

import math
import sys
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from ..confidence import calibrate_delta0, conf, delta_grid
from ..config import Profile, check_level, check_seeds_apart, load_profile
from ..data.imagefolder import ImageFolder, read_imagefolder
from ..discriminator import features_from_rd, fit_score
from ..errors import InputError
from ..generation import GenerationCache, GenerationConfig
from ..jobs import executor_for, run_jobs
from ..reconstruction import reconstruct_with
from ..keys import detection_keys, generation_keys, profile_seeds, random_keys, reference_seeds
from ..key_sets import KeySet, STRATEGIES, to_uint8
from ..models.lora import LoraModel
from ..outdir import check_apart, check_output_folder, staged_output
from . import null, statistics
from .budget import fisher_split, shadow_key_count, shadow_units
from .population import describe_null
from .suspect import (LOCAL, CallableSuspect, ModelSpec, PipelineSuspect, Suspect, check_sd_model, check_sd_pipeline, drawing,
                      load_sd_pipeline, model_folders, model_identity)


@dataclass(kw_only=True)
class Verdict:
    """What ``verify`` decided and on what evidence (``to_json`` is the machine-readable report).
    Built by keyword only: twenty fields in a row are too easy to swap."""

    verdict: str                      # "infringing" | "not shown"
    p_value: float
    null: str                         # which null gave p_value (see :mod:`.null`)
    target_fpr: float
    conf: float
    delta0: float
    delta0_from: str
    n_keys: int
    key_hits: int
    queries: int
    discriminator_score: float | None
    empirical_p_value: float | None
    mean_rd: float                    # the suspect's mean distance over the keys (the shadow null's statistic)
    innocent_mean_rds: list[float] | None  # the same statistic for each innocent shadow
    settings: dict
    warning: str
    # The test statistic (:mod:`.statistics`): higher = more like an infringer. ``score`` is the
    # suspect's, ``innocent_scores`` each innocent shadow's (each scored against the others, as the
    # suspect is against all of them), ``effect`` the suspect's distance from their mean in units of
    # their standard deviation. ``rank_p_value`` is the assumption-free rank among them (it cannot go
    # below 1 / (shadows + 1)); ``parametric_p_value`` a Student-t prediction from their mean and
    # spread; ``p_from`` says which of the two is ``p_value`` ("rank" when the shadows are enough
    # for the target rate, else "parametric"); ``normality_p`` is a Shapiro-Wilk test of the
    # shadows' scores (small: the parametric p is doubtful). None/empty under the controls null.
    statistic: str = "mean_rd"
    statistic_label: str = "mean reconstruction distance over the keys"
    score: float | None = None
    innocent_scores: list[float] | None = None
    effect: float | None = None
    rank_p_value: float | None = None
    parametric_p_value: float | None = None
    p_from: str = "parametric"
    normality_p: float | None = None
    # How the innocent null was made beside the suspect (``population.NullPopulation.summary()``):
    # count, bases and methods of the innocent shadows, what is known of the suspect's, and any
    # mismatch the owner accepted (``allow_mismatched_null``).
    null_population: dict = field(default_factory=dict)
    keys: pd.DataFrame = field(repr=False)          # per key: prompt, rd, best seed
    null_rds: np.ndarray = field(repr=False)        # RDs of the null (shadows' keys, or the suspect's controls)
    reconstructions: np.ndarray = field(repr=False)  # the suspect's best image per key
    references: np.ndarray = field(repr=False)

    def to_json(self) -> dict:
        skip = {"keys", "null_rds", "reconstructions", "references"}
        out = {k: _finite_or_none(v) for k, v in asdict(self).items() if k not in skip}
        out["keys"] = self.keys.to_dict("records")
        return out


def _finite_or_none(value):
    """JSON has no NaN: a number that is not finite (e.g. the effect when the shadows' scores do
    not vary) is written as null."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


# --- what the steps pass on --------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class VerifySettings:
    """The run's settings, checked and resolved from the arguments and the profile before any model
    is read: every later step takes this one object instead of a dozen arguments."""

    profile: Profile
    alpha: float               # the target false-positive rate
    budget: int | None         # images the suspect may be asked, as given (None: no cap)
    n_keys: int | None         # keys asked for, as given (None: all, or the profile's when selecting)
    delta0: float | None       # the threshold given, if any
    query_seeds: list[int]     # every suspect, shadow and control is asked at these
    distance: str
    generation: GenerationConfig
    out: Path
    cache_dir: Path
    progress: bool
    statistic: statistics.Statistic = statistics.STATISTICS["mean_rd"]  # what the shadows' null compares
    stat_settings: statistics.StatisticSettings = statistics.StatisticSettings()
    n_controls: int = 30                 # control pairs asked of every model when the statistic needs them

    @property
    def n_seeds(self) -> int:
        return len(self.query_seeds)


@dataclass(frozen=True, kw_only=True)
class Models:
    """The run's models as given, checked (the source's folder resolved): who is asked what."""

    source: Path
    suspect: ModelSpec
    suspect_name: str | None             # a callable suspect's cache name (default: its module and name)
    innocent_shadows: tuple[ModelSpec, ...]
    infringing_shadows: tuple[ModelSpec, ...]
    controls: str | Path | None          # an image folder of control pairs


@dataclass(frozen=True)
class Keys:
    """The owner's key set and the seeds its references were made with (None: real images)."""

    key_set: KeySet
    made_with: list[int] | None


@dataclass(frozen=True)
class ShadowRDs:
    """Each shadow's reconstruction distance to every key: [shadows, keys] per kind, in the order given."""

    innocent: np.ndarray
    infringing: np.ndarray
    innocent_controls: np.ndarray | None = None    # [shadows, controls], when the statistic asks controls
    infringing_controls: np.ndarray | None = None


@dataclass(frozen=True)
class Threshold:
    """delta0 and what chose it (given, calibrated on the shadows, or the profile's)."""

    delta0: float
    chosen_by: str


@dataclass(frozen=True, kw_only=True)
class InnocentNull:
    """What innocent models look like, the suspect's yardstick: the innocent shadows' distances
    (two or more), else control pairs of the source's domain to ask the suspect itself."""

    innocent_rd: np.ndarray                # [innocent shadows, keys]
    controls: ImageFolder | None = None    # the control pairs (None: the shadows are the null)
    control_rows: list[int] = field(default_factory=list)  # the folder's distinct pairs, in order
    infringing_rd: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))  # the statistic's references
    shadow_controls: np.ndarray | None = None       # [innocent shadows, controls] (shadow null, control statistic)
    infringing_controls: np.ndarray | None = None
    control_keys: KeySet | None = None              # the control pairs every model is asked (shadow null)

    @property
    def from_shadows(self) -> bool:
        return self.controls is None


@dataclass(frozen=True, kw_only=True)
class QueryPlan:
    """How many keys and controls the suspect is asked, each at every query seed."""

    n_keys: int
    n_controls: int
    n_seeds: int

    @property
    def queries(self) -> int:
        return (self.n_keys + self.n_controls) * self.n_seeds


@dataclass(frozen=True, kw_only=True)
class SuspectAnswers:
    """The suspect's answers to the planned queries."""

    keys: KeySet                   # the keys asked: the first plan.n_keys, best first
    rd: np.ndarray                 # per key asked: the distance (min over the query seeds)
    best_seed: np.ndarray          # per key asked: the seed of that minimum
    reconstructions: np.ndarray    # per key asked: the suspect's closest image
    control_rd: np.ndarray | None  # per control asked (controls null only)


@dataclass(frozen=True, kw_only=True)
class NullTest:
    """The suspect against the innocent null: the p-value and what it was computed on."""

    name: str
    p_value: float
    null_rds: np.ndarray                        # the null's distances (shadows' keys, or the suspect's controls)
    empirical_p_value: float | None = None      # the shadows' assumption-free rank (shadow null only)
    innocent_mean_rds: np.ndarray | None = None  # each innocent shadow's mean distance (shadow null only)
    conformal: statistics.ConformalTest | None = None  # the statistic against the shadows' (shadow null only)
    p_from: str = "fisher"                      # "rank" | "parametric" (shadow null) | "fisher" (controls)


@dataclass(frozen=True, kw_only=True)
class Decision:
    """What the suspect's distances decide at the target false-positive rate."""

    verdict: str                      # "infringing" | "not shown"
    test: NullTest
    mean_rd: float                    # the suspect's statistic: mean distance over the keys asked
    conf: float
    key_hits: int
    discriminator_score: float | None
    warning: str


# --- 1. the inputs --------------------------------------------------------------------------------

def check_settings(*, target_fpr: float | None, budget: int | None, n_keys: int | None, delta0: float | None,
                   profile: str | Profile, out: str | Path, cache_dir: str | Path | None, progress: bool,
                   statistic: str | None = None) -> VerifySettings:
    """Nonsense numbers refused with the fix, and the profile resolved: first, because they cost
    nothing to check and a run that would fail on them should load no model."""
    if n_keys is not None and int(n_keys) < 1:
        raise InputError(f"--n-keys {n_keys}: ask for at least 1 key sample.")
    if delta0 is not None and not (math.isfinite(float(delta0)) and float(delta0) > 0):
        raise InputError(f"--delta0 {delta0}: the distance threshold must be a positive number (e.g. 0.15).")
    if budget is not None and int(budget) < 1:
        raise InputError(f"--budget {budget}: the query budget must be a positive number of images.")
    P = profile if isinstance(profile, Profile) else load_profile(profile)
    alpha = _check_fpr(P.verify.target_fpr if target_fpr is None else target_fpr)  # one default: the profile's
    name = statistic or P.verify.statistic
    if name not in statistics.STATISTICS:
        raise InputError(f"--statistic {name!r}: choose one of {', '.join(statistics.STATISTICS)}.")
    _, query_seeds = profile_seeds(P)
    out = Path(out)
    return VerifySettings(profile=P, alpha=alpha, budget=budget, n_keys=n_keys,
                       delta0=None if delta0 is None else float(delta0), query_seeds=query_seeds,
                       distance=P.attribution.distance, generation=P.generation, out=out,
                       cache_dir=Path(cache_dir) if cache_dir is not None else out / "cache", progress=progress,
                       statistic=statistics.get_statistic(name), stat_settings=statistic_settings(P),
                       n_controls=P.verify.n_controls)


def statistic_settings(P: Profile, delta0: float | None = None) -> statistics.StatisticSettings:
    """The statistics' settings from the profile (its ``verify`` and ``attribution`` sections)."""
    grid = P.attribution.delta0_grid
    return statistics.StatisticSettings(k_smallest=P.verify.k_smallest, variance_prior=P.verify.variance_prior,
                                        delta0=P.attribution.delta0 if delta0 is None else delta0,
                                        delta0_grid=(grid.start, grid.stop, grid.step),
                                        classifier=P.statistical.classifier, seed=P.run.seed)


def check_models(*, source: str | Path, suspect: ModelSpec, suspect_name: str | None,
                 innocent_shadows: Sequence[ModelSpec], infringing_shadows: Sequence[ModelSpec],
                 controls: str | Path | None, out: Path, statistic: statistics.Statistic | None = None,
                 steps: int | None = None) -> Models:
    """Every model folder checked (a safe Stable-Diffusion pipeline, apart from ``out``, none given
    twice) and an innocent null available, before anything is loaded or written: a bad suspect or
    a missing null then costs no shadow query."""
    source = check_sd_pipeline(source, "source model", steps=steps)
    given = [("suspect", suspect)] + [("innocent shadow", m) for m in innocent_shadows] + \
        [("infringing shadow", m) for m in infringing_shadows]
    checked = [(role, check_sd_model(model, role, steps)) for role, model in given if isinstance(model, LOCAL)]
    check_apart(out, [("source model", source), ("controls", controls),
                      *[(f"{role} folder", folder) for role, model in checked for folder in model_folders(model)]])
    checked = [model for _, model in checked]
    _check_each_given_once([model_identity(model) for model in checked])
    _check_null_available(len(innocent_shadows), controls)
    if statistic is not None and statistic.needs_controls and len(innocent_shadows) >= 2 and controls is None:
        raise InputError(f"the {statistic.name} statistic compares each model's keys with control pairs: pass --controls "
                         "(pairs of the source's domain it never trained on), or choose another --statistic.")
    return Models(source=source, suspect=suspect, suspect_name=suspect_name, innocent_shadows=tuple(innocent_shadows),
                  infringing_shadows=tuple(infringing_shadows), controls=controls)


def _check_each_given_once(resolved: Sequence[str]) -> None:
    """A shadow given twice would shrink the null's spread; a suspect among its shadows would be its own null."""
    repeated = sorted({m for m in resolved if resolved.count(m) > 1})
    if repeated:
        raise InputError(f"the model folder {repeated[0]} is given more than once (as suspect or shadow); each shadow "
                         "must be a different model, and the suspect cannot be its own shadow.")


def _check_null_available(n_innocent_shadows: int, controls: str | Path | None) -> None:
    """Without an innocent null there is no false-positive rate to state."""
    if n_innocent_shadows < 2 and controls is None:
        raise InputError(f"no innocent null: {n_innocent_shadows} innocent shadow model(s) given, and the null needs at "
                         "least 2 (--innocent-shadow, fine-tuned by you on data the source never generated) to measure "
                         "how innocent models differ; or pass --controls (pairs of the source's domain it never trained on).")


def check_keys(keys: str | Path | KeySet | None, key_data: str | Path | None, strategy: str,
               base: str | Path | None, source: Path, run: VerifySettings, keys_out: Path | None = None) -> Keys:
    """The owner's key set (given, or selected now into ``keys_out/keys``: the run's staging folder,
    ``out`` by default), made with seeds apart from the query seeds and holding at least one key:
    settled before any query, since a suspect asked at a reference's own seed would share its noise
    rather than its memory."""
    key_set = _resolve_keys(keys, key_data, strategy, run.n_keys, source, Path(base) if base else None, run.profile,
                            run.out if keys_out is None else keys_out, run.progress, run.cache_dir)
    made_with = check_key_seeds(key_set, run.query_seeds)
    if len(key_set) == 0:
        raise InputError("the key set holds no key samples: select keys first (--key-data with --strategy).")
    return Keys(key_set, made_with)


def open_suspect(models: Models, key_set: KeySet, run: VerifySettings) -> Suspect:
    """The suspect, loaded (a pipeline folder) or wrapped (a callable), and a pipeline's image size
    checked against the keys': a mismatch is refused before the shadows cost a query."""
    suspect = _suspect(models.suspect, run, "suspect", models.suspect_name)
    if isinstance(suspect, PipelineSuspect):
        suspect.check_size(key_set.references.shape[1])
    return suspect


# --- 2. the shadows --------------------------------------------------------------------------------

def query_shadows(models: Models, key_set: KeySet, run: VerifySettings, controls: KeySet | None = None) -> ShadowRDs:
    """Every shadow asked every key (and, when the statistic needs them, the control pairs), before
    the suspect: the shadows fix delta0 and the null (and may refuse the run) before the suspect
    costs a single query."""
    innocent = query_kind("innocent", models.innocent_shadows, key_set, run)
    infringing = query_kind("infringing", models.infringing_shadows, key_set, run)
    if controls is None:
        return ShadowRDs(innocent, infringing)
    return ShadowRDs(innocent, infringing, query_kind("innocent", models.innocent_shadows, controls, run),
                     query_kind("infringing", models.infringing_shadows, controls, run))


def read_controls(models: Models, key_set: KeySet, run: VerifySettings) -> KeySet | None:
    """The control pairs every model is asked when the innocent shadows' statistic compares keys
    with controls (None otherwise; the Fisher null reads its own in :func:`build_null`)."""
    if not (run.statistic.needs_controls and len(models.innocent_shadows) >= 2):
        return None
    return control_key_set(models.controls, key_set.references.shape[1], run.n_controls)


def control_key_set(controls: str | Path, size: int, n_controls: int) -> KeySet:
    """The first ``n_controls`` distinct pairs of an image folder of control pairs (pairs of the
    source's domain it never trained on), as a key set: prompts and reference images."""
    folder = read_imagefolder(controls, size=size)
    rows = folder.distinct_indices()[:n_controls]
    return KeySet(strategy="controls", prompts=[folder.records[i]["text"] for i in rows],
                  references=to_uint8(folder.load_images(rows=rows)), indices=rows, scores=np.full(len(rows), np.nan))


def query_kind(kind: str, shadows: Sequence[ModelSpec], key_set: KeySet, run: VerifySettings) -> np.ndarray:
    """[shadows, keys]: the distances of one kind of shadow, each shadow checked for finite values.

    Shadow folders are independent jobs of the profile's executor: on Ray each is a task (a GPU
    each on a cluster); locally they run one after another in this process, because a spawned
    worker's start (seconds) costs more than a shadow whose images the cache already holds, which
    is every shadow of stage 08 after its first verdict. A callable shadow runs here."""
    roles = [f"{kind} shadow {_name(shadow)}" for shadow in shadows]
    rows: list[np.ndarray | None] = [None] * len(shadows)
    executor = executor_for(run.profile.run)
    if executor.engine == "ray":
        folders = [i for i, shadow in enumerate(shadows) if isinstance(shadow, LOCAL)]
        jobs = [{"shadow": shadows[i] if isinstance(shadows[i], LoraModel) else str(shadows[i]), "role": roles[i],
                 "key_set": key_set, "run": run} for i in folders]
        answers = run_jobs(shadow_distances, jobs, threads=run.profile.run.threads_per_job,
                           executor=executor)
        for i, distances in zip(folders, answers):
            rows[i] = distances
    for i, shadow in enumerate(shadows):
        if rows[i] is None:
            rows[i] = shadow_distances(shadow, roles[i], key_set, run)
    return np.array(rows).reshape(len(rows), len(key_set))


def shadow_distances(shadow: ModelSpec, role: str, key_set: KeySet, run: VerifySettings) -> np.ndarray:
    """One shadow's distance to every key (min over the query seeds), checked for finite values:
    one job of :func:`query_kind`."""
    model = _suspect(shadow, run, role)
    distances = _rd(model, key_set.prompts, key_set.references, run.query_seeds, run.distance, run.progress)[0]
    return _check_distances(distances, role)


# --- 3. the null ------------------------------------------------------------------------------------

def choose_delta0(shadows: ShadowRDs, run: VerifySettings) -> Threshold:
    """delta0 as given; else calibrated on the shadows when both kinds are there (the owner's own
    models, never the suspect: the threshold is fixed before the suspect is looked at); else the
    profile's."""
    if run.delta0 is not None:
        return Threshold(run.delta0, "given")
    if len(shadows.innocent) and len(shadows.infringing):
        delta0, _ = calibrate_delta0(_in_name_order(shadows.infringing), _in_name_order(shadows.innocent),
                                     delta_grid(run.profile.attribution.delta0_grid.as_dict()))
        return Threshold(delta0, "calibrated on the shadow models")
    return Threshold(run.profile.attribution.delta0, f"profile {run.profile.name}")


def _in_name_order(rd: np.ndarray) -> np.ndarray:
    """The shadows in the order earlier versions averaged their conf in (their table names
    'innocent0', 'innocent1', 'innocent10', ... sorted as text): the mean over shadows is a
    floating-point sum, and with 11 or more of a kind another order can round a tied gap
    differently and pick another delta0."""
    return rd[sorted(range(len(rd)), key=str)]


def build_null(shadows: ShadowRDs, controls: str | Path | None, key_set: KeySet,
               control_keys: KeySet | None = None) -> InnocentNull:
    """The innocent null: the innocent shadows when there are two or more (their spread is the
    null's), else the control pairs, read now so that a bad folder costs no suspect query. Two
    innocent shadows that come exactly as close to every key are one model given twice: refused,
    as a copy would shrink the spread and the p-value with it."""
    innocent = shadows.innocent
    if len(innocent) and len(np.unique(innocent, axis=0)) < len(innocent):
        raise InputError("two innocent shadows come exactly as close to every key: they look like one model given "
                         "twice (a copy, or the same callable); pass different innocent shadows.")
    if len(innocent) >= 2 or controls is None:
        return InnocentNull(innocent_rd=innocent, infringing_rd=shadows.infringing,
                            shadow_controls=shadows.innocent_controls, infringing_controls=shadows.infringing_controls,
                            control_keys=control_keys)
    folder = read_imagefolder(controls, size=key_set.references.shape[1])
    return InnocentNull(innocent_rd=innocent, controls=folder, control_rows=folder.distinct_indices())


# --- 4. the budget ----------------------------------------------------------------------------------

def plan_budget(innocent_null: InnocentNull, n_keys: int, run: VerifySettings) -> QueryPlan:
    """How many keys (and controls) to ask, fixed before the suspect is asked anything; a budget or
    a null that cannot reach the target false-positive rate is refused here, with what would do."""
    if innocent_null.from_shadows:
        n_ctrl = 0 if innocent_null.shadow_controls is None else innocent_null.shadow_controls.shape[1]
        if run.budget is not None and n_ctrl:
            n_ctrl = min(n_ctrl, int(run.budget) // run.n_seeds // 2)
        n_use = shadow_key_count(innocent_null.innocent_rd, run.alpha, n_keys, run.n_seeds, run.budget,
                                 statistic=run.statistic, settings=run.stat_settings, n_controls=n_ctrl,
                                 infringing=innocent_null.infringing_rd, innocent_controls=innocent_null.shadow_controls,
                                 infringing_controls=innocent_null.infringing_controls)
        return QueryPlan(n_keys=n_use, n_controls=n_ctrl, n_seeds=run.n_seeds)
    n_use, m_use = fisher_split(run.alpha, n_keys, len(innocent_null.control_rows), run.n_seeds, run.budget)
    return QueryPlan(n_keys=n_use, n_controls=m_use, n_seeds=run.n_seeds)


# --- 5. the suspect ---------------------------------------------------------------------------------

def query_suspect(suspect: Suspect, key_set: KeySet, innocent_null: InnocentNull, plan: QueryPlan,
                  run: VerifySettings) -> SuspectAnswers:
    """The suspect asked the planned keys, then (controls null) the planned controls: the one step
    that spends the suspect's queries, after every refusal."""
    keys_used = key_set.subset(plan.n_keys)
    rd, best_seed, reconstructions = _rd(suspect, keys_used.prompts, keys_used.references, run.query_seeds,
                                         run.distance, run.progress)
    _check_distances(rd, "suspect")
    if innocent_null.from_shadows:
        control_rd = None
        if plan.n_controls:
            asked = innocent_null.control_keys.subset(plan.n_controls)
            control_rd = _check_distances(_rd(suspect, asked.prompts, asked.references, run.query_seeds, run.distance,
                                              run.progress)[0], "suspect (control pairs)")
    else:
        control_rd = _control_rd(suspect, innocent_null, plan.n_controls, run)
    return SuspectAnswers(keys=keys_used, rd=rd, best_seed=best_seed, reconstructions=reconstructions,
                          control_rd=control_rd)


def _control_rd(suspect: Suspect, innocent_null: InnocentNull, n_controls: int, run: VerifySettings) -> np.ndarray:
    """The suspect's distances to the first ``n_controls`` distinct control pairs."""
    rows, folder = innocent_null.control_rows[:n_controls], innocent_null.controls
    prompts = [folder.records[i]["text"] for i in rows]
    return _rd(suspect, prompts, to_uint8(folder.load_images(rows=rows)), run.query_seeds, run.distance, run.progress)[0]


# --- 6. the decision --------------------------------------------------------------------------------

def decide(answers: SuspectAnswers, innocent_null: InnocentNull, threshold: Threshold, shadows: ShadowRDs,
           run: VerifySettings) -> Decision:
    """The suspect's distances against the innocent null: a p-value, the verdict at the target
    false-positive rate, conf and hits at delta0, the discriminator's score and any warning."""
    rd, delta0 = answers.rd, threshold.delta0
    test = (shadow_null_test(answers, innocent_null, run) if innocent_null.from_shadows
            else controls_null_test(rd, answers.control_rd, delta0))
    verdict = "infringing" if test.p_value <= run.alpha else "not shown"
    return Decision(verdict=verdict, test=test, mean_rd=null.model_statistic(rd), conf=conf(rd, delta0),
                    key_hits=int((rd < delta0).sum()),
                    discriminator_score=discriminator_score(shadows, rd, delta0, run.profile),
                    warning=warning_for(verdict, test, run.alpha, innocent_null.from_shadows))


def shadow_null_test(answers: SuspectAnswers, innocent_null: InnocentNull, run: VerifySettings) -> NullTest:
    """The suspect's statistic over the keys (and controls) asked against each innocent shadow's,
    calibrated with the model as the unit (:mod:`.statistics`): the rank p when the shadows are
    enough for the target rate, else the t prediction."""
    n_keys, n_ctrl = len(answers.rd), 0 if answers.control_rd is None else len(answers.control_rd)
    units = shadow_units(innocent_null.innocent_rd, innocent_null.shadow_controls, n_keys, n_ctrl)
    refs = shadow_units(innocent_null.infringing_rd, innocent_null.infringing_controls, n_keys, n_ctrl)
    suspect = statistics.Unit(answers.rd, answers.control_rd)
    try:
        test = statistics.conformal_test(run.statistic, suspect, units, refs, run.stat_settings)
    except ValueError as err:
        raise InputError(f"the {run.statistic.name} statistic cannot be computed on these models: {err}.") from err
    p_value, how = statistics.primary_p(test.rank_p, test.parametric_p, len(units), run.alpha)
    innocent_means = innocent_null.innocent_rd[:, :n_keys].mean(axis=1)
    way = "rank among them" if how == "rank" else "t prediction from their spread"
    return NullTest(name=f"innocent shadows ({len(units)}; {run.statistic.name}, {way})", p_value=p_value,
                    null_rds=innocent_null.innocent_rd[:, :n_keys].ravel(), empirical_p_value=test.rank_p,
                    innocent_mean_rds=innocent_means, conformal=test, p_from=how)


def controls_null_test(rd: np.ndarray, control_rd: np.ndarray, delta0: float) -> NullTest:
    """Keys against controls hit below delta0 by the suspect itself (one-sided Fisher exact test,
    see :mod:`.null`): comparing the suspect with itself cancels how close it comes to everything."""
    p_value = null.fisher_pvalue(int((rd < delta0).sum()), len(rd), int((control_rd < delta0).sum()), len(control_rd))
    return NullTest(name="control samples (Fisher exact)", p_value=p_value, null_rds=control_rd)


def discriminator_score(shadows: ShadowRDs, rd: np.ndarray, delta0: float, profile: Profile) -> float | None:
    """The statistical level's score of the suspect (higher = more likely infringing): a classifier
    fitted on the shadows' features over the keys the suspect was asked; None without shadows of
    both kinds to learn from."""
    if not (len(shadows.innocent) and len(shadows.infringing)):
        return None
    n_keys = len(rd)
    x_shadows = features_from_rd(np.vstack([shadows.innocent[:, :n_keys], shadows.infringing[:, :n_keys]]), delta0)
    labels = np.repeat([0, 1], [len(shadows.innocent), len(shadows.infringing)])
    score, _, _ = fit_score(profile.statistical.classifier, x_shadows, labels,
                            features_from_rd([rd], delta0), profile.run.seed)
    return float(score[0])


def warning_for(verdict: str, test: NullTest, alpha: float, from_shadows: bool) -> str:
    """What a reader must know before relying on an infringing verdict: the assumption it rests on,
    whenever the data alone would not support it (never for 'not shown')."""
    if verdict != "infringing":
        return ""
    if not from_shadows:
        return ("The controls null assumes that a model which did not inherit the source's outputs reconstructs the "
                "key samples no better than the control pairs; key samples are the pairs the source reproduces best, "
                "which can be easier for any model of the domain (notebook 08 measures how often this null calls "
                "innocent models infringing). Confirm with innocent shadow models (at least 2) before relying on "
                "this verdict.")
    empirical, n_innocent = test.empirical_p_value, len(test.innocent_mean_rds)
    if empirical <= alpha:  # the rank alone supports it (always so when the rank is the primary p)
        return ""
    doubt = ""
    if test.conformal is not None and test.conformal.normality_p is not None and test.conformal.normality_p < 0.05:
        doubt = (f" The shadows' scores do not look normally spread (Shapiro-Wilk p {test.conformal.normality_p:.2g}), "
                 "so that assumption is doubtful here.")
    closer = int(round(empirical * (n_innocent + 1))) - 1
    return (f"The verdict rests on the null's assumption that innocent models' statistic is normally spread: "
            f"{closer} of {n_innocent} innocent shadows score at least as high as the suspect, and their rank "
            f"alone cannot support a {alpha:g} false-positive rate (rank p {empirical:.2g}).{doubt} Add innocent "
            f"shadows (at least {statistics.shadows_needed(alpha)} for a test with no assumption at this rate) before "
            "relying on this verdict.")


# --- 7. the report ----------------------------------------------------------------------------------

def run_record(run: VerifySettings, models: Models, keys: Keys, suspect: Suspect, plan: QueryPlan,
               innocent_null: InnocentNull) -> dict:
    """The exact settings of the run, for the report: what someone needs to re-run and check it."""
    return {"source": str(models.source), "suspect": getattr(suspect, "name", str(models.suspect)),
            "strategy": keys.key_set.strategy, "profile": run.profile.name, "key_seeds": keys.made_with,
            "query_seeds": run.query_seeds, "distance": run.distance,
            "generation": run.generation.key(),
            "innocent_shadows": [_name(p) for p in models.innocent_shadows],
            "infringing_shadows": [_name(p) for p in models.infringing_shadows],
            "controls": None if models.controls is None or not plan.n_controls else str(models.controls),
            "n_controls": plan.n_controls, "budget": run.budget, "statistic": run.statistic.name,
            "statistic_settings": asdict(run.stat_settings)}


def assemble_verdict(decision: Decision, answers: SuspectAnswers, threshold: Threshold, plan: QueryPlan,
                     run: VerifySettings, settings: dict, population: dict | None = None) -> Verdict:
    """The Verdict: the decision with the evidence behind it (per-key table, the null's distances,
    the suspect's closest images beside the references)."""
    test = decision.test
    table = pd.DataFrame({"rank": range(plan.n_keys), "prompt": answers.keys.prompts, "rd": answers.rd,
                          "best_seed": answers.best_seed, "hit": answers.rd < threshold.delta0})
    innocent_means = None if test.innocent_mean_rds is None else [float(x) for x in test.innocent_mean_rds]
    return Verdict(verdict=decision.verdict, p_value=float(test.p_value), null=test.name, target_fpr=run.alpha,
                   conf=decision.conf, delta0=threshold.delta0, delta0_from=threshold.chosen_by, n_keys=plan.n_keys,
                   key_hits=decision.key_hits, queries=plan.queries, discriminator_score=decision.discriminator_score,
                   empirical_p_value=test.empirical_p_value, mean_rd=decision.mean_rd, innocent_mean_rds=innocent_means,
                   settings=settings, warning=decision.warning, keys=table, **_statistic_fields(test, run),
                   null_population=population or {},
                   null_rds=np.asarray(test.null_rds, dtype=float), reconstructions=answers.reconstructions,
                   references=answers.keys.references)


def _statistic_fields(test: NullTest, run: VerifySettings) -> dict:
    """The Verdict's fields on the test statistic (empty under the controls null)."""
    c = test.conformal
    if c is None:
        return {"statistic": "fisher", "statistic_label": "key hits against control hits below delta0",
                "p_from": test.p_from}
    return {"statistic": run.statistic.name, "statistic_label": run.statistic.label, "score": float(c.score),
            "innocent_scores": [float(x) for x in c.innocent_scores], "effect": float(c.effect),
            "rank_p_value": float(c.rank_p), "parametric_p_value": float(c.parametric_p), "p_from": test.p_from,
            "normality_p": c.normality_p}


# --- the tool ---------------------------------------------------------------------------------------

def verify(source: str | Path, suspect: str | Path | Callable, keys: str | Path | KeySet | None = None,
           key_data: str | Path | None = None, strategy: str = "generation", base: str | Path | None = None,
           innocent_shadows: Sequence[str | Path | Callable] = (), infringing_shadows: Sequence[str | Path | Callable] = (),
           controls: str | Path | None = None, target_fpr: float | None = None, budget: int | None = None,
           n_keys: int | None = None, delta0: float | None = None, profile: str | Profile = "tiny",
           out: str | Path = "verify_report", progress: bool = True, cache_dir: str | Path | None = None,
           suspect_name: str | None = None, statistic: str | None = None,
           allow_mismatched_null: bool = False) -> Verdict:
    """Is ``suspect`` fine-tuned on ``source``'s outputs? Query it with the owner's key samples and
    decide at ``target_fpr`` (default: the profile's ``verify.target_fpr``) against the innocent null
    (innocent shadow models, else controls).

    ``budget`` caps the images asked of the suspect; a budget that cannot reach ``target_fpr`` is
    refused before any query, with the smallest budget that would do. Generations are cached in
    ``cache_dir`` (default ``out/cache``; the pipeline's own cache makes re-checks free); a callable
    suspect's images are cached under ``suspect_name`` (default: its module and name), so give two
    different callables different names.

    With innocent shadows (two or more) the p-value compares the suspect's mean distance over the
    keys with theirs and does not depend on delta0; delta0 (calibrated on the shadows when both
    kinds are given) sets conf, the hits and the discriminator's features. With controls only, the
    Fisher test counts hits below delta0. The report says which null was used."""
    run = check_settings(target_fpr=target_fpr, budget=budget, n_keys=n_keys, delta0=delta0, profile=profile, out=out,
                         cache_dir=cache_dir, progress=progress, statistic=statistic)
    models = check_models(source=source, suspect=suspect, suspect_name=suspect_name, innocent_shadows=innocent_shadows,
                          infringing_shadows=infringing_shadows, controls=controls, out=run.out, statistic=run.statistic,
                          steps=run.generation.steps)
    check_output_folder(run.out, "verify", [("key set", None if isinstance(keys, KeySet) else keys),
                                            ("key data", key_data), ("base", base)])
    population = describe_null(models.suspect, models.innocent_shadows, allow_mismatched_null)
    # the first write, once every check that costs nothing has passed: into a folder beside --out,
    # moved into place only if the run succeeds (a refused run leaves --out as it was)
    with staged_output(run.out, "verify") as stage:
        if cache_dir is None and not run.out.is_dir():  # a new --out: its cache is built with it
            run = replace(run, cache_dir=stage / "cache")
        return _run_verify(run, models, population, keys, key_data, strategy, base, stage)


def _run_verify(run: VerifySettings, models: Models, population, keys, key_data, strategy: str, base,
                stage: Path) -> Verdict:
    """:func:`verify`'s steps after the free checks, writing only into ``stage`` (and the cache)."""
    owner_keys = check_keys(keys, key_data, strategy, base, models.source, run, keys_out=stage)
    suspect_model = open_suspect(models, owner_keys.key_set, run)
    n_shadows = len(models.innocent_shadows) + len(models.infringing_shadows)
    if n_shadows:
        _say(run, f"asking {n_shadows} shadow model(s) {len(owner_keys.key_set)} keys x {run.n_seeds} query seeds "
                  f"each: {n_shadows * len(owner_keys.key_set) * run.n_seeds} images of your own models")
    control_keys = read_controls(models, owner_keys.key_set, run)
    shadows = query_shadows(models, owner_keys.key_set, run, control_keys)
    threshold = choose_delta0(shadows, run)
    innocent_null = build_null(shadows, models.controls, owner_keys.key_set, control_keys)
    plan = plan_budget(innocent_null, len(owner_keys.key_set), run)
    controls = f" and {plan.n_controls} controls" if plan.n_controls else ""
    _say(run, f"the suspect will be asked {plan.queries} images: {plan.n_keys} keys{controls} x {plan.n_seeds} "
              "query seeds")
    answers = query_suspect(suspect_model, owner_keys.key_set, innocent_null, plan, run)
    decision = decide(answers, innocent_null, threshold, shadows, run)
    settings = run_record(run, models, owner_keys, suspect_model, plan, innocent_null)
    return assemble_verdict(decision, answers, threshold, plan, run, settings, population.summary())


def select_keys(source: str | Path, key_data: str | Path, strategy: str = "generation", n_keys: int | None = None,
                base: str | Path | None = None, profile: str | Profile = "tiny", out: str | Path | None = None,
                progress: bool = True, cache_dir: str | Path | None = None) -> KeySet:
    """Select the owner's key samples from the source's training pairs (an image folder) with one
    of the paper's strategies; saved to ``out/keys`` when ``out`` is given, for reuse with ``keys=``,
    the generations cached in ``cache_dir`` (default ``out/cache``).
    Made with the profile's ``attribution.key_seeds`` (recorded in the key set's meta), never the
    query seeds, so a suspect never starts from the noise a reference was drawn from."""
    if strategy not in STRATEGIES:
        raise InputError(f"--strategy {strategy!r}: choose one of {', '.join(STRATEGIES)}.")
    P = profile if isinstance(profile, Profile) else load_profile(profile)
    att = P.attribution
    (seeds, _), distance, cfg = profile_seeds(P), att.distance, P.generation
    cache_dir = cache_dir if cache_dir is not None else (Path(out) / "cache" if out is not None else None)
    cache = GenerationCache(cache_dir) if cache_dir is not None else None
    src = load_sd_pipeline(source, "source model", P.run.device, P.torch_dtype)
    data = read_imagefolder(key_data, size=src.image_size)
    keep = data.distinct_indices()
    prompts = [data.records[i]["text"] for i in keep]
    n = min(int(n_keys or att.n_keys), len(prompts))
    models = f"the source model {source}" + (f" or the base {base}" if base and strategy == "generation" else "")
    if strategy == "generation":
        base_components = load_sd_pipeline(base, "base", P.run.device, P.torch_dtype) if base else None
        with drawing("key selection", models):
            key_set = generation_keys(src, prompts, n, seeds, cfg, cache, distance, base=base_components,
                                      progress=progress)
    elif strategy == "detection":
        with drawing("key selection", models):
            key_set = detection_keys(src, prompts, data.load_images(rows=keep), n, seeds, cfg, cache, distance,
                                     progress=progress)
    else:
        key_set = random_keys(prompts, data.load_images(rows=keep), n, att.random_seed)
    if out is not None:
        key_set.save(Path(out) / "keys")
    return key_set


def _resolve_keys(keys, key_data, strategy: str, n_keys: int | None, source: Path, base: Path | None,
                  P: Profile, out: Path, progress: bool, cache_dir: Path | None = None) -> KeySet:
    """The owner's key set: given (a KeySet or its folder), or selected now from the training pairs."""
    if keys is None:
        if key_data is None:
            raise InputError("no key samples: pass --keys (a saved key set) or --key-data (the source's training "
                             "pairs as an image folder with metadata.jsonl) with --strategy.")
        return select_keys(source, key_data, strategy, n_keys, base, P, out, progress, cache_dir)
    if isinstance(keys, KeySet):
        key_set = keys
    else:
        if not Path(keys).is_dir():
            raise InputError(f"key samples: {keys} is not a folder; pass a key set written by KeySet.save "
                             "(or --key-data with the source's training pairs and --strategy).")
        key_set = KeySet.load(keys)
    return key_set.subset(min(n_keys, len(key_set))) if n_keys else key_set


def check_key_seeds(key_set: KeySet, query_seeds: Sequence[int]) -> list[int] | None:
    """The seeds the key set's references were made with, refused (before any query) when they
    overlap the query seeds or, for a strategy that generates with seeds, are not recorded: a
    suspect queried at a reference's own seed shares its initial noise, and part of its distance
    would be that noise rather than inherited memory."""
    made_with = reference_seeds(key_set)
    if made_with is None:
        if key_set.strategy == "random":
            return None  # real images drawn at random: no seed made them
        raise InputError(f"the {key_set.strategy} key set records no seeds (meta 'seeds' in its _keys.json), so it "
                         "cannot be shown to be made with seeds other than the query seeds; rebuild it with "
                         "genlineage (--key-data with --strategy), which records them.")
    check_seeds_apart(made_with, query_seeds, f"the {key_set.strategy} key set's ")
    return made_with


# --- shared helpers ---------------------------------------------------------------------------------

def _check_fpr(target_fpr: float) -> float:
    return check_level(target_fpr, "--target-fpr")


def _rd(suspect: Suspect, prompts: Sequence[str], references: np.ndarray, seeds: list[int], distance: str,
        progress: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Reconstruction distance (min over seeds) per pair, the best seed and the best image."""
    size = references.shape[1]
    rec = reconstruct_with(lambda p, s: suspect.generate(p, s, size, progress), prompts, references, seeds, distance)
    best = np.array([seeds.index(int(b)) for b in rec.best_seed], dtype=int)
    return rec.distance, rec.best_seed, rec.generations[np.arange(len(prompts)), best]


def _say(run: VerifySettings, message: str) -> None:
    """A line for the person waiting (stderr, so the verdict on stdout stays machine-readable)."""
    if run.progress:
        print(f"genlineage verify: {message}", file=sys.stderr, flush=True)


def _name(model) -> str:
    return str(model) if isinstance(model, LOCAL) else getattr(model, "__qualname__", type(model).__name__)


def _suspect(suspect, run: VerifySettings, role: str, name: str | None = None) -> Suspect:
    """A model to query: a pipeline folder (loaded on the profile's device, in its dtype), a callable
    (prompt, seed) -> image, or an object that already generates."""
    if isinstance(suspect, LOCAL):
        return PipelineSuspect(suspect, run.generation, run.cache_dir, role, run.profile.run.device, run.profile.torch_dtype)
    if callable(suspect):
        return CallableSuspect(suspect, run.cache_dir, name, role)
    if hasattr(suspect, "generate"):
        return suspect
    raise InputError(f"{role}: pass a pipeline folder or a callable (prompt, seed) -> image; got {type(suspect).__name__}.")


def _check_distances(rd: np.ndarray, role: str) -> np.ndarray:
    """Distances must be finite numbers; a NaN would silently turn into a 'not shown' verdict."""
    if not np.isfinite(rd).all():
        raise InputError(f"{role}: {int((~np.isfinite(rd)).sum())} reconstruction distances are not finite numbers; "
                         "the model (or distance) returned NaN or infinite values. Check its images.")
    return rd
