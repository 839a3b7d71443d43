"""Saving figures and drawing captioned image grids.

Figures are saved as PNG (for the notebooks and README) and PDF (for print), each written to a
temporary name and renamed into place, so a reader never picks up a half-written file. The
non-interactive 'Agg' backend is selected when nothing else was chosen, so this works on a
headless machine and under papermill.
"""
from __future__ import annotations

import os
import textwrap
from pathlib import Path
from typing import Sequence

import matplotlib

if "MPLBACKEND" not in os.environ:  # Jupyter sets MPLBACKEND to its inline backend: keep that
    matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from .. import layout  # noqa: E402
from ..io import atomic_path  # noqa: E402


def save_figure(fig: Figure, path_stem: str | Path, dpi: int = 150, formats: Sequence[str] = ("png", "pdf")) -> list[Path]:
    """Write ``<path_stem>.png`` and ``<path_stem>.pdf`` atomically; return the paths written."""
    path_stem = Path(path_stem)
    written = []
    for ext in formats:
        target = path_stem.with_name(f"{path_stem.name}.{ext}")
        with atomic_path(target) as tmp:
            # no creation date or software version in the file: a re-run writes the same bytes
            meta = {"CreationDate": None} if ext == "pdf" else {"Software": None}
            fig.savefig(tmp, format=ext, dpi=dpi, bbox_inches="tight", metadata=meta)
        written.append(target)
    return written


def _as_display(image: np.ndarray) -> np.ndarray:
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        arr = np.clip(arr.astype(np.float32), 0.0, 1.0)
    return arr


def caption_grid(
    images: np.ndarray | Sequence[np.ndarray],
    captions: Sequence[str],
    ncols: int = 6,
    wrap: int = 28,
    cell_inches: float = 2.0,
    fontsize: float = 7.0,
) -> Figure:
    """Images in a grid with each caption wrapped under its image (notebook 01's sample view).

    ``images``: uint8 or float in [0, 1], [N, H, W, 3] or a list of HxWx3 arrays.
    """
    images = list(images)
    if len(images) != len(captions):
        raise ValueError(f"caption_grid got {len(images)} images but {len(captions)} captions")
    n = len(images)
    ncols = max(1, min(ncols, n)) if n else 1
    nrows = max(1, -(-n // ncols))
    wrapped = [textwrap.fill(str(c), width=wrap) for c in captions]
    max_lines = max((w.count("\n") + 1 for w in wrapped), default=1)
    text_h = 0.16 * max_lines * fontsize / 7.0
    fig, axes = plt.subplots(nrows, ncols, figsize=(ncols * cell_inches, nrows * (cell_inches + text_h)), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if i >= n:
            continue
        ax.imshow(_as_display(images[i]), interpolation="nearest")
        ax.text(0.5, -0.03, wrapped[i], transform=ax.transAxes, ha="center", va="top", fontsize=fontsize, wrap=False)
    fig.tight_layout()
    return fig


def sample_grid(profile, domain: str, images: np.ndarray, captions: Sequence[str]) -> Figure:
    """Notebook 01's view of a domain's source set (``experiments.datasets.source_samples``), saved
    as ``01_samples_<domain>``."""
    fig = caption_grid(images, captions)
    save_figure(fig, layout.figures_dir(profile) / f"01_samples_{domain}")
    return fig
