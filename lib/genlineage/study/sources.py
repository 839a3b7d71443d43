"""The study's source models: the bases and their fine-tunes on each domain, and the domain each
source's infringers draw from."""
from __future__ import annotations

import numpy as np
import pandas as pd

from .. import layout
from ..config import Profile
from ..io import derive_seed
from ..watermark import random_bits


def source_models(profile: Profile) -> pd.DataFrame:
    """The six source models: name, base, domain (None for a base as it is), folder."""
    rows = []
    for base in sorted(profile.models.bases):
        rows.append({"source": base, "base": base, "domain": None, "path": str(layout.source_dir(profile, base, None))})
        for domain in sorted(profile.data.domains):
            rows.append({"source": f"{base}-{domain}", "base": base, "domain": domain,
                         "path": str(layout.source_dir(profile, base, domain))})
    return pd.DataFrame(rows)


def source_table(profile: Profile) -> pd.DataFrame:
    """The sources of stages 03-08 with the domain their infringers draw from (a base: the
    profile's choice). The bases used as they are count as sources when ``suspicious.base_sources``
    is true (the paper's six); otherwise only the fine-tuned sources do."""
    table = source_models(profile)
    if not profile.suspicious.base_sources:
        table = table[table.domain.notna()].reset_index(drop=True)
    default = profile.suspicious.base_source_domain or sorted(profile.data.domains)[0]
    table["pool_domain"] = [d if isinstance(d, str) else default for d in table.domain]
    return table


def source_watermark_bits(profile: Profile, source: str) -> np.ndarray:
    """The 32-bit key a source would stamp on its outputs (Baseline 1)."""
    return random_bits(derive_seed(profile.run.seed, "watermark", source) % (2**31))
