"""The manifest of suspicious models (``manifest.csv``) and the shared null shadows
(``null_shadows.csv``): every model with its source, rho, base, seed, role and label, planned
deterministically from the profile; every stage from 03 on reads it (as ML Privacy Meter does).

Each replicate (master seed) is its own draw: the model names carry it, so every model's seed and
its training pairs, and every shadow's rho, differ between replicates; the sources and their key
sets are shared.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .. import layout
from ..config import Profile
from ..errors import InputError
from ..io import atomic_path, derive_seed
from .sources import source_table


MANIFEST = "manifest.csv"


NULL_SHADOWS = "null_shadows.csv"


def _other_base(profile: Profile, base: str) -> str:
    bases = sorted(profile.models.bases)
    others = [b for b in bases if b != base]
    return others[0] if others else base


def replicates(profile: Profile) -> list[int]:
    """The master seeds of stages 03-08 (``suspicious.replicates``; one draw when absent)."""
    return list(profile.suspicious.replicates)


def plan_manifest(profile: Profile) -> pd.DataFrame:
    """Every suspicious model of the profile: one row each, deterministic in the profile seed.

    Each replicate (master seed) is its own draw: the model names carry it, so every model's seed
    and its training pairs (drawn from its pool with that seed), and every shadow's rho, differ
    between replicates; the sources and their key sets are shared."""
    rhos = list(profile.suspicious.rhos)
    rows = []
    for replicate in replicates(profile):
        for _, src in source_table(profile).iterrows():
            for lineage in profile.suspicious.lineages:
                rows += _cell_rows(profile, src, lineage, replicate, rhos)
    return pd.DataFrame(rows)


NULL_SHADOW_REPLICATE = -1  # the replicate column of the shared null shadows: none of 0, 1, 2, ...


def plan_null_shadows(profile: Profile) -> pd.DataFrame:
    """Each source's shared innocent shadows (``suspicious.null_shadows``): fine-tuned from the
    source's own base on real pairs of its domain's shadow pool, one draw serving every replicate
    (replicate -1). They sit in their own table (``null_shadows.csv``), not the manifest, so the
    per-replicate stages (04's delta0, 05's discriminator, 10's LoRA twins) never see them; stage
    08's null takes them with each replicate's own innocent shadows."""
    rows = [suspicious_row(profile, src, "shadow", "same", src.base, 0.0, 200 + rep, NULL_SHADOW_REPLICATE)
            for _, src in source_table(profile).iterrows() for rep in range(profile.suspicious.null_shadows)]
    return pd.DataFrame(rows)


def suspicious_row(profile: Profile, src, role: str, lineage: str, base: str, rho: float, rep: int, replicate: int,
                   *, n_samples: int | None = None, train_steps: int | None = None, tag: str | None = None) -> dict:
    """One model's manifest row: its name carries every choice, and its seed derives from the name.
    ``n_samples`` and ``train_steps`` (the world grid's cells) override the profile's for this row."""
    cfg = profile.suspicious
    tag = tag or ("shared" if replicate == NULL_SHADOW_REPLICATE else f"s{replicate}")
    name = f"{src.source}__{role}__{lineage}__rho{rho:g}__r{rep}__{tag}"
    return {
        "name": name, "source": src.source, "source_path": src.path, "source_base": src.base,
        "domain": src.pool_domain, "role": role, "lineage": lineage, "base": base,
        "base_path": str(layout.base_dir(profile, base)), "rho": rho, "label": int(rho > 0),
        "replicate": int(replicate), "n_samples": int(n_samples or cfg.n_samples),
        "seed": derive_seed(profile.run.seed, "suspicious", name),
        "pool": f"{src.pool_domain}_{'suspicious_pool' if role == 'evaluated' else 'shadow_pool'}",
        "path": str(layout.models_dir(profile) / "suspicious" / name),
        **({"train_steps": int(train_steps)} if train_steps else {}),
    }


def _cell_rows(profile: Profile, src, lineage: str, replicate: int, rhos: list[float]) -> list[dict]:
    """The models of one (source, lineage, replicate): evaluated infringers per rho and innocents,
    then the shadow set."""
    cfg = profile.suspicious
    base = src.base if lineage == "same" else _other_base(profile, src.base)
    plan = [("evaluated", rho, rep) for rho in rhos for rep in range(cfg.evaluated.infringing)]
    plan += [("evaluated", 0.0, rep) for rep in range(cfg.evaluated.innocent)]
    rng = np.random.default_rng(derive_seed(profile.run.seed, "shadow-rho", src.source, lineage, replicate))
    plan += [("shadow", float(rng.choice(rhos)), rep) for rep in range(cfg.shadow.infringing)]
    plan += [("shadow", 0.0, 100 + rep) for rep in range(cfg.shadow.innocent)]
    return [suspicious_row(profile, src, role, lineage, base, rho, rep, replicate) for role, rho, rep in plan]


def write_manifest(profile: Profile, manifest: pd.DataFrame, name: str = MANIFEST) -> Path:
    path = profile.data_root / name
    with atomic_path(path) as tmp:
        manifest.to_csv(tmp, index=False)
    return path


def read_manifest(profile: Profile) -> pd.DataFrame:
    path = profile.data_root / MANIFEST
    if not path.is_file():
        raise InputError(f"{path} does not exist; run notebook 03 (build_suspicious_models) for profile {profile.name!r} first.")
    return pd.read_csv(path)


def read_null_shadows(profile: Profile) -> pd.DataFrame:
    """The shared innocent shadows stage 03 trained (empty when the profile asks for none)."""
    path = profile.data_root / NULL_SHADOWS
    if profile.suspicious.null_shadows == 0:
        return plan_null_shadows(profile)
    if not path.is_file():
        raise InputError(f"{path} does not exist; run notebook 03 (build_suspicious_models) for profile {profile.name!r} first.")
    return pd.read_csv(path)
