"""conf, delta0 from shadows, Table 2 bins and the inheritance CI on constructed tables."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from genlineage.conf import calibrate_delta0, conf, conf_table, delta_grid, rd_distribution


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


def test_delta0_comes_from_shadows_only():
    rds = {"shadow_inf": [0.05] * 10, "shadow_inn": [0.2] * 10, "eval_inf": [0.3] * 10, "eval_inn": [0.01] * 10}
    models = pd.DataFrame({"name": list(rds), "role": ["shadow", "shadow", "evaluated", "evaluated"], "label": [1, 0, 1, 0]})
    delta, curve = calibrate_delta0(_per_sample(rds), models, "generation", 10, delta_grid({"start": 0.01, "stop": 0.3, "step": 0.01}))
    assert 0.05 < delta <= 0.2          # separates the shadows; the evaluated models' inverted values are ignored
    assert curve.gap.max() == 1.0
    assert delta == curve.loc[curve.gap.idxmax(), "delta0"]


def test_rd_distribution_matches_table2_bins():
    row = rd_distribution([0.01, 0.06, 0.12, 0.16, 0.5])
    assert row["[0.00, 0.05)"] == row["[0.15, 0.20)"] == row["[0.20, inf)"] == pytest.approx(0.2)
    assert row["best"] == 0.01 and row["average"] == pytest.approx(np.mean([0.01, 0.06, 0.12, 0.16, 0.5]))
