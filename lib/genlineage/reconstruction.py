"""Memorisation of a source model, measured (notebook 02).

The whole method rests on it: a source model that reproduces its own training images more
closely than unseen images of the same domain. Two measures:

* reconstruction distance RD(M, p, x) = min over the profile's seeds of d(x, G(M, p, s)), on the
  model's own training pairs versus held-out pairs of the same domain;
* nearest-own share: of the model's generations for its training captions, the share whose
  nearest training image (by d) is the one that caption belongs to. Chance is one over the
  number of distinct training images.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from .distances import get_distance, pairwise_l2
from .generation import GenerationCache, GenerationConfig, generate_cached
from .models.pipeline_io import SDComponents


@dataclass
class Reconstruction:
    """Per reference: the best distance over seeds, the seed that gave it, and the images."""

    distance: np.ndarray     # [N]
    best_seed: np.ndarray    # [N]
    generations: np.ndarray  # [N, S, H, W, 3] uint8


def reconstruct(components: SDComponents, prompts: Sequence[str], references: np.ndarray, seeds: Sequence[int],
                cfg: GenerationConfig, cache: GenerationCache | None, distance: str = "l2",
                progress: bool = False) -> Reconstruction:
    """RD of each (prompt, reference) pair: generate with every seed, keep the closest."""
    return reconstruct_with(lambda p, s: generate_cached(components, p, s, cfg, cache, progress=progress),
                            prompts, references, seeds, distance)


def query_pairs(prompts: Sequence[str], seeds: Sequence[int]) -> tuple[list[str], list[int]]:
    """Every (prompt, seed) pair RD asks, prompt-major: the flat prompts and seeds."""
    return [p for p in prompts for _ in seeds], [int(seed) for _ in prompts for seed in seeds]


def reconstruct_with(generate: Callable[[list[str], list[int]], np.ndarray], prompts: Sequence[str],
                     references: np.ndarray, seeds: Sequence[int], distance: str = "l2") -> Reconstruction:
    """The same for any image source ``generate(prompts, seeds) -> uint8 [N, H, W, 3]`` (a pipeline,
    a suspect behind an API): one definition of RD for every stage and for ``genlineage verify``."""
    n, s = len(prompts), len(seeds)
    images = np.asarray(generate(*query_pairs(prompts, seeds)))
    images = images.reshape(n, s, *images.shape[1:])
    dist = get_distance(distance)(images, np.asarray(references)[:, None])
    best = dist.argmin(axis=1)
    return Reconstruction(dist.min(axis=1), np.asarray(seeds)[best], images)


def nearest_own_per_image(generations: np.ndarray, train_images: np.ndarray, own_index: np.ndarray) -> np.ndarray:
    """Per caption: the share of its generations [N, S, ...] whose nearest training image is its
    own (own_index[N]); one number per training image, so two models can be compared image by image."""
    n, s = generations.shape[:2]
    flat = generations.reshape(n * s, *generations.shape[2:])
    nearest = pairwise_l2(flat, train_images).argmin(axis=1).reshape(n, s)
    return (nearest == np.asarray(own_index)[:, None]).mean(axis=1)


def nearest_own_share(generations: np.ndarray, train_images: np.ndarray, own_index: np.ndarray) -> float:
    """Share of generations [N, S, ...] whose nearest training image is their own (own_index[N])."""
    return float(nearest_own_per_image(generations, train_images, own_index).mean())


def summarize(rows: pd.DataFrame) -> dict:
    """Own vs held-out RD for one model: medians, means, the gap and a one-sided rank test."""
    from scipy.stats import mannwhitneyu

    own = rows.loc[rows.split == "own", "rd"].to_numpy()
    held = rows.loc[rows.split == "heldout", "rd"].to_numpy()
    test = mannwhitneyu(own, held, alternative="less") if len(own) and len(held) else None
    return {
        "rd_own_median": float(np.median(own)), "rd_heldout_median": float(np.median(held)),
        "rd_own_mean": float(own.mean()), "rd_heldout_mean": float(held.mean()),
        "rd_gap_median": float(np.median(held) - np.median(own)),
        "own_below_heldout_p": float(test.pvalue) if test is not None else float("nan"),
    }
