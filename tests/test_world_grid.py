"""The suspects' world chosen on shadow models (stage 03): the rule on planted grids, the choice
read back by every later stage, and coverage on constructed images."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from genlineage.config import WORLD_FILE, chosen_world, load_profile
from genlineage.experiments import world_grid


def _grid(gaps: dict[tuple[int, int], list[float]]) -> pd.DataFrame:
    """A measured grid: per cell one innocent and one infringing shadow per source, the innocent at
    0.3 and the infringing ``gap`` closer."""
    rows = []
    for (n, steps), per_source in gaps.items():
        for i, gap in enumerate(per_source):
            for label, rd in ((0, 0.3), (1, 0.3 - gap)):
                rows.append({"n_samples": n, "train_steps": steps, "source": f"s{i}", "label": label, "mean_rd": rd,
                             "nearest_own": 0.5, "own_rd": 0.1, "chance": 1 / n})
    return pd.DataFrame(rows)


def test_the_largest_mean_gap_among_cells_that_fit_the_budget_wins():
    table = _grid({(30, 150): [0.01, 0.02], (30, 300): [0.03, 0.05], (90, 300): [0.06, 0.00], (90, 900): [0.2, 0.2]})
    cells, chosen = world_grid.choose_cell(table, budget_steps=100 * 300, models=100)
    assert chosen == (30, 300)  # (90, 900) is larger but does not fit; (90, 300) has the best source, not the best mean
    row = cells.set_index(["n_samples", "train_steps"]).loc[(90, 900)]
    assert not row.fits_budget and not row.chosen
    assert cells.chosen.sum() == 1
    assert cells.set_index(["n_samples", "train_steps"]).loc[(30, 300)].min_gap == pytest.approx(0.03)


def test_ties_go_to_fewer_steps_then_the_smaller_set():
    table = _grid({(90, 300): [0.04], (30, 300): [0.04], (90, 150): [0.04]})
    assert world_grid.choose_cell(table, budget_steps=0, models=10)[1] == (90, 150)
    table = _grid({(90, 300): [0.04], (30, 300): [0.04]})
    assert world_grid.choose_cell(table, budget_steps=0, models=10)[1] == (30, 300)


def test_a_grid_where_no_cell_fits_is_refused():
    with pytest.raises(ValueError, match="no cell of the world grid fits"):
        world_grid.choose_cell(_grid({(30, 300): [0.1]}), budget_steps=100, models=10)


def test_the_chosen_world_reaches_every_later_stage_and_only_for_its_own_grid(tmp_path, monkeypatch):
    monkeypatch.setenv("GENLINEAGE_DATA", str(tmp_path))
    before = load_profile("tiny")
    assert chosen_world(before) is None and before.suspicious.n_samples == 30
    record = {"n_samples": 90, "steps": 150, "grid": before.suspicious.world.as_dict()}
    (tmp_path / "tiny").mkdir()
    (tmp_path / "tiny" / WORLD_FILE).write_text(json.dumps(record))
    after = load_profile("tiny")
    assert after.suspicious.n_samples == 90
    assert after.suspicious.train_config(after.training.finetune).steps == 150
    from genlineage.study.manifest import plan_manifest

    assert set(plan_manifest(after).n_samples) == {90}
    other = load_profile("tiny", {"suspicious": {"world": {"steps": [100, 200]}}})
    assert other.suspicious.n_samples == 30, "a record of another grid is not this profile's choice"


def test_grid_shadows_come_from_the_shadow_pool_and_carry_their_cell():
    profile = load_profile("tiny")
    grid = world_grid.plan_grid(profile)
    assert len(grid) == 2 * 2 * 4 * 2  # cells x sources x (infringing, innocent)
    assert grid.pool.str.endswith("_shadow_pool").all()
    assert set(zip(grid.n_samples, grid.train_steps)) == set(world_grid.grid_cells(profile))
    assert set(grid.rho) == {0.0, profile.suspicious.world.rho}
    assert grid.name.is_unique and grid.seed.is_unique
    from genlineage.experiments.suspicious_models import _train_config

    assert {_train_config(profile, r).steps for r in grid.to_dict("records")} == set(profile.suspicious.world.steps)


def test_coverage_counts_source_images_within_delta0_of_a_generated_one():
    rng = np.random.default_rng(0)
    sources = rng.random((5, 8, 8, 3)).astype(np.float32)
    generated = np.stack([sources[1] + 0.01, sources[3], rng.random((8, 8, 3)).astype(np.float32)])
    near = world_grid._nearest_distance(sources, generated, "l2")
    assert near[1] < 0.02 and near[3] == pytest.approx(0.0, abs=1e-6)
    assert (near[[0, 2, 4]] > 0.15).all()
    table = pd.DataFrame({"name": "m", "source": "s", "role": "evaluated", "replicate": 0, "rho": 0.3,
                          "candidate_index": np.arange(5), "nearest_generated": near})
    summary = world_grid.coverage_summary(table, {"s": 0.15}, {"s": [1, 2]})
    assert summary.covered_images.item() == 2 and summary.covered_keys.item() == pytest.approx(0.5)
    assert np.isinf(world_grid._nearest_distance(sources, sources[:0], "l2")).all()
