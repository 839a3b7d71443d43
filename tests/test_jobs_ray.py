"""The Ray engine of genlineage.jobs on a local instance: the local pool's results, retries of a
job that raised or whose worker was killed (it resumes from its checkpoint), and a job that
fails every try named."""
from __future__ import annotations

import jobs_target
import pytest

from genlineage.jobs import Executor, JobFailed, executor_for, run_jobs

ray = pytest.importorskip("ray", reason="ray is in requirements.txt; this environment lacks it")
RAY = Executor("ray", retries=2)


@pytest.fixture(scope="module", autouse=True)
def _local_ray():
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def straight() -> str:
    """The weights of the local engine's uninterrupted fine-tune (seed 3)."""
    return run_jobs(jobs_target.train_checksum, [{"seed": 3}])[0]


def test_ray_gives_the_local_pools_results(straight):
    assert run_jobs(jobs_target.train_checksum, [{"seed": 3}], executor=RAY) == [straight]


def test_a_killed_worker_is_retried_and_its_job_resumes_to_the_same_weights(straight, tmp_path):
    killed = {"seed": 3, "work": str(tmp_path / "work"), "die_at": 2, "marker": str(tmp_path / "died")}
    assert run_jobs(jobs_target.train_checksum, [killed], executor=RAY) == [straight]
    assert (tmp_path / "died").exists(), "the first try did die"


def test_a_job_that_raised_once_is_retried(tmp_path):
    assert run_jobs(jobs_target.fail_once, [{"marker": str(tmp_path / "m")}], executor=RAY) == ["ok"]


def test_a_job_failing_every_try_stops_the_run_naming_it():
    jobs = [{"name": "x", "fail": True}, {"name": "y", "fail": False}]
    with pytest.raises(JobFailed, match=r"1 of 2 jobs_target.fail_or_pass jobs failed after 1 retries: name=x \("):
        run_jobs(jobs_target.fail_or_pass, jobs, executor=Executor("ray", retries=1))


def test_the_profile_or_the_environment_chooses_the_engine(monkeypatch):
    from genlineage.config import load_profile

    assert executor_for(load_profile("smoke").run) == Executor("local", None, 2, 0.0)
    assert executor_for(load_profile("paper").run).gpus_per_job == 1.0, "one GPU per job on a cuda profile"
    monkeypatch.setenv("GENLINEAGE_EXECUTOR", "ray")
    monkeypatch.setenv("GENLINEAGE_RAY_ADDRESS", "head:6379")
    assert executor_for(load_profile("smoke").run) == Executor("ray", "head:6379", 2, 0.0)


def test_verifys_shadow_queries_on_ray_equal_the_local_ones(saved_pipeline, tmp_path, monkeypatch):
    """Each shadow folder is a Ray task; the distances are the ones a local run computes."""
    import numpy as np

    from genlineage.config import load_profile
    from genlineage.key_sets import KeySet
    from genlineage.verify.verdict import VerifySettings, query_kind

    from conftest import CAPTIONS

    profile = load_profile("smoke")
    references = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    keys = KeySet("generation", CAPTIONS[:3], references, [0, 1, 2], np.zeros(3))

    def run(cache: str) -> VerifySettings:
        return VerifySettings(profile=profile, alpha=0.1, budget=None, n_keys=None, delta0=None, query_seeds=[0, 1],
                              distance="l2", generation=profile.generation, out=tmp_path / "out",
                              cache_dir=tmp_path / cache, progress=False)

    local = query_kind("innocent", [saved_pipeline, saved_pipeline], keys, run("local"))
    monkeypatch.setenv("GENLINEAGE_EXECUTOR", "ray")
    on_ray = query_kind("innocent", [saved_pipeline, saved_pipeline], keys, run("ray"))
    assert local.shape == (2, 3) and np.array_equal(local, on_ray)
    assert len(list((tmp_path / "ray").rglob("*.png"))) > 0, "the Ray tasks drew the images"
