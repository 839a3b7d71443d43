"""Figures 6 and 7, the delta0 curve, and reconstructions side by side."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ..config import Profile
from ..experiments import layout
from ..experiments.attribution import load_keys
from ..experiments.instance import METHOD_NAMES
from ..generation import GenerationCache, GenerationConfig
from ..memorization import reconstruct
from .figures import save_figure

COLOURS = {"generation": "tab:red", "detection": "tab:orange", "random": "tab:blue", "watermark": "tab:green"}
LINES = {"same": "-", "other": "--"}


def _panels(n: int, width: float = 3.0, height: float = 2.6):
    cols = min(n, 3)
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False, sharey=True)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])


def _conf_panels(profile: Profile, table: pd.DataFrame, curves: list[str], draw, xlabel: str, title: str,
                 stem: str):
    """One panel per source, one curve per ``curves`` group drawn by ``draw(ax, keys, rows)``;
    the shared legend, limits and saving of Figures 6 and 7."""
    sources = sorted(table.source.unique())
    fig, axes = _panels(len(sources))
    for ax, source in zip(axes, sources):
        for keys, g in table[table.source == source].groupby(curves):
            draw(ax, keys, g)
        ax.set_title(source, fontsize=9)
        ax.set_xlabel(xlabel)
        ax.set_ylim(-0.05, 1.05)
    axes[0].set_ylabel("mean conf")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=7, frameon=False)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    save_figure(fig, layout.figures_dir(profile) / stem)
    plt.close(fig)
    return fig


def figure6(profile: Profile, f6: pd.DataFrame, tag: str):
    """Mean conf vs rho per source; a curve per method; solid = source's own base, dashed = other."""
    def draw(ax, keys, g):
        strategy, lineage = keys
        g = g.sort_values("rho")
        ax.errorbar(g.rho, g["mean"], yerr=g["std"], color=COLOURS.get(strategy), ls=LINES.get(lineage, ":"),
                    marker="o", ms=3, capsize=2, label=f"{METHOD_NAMES[strategy]}, {lineage} base")

    return _conf_panels(profile, f6, ["strategy", "lineage"], draw, "rho (generated share)",
                        f"Figure 6: instance-level attribution ({tag})", f"fig6_conf_vs_rho_{tag}")


def figure7(profile: Profile, f7: pd.DataFrame, tag: str):
    """Mean conf vs N per source: rho = 1 infringing (red) and innocent (grey)."""
    def draw(ax, keys, g):
        kind, lineage = keys
        g = g.sort_values("N")
        ax.plot(g.N, g.conf, marker="o", ms=3, ls=LINES.get(lineage, ":"),
                color="tab:red" if kind == "infringing" else "tab:gray", label=f"{kind}, {lineage} base")

    return _conf_panels(profile, f7, ["kind", "lineage"], draw, "N (key samples)",
                        f"Figure 7: conf vs number of key samples ({tag})", f"fig7_conf_vs_n_{tag}")


def delta0_curve(profile: Profile, curve: pd.DataFrame, deltas: dict):
    fig, ax = plt.subplots(figsize=(4.5, 3))
    ax.plot(curve.delta0, curve.conf_infringing, color="tab:red", label="infringing shadows")
    ax.plot(curve.delta0, curve.conf_innocent, color="tab:gray", label="innocent shadows")
    for name, d in deltas.items():
        ax.axvline(d, ls="--" if name == "paper" else "-", color="black", lw=0.8)
        ax.text(d, 1.01, f"{name} {d:.3f}", fontsize=7, rotation=90, va="bottom")
    ax.set_xlabel("delta0")
    ax.set_ylabel("mean conf (shadow models)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, layout.figures_dir(profile) / "06_delta0_from_shadows")
    plt.close(fig)
    return fig


def reconstructions(profile: Profile, models: pd.DataFrame, source: str, strategy: str, n: int = 6):
    """Reference, the source's, a rho = 1 infringing model's and an innocent model's best
    reconstruction of the first ``n`` keys (own lineage), RD under each."""
    keys = load_keys(profile, source)[strategy]
    keys = keys.subset(min(n, len(keys)))
    ev = models[(models.role == "evaluated") & (models.source == source) & (models.lineage == "same")]
    rows = {"source": ev.source_path.iloc[0], "infringing": ev[ev.rho == 1.0].path.iloc[0],
            "innocent": ev[ev.rho == 0.0].path.iloc[0]}
    cfg = GenerationConfig.from_mapping(profile["generation"])
    cache = GenerationCache(layout.generation_cache_dir(profile))
    seeds = [int(s) for s in profile["attribution"]["seeds"]]
    fig, axes = plt.subplots(4, len(keys), figsize=(1.3 * len(keys), 5.6), squeeze=False)
    for col in range(len(keys)):
        axes[0][col].imshow(keys.references[col])
    for row, (label, path) in enumerate(rows.items(), start=1):
        rec = reconstruct(profile.load_model(path), keys.prompts, keys.references, seeds, cfg, cache,
                          profile["attribution"].get("distance", "l2"))
        for col in range(len(keys)):
            best = rec.generations[col, seeds.index(int(rec.best_seed[col]))]
            axes[row][col].imshow(best)
            axes[row][col].set_xlabel(f"RD {rec.distance[col]:.3f}", fontsize=7)
    for row, label in enumerate(["key reference", "source", "infringing rho=1", "innocent"]):
        axes[row][0].set_ylabel(label, fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([]), ax.set_yticks([])
    fig.suptitle(f"{source}: {METHOD_NAMES[strategy]} keys reconstructed", fontsize=9)
    fig.tight_layout()
    save_figure(fig, layout.figures_dir(profile) / f"04_reconstructions_{source}")
    plt.close(fig)
    return fig


def roc_curves(profile: Profile, rocs: pd.DataFrame, tag: str):
    """Log-scale ROC curves per source (discriminator solid, conf dashed), as LiRA plots them."""
    sources = sorted(rocs.source.unique())
    fig, axes = _panels(max(1, len(sources)), 2.8, 2.6)
    for ax, source in zip(axes, sources):
        for score, g in rocs[rocs.source == source].groupby("score"):
            ax.step(np.clip(g.fpr, 1e-3, 1), g.tpr, where="post", ls="-" if score == "discriminator" else "--", label=score)
        ax.plot([1e-3, 1], [1e-3, 1], color="gray", lw=0.5)
        ax.set_xscale("log")
        ax.set_xlim(1e-2, 1)
        ax.set_title(source, fontsize=9)
        ax.set_xlabel("FPR")
    axes[0].set_ylabel("TPR")
    axes[0].legend(fontsize=7)
    fig.suptitle(f"ROC of the statistical level ({tag})", fontsize=10)
    fig.tight_layout()
    save_figure(fig, layout.figures_dir(profile) / f"05_roc_{tag}")
    plt.close(fig)
    return fig
