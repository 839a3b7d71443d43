"""The LoRA ablation's planning and its tables, on the smoke profile's manifest and planted tables:
which models get twins, how a twin keeps its original's pairs and seed, how the learning rate is
chosen on shadows only, and the model-level rates and gaps."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from genlineage.config import load_profile
from genlineage.experiments import lora_ablation as la
from genlineage.study.manifest import plan_manifest


@pytest.fixture()
def profile(smoke_profile):
    return load_profile("smoke", {"suspicious": {"lora_ablation": {"lr_grid": [0.01, 0.03], "rhos": [1.0]}}})


def test_twins_keep_their_originals_pairs_seed_and_base_and_train_a_lora(profile):
    manifest = plan_manifest(profile)
    twins = la.twin_rows(profile, manifest, 0.01)
    assert (twins.twin_of == manifest.name).all() and (twins.seed == manifest.seed).all()
    assert (twins.base_path == manifest.base_path).all() and (twins.pool == manifest.pool).all()
    assert set(twins.finetune) == {"lora"} and set(twins.lora_lr) == {0.01}
    assert twins.name.iloc[0] == f"{manifest.name.iloc[0]}__lora_lr0.01" and "suspicious_lora" in twins.path.iloc[0]
    assert la.twin_name("m", 0.03) != la.twin_name("m", 0.01), "every rate of the grid is its own model"


def test_the_ablation_twins_its_replicates_evaluated_models_and_every_replicates_shadows(profile):
    ablated = la.ablated_models(profile)
    evaluated = ablated[ablated.role == "evaluated"]
    assert set(evaluated.rho) == {0.0, 1.0} and set(ablated.lineage) == {"same"}
    assert set(evaluated.replicate) == set(profile.suspicious.lora_ablation.replicates) == {0}
    sources = profile.suspicious.lora_ablation.sources
    assert set(ablated.source) == set(sources) == {"v1-celeba", "v2-cc3m"}, "the smoke profile names two sources"
    manifest = plan_manifest(profile)
    manifest = manifest[(manifest.lineage == "same") & manifest.source.isin(sources)]
    expected = manifest[(manifest.role == "evaluated") & (manifest.rho == 0) & (manifest.replicate == 0)]
    assert set(expected.name) <= set(evaluated.name), "every evaluated innocent of the replicate is twinned"
    shadows = manifest[manifest.role == "shadow"]
    assert set(ablated[ablated.role == "shadow"].name) == set(shadows.name), \
        "every replicate's shadows, so verify's LoRA null is as large as its full one"
    every = la.ablated_models(load_profile("smoke", {"suspicious": {"lora_ablation": {"replicates": [], "sources": []}}}))
    assert set(every[every.role == "evaluated"].replicate) == set(profile.suspicious.replicates)
    assert set(every.source) == set(plan_manifest(profile).source)


def test_the_learning_rate_is_chosen_on_one_replicates_shadows_at_every_rate_of_the_grid(profile):
    rows = la.selection_rows(profile)
    assert set(rows.role) == {"shadow"} and set(rows.replicate) == {profile.suspicious.lora_ablation.selection_replicate}
    assert sorted(set(rows.lora_lr)) == [0.01, 0.03]
    assert len(rows) == 2 * rows.twin_of.nunique()


def test_choose_lr_takes_the_largest_innocent_minus_infringing_gap_and_the_smaller_rate_on_a_tie():
    def shadows(gaps: dict[float, list[float]]) -> pd.DataFrame:
        rows = []
        for lr, per_source in gaps.items():
            for i, gap in enumerate(per_source):
                rows += [{"lora_lr": lr, "source": f"s{i}", "label": 0, "mean_rd": 0.5 + gap},
                         {"lora_lr": lr, "source": f"s{i}", "label": 1, "mean_rd": 0.5}]
        return pd.DataFrame(rows)

    lr, gaps = la.choose_lr(shadows({0.01: [0.02, 0.04], 0.03: [0.05, 0.07], 0.1: [0.01, -0.02]}))
    assert lr == 0.03 and gaps.set_index("lora_lr").mean_gap[0.03] == pytest.approx(0.06)
    assert gaps.set_index("lora_lr").min_gap[0.1] == pytest.approx(-0.02) and set(gaps.sources) == {2}
    lr, _ = la.choose_lr(shadows({0.01: [0.05], 0.03: [0.05]}))
    assert lr == 0.01


def test_call_rates_count_models_with_exact_intervals_and_leave_refusals_out():
    verdicts = pd.DataFrame({"suspect_finetune": ["lora"] * 6, "shadow_finetune": ["full"] * 6,
                             "label": [0, 0, 0, 1, 1, 1],
                             "verdict": ["infringing", "not shown", "refused", "infringing", "infringing", "not shown"]})
    rates = la.call_rates(verdicts).set_index("label")
    assert rates.loc[0, "answered"] == 2 and rates.loc[0, "called infringing"] == 1 and rates.loc[0, "rate"] == 0.5
    assert rates.loc[1, "rate"] == pytest.approx(2 / 3) and 0 < rates.loc[1, "low"] < 2 / 3 < rates.loc[1, "high"] < 1


def test_paired_gaps_compare_each_twin_with_its_original_per_source_and_over_every_source():
    confs = pd.DataFrame({"model": ["a", "b", "c", "a__l", "b__l", "c__l"],
                          "twin_of": [None, None, None, "a", "b", "c"],
                          "finetune": ["full"] * 3 + ["lora"] * 3, "source": ["s", "s", "t"] * 2, "rho": [1.0] * 6,
                          "mean_rd": [0.30, 0.32, 0.34, 0.40, 0.41, 0.45], "conf": [0.5, 0.4, 0.3, 0.2, 0.2, 0.1]})
    gaps = la.paired_gaps(confs).set_index("source")
    every = gaps.loc[la.EVERY_SOURCE]
    assert every.pairs == 3 and every.rd_lora_minus_full == pytest.approx(np.mean([0.10, 0.09, 0.11]))
    assert every.rd_low < every.rd_lora_minus_full < every.rd_high
    assert every.conf_lora_minus_full == pytest.approx(np.mean([-0.3, -0.2, -0.2]))
    assert gaps.loc["s"].pairs == 2 and gaps.loc["t"].rd_lora_minus_full == pytest.approx(0.11)


def test_a_paired_conf_gap_stays_inside_the_range_a_difference_of_shares_can_take():
    """Two pairs at conf gaps -0.9 and +0.6: the plain paired t interval is [-9.7, 9.4]; the
    difference of two shares lies in [-1, 1], and so does its interval (the committed table of
    2026-12-03 showed [-1.23, 1.73])."""
    confs = pd.DataFrame({"model": ["a", "b", "a__l", "b__l"], "twin_of": [None, None, "a", "b"],
                          "finetune": ["full"] * 2 + ["lora"] * 2, "source": ["s"] * 4, "rho": [0.0] * 4,
                          "mean_rd": [0.3, 0.3, 0.3, 0.3], "conf": [0.9, 0.1, 0.0, 0.7]})
    gap = la.paired_gaps(confs).set_index("source").loc["s"]
    assert gap.conf_lora_minus_full == pytest.approx(-0.15)
    assert gap.conf_low == -1.0 and gap.conf_high == 1.0


def test_conf_by_method_pools_every_source_beside_each_source():
    confs = pd.DataFrame({"finetune": ["lora"] * 4, "source": ["s", "s", "t", "t"], "rho": [1.0] * 4,
                          "conf": [0.2, 0.4, 0.6, 0.8]})
    table = la.conf_by_method(confs).set_index("source")
    assert table.loc["s", "mean"] == pytest.approx(0.3) and table.loc[la.EVERY_SOURCE, "models"] == 4
    assert table.loc[la.EVERY_SOURCE, "mean"] == pytest.approx(0.5)
    # two models at conf 0.2 and 0.4: the plain t interval over 2 models is [-0.97, 1.57]
    assert table.loc["s", "low"] == 0.0 and table.loc["s", "high"] == 1.0, "conf is a share: inside [0, 1]"


def test_verification_pairs_ask_every_suspect_against_shadows_of_both_methods(profile):
    manifest = plan_manifest(profile)
    twins = la.twin_rows(profile, la.ablated_models(profile), 0.01)
    pairs = pd.DataFrame(la.verification_pairs(manifest, twins))
    n_suspects = int((twins.role == "evaluated").sum()) * 2  # each twin and its full original
    assert len(pairs) == 2 * n_suspects and set(pairs.shadow_finetune) == {"full", "lora"}
    for _, p in pairs.iterrows():
        assert p.innocent_shadows, "every pairing has an innocent null"
        assert p.path not in p.innocent_shadows + p.infringing_shadows, "no evaluated model is part of a null"
        kind = "suspicious_lora" if p.shadow_finetune == "lora" else "suspicious/"
        assert all(kind in s for s in p.innocent_shadows + p.infringing_shadows)


def test_pooled_inheritance_relabels_within_sources_and_reports_the_mean_gap_over_sources():
    rows = []
    for i, (source, scale) in enumerate([("a", 0.3), ("b", 0.5), ("c", 0.7), ("d", 0.9)]):
        rows += [{"source": source, "rho": 1.0, "mean_rd": scale, "conf": 0.6},
                 {"source": source, "rho": 0.0, "mean_rd": scale + 0.05, "conf": 0.4},
                 {"source": source, "rho": 0.0, "mean_rd": scale + 0.07, "conf": 0.2}]
    row = la.pooled_inheritance(pd.DataFrame(rows))
    assert row["source"] == la.EVERY_SOURCE and row["infringing models"] == 4 and row["innocent models"] == 8
    assert row["permutation_p"] == pytest.approx(1 / 81) and row["shown (p < 0.05)"]
    assert row["permutation_p_reverse"] == pytest.approx(1.0)
    assert row["rd_gap"] == pytest.approx(0.06) and row["conf_gap"] == pytest.approx(0.3)
