"""Key samples K = {(p_k, x_k)}: which prompts the owner queries a suspicious model with, and the
reference image each generation is compared to (docs/method.md#key-samples).

Three strategies, each a named reading recorded in the key set's ``meta``:

* ``detection`` (Strategy 1): candidates are S's training pairs; keep the N with the lowest
  RD(S, p_i, x_i), i.e. what S memorised; the reference is the real training image.
* ``generation`` (Strategy 2): candidates are prompts; generate n images per prompt with S; keep
  the N most self-consistent prompts (lowest mean pairwise distance), optionally *relative to the
  base model* (consistency_S − consistency_base), because a tiny source draws almost every
  caption consistently and the plain reading then picks prompts every model draws alike; the
  reference is S's medoid generation.
* ``random`` (Baseline 2): N random training pairs, real images as references.

Keys are stored best first, so the first N of a selection are the selection for N: the key sets
of Figure 7 (N = 20, 30, 50, 100) nest, and :meth:`KeySet.subset` cuts them.

The selection rules are pure functions on arrays (unit-testable without a model); the strategy
functions add generation with the source model.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from .distances import Distance, get_distance
from .generation import GenerationCache, GenerationConfig, generate_cached
from .key_sets import KeySet, to_uint8
from .reconstruction import reconstruct

DEFAULT_CHUNK = 256  # candidate prompts generated and scored at a time (bounds memory at large N)


# ----------------------------------------------------------------------------------------------
# Loading a key set someone else wrote: _keys.json and its images must agree


# ----------------------------------------------------------------------------------------------
# Seeds: the ones that make references and the ones that query suspects never meet


def profile_seeds(profile: Any) -> tuple[list[int], list[int]]:
    """(key_seeds, query_seeds) of a profile, checked when its ``attribution`` section was parsed
    (``config.AttributionSettings``: at least 2 key seeds, at least 1 query seed, none in both)."""
    att = profile.attribution
    return list(att.key_seeds), list(att.query_seeds)


def reference_seeds(key_set: "KeySet") -> list[int] | None:
    """Every seed a key set's references or selection came from, as its meta records them
    (``seeds`` and per-key ``reference_seed``/``best_seed``); None when nothing is recorded."""
    found: set[int] = set()
    recorded = False
    if key_set.meta.get("seeds") is not None:
        found.update(int(s) for s in key_set.meta["seeds"])
        recorded = True
    for name in ("reference_seed", "best_seed"):
        values = key_set.meta.get("per_key", {}).get(name)
        if values is not None:
            found.update(int(s) for s in values if s is not None)
            recorded = True
    return sorted(found) if recorded else None


# ----------------------------------------------------------------------------------------------
# Pure selection rules


def _resolve(distance: str | Distance) -> Distance:
    return get_distance(distance) if isinstance(distance, str) else distance


def _check_n(n: int, n_candidates: int) -> None:
    if not 1 <= int(n) <= n_candidates:
        raise ValueError(f"asked for {n} keys from {n_candidates} candidates; n must be in 1..{n_candidates}")


def select_lowest(scores: np.ndarray, n: int) -> np.ndarray:
    """Indices of the n lowest scores, lowest first; ties go to the lower index (stable), NaN last.

    Stable ties make a key set a function of the scores alone, not of sort internals."""
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    _check_n(n, len(scores))
    return np.argsort(scores, kind="stable")[: int(n)]


def select_random(n_candidates: int, n: int, seed: int) -> np.ndarray:
    """n distinct candidate indices drawn uniformly with ``seed``, in draw order (so any prefix is
    itself a uniform draw and the N = 20/30/50/100 sets nest)."""
    _check_n(n, n_candidates)
    # a prefix of one permutation (not rng.choice, whose algorithm depends on n) so that the draw
    # for n = 20 is exactly the first 20 of the draw for n = 30
    return np.random.default_rng(seed).permutation(n_candidates)[: int(n)]


def self_consistency(images: np.ndarray, distance: str | Distance = "l2") -> np.ndarray:
    """Mean pairwise distance among the S generations of each prompt: images [P, S, H, W, 3] -> [P].

    0 when a prompt always yields the same picture, whatever the seed: what a model emits that
    consistently is what a model trained on its outputs inherits."""
    images = np.asarray(images)
    if images.ndim != 5 or images.shape[1] < 2:
        raise ValueError(f"self_consistency needs images [P, S>=2, H, W, 3]; got {images.shape}")
    d = _resolve(distance)
    first, second = np.triu_indices(images.shape[1], k=1)
    per_image = int(np.prod(images.shape[2:]))
    chunk = max(1, (1 << 22) // (len(first) * per_image))  # bounds the pair copies to ~16 M values
    out = np.empty(len(images), dtype=np.float64)
    for start in range(0, len(images), chunk):
        block = images[start:start + chunk]
        out[start:start + chunk] = np.asarray(d(block[:, first], block[:, second])).mean(axis=1)
    return out


def medoid(images: np.ndarray, distance: str | Distance = "l2") -> int:
    """Index of the generation [S, H, W, 3] with the least total distance to the others (ties: the
    lower index): a real output of S that stands for what S typically draws for the prompt."""
    images = np.asarray(images)
    if images.ndim != 4 or len(images) < 1:
        raise ValueError(f"medoid needs images [S>=1, H, W, 3]; got {images.shape}")
    matrix = np.asarray(_resolve(distance)(images[:, None], images[None, :]))
    return int(np.argmin(matrix.sum(axis=1)))


def generation_scores(source_images: np.ndarray, distance: str | Distance = "l2",
                      base_images: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Strategy 2's score per prompt (lower = better) and its parts: (score, consistency_S,
    consistency_base). With ``base_images`` the score is consistency_S − consistency_base, so a
    prompt that the base model (hence every model) draws alike scores ~0, and only prompts that S
    draws *more* consistently than the base come first."""
    d = _resolve(distance)
    cons_source = self_consistency(source_images, d)
    if base_images is None:
        return cons_source, cons_source, None
    cons_base = self_consistency(base_images, d)
    if cons_base.shape != cons_source.shape:
        raise ValueError(f"source and base images cover {len(cons_source)} and {len(cons_base)} prompts")
    return cons_source - cons_base, cons_source, cons_base


# ----------------------------------------------------------------------------------------------
# Strategies with a source model


def _model_name(components: Any) -> str | None:
    path = getattr(components, "path", None)
    return str(path) if path is not None else None


def _common_meta(strategy: str, n: int, n_candidates: int, seeds: Sequence[int] | None, distance: str | None,
                 cfg: GenerationConfig | None, reading: str) -> dict:
    return {"strategy": strategy, "n": int(n), "n_candidates": int(n_candidates),
            "seeds": None if seeds is None else [int(s) for s in seeds], "distance": distance,
            "generation": None if cfg is None else cfg.key(), "reading": reading, "order": "best first"}


def _check_pairs(prompts: Sequence[str], images: np.ndarray) -> None:
    if len(prompts) != len(images):
        raise ValueError(f"{len(prompts)} prompts but {len(images)} images; pass one image per prompt")


def detection_keys(source: Any, prompts: Sequence[str], images: np.ndarray, n: int, seeds: Sequence[int],
                   cfg: GenerationConfig, cache: GenerationCache | None, distance: str = "l2",
                   progress: bool = False, chunk: int = DEFAULT_CHUNK) -> KeySet:
    """Strategy 1: the n training pairs S reproduces best, RD(S, p_i, x_i) = min over ``seeds``.

    ``images`` are S's training images (uint8 or float [0, 1]) at the generation resolution; they
    are the references, because that is what an infringer inherits a copy of.
    """
    prompts = list(prompts)
    _check_pairs(prompts, images)
    _check_n(n, len(prompts))
    if not len(seeds):
        raise ValueError("detection_keys needs at least one seed")
    rd = np.empty(len(prompts), dtype=np.float64)
    best_seed = np.empty(len(prompts), dtype=np.int64)
    for start in range(0, len(prompts), chunk):
        rec = reconstruct(source, prompts[start:start + chunk], np.asarray(images[start:start + chunk]), seeds,
                          cfg, cache, distance=distance, progress=progress)
        rd[start:start + chunk] = rec.distance
        best_seed[start:start + chunk] = rec.best_seed
    chosen = select_lowest(rd, n)
    meta = _common_meta("detection", n, len(prompts), seeds, distance, cfg,
                        "RD(S, p, x) = min over seeds of d(x, G(S, p, s)) on S's training pairs; "
                        "n lowest kept; reference = the real training image")
    meta["source"] = _model_name(source)
    meta["per_key"] = {"best_seed": best_seed[chosen].tolist()}
    return KeySet("detection", [prompts[i] for i in chosen], to_uint8(np.asarray(images)[chosen]),
                  chosen.tolist(), rd[chosen], meta)


def generation_keys(source: Any, prompts: Sequence[str], n: int, seeds: Sequence[int], cfg: GenerationConfig,
                    cache: GenerationCache | None, distance: str = "l2", base: Any | None = None,
                    relative_to_base: bool | None = None, progress: bool = False,
                    chunk: int = DEFAULT_CHUNK) -> KeySet:
    """Strategy 2: the n prompts S draws most self-consistently over ``seeds``; reference = S's
    medoid generation.

    ``relative_to_base`` (a [reading], recorded in meta): score = consistency_S −
    consistency_base instead of consistency_S. ``None`` means "True exactly when ``base`` is
    given"; True without a base is an error. With a base and False, the base's consistency is
    still measured and recorded per key (to show what the relative reading would change).
    """
    prompts = list(prompts)
    seeds = [int(s) for s in seeds]
    _check_n(n, len(prompts))
    if len(seeds) < 2:
        raise ValueError(f"generation_keys needs at least 2 seeds to measure self-consistency; got {seeds}")
    if relative_to_base is None:
        relative_to_base = base is not None
    if relative_to_base and base is None:
        raise ValueError("relative_to_base=True needs base= (the components of the base model S was tuned from)")
    d = get_distance(distance)

    # best n so far, merged chunk by chunk: exact (ties keep the lower index because earlier
    # chunks hold lower indices and the sort is stable) and O(n) images in memory at any N.
    best_idx = np.zeros(0, dtype=np.int64)
    best_score = np.zeros(0)
    best_ref: np.ndarray | None = None
    cons_s_all = np.empty(len(prompts))
    cons_b_all = np.full(len(prompts), np.nan)
    medoid_seed = np.empty(len(prompts), dtype=np.int64)
    for start in range(0, len(prompts), chunk):
        block = prompts[start:start + chunk]
        gen_s = _by_seed(source, block, seeds, cfg, cache, progress)
        gen_b = _by_seed(base, block, seeds, cfg, cache, progress) if base is not None else None
        _, cons_s, cons_b = generation_scores(gen_s, d, gen_b)
        score = cons_s - cons_b if relative_to_base else cons_s
        cons_s_all[start:start + len(block)] = cons_s
        if cons_b is not None:
            cons_b_all[start:start + len(block)] = cons_b
        medoids = np.array([medoid(g, d) for g in gen_s])
        medoid_seed[start:start + len(block)] = np.asarray(seeds)[medoids]
        refs = gen_s[np.arange(len(block)), medoids]
        idx = np.concatenate([best_idx, np.arange(start, start + len(block))])
        sc = np.concatenate([best_score, score])
        rf = refs if best_ref is None else np.concatenate([best_ref, refs])
        keep = np.argsort(sc, kind="stable")[:n]
        best_idx, best_score, best_ref = idx[keep], sc[keep], rf[keep]

    meta = _common_meta("generation", n, len(prompts), seeds, distance, cfg,
                        "self-consistency = mean pairwise d among S's generations over the seeds"
                        + (" minus the base model's" if relative_to_base else "")
                        + "; n lowest kept; reference = S's medoid generation")
    meta.update(relative_to_base=bool(relative_to_base), source=_model_name(source),
                base=_model_name(base) if base is not None else None)
    meta["per_key"] = {"reference_seed": medoid_seed[best_idx].tolist(),
                       "consistency_source": cons_s_all[best_idx].tolist(),
                       **({"consistency_base": cons_b_all[best_idx].tolist()} if base is not None else {})}
    return KeySet("generation", [prompts[i] for i in best_idx], best_ref, best_idx.tolist(), best_score, meta)


def _by_seed(model: Any, block: list[str], seeds: list[int], cfg: GenerationConfig, cache: GenerationCache | None,
             progress: bool) -> np.ndarray:
    """``model``'s generations of every prompt of ``block`` at every seed, as [prompt, seed, H, W, 3]."""
    flat = generate_cached(model, [p for p in block for _ in seeds], seeds * len(block), cfg, cache, progress=progress)
    return flat.reshape(len(block), len(seeds), *flat.shape[1:])


def random_keys(prompts: Sequence[str], images: np.ndarray, n: int, seed: int) -> KeySet:
    """Baseline 2: n training pairs drawn at random (seeded), real images as references. The score
    is NaN: the order is the draw order, which keeps subsets uniform draws."""
    prompts = list(prompts)
    _check_pairs(prompts, images)
    chosen = select_random(len(prompts), n, seed)
    meta = _common_meta("random", n, len(prompts), None, None, None,
                        "n training pairs drawn uniformly without replacement; reference = the real image")
    meta["seed"] = int(seed)
    return KeySet("random", [prompts[i] for i in chosen], to_uint8(np.asarray(images)[chosen]),
                  chosen.tolist(), np.full(len(chosen), np.nan), meta)
