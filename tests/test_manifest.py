"""The suspicious-model manifest: replicates are independent draws, lineages kept apart (no training)."""
from __future__ import annotations

from pathlib import Path

import pytest

from genlineage.config import load_profile
from genlineage.study.manifest import plan_manifest, replicates
from genlineage.study.sources import source_table


@pytest.fixture
def manifest(tmp_path, monkeypatch):
    monkeypatch.setenv("GENLINEAGE_DATA", str(tmp_path))
    P = load_profile("tiny", {"suspicious": {"lineages": ["same", "other"], "replicates": [0, 1, 2], "base_sources": True}})
    return P, plan_manifest(P)


def test_every_cell_holds_one_model_per_replicate(manifest):
    P, m = manifest
    cfg = P["suspicious"]
    per_cell = len(cfg["rhos"]) * cfg["evaluated"]["infringing"] + cfg["evaluated"]["innocent"] \
        + cfg["shadow"]["infringing"] + cfg["shadow"]["innocent"]
    assert len(m) == 6 * 2 * 3 * per_cell and m.name.is_unique and m.seed.is_unique
    ev = m[m.role == "evaluated"]
    cells = ev[ev.rho > 0].groupby(["source", "lineage", "rho"]).replicate.nunique()
    assert (cells == 3).all(), "each (source, lineage, rho) cell holds one model per replicate"
    innocent = ev[ev.rho == 0].groupby(["source", "lineage"]).size()
    assert (innocent == 3 * cfg["evaluated"]["innocent"]).all()


def test_replicates_draw_their_own_shadow_rhos_and_the_plan_is_deterministic(manifest):
    P, m = manifest
    shadows = m[(m.role == "shadow") & (m.label == 1)]
    by_rep = shadows.pivot_table(index=["source", "lineage"], columns="replicate", values="rho")
    assert (by_rep.nunique(axis=1) > 1).any(), "shadow rhos are drawn per replicate"
    assert plan_manifest(P).equals(m)


def test_other_lineage_starts_from_the_other_base(manifest):
    _, m = manifest
    other = m[m.lineage == "other"]
    assert len(other) and (other.base != other.source_base).all()
    assert (m[m.lineage == "same"].base == m[m.lineage == "same"].source_base).all()


def test_default_tiny_profile_runs_three_replicates_of_the_own_lineage():
    P = load_profile("tiny")
    assert replicates(P) == [0, 1, 2] and P["suspicious"]["lineages"] == ["same"]
    assert list(source_table(P).source) == ["v1-cc3m", "v1-celeba", "v2-cc3m", "v2-celeba"]
    for name in ("paper", "smoke"):
        assert len(source_table(load_profile(name))) == 6, "the paper's six sources, bases included"
    assert load_profile("paper")["suspicious"]["lineages"] == ["same", "other"]


def test_training_costs_read_what_each_model_recorded(manifest, tmp_path):
    from genlineage.experiments.suspicious_models import training_costs
    from genlineage.io import write_json

    P, m = manifest
    m = m[m.source == "v1-celeba"].copy()
    m["path"] = [str(tmp_path / "models" / n) for n in m.name]
    for i, path in enumerate(m.path):
        write_json(Path(path) / "genlineage.json", {"train_seconds": 10.0 + i % 2})
    costs = training_costs(P, m).set_index(["replicate", "role"])
    assert costs.loc[("all", "all"), "models"] == len(m)
    assert costs.loc[("all", "all"), "total_seconds"] == pytest.approx(sum(10.0 + i % 2 for i in range(len(m))))
    assert costs.loc[(0, "shadow"), "models"] == len(m[(m.replicate == 0) & (m.role == "shadow")])
