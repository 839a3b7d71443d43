"""The time record of ``run_all`` (``data/<profile>/results/run_all_timings.csv``): how long each
stage took, on what machine, from what code.

Why its own module: the runner writes the record and the reproduction report reads it; the rules
of what counts as a cold run (from scratch) and a complete one live here, beside the writer's row
format, and both sides import them from below.

Each row: the invocation's run id, stage, seconds, status, the machine (CPU count, platform,
device) and the git commit. A row is *cold* when its invocation ran every stage (no
``--only``/``--from``) and started with no cached work: no file under ``data/<profile>/`` other
than this record (a fresh clone, or a deleted data folder; empty folders do not count, a killed
run's partial files do). The report's cold time is the latest run whose every stage is cold and
ok, so it is one uninterrupted run measured from scratch, never stage maxima stitched from
different runs. Committed ``figures/`` and ``tables/`` are outputs, not cached work.
"""
from __future__ import annotations

import os
import platform
import subprocess
import time
import uuid
from pathlib import Path

import pandas as pd

from .config import REPO_ROOT
from .io import atomic_path


TIMINGS = "run_all_timings.csv"


RUN_ID_ENV = "GENLINEAGE_RUN_ID"  # set while run_all runs: the stage notebooks' kernels inherit it


# what is true of a whole invocation, repeated on each of its rows (the record stays one flat CSV)
RUN_FACTS = ["full_run", "empty_cache", "n_stages", "cpus", "platform", "device", "commit"]


TIMING_COLUMNS = ["run", "stage", "seconds", "status", *RUN_FACTS]


def record_timing(path: Path, row: dict) -> None:
    """Append one stage's time to the record (rewritten atomically: never half a file)."""
    table = pd.read_csv(path) if path.is_file() else pd.DataFrame()
    table = pd.concat([table, pd.DataFrame([row])], ignore_index=True)
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False)


def new_run_id() -> str:
    """A start time a reader recognises, plus a random tail: two runs in one second stay apart."""
    return f"{time.strftime('%Y-%m-%dT%H:%M:%S')}-{uuid.uuid4().hex[:6]}"


def has_cached_work(data_root: Path) -> bool:
    """Whether any file but the time record is under ``data_root``: a run that starts with one can
    reuse work (models, generations, results), so its times are not the cost from scratch."""
    record = data_root / "results" / TIMINGS
    if not data_root.is_dir():
        return False
    for folder, _, files in os.walk(data_root):
        if any(Path(folder, name) != record for name in files):
            return True
    return False


def git_commit(repo: Path = REPO_ROOT) -> str:
    """The checkout's commit (``+dirty`` when tracked files differ); "" without git. Ties a time to code."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
    try:
        commit = git("rev-parse", "--short=12", "HEAD")
        return commit + ("+dirty" if git("status", "--porcelain", "--untracked-files=no") else "")
    except (OSError, subprocess.SubprocessError):
        return ""


def machine_info(profile) -> dict:
    """What the seconds depend on: CPU count, platform, and the device (with the GPU's name on
    CUDA, asked of nvidia-smi: importing torch here would hold GPU memory for the whole run)."""
    device = profile.run.device
    if device.startswith("cuda"):
        try:
            names = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                                   capture_output=True, text=True, timeout=10, check=True).stdout.split("\n")
            device += f" ({names[int(device.partition(':')[2] or 0)].strip()})"
        except (OSError, subprocess.SubprocessError, ValueError, IndexError):
            pass  # the configured name still says what was asked for
    return {"cpus": os.cpu_count(), "platform": platform.platform(), "device": device}


def timing_row(run: dict, stage: str, seconds: float, status: str) -> dict:
    """One row of the record: this invocation's facts (``run``) plus the stage's outcome."""
    return {"run": run["run"], "stage": stage, "seconds": round(seconds, 1), "status": status,
            **{k: run[k] for k in RUN_FACTS}}


def _flag(value) -> bool:
    """A boolean as the CSV holds it (True, "True", or NaN in a row from an older record)."""
    return str(value).strip().lower() == "true"


def normalise_timings(table: pd.DataFrame) -> pd.DataFrame:
    """Every column present, flags as booleans, plus ``cold``. Rows of an older record (no flags,
    maybe a ``note``) read as not cold; the hand-typed note is not carried on."""
    table = table.drop(columns=["note"], errors="ignore").copy()
    for col in TIMING_COLUMNS:
        if col not in table:
            table[col] = pd.NA
    for col in ("full_run", "empty_cache"):
        table[col] = table[col].map(_flag).astype(bool)
    table["seconds"] = pd.to_numeric(table["seconds"], errors="coerce")
    table["n_stages"] = pd.to_numeric(table["n_stages"], errors="coerce")
    table["run"] = table["run"].astype(str)
    table["cold"] = table.full_run & table.empty_cache
    return table[TIMING_COLUMNS + ["cold"]].reset_index(drop=True)


def read_timings(profile) -> pd.DataFrame:
    """The time record of a profile, normalised (an empty table with the columns when none)."""
    path = profile.data_root / "results" / TIMINGS
    return normalise_timings(pd.read_csv(path) if path.is_file() else pd.DataFrame(columns=TIMING_COLUMNS))


def complete_cold_runs(timings: pd.DataFrame) -> list[str]:
    """Run ids, oldest first, of runs that measured the cost from scratch: cold, every stage of
    the invocation recorded once and ok. A failed, killed or partial run is left out."""
    runs = []
    for run, g in timings.groupby("run", sort=False):
        expected = g.n_stages.iloc[0]
        if (g.cold.all() and (g.status == "ok").all() and g.stage.is_unique
                and pd.notna(expected) and len(g) == int(expected)):
            runs.append(str(run))
    return runs


def latest_cold_run(timings: pd.DataFrame) -> str | None:
    """The most recent complete cold run (the record is in run order); None when there is none."""
    runs = complete_cold_runs(timings)
    return runs[-1] if runs else None


def describe_run(timings: pd.DataFrame, run: str) -> str:
    """Where and from what code a run's seconds came: they mean little without the machine."""
    row = timings[timings.run == run].iloc[0]
    def known(v) -> bool:
        return pd.notna(v) and str(v) != ""
    parts = [f"{int(float(row.cpus))} CPUs" if known(row.cpus) else "",
             str(row.platform) if known(row.platform) else "",
             f"device {row.device}" if known(row.device) else "",
             f"commit {row.commit}" if known(row.commit) else ""]
    return f"run `{run}` ({', '.join(p for p in parts if p) or 'machine not recorded'})"


def unfinished_cold_run(timings: pd.DataFrame) -> str | None:
    """The run this process belongs to (``GENLINEAGE_RUN_ID``, set by run_all for its stages),
    when it is cold and every stage so far is ok: a report written by its last stage cannot count
    it yet, and says so instead."""
    run = os.environ.get(RUN_ID_ENV)
    rows = timings[timings.run == run] if run else timings.iloc[:0]
    return run if len(rows) and rows.cold.all() and (rows.status == "ok").all() else None
