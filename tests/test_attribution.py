"""conf, delta0 from shadows, Table 2 bins and the inheritance CI on constructed tables."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from genlineage.confidence import (calibrate_delta0, conf, conf_table, delta_grid, mean_conf, rd_distribution, rds_by_model,
                             shadow_rds)


def _per_sample(rds: dict[str, list[float]], strategy: str = "generation") -> pd.DataFrame:
    rows = [{"model": m, "strategy": strategy, "rank": k, "rd": r} for m, rd in rds.items() for k, r in enumerate(rd)]
    return pd.DataFrame(rows)


def test_conf_is_the_share_below_delta0():
    assert conf(np.array([0.1, 0.2, 0.14, 0.15]), 0.15) == 0.5
    assert np.isnan(conf(np.array([]), 0.15))


def test_conf_table_uses_the_first_n_keys():
    ps = _per_sample({"m": [0.01, 0.02, 0.9, 0.9]})
    t = conf_table(ps, 0.15, n_keys=2)
    assert t.conf.iloc[0] == 1.0 and t.n_keys.iloc[0] == 2


GRID = delta_grid({"start": 0.01, "stop": 0.3, "step": 0.01})


def test_delta0_comes_from_shadows_only():
    rds = {"shadow_inf": [0.05] * 10, "shadow_inn": [0.2] * 10, "eval_inf": [0.3] * 10, "eval_inn": [0.01] * 10}
    models = pd.DataFrame({"name": list(rds), "role": ["shadow", "shadow", "evaluated", "evaluated"], "label": [1, 0, 1, 0]})
    infringing, innocent = shadow_rds(_per_sample(rds), models, "generation", 10)
    assert [list(r) for r in infringing] == [rds["shadow_inf"]] and [list(r) for r in innocent] == [rds["shadow_inn"]]
    delta, curve = calibrate_delta0(infringing, innocent, GRID)
    assert 0.05 < delta <= 0.2          # separates the shadows; the evaluated models' inverted values are ignored
    assert delta == 0.06                # the smallest delta of the tied best gap
    assert curve.gap.max() == 1.0
    assert delta == curve.loc[curve.gap.idxmax(), "delta0"]


def test_calibrate_delta0_on_arrays_by_hand():
    infringing = [np.array([0.05, 0.1, 0.3]), np.array([0.02, 0.2])]  # models may have different numbers of keys
    innocent = np.array([[0.25, 0.3, 0.4]])                          # or come as a [models, keys] matrix
    assert mean_conf(infringing, 0.15) == pytest.approx((2 / 3 + 1 / 2) / 2) and np.isnan(mean_conf([], 0.15))
    delta, curve = calibrate_delta0(infringing, innocent, GRID)
    assert delta == 0.21 and curve.gap.max() == pytest.approx(5 / 6)  # every infringing key but 0.3 hit, no innocent one
    assert list(curve.columns) == ["delta0", "conf_infringing", "conf_innocent", "gap"] and len(curve) == len(GRID)
    no_infringing, curve = calibrate_delta0([], innocent, GRID)
    assert no_infringing == GRID[0] and curve.gap.isna().all()  # nothing to separate: the grid's first


def _planted(seed: int = 0, n_models: int = 10, n_keys: int = 8) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Shadows and evaluated models of both labels with per-key RDs on a 0.005 grid (ties with the
    delta grid), two strategies, the table's rows shuffled."""
    rng = np.random.default_rng(seed)
    rds, rows, models = {}, [], []
    for role in ("shadow", "evaluated"):
        for label in (1, 0):
            for i in range(n_models):
                name = f"{role}_{label}_{i}"
                models.append({"name": name, "role": role, "label": label})
                for strategy in ("generation", "detection"):
                    rd = np.round(rng.uniform(0.0, 0.2, n_keys) + 0.08 * (1 - label), 3)
                    rds[(name, strategy)] = rd
                    rows += [{"model": name, "strategy": strategy, "rank": k, "rd": r} for k, r in enumerate(rd)]
    per_sample = pd.DataFrame(rows).sample(frac=1.0, random_state=seed).reset_index(drop=True)
    return per_sample, pd.DataFrame(models), rds


@pytest.mark.parametrize("n_keys", [3, 8])
def test_the_table_adapters_give_the_array_results_on_a_planted_table(n_keys):
    per_sample, models, rds = _planted()
    by_model = rds_by_model(per_sample, "detection", n_keys)
    assert list(by_model) == sorted(models.name)  # models by name, as the table groups them
    for name, rd in by_model.items():
        assert sorted(rd) == sorted(rds[(name, "detection")][:n_keys])
    shadows = models[models.role == "shadow"].sort_values("name")
    infringing = [rds[(m, "detection")][:n_keys] for m in shadows.name[shadows.label == 1]]
    innocent = [rds[(m, "detection")][:n_keys] for m in shadows.name[shadows.label == 0]]
    from_table = calibrate_delta0(*shadow_rds(per_sample, models, "detection", n_keys), GRID)
    from_arrays = calibrate_delta0(infringing, innocent, GRID)
    assert from_table[0] == from_arrays[0] and from_table[1].equals(from_arrays[1])  # bit for bit
    table = conf_table(per_sample[per_sample.strategy == "detection"], from_arrays[0], n_keys).set_index("model")
    for name in models.name:
        assert table.loc[name, "conf"] == conf(rds[(name, "detection")][:n_keys], from_arrays[0])
        assert table.loc[name, "n_keys"] == n_keys


def test_rd_distribution_matches_table2_bins():
    row = rd_distribution([0.01, 0.06, 0.12, 0.16, 0.5])
    assert row["[0.00, 0.05)"] == row["[0.15, 0.20)"] == row["[0.20, inf)"] == pytest.approx(0.2)
    assert row["best"] == 0.01 and row["average"] == pytest.approx(np.mean([0.01, 0.06, 0.12, 0.16, 0.5]))
