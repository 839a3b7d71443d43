"""The smoke profile end to end: every stage through the library, then every notebook through
run_all's runner, nbval over the executed copies, and a run killed mid-stage that resumes to the
same tables."""
from __future__ import annotations

import copy
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pytest

from genlineage import layout
from genlineage.experiments.memorisation import memorisation_checks, memorisation_table
from genlineage.experiments.source_models import build_source_models, stage_costs
from genlineage.config import load_profile
from genlineage.data.imagefolder import read_imagefolder
from genlineage.experiments.instance_attribution import run_attribution
from genlineage.experiments.instance_tables import deltas, table2, table2_per_model
from genlineage.experiments.statistical_attribution import score_models, table1
from genlineage.experiments.suspicious_models import build_suspicious_models
from genlineage.experiments.world_grid import choose_world
from genlineage.config import WORLD_FILE, Profile
from genlineage.models.pipeline_io import load_pipeline

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def smoke_root(tmp_path_factory):
    """One data root for the module: the stage test builds, the notebook test reuses its cache."""
    return tmp_path_factory.mktemp("smoke_e2e")


@pytest.fixture()
def P(smoke_root, monkeypatch):
    monkeypatch.setenv("GENLINEAGE_DATA", str(smoke_root))
    return load_profile("smoke")


@pytest.mark.slow
def test_stages_build_six_sources_and_measure_them(P):
    sources = build_source_models(P, progress=False)
    assert list(sources.source) == ["v1", "v1-cc3m", "v1-celeba", "v2", "v2-cc3m", "v2-celeba"]
    for path in sources.path:
        comp = load_pipeline(path)
        assert comp.image_size == P["data"]["image_size"]
    assert load_pipeline(layout.base_dir(P, "v2")).prediction_type == "v_prediction"
    assert load_pipeline(layout.source_dir(P, "v1", "celeba")).provenance["base"] == "v1"

    stamps = {p: (Path(p) / "genlineage.json").stat().st_mtime_ns for p in sources.path}
    build_source_models(P, progress=False)  # cached: nothing is trained again
    assert stamps == {p: (Path(p) / "genlineage.json").stat().st_mtime_ns for p in sources.path}
    assert not any(layout.work_dir(P).glob("*/checkpoint")), "finished runs leave no checkpoint"

    summary, per_sample = memorisation_table(P)
    assert len(summary) == 8 and summary.nearest_own.between(0, 1).all()
    assert set(per_sample.split) == {"own", "heldout"}
    checks = memorisation_checks(summary, per_sample)
    assert len(checks) == 4
    costs = stage_costs(P)
    assert costs.seconds.notna().all()


@pytest.mark.slow
def test_suspicious_models_and_attribution(P):
    P, grid, cells = choose_world(P, progress=False)  # stage 03 chooses the world on shadows first
    assert cells.chosen.sum() == 1 and (P.data_root / WORLD_FILE).is_file()
    assert P.suspicious.n_samples == int(cells[cells.chosen].n_samples.iloc[0]) == 6, "the world reaches the manifest"
    assert grid.pool.str.endswith("_shadow_pool").all() and grid[["mean_rd", "own_rd", "nearest_own"]].notna().all().all()
    manifest = build_suspicious_models(P, progress=False)
    cfg = P["suspicious"]
    per_lineage = len(cfg["rhos"]) * cfg["evaluated"]["infringing"] + cfg["evaluated"]["innocent"] \
        + cfg["shadow"]["infringing"] + cfg["shadow"]["innocent"]
    assert len(manifest) == 6 * len(cfg["lineages"]) * per_lineage * len(cfg["replicates"])
    assert manifest.name.is_unique
    assert sorted(manifest.replicate.unique()) == sorted(cfg["replicates"])
    evaluated = manifest[manifest.role == "evaluated"]  # (a shadow's rho, in its name, is drawn per replicate)
    seeds = evaluated.assign(stem=evaluated.name.str.rsplit("__s", n=1).str[0]).pivot(
        index="stem", columns="replicate", values="seed")
    assert (seeds.nunique(axis=1) == len(cfg["replicates"])).all(), "each replicate draws its own model seeds"
    assert (manifest.label == (manifest.rho > 0)).all()
    assert set(manifest[manifest.role == "shadow"].pool.str.split("_", n=1).str[1]) == {"shadow_pool"}
    assert set(manifest[manifest.role == "evaluated"].pool.str.split("_", n=1).str[1]) == {"suspicious_pool"}
    assert (manifest[manifest.lineage == "other"].base != manifest[manifest.lineage == "other"].source_base).all()
    row = manifest[(manifest.rho == 0.5) & (manifest.role == "evaluated")].iloc[0]
    data = read_imagefolder(P.data_root / "suspicious_data" / row["name"])
    origins = [r["origin"] for r in data.records]
    assert origins.count("generated") == round(0.5 * cfg["n_samples"])
    assert load_pipeline(row["path"]).provenance["rho"] == 0.5

    models, per_sample = run_attribution(P, progress=False)
    assert set(per_sample.strategy) == {"detection", "generation", "random"}
    assert set(per_sample.model) == set(manifest.name)
    assert models.watermark_bit_accuracy.between(0, 1).all()
    D, curve = deltas(P, models, per_sample)
    assert set(D["calibrated"]) == set(manifest.source) == set(curve.source)  # a delta0 per source
    assert all(d == 0.15 for d in D["paper"].values()) and all(0 < d < 1 for d in D["calibrated"].values())
    per_model = table2_per_model(P, models, per_sample, D["calibrated"])
    assert len(per_model) == 6 * (cfg["evaluated"]["innocent"] + 1) * len(cfg["replicates"])
    t2 = table2(per_model)
    assert t2.model.nunique() == 6 + 2 and set(t2.scale) == {"abs", "rel"}

    def ids(name: str) -> set:
        return {r["id"] for r in read_imagefolder(P.data_root / "suspicious_data" / name).records}

    shadow_ids = set().union(*(ids(n) for n in manifest[manifest.role == "shadow"].name))
    evaluated_ids = set().union(*(ids(n) for n in manifest[manifest.role == "evaluated"].name))
    assert not shadow_ids & evaluated_ids, "shadow and evaluated models share training data"

    scored = score_models(P, models, per_sample)
    assert set(scored.model) == set(manifest[manifest.role == "evaluated"].name)
    t1 = table1(P, scored)
    assert set(t1.score) == {"discriminator", "conf"} and len(t1) == 12


def _all_results(profile) -> list:
    """Every cached result of stages 01-04 as a run would judge it now."""
    from genlineage.data import build
    from genlineage.experiments import instance_attribution, memorisation, source_models, suspicious_models

    return [r for stage in (build, source_models, memorisation, suspicious_models, instance_attribution)
            for r in stage.stage_results(profile)]


def _stale(profile) -> set[str]:
    from genlineage.cache import stale

    return {p.relative_to(profile.data_root).as_posix() for p in stale(_all_results(profile))}


def _changed(P, dotted: str, value) -> Profile:
    other = copy.deepcopy(dict(P))
    *path, last = dotted.split(".")
    node = other
    for part in path:
        node = node[part]
    node[last] = value
    return Profile(other)


@contextmanager
def _edited(path: Path, edit):
    """``path``'s bytes changed by ``edit`` for the block, then put back exactly."""
    original = path.read_bytes()
    path.write_bytes(edit(original))
    try:
        yield
    finally:
        path.write_bytes(original)


@pytest.mark.slow
def test_changing_an_input_redoes_exactly_the_work_that_depends_on_it(P):
    """Each setting and each piece of content in turn: the results a run would redo are exactly
    the ones made from it (the expected sets are written out from the manifest, not from the
    code under test); then one change is carried through: the rebuilt key sets make every query
    stale and nothing else, and changing the setting back makes the world fresh again."""
    from genlineage.study.queries import build_keys
    from genlineage.study.manifest import plan_manifest, plan_null_shadows

    assert _stale(P) == set(), "a finished build: nothing to redo"
    M = plan_manifest(P)
    N = plan_null_shadows(P)  # stage 03's shared innocent shadows: trained like the manifest's, never queried in 04
    assert len(N) and set(N.label) == {0}
    ts = lambda rows: {f"suspicious_data/{n}" for n in rows.name}  # noqa: E731
    mdl = lambda rows: {f"models/suspicious/{n}" for n in rows.name}  # noqa: E731
    q = {f"results/04_attribution/per_model/{n}.csv" for n in M.name}
    sources = sorted(M.source.unique())
    tuned = [s for s in sources if "-" in s]
    keys = lambda srcs, strategies: {f"results/keys/{s}/{k}" for s in srcs for k in strategies}  # noqa: E731
    mem = lambda base, domain, kind: f"results/02_source_models/rd_{base}_{domain}_{kind}.csv"  # noqa: E731
    all_mem = {mem(b, d, k) for b in ("v1", "v2") for d in ("cc3m", "celeba") for k in ("source", "base")}
    generated = M[M.rho > 0]
    att, sus = P["attribution"], P["suspicious"]

    settings = {
        "suspicious.train.steps": (sus["train"]["steps"] + 1, mdl(M) | mdl(N)),
        "suspicious.watermark_generated": (not sus.get("watermark_generated"), ts(generated)),
        "attribution.random_seed": (int(att.get("random_seed", 0)) + 7, keys(sources, ["random"])),
        "attribution.generation_relative_to_base": (not att.get("generation_relative_to_base", True),
                                                    keys(tuned, ["generation"])),
        "attribution.query_seeds": ([5, 6], q),
        "attribution.watermark.n_images": (att["watermark"]["n_images"] + 1, q),
        "memorisation.seeds": ([2, 3], all_mem),
        "generation.steps": (P["generation"]["steps"] + 1,
                             ts(generated) | keys(sources, ["detection", "generation"]) | q | all_mem),
    }
    for dotted, (value, expected) in settings.items():
        assert _stale(_changed(P, dotted, value)) == expected, dotted

    flip_last = lambda b: b[:-1] + bytes([b[-1] ^ 1])  # noqa: E731
    root = P.data_root
    with _edited(root / "models" / "v1_celeba" / "unet" / "diffusion_pytorch_model.safetensors", flip_last):
        assert _stale(P) == ts(generated[generated.source == "v1-celeba"]) | keys(["v1-celeba"], ["detection", "generation"]) \
            | {mem("v1", "celeba", "source")}, "a source's weights"
    with _edited(root / "models" / "base_v1" / "unet" / "diffusion_pytorch_model.safetensors", flip_last):
        assert _stale(P) == {"models/v1_celeba", "models/v1_cc3m"} | ts(generated[generated.source == "v1"]) \
            | mdl(M[M.base == "v1"]) | mdl(N[N.base == "v1"]) | keys(["v1"], ["detection", "generation"]) \
            | keys(["v1-cc3m", "v1-celeba"], ["generation"]) \
            | {mem("v1", "celeba", "base"), mem("v1", "cc3m", "base")}, "a base's weights"
    caption = lambda b: b.replace(b'"text": "', b'"text": "an edited ', 1)  # noqa: E731
    with _edited(root / "datasets" / "celeba_source" / "metadata.jsonl", caption):
        assert _stale(P) == {"models/v1_celeba", "models/v2_celeba"} \
            | keys(["v1-celeba", "v2-celeba"], ["detection", "generation", "random"]) \
            | {mem(b, "celeba", k) for b in ("v1", "v2") for k in ("source", "base")}, "the candidates (a source set)"
    with _edited(root / "datasets" / "celeba_suspicious_pool" / "metadata.jsonl", caption):
        assert _stale(P) == ts(M[M.pool == "celeba_suspicious_pool"]), "a pool"
    assert _stale(P) == set(), "every edit put back: fresh again"

    other = _changed(P, "attribution.random_seed", int(att.get("random_seed", 0)) + 7)
    before = {s: (root / "results" / "keys" / s / "detection" / "_stamp.json").stat().st_mtime_ns for s in sources}
    for source in sources:
        build_keys(dict(other), source)
    assert _stale(other) == q, "new random key sets: every query is redone, nothing else"
    assert before == {s: (root / "results" / "keys" / s / "detection" / "_stamp.json").stat().st_mtime_ns for s in sources}
    for source in sources:
        build_keys(dict(P), source)
    assert _stale(P) == set(), "the setting back: the same key sets, every query fresh again"


def _env(data_root: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}  # the kernel's inline backend embeds figures
    env.update(GENLINEAGE_DATA=str(data_root), HF_HUB_OFFLINE="1")
    return env


def _runner(data_root: Path, out: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "genlineage.runner", "smoke", "--no-progress", "--out", str(out), *args]


@pytest.mark.slow
def test_notebooks_run_at_the_smoke_profile_and_pass_nbval(smoke_root, tmp_path):
    """run_all's runner executes every stage notebook; nbval re-runs the executed copies and the
    table cells (# NBVAL_CHECK_OUTPUT) match through the sanitize file, as a reviewer checks them."""
    notebooks = sorted(p.stem for p in (REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    assert notebooks[:2] == ["01_datasets", "02_source_models"] and notebooks[-1] == "10_lora_ablation"
    result = subprocess.run(_runner(smoke_root, tmp_path), env=_env(smoke_root), capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    for i, nb in enumerate(notebooks, 1):
        assert f"[run_all] stage {i}/{len(notebooks)}: {nb} (profile smoke)" in result.stdout
        assert (tmp_path / "smoke" / f"{nb}.ipynb").is_file()
    assert (smoke_root / "smoke" / "figures" / "02_memorisation_rd.png").is_file()
    executed = json.loads((tmp_path / "smoke" / "02_source_models.ipynb").read_text())
    assert any("image/png" in o.get("data", {}) for c in executed["cells"] for o in c.get("outputs", [])), \
        "figures are embedded in the executed notebook"
    report = (smoke_root / "smoke" / "REPRODUCTION.md").read_text()
    assert "## The paper's claims (section 3) beside ours" in report and "| 03_suspicious_models |" in report

    checked = sum("# NBVAL_CHECK_OUTPUT" in "".join(c["source"]) for nb in notebooks
                  for c in json.loads((REPO / "notebooks" / f"{nb}.ipynb").read_text())["cells"])
    assert checked >= 15, "the table cells are marked for nbval"
    nbval = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval-lax",
                            "--nbval-sanitize-with", str(REPO / "tests" / "nbval_sanitize.cfg"), str(tmp_path / "smoke")],
                           env=_env(smoke_root), capture_output=True, text=True, cwd=tmp_path)
    assert nbval.returncode == 0, nbval.stdout[-4000:]


@pytest.mark.slow
def test_stage_08_asks_its_sources_and_suspects_as_parallel_jobs_to_the_same_tables(P, smoke_root):
    """Stage 08's loops (each source's shadows for the choice of statistic, each suspect's verdict)
    run as spawned jobs when the profile has cores for them: the tables are those of one process."""
    from genlineage.experiments.model_owner_verify import statistic_selection, verify_evaluated
    in_parallel = load_profile("smoke", {"parallel_jobs": 2})
    assert in_parallel.run.parallel_jobs == 2
    serial_choice = statistic_selection(P, progress=False)
    statistic = serial_choice[2]
    serial = {pool: verify_evaluated(P, progress=False, innocent_pool=pool, statistic=statistic)
              for pool in ("population", "controls")}
    results = layout.results_dir(P, "08_verify")
    for made in [results / "statistic_selection.csv", *(results / f"verdicts_{pool}.csv" for pool in serial)]:
        made.unlink()  # the stamp stays: the parallel run must make the table again, not read it
    parallel_choice = statistic_selection(in_parallel, progress=False)
    pd.testing.assert_frame_equal(parallel_choice[0], serial_choice[0])
    assert parallel_choice[2] == statistic
    for pool, table in serial.items():
        again = verify_evaluated(in_parallel, progress=False, innocent_pool=pool, statistic=statistic)
        pd.testing.assert_frame_equal(again, table)
        assert (again.verdict != "refused").any() or pool == "controls"


@pytest.mark.slow
def test_the_report_refuses_a_missing_or_stale_table(P):
    """The report reads the tables of notebooks 02, 04, 05 and 08 and recomputes none: a table
    whose stamp does not match its inputs, or a missing one, stops it with the notebook to re-run."""
    from genlineage.cache import StaleResult
    from genlineage.experiments.reproduction_report import all_claims

    results = P.data_root / "results"
    assert (results / "08_verify" / "pools.csv").is_file(), "runs after the notebook test"
    claims = all_claims(P)
    owner = claims[claims.section == "model owner's tool"]["paper's claim"]
    assert owner.str.contains("null: ").sum() == 2, "one row per innocent pool (population, controls)"
    assert owner.str.contains("false-positive rate on evaluated innocents").sum() == 3, "the 1%, 5% and 10% targets"
    assert owner.str.contains("infringing models called at target 0.05").sum() == len(P.suspicious.rhos), "one per rho"
    table1 = results / "05_statistical" / "table1.csv"
    with _edited(table1, lambda b: b.replace(b"discriminator", b"discriminatoR", 1)):
        with pytest.raises(StaleResult, match=r"table1\.csv.*re-run notebook 05_statistical_attribution"):
            all_claims(P)
    per_sample = results / "04_attribution" / "per_sample.csv"
    with _edited(per_sample, lambda b: b + b"\n"):
        with pytest.raises(StaleResult, match=r"per_sample\.csv.*re-run notebook 04_instance_attribution"):
            all_claims(P)
    per_model = sorted((results / "04_attribution" / "per_model").glob("*.csv"))[0]
    with _edited(per_model, lambda b: b + b"\n"):
        with pytest.raises(StaleResult, match=r"(models|per_sample)\.csv.*per_model changed"):
            all_claims(P)
    pools = results / "08_verify" / "pools.csv"
    kept = pools.read_bytes()
    pools.unlink()
    try:
        with pytest.raises(StaleResult, match=r"pools\.csv is missing.*re-run notebook 08_model_owner_verify"):
            all_claims(P)
    finally:
        pools.write_bytes(kept)
    pd.testing.assert_frame_equal(all_claims(P), claims)


@pytest.mark.slow
def test_a_killed_run_resumes_to_the_same_tables(smoke_root, tmp_path):
    """Kill run_all in the middle of stage 03 (SIGKILL, the whole process group), run stages 03-05
    again, this time on the Ray engine (a local instance): they complete, and every table they make
    equals the uninterrupted run's on the local pool (no half-written file was read, and the
    engines agree). Everything from stage 03 on is removed but the per-image generation cache,
    which is keyed on the models' content: the retrained models must come out byte-identical to hit
    it. Stages 06-10 build on stage 04's tables (their stamps name them), which are compared here
    whole, so they are left out to keep CI within its budget."""
    complete = smoke_root / "smoke"
    assert (complete / "tables" / "table1_statistical.csv").is_file(), "runs after the notebook test"
    killed = tmp_path / "data"
    shutil.copytree(complete, killed / "smoke", ignore=shutil.ignore_patterns(
        "suspicious", "suspicious_data", "manifest.csv", "04_attribution", "05_statistical", "08_verify", "keys",
        "tables", "REPRODUCTION.md"))
    proc = subprocess.Popen(_runner(killed, tmp_path / "out", "--from", "03"), env=_env(killed), cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    models = killed / "smoke" / "models" / "suspicious"
    deadline = time.monotonic() + 600
    while not list(models.glob("*/genlineage.json")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert proc.poll() is None, "stage 03 finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    n_total = len(pd.read_csv(complete / "manifest.csv"))
    assert 0 < len(list(models.glob("*/genlineage.json"))) < n_total, "killed in the middle of stage 03"

    stages = [arg for n in ("03", "04", "05") for arg in ("--only", n)]
    again = subprocess.run(_runner(killed, tmp_path / "out", *stages, "--executor", "ray"), env=_env(killed),
                           capture_output=True, text=True, cwd=REPO)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-3000:]
    made = sorted((killed / "smoke" / "tables").glob("*.csv"))
    assert {p.name for p in made} == {"table1_statistical.csv", "world_grid.csv", "coverage.csv", "inheritance.csv"}
    for table in made:
        pd.testing.assert_frame_equal(pd.read_csv(table), pd.read_csv(complete / "tables" / table.name))
    for name in ("per_sample.csv", "models.csv"):
        a = pd.read_csv(killed / "smoke" / "results" / "04_attribution" / name)
        b = pd.read_csv(complete / "results" / "04_attribution" / name)
        pd.testing.assert_frame_equal(a.drop(columns=[c for c in a if "path" in c]),
                                      b.drop(columns=[c for c in b if "path" in c]))
    assert not list((killed / "smoke").rglob("*.part")), "no partial file is left under any name a stage reads"


@pytest.mark.slow
def test_verify_command_runs_on_smoke_profile_models_and_reports_what_it_decided(smoke_root, tmp_path, monkeypatch):
    """The installed console script on the pipeline's own models: a rho = 1 evaluated suspect and an
    innocent one, the source's stored Strategy-2 keys, the innocent shadows made like them (same base,
    same domain) as the null, as notebook 08 does. At smoke size the verdicts mean nothing (models trained 3 steps), so which
    verdict comes out is not checked; what must hold is the whole path: safe loading, querying, a
    verdict that follows from its p-value, a report that says it, the query count."""
    from genlineage.study.queries import keys_dir
    from genlineage.experiments.model_owner_verify import all_shadows, population_paths

    monkeypatch.setenv("GENLINEAGE_DATA", str(smoke_root))
    P = load_profile("smoke")
    manifest = pd.read_csv(smoke_root / "smoke" / "manifest.csv")
    m = manifest[manifest.source == "v1-celeba"]
    args = [str(Path(sys.executable).parent / "genlineage"), "verify", "--source", m.source_path.iloc[0],
            "--keys", str(keys_dir(P, "v1-celeba", "generation")), "--profile", "smoke", "--quiet"]
    same = m[m.lineage == "same"].iloc[0]
    for path in population_paths(all_shadows(P), same.base, same.domain):  # made like the suspects (notebook 08's rule)
        args += ["--innocent-shadow", path]
    for path in m[(m.role == "shadow") & (m.label == 1)].path:
        args += ["--infringing-shadow", path]
    for rho in (1.0, 0.0):
        suspect = m[(m.role == "evaluated") & (m.rho == rho) & (m.lineage == "same")].path.iloc[0]
        out = tmp_path / f"rho{rho:g}"
        result = subprocess.run(args + ["--suspect", suspect, "--out", str(out), "--target-fpr", "0.2"],
                                env=_env(smoke_root), capture_output=True, text=True, cwd=tmp_path)
        assert result.returncode == 0, result.stderr[-3000:]
        verdict = json.loads((out / "verdict.json").read_text())
        expected = "infringing" if verdict["p_value"] <= verdict["target_fpr"] else "not shown"
        assert verdict["verdict"] == expected, "the verdict follows from the p-value and the target FPR"
        assert (out / "report.md").read_text().startswith(f"# genlineage verify: **{expected}**")
        assert verdict["queries"] == verdict["n_keys"] * len(P.attribution.query_seeds)
        assert (out / "report.md").is_file() and (out / "rd_histogram.png").is_file()
