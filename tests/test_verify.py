"""``genlineage verify`` on smoke-sized models built here: a source that memorises six pairs, a
rho = 1 suspect fine-tuned on the source's generations only, innocent models fine-tuned on other
pairs of the domain. The tool must call the first infringing and the others not shown, and refuse
every bad or unsafe input with a clear message and exit status 2."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import CAPTIONS
from genlineage.cli import main
from genlineage.config import load_profile
from genlineage.data.imagefolder import write_imagefolder
from genlineage.errors import InputError
from genlineage.generation import GenerationCache, GenerationConfig, generate_cached
from genlineage.keys import KeySet
from genlineage.models.pipeline_io import load_pipeline
from genlineage.training.finetune import finetune_folder
from genlineage.training.sd import TrainConfig
from genlineage.verify import null, select_keys, verify, write_report

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

    They exercise every path of the tool (loading, querying, caching, reports, refusals). Their
    verdicts mean nothing: measured while writing these tests, smoke-sized models fine-tuned for
    hundreds of steps from a random base still ignore their captions (every prompt gave the same
    image), so nothing trained here in test time can memorise or inherit. The direction of the
    verdict is therefore tested with suspects whose behaviour is known (``_copier``, ``_stranger``),
    an innocent real pipeline must come out not shown, and the tiny profile's real models are judged
    in notebook 08. ``scripts/probe_smoke_verify_direction.py`` repeats the measurement: rho = 1
    smoke pipelines tuned on the source's generations were not separated from innocent ones."""
    root = tmp_path_factory.mktemp("verify_world")
    work = root / "work"
    write_imagefolder(root / "source_data", [(_pattern(i), CAPTIONS[i], {}) for i in range(6)])
    write_imagefolder(root / "controls", [(_pattern(50 + i), CAPTIONS[6 + i], {}) for i in range(6)])
    models = {"root": root, "base": saved_pipeline,
              "source": _train(saved_pipeline, root / "source_data", root / "source", work, seed=1)}
    for k, name in enumerate(("suspect_infringing", "suspect_innocent", "shadow_innocent_0", "shadow_innocent_1",
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
    from genlineage.verify.core import _shadow_plan

    innocent = _spread_then_tight([0.1, 0.5, 0.9])
    # floor p over n keys: t_2 at -0.5 n / (0.4 sqrt(4/3)); reaches 0.05 (t_2 = -2.92) from n = 3
    assert _shadow_plan(innocent, 0.05, 6, 2, None) == 6
    assert _shadow_plan(innocent, 0.05, 6, 2, 8) == 4
    # a budget of 2 keys is refused; the only other count suggested is all keys (not a count tuned on the shadows)
    with pytest.raises(InputError, match=r"all 6 keys would do, a budget of 12 \(6 keys x 2 seeds\)"):
        _shadow_plan(innocent, 0.05, 6, 2, 4)
    with pytest.raises(InputError, match="too spread"):  # 0.001 needs t_2 = -22.3: n >= 21
        _shadow_plan(innocent, 0.001, 6, 2, None)
    with pytest.raises(InputError, match="too spread"):  # equal shadows: no spread, nothing to compare with
        _shadow_plan(np.full((2, 6), 0.4), 0.05, 6, 2, None)


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
    before = _snapshot(world["suspect_infringing"])
    v = verify(world["source"], world["suspect_infringing"], keys=keys, profile=P, out=tmp_path, progress=False,
               **_shadows(world))
    assert v.verdict in ("infringing", "not shown") and 0 <= v.p_value <= 1 and v.discriminator_score is not None
    assert _snapshot(world["suspect_infringing"]) == before, "nothing is written inside the suspect's folder"
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
    assert first.verdict == again.verdict
    assert n == first.queries and len(calls) == n, "a re-run asks the suspect nothing twice"


# --- the command line ------------------------------------------------------------------------------

def _cli(world, keys, tmp_path, *extra: str, suspect: str | None = None) -> list[str]:
    args = ["verify", "--source", str(world["source"]), "--keys", str(keys), "--profile", "smoke", "--quiet",
            "--out", str(tmp_path / "out"), "--innocent-shadow", str(world["shadow_innocent_0"]),
            "--innocent-shadow", str(world["shadow_innocent_1"]), "--innocent-shadow", str(world["shadow_innocent_2"]),
            "--infringing-shadow", str(world["shadow_infringing"])]
    return args + ["--suspect", suspect or str(world["suspect_infringing"])] + list(extra)


def test_cli_verdict_and_report(world, keys, tmp_path, capsys):
    assert main(_cli(world, keys, tmp_path)) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["verdict"] in ("infringing", "not shown") and Path(printed["report"]).is_file()


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
    shutil.copytree(world["suspect_infringing"], folder)
    return folder


@pytest.mark.parametrize("case", ["missing", "not_diffusers", "other_architecture", "pickle", "symlink", "remote_code",
                                  "out_inside_suspect"])
def test_unsafe_or_wrong_suspects_are_refused(world, keys, tmp_path, capsys, case):
    folder = _copy(world, tmp_path)
    extra: list[str] = []
    expect = {"missing": "does not exist", "not_diffusers": "no model_index.json", "other_architecture": "StableDiffusionXLPipeline",
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
            "--suspect", str(world["suspect_infringing"]), "--target-fpr", "0.01"]
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
