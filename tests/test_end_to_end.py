"""The smoke profile end to end: datasets, VAE, bases, sources, memorisation; cached re-runs;
and notebooks 01-02 executed by papermill."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from genlineage.experiments import layout
from genlineage.experiments.memorisation import memorisation_checks, memorisation_table
from genlineage.experiments.source_models import build_source_models, stage_costs
from genlineage.config import load_profile
from genlineage.data.imagefolder import read_imagefolder
from genlineage.experiments.attribution import run_attribution
from genlineage.experiments.instance import deltas, table2
from genlineage.experiments.statistical import score_models, table1
from genlineage.experiments.suspicious import build_suspicious_models
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
    checks = memorisation_checks(P, summary)
    assert len(checks) == 4
    costs = stage_costs(P)
    assert costs.seconds.notna().all()


@pytest.mark.slow
def test_suspicious_models_and_attribution(P):
    manifest = build_suspicious_models(P, progress=False)
    cfg = P["suspicious"]
    per_lineage = len(cfg["rhos"]) * cfg["evaluated"]["infringing"] + cfg["evaluated"]["innocent"] \
        + cfg["shadow"]["infringing"] + cfg["shadow"]["innocent"]
    assert len(manifest) == 6 * len(cfg["lineages"]) * per_lineage
    assert manifest.name.is_unique
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
    D, _ = deltas(P, models, per_sample)
    assert D["paper"] == 0.15 and 0 < D["calibrated"] < 1
    assert len(table2(P, models, per_sample)) == 7

    def ids(name: str) -> set:
        return {r["id"] for r in read_imagefolder(P.data_root / "suspicious_data" / name).records}

    shadow_ids = set().union(*(ids(n) for n in manifest[manifest.role == "shadow"].name))
    evaluated_ids = set().union(*(ids(n) for n in manifest[manifest.role == "evaluated"].name))
    assert not shadow_ids & evaluated_ids, "shadow and evaluated models share training data"

    scored = score_models(P, models, per_sample)
    assert set(scored.model) == set(manifest[manifest.role == "evaluated"].name)
    t1 = table1(P, scored)
    assert set(t1.score) == {"discriminator", "conf"} and len(t1) == 12


@pytest.mark.slow
def test_notebooks_run_at_the_smoke_profile(smoke_root, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}  # the kernel's inline backend embeds figures
    env.update(GENLINEAGE_DATA=str(smoke_root), HF_HUB_OFFLINE="1")
    notebooks = sorted(p.stem for p in (REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    assert notebooks[:2] == ["01_datasets", "02_source_models"]
    for nb in notebooks:
        out = tmp_path / f"{nb}.ipynb"
        result = subprocess.run([sys.executable, "-m", "papermill", "-k", "python3", "-p", "profile", "smoke",
                                 str(REPO / "notebooks" / f"{nb}.ipynb"), str(out)],
                                env=env, capture_output=True, text=True, cwd=REPO)
        assert result.returncode == 0, result.stderr[-3000:]
    assert (smoke_root / "smoke" / "figures" / "02_memorisation_rd.png").is_file()
    executed = json.loads((tmp_path / "02_source_models.ipynb").read_text())
    assert any("image/png" in o.get("data", {}) for c in executed["cells"] for o in c.get("outputs", [])), \
        "figures are embedded in the executed notebook"
