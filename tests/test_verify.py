"""``genlineage verify``: each of its steps on constructed inputs (arrays, fake models), then the
whole tool on smoke-sized pipelines built here (a source fine-tuned on six pairs, and suspects and
shadows fine-tuned from the base on pairs the source never generated) and on suspects whose
behaviour is known: a copier of the source's key references must be called infringing, a model
drawing pictures of its own not shown. Every bad or unsafe input is refused with a clear message
and exit status 2."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import CAPTIONS
from genlineage.cli import main
from genlineage.confidence import calibrate_delta0, delta_grid, shadow_rds
from genlineage.config import load_profile
from genlineage.data.imagefolder import ImageFolder, write_imagefolder
from genlineage.errors import InputError
from genlineage.generation import GenerationConfig, generate_cached
from genlineage.key_sets import KeySet
from genlineage.models.pipeline_io import load_pipeline
from genlineage.training.finetune import finetune_folder
from genlineage.training.sd import TrainConfig
from genlineage.verify import null, select_keys, verify, write_report
from genlineage.verify.verdict import (InnocentNull, Models, QueryPlan, ShadowRDs, SuspectAnswers, Threshold,
                                       Verdict, assemble_verdict, build_null, check_keys, check_models,
                                       check_settings, choose_delta0, controls_null_test, decide,
                                       discriminator_score, open_suspect, plan_budget, query_shadows, query_suspect,
                                       run_record, shadow_null_test, warning_for)
from genlineage.verify.budget import (fisher_split, shadow_key_count)

P = load_profile("smoke")


def _pattern(i: int, size: int = 32) -> np.ndarray:
    """A distinct flat-coloured picture with a lighter square per index."""
    rng = np.random.default_rng(100 + i)
    img = np.empty((size, size, 3), np.uint8)
    img[:] = rng.integers(0, 256, 3)
    y, x = rng.integers(4, size - 12, 2)
    img[y:y + 10, x:x + 10] = np.clip(img[0, 0].astype(int) + 60, 0, 255)
    return img


def _train(base: Path, data: Path, out: Path, work: Path, seed: int, steps: int = 6) -> Path:
    cfg = TrainConfig.from_mapping({"steps": steps, "batch": 6, "lr": 1e-3}, seed=seed)
    return finetune_folder(base, data, out, cfg, 32, work, progress=False)


@pytest.fixture(scope="module")
def world(tmp_path_factory, saved_pipeline):
    """Smoke-sized pipeline folders: a source, shadows and suspects fine-tuned a few steps each.

    They exercise every path of the tool (loading, querying, caching, reports, refusals). Every one
    but the source is fine-tuned from the base on pairs the source never generated, so each is
    innocent by construction (``shadow_infringing`` only plays an infringing shadow's part, for the
    calibration and the discriminator); a real pipeline judged here must come out not shown.
    Nothing trained here in test time can memorise or inherit: measured while writing these tests,
    smoke-sized models fine-tuned for hundreds of steps from a random base still ignore their
    captions (every prompt gave the same image). The infringing direction is therefore tested with
    suspects whose behaviour is known (``_copier``, ``_stranger``), and the tiny profile's real
    models are judged in notebook 08. ``scripts/probe_smoke_verify_direction.py`` repeats the
    measurement: rho = 1 smoke pipelines tuned on the source's generations were not separated from
    innocent ones."""
    root = tmp_path_factory.mktemp("verify_world")
    work = root / "work"
    write_imagefolder(root / "source_data", [(_pattern(i), CAPTIONS[i], {}) for i in range(6)])
    write_imagefolder(root / "controls", [(_pattern(50 + i), CAPTIONS[6 + i], {}) for i in range(6)])
    models = {"root": root, "base": saved_pipeline,
              "source": _train(saved_pipeline, root / "source_data", root / "source", work, seed=1)}
    for k, name in enumerate(("suspect_pipeline", "suspect_innocent", "shadow_innocent_0", "shadow_innocent_1",
                              "shadow_innocent_2", "shadow_infringing")):
        write_imagefolder(root / f"{name}_data", [(_pattern(200 + 10 * k + i), CAPTIONS[(i + k) % 12], {}) for i in range(6)])
        models[name] = _train(saved_pipeline, root / f"{name}_data", root / name, work, seed=3000 + k)
    return models


def _copier(world, keys: Path, noise: float = 2.0):
    """A suspect that inherited everything: for a prompt the source drew a key reference for, that
    picture (the source's medoid generation) whatever the seed, as memory is; for any other prompt
    the source's own generation at (prompt, seed); plus pixel noise. Not the source's generation at
    the query seed for a key: the references are drawn at key seeds the suspect is never asked
    with (attribution.key_seeds vs query_seeds), and smoke models change their picture with the
    seed, so that copy would not come close to the references; with shared seeds it came close
    only through the shared initial noise."""
    model = load_pipeline(world["source"])
    cfg = GenerationConfig.from_mapping(P["generation"])
    key_set = KeySet.load(keys)
    memory = dict(zip(key_set.prompts, key_set.references))

    def generate_image(prompt: str, seed: int) -> np.ndarray:
        img = memory[prompt] if prompt in memory else generate_cached(model, [prompt], [seed], cfg, None)[0]
        img = img.astype(float)
        rng = np.random.default_rng(seed)
        return np.clip(img + rng.normal(0, noise, img.shape), 0, 255).astype(np.uint8)

    return generate_image


def _stranger(i: int):
    """A suspect that never saw the source's outputs: pictures of its own."""
    def generate_image(prompt: str, seed: int) -> np.ndarray:
        return _pattern(1000 + 37 * i + seed + len(prompt))

    return generate_image


def _counting_copier(world, keys: Path):
    """The copier as a remote API that records every (prompt, seed) it is asked."""
    calls: list = []
    copier = _copier(world, keys)

    def api(prompt: str, seed: int):
        calls.append((prompt, seed))
        return copier(prompt, seed)

    return api, calls


def _shadows(world) -> dict:
    return {"innocent_shadows": [world[f"shadow_innocent_{i}"] for i in range(3)],
            "infringing_shadows": [world["shadow_infringing"]]}


def _snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


# --- the null: pure functions --------------------------------------------------------------------

def test_prediction_null_by_hand():
    shadows = np.array([0.3, 0.4])  # mean 0.35, s = 0.1 / sqrt(2); df = 1 (a Cauchy)
    scale = (0.1 / np.sqrt(2)) * np.sqrt(1 + 1 / 2)
    assert null.prediction_pvalue(0.35, shadows) == pytest.approx(0.5)
    assert null.prediction_pvalue(0.2, shadows) == pytest.approx(0.5 + np.arctan(-0.15 / scale) / np.pi)
    assert null.prediction_floor(shadows) == pytest.approx(0.5 + np.arctan(-0.35 / scale) / np.pi)
    assert null.prediction_pvalue(0.5, shadows) > 0.5
    assert null.empirical_pvalue(0.2, shadows) == pytest.approx(1 / 3)  # closer than both: the floor
    assert null.empirical_pvalue(0.3, shadows) == pytest.approx(2 / 3)  # ties count against the suspect
    assert null.model_statistic([0.1, 0.2, 0.6]) == pytest.approx(0.3)
    with pytest.raises(ValueError, match="at least 2"):
        null.prediction_pvalue(0.1, [0.3])
    with pytest.raises(ValueError, match="all equal"):
        null.prediction_pvalue(0.1, [0.3, 0.3])


def _innocent_population(rng, n_models: int, n_keys: int = 30) -> np.ndarray:
    """Per-key distances of innocent models that differ in how close they come to every key (what
    notebook 08 measured on tiny models): a model effect plus per-key noise."""
    model_effect = rng.normal(0.30, 0.04, (n_models, 1))
    return np.clip(model_effect + rng.normal(0, 0.08, (n_models, n_keys)), 0, None)


@pytest.mark.parametrize("k", [3, 8])
def test_model_level_null_is_calibrated_when_models_differ_and_a_per_key_count_is_not(k):
    """An innocent suspect and k innocent shadows drawn from the same population: the t prediction
    fires at about alpha (Monte-Carlo slack of 3 standard errors), the rank test at most alpha; the
    per-key binomial count this replaced fires far more often."""
    from scipy.stats import binom

    rng = np.random.default_rng(k)
    alpha, trials, delta0 = 0.05, 4000, 0.25
    t_calls = rank_calls = binomial_calls = 0
    for _ in range(trials):
        models = _innocent_population(rng, k + 1)
        suspect, shadows = models[0], models[1:]
        stats = shadows.mean(axis=1)
        t_calls += null.prediction_pvalue(null.model_statistic(suspect), stats) <= alpha
        rank_calls += null.empirical_pvalue(null.model_statistic(suspect), stats) <= alpha
        p0 = ((shadows < delta0).sum() + 1) / (shadows.size + 2)
        binomial_calls += binom.sf(int((suspect < delta0).sum()) - 1, suspect.size, p0) <= alpha
    slack = 3 * np.sqrt(alpha * (1 - alpha) / trials)
    assert t_calls / trials <= alpha + slack
    assert rank_calls / trials <= alpha + slack
    assert binomial_calls / trials > 3 * alpha


def test_model_level_null_detects_a_model_that_comes_closer_to_every_key():
    rng = np.random.default_rng(1)
    shadows = _innocent_population(rng, 8).mean(axis=1)
    copier = np.clip(_innocent_population(rng, 1)[0] - 0.2, 0, None)
    assert null.prediction_pvalue(null.model_statistic(copier), shadows) < 0.01


def _spread_then_tight(values: list[float], n_keys: int = 6) -> np.ndarray:
    """Shadows that disagree on the first key only: the spread of their means shrinks as 1 / keys."""
    rd = np.full((len(values), n_keys), 0.5)
    rd[:, 0] = values
    return rd


def test_shadow_plan_asks_every_key_the_budget_allows_and_refuses_the_rest():
    innocent = _spread_then_tight([0.1, 0.5, 0.9])
    # floor p over n keys: t_2 at -0.5 n / (0.4 sqrt(4/3)); reaches 0.05 (t_2 = -2.92) from n = 3
    assert shadow_key_count(innocent, 0.05, 6, 2, None) == 6
    assert shadow_key_count(innocent, 0.05, 6, 2, 8) == 4
    # a budget of 2 keys is refused; the only other count suggested is all keys (not a count tuned on the shadows)
    with pytest.raises(InputError, match=r"all 6 keys would do, a budget of 12 \(6 keys x 2 seeds\)"):
        shadow_key_count(innocent, 0.05, 6, 2, 4)
    with pytest.raises(InputError, match="too spread"):  # 0.001 needs t_2 = -22.3: n >= 21
        shadow_key_count(innocent, 0.001, 6, 2, None)
    with pytest.raises(InputError, match="too spread"):  # equal shadows: no spread, nothing to compare with
        shadow_key_count(np.full((2, 6), 0.4), 0.05, 6, 2, None)


# --- the steps of verify, one at a time: constructed inputs, fake models -------------------------

def _planted_keys(n: int = 6, seeds=(1000, 1001)) -> KeySet:
    """n keys with distinct references, made (as the meta records) at seeds apart from the query seeds."""
    return KeySet("generation", CAPTIONS[:n], np.stack([_pattern(i) for i in range(n)]), list(range(n)),
                  np.linspace(0.1, 0.2, n), {"strategy": "generation", "seeds": list(seeds)})


def _exact_copier(key_set: KeySet):
    """A model that returns each key's reference exactly, whatever the seed: distance 0 to every key."""
    memory = dict(zip(key_set.prompts, key_set.references))

    def generate_image(prompt: str, seed: int) -> np.ndarray:
        return memory[prompt] if prompt in memory else _pattern(500 + len(prompt))

    return generate_image


def _blend(name: str, level: float, key_set: KeySet):
    """A model returning each key's reference blended with noise of its own (more noise, farther)."""
    memory = dict(zip(key_set.prompts, key_set.references))

    def generate_image(prompt: str, seed: int) -> np.ndarray:
        rng = np.random.default_rng([sum(map(ord, name)), sum(map(ord, prompt)), int(seed)])
        ref = memory.get(prompt, _pattern(500 + len(prompt))).astype(float)
        return np.clip((1 - level) * ref + level * rng.integers(0, 256, ref.shape), 0, 255).astype(np.uint8)

    generate_image.__qualname__ = f"blend {name}"  # verify caches a callable's images under this name
    return generate_image


def _counting(fn):
    """``fn`` recording every (prompt, seed) it is asked."""
    calls: list = []

    def api(prompt: str, seed: int):
        calls.append((prompt, int(seed)))
        return fn(prompt, seed)

    return api, calls


class _NaNModel:
    name = "nan model"

    def generate(self, prompts, seeds, size, progress):
        return np.full((len(prompts), size, size, 3), np.nan)


def _run(tmp_path, **overrides):
    args = dict(target_fpr=0.05, budget=None, n_keys=None, delta0=None, profile=P, out=tmp_path / "out",
                cache_dir=None, progress=False)
    return check_settings(**{**args, **overrides})


def _models(suspect=None, innocent=(), infringing=(), controls=None, name: str | None = None) -> Models:
    return Models(source=Path("source"), suspect=suspect, suspect_name=name, innocent_shadows=tuple(innocent),
                  infringing_shadows=tuple(infringing), controls=controls)


def _controls_folder(where: Path, n: int = 6) -> Path:
    """n control pairs of which the last repeats the first (same id): n - 1 distinct."""
    items = [(_pattern(50 + i), CAPTIONS[6 + i], {"id": i}) for i in range(n - 1)] + [(_pattern(50), CAPTIONS[6], {"id": 0})]
    write_imagefolder(where, items)
    return where


def test_check_settings_resolves_the_profile_and_keeps_what_was_given(tmp_path):
    run = _run(tmp_path, delta0=1, budget=7, n_keys=3)
    assert run.alpha == 0.05 and run.query_seeds == P["attribution"]["query_seeds"] and run.n_seeds == 2
    assert run.delta0 == 1.0 and isinstance(run.delta0, float) and run.budget == 7 and run.n_keys == 3
    assert run.out == tmp_path / "out" and run.cache_dir == tmp_path / "out" / "cache" and run.distance == "l2"
    assert _run(tmp_path, cache_dir=tmp_path / "c").cache_dir == tmp_path / "c"
    assert not (tmp_path / "out").exists(), "checking writes nothing"


@pytest.mark.parametrize("given, expect", [({"target_fpr": 0}, "strictly between 0 and 1"),
                                           ({"target_fpr": 1.5}, "strictly between 0 and 1"),
                                           ({"n_keys": 0}, "at least 1 key"), ({"delta0": float("nan")}, "positive number"),
                                           ({"delta0": -0.1}, "positive number"), ({"budget": 0}, "positive number")])
def test_check_settings_refuses_nonsense_numbers(tmp_path, given, expect):
    with pytest.raises(InputError, match=expect):
        _run(tmp_path, **given)


def test_the_target_fpr_has_one_home_the_profiles_verify_section(tmp_path):
    """No level given: the profile's verify.target_fpr, the one default of the CLI, stage 08 and
    notebook 10; a profile's own value is refused by the same range check as --target-fpr."""
    from genlineage.config import load_profile

    assert _run(tmp_path, target_fpr=None).alpha == P.verify.target_fpr == 0.05
    other = load_profile("smoke", {"verify": {"target_fpr": 0.1}})
    assert _run(tmp_path, target_fpr=None, profile=other).alpha == 0.1
    with pytest.raises(InputError, match="strictly between 0 and 1"):
        load_profile("smoke", {"verify": {"target_fpr": 1.0}})


def test_check_models_accepts_callables_and_refuses_a_missing_null_before_writing(saved_pipeline, tmp_path):
    a, b = _stranger(1), _stranger(2)
    models = check_models(source=saved_pipeline, suspect=_stranger(0), suspect_name="s", innocent_shadows=[a, b],
                          infringing_shadows=[], controls=None, out=tmp_path / "out")
    assert models.source.resolve() == Path(saved_pipeline).resolve() and models.innocent_shadows == (a, b)
    assert models.infringing_shadows == () and models.suspect_name == "s"
    with pytest.raises(InputError, match="1 innocent shadow model.s. given"):
        check_models(source=saved_pipeline, suspect=_stranger(0), suspect_name=None, innocent_shadows=[a],
                     infringing_shadows=[b], controls=None, out=tmp_path / "out")
    assert check_models(source=saved_pipeline, suspect=_stranger(0), suspect_name=None, innocent_shadows=[],
                        infringing_shadows=[], controls=tmp_path / "controls", out=tmp_path / "out").controls is not None
    assert not (tmp_path / "out").exists()


def test_check_models_refuses_a_folder_twice_or_overlapping_out(saved_pipeline, tmp_path):
    two = [_stranger(1), _stranger(2)]
    with pytest.raises(InputError, match="given more than once"):
        check_models(source=saved_pipeline, suspect=saved_pipeline, suspect_name=None, innocent_shadows=[saved_pipeline, *two],
                     infringing_shadows=[], controls=None, out=tmp_path / "out")
    with pytest.raises(InputError, match="overlap"):
        check_models(source=saved_pipeline, suspect=saved_pipeline, suspect_name=None, innocent_shadows=two,
                     infringing_shadows=[], controls=None, out=Path(saved_pipeline) / "report")
    with pytest.raises(InputError, match="innocent shadow: .* does not exist"):
        check_models(source=saved_pipeline, suspect=_stranger(0), suspect_name=None, innocent_shadows=[tmp_path / "nope", *two],
                     infringing_shadows=[], controls=None, out=tmp_path / "out")


def test_check_keys_takes_the_first_n_and_refuses_seeds_shared_with_the_queries(tmp_path):
    keys = check_keys(_planted_keys(6), None, "generation", None, Path("source"), _run(tmp_path, n_keys=4))
    assert len(keys.key_set) == 4 and keys.key_set.prompts == CAPTIONS[:4] and keys.made_with == [1000, 1001]
    assert len(check_keys(_planted_keys(6), None, "generation", None, Path("source"), _run(tmp_path, n_keys=60)).key_set) == 6
    with pytest.raises(InputError, match="share"):
        check_keys(_planted_keys(6, seeds=P["attribution"]["query_seeds"]), None, "generation", None, Path("source"),
                   _run(tmp_path))
    with pytest.raises(InputError, match="no key samples"):
        check_keys(None, None, "generation", None, Path("source"), _run(tmp_path))
    with pytest.raises(InputError, match="is not a folder"):
        check_keys(tmp_path / "nope", None, "generation", None, Path("source"), _run(tmp_path))


def test_open_suspect_wraps_a_callable_and_keeps_a_suspect_object(tmp_path):
    key_set, run = _planted_keys(), _run(tmp_path)
    wrapped = open_suspect(_models(_stranger(0), name="my api"), key_set, run)
    assert wrapped.name == "my api" and wrapped.generate(["a"], [0], 32, False).shape == (1, 32, 32, 3)
    model = _NaNModel()
    assert open_suspect(_models(model), key_set, run) is model
    with pytest.raises(InputError, match="pass a pipeline folder or a callable"):
        open_suspect(_models(42), key_set, run)


def test_query_shadows_gives_one_row_per_shadow_in_the_order_given(tmp_path):
    key_set, run = _planted_keys(4), _run(tmp_path)
    models = _models(innocent=[_blend("far", 0.8, key_set), _blend("near", 0.3, key_set)],
                     infringing=[_exact_copier(key_set)])
    shadows = query_shadows(models, key_set, run)
    assert shadows.innocent.shape == (2, 4) and shadows.infringing.shape == (1, 4)
    assert (shadows.infringing == 0).all() and (shadows.innocent[0] > shadows.innocent[1]).all()
    assert query_shadows(_models(innocent=models.innocent_shadows), key_set, run).infringing.shape == (0, 4)
    with pytest.raises(InputError, match="innocent shadow .*not finite"):
        query_shadows(_models(innocent=[_NaNModel()]), key_set, run)


def test_choose_delta0_given_else_calibrated_on_both_kinds_else_the_profiles(tmp_path):
    shadows = ShadowRDs(np.array([[0.30, 0.35, 0.28], [0.32, 0.27, 0.4]]), np.array([[0.05, 0.1, 0.2]]))
    assert choose_delta0(shadows, _run(tmp_path, delta0=0.2)) == Threshold(0.2, "given")
    grid = delta_grid(P["attribution"]["delta0_grid"])
    calibrated = choose_delta0(shadows, _run(tmp_path))
    assert calibrated == Threshold(calibrate_delta0(shadows.infringing, shadows.innocent, grid)[0],
                                   "calibrated on the shadow models")
    assert 0.2 < calibrated.delta0 <= 0.27  # separates the copier-like shadow's keys from the innocents'
    innocent_only = ShadowRDs(shadows.innocent, np.zeros((0, 3)))
    assert choose_delta0(innocent_only, _run(tmp_path)) == Threshold(float(P["attribution"]["delta0"]), "profile smoke")


def test_calibration_on_many_shadows_matches_the_per_sample_tables():
    """12 shadows of each kind: the delta0 verify calibrates on its arrays is the one the per-sample
    table of earlier versions gave (models named innocent0..11, infringing0..11). The mean conf over
    shadows is a floating-point sum; summed in the order given, these shadows give 0.25, not 0.13."""
    rng = np.random.default_rng(1)
    infringing = np.round(rng.uniform(0.0, 0.3, (12, 10)), 3)
    shadows = ShadowRDs(np.round(rng.uniform(0.1, 0.4, (12, 10)), 3), infringing)
    rows = [{"model": f"{role}{i}", "strategy": "keys", "rank": k, "rd": r}
            for role, rds in (("innocent", shadows.innocent), ("infringing", shadows.infringing))
            for i, rd in enumerate(rds) for k, r in enumerate(rd)]
    labels = pd.DataFrame([{"name": f"{role}{i}", "role": "shadow", "label": int(role == "infringing")}
                           for role in ("innocent", "infringing") for i in range(12)])
    grid = delta_grid(P["attribution"]["delta0_grid"])
    table_delta0, _ = calibrate_delta0(*shadow_rds(pd.DataFrame(rows), labels, "keys", 10), grid)
    assert choose_delta0(shadows, _run(Path("unused"))).delta0 == table_delta0 == 0.13
    assert calibrate_delta0(shadows.infringing, shadows.innocent, grid)[0] == 0.25


def test_build_null_prefers_two_innocent_shadows_and_refuses_twins(tmp_path):
    key_set = _planted_keys(3)
    innocent = np.array([[0.3, 0.4, 0.5], [0.2, 0.4, 0.5]])
    from_shadows = build_null(ShadowRDs(innocent, np.zeros((0, 3))), tmp_path / "unread", key_set)
    assert from_shadows.from_shadows and from_shadows.innocent_rd is innocent and from_shadows.controls is None
    with pytest.raises(InputError, match="one model given twice"):
        build_null(ShadowRDs(innocent[[0, 0, 1]], np.zeros((0, 3))), None, key_set)
    controls = build_null(ShadowRDs(innocent[:1], np.zeros((0, 3))), _controls_folder(tmp_path / "controls"), key_set)
    assert not controls.from_shadows and len(controls.controls) == 6 and controls.control_rows == [0, 1, 2, 3, 4]


def _fake_controls(n: int) -> InnocentNull:
    return InnocentNull(innocent_rd=np.zeros((0, 6)), controls=ImageFolder(Path("controls"), [{}] * n),
                        control_rows=list(range(n)))


def test_plan_budget_spends_the_budget_on_keys_with_shadows_and_splits_it_with_controls(tmp_path):
    shadows_null = InnocentNull(innocent_rd=_spread_then_tight([0.1, 0.5, 0.9]))
    assert plan_budget(shadows_null, 6, _run(tmp_path)) == QueryPlan(n_keys=6, n_controls=0, n_seeds=2)
    plan = plan_budget(shadows_null, 6, _run(tmp_path, budget=8))
    assert plan == QueryPlan(n_keys=4, n_controls=0, n_seeds=2) and plan.queries == 8
    assert plan_budget(_fake_controls(6), 6, _run(tmp_path, target_fpr=0.01)) == QueryPlan(n_keys=6, n_controls=6, n_seeds=2)
    plan = plan_budget(_fake_controls(6), 6, _run(tmp_path, target_fpr=0.01, budget=18))
    assert (plan.n_keys, plan.n_controls, plan.queries) == (5, 4, 18)
    with pytest.raises(InputError, match=r"smallest that would do is 18 \(4 keys \+ 5 controls x 2 seeds\)"):
        plan_budget(_fake_controls(6), 6, _run(tmp_path, target_fpr=0.01, budget=17))
    with pytest.raises(InputError, match="all 6 keys would do"):
        plan_budget(shadows_null, 6, _run(tmp_path, budget=4))


def test_without_a_budget_controls_are_capped_at_a_stated_number_per_key():
    from genlineage.verify.budget import CONTROLS_PER_KEY

    assert fisher_split(0.05, 30, 500, 4, None) == (30, CONTROLS_PER_KEY * 30)
    assert fisher_split(0.05, 30, 60, 4, None) == (30, 60), "fewer controls than the cap: all of them"


def test_fisher_split_gives_keys_half_the_budget_and_the_rest_to_controls():
    assert fisher_split(0.01, 6, 6, 2, None) == (6, 6)
    # 9 slots: the smallest split is 4 keys + 5 controls (1 / C(9, 4) = 1/126); keys first to half the slots
    assert fisher_split(0.01, 6, 6, 2, 18) == (5, 4)
    assert fisher_split(0.01, 6, 6, 2, 24) == (6, 6)
    assert fisher_split(0.05, 3, 10, 2, 26) == (3, 10)  # keys run out first: the leftover slots go to controls
    with pytest.raises(InputError, match="cannot reach a 0.001 false-positive rate"):
        fisher_split(0.001, 3, 3, 2, None)


def test_query_suspect_asks_exactly_the_plan(tmp_path):
    key_set, run = _planted_keys(6), _run(tmp_path)
    api, calls = _counting(_exact_copier(key_set))
    shadows_null = InnocentNull(innocent_rd=np.zeros((2, 6)))
    answers = query_suspect(open_suspect(_models(api, name="copier"), key_set, run), key_set, shadows_null,
                            QueryPlan(n_keys=3, n_controls=0, n_seeds=2), run)
    assert len(calls) == 3 * 2 and {p for p, _ in calls} == set(CAPTIONS[:3]) and {s for _, s in calls} == {0, 1}
    assert (answers.rd == 0).all() and answers.keys.prompts == CAPTIONS[:3] and answers.control_rd is None
    assert (answers.reconstructions == key_set.references[:3]).all() and set(answers.best_seed) <= {0, 1}

    calls.clear()
    folder = _controls_folder(tmp_path / "controls")
    controls_null = build_null(ShadowRDs(np.zeros((0, 6)), np.zeros((0, 6))), folder, key_set)
    answers = query_suspect(open_suspect(_models(api, name="copier 2"), key_set, run), key_set, controls_null,
                            QueryPlan(n_keys=2, n_controls=3, n_seeds=2), run)
    assert len(calls) == (2 + 3) * 2 and len(answers.rd) == 2 and len(answers.control_rd) == 3
    assert [p for p, _ in calls[4:]] == [c for c in CAPTIONS[6:9] for _ in range(2)], "the first 3 distinct controls"
    assert (answers.control_rd > 0).all()
    with pytest.raises(InputError, match="suspect: .*not finite"):
        query_suspect(_NaNModel(), key_set, shadows_null, QueryPlan(n_keys=2, n_controls=0, n_seeds=2), run)


def _answers(key_set: KeySet, rd, control_rd=None) -> SuspectAnswers:
    rd = np.asarray(rd, dtype=float)
    n = len(rd)
    return SuspectAnswers(keys=key_set.subset(n), rd=rd, best_seed=np.zeros(n, int), reconstructions=key_set.references[:n],
                          control_rd=None if control_rd is None else np.asarray(control_rd, dtype=float))


def test_decide_calls_a_copy_infringing_and_a_stranger_not_shown_against_shadows(tmp_path):
    key_set, run = _planted_keys(6), _run(tmp_path)
    innocent = _innocent_population(np.random.default_rng(3), 8, 6)
    shadows, null_from_shadows = ShadowRDs(innocent, np.zeros((0, 6))), InnocentNull(innocent_rd=innocent)
    copy = decide(_answers(key_set, np.zeros(6)), null_from_shadows, Threshold(0.15, "given"), shadows, run)
    means = innocent.mean(axis=1)
    assert copy.verdict == "infringing" and copy.test.p_value == null.prediction_pvalue(0.0, means) <= 0.05
    assert copy.conf == 1.0 and copy.key_hits == 6 and copy.mean_rd == 0.0 and copy.discriminator_score is None
    assert copy.test.empirical_p_value == pytest.approx(1 / 9)
    assert "0 of 8 innocent shadows score at least as high" in copy.warning  # rank 1/9 cannot support 0.05
    stranger = decide(_answers(key_set, np.full(6, 0.9)), null_from_shadows, Threshold(0.15, "given"), shadows, run)
    assert stranger.verdict == "not shown" and stranger.test.p_value > 0.5 and stranger.warning == ""
    assert stranger.conf == 0.0 and stranger.key_hits == 0


def test_decide_with_controls_counts_hits_below_delta0(tmp_path):
    key_set, run = _planted_keys(6), _run(tmp_path, target_fpr=0.01)
    controls_null, no_shadows = _fake_controls(6), ShadowRDs(np.zeros((0, 6)), np.zeros((0, 6)))
    copy = decide(_answers(key_set, np.full(6, 0.01), np.full(6, 0.5)), controls_null, Threshold(0.05, "given"),
                  no_shadows, run)
    assert copy.verdict == "infringing" and copy.test.p_value == pytest.approx(1 / 924)  # 1 / C(12, 6)
    assert copy.test.name.startswith("control samples") and copy.test.empirical_p_value is None
    assert copy.warning.startswith("The controls null assumes")
    easy_domain = decide(_answers(key_set, np.full(6, 0.01), np.full(6, 0.01)), controls_null, Threshold(0.05, "given"),
                         no_shadows, run)
    assert easy_domain.verdict == "not shown" and easy_domain.test.p_value == 1.0 and easy_domain.warning == ""


def _shadow_test(rd, innocent, tmp_path, **run):
    key_set = _planted_keys(innocent.shape[1])
    return shadow_null_test(_answers(key_set, rd), InnocentNull(innocent_rd=innocent), _run(tmp_path, **run))


def test_null_tests_by_hand(tmp_path):
    innocent = np.array([[0.2, 0.4, 0.9], [0.4, 0.6, 0.9]])  # over the first 2 keys: means 0.3 and 0.5
    test = _shadow_test(np.array([0.1, 0.1]), innocent, tmp_path)
    assert test.innocent_mean_rds == pytest.approx([0.3, 0.5]) and list(test.null_rds) == [0.2, 0.4, 0.4, 0.6]
    assert test.p_value == null.prediction_pvalue(0.1, test.innocent_mean_rds)
    assert test.empirical_p_value == pytest.approx(1 / 3) and test.name.startswith("innocent shadows (2;")
    fisher = controls_null_test(np.array([0.01, 0.01, 0.3]), np.array([0.01, 0.3, 0.3]), 0.05)
    assert fisher.p_value == null.fisher_pvalue(2, 3, 1, 3) and list(fisher.null_rds) == [0.01, 0.3, 0.3]


def test_discriminator_scores_a_copy_above_a_stranger_and_needs_both_kinds(tmp_path):
    rng = np.random.default_rng(4)
    shadows = ShadowRDs(rng.uniform(0.25, 0.4, (3, 6)), rng.uniform(0.0, 0.1, (3, 6)))
    copy = discriminator_score(shadows, np.full(4, 0.02), 0.15, P)
    stranger = discriminator_score(shadows, np.full(4, 0.35), 0.15, P)
    assert copy > 0.5 > stranger
    assert discriminator_score(ShadowRDs(shadows.innocent, np.zeros((0, 6))), np.full(4, 0.02), 0.15, P) is None


def test_warning_for_an_infringing_verdict_only_when_the_data_alone_would_not_support_it(tmp_path):
    test = _shadow_test(np.zeros(3), np.array([[0.3, 0.3, 0.3], [0.4, 0.4, 0.4], [0.5, 0.5, 0.5]]), tmp_path,
                        target_fpr=0.01)
    assert warning_for("not shown", test, 0.01, True) == ""
    assert "0 of 3 innocent shadows" in warning_for("infringing", test, 0.01, True)  # rank 1/4 > 0.01
    assert warning_for("infringing", test, 0.3, True) == ""  # rank 1/4 <= 0.3
    assert warning_for("infringing", test, 0.3, False).startswith("The controls null assumes")


def test_the_verdict_is_built_by_keyword_and_carries_the_evidence(tmp_path):
    key_set, run = _planted_keys(6), _run(tmp_path, budget=8)
    innocent = np.array([[0.3] * 6, [0.4] * 6, [0.5] * 6])
    answers = _answers(key_set, [0.01, 0.2, 0.01, 0.3])
    plan = QueryPlan(n_keys=4, n_controls=0, n_seeds=2)
    decision = decide(answers, InnocentNull(innocent_rd=innocent), Threshold(0.15, "given"),
                      ShadowRDs(innocent, np.zeros((0, 6))), run)
    keys = check_keys(key_set, None, "generation", None, Path("source"), run)
    models = _models(_stranger(0), innocent=[_stranger(1), _stranger(2), _stranger(3)])
    settings = run_record(run, models, keys, open_suspect(models, key_set, run), plan, InnocentNull(innocent_rd=innocent))
    assert settings["controls"] is None and settings["n_controls"] == 0 and settings["budget"] == 8
    assert settings["key_seeds"] == [1000, 1001] and settings["query_seeds"] == [0, 1] and settings["profile"] == "smoke"
    v = assemble_verdict(decision, answers, Threshold(0.15, "given"), plan, run, settings)
    assert (v.verdict, v.n_keys, v.key_hits, v.queries, v.conf, v.delta0_from) == (decision.verdict, 4, 2, 8, 0.5, "given")
    assert list(v.keys["rank"]) == [0, 1, 2, 3] and list(v.keys.hit) == [True, False, True, False]
    assert v.innocent_mean_rds == pytest.approx([0.3, 0.4, 0.5]) and all(type(x) is float for x in v.innocent_mean_rds)
    assert v.null_rds.dtype == float and len(v.null_rds) == 3 * 4 and (v.references == key_set.references[:4]).all()
    assert json.loads(json.dumps(v.to_json(), default=float))["settings"]["budget"] == 8
    with pytest.raises(TypeError):
        Verdict(*[getattr(v, f) for f in v.__dataclass_fields__])


# --- verdicts --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def keys(world, tmp_path_factory):
    """The owner's keys, selected once by the tool itself (Strategy 2 relative to the base)."""
    out = tmp_path_factory.mktemp("select")
    key_set = select_keys(world["source"], world["root"] / "source_data", "generation", 6, world["base"], P, out, False)
    assert len(key_set) == 6 and key_set.meta["relative_to_base"]
    return out / "keys"


def test_rho1_suspect_is_infringing_and_innocent_is_not_shown_with_shadows(world, keys, tmp_path):
    shadows = {"innocent_shadows": [world[f"shadow_innocent_{i}"] for i in range(3)],
               "infringing_shadows": [_copier(world, keys, noise=3.0)]}
    guilty = verify(world["source"], _copier(world, keys), keys=keys, profile=P, out=tmp_path / "g", target_fpr=0.01,
                    progress=False, **shadows)
    clean = verify(world["source"], _stranger(0), keys=keys, profile=P, out=tmp_path / "c", target_fpr=0.01,
                   progress=False, **shadows)
    assert guilty.verdict == "infringing" and guilty.p_value <= 0.01 and guilty.conf == 1.0
    assert clean.verdict == "not shown" and clean.p_value > 0.01 and clean.conf == 0.0
    assert guilty.discriminator_score > clean.discriminator_score
    assert guilty.delta0_from.startswith("calibrated") and guilty.null.startswith("innocent shadows")
    assert guilty.queries == 6 * len(P["attribution"]["query_seeds"])
    assert guilty.empirical_p_value == pytest.approx(1 / 4)  # 3 innocent shadows: the exact test's floor
    for v in (guilty, clean):  # the p-value is the t prediction on the reported statistics, over the keys asked
        assert v.p_value == pytest.approx(null.prediction_pvalue(v.mean_rd, v.innocent_mean_rds))
        assert v.mean_rd == pytest.approx(v.keys.rd.mean())
    assert "cannot support a 0.01 false-positive rate" in guilty.warning and "at least 99" in guilty.warning
    assert clean.warning == ""

    report = write_report(guilty, tmp_path / "g")
    text = report.read_text()
    assert "# genlineage verify: **infringing**" in text and "queries of the suspect" in text and "**Warning.**" in text
    assert (tmp_path / "g" / "rd_histogram.png").is_file() and len(list((tmp_path / "g" / "pairs").glob("*.png"))) == 6
    data = json.loads((tmp_path / "g" / "verdict.json").read_text())
    assert data["verdict"] == "infringing" and len(data["keys"]) == 6 and data["settings"]["strategy"] == "generation"
    page = (tmp_path / "g" / "report.html").read_text()
    assert '<p id="verdict" class="verdict infringing">infringing</p>' in page and "Warning." in page
    assert page.count('class="pair"') == 6 and page.count('src="data:image/png;base64,') == 7  # pairs + histogram
    assert "http://" not in page and "https://" not in page and 'src="pairs/' not in page, "self-contained"
    assert page.index('id="decision"') < page.index('id="keys"') < page.index('id="settings"'), "decision first"


def test_controls_null_without_shadows(world, keys, tmp_path):
    args = dict(keys=keys, controls=world["root"] / "controls", profile=P, target_fpr=0.01, progress=False, delta0=0.05)
    guilty = verify(world["source"], _copier(world, keys), out=tmp_path / "g", **args)
    clean = verify(world["source"], _stranger(1), out=tmp_path / "c", **args)
    assert guilty.null.startswith("control samples") and guilty.verdict == "infringing"
    assert guilty.p_value == pytest.approx(1 / 924)  # every key hit, no control: 1 / C(12, 6)
    assert clean.verdict == "not shown"
    assert guilty.queries == (6 + 6) * len(P["attribution"]["query_seeds"])
    assert "The controls null assumes" in guilty.warning and clean.warning == ""
    assert guilty.innocent_mean_rds is None and "Warning" in write_report(guilty, tmp_path / "g").read_text()


def test_a_pipeline_suspect_is_queried_and_never_written_to(world, keys, tmp_path):
    """An innocent pipeline (fine-tuned from the base on pairs the source never generated): queried
    through its own folder, judged not shown, and its folder left as it was."""
    before = _snapshot(world["suspect_pipeline"])
    v = verify(world["source"], world["suspect_pipeline"], keys=keys, profile=P, out=tmp_path, progress=False,
               **_shadows(world))
    assert v.verdict == "not shown" and v.p_value > v.target_fpr and v.discriminator_score is not None
    assert v.settings["suspect"] == "suspect_pipeline" and v.queries == 6 * len(P["attribution"]["query_seeds"])
    assert _snapshot(world["suspect_pipeline"]) == before, "nothing is written inside the suspect's folder"
    assert (tmp_path / "cache").is_dir()


def test_an_innocent_smoke_pipeline_is_not_shown(world, keys, tmp_path):
    """A real pipeline fine-tuned from the base on pairs the source never generated, judged against
    three innocent shadows of the same kind: the calibrated null says not shown."""
    v = verify(world["source"], world["suspect_innocent"], keys=keys, profile=P, out=tmp_path, progress=False,
               target_fpr=0.01, **_shadows(world))
    assert v.verdict == "not shown" and v.p_value > 0.01 and v.warning == ""
    assert v.null.startswith("innocent shadows (3;") and len(v.innocent_mean_rds) == 3


def test_a_callable_suspect_is_cached(world, keys, tmp_path):
    api, calls = _counting_copier(world, keys)
    first = verify(world["source"], api, keys=keys, profile=P, out=tmp_path, progress=False, delta0=0.001,
                   innocent_shadows=_shadows(world)["innocent_shadows"])
    n = len(calls)
    again = verify(world["source"], api, keys=keys, profile=P, out=tmp_path, progress=False, delta0=0.001,
                   innocent_shadows=_shadows(world)["innocent_shadows"])
    assert first.verdict == again.verdict == "infringing"  # a copier of the key references
    assert n == first.queries and len(calls) == n, "a re-run asks the suspect nothing twice"


# --- the command line ------------------------------------------------------------------------------

def _cli(world, keys, tmp_path, *extra: str, suspect: str | None = None) -> list[str]:
    args = ["verify", "--source", str(world["source"]), "--keys", str(keys), "--profile", "smoke", "--quiet",
            "--out", str(tmp_path / "out"), "--innocent-shadow", str(world["shadow_innocent_0"]),
            "--innocent-shadow", str(world["shadow_innocent_1"]), "--innocent-shadow", str(world["shadow_innocent_2"]),
            "--infringing-shadow", str(world["shadow_infringing"])]
    return args + ["--suspect", suspect or str(world["suspect_pipeline"])] + list(extra)


def test_cli_prints_the_verdict_of_an_innocent_pipeline_and_writes_its_report(world, keys, tmp_path, capsys):
    assert main(_cli(world, keys, tmp_path)) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["verdict"] == "not shown" and Path(printed["report"]).name == "report.html"
    assert "<title>genlineage verify: not shown</title>" in Path(printed["report"]).read_text()
    assert "# genlineage verify: **not shown**" in (Path(printed["report"]).parent / "report.md").read_text()


def test_cli_wraps_a_function_as_the_suspect(world, keys, tmp_path, capsys):
    api = tmp_path / "my_api.py"
    api.write_text("import numpy as np\n\ndef generate(prompt, seed):\n"
                   "    return np.full((64, 64, 3), (seed * 40) % 256, np.uint8)  # any size: resized to the keys'\n")
    args = _cli(world, keys, tmp_path)
    i = args.index("--suspect")
    args[i:i + 2] = ["--suspect-callable", f"{api}:generate", "--delta0", "0.001"]
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out)["verdict"] == "not shown"
    args[args.index("--suspect-callable") + 1] = f"{api}:nope"
    assert main(args) == 2
    assert "has no function 'nope'" in capsys.readouterr().err


def test_help_reads_like_a_man_page(capsys):
    with pytest.raises(SystemExit) as info:
        main(["verify", "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    for section in ("--target-fpr", "--budget", "exit status:", "safety:", "examples:", "--suspect-callable", "Fisher"):
        assert section in text


def _copy(world, tmp_path) -> Path:
    folder = tmp_path / "suspect_copy"
    shutil.copytree(world["suspect_pipeline"], folder)
    return folder


@pytest.mark.parametrize("case", ["missing", "not_diffusers", "other_architecture", "pickle", "symlink", "remote_code",
                                  "out_inside_suspect"])
def test_unsafe_or_wrong_suspects_are_refused(world, keys, tmp_path, capsys, case):
    folder = _copy(world, tmp_path)
    extra: list[str] = []
    expect = {"missing": "does not exist", "not_diffusers": "no model_index.json",
              "other_architecture": "StableDiffusionXLPipeline",
              "pickle": "pickle weights", "symlink": "leads outside", "remote_code": "remote or custom code",
              "out_inside_suspect": "never writes into"}[case]
    if case == "missing":
        shutil.rmtree(folder)
    elif case == "not_diffusers":
        (folder / "model_index.json").unlink()
    elif case == "other_architecture":
        index = json.loads((folder / "model_index.json").read_text())
        index["_class_name"] = "StableDiffusionXLPipeline"
        (folder / "model_index.json").write_text(json.dumps(index))
    elif case == "pickle":
        for f in (folder / "unet").glob("*.safetensors"):
            f.rename(f.with_name("diffusion_pytorch_model.bin"))
    elif case == "symlink":
        outside = tmp_path / "elsewhere.json"
        outside.write_text("{}")
        os.symlink(outside, folder / "unet" / "extra.json")
    elif case == "remote_code":
        cfg = json.loads((folder / "unet" / "config.json").read_text())
        cfg["auto_map"] = {"AutoModel": "evil.Model"}
        (folder / "unet" / "config.json").write_text(json.dumps(cfg))
    elif case == "out_inside_suspect":
        extra = ["--out", str(folder / "report")]
    before = _snapshot(folder) if folder.exists() else {}
    code = main(_cli(world, keys, tmp_path, *extra, suspect=str(folder)))
    assert code == 2
    assert expect in capsys.readouterr().err
    if folder.exists():
        assert _snapshot(folder) == before, "a refused suspect's folder is left untouched"


@pytest.mark.parametrize("fpr", ["0", "1", "1.5", "-0.1"])
def test_target_fpr_outside_zero_one_is_refused(world, keys, tmp_path, capsys, fpr):
    assert main(_cli(world, keys, tmp_path, "--target-fpr", fpr)) == 2
    assert "must lie strictly between 0 and 1" in capsys.readouterr().err


def test_budget_too_small_names_the_smallest_that_would_do(world, keys, tmp_path, capsys):
    # controls as the null: 6 keys, 6 controls; 1 / C(9, 4) = 1/126 is the first floor <= 0.01: 4 keys + 5 controls
    args = ["verify", "--source", str(world["source"]), "--keys", str(keys), "--profile", "smoke", "--quiet",
            "--out", str(tmp_path / "out"), "--controls", str(world["root"] / "controls"),
            "--suspect", str(world["suspect_pipeline"]), "--target-fpr", "0.01"]
    assert main(args + ["--budget", "2"]) == 2
    err = capsys.readouterr().err
    assert "query budget 2 is too small" in err and "the smallest that would do is 18 (4 keys + 5 controls x 2 seeds)" in err
    assert main(args + ["--budget", "18"]) == 0
    assert json.loads(capsys.readouterr().out)["queries"] == 18


def test_shadow_null_budget_is_spent_on_keys_and_refusals_cost_no_query(world, keys, tmp_path):
    api, calls = _counting_copier(world, keys)
    S = len(P["attribution"]["query_seeds"])
    v = verify(world["source"], api, keys=keys, profile=P, out=tmp_path / "a", progress=False, target_fpr=0.2,
               budget=3 * S + 1, suspect_name="budget copier", **_shadows(world))
    assert v.n_keys == 3 and v.queries == 3 * S == len(calls)
    calls.clear()
    with pytest.raises(InputError, match="cannot support a 1e-12 false-positive rate"):
        verify(world["source"], api, keys=keys, profile=P, out=tmp_path / "b", progress=False, target_fpr=1e-12,
               suspect_name="budget copier 2", **_shadows(world))
    assert calls == [], "a refusal asks the suspect nothing"


def test_the_same_model_twice_is_refused(world, keys, tmp_path):
    with pytest.raises(InputError, match="given more than once"):
        verify(world["source"], world["suspect_innocent"], keys=keys, profile=P, out=tmp_path / "a", progress=False,
               innocent_shadows=[world["shadow_innocent_0"], world["shadow_innocent_0"], world["shadow_innocent_1"]])
    with pytest.raises(InputError, match="given more than once"):
        verify(world["source"], world["shadow_innocent_0"], keys=keys, profile=P, out=tmp_path / "b", progress=False,
               innocent_shadows=[world["shadow_innocent_0"], world["shadow_innocent_1"]])
    twin = _stranger(5)
    with pytest.raises(InputError, match="one model given twice"):
        verify(world["source"], _stranger(6), keys=keys, profile=P, out=tmp_path / "c", progress=False,
               innocent_shadows=[twin, twin, _stranger(7)])


def test_non_finite_distances_are_refused(world, keys, tmp_path):
    class NaNSuspect:
        name = "nan suspect"

        def generate(self, prompts, seeds, size, progress):
            return np.full((len(prompts), size, size, 3), np.nan)

    with pytest.raises(InputError, match="not finite"):
        verify(world["source"], NaNSuspect(), keys=keys, profile=P, out=tmp_path, progress=False, **_shadows(world))


def test_key_samples_with_missing_images_are_refused(world, keys, tmp_path, capsys):
    broken = tmp_path / "keys"
    shutil.copytree(keys, broken)
    next(broken.glob("*.png")).unlink()
    args = _cli(world, keys, tmp_path)
    args[args.index("--keys") + 1] = str(broken)
    assert main(args) == 2
    assert "does not exist" in capsys.readouterr().err


def test_missing_source_and_missing_null_are_refused(world, keys, tmp_path, capsys):
    args = _cli(world, keys, tmp_path)
    args[args.index("--source") + 1] = str(tmp_path / "nope")
    assert main(args) == 2
    assert "source model" in capsys.readouterr().err
    with pytest.raises(InputError, match="no innocent null"):
        verify(world["source"], world["suspect_innocent"], keys=keys, profile=P, out=tmp_path / "x", progress=False)
    with pytest.raises(InputError, match="1 innocent shadow model.s. given, and the null needs at least 2"):
        verify(world["source"], world["suspect_innocent"], keys=keys, profile=P, out=tmp_path / "y", progress=False,
               innocent_shadows=[world["shadow_innocent_0"]])
    assert not (tmp_path / "y").exists(), "refused before anything is written"


@pytest.mark.parametrize("extra, expect", [(["--n-keys", "0"], "at least 1 key"), (["--delta0", "0"], "positive number"),
                                           (["--delta0", "nan"], "positive number"), (["--budget", "0"], "positive number")])
def test_nonsense_numbers_are_refused(world, keys, tmp_path, capsys, extra, expect):
    assert main(_cli(world, keys, tmp_path, *extra)) == 2
    assert expect in capsys.readouterr().err


def test_an_out_folder_holding_a_model_is_refused(world, keys, tmp_path, capsys):
    args = _cli(world, keys, tmp_path)
    args[args.index("--out") + 1] = str(world["root"])  # the folder that holds every model of this test
    assert main(args) == 2
    assert "overlap" in capsys.readouterr().err


def test_a_callable_may_return_floats_or_pil_and_bad_shapes_are_refused(world, keys, tmp_path):
    from PIL import Image

    copier = _copier(world, keys)
    as_float = verify(world["source"], lambda p, s: copier(p, s) / 255.0, keys=keys, controls=world["root"] / "controls",
                      profile=P, out=tmp_path / "f", progress=False, delta0=0.05, suspect_name="float copier")
    as_pil = verify(world["source"], lambda p, s: Image.fromarray(copier(p, s)), keys=keys, controls=world["root"] / "controls",
                    profile=P, out=tmp_path / "p", progress=False, delta0=0.05, suspect_name="pil copier")
    assert as_float.verdict == as_pil.verdict == "infringing"
    with pytest.raises(InputError, match="returned an array of shape"):
        verify(world["source"], lambda p, s: np.zeros((4, 4)), keys=keys, controls=world["root"] / "controls",
               profile=P, out=tmp_path / "b", progress=False, delta0=0.05, suspect_name="broken")


def test_pipeline_suspects_load_on_the_profiles_device_and_dtype(saved_pipeline, monkeypatch, tmp_path):
    """A GPU profile queries every shadow on the GPU in its dtype, not on the CPU in fp32."""
    from types import SimpleNamespace

    import torch

    from genlineage.verify import suspect as sus, verdict

    seen = []
    real = sus.load_pipeline
    monkeypatch.setattr(sus, "load_pipeline", lambda path, device="cpu", dtype=torch.float32, trust=None:
                        (seen.append((device, dtype)), real(path, device=device, dtype=dtype, trust=trust))[1])
    P = load_profile("smoke", {"dtype": "bfloat16"})
    run = SimpleNamespace(profile=P, generation=P.generation, cache_dir=tmp_path / "cache")
    model = verdict._suspect(saved_pipeline, run, "innocent shadow")
    assert seen == [], "nothing is loaded before an image is needed"
    assert model.components.unet.dtype == torch.bfloat16 and seen == [("cpu", torch.bfloat16)]


def test_a_suspect_whose_images_are_all_cached_is_never_loaded_and_gives_the_same_images(saved_pipeline, monkeypatch,
                                                                                          tmp_path):
    """The cache is keyed on the files' content, computed without loading: a shadow asked before
    (every stage's shadows, an owner's re-check) costs no load; a new image loads it once."""
    from types import SimpleNamespace

    from genlineage.models.pipeline_io import model_content_id
    from genlineage.verify import suspect as sus, verdict

    loads = []
    real = sus.load_sd_pipeline
    monkeypatch.setattr(sus, "load_sd_pipeline", lambda *a, **k: (loads.append(a[0]), real(*a, **k))[1])
    P = load_profile("smoke")
    run = SimpleNamespace(profile=P, generation=P.generation, cache_dir=tmp_path / "cache")
    prompts, seeds = ["a red star on a plain background", "a blue circle on a grassy background"], [0, 1]
    first = verdict._suspect(saved_pipeline, run, "innocent shadow")
    drawn = first.generate(prompts, seeds, 32, progress=False)
    assert len(loads) == 1 and model_content_id(saved_pipeline) == first.components.content_id
    again = verdict._suspect(saved_pipeline, run, "innocent shadow")
    np.testing.assert_array_equal(again.generate(prompts, seeds, 32, progress=False), drawn)
    assert len(loads) == 1, "every image was cached: the second suspect never loaded"
    again.generate(prompts + ["a green star on a plain background"], seeds + [2], 32, progress=False)
    assert len(loads) == 2, "a missing image loads the model"
    with pytest.raises(InputError, match="generates 32 px images but the key samples are 64 px"):
        verdict._suspect(saved_pipeline, run, "innocent shadow").generate(prompts, seeds, 64, progress=False)
