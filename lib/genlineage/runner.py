"""Runs the stage notebooks in order with papermill (what ``run_all.sh`` calls).

Why a module and not a shell loop: the runner has to name the notebook *and the cell* that failed,
stop there, let a user re-run one stage alone or resume from one, and record how long every stage
took (the reproduction report's time table reads that record). All of that is testable here.

Resuming needs nothing special: every stage caches its work under ``data/<profile>/`` and writes
atomically, so running again re-executes the notebooks and they pick up the cached work. The
executed copy of a notebook is written to a temporary name and renamed when the notebook has run
through, so ``outputs/<profile>/`` only ever holds complete notebooks; a failed run leaves its
copy, with the traceback, as ``<name>.failed.ipynb``.

Usage: ``python -m genlineage.runner [profile] [--only NN ...] [--from NN] [--list]``.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .config import REPO_ROOT, load_profile
from .io import atomic_path, clean_partials

TIMINGS = "run_all_timings.csv"


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


def record_timing(path: Path, row: dict) -> None:
    """Append one stage's time to the record (rewritten atomically: never half a file)."""
    table = pd.read_csv(path) if path.is_file() else pd.DataFrame()
    table = pd.concat([table, pd.DataFrame([row])], ignore_index=True)
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False)


def read_timings(profile) -> pd.DataFrame:
    path = profile.data_root / "results" / TIMINGS
    return pd.read_csv(path) if path.is_file() else pd.DataFrame(columns=["run", "stage", "seconds", "status", "note"])


def run_all(profile: str, only: list[str] | None = None, start: str | None = None,
            out_root: Path | None = None, notebooks_dir: Path | None = None,
            progress: bool = True, update_notebooks: bool = False) -> list[tuple[str, float]]:
    """Run the selected stages in order, stopping at the first failure. ``update_notebooks`` copies
    each executed notebook over its source (how the committed tiny-run outputs are refreshed)."""
    P = load_profile(profile)
    stages = select_stages(stage_notebooks(notebooks_dir or REPO_ROOT / "notebooks"), only, start)
    out_dir = (out_root or REPO_ROOT / "outputs") / P.name
    timings = P.data_root / "results" / TIMINGS
    timings.parent.mkdir(parents=True, exist_ok=True)
    run_id = time.strftime("%Y-%m-%dT%H:%M:%S")
    # A killed run leaves hidden .part files or folders (never under a name a stage reads); sweep
    # them before any stage starts (one run per profile at a time: its own leftovers only).
    swept = clean_partials(P.data_root, recursive=True)
    if swept:
        print(f"[run_all] removed {swept} partial file(s) an interrupted run left under {P.data_root}", flush=True)
    done = []
    for i, nb in enumerate(stages, 1):
        print(f"[run_all] stage {i}/{len(stages)}: {nb.stem} (profile {P.name})", flush=True)
        t0 = time.perf_counter()
        try:
            seconds = run_stage(nb, profile, out_dir, progress)
        except StageFailure as failure:
            record_timing(timings, {"run": run_id, "stage": nb.stem, "seconds": round(time.perf_counter() - t0, 1),
                                    "status": "failed", "note": ""})
            raise
        record_timing(timings, {"run": run_id, "stage": nb.stem, "seconds": round(seconds, 1), "status": "ok", "note": ""})
        print(f"[run_all] {nb.stem} done in {seconds:.0f} s -> {out_dir / nb.name}", flush=True)
        done.append((nb.stem, seconds))
        if update_notebooks:
            with atomic_path(nb) as tmp:
                shutil.copyfile(out_dir / nb.name, tmp)
    return done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="run_all.sh", description=(
        "Run the stage notebooks in order with papermill; every stage resumes from its cached work."))
    parser.add_argument("profile", nargs="?", default="tiny", help="tiny (default), smoke, paper, or a YAML path")
    parser.add_argument("--only", action="append", metavar="NN", help="run only this stage (repeatable), e.g. --only 04")
    parser.add_argument("--from", dest="start", metavar="NN", help="run this stage and every later one")
    parser.add_argument("--out", type=Path, help="where the executed notebooks go (default outputs/); <out>/<profile>/")
    parser.add_argument("--list", action="store_true", help="list the stages and exit")
    parser.add_argument("--update-notebooks", action="store_true",
                        help="copy each executed notebook over notebooks/<name>.ipynb (maintainers: refresh the committed outputs)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars (logs only)")
    args = parser.parse_args(argv)
    if args.list:
        print("\n".join(nb.stem for nb in stage_notebooks(REPO_ROOT / "notebooks")))
        return 0
    try:
        load_profile(args.profile)
    except Exception as err:  # an unknown name, a YAML that does not parse, ...
        print(f"[run_all] profile {args.profile!r} cannot be used: {err}", file=sys.stderr)
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
