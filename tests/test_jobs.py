"""Jobs give the same results side by side as one after another."""
from __future__ import annotations

from genlineage.jobs import run_jobs


def test_parallel_jobs_match_sequential_ones():
    jobs = [{"seed": 1}, {"seed": 2}]
    sequential = run_jobs("jobs_target.train_checksum", jobs, parallel=1)
    parallel = run_jobs("jobs_target.train_checksum", jobs, parallel=2)
    assert sequential == parallel
    assert sequential[0] != sequential[1]
