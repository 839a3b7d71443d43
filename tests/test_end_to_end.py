"""The smoke profile end to end: datasets, VAE, bases, sources, memorisation; cached re-runs;
and notebooks 01-02 executed by papermill."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from genlineage.experiments import layout
from genlineage.experiments.memorisation import memorisation_checks, memorisation_table
from genlineage.experiments.source_models import build_source_models, stage_costs
from genlineage.models.pipeline_io import load_pipeline

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_stages_build_six_sources_and_measure_them(smoke_profile):
    P = smoke_profile
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
def test_notebooks_run_at_the_smoke_profile(tmp_path):
    env = {**os.environ, "GENLINEAGE_DATA": str(tmp_path / "data"), "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg"}
    for nb in ("01_datasets", "02_source_models"):
        out = tmp_path / f"{nb}.ipynb"
        result = subprocess.run([sys.executable, "-m", "papermill", "-k", "python3", "-p", "profile", "smoke",
                                 str(REPO / "notebooks" / f"{nb}.ipynb"), str(out)],
                                env=env, capture_output=True, text=True, cwd=REPO)
        assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "data" / "smoke" / "figures" / "02_memorisation_rd.png").is_file()
