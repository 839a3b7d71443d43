"""Stage 01: the datasets, summarised for notebook 01."""
from __future__ import annotations

import hashlib
from itertools import combinations
from pathlib import Path

import pandas as pd

from ..config import Profile
from ..data.imagefolder import read_imagefolder
from ..report.figures import caption_grid, save_figure
from .. import layout
from ..layout import shown_path


def dataset_table(profile: Profile, folders: dict[str, Path]) -> pd.DataFrame:
    """One row per image folder: images, distinct ids, and where it is (relative to the checkout:
    the committed notebook must not print one machine's absolute path)."""
    rows = []
    for name, path in sorted(folders.items()):
        folder = read_imagefolder(path, check_images=False)
        ids = [r.get("id", r["file_name"]) for r in folder.records]
        domain, _, role = name.partition("_")
        dup = profile["data"]["domains"].get(domain, {}).get("duplication", {}) if role == "source" else {}
        rows.append({"folder": name, "images": len(folder), "distinct": len(set(ids)),
                     "duplication": f"{dup.get('rate', 0):.0%} x{dup.get('copies', 1)}" if dup else "",
                     "path": shown_path(path, profile)})
    return pd.DataFrame(rows)


def content_overlap(folders: dict[str, Path]) -> int:
    """How many image files are byte-identical across two different folders (0 when disjoint)."""
    hashes = {name: {hashlib.sha256(p.read_bytes()).hexdigest() for p in read_imagefolder(path, check_images=False).paths}
              for name, path in folders.items()}
    return sum(len(hashes[a] & hashes[b]) for a, b in combinations(sorted(hashes), 2))


def sample_grid(profile: Profile, domain: str, n: int = 12):
    """The first ``n`` images of a domain's source set with their captions; saved as a figure."""
    folder = read_imagefolder(layout.datasets_dir(profile) / f"{domain}_source")
    n = min(n, len(folder))
    fig = caption_grid(folder.load_images()[:n], folder.captions[:n])
    save_figure(fig, layout.figures_dir(profile) / f"01_samples_{domain}")
    return fig
