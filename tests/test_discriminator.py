"""Features, the shadow-trained discriminator, and Table 1 on constructed per-sample tables."""
from __future__ import annotations

import numpy as np
import pandas as pd

from genlineage.discriminator import features, features_from_rd, fit_score, make_classifier


def _per_sample(model_rds: dict[str, list[float]]) -> pd.DataFrame:
    return pd.DataFrame([{"model": m, "strategy": "generation", "rank": k, "rd": r}
                         for m, rds in model_rds.items() for k, r in enumerate(rds)])


def test_features_are_sorted_distances_then_conf():
    x = features(_per_sample({"a": [0.3, 0.1, 0.2, 0.9]}), ["a"], "generation", n_keys=3, delta0=0.25)
    assert np.allclose(x[0], [0.1, 0.2, 0.3, 2 / 3])


def test_features_from_rd_take_a_matrix_or_one_array_per_model():
    rd = np.array([[0.3, 0.1, 0.2], [0.05, 0.5, 0.01]])
    x = features_from_rd(rd, 0.25)
    assert np.allclose(x, [[0.1, 0.2, 0.3, 2 / 3], [0.01, 0.05, 0.5, 2 / 3]])
    assert (features_from_rd(list(rd), 0.25) == x).all() and features_from_rd([rd[1]], 0.25).shape == (1, 4)


def test_the_table_adapter_gives_the_array_features_on_a_planted_table():
    rng = np.random.default_rng(2)
    planted = {f"m{k}": np.round(rng.uniform(0, 0.3, 8), 3) for k in range(12)}
    table = _per_sample({m: list(rd) for m, rd in planted.items()}).sample(frac=1.0, random_state=2)  # rows shuffled
    names = ["m7", "m0", "m11", "m3"]  # any order: rows come back in it
    for n in (3, 8):
        from_table = features(table, names, "generation", n, 0.14)
        from_arrays = features_from_rd(np.stack([planted[m][:n] for m in names]), 0.14)
        assert from_table.dtype == from_arrays.dtype and (from_table == from_arrays).all()  # bit for bit


def test_discriminator_separates_constructed_shadows():
    rng = np.random.default_rng(0)
    inf = {f"i{k}": list(rng.uniform(0.02, 0.12, 10)) for k in range(6)}
    inn = {f"n{k}": list(rng.uniform(0.15, 0.25, 10)) for k in range(6)}
    ps = _per_sample({**inf, **inn})
    names = list(inf) + list(inn)
    x = features(ps, names, "generation", 10, 0.14)
    y = np.r_[np.ones(6), np.zeros(6)]
    for name in ("logistic", "random_forest"):
        score, pred, _ = fit_score(name, x[::2], y[::2], x[1::2])
        assert (pred == y[1::2]).all() and score[y[1::2] == 1].min() > score[y[1::2] == 0].max()


def test_a_single_class_of_shadows_gives_constant_scores():
    x = np.zeros((3, 4))
    score, pred, _ = fit_score("logistic", x, np.zeros(3), np.ones((2, 4)))
    assert (score == 0).all() and (pred == 0).all()


def test_unknown_classifier_is_named():
    import pytest

    with pytest.raises(ValueError, match="'svm'"):
        make_classifier("svm")
