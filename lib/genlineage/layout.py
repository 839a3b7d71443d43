"""Where every stage reads and writes, under ``profile.data_root`` (``data/<profile>/``)."""
from __future__ import annotations

from pathlib import Path

from .config import REPO_ROOT, Profile


def datasets_dir(profile: Profile) -> Path:
    return profile.data_root / "datasets"


def models_dir(profile: Profile) -> Path:
    return profile.data_root / "models"


def work_dir(profile: Profile) -> Path:
    """Checkpoints of runs in progress; removed when a run completes."""
    return profile.data_root / "work"


def results_dir(profile: Profile, stage: str) -> Path:
    return profile.data_root / "results" / stage


def generation_cache_dir(profile: Profile) -> Path:
    return profile.data_root / "cache" / "generations"


def base_dir(profile: Profile, base: str) -> Path:
    return models_dir(profile) / f"base_{base}"


def source_dir(profile: Profile, base: str, domain: str | None) -> Path:
    """The source model: a base as it is (domain None) or fine-tuned on a domain's source set."""
    return base_dir(profile, base) if domain is None else models_dir(profile) / f"{base}_{domain}"


def _committed_dir(profile: Profile, key: str, default_name: str) -> Path:
    """A folder of committed outputs: the profile key ``key`` (relative to the repository), or for a
    profile that sets it to null (smoke) a folder beside its data."""
    configured = getattr(profile.run, key)
    path = REPO_ROOT / configured if configured else profile.data_root / default_name
    path.mkdir(parents=True, exist_ok=True)
    return path


def figures_dir(profile: Profile) -> Path:
    """Figures (PNG and PDF): profile key ``figures_dir``."""
    return _committed_dir(profile, "figures_dir", "figures")


def tables_dir(profile: Profile) -> Path:
    """Tables (CSV and markdown): profile key ``tables_dir``."""
    return _committed_dir(profile, "tables_dir", "tables")


def shown_path(path: str | Path, profile: Profile | None = None) -> str:
    """``path`` as a printed table shows it: relative to the repository root (``data/tiny/...``),
    else to the profile's data root (``<data root>/datasets/...``, for a ``GENLINEAGE_DATA``
    outside the checkout), else just its name. An absolute path says where one machine keeps the
    checkout, nothing a reader of the committed notebook can use, and differs on every re-run."""
    path = Path(path).resolve()
    bases = [(REPO_ROOT.resolve(), "")] + ([(profile.data_root.resolve(), "<data root>/")] if profile else [])
    for base, prefix in bases:
        if path.is_relative_to(base):
            return prefix + (path.relative_to(base).as_posix() or ".")
    return path.name
