"""The two install paths pin the same versions, and torch is the CPU build we require."""
from __future__ import annotations

from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def _pins() -> dict[str, str]:
    pins = {}
    for line in (REPO / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"requirements.txt line {line!r} is not pinned with =="
            pins[name.lower()] = version
    return pins


def test_requirements_pin_torch_and_the_stack():
    pins = _pins()
    assert pins["torch"] == "2.13.0"
    assert "torchvision" not in pins
    for name in ("diffusers", "transformers", "safetensors", "numpy", "scikit-learn", "matplotlib", "seaborn",
                 "jupyterlab", "papermill", "nbval", "pytest"):
        assert name in pins, name


def test_conda_environment_installs_the_same_pins():
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    deps = env["dependencies"]
    assert "python=3.11" in deps
    pip = next(d["pip"] for d in deps if isinstance(d, dict))
    assert "-r requirements.txt" in pip and "-e ." in pip


def test_nodeps_file_is_pinned_and_installed_by_both_paths():
    lines = [line.strip() for line in (REPO / "requirements-nodeps.txt").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    assert lines == ["invisible-watermark==0.2.0"]
    assert "--no-deps -r requirements-nodeps.txt" in (REPO / "scripts" / "setup.sh").read_text()
    assert "--no-deps -r requirements-nodeps.txt" in (REPO / "environment.yml").read_text()
