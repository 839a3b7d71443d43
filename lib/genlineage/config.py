"""Profiles: one YAML per profile, the only thing that differs between smoke, tiny and paper.

A profile is a nested mapping. Every count and size the code uses is read from it, so that the
same code path serves a 2-core CPU run and a GPU run on SD-v1.5/2.1. ``extends`` lets a profile
start from another one and override a few keys.
"""
from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any, Mapping

import yaml

from .errors import InputError

PROFILE_DIR = Path(__file__).with_name("profiles")
REPO_ROOT = Path(__file__).resolve().parents[2]


class Profile(dict):
    """A profile: a dict with dotted look-ups (``profile.get_path("training.finetune.steps")``)."""

    @property
    def name(self) -> str:
        return str(self["name"])

    def get_path(self, dotted: str, default: Any = ...) -> Any:
        node: Any = self
        for part in dotted.split("."):
            if not isinstance(node, Mapping) or part not in node:
                if default is ...:
                    raise KeyError(f"profile {self.get('name')!r} has no key {dotted!r}")
                return default
            node = node[part]
        return node

    @property
    def torch_dtype(self):
        """The dtype models are loaded in for inference (training keeps fp32 master weights)."""
        import torch

        return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[self.get("dtype", "float32")]

    @property
    def data_root(self) -> Path:
        """Where this profile's generated data, models and caches live."""
        root = os.environ.get("GENLINEAGE_DATA") or self.get("data_root") or REPO_ROOT / "data"
        return Path(root) / self.name


def _merge(base: dict, override: Mapping) -> dict:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def available_profiles() -> list[str]:
    return sorted(p.stem for p in PROFILE_DIR.glob("*.yaml"))


def _read_yaml(path: Path) -> dict:
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise InputError(f"profile file {path} is not a YAML mapping; start it with 'name: <profile>'.")
    parent = data.pop("extends", None)
    if parent:
        data = _merge(_read_yaml(_resolve(parent)), data)
    return data


def _resolve(name_or_path: str | Path) -> Path:
    path = Path(name_or_path)
    if path.suffix in {".yaml", ".yml"}:
        if not path.is_file():
            raise InputError(f"profile file {path} does not exist; pass one of {available_profiles()} or a YAML path.")
        return path
    candidate = PROFILE_DIR / f"{name_or_path}.yaml"
    if not candidate.is_file():
        raise InputError(f"unknown profile {str(name_or_path)!r}; choose one of {available_profiles()} or pass a YAML path.")
    return candidate


def load_profile(name_or_path: str | Path = "tiny", overrides: Mapping | None = None) -> Profile:
    """Load a profile by name (``smoke``, ``tiny``, ``paper``) or YAML path, with overrides."""
    data = _read_yaml(_resolve(name_or_path))
    if overrides:
        data = _merge(data, overrides)
    data.setdefault("name", Path(str(name_or_path)).stem)
    return Profile(data)
