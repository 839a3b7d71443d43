"""Independent jobs (a fine-tune, a key selection, a model's queries) through one executor, two engines.

``local`` (the default): single-thread processes side by side. On 2 cores, two 1-thread jobs give
about 1.75x the throughput of one 2-thread job (small models spend their time in per-op overhead,
not in the arithmetic). ``ray``: the same jobs as Ray tasks, on a local instance (``ray.init()``)
or a cluster's address, one GPU per job on a GPU profile; a job whose worker dies (a pre-empted
node, an out-of-memory kill) or that raises is retried ``job_retries`` times, and then the run
stops naming the job. A retried job loses nothing: every job is a cached result that resumes from
its checkpoint in the shared data folder. Results are the same on both engines (a test compares).

A job runs with its own fixed thread count (``threads_per_job``) whether it runs alone or beside
another, so that a run's timings and resource use do not depend on how many jobs share the
machine. (Generations run at their own ``generation.threads`` whatever the job's count: see
``genlineage.generation``.)
"""
from __future__ import annotations

import multiprocessing as mp
import os
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import torch
from tqdm.auto import tqdm

from .errors import InputError

EXECUTOR_ENV, RAY_ADDRESS_ENV = "GENLINEAGE_EXECUTOR", "GENLINEAGE_RAY_ADDRESS"


@dataclass(frozen=True)
class Executor:
    """Where jobs run: the engine, and for Ray the cluster, the retries and the GPUs per job."""

    engine: str = "local"
    address: str | None = None
    retries: int = 2
    gpus_per_job: float = 0.0


def executor_for(run: Any) -> Executor:
    """The executor of a profile's top-level settings (``RunSettings``), the environment winning
    (``run_all.sh --executor ray --address HOST:PORT`` sets it for every stage's kernel)."""
    engine = os.environ.get(EXECUTOR_ENV) or run.executor
    if engine not in ("local", "ray"):
        raise InputError(f"${EXECUTOR_ENV}={engine!r}: choose local or ray.")
    gpus = run.gpus_per_job if run.gpus_per_job is not None else (1.0 if str(run.device).startswith("cuda") else 0.0)
    return Executor(engine, os.environ.get(RAY_ADDRESS_ENV) or run.ray_address, int(run.job_retries), float(gpus))


class JobFailed(RuntimeError):
    """A job that failed on every try; names it."""


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _call(target: Callable[..., Any], kwargs: dict, threads: int) -> Any:
    os.environ["OMP_NUM_THREADS"] = str(threads)
    with torch_threads(threads):
        return target(**kwargs)


def target_name(target: Callable[..., Any]) -> str:
    """A job function's dotted name, for messages."""
    return f"{getattr(target, '__module__', '?')}.{getattr(target, '__qualname__', repr(target))}"


def _check_target(target: Callable[..., Any]) -> None:
    """A job must be a module-level function: spawned workers and Ray workers receive it by its
    importable name (pickled by reference), so a lambda or a nested function cannot travel."""
    qualname = getattr(target, "__qualname__", "")
    if not callable(target) or "<" in qualname or not getattr(target, "__module__", None):
        raise TypeError(f"run_jobs needs a module-level function, got {target!r}")


def run_jobs(target: Callable[..., Any], jobs: Sequence[dict], parallel: int = 1, threads: int = 1,
             desc: str | None = None, executor: Executor | None = None) -> list[Any]:
    """Run ``target(**kwargs)`` for each kwargs in ``jobs``; return results in order.

    ``target`` is a module-level function, passed as itself: spawned workers and Ray tasks receive
    it by its importable name, so the local pool and Ray run the same object.
    Locally, ``parallel`` processes run at once, each with ``threads`` torch threads; with
    ``parallel == 1`` the jobs run in this process with the same thread count. On Ray
    (``executor.engine == "ray"``) every job is a task of ``threads`` CPUs and
    ``executor.gpus_per_job`` GPUs, as many at once as the cluster holds. ``desc`` shows a
    progress bar over the jobs.
    """
    _check_target(target)
    if executor is not None and executor.engine == "ray":
        return _run_on_ray(target, jobs, threads, desc, executor)
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


def job_name(kwargs: dict) -> str:
    """What names a job in a failure: its model or source or base, else its keys."""
    row = kwargs.get("row")
    if isinstance(row, dict) and "name" in row:
        return str(row["name"])
    named = [f"{k}={kwargs[k]}" for k in ("name", "source", "base", "domain", "finetuned", "seed") if k in kwargs]
    return ", ".join(named) or ", ".join(sorted(kwargs))


def _ray_init(executor: Executor) -> None:
    import ray

    if ray.is_initialized():
        return
    # workers import the job's module: give them this process's import path (tests/, an editable install)
    env = {"PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    ray.init(address=executor.address, include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": env},
             ignore_reinit_error=True)


def _run_on_ray(target: Callable[..., Any], jobs: Sequence[dict], threads: int, desc: str | None,
                executor: Executor) -> list[Any]:
    """Every job as a Ray task; a task whose worker died or that raised is retried; after the last
    try the run stops with the names of the jobs that failed."""
    import ray

    _ray_init(executor)
    task = ray.remote(_call).options(num_cpus=threads, num_gpus=executor.gpus_per_job,
                                     max_retries=executor.retries, retry_exceptions=True)
    refs = [task.remote(target, dict(kw), threads) for kw in jobs]
    index = {ref: i for i, ref in enumerate(refs)}
    results: list[Any] = [None] * len(refs)
    failed: list[str] = []
    pending = list(refs)
    with tqdm(total=len(refs), desc=desc, disable=desc is None, unit="job") as bar:
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            i = index[done[0]]
            try:
                results[i] = ray.get(done[0])
            except ray.exceptions.RayError as err:  # the task raised, or its worker died, on every try
                failed.append(f"{job_name(jobs[i])} ({type(err).__name__}: {str(err).splitlines()[0][:200]})")
            bar.update()
    if failed:
        raise JobFailed(f"{len(failed)} of {len(jobs)} {target_name(target)} jobs failed after {executor.retries} retries: "
                        + "; ".join(failed))
    return results
