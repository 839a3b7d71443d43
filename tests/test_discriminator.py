"""Features, the shadow-trained discriminator, and Table 1 on constructed per-sample tables."""
from __future__ import annotations

import numpy as np
import pandas as pd

from genlineage.discriminator import features, fit_score, make_classifier


def _per_sample(model_rds: dict[str, list[float]]) -> pd.DataFrame:
    return pd.DataFrame([{"model": m, "strategy": "generation", "rank": k, "rd": r}
                         for m, rds in model_rds.items() for k, r in enumerate(rds)])


def test_features_are_sorted_distances_then_conf():
    x = features(_per_sample({"a": [0.3, 0.1, 0.2, 0.9]}), ["a"], "generation", n_keys=3, delta0=0.25)
    assert np.allclose(x[0], [0.1, 0.2, 0.3, 2 / 3])


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
