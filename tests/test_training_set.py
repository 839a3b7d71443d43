"""The one training-set job (genlineage.training_set): its key follows exactly its declared inputs,
and stage 03 and ``genlineage shadows`` declare the same set for the same pool, seed, n and rho."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from genlineage.data.imagefolder import read_imagefolder, write_imagefolder
from genlineage.models.gate import Trust
from genlineage.training_set import TrainingSetJob

SIDE = 8


def _pool(folder: Path, n: int = 12) -> Path:
    rng = np.random.default_rng(3)
    items = ((rng.integers(0, 256, (SIDE, SIDE, 3), dtype=np.uint8), f"caption {i}", {"id": f"pool-{i}"})
             for i in range(n))
    write_imagefolder(folder, items)
    return folder


def _job(tmp_path: Path, **changes) -> TrainingSetJob:
    job = TrainingSetJob(out=tmp_path / "set", pool=tmp_path / "pool", n_samples=4, rho=0.0, seed=7, image_size=SIDE)
    return dataclasses.replace(job, **changes)


def test_the_key_follows_every_declared_input_and_nothing_else(tmp_path):
    _pool(tmp_path / "pool")
    _pool(tmp_path / "pool_other", n=13)
    key = _job(tmp_path).result().inputs
    for change in ({"n_samples": 5}, {"rho": 0.5, "source": tmp_path / "no-model", "generation": _generation()},
                   {"seed": 8}, {"image_size": 16}, {"pool": tmp_path / "pool_other"}):
        assert _job(tmp_path, **change).result().inputs != key, change
    for change in ({"cache": tmp_path / "elsewhere"}, {"device": "meta"}, {"dtype": torch.float16},
                   {"source_trust": Trust(owner=True)}, {"source": tmp_path / "unused"}, {"out": tmp_path / "b"}):
        assert _job(tmp_path, **change).result().inputs == key, f"{change} is not an input of an innocent set"


def test_a_set_with_generated_images_and_no_source_is_refused(tmp_path):
    _pool(tmp_path / "pool")
    with pytest.raises(ValueError, match="needs a source"):
        _job(tmp_path, rho=0.5).result()


def _generation():
    from genlineage.config import load_profile

    return load_profile("smoke").generation


def test_a_written_set_takes_the_rows_its_seed_draws_and_generates_the_first_rho_n(tmp_path, monkeypatch):
    pool = read_imagefolder(_pool(tmp_path / "pool"), size=SIDE)
    job = _job(tmp_path, rho=0.5, source=tmp_path / "source", generation=_generation())
    monkeypatch.setattr("genlineage.training_set.fingerprint", lambda path: "a source's content")
    drawn: list[list[str]] = []

    def generate(self, captions):
        drawn.append(captions)
        return np.zeros((len(captions), SIDE, SIDE, 3), np.uint8)

    monkeypatch.setattr(TrainingSetJob, "generate", generate)
    written = read_imagefolder(job.build())
    chosen = job.chosen_rows(pool)
    assert [r["text"] for r in written.records] == [pool.records[i]["text"] for i in chosen]
    assert [r["origin"] for r in written.records] == ["generated"] * 2 + ["real"] * 2
    assert drawn == [[pool.records[i]["text"] for i in chosen[:2]]]
    assert job.result().fresh() and job.build() == job.out and len(drawn) == 1, "a fresh set is not written again"


def test_stage_03_and_genlineage_shadows_declare_the_same_innocent_set(smoke_profile, tmp_path):
    """Issue 25.1: one job serves both; a shadow trained on the same pool with the same seed and n
    is keyed (and drawn) exactly like a stage-03 model."""
    from genlineage import layout
    from genlineage.experiments.suspicious_models import training_set_job as stage_03_job
    from genlineage.verify.shadows import training_set_job as shadows_job

    pool = _pool(layout.datasets_dir(smoke_profile) / "celeba_shadow_pool")
    row = {"name": "m", "source": "v1-celeba", "source_path": "unused", "pool": pool.name, "rho": 0.0,
           "n_samples": 4, "seed": 11}
    settings = {"profile": dict(smoke_profile), "data": str(pool), "out": str(tmp_path / "owner")}
    ours, theirs = stage_03_job(smoke_profile, row), shadows_job(row, settings)
    assert type(ours) is type(theirs) is TrainingSetJob
    assert ours.result().inputs == theirs.result().inputs
