"""The LoRA ablation's planning and its tables, on the smoke profile's manifest and planted tables:
which models get twins, how a twin keeps its original's pairs and seed, how the learning rate is
chosen on shadows only, and the model-level rates and gaps."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from genlineage.config import load_profile
from genlineage.experiments import lora_ablation as la
from genlineage.experiments.suspicious_models import plan_manifest


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


def test_the_ablation_twins_same_lineage_infringers_at_its_rhos_every_innocent_and_the_shadows(profile):
    ablated = la._ablated(profile)
    evaluated = ablated[ablated.role == "evaluated"]
    assert set(evaluated.rho) == {0.0, 1.0} and set(ablated.lineage) == {"same"}
    assert (ablated.role == "shadow").any()
    manifest = plan_manifest(profile)
    expected = manifest[(manifest.lineage == "same") & (manifest.role == "evaluated") & (manifest.rho == 0)]
    assert set(expected.name) <= set(evaluated.name), "every evaluated innocent is twinned"


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


def test_paired_gaps_compare_each_twin_with_its_original():
    models = pd.DataFrame({"name": ["a", "b", "c", "a__l", "b__l", "c__l"],
                           "twin_of": [None, None, None, "a", "b", "c"],
                           "finetune": ["full"] * 3 + ["lora"] * 3, "source": ["s"] * 6, "rho": [1.0] * 6,
                           "mean_rd": [0.30, 0.32, 0.34, 0.40, 0.41, 0.45]})
    gap = la.paired_gaps(models).iloc[0]
    assert gap.pairs == 3 and gap.lora_minus_full == pytest.approx(np.mean([0.10, 0.09, 0.11]))
    assert gap.low < gap.lora_minus_full < gap.high


def test_verification_pairs_ask_every_suspect_against_shadows_of_both_methods(profile):
    manifest = plan_manifest(profile)
    twins = la.twin_rows(profile, la._ablated(profile), 0.01)
    pairs = pd.DataFrame(la.verification_pairs(manifest, twins))
    n_suspects = int((twins.role == "evaluated").sum()) * 2  # each twin and its full original
    assert len(pairs) == 2 * n_suspects and set(pairs.shadow_finetune) == {"full", "lora"}
    for _, p in pairs.iterrows():
        assert p.innocent_shadows, "every pairing has an innocent null"
        assert p.path not in p.innocent_shadows + p.infringing_shadows, "no evaluated model is part of a null"
        kind = "suspicious_lora" if p.shadow_finetune == "lora" else "suspicious/"
        assert all(kind in s for s in p.innocent_shadows + p.infringing_shadows)
