"""The stage runner behind run_all.sh: stage selection, and a failing cell that stops the run with
the notebook and the cell named, leaving no executed copy under the final name."""
from __future__ import annotations

from pathlib import Path

import nbformat
import pandas as pd
import pytest

from genlineage import runner


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
    timings = runner.read_timings(smoke_profile)
    assert list(timings.stage) == ["01_first", "02_broken"] and list(timings.status) == ["ok", "failed"]


def test_main_reports_the_failure_and_exits_non_zero(stages, tmp_path, smoke_profile, monkeypatch, capsys):
    monkeypatch.setattr(runner, "REPO_ROOT", tmp_path)  # tmp_path/notebooks holds the stages
    code = runner.main(["smoke", "--no-progress"])
    assert code == 1
    err = capsys.readouterr().err
    assert "[run_all] FAILED: stage 02_broken.ipynb failed at cell" in err and "the cell that fails" in err


def test_timings_are_appended_not_overwritten(tmp_path):
    path = tmp_path / "t.csv"
    runner.record_timing(path, {"run": "a", "stage": "01", "seconds": 1.0, "status": "ok", "note": ""})
    runner.record_timing(path, {"run": "b", "stage": "01", "seconds": 0.5, "status": "ok", "note": ""})
    assert list(pd.read_csv(path).run) == ["a", "b"]


def test_an_unknown_profile_is_refused_with_exit_2(capsys):
    assert runner.main(["no-such-profile"]) == 2
    assert "profile 'no-such-profile' cannot be used" in capsys.readouterr().err
