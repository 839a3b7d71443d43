"""Runs the stage notebooks in order with papermill (what ``run_all.sh`` calls).

Why a module and not a shell loop: the runner has to name the notebook *and the cell* that failed,
stop there, let a user re-run one stage alone or resume from one, and record how long every stage
took (the reproduction report's time table reads that record). All of that is testable here.

The time record (``data/<profile>/results/run_all_timings.csv``, :mod:`genlineage.timings`) gets
one row per stage run; the committed copy of each notebook (:mod:`genlineage.notebook_copies`) has
relative paths and finished progress bars.

Resuming needs nothing special: every stage caches its work under ``data/<profile>/`` and writes
atomically, so running again re-executes the notebooks and they pick up the cached work. The
executed copy of a notebook is written to a temporary name and renamed when the notebook has run
through, so ``outputs/<profile>/`` only ever holds complete notebooks; a failed run leaves its
copy, with the traceback, as ``<name>.failed.ipynb``.

Before any stage, the preflight (:mod:`genlineage.preflight`) checks in seconds what
would otherwise fail hours in: the device and torch build, the base folders, the data releases'
counts, the disk for the plan. ``--dry-run`` prints it with the cost plan
(:mod:`genlineage.cost_plan`) and runs nothing.

Usage: ``python -m genlineage.runner [profile] [--only NN ...] [--from NN] [--list] [--dry-run [--probe]]``.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path


from .config import REPO_ROOT, load_profile
from .errors import InputError
from .cost_plan import STATED, format_plan, measure_unit_costs
from .preflight import format_checks, preflight
from .io import atomic_path, clean_partials
from .jobs import EXECUTOR_ENV, RAY_ADDRESS_ENV
from .notebook_copies import write_committed_copy
from .timings import (RUN_ID_ENV, TIMINGS, git_commit, has_cached_work, machine_info, new_run_id, record_timing,
                      timing_row)


@dataclass
class StageFailure(Exception):
    """A notebook stopped at a cell: which notebook, which cell, what went wrong."""

    notebook: str
    cell: int | None
    execution_count: int | None
    error: str
    executed_copy: Path | None

    def __str__(self) -> str:
        where = f"cell {self.cell}" if self.cell is not None else "before any cell ran"
        if self.execution_count is not None:
            where += f" (In [{self.execution_count}])"
        copy = (f"the executed copy with the traceback is {self.executed_copy}" if self.executed_copy
                else "no executed copy was written")
        return f"stage {self.notebook} failed at {where}: {self.error}\n{copy}"


def stage_notebooks(notebooks_dir: Path) -> list[Path]:
    """The stage notebooks, in run order (their two-digit prefix)."""
    return sorted(p for p in notebooks_dir.glob("[0-9][0-9]_*.ipynb"))


def select_stages(notebooks: list[Path], only: list[str] | None = None, start: str | None = None) -> list[Path]:
    """``only``: stages by number or name ("04", "04_instance_attribution"); ``start``: this one and
    every later one. Unknown names are an error that lists the stages."""
    def matches(nb: Path, key: str) -> bool:
        return nb.stem == key or nb.stem.split("_", 1)[0] == key.zfill(2)

    known = ", ".join(nb.stem for nb in notebooks)
    for key in (only or []) + ([start] if start else []):
        if not any(matches(nb, key) for nb in notebooks):
            raise SystemExit(f"run_all: no stage {key!r}; the stages are: {known}")
    if only:
        return [nb for nb in notebooks if any(matches(nb, k) for k in only)]
    if start:
        first = next(i for i, nb in enumerate(notebooks) if matches(nb, start))
        return notebooks[first:]
    return list(notebooks)


def skipped_by_profile(profile, notebook: Path, asked: list[str] | None = None) -> str | None:
    """Why ``profile`` does not run this stage (None: it does). An ablation a profile cannot afford
    is switched off in its YAML, or (``on_request``) runs only when named with ``--only``; a cold run
    is then every stage the profile runs unasked."""
    if not notebook.stem.startswith("10_"):
        return None
    lora = profile.suspicious.lora_ablation
    if not lora.enabled:
        return f"suspicious.lora_ablation.enabled is false in profile {profile.name}"
    named = any(notebook.stem == key or notebook.stem.split("_", 1)[0] == key.zfill(2) for key in asked or [])
    if lora.on_request and not named:
        return (f"suspicious.lora_ablation.on_request in profile {profile.name}: outside the cold run's budget; "
                f"run it with: bash run_all.sh {profile.name} --only 10")
    return None


def run_stage(notebook: Path, profile: str, out_dir: Path, progress: bool = True) -> float:
    """Execute one notebook with papermill; the seconds it took. Raises StageFailure."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    out_dir.mkdir(parents=True, exist_ok=True)
    final = out_dir / notebook.name
    failed = out_dir / f"{notebook.stem}.failed.ipynb"
    partial = out_dir / f".{notebook.stem}.running.ipynb"
    failed.unlink(missing_ok=True)  # a copy from an earlier failure must never be taken for this one's
    start = time.perf_counter()
    try:
        papermill.execute_notebook(str(notebook), str(partial), parameters={"profile": profile}, kernel_name="python3",
                                   progress_bar=progress, log_output=progress, cwd=str(notebook.parent))
    except PapermillExecutionError as err:
        os.replace(partial, failed)
        raise StageFailure(notebook.name, err.cell_index, err.exec_count, f"{err.ename}: {err.evalue}", failed) from None
    except Exception as err:  # the kernel died, the notebook is unreadable, ...
        if partial.exists():
            os.replace(partial, failed)
        raise StageFailure(notebook.name, None, None, f"{type(err).__name__}: {err}",
                           failed if failed.exists() else None) from None
    os.replace(partial, final)
    failed.unlink(missing_ok=True)
    return time.perf_counter() - start


def notebook_profile_argument(profile: str) -> str:
    """The ``profile`` parameter as the notebooks get it: a profile name as it is, a YAML path made
    absolute (the notebooks run in ``notebooks/``, where a path relative to the caller's folder
    would name nothing)."""
    path = Path(profile)
    return str(path.resolve()) if path.suffix in {".yaml", ".yml"} else profile


def run_all(profile: str, only: list[str] | None = None, start: str | None = None,
            out_root: Path | None = None, notebooks_dir: Path | None = None,
            progress: bool = True, update_notebooks: bool = False) -> list[tuple[str, float]]:
    """Run the selected stages in order, stopping at the first failure. ``update_notebooks`` copies
    each executed notebook over its source (how the committed tiny-run outputs are refreshed)."""
    profile = notebook_profile_argument(profile)
    P = load_profile(profile)
    every_stage = []
    for nb in stage_notebooks(notebooks_dir or REPO_ROOT / "notebooks"):
        reason = skipped_by_profile(P, nb, only)
        if reason:
            print(f"[run_all] {nb.stem} skipped: {reason}", flush=True)
        else:
            every_stage.append(nb)
    stages = select_stages(every_stage, only, start)
    out_dir = (out_root or REPO_ROOT / "outputs") / P.name
    timings = P.data_root / "results" / TIMINGS
    run = {"run": new_run_id(), "full_run": stages == every_stage, "empty_cache": not has_cached_work(P.data_root),
           "n_stages": len(stages), **machine_info(P), "commit": git_commit()}
    timings.parent.mkdir(parents=True, exist_ok=True)
    # A killed run leaves hidden .part files or folders (never under a name a stage reads); sweep
    # them before any stage starts (one run per profile at a time: its own leftovers only).
    swept = clean_partials(P.data_root, recursive=True)
    if swept:
        print(f"[run_all] removed {swept} partial file(s) an interrupted run left under {P.data_root}", flush=True)
    cold = "a cold run (every stage, no cached work)" if run["full_run"] and run["empty_cache"] else "not a cold run"
    print(f"[run_all] run {run['run']}: {cold}; times go to {timings}", flush=True)
    if P.run.about:
        print(f"[run_all] profile {P.name}: {P.run.about}", flush=True)
    done = []
    previous_id = os.environ.get(RUN_ID_ENV)
    os.environ[RUN_ID_ENV] = run["run"]  # the report stage can tell its own, unfinished run
    try:
        for i, nb in enumerate(stages, 1):
            print(f"[run_all] stage {i}/{len(stages)}: {nb.stem} (profile {P.name})", flush=True)
            seconds = _run_and_record(nb, profile, out_dir, progress, timings, run)
            print(f"[run_all] {nb.stem} done in {seconds:.0f} s -> {out_dir / nb.name}", flush=True)
            done.append((nb.stem, seconds))
            if update_notebooks:
                with atomic_path(nb) as tmp:
                    write_committed_copy(out_dir / nb.name, tmp)
    finally:
        if previous_id is None:
            os.environ.pop(RUN_ID_ENV, None)
        else:
            os.environ[RUN_ID_ENV] = previous_id
    return done


def _run_and_record(nb: Path, profile: str, out_dir: Path, progress: bool, timings: Path, run: dict) -> float:
    """Run one stage and append its row, ok or failed (a failed stage's time is what it cost)."""
    t0 = time.perf_counter()
    try:
        seconds = run_stage(nb, profile, out_dir, progress)
    except StageFailure:
        record_timing(timings, timing_row(run, nb.stem, time.perf_counter() - t0, "failed"))
        raise
    record_timing(timings, timing_row(run, nb.stem, seconds, "ok"))
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="run_all.sh", description=(
        "Run the stage notebooks in order with papermill; every stage resumes from its cached work."))
    parser.add_argument("profile", nargs="?", default="tiny", help="tiny (default), smoke, paper, or a YAML path")
    parser.add_argument("--only", action="append", metavar="NN", help="run only this stage (repeatable), e.g. --only 04")
    parser.add_argument("--from", dest="start", metavar="NN", help="run this stage and every later one")
    parser.add_argument("--out", type=Path, help="where the executed notebooks go (default outputs/); <out>/<profile>/")
    parser.add_argument("--list", action="store_true", help="list the stages and exit")
    parser.add_argument("--update-notebooks", action="store_true",
                        help="copy each executed notebook over notebooks/<name>.ipynb "
                             "(maintainers: refresh the committed outputs)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars (logs only)")
    parser.add_argument("--executor", choices=("local", "ray"),
                        help="where independent jobs run (default: the profile's executor key, local)")
    parser.add_argument("--address", metavar="HOST:PORT",
                        help="with --executor ray: a running Ray cluster's head (default: start a local instance)")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the preflight and the plan (jobs by stage, accelerator hours, disk); run nothing")
    parser.add_argument("--probe", action="store_true",
                        help="with --dry-run: time one generation batch and a few training steps here instead of "
                             "using the stated figures (needs the bases on disk)")
    args = parser.parse_args(argv)
    if args.list:
        print("\n".join(nb.stem for nb in stage_notebooks(REPO_ROOT / "notebooks")))
        return 0
    try:
        profile = load_profile(args.profile)
    except Exception as err:  # an unknown name, a YAML that does not parse, ...
        print(f"[run_all] profile {args.profile!r} cannot be used: {err}", file=sys.stderr)
        return 2
    if args.executor:  # every stage's kernel inherits the environment
        os.environ[EXECUTOR_ENV] = args.executor
    if args.address:
        os.environ[RAY_ADDRESS_ENV] = args.address
    checks = preflight(profile)
    passed = all(check.ok for check in checks)
    if args.dry_run:
        print(f"[run_all] preflight of profile {profile.name!r}:\n{format_checks(checks)}\n")
        costs = STATED
        if args.probe:
            try:
                costs = measure_unit_costs(profile)
            except InputError as err:
                print(f"[run_all] no probe ({err}); the plan uses the stated figures\n")
        print(format_plan(profile, costs))
        return 0 if passed else 1
    if not passed:
        print(f"[run_all] preflight of profile {profile.name!r} failed; nothing has run:\n{format_checks(checks)}",
              file=sys.stderr, flush=True)
        return 2
    try:
        run_all(args.profile, args.only, args.start, out_root=args.out, progress=not args.no_progress,
                update_notebooks=args.update_notebooks)
    except StageFailure as failure:
        print(f"[run_all] FAILED: {failure}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
