"""Distances and memorisation measures on constructed cases."""
from __future__ import annotations

import numpy as np
import pandas as pd

from genlineage.distances import l2, pairwise_l2
from genlineage.reconstruction import nearest_own_share, summarize


def test_l2_is_the_normalised_pixel_rmse():
    a = np.zeros((4, 4, 3), dtype=np.float32)
    b = np.full((4, 4, 3), 0.5, dtype=np.float32)
    assert np.isclose(l2(a, b), 0.5)
    assert np.isclose(l2(np.zeros((2, 2, 3), np.uint8), np.full((2, 2, 3), 255, np.uint8)), 1.0)


def test_pairwise_matches_elementwise():
    rng = np.random.default_rng(0)
    a, b = rng.random((3, 8, 8, 3)), rng.random((5, 8, 8, 3))
    expected = np.array([[l2(x, y) for y in b] for x in a])
    assert np.allclose(pairwise_l2(a, b), expected, atol=1e-6)


def test_nearest_own_share_counts_generations_nearest_to_their_own_image():
    train = np.stack([np.full((4, 4, 3), v, np.float32) for v in (0.0, 0.5, 1.0)])
    # caption 0 reproduces image 0 with both seeds; caption 1 once; caption 2 draws image 0
    gens = np.stack([
        np.stack([train[0] + 0.01, train[0]]),
        np.stack([train[1], train[2]]),
        np.stack([train[0], train[0]]),
    ])
    assert np.isclose(nearest_own_share(gens, train, np.arange(3)), 3 / 6)


def test_summary_detects_a_planted_gap():
    rows = pd.DataFrame({"split": ["own"] * 20 + ["heldout"] * 20,
                         "rd": np.r_[np.linspace(0.01, 0.05, 20), np.linspace(0.06, 0.1, 20)]})
    s = summarize(rows)
    assert s["rd_gap_median"] > 0.04 and s["own_below_heldout_p"] < 1e-6


def test_pairwise_in_blocks_equals_one_block():
    rng = np.random.default_rng(1)
    a, b = rng.random((7, 6, 6, 3)), rng.integers(0, 256, (5, 6, 6, 3), dtype=np.uint8)
    assert np.allclose(pairwise_l2(a, b, chunk=2), pairwise_l2(a, b, chunk=100), rtol=0, atol=1e-12)
    assert pairwise_l2(a, b, chunk=3).shape == (7, 5)
