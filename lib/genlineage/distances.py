"""Image distances d(a, b) of METHOD.md.

Default: the normalised pixel L2 of Carlini et al., sqrt(mean((a - b)^2)) with pixels in [0, 1]
at one common resolution. Images are uint8 or float arrays shaped [..., H, W, 3].
"""
from __future__ import annotations

from typing import Callable

import numpy as np

Distance = Callable[[np.ndarray, np.ndarray], np.ndarray]


def as_float(images: np.ndarray) -> np.ndarray:
    """uint8 [0, 255] or float [0, 1] -> float32 [0, 1]."""
    images = np.asarray(images)
    if images.dtype == np.uint8:
        return images.astype(np.float32) / 255.0
    return images.astype(np.float32)


def l2(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Normalised pixel L2 between matching images (broadcasts over leading axes)."""
    diff = as_float(a) - as_float(b)
    return np.sqrt(np.mean(diff * diff, axis=(-3, -2, -1)))


def pairwise_l2(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[len(a), len(b)] matrix of normalised pixel L2 distances, without an N×M×HW×3 array."""
    fa = as_float(a).reshape(len(a), -1).astype(np.float64)
    fb = as_float(b).reshape(len(b), -1).astype(np.float64)
    sq = (fa * fa).sum(1)[:, None] + (fb * fb).sum(1)[None, :] - 2.0 * fa @ fb.T
    return np.sqrt(np.clip(sq, 0.0, None) / fa.shape[1])


DISTANCES: dict[str, Distance] = {"l2": l2}


def get_distance(name: str) -> Distance:
    if name not in DISTANCES:
        raise ValueError(f"unknown distance {name!r}; choose one of {sorted(DISTANCES)}")
    return DISTANCES[name]
