"""Stage 01: the datasets, summarised for notebook 01."""
from __future__ import annotations

import hashlib
from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd

from .. import layout
from ..config import Profile
from ..data.imagefolder import read_imagefolder
from ..data.splits import check_disjoint
from ..errors import InputError
from ..io import read_json
from ..layout import shown_path


def dataset_table(profile: Profile, folders: dict[str, Path]) -> pd.DataFrame:
    """One row per image folder: images, distinct ids, and where it is (relative to the checkout:
    the committed notebook must not print one machine's absolute path)."""
    rows = []
    for name, path in sorted(folders.items()):
        folder = read_imagefolder(path, check_images=False)
        ids = [r.get("id", r["file_name"]) for r in folder.records]
        domain, _, role = name.partition("_")
        dup = profile.data.domains[domain].duplication if role == "source" and domain in profile.data.domains else None
        rows.append({"folder": name, "images": len(folder), "distinct": len(set(ids)),
                     "duplication": f"{dup.rate:.0%} x{dup.copies}" if dup else "",
                     "path": shown_path(path, profile)})
    return pd.DataFrame(rows)


def content_overlap(folders: dict[str, Path]) -> int:
    """How many image files are byte-identical across two different folders (0 when disjoint)."""
    hashes = {name: {hashlib.sha256(p.read_bytes()).hexdigest() for p in read_imagefolder(path, check_images=False).paths}
              for name, path in folders.items()}
    return sum(len(hashes[a] & hashes[b]) for a, b in combinations(sorted(hashes), 2))


def source_samples(profile: Profile, domain: str, n: int = 12) -> tuple[np.ndarray, list[str]]:
    """The first ``n`` images of a domain's source set and their captions (what notebook 01 shows)."""
    folder = read_imagefolder(layout.datasets_dir(profile) / f"{domain}_source")
    n = min(n, len(folder))
    return folder.load_images(rows=range(n)), folder.captions[:n]


def check_roles_disjoint(profile: Profile, folders: dict[str, Path]) -> dict:
    """Notebook 01's check that the roles share nothing: by id (the split file as written, checked
    by ``data.splits.check_disjoint``; its refusal is kept as the reason) and by content (image
    files byte-identical across folders)."""
    try:
        check_disjoint(read_json(profile.data_root / "splits.json"))
        by_id, why = True, ""
    except InputError as err:
        by_id, why = False, str(err)
    checks = {"roles disjoint by id": by_id, "images shared between roles": content_overlap(folders)}
    return {**checks, "why not": why} if why else checks
