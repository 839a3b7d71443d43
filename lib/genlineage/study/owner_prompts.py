"""What stage 08's owner's test will ask a stage-03 model: the keys of every source it is judged
for or is a null of, and the control pairs. Stage 03 asks them before it releases a model's weights
(``models.keep_finetuned``), so that stage 08 reads them all from the generation cache.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

import pandas as pd

from .. import layout
from ..config import Profile
from ..data.imagefolder import read_imagefolder
from ..errors import InputError
from ..keys import profile_seeds
from ..key_sets import KeySet
from ..verify.budget import fisher_split
from .manifest import read_manifest
from .queries import keys_dir


def controls_dir(profile: Profile, domain: str) -> Path:
    """The domain's held-out pairs: never trained on by its sources, nor by any suspect or shadow."""
    return layout.datasets_dir(profile) / f"{domain}_heldout"


def owner_test_prompts(profile: Profile, row: Mapping) -> list[str]:
    """Every caption stage 08 asks one evaluated or shadow model of the manifest, at every query
    seed: the main strategy's keys of each source it is judged for or is a null of, and the control
    pairs. Stage 03 asks them before it releases the model's weights (``models.keep_finetuned``),
    so that stage 08 reads them all from the generation cache; the rules are stage 08's own
    (``population_paths``, ``null_models``, ``source_shadow_units`` of
    :mod:`genlineage.experiments.model_owner_verify`)."""
    prompts = []
    for source in sorted(judged_with_keys_of(row, read_manifest(profile))):
        prompts += _main_keys(profile, source).prompts
    return prompts + _control_prompts(profile, row)


def judged_with_keys_of(row: Mapping, manifest: pd.DataFrame) -> set[str]:
    """The sources whose keys stage 08 asks ``row``: its own, and for an innocent shadow every
    source with an evaluated model of its base and domain in ``manifest`` (the population null of
    that model and the choice of statistic on that source's shadows take every such shadow)."""
    sources = {str(row["source"])}
    if row["role"] == "shadow" and int(row["label"]) == 0:
        made_alike = (manifest.role == "evaluated") & (manifest.base == row["base"]) & (manifest.domain == row["domain"])
        sources |= set(manifest[made_alike].source)
    return sources


def control_count(profile: Profile, row: Mapping, n_keys: int, available: int) -> int:
    """How many of the domain's ``available`` distinct held-out pairs stage 08 asks ``row``:
    ``verify.n_controls`` (the choice of statistic asks them of every shadow; a statistic that
    compares keys with controls, of every model), and for an evaluated model as many as the
    controls null's Fisher test asks it over the source's ``n_keys`` keys."""
    n = int(profile.verify.n_controls)
    if row["role"] == "evaluated":
        n = max(n, _fisher_controls(profile, n_keys, available))
    return min(n, available)


def _main_keys(profile: Profile, source: str) -> KeySet:
    return KeySet.load(keys_dir(profile, source, profile.attribution.main_strategy))


def _control_prompts(profile: Profile, row: Mapping) -> list[str]:
    """The domain's first distinct held-out pairs, as many as :func:`control_count` says."""
    folder = read_imagefolder(controls_dir(profile, row["domain"]), check_images=False)
    rows = folder.distinct_indices()
    n_keys = len(_main_keys(profile, str(row["source"]))) if row["role"] == "evaluated" else 0
    return [folder.records[i]["text"] for i in rows[:control_count(profile, row, n_keys, len(rows))]]


def _fisher_controls(profile: Profile, n_keys: int, available: int) -> int:
    """The controls stage 08's controls null (``model_owner_verify.verify_evaluated``) asks a suspect
    with ``n_keys`` keys (every key, no budget, at the profile's target); none where that null
    refuses the suspect unasked."""
    _, seeds = profile_seeds(profile)
    try:
        return fisher_split(profile.verify.target_fpr, n_keys, available, len(seeds), None)[1]
    except InputError:
        return 0
