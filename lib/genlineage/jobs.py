"""Independent jobs as single-thread processes, side by side.

On 2 cores, two 1-thread jobs give about 1.75x the throughput of one 2-thread job (small
models spend their time in per-op overhead, not in the arithmetic). A job runs with its own fixed
thread count (``threads_per_job``) whether it runs alone or beside another, so that a run's
timings and resource use do not depend on how many jobs share the machine. (Generations run at
their own ``generation.threads`` whatever the job's count: see ``genlineage.generation``.)
"""
from __future__ import annotations

import importlib
import multiprocessing as mp
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from typing import Any, Iterator, Sequence

import torch
from tqdm.auto import tqdm


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _call(target: str, kwargs: dict, threads: int) -> Any:
    os.environ["OMP_NUM_THREADS"] = str(threads)
    module, _, name = target.rpartition(".")
    with torch_threads(threads):
        return getattr(importlib.import_module(module), name)(**kwargs)


def run_jobs(target: str, jobs: Sequence[dict], parallel: int = 1, threads: int = 1,
             desc: str | None = None) -> list[Any]:
    """Run ``target(**kwargs)`` for each kwargs in ``jobs``; return results in order.

    ``target`` is a dotted path to a module-level function (spawned workers import it).
    ``parallel`` processes run at once, each with ``threads`` torch threads; with
    ``parallel == 1`` the jobs run in this process with the same thread count. ``desc`` shows a
    progress bar over the jobs.
    """
    bar = tqdm(total=len(jobs), desc=desc, disable=desc is None, unit="job")
    if parallel <= 1 or len(jobs) <= 1:
        results = []
        for kw in jobs:
            results.append(_call(target, dict(kw), threads))
            bar.update()
        bar.close()
        return results
    with ProcessPoolExecutor(max_workers=min(parallel, len(jobs)), mp_context=mp.get_context("spawn")) as pool:
        futures = [pool.submit(_call, target, dict(kw), threads) for kw in jobs]
        for _ in as_completed(futures):
            bar.update()
        bar.close()
        return [f.result() for f in futures]
