"""The statistical level: a classifier that turns a model's key-sample distances into one score.

Features per suspicious model (docs/method.md#statistical-level): the N reconstruction distances on the source's key
samples, sorted (so the feature does not depend on which key is which), plus conf. The classifier
is fitted on the owner's *shadow* models only and scores held-out suspicious models; higher =
more likely infringing.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
from sklearn.base import ClassifierMixin
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from .confidence import conf, rds_by_model

CLASSIFIERS = ("logistic", "random_forest")


def features_from_rd(rds: Sequence[np.ndarray] | np.ndarray, delta0: float) -> np.ndarray:
    """[models, keys + 1]: each model's RDs (one array per model, or a [models, keys] matrix) sorted,
    then its conf. Sorted so that the feature does not depend on which key is which; every model
    needs the same number of keys."""
    return np.asarray([np.r_[np.sort(rd), conf(rd, delta0)] for rd in rds])


def features(per_sample: pd.DataFrame, models: Sequence[str], strategy: str, n_keys: int, delta0: float) -> np.ndarray:
    """:func:`features_from_rd` of ``models`` (in that order) on the first ``n_keys`` keys of
    ``strategy`` in the per-sample table (what the pipeline's stage 05 holds)."""
    by_model = rds_by_model(per_sample, strategy, n_keys)
    return features_from_rd([by_model[m] for m in models], delta0)


def make_classifier(name: str, seed: int = 0) -> ClassifierMixin:
    """A scikit-learn estimator by name (the profile's ``statistical.classifier``)."""
    if name == "logistic":
        return make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=1000))
    if name == "random_forest":
        return RandomForestClassifier(n_estimators=200, min_samples_leaf=1, random_state=seed)
    raise ValueError(f"unknown classifier {name!r}; choose one of {CLASSIFIERS}")


def fit_score(name: str, x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, seed: int = 0
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fit on shadow features; return (test scores, test predictions, train scores).

    With a single class among the shadows there is nothing to learn: every score is that
    class's label (the table then says so through its counts)."""
    y_train = np.asarray(y_train).astype(int)
    if len(np.unique(y_train)) < 2:
        const = float(y_train[0]) if len(y_train) else 0.0
        return np.full(len(x_test), const), np.full(len(x_test), int(const)), np.full(len(x_train), const)
    clf = make_classifier(name, seed).fit(x_train, y_train)
    return clf.predict_proba(x_test)[:, 1], clf.predict(x_test), clf.predict_proba(x_train)[:, 1]
