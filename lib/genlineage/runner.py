"""Runs the stage notebooks in order with papermill (what ``run_all.sh`` calls).

Why a module and not a shell loop: the runner has to name the notebook *and the cell* that failed,
stop there, let a user re-run one stage alone or resume from one, and record how long every stage
took (the reproduction report's time table reads that record). All of that is testable here.

The time record (``data/<profile>/results/run_all_timings.csv``) gets one row per stage run: the
invocation's run id, stage, seconds, status, the machine (CPU count, platform, device) and the git
commit. A row is *cold* when its invocation ran every stage (no ``--only``/``--from``) and started
with no cached work: no file under ``data/<profile>/`` other than this record (a fresh clone, or a
deleted data folder; empty folders do not count, a killed run's partial files do). The report's
cold time is the latest run whose every stage is cold and ok, so it is one uninterrupted run
measured from scratch, never stage maxima stitched from different runs. Committed ``figures/`` and
``tables/`` are outputs, not cached work, and are not looked at.

Resuming needs nothing special: every stage caches its work under ``data/<profile>/`` and writes
atomically, so running again re-executes the notebooks and they pick up the cached work. The
executed copy of a notebook is written to a temporary name and renamed when the notebook has run
through, so ``outputs/<profile>/`` only ever holds complete notebooks; a failed run leaves its
copy, with the traceback, as ``<name>.failed.ipynb``.

Before any stage, the preflight (:mod:`genlineage.experiments.preflight`) checks in seconds what
would otherwise fail hours in: the device and torch build, the base folders, the data releases'
counts, the disk for the plan. ``--dry-run`` prints it with the cost plan
(:mod:`genlineage.experiments.cost_plan`) and runs nothing.

Usage: ``python -m genlineage.runner [profile] [--only NN ...] [--from NN] [--list] [--dry-run [--probe]]``.
"""
from __future__ import annotations

import argparse
import html
import json
import os
import platform
import re
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .config import REPO_ROOT, load_profile
from .errors import InputError
from .experiments.cost_plan import STATED, format_plan, measure_unit_costs
from .experiments.preflight import format_checks, preflight
from .io import atomic_path, clean_partials
from .jobs import EXECUTOR_ENV, RAY_ADDRESS_ENV

TIMINGS = "run_all_timings.csv"
RUN_ID_ENV = "GENLINEAGE_RUN_ID"  # set while run_all runs: the stage notebooks' kernels inherit it
# what is true of a whole invocation, repeated on each of its rows (the record stays one flat CSV)
RUN_FACTS = ["full_run", "empty_cache", "n_stages", "cpus", "platform", "device", "commit"]
TIMING_COLUMNS = ["run", "stage", "seconds", "status", *RUN_FACTS]


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


def record_timing(path: Path, row: dict) -> None:
    """Append one stage's time to the record (rewritten atomically: never half a file)."""
    table = pd.read_csv(path) if path.is_file() else pd.DataFrame()
    table = pd.concat([table, pd.DataFrame([row])], ignore_index=True)
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False)


def write_committed_copy(executed: Path, target: Path) -> None:
    """Copy an executed notebook for committing, with papermill's record of where it ran (its
    ``input_path`` and ``output_path``) made relative to the checkout: an absolute path names one
    machine's folders, which a reader elsewhere cannot use and every re-run changes."""
    from .layout import shown_path

    nb = without_widgets(json.loads(Path(executed).read_text()))
    record = nb.get("metadata", {}).get("papermill", {})
    for key in ("input_path", "output_path"):
        if record.get(key):
            record[key] = shown_path(record[key])
    Path(target).write_text(notebook_text(nb))


def notebook_text(nb: dict) -> str:
    """A notebook as the committed copies are written (one-space indent, UTF-8 as it is), so a
    refresh changes only what the run changed."""
    return json.dumps(nb, indent=1, ensure_ascii=False) + "\n"


WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
BAR_WIDTH = 10  # tqdm's text bar in a notebook: ``|██████████|``
BAR_EIGHTHS = " ▏▎▍▌▋▊▉"


def without_widgets(nb: dict) -> dict:
    """The notebook without ipywidgets: each progress bar's view becomes the text of its last
    state (``desc: 100%|██████████| 96/96 [..]``), and the saved widget state goes.

    Why: a committed notebook is read without its kernel. JupyterLab then draws a widget view
    from the state saved in the metadata as a bar frozen where the view first showed it (0%), and
    GitHub shows the view's text fallback, also captured at 0%. The last state holds the finished
    bar; its text is what a reader should see. A bar tqdm closed itself (``leave=False``) has no
    saved state and is dropped, as the live notebook hid it. Without any saved state the text
    fallback stays (the best there is)."""
    saved = nb.get("metadata", {}).pop("widgets", None)
    states = (saved or {}).get(WIDGET_STATE, {}).get("state", {})
    for cell in nb.get("cells", []):
        if "outputs" in cell:
            kept = (_widget_as_text(output, states, saved is not None) for output in cell["outputs"])
            cell["outputs"] = [output for output in kept if output is not None]
    return nb


def _widget_as_text(output: dict, states: dict, state_saved: bool) -> dict | None:
    """One output without its widget view: the bar's final text, the fallback text, or nothing."""
    data = output.get("data") or {}
    if WIDGET_VIEW not in data:
        return output
    model_id = str((data[WIDGET_VIEW] or {}).get("model_id", ""))
    rest = {mime: value for mime, value in data.items() if mime != WIDGET_VIEW}
    if state_saved and model_id not in states:
        return None  # closed by tqdm (leave=False): the live notebook no longer showed it
    final = _final_bar_text(model_id, states)
    if final is not None:
        rest["text/plain"] = [final]
    return {**output, "data": rest} if rest else None


def _final_bar_text(model_id: str, states: dict) -> str | None:
    """tqdm.notebook's bar as text from its saved state: an HBox of (HTML prefix, FloatProgress,
    HTML suffix); None for any other widget. The share and the count are the progress widget's
    (the saved HTML can lag it by the last refresh: ``0%|██████████| 0/7`` for a finished bar)."""
    def state(ref: str) -> dict:
        return (states.get(ref.removeprefix("IPY_MODEL_")) or {}).get("state") or {}

    children = [state(str(ref)) for ref in state(model_id).get("children", [])]
    if len(children) != 3 or "max" not in children[1]:
        return None
    prefix, progress, suffix = children
    done, total = float(progress.get("value", 0)), float(progress["max"])
    return (f"{_with_share(_html_text(prefix.get('value', '')), done, total)}|{_text_bar(done, total)}|"
            f"{_with_count(_html_text(suffix.get('value', '')), done, total)}")


TQDM_SHARE = re.compile(r"(?P<head>.*?)\s*\d+%$")
TQDM_COUNT = re.compile(r"(?P<space>\s*)\d+/\d+(?P<tail>.*)$")


def _with_share(prefix: str, done: float, total: float) -> str:
    """``desc:  37%`` with the share of ``done`` in ``total``, as tqdm pads it (3 digits)."""
    match = TQDM_SHARE.fullmatch(prefix)
    if match is None or total <= 0:
        return prefix
    share = f"{min(max(done / total, 0.0), 1.0) * 100:3.0f}%"
    return f"{match['head']} {share}" if match["head"] else share


def _with_count(suffix: str, done: float, total: float) -> str:
    """`` 3/8 [..]`` with the widget's count (whole numbers only: a scaled count stays as it is)."""
    match = TQDM_COUNT.fullmatch(suffix)
    if match is None or not (done.is_integer() and total.is_integer()):
        return suffix
    return f"{match['space']}{int(done)}/{int(total)}{match['tail']}"


def _html_text(value: str) -> str:
    """An HTML widget's value as plain text (tqdm writes figure spaces and escapes ``<``)."""
    return html.unescape(str(value)).replace("\u2007", " ").replace("\xa0", " ")


def _text_bar(value: float, total: float) -> str:
    """The bar tqdm draws in text for ``value`` of ``total``, in eighths of a block."""
    share = min(max(float(value) / float(total), 0.0), 1.0) if total else 0.0
    full, eighths = divmod(int(share * BAR_WIDTH * 8), 8)
    return ("█" * full + (BAR_EIGHTHS[eighths] if eighths and full < BAR_WIDTH else "")).ljust(BAR_WIDTH)


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
