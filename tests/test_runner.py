"""The stage runner behind run_all.sh: stage selection, and a failing cell that stops the run with
the notebook and the cell named, leaving no executed copy under the final name."""
from __future__ import annotations

from pathlib import Path

import nbformat
import pandas as pd
import pytest

from genlineage import notebook_copies, runner, timings


def _notebook(path: Path, *cells: str) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "python3"}
    params = nbformat.v4.new_code_cell('profile = "tiny"')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params] + [nbformat.v4.new_code_cell(c) for c in cells]
    nbformat.write(nb, path)
    return path


@pytest.fixture()
def stages(tmp_path) -> Path:
    folder = tmp_path / "notebooks"
    folder.mkdir()
    _notebook(folder / "01_first.ipynb", "print('first ran with', profile)")
    _notebook(folder / "02_broken.ipynb", "x = 1", "raise ValueError('the cell that fails')", "print('never')")
    _notebook(folder / "03_after.ipynb", "print('must not run')")
    return folder


def test_stage_selection_by_number_name_and_start(stages):
    nbs = runner.stage_notebooks(stages)
    assert [p.stem for p in nbs] == ["01_first", "02_broken", "03_after"]
    assert [p.stem for p in runner.select_stages(nbs, only=["3"])] == ["03_after"]
    assert [p.stem for p in runner.select_stages(nbs, only=["01_first", "03"])] == ["01_first", "03_after"]
    assert [p.stem for p in runner.select_stages(nbs, start="02")] == ["02_broken", "03_after"]
    with pytest.raises(SystemExit, match="no stage '09'.*01_first, 02_broken, 03_after"):
        runner.select_stages(nbs, only=["09"])


def test_a_failing_cell_stops_the_run_and_names_notebook_and_cell(stages, tmp_path, smoke_profile):
    out = tmp_path / "outputs"
    with pytest.raises(runner.StageFailure) as info:
        runner.run_all("smoke", out_root=out, notebooks_dir=stages, progress=False)
    failure = info.value
    assert failure.notebook == "02_broken.ipynb" and "ValueError: the cell that fails" in failure.error
    assert failure.execution_count == 4  # parameters, papermill's injected parameters, x = 1, raise
    assert "02_broken.ipynb failed at cell" in str(failure)
    assert (out / "smoke" / "01_first.ipynb").is_file()
    assert not (out / "smoke" / "02_broken.ipynb").exists(), "a failed stage leaves no copy under the final name"
    assert (out / "smoke" / "02_broken.failed.ipynb").is_file()
    assert not (out / "smoke" / "03_after.ipynb").exists(), "the run stops at the first failure"
    assert not list((out / "smoke").glob(".*running*")), "no partial copy is left"
    executed = nbformat.read(out / "smoke" / "01_first.ipynb", as_version=4)
    assert "first ran with smoke" in str(executed.cells[-1].outputs)
    record = timings.read_timings(smoke_profile)
    assert list(record.stage) == ["01_first", "02_broken"] and list(record.status) == ["ok", "failed"]


def test_main_reports_the_failure_and_exits_non_zero(stages, tmp_path, smoke_profile, monkeypatch, capsys):
    monkeypatch.setattr(runner, "REPO_ROOT", tmp_path)  # tmp_path/notebooks holds the stages
    code = runner.main(["smoke", "--no-progress"])
    assert code == 1
    err = capsys.readouterr().err
    assert "[run_all] FAILED: stage 02_broken.ipynb failed at cell" in err and "the cell that fails" in err


def test_timings_are_appended_not_overwritten(tmp_path):
    path = tmp_path / "t.csv"
    timings.record_timing(path, {"run": "a", "stage": "01", "seconds": 1.0, "status": "ok"})
    timings.record_timing(path, {"run": "b", "stage": "01", "seconds": 0.5, "status": "ok"})
    assert list(pd.read_csv(path).run) == ["a", "b"]


STAGES = ["01_a", "02_b", "03_c"]


def _plant(profile, rows: list[dict]) -> None:
    """Write a time record as the runner does, one row per (run facts, stage, seconds, status)."""
    path = profile.data_root / "results" / timings.TIMINGS
    for row in rows:
        timings.record_timing(path, row)


def _run_rows(run: str, seconds: list[float], cold: bool, statuses: list[str] | None = None,
              stages: list[str] = STAGES, n_stages: int = len(STAGES)) -> list[dict]:
    """One invocation's rows: ``cold`` sets both flags (every stage, no cached work at start)."""
    facts = {"run": run, "full_run": cold, "empty_cache": cold, "n_stages": n_stages, "cpus": 2,
             "platform": "Linux-test", "device": "cpu", "commit": "abc123"}
    statuses = statuses or ["ok"] * len(seconds)
    return [timings.timing_row(facts, stage, sec, status) for stage, sec, status in zip(stages, seconds, statuses)]


def test_the_table_takes_cold_times_from_the_one_cold_run_and_latest_from_the_re_run(smoke_profile, monkeypatch):
    from genlineage.experiments.reproduction_report import timing_table

    monkeypatch.delenv(timings.RUN_ID_ENV, raising=False)
    # a cold complete run, then a cached re-run from stage 02 that is slower at 03 (a busy machine):
    # the old "longest run per stage" rule would have mixed the two
    _plant(smoke_profile, _run_rows("cold", [10.0, 100.0, 20.0], cold=True)
           + _run_rows("rerun", [3.0, 25.0], cold=False, stages=STAGES[1:], n_stages=2))
    table = timing_table(smoke_profile).set_index("stage")
    assert list(table["cold (s)"]) == [10.0, 100.0, 20.0, 130.0]
    assert list(table["latest (s)"]) == [10.0, 3.0, 25.0, 38.0]
    assert "run `cold`" in table.attrs["cold_run"] and "2 CPUs" in table.attrs["cold_run"]
    assert "note" not in table.columns


def test_a_run_with_a_failed_or_missing_stage_is_not_a_complete_cold_run(smoke_profile, monkeypatch):
    from genlineage.experiments.reproduction_report import timing_table

    monkeypatch.delenv(timings.RUN_ID_ENV, raising=False)
    failed = _run_rows("failed", [10.0, 50.0, 1.0], cold=True, statuses=["ok", "ok", "failed"])
    killed = _run_rows("killed", [11.0, 60.0], cold=True)  # stopped before its last stage: no row for it
    _plant(smoke_profile, failed + killed)
    t = timings.read_timings(smoke_profile)
    assert timings.complete_cold_runs(t) == [] and timings.latest_cold_run(t) is None
    table = timing_table(smoke_profile)
    assert set(table["cold (s)"]) == {"-"}, "no cold time is invented"
    assert table.attrs["cold_run"].startswith("**No complete cold run is recorded**")
    assert list(table.set_index("stage")["latest (s)"]) == [11.0, 60.0, 71.0], "a failed stage's time is not 'latest'"


def test_the_report_names_its_own_unfinished_cold_run(smoke_profile, monkeypatch):
    from genlineage.experiments.reproduction_report import timing_table

    _plant(smoke_profile, _run_rows("now", [10.0, 20.0], cold=True))
    monkeypatch.setenv(timings.RUN_ID_ENV, "now")
    assert "this run (`now`) is cold but still running" in timing_table(smoke_profile).attrs["cold_run"]


def test_an_old_record_without_run_facts_reads_as_not_cold(smoke_profile):
    path = smoke_profile.data_root / "results" / timings.TIMINGS
    path.parent.mkdir(parents=True)
    path.write_text("run,stage,seconds,status,note\n2026-01-01T00:00:00,01_a,28.0,ok,typed by hand\n")
    t = timings.read_timings(smoke_profile)
    assert list(t.stage) == ["01_a"] and not t.cold.any() and "note" not in t.columns
    assert timings.latest_cold_run(t) is None


def test_the_cold_flag_needs_every_stage_and_no_cached_work(tmp_path):
    root = tmp_path / "data" / "smoke"
    assert not timings.has_cached_work(root), "no data folder: a fresh clone"
    (root / "results").mkdir(parents=True)
    (root / "results" / timings.TIMINGS).write_text("run\n")
    (root / "models").mkdir()
    assert not timings.has_cached_work(root), "the time record itself and empty folders are no cached work"
    (root / "models" / "weights.bin").write_bytes(b"0")
    assert timings.has_cached_work(root)


def test_the_runner_records_run_id_cold_flag_and_machine(stages, tmp_path, smoke_profile, monkeypatch):
    for nb in ("02_broken.ipynb", "03_after.ipynb"):
        (stages / nb).unlink()
    _notebook(stages / "02_env.ipynb", "import os; print('run id', os.environ.get('GENLINEAGE_RUN_ID'))")
    monkeypatch.delenv(timings.RUN_ID_ENV, raising=False)
    runner.run_all("smoke", out_root=tmp_path / "out", notebooks_dir=stages, progress=False)
    (smoke_profile.data_root / "models").mkdir(parents=True)
    (smoke_profile.data_root / "models" / "cached.bin").write_bytes(b"0")
    runner.run_all("smoke", out_root=tmp_path / "out", notebooks_dir=stages, progress=False)  # cached work now
    runner.run_all("smoke", only=["02"], out_root=tmp_path / "out", notebooks_dir=stages, progress=False)
    t = timings.read_timings(smoke_profile)
    runs = list(dict.fromkeys(t.run))
    assert len(runs) == 3 and list(t.groupby("run", sort=False).size()) == [2, 2, 1]
    first = t[t.run == runs[0]]
    assert first.cold.all() and first.full_run.all() and first.empty_cache.all() and (first.n_stages == 2).all()
    assert not t[t.run == runs[1]].cold.any() and t[t.run == runs[1]].full_run.all()
    assert not t[t.run == runs[2]].full_run.any()
    assert timings.latest_cold_run(t) == runs[0]
    assert (t.cpus == __import__("os").cpu_count()).all() and t.platform.notna().all()
    executed = nbformat.read(tmp_path / "out" / "smoke" / "02_env.ipynb", as_version=4)
    assert f"run id {runs[2]}" in str(executed.cells[-1].outputs), "the stages' kernels see the run id"
    assert timings.RUN_ID_ENV not in __import__("os").environ


def test_an_unknown_profile_is_refused_with_exit_2(capsys):
    assert runner.main(["no-such-profile"]) == 2
    assert "profile 'no-such-profile' cannot be used" in capsys.readouterr().err


def test_committed_copies_record_where_they_ran_relative_to_the_checkout(tmp_path):
    """papermill writes absolute input and output paths into a notebook's metadata; the copy that
    is committed must not carry one machine's folders."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["papermill"] = {"input_path": str(runner.REPO_ROOT / "notebooks" / "01_datasets.ipynb"),
                                "output_path": str(runner.REPO_ROOT / "outputs" / "tiny" / "01_datasets.ipynb"),
                                "parameters": {"profile": "tiny"}}
    executed, committed = tmp_path / "executed.ipynb", tmp_path / "committed.ipynb"
    nbformat.write(nb, executed)
    notebook_copies.write_committed_copy(executed, committed)
    record = nbformat.read(committed, as_version=4).metadata["papermill"]
    assert record["input_path"] == "notebooks/01_datasets.ipynb"
    assert record["output_path"] == "outputs/tiny/01_datasets.ipynb"
    assert record["parameters"] == {"profile": "tiny"}
    assert str(runner.REPO_ROOT) not in committed.read_text()


def test_a_yaml_profile_reaches_the_notebooks_as_an_absolute_path(tmp_path, monkeypatch):
    """The notebooks run in notebooks/: a YAML path relative to the caller's folder would name nothing there."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine.yaml").write_text("extends: smoke\nname: mine\n")
    assert runner.notebook_profile_argument("mine.yaml") == str(tmp_path / "mine.yaml")
    assert runner.notebook_profile_argument("smoke") == "smoke"


def test_a_profile_that_switches_the_lora_ablation_off_skips_notebook_10_and_its_cold_run_is_still_complete(
        stages, tmp_path, smoke_profile, monkeypatch, capsys):
    from genlineage.config import load_profile

    (stages / "02_broken.ipynb").unlink()
    (stages / "03_after.ipynb").unlink()
    _notebook(stages / "10_lora.ipynb", "raise ValueError('notebook 10 must not run')")
    assert runner.skipped_by_profile(load_profile("smoke"), stages / "10_lora.ipynb") is None
    off = tmp_path / "off.yaml"
    off.write_text("extends: smoke\nname: smoke\nsuspicious: {lora_ablation: {enabled: false}}\n")
    assert "enabled is false" in runner.skipped_by_profile(load_profile(str(off)), stages / "10_lora.ipynb")
    done = runner.run_all(str(off), out_root=tmp_path / "out", notebooks_dir=stages, progress=False)
    assert [name for name, _ in done] == ["01_first"]
    assert "10_lora skipped: suspicious.lora_ablation.enabled is false" in capsys.readouterr().out
    t = timings.read_timings(smoke_profile)
    assert t.full_run.all() and (t.n_stages == 1).all(), "every stage the profile runs"
    with pytest.raises(runner.StageFailure, match="notebook 10 must not run"):
        runner.run_all("smoke", out_root=tmp_path / "out", notebooks_dir=stages, progress=False)


def _tqdm_widget_state(model_id: str, done: int, total: int) -> dict:
    """The saved state of one tqdm.notebook bar at its end: an HBox of (HTML, FloatProgress, HTML)."""
    def model(name: str, **state) -> dict:
        return {"model_module": "@jupyter-widgets/controls", "model_name": name, "state": state}

    return {model_id: model("HBoxModel", children=[f"IPY_MODEL_{model_id}a", f"IPY_MODEL_{model_id}b",
                                                   f"IPY_MODEL_{model_id}c"]),
            f"{model_id}a": model("HTMLModel", value=f"queries:\u2007{100 * done // total}%"),
            f"{model_id}b": model("FloatProgressModel", value=float(done), max=float(total), bar_style="success"),
            f"{model_id}c": model("HTMLModel", value=f"\u2007{done}/{total}\u2007[00:03&lt;00:00,\u20071.2job/s]")}


def _bar_output(model_id: str, total: int) -> dict:
    """A tqdm.notebook bar's output as papermill saves it: the view and its text captured at 0%."""
    return nbformat.v4.new_output("display_data", data={
        notebook_copies.WIDGET_VIEW: {"model_id": model_id, "version_major": 2, "version_minor": 0},
        "text/plain": f"queries:   0%|          | 0/{total} [00:00<?, ?job/s]"})


def test_committed_copies_show_finished_bars_as_text_and_no_widget(tmp_path):
    """JupyterLab draws a saved widget view as a bar frozen at 0%: the committed copy keeps the last
    state's text instead, drops a bar tqdm closed itself (no saved state) and the widget state."""
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("run()")
    cell.outputs = [_bar_output("done", 4), _bar_output("closed", 9),
                    nbformat.v4.new_output("stream", name="stdout", text="a printed line\n")]
    nb.cells = [cell]
    nb.metadata["widgets"] = {notebook_copies.WIDGET_STATE: {"state": _tqdm_widget_state("done", 4, 4),
                                                    "version_major": 2, "version_minor": 0}}
    executed, committed = tmp_path / "executed.ipynb", tmp_path / "committed.ipynb"
    nbformat.write(nb, executed)
    notebook_copies.write_committed_copy(executed, committed)
    text = committed.read_text()
    assert "widget" not in text, "no widget view and no widget state"
    copy = nbformat.read(committed, as_version=4)
    outputs = copy.cells[0].outputs
    assert [o.output_type for o in outputs] == ["display_data", "stream"]
    assert outputs[0].data == {"text/plain": "queries: 100%|██████████| 4/4 [00:03<00:00, 1.2job/s]"}
    assert outputs[1].text == "a printed line\n"
    nbformat.validate(copy)


def test_a_bar_stopped_part_way_shows_where_it_stopped_and_a_notebook_without_state_keeps_its_text():
    states = _tqdm_widget_state("half", 3, 8)
    assert notebook_copies._final_bar_text("half", states) == "queries:  38%|███▊      | 3/8 [00:03<00:00, 1.2job/s]"
    lagging = _tqdm_widget_state("lag", 7, 7)  # the HTML's last refresh was at the start; the progress is final
    lagging["laga"]["state"]["value"], lagging["lagc"]["state"]["value"] = "claims:\u20070%", "\u20070/7\u2007[00:00&lt;?]"
    assert notebook_copies._final_bar_text("lag", lagging) == "claims: 100%|██████████| 7/7 [00:00<?]"
    nb = {"metadata": {}, "cells": [{"cell_type": "code", "outputs": [_bar_output("unsaved", 8)]}]}
    assert notebook_copies.without_widgets(nb)["cells"][0]["outputs"][0]["data"] == {
        "text/plain": "queries:   0%|          | 0/8 [00:00<?, ?job/s]"}


def test_a_stage_on_request_runs_only_when_named(stages, tmp_path):
    from genlineage.config import load_profile

    asked = tmp_path / "asked.yaml"
    asked.write_text("extends: smoke\nname: smoke\nsuspicious: {lora_ablation: {on_request: true}}\n")
    profile = load_profile(str(asked))
    assert "--only 10" in runner.skipped_by_profile(profile, stages / "10_lora.ipynb")
    assert runner.skipped_by_profile(profile, stages / "10_lora.ipynb", ["10"]) is None
    assert runner.skipped_by_profile(profile, stages / "01_first.ipynb") is None
