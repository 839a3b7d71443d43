"""Jobs give the same results side by side as one after another."""
from __future__ import annotations

import jobs_target

from genlineage.jobs import run_jobs


def test_parallel_jobs_match_sequential_ones():
    """Three training jobs at 1, 2 and 3 workers (a profile's ``parallel_jobs``, or "auto" on a
    machine with that many cores): the same results, in the order given."""
    jobs = [{"seed": 1}, {"seed": 2}, {"seed": 3}]
    results = {workers: run_jobs(jobs_target.train_checksum, jobs, parallel=workers) for workers in (1, 2, 3)}
    assert results[1] == results[2] == results[3]
    assert len(set(results[1])) == 3


def test_auto_jobs_are_the_usable_cores_within_memory(monkeypatch):
    import os

    from genlineage.config import auto_jobs, load_profile

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4, 5}, raising=False)
    pages = {"SC_PAGE_SIZE": 4096, "SC_PHYS_PAGES": 8 * 2**30 // 4096}  # 8 GiB
    monkeypatch.setattr(os, "sysconf", lambda name: pages[name])
    assert auto_jobs(1.0) == 6            # cores decide
    assert auto_jobs(2.0) == 4            # memory decides: 8 GiB at 2 GiB a job
    assert auto_jobs(1.0, threads_per_job=4) == 1
    assert auto_jobs(100.0) == 1          # at least one
    assert load_profile("tiny", {"parallel_jobs": "auto", "memory_per_job_gb": 1.0}).run.parallel_jobs == 6


def test_parallel_jobs_must_be_a_count_or_auto():
    import pytest

    from genlineage.config import load_profile
    from genlineage.errors import InputError

    for bad in (0, "many", 1.5):
        with pytest.raises(InputError, match="parallel_jobs"):
            load_profile("tiny", {"parallel_jobs": bad}).run
