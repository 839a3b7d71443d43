"""Figures of notebook 02: RD histograms and reconstructions side by side."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ..config import Profile
from .. import layout
from .figures import save_figure


def rd_histograms(profile: Profile, per_sample: pd.DataFrame):
    """Own vs held-out RD per fine-tuned source (the base on the same captions dashed)."""
    models = per_sample[per_sample.finetuned].groupby(["base", "domain"])
    fig, axes = plt.subplots(1, len(models), figsize=(3.4 * len(models), 2.8), squeeze=False)
    bins = np.linspace(0, float(per_sample.rd.max()) * 1.05 + 1e-6, 30)
    for ax, ((base, domain), rows) in zip(axes[0], models):
        for split, colour in (("own", "tab:red"), ("heldout", "tab:blue")):
            ax.hist(rows.loc[rows.split == split, "rd"], bins=bins, alpha=0.55, color=colour, label=f"source, {split}")
        ctrl = per_sample[(~per_sample.finetuned) & (per_sample.base == base) & (per_sample.domain == domain)
                          & (per_sample.split == "own")]
        ax.hist(ctrl.rd, bins=bins, histtype="step", linestyle="--", color="black", label="base, same captions")
        ax.set_title(f"{base}-{domain}")
        ax.set_xlabel("reconstruction distance")
    axes[0][0].set_ylabel("samples")
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, layout.figures_dir(profile) / "02_memorisation_rd")
    plt.close(fig)
    return fig


def reconstruction_grid(profile: Profile, base: str, domain: str, ex: dict):
    """Rows: training image, the source's best reconstruction, the base's; RD under each (``ex``:
    ``experiments.memorisation.reconstruction_examples``)."""
    n = len(ex["reference"])
    fig, axes = plt.subplots(3, n, figsize=(1.3 * n, 4.3), squeeze=False)
    for col in range(n):
        for row, (label, key) in enumerate((("training image", "reference"), ("source", "source"), ("base", "base"))):
            ax = axes[row][col]
            ax.imshow(ex[key][col])
            ax.set_xticks([]), ax.set_yticks([])
            if key != "reference":
                ax.set_xlabel(f"RD {ex[f'{key}_rd'][col]:.3f}", fontsize=7)
            if col == 0:
                ax.set_ylabel(label, fontsize=8)
    fig.suptitle(f"{base}-{domain}: most memorised training images", fontsize=9)
    fig.tight_layout()
    save_figure(fig, layout.figures_dir(profile) / f"02_reconstructions_{base}_{domain}")
    plt.close(fig)
    return fig
