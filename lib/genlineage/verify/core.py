"""``verify``: one suspect, one calibrated verdict (the model owner's question).

The same library code as the notebooks: keys from :mod:`genlineage.keys`, reconstruction distance
from :mod:`genlineage.reconstruction`, conf, delta0 calibration and the discriminator from
:mod:`genlineage.conf` and :mod:`genlineage.discriminator`. What this adds is the decision
for a single model: a p-value against an innocent null (:mod:`.null`), a verdict at the owner's
target false-positive rate, and the evidence (:mod:`.report`).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from ..conf import calibrate_delta0, conf, delta_grid
from ..config import Profile, load_profile
from ..data.imagefolder import read_imagefolder
from ..discriminator import features, fit_score
from ..errors import InputError
from ..generation import GenerationCache, GenerationConfig
from ..reconstruction import reconstruct_with
from ..keys import (KeySet, check_seeds_apart, detection_keys, generation_keys, profile_seeds, random_keys,
                    reference_seeds, to_uint8)
from . import null
from .suspect import CallableSuspect, PipelineSuspect, Suspect, check_sd_pipeline, load_sd_pipeline

STRATEGIES = ("generation", "detection", "random")


@dataclass
class Verdict:
    """What ``verify`` decided and on what evidence (``to_json`` is the machine-readable report)."""

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
    keys: pd.DataFrame = field(repr=False)          # per key: prompt, rd, best seed
    null_rds: np.ndarray = field(repr=False)        # RDs of the null (shadows' keys, or the suspect's controls)
    reconstructions: np.ndarray = field(repr=False)  # the suspect's best image per key
    references: np.ndarray = field(repr=False)

    def to_json(self) -> dict:
        skip = {"keys", "null_rds", "reconstructions", "references"}
        out = {k: v for k, v in asdict(self).items() if k not in skip}
        out["keys"] = self.keys.to_dict("records")
        return out


def _check_fpr(target_fpr: float) -> float:
    if not 0 < float(target_fpr) < 1:
        raise InputError(f"target FPR {target_fpr} must lie strictly between 0 and 1 (e.g. 0.01 for 1%).")
    return float(target_fpr)


def select_keys(source: str | Path, key_data: str | Path, strategy: str = "generation", n_keys: int | None = None,
                base: str | Path | None = None, profile: str | Profile = "tiny", out: str | Path | None = None,
                progress: bool = True) -> KeySet:
    """Select the owner's key samples from the source's training pairs (an image folder) with one
    of the paper's strategies; saved to ``out/keys`` when ``out`` is given, for reuse with ``keys=``.
    Made with the profile's ``attribution.key_seeds`` (recorded in the key set's meta), never the
    query seeds, so a suspect never starts from the noise a reference was drawn from."""
    if strategy not in STRATEGIES:
        raise InputError(f"--strategy {strategy!r}: choose one of {', '.join(STRATEGIES)}.")
    P = profile if isinstance(profile, Profile) else load_profile(profile)
    att = P["attribution"]
    (seeds, _), distance = profile_seeds(P), att.get("distance", "l2")
    cfg = GenerationConfig.from_mapping(P["generation"])
    cache = GenerationCache(Path(out) / "cache") if out is not None else None
    src = load_sd_pipeline(source, "source model")
    data = read_imagefolder(key_data, size=src.image_size)
    keep = data.distinct_indices()
    prompts = [data.records[i]["text"] for i in keep]
    n = min(int(n_keys or att["n_keys"]), len(prompts))
    if strategy == "generation":
        base_components = load_sd_pipeline(base, "base") if base else None
        key_set = generation_keys(src, prompts, n, seeds, cfg, cache, distance, base=base_components, progress=progress)
    elif strategy == "detection":
        key_set = detection_keys(src, prompts, data.load_images()[keep], n, seeds, cfg, cache, distance, progress=progress)
    else:
        key_set = random_keys(prompts, data.load_images()[keep], n, int(att.get("random_seed", 0)))
    if out is not None:
        key_set.save(Path(out) / "keys")
    return key_set


def _resolve_keys(keys, key_data, strategy: str, n_keys: int | None, source: Path, base: Path | None,
                  P: Profile, out: Path, progress: bool) -> KeySet:
    """The owner's key set: given (a KeySet or its folder), or selected now from the training pairs."""
    if keys is None:
        if key_data is None:
            raise InputError("no key samples: pass --keys (a saved key set) or --key-data (the source's training "
                             "pairs as an image folder with metadata.jsonl) with --strategy.")
        return select_keys(source, key_data, strategy, n_keys, base, P, out, progress)
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


def _rd(suspect: Suspect, prompts: Sequence[str], references: np.ndarray, seeds: list[int], distance: str,
        progress: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Reconstruction distance (min over seeds) per pair, the best seed and the best image."""
    size = references.shape[1]
    rec = reconstruct_with(lambda p, s: suspect.generate(p, s, size, progress), prompts, references, seeds, distance)
    best = np.array([seeds.index(int(b)) for b in rec.best_seed], dtype=int)
    return rec.distance, rec.best_seed, rec.generations[np.arange(len(prompts)), best]


_PS_STRATEGY = "keys"  # the one strategy of a verify run, in the per-sample tables the library reads


def _per_sample(rds: dict, n: int) -> pd.DataFrame:
    """{(role, i): RDs} as the per-sample table that calibrate_delta0 and features read (first n keys)."""
    return pd.concat([pd.DataFrame({"model": f"{role}{i}", "strategy": _PS_STRATEGY, "rank": range(n), "rd": rd[:n]})
                      for (role, i), rd in rds.items()], ignore_index=True)


def _name(model) -> str:
    return str(model) if isinstance(model, (str, Path)) else getattr(model, "__qualname__", type(model).__name__)


def _suspect(suspect, cfg: GenerationConfig, cache_dir: Path, role: str, name: str | None = None) -> Suspect:
    if isinstance(suspect, (str, Path)):
        return PipelineSuspect(suspect, cfg, cache_dir, role)
    if callable(suspect):
        return CallableSuspect(suspect, cache_dir, name, role)
    if hasattr(suspect, "generate"):
        return suspect
    raise InputError(f"{role}: pass a pipeline folder or a callable (prompt, seed) -> image; got {type(suspect).__name__}.")


def _shadow_plan(innocent: np.ndarray, alpha: float, n_keys: int, n_seeds: int, budget: int | None) -> int:
    """How many keys to ask: every key the budget allows (fixed before looking at the shadows:
    choosing the count where the shadows happen to agree would shrink their spread and the p-value
    with it). Refused before any query of the suspect when even a perfect copy (distance 0) could
    not beat the shadows' null over those keys at alpha; the only other count a refusal suggests is
    all the keys, which does not depend on the shadows either."""
    def floor(n: int) -> float:
        stats = innocent[:, :n].mean(axis=1)
        return null.prediction_floor(stats) if np.ptp(stats) > 0 else 1.0

    cap = n_keys if budget is None else min(n_keys, int(budget) // n_seeds)
    if cap >= 1 and floor(cap) <= alpha:
        return cap
    if cap < n_keys and floor(n_keys) <= alpha:
        raise InputError(f"query budget {budget} is too small for a {alpha:g} false-positive rate against these shadows: "
                         f"all {n_keys} keys would do, a budget of {n_keys * n_seeds} ({n_keys} keys x {n_seeds} seeds).")
    stats = innocent[:, :max(cap, 1)].mean(axis=1)
    raise InputError(f"{len(innocent)} innocent shadows cannot support a {alpha:g} false-positive rate over {max(cap, 1)} "
                     f"keys: their mean distances ({', '.join(f'{x:.3f}' for x in stats)}) are too spread for even a "
                     f"perfect copy to stand out (smallest p-value {floor(max(cap, 1)):.2g}). Add innocent shadows, "
                     "or raise --target-fpr.")


def _check_distances(rd: np.ndarray, role: str) -> np.ndarray:
    """Distances must be finite numbers; a NaN would silently turn into a 'not shown' verdict."""
    if not np.isfinite(rd).all():
        raise InputError(f"{role}: {int((~np.isfinite(rd)).sum())} reconstruction distances are not finite numbers; "
                         "the model (or distance) returned NaN or infinite values. Check its images.")
    return rd


def _fisher_plan(alpha: float, n_keys: int, n_controls: int, n_seeds: int, budget: int | None) -> tuple[int, int]:
    """(keys, controls) to ask: all of both without a budget, else a split of the budget that still
    reaches alpha (keys first to half, leftover slots to whichever side has samples left)."""
    split = null.smallest_fisher_split(alpha, n_keys, n_controls)
    if split is None:
        raise InputError(f"{n_keys} keys and {n_controls} control samples cannot reach a {alpha:g} false-positive "
                         "rate (Fisher exact test); add keys or controls, or raise --target-fpr.")
    if budget is None:
        return n_keys, n_controls
    slots = int(budget) // n_seeds
    if slots < sum(split):
        raise InputError(f"query budget {budget} is too small for a {alpha:g} false-positive rate: the smallest that "
                         f"would do is {sum(split) * n_seeds} ({split[0]} keys + {split[1]} controls x {n_seeds} seeds).")
    n_use = min(n_keys, max(split[0], math.ceil(slots / 2)))
    m_use = min(n_controls, slots - n_use)
    n_use = min(n_keys, slots - m_use)
    if null.fisher_pvalue(n_use, n_use, 0, m_use) > alpha:
        return split
    return n_use, m_use


def verify(source: str | Path, suspect: str | Path | Callable, keys: str | Path | KeySet | None = None,
           key_data: str | Path | None = None, strategy: str = "generation", base: str | Path | None = None,
           innocent_shadows: Sequence[str | Path | Callable] = (), infringing_shadows: Sequence[str | Path | Callable] = (),
           controls: str | Path | None = None, target_fpr: float = 0.01, budget: int | None = None,
           n_keys: int | None = None, delta0: float | None = None, profile: str | Profile = "tiny",
           out: str | Path = "verify_report", progress: bool = True, cache_dir: str | Path | None = None,
           suspect_name: str | None = None) -> Verdict:
    """Is ``suspect`` fine-tuned on ``source``'s outputs? Query it with the owner's key samples and
    decide at ``target_fpr`` against the innocent null (innocent shadow models, else controls).

    ``budget`` caps the images asked of the suspect; a budget that cannot reach ``target_fpr`` is
    refused before any query, with the smallest budget that would do. Generations are cached in
    ``cache_dir`` (default ``out/cache``; the pipeline's own cache makes re-checks free); a callable
    suspect's images are cached under ``suspect_name`` (default: its module and name), so give two
    different callables different names.

    With innocent shadows (two or more) the p-value compares the suspect's mean distance over the
    keys with theirs and does not depend on delta0; delta0 (calibrated on the shadows when both
    kinds are given) sets conf, the hits and the discriminator's features. With controls only, the
    Fisher test counts hits below delta0. The report says which null was used."""
    alpha = _check_fpr(target_fpr)
    if n_keys is not None and int(n_keys) < 1:
        raise InputError(f"--n-keys {n_keys}: ask for at least 1 key sample.")
    if delta0 is not None and not (math.isfinite(float(delta0)) and float(delta0) > 0):
        raise InputError(f"--delta0 {delta0}: the distance threshold must be a positive number (e.g. 0.15).")
    if budget is not None and int(budget) < 1:
        raise InputError(f"--budget {budget}: the query budget must be a positive number of images.")
    P = profile if isinstance(profile, Profile) else load_profile(profile)
    att = P["attribution"]
    _, seeds = profile_seeds(P)  # query_seeds: every suspect, shadow and control is asked at these
    distance = att.get("distance", "l2")
    cfg = GenerationConfig.from_mapping(P["generation"])
    out = Path(out)
    cache_dir = Path(cache_dir) if cache_dir is not None else out / "cache"
    source = check_sd_pipeline(source, "source model")
    folders = [m for m in [suspect, *innocent_shadows, *infringing_shadows] if isinstance(m, (str, Path))]
    for path in folders:
        folder, where = Path(path).resolve(), out.resolve()
        if where == folder or folder in where.parents or where in folder.parents:
            raise InputError(f"--out {out} and the model folder {path} overlap; genlineage never writes into a "
                             "suspect's or shadow's folder. Pass an --out that neither holds nor lies in a model.")
    resolved = [str(Path(m).resolve()) for m in folders]
    repeated = sorted({m for m in resolved if resolved.count(m) > 1})
    if repeated:
        raise InputError(f"the model folder {repeated[0]} is given more than once (as suspect or shadow); each shadow "
                         "must be a different model, and the suspect cannot be its own shadow.")
    # Every model folder is checked before any work, so a bad suspect costs no shadow queries.
    if isinstance(suspect, (str, Path)):
        check_sd_pipeline(suspect, "suspect")
    for role, paths in (("innocent shadow", innocent_shadows), ("infringing shadow", infringing_shadows)):
        for path in paths:
            if isinstance(path, (str, Path)):
                check_sd_pipeline(path, role)
    if len(innocent_shadows) < 2 and controls is None:
        raise InputError(f"no innocent null: {len(innocent_shadows)} innocent shadow model(s) given, and the null needs at "
                         "least 2 (--innocent-shadow, fine-tuned by you on data the source never generated) to measure "
                         "how innocent models differ; or pass --controls (pairs of the source's domain it never trained on).")
    out.mkdir(parents=True, exist_ok=True)

    key_set = _resolve_keys(keys, key_data, strategy, n_keys, source, Path(base) if base else None, P, out, progress)
    key_seeds = check_key_seeds(key_set, seeds)
    N, S = len(key_set), len(seeds)
    if N == 0:
        raise InputError("the key set holds no key samples: select keys first (--key-data with --strategy).")
    suspect_model = _suspect(suspect, cfg, cache_dir, "suspect", suspect_name)
    if isinstance(suspect_model, PipelineSuspect):
        suspect_model.check_size(key_set.references.shape[1])

    # Shadows first: they fix delta0 and the null before the suspect costs a single query.
    shadow_rd = {}
    for role, paths in (("innocent", innocent_shadows), ("infringing", infringing_shadows)):
        for i, path in enumerate(paths):
            model = _suspect(path, cfg, cache_dir, f"{role} shadow {_name(path)}")
            shadow_rd[(role, i)] = _check_distances(
                _rd(model, key_set.prompts, key_set.references, seeds, distance, progress)[0], f"{role} shadow {_name(path)}")
    if delta0 is not None:
        d0, d0_from = float(delta0), "given"
    elif innocent_shadows and infringing_shadows:
        labels = pd.DataFrame([{"name": f"{role}{i}", "role": "shadow", "label": int(role == "infringing")}
                               for role, i in shadow_rd])
        d0, _ = calibrate_delta0(_per_sample(shadow_rd, N), labels, _PS_STRATEGY, N, delta_grid(att["delta0_grid"]))
        d0_from = "calibrated on the shadow models"
    else:
        d0, d0_from = float(att["delta0"]), f"profile {P.name}"

    innocent = np.array([rd for (role, _), rd in shadow_rd.items() if role == "innocent"])
    if len(innocent) and len(np.unique(innocent, axis=0)) < len(innocent):
        raise InputError("two innocent shadows come exactly as close to every key: they look like one model given "
                         "twice (a copy, or the same callable); pass different innocent shadows.")
    use_shadows = len(innocent) >= 2 or controls is None
    if use_shadows:
        n_use, m_use = _shadow_plan(innocent, alpha, N, S, budget), 0
    else:
        ctrl = read_imagefolder(controls, size=key_set.references.shape[1])
        keep = ctrl.distinct_indices()
        n_use, m_use = _fisher_plan(alpha, N, len(keep), S, budget)

    keys_used = key_set.subset(n_use)
    rd, best_seed, recon = _rd(suspect_model, keys_used.prompts, keys_used.references, seeds, distance, progress)
    _check_distances(rd, "suspect")
    hits = int((rd < d0).sum())
    statistic = null.model_statistic(rd)
    innocent_stats = None
    if use_shadows:
        innocent_stats = innocent[:, :n_use].mean(axis=1)
        p_value = null.prediction_pvalue(statistic, innocent_stats)
        null_name = f"innocent shadows ({len(innocent)}; t prediction on the mean distance)"
        null_rds = innocent[:, :n_use].ravel()
        empirical = null.empirical_pvalue(statistic, innocent_stats)
    else:
        c_idx = keep[:m_use]
        c_rd, _, _ = _rd(suspect_model, [ctrl.records[i]["text"] for i in c_idx], to_uint8(ctrl.load_images()[c_idx]), seeds,
                         distance, progress)
        p_value = null.fisher_pvalue(hits, n_use, int((c_rd < d0).sum()), m_use)
        null_name, null_rds, empirical = "control samples (Fisher exact)", c_rd, None

    disc = None
    if innocent_shadows and infringing_shadows:
        per_sample = _per_sample({**shadow_rd, ("suspect", ""): rd}, n_use)
        names = [f"{role}{i}" for role, i in shadow_rd]
        y = np.array([int(role == "infringing") for role, _ in shadow_rd])
        x_tr = features(per_sample, names, _PS_STRATEGY, n_use, d0)
        score, _, _ = fit_score(P["statistical"].get("classifier", "logistic"), x_tr, y,
                                features(per_sample, ["suspect"], _PS_STRATEGY, n_use, d0), int(P["seed"]))
        disc = float(score[0])

    table = pd.DataFrame({"rank": range(n_use), "prompt": keys_used.prompts, "rd": rd, "best_seed": best_seed,
                          "hit": rd < d0})
    settings = {"source": str(source), "suspect": getattr(suspect_model, "name", str(suspect)),
                "strategy": key_set.strategy, "profile": P.name, "key_seeds": key_seeds, "query_seeds": seeds,
                "distance": distance,
                "generation": {k: v for k, v in P["generation"].items() if k != "batch"},
                "innocent_shadows": [_name(p) for p in innocent_shadows],
                "infringing_shadows": [_name(p) for p in infringing_shadows],
                "controls": str(controls) if not use_shadows else None,
                "n_controls": m_use, "budget": budget}
    verdict = "infringing" if p_value <= alpha else "not shown"
    warning = ""
    if verdict == "infringing" and empirical is not None and empirical > alpha:
        closer = int(round(empirical * (len(innocent) + 1))) - 1
        warning = (f"The verdict rests on the null's assumption that innocent models' mean distance is normally spread: "
                   f"{closer} of {len(innocent)} innocent shadows come at least as close as the suspect, and their rank "
                   f"alone cannot support a {alpha:g} false-positive rate (empirical p {empirical:.2g}). Add innocent "
                   f"shadows (at least {math.ceil(1 / alpha) - 1} for a test with no assumption at this rate) before "
                   "relying on this verdict.")
    if verdict == "infringing" and not use_shadows:
        warning = ("The controls null assumes that a model which did not inherit the source's outputs reconstructs the "
                   "key samples no better than the control pairs; key samples are the pairs the source reproduces best, "
                   "which can be easier for any model of the domain (notebook 08 measures how often this null calls "
                   "innocent models infringing). Confirm with innocent shadow models (at least 2) before relying on "
                   "this verdict.")
    return Verdict(verdict, float(p_value), null_name, alpha, conf(rd, d0), d0, d0_from, n_use, hits, (n_use + m_use) * S,
                   disc, empirical, statistic,
                   None if innocent_stats is None else [float(x) for x in innocent_stats], settings, warning,
                   table, np.asarray(null_rds, dtype=float), recon, keys_used.references)
