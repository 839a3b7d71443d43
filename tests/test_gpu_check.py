"""The GPU check script at toy sizes on the CPU: the same code a GPU runs at 512 px."""
from __future__ import annotations

import importlib.util
import json
import sys

from genlineage.config import REPO_ROOT


def test_the_gpu_check_runs_both_architectures_and_reports_every_rate(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("gpu_check", REPO_ROOT / "scripts" / "gpu_check.py")
    gpu_check = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "gpu_check", gpu_check)  # its dataclasses look their module up
    spec.loader.exec_module(gpu_check)
    assert gpu_check.main(["--toy", "--device", "cpu", "--out", str(tmp_path / "check.json")]) == 0
    rows = json.loads((tmp_path / "check.json").read_text())["rows"]
    assert [r["model"] for r in rows] == ["SD-v1.5 (toy)"] * 4 + ["SD-v2.1 (toy)"] * 4
    assert all((r.get("steps_per_s") or r.get("images_per_s")) > 0 and r["peak_gb"] > 0 for r in rows)
    engine = [r for r in rows if r["what"].startswith("fine-tune: genlineage")]
    assert all(r["resumed_at"] == 2 for r in engine), "half the steps, a checkpoint, a resume"
    assert {r["size"] for r in rows if "size" in r} == {32}
    assert gpu_check.SD21.prediction_type == "v_prediction" and gpu_check.SD21.unet["cross_attention_dim"] == 1024
