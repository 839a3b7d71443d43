"""Stage 08's tables on planted verdicts: the null's population rule, p-values read at each target
as the tool would state them, false-positive rates on innocents with their intervals, the rates per
rho, and the aim."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from genlineage.experiments.model_owner_verify import (aim_reached, false_positive_rates, innocent_uniformity, p_at,
                                                       population_paths, qq_points, true_positive_rates)


def planted_shadows() -> pd.DataFrame:
    rows = []
    for base in ("v1", "v2"):
        for domain in ("celeba", "cc3m"):
            for i in range(3):
                rows.append({"name": f"{base}-{domain}-inn{i}", "base": base, "domain": domain, "label": 0,
                             "source": f"{base}-{domain}", "path": f"/m/{base}-{domain}-inn{i}"})
            rows.append({"name": f"{base}-{domain}-inf", "base": base, "domain": domain, "label": 1,
                         "source": f"{base}-{domain}", "path": f"/m/{base}-{domain}-inf"})
    return pd.DataFrame(rows)


def test_the_null_holds_only_innocent_shadows_of_the_suspects_base_and_domain():
    paths = population_paths(planted_shadows(), "v1", "cc3m")
    assert paths == [f"/m/v1-cc3m-inn{i}" for i in range(3)]
    assert not set(paths) & set(population_paths(planted_shadows(), "v2", "cc3m"))


def verdicts(rank_p, parametric_p, labels, rhos=None, n_innocent=19) -> pd.DataFrame:
    n = len(rank_p)
    return pd.DataFrame({"verdict": ["not shown"] * n, "rank_p": rank_p, "parametric_p": parametric_p,
                         "p_value": parametric_p, "p_from": ["rank"] * n, "n_innocent": [n_innocent] * n,
                         "label": labels, "rho": rhos if rhos is not None else [0.0] * n,
                         "source": ["s"] * n})


def test_p_at_takes_the_rank_where_the_shadows_reach_the_target_else_the_t():
    table = verdicts([0.05, 0.5], [0.004, 0.6], [1, 0])
    assert list(p_at(table, 0.05)) == [0.05, 0.5]        # 19 shadows: rank reaches 5%
    assert list(p_at(table, 0.01)) == [0.004, 0.6]       # ... not 1%: the t prediction
    fisher = table.assign(p_from="fisher", rank_p=np.nan, p_value=[0.02, 0.3])
    assert list(p_at(fisher, 0.01)) == [0.02, 0.3]       # the controls null's p does not depend on the target


def test_false_positive_rates_count_innocents_at_each_target_with_exact_intervals():
    rank = [0.05, 0.1, 0.5, 1.0] * 5
    table = verdicts(rank, [0.2] * 20, [0] * 20)
    fpr = false_positive_rates(table, (0.05, 0.1)).set_index("target FPR")
    assert fpr.loc[0.05, "innocent called"] == "5/20" and fpr.loc[0.1, "innocent called"] == "10/20"
    assert 0 <= fpr.loc[0.05, "FPR_low"] < 0.25 < fpr.loc[0.05, "FPR_high"] <= 1
    assert not fpr.loc[0.05, "target within interval"]   # 0.05 lies below [0.09, 0.49]


def test_true_positive_rates_per_rho_and_the_aim():
    table = verdicts([0.05] * 9 + [0.5] + [0.05] * 2 + [0.5] * 3, [0.01] * 15, [1] * 15,
                     rhos=[1.0] * 10 + [0.3] * 5)
    table = pd.concat([table, verdicts([0.6] * 5, [0.6] * 5, [0] * 5)], ignore_index=True)
    tpr = true_positive_rates(table, "rho", (0.05,)).set_index("rho")
    assert tpr.loc[1.0, "infringing called"] == "9/10" and tpr.loc[0.3, "infringing called"] == "2/5"
    aim = aim_reached(true_positive_rates(table, "rho"), false_positive_rates(table)).set_index("aim")
    assert aim.reached["TPR >= 0.9 at rho = 1"] and not aim.reached["TPR >= 0.5 at rho = 0.3"]
    assert aim.reached["target 0.05 inside the realised FPR's interval"]  # 0/5 called: [0, 0.52]


def test_an_aim_not_reached_is_told_with_its_facts_and_a_reached_one_is_not(monkeypatch):
    """Issue 23.6: the notebook says what limits an aim it missed: the generations such an
    infringer trained on, the calls per source, the sources' inheritance at rho = 1."""
    from genlineage.config import load_profile
    from genlineage.experiments import model_owner_verify as mov

    table = verdicts([0.05] * 10 + [0.05, 0.5, 0.5, 0.5], [0.01] * 14, [1] * 14, rhos=[1.0] * 10 + [0.3] * 4)
    table["source"] = ["a", "b"] * 5 + ["a", "a", "b", "b"]
    planted = pd.DataFrame({"source": ["a", "b"], "lineage": ["same"] * 2, "rd_gap": [0.031, 0.004],
                            "permutation_p": [0.012, 0.31]})
    monkeypatch.setattr(mov, "load_results", lambda profile: (None, None))
    monkeypatch.setattr(mov, "deltas", lambda profile, models, per_sample: ({"calibrated": {}}, None))
    monkeypatch.setattr(mov, "inheritance", lambda profile, models, per_sample, delta0: planted)
    profile = load_profile("smoke")
    (line,) = mov.aim_limits(profile, table)
    n = profile.suspicious.n_samples
    assert line.startswith("TPR >= 0.5 at rho = 0.3 not reached: 1/4 infringers called at a 0.05 target.")
    assert f"trained on {round(0.3 * n)} of the source's generations among its {n} pairs" in line
    assert "Called per source: a 1/2, b 0/2." in line and "a +0.031 (p = 0.012), b +0.004 (p = 0.31)" in line
    reached = table.assign(rank_p=0.05)
    assert mov.aim_limits(profile, reached) == [], "every aim reached: nothing to explain"


def test_innocent_p_values_against_the_uniform():
    rng = np.random.default_rng(0)
    uniform = verdicts(rng.uniform(size=200), rng.uniform(size=200), [0] * 200)
    skewed = verdicts(rng.uniform(size=200) ** 3, rng.uniform(size=200) ** 3, [0] * 200)
    assert innocent_uniformity(uniform).set_index("p-value")["KS p"].min() > 0.01
    assert innocent_uniformity(skewed).set_index("p-value")["KS p"].max() < 1e-6
    qq = qq_points(uniform)
    assert qq["uniform quantile"].iloc[0] == pytest.approx(0.5 / 200) and qq["p-value"].is_monotonic_increasing


def test_the_readme_rows_give_counts_and_intervals_per_target():
    from genlineage.config import load_profile
    from genlineage.experiments.model_owner_verify import owner_test_summary
    from genlineage.report.readme_results import results_block

    table = pd.concat([verdicts([0.05] * 3 + [0.5], [0.01] * 4, [1] * 4, rhos=[1.0] * 4),
                       verdicts([0.6] * 5, [0.6] * 5, [0] * 5)], ignore_index=True)
    rows = owner_test_summary(table).set_index("target FPR")
    assert rows.loc["0.05", "innocent called (FPR)"] == "0/5: 0.000 [0.000, 0.522]"
    assert rows.loc["0.05", "infringing called, rho = 1"] == "3/4: 0.75 [0.19, 0.99]"
    t1 = pd.DataFrame(columns=["score", "source", "n_models"])
    block = results_block(load_profile("tiny"), t1, owner_test=owner_test_summary(table))
    assert "**The owner's test**" in block and "3/4: 0.75 [0.19, 0.99]" in block
    assert "The owner's test" not in results_block(load_profile("tiny"), t1)
