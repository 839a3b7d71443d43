"""Figures 6 and 7, the delta0 curve, and reconstructions side by side."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ..config import Profile
from .. import layout
from ..experiments.instance_tables import METHOD_NAMES
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


def _interval_curve(ax, x, table: pd.DataFrame, points: pd.DataFrame | None, value: str, **style) -> None:
    """Mean over models with its 95% interval as error bars, and every model as a faint dot (the
    spread over models, which the interval summarises)."""
    low = (table["mean"] - table["low"]).fillna(0).clip(lower=0)
    high = (table["high"] - table["mean"]).fillna(0).clip(lower=0)
    ax.errorbar(table[x], table["mean"], yerr=[low, high], marker="o", ms=3, capsize=2, **style)
    if points is not None and len(points):
        ax.scatter(points[x], points[value], s=6, alpha=0.35, color=style.get("color"), linewidths=0)


def _matching(points: pd.DataFrame | None, **match) -> pd.DataFrame | None:
    if points is None:
        return None
    keep = np.ones(len(points), bool)
    for column, value in match.items():
        keep &= (points[column] == value).to_numpy()
    return points[keep]


FIGURE6_STEM, FIGURE7_STEM = "fig6_conf_vs_rho_{tag}", "fig7_conf_vs_n_{tag}"  # in the profile's figures_dir


def figure6(profile: Profile, f6: pd.DataFrame, tag: str, confs: pd.DataFrame | None = None):
    """Mean conf vs rho per source with its 95% interval over models; a curve per method; solid =
    source's own base, dashed = other; dots are the models themselves (``confs``)."""
    def draw(ax, keys, g):
        strategy, lineage = keys
        dots = _matching(confs, source=g.source.iloc[0], strategy=strategy, lineage=lineage)
        _interval_curve(ax, "rho", g.sort_values("rho"), dots, "conf", color=COLOURS.get(strategy),
                        ls=LINES.get(lineage, ":"), label=f"{METHOD_NAMES[strategy]}, {lineage} base")

    return _conf_panels(profile, f6, ["strategy", "lineage"], draw, "rho (generated share)",
                        f"Figure 6: instance-level attribution ({tag}; mean and 95% interval over models)",
                        FIGURE6_STEM.format(tag=tag))


def figure7(profile: Profile, f7: pd.DataFrame, tag: str, per_model: pd.DataFrame | None = None):
    """Mean conf vs N per source with its 95% interval over models: rho = 1 infringing (red) and
    innocent (grey); dots are the models themselves (``per_model``)."""
    def draw(ax, keys, g):
        kind, lineage = keys
        dots = _matching(per_model, source=g.source.iloc[0], kind=kind, lineage=lineage)
        _interval_curve(ax, "N", g.sort_values("N"), dots, "conf", ls=LINES.get(lineage, ":"),
                        color="tab:red" if kind == "infringing" else "tab:gray", label=f"{kind}, {lineage} base")

    return _conf_panels(profile, f7, ["kind", "lineage"], draw, "N (key samples)",
                        f"Figure 7: conf vs number of key samples ({tag}; mean and 95% interval over models)",
                        FIGURE7_STEM.format(tag=tag))


def delta0_curve(profile: Profile, curve: pd.DataFrame, deltas: dict):
    """Mean conf of the infringing and innocent shadow models vs delta0, one line per replicate,
    with each replicate's calibrated delta0 (and the paper's) marked."""
    fig, ax = plt.subplots(figsize=(4.5, 3))
    reps = sorted(curve.replicate.unique()) if "replicate" in curve else [None]
    for i, rep in enumerate(reps):
        c = curve if rep is None else curve[curve.replicate == rep]
        ax.plot(c.delta0, c.conf_infringing, color="tab:red", lw=0.9, label="infringing shadows" if i == 0 else None)
        ax.plot(c.delta0, c.conf_innocent, color="tab:gray", lw=0.9, label="innocent shadows" if i == 0 else None)
    for name, by_rep in deltas.items():
        values = sorted(set(by_rep.values())) if isinstance(by_rep, dict) else [by_rep]
        for d in values:
            ax.axvline(d, ls="--" if name == "paper" else "-", color="black", lw=0.8)
            ax.text(d, 1.01, f"{name} {d:.3f}", fontsize=7, rotation=90, va="bottom")
    ax.set_xlabel("delta0")
    ax.set_ylabel("mean conf (shadow models)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, layout.figures_dir(profile) / "06_delta0_from_shadows")
    plt.close(fig)
    return fig


def reconstructions(profile: Profile, examples: dict):
    """Key references over the best reconstructions of the source, a rho = 1 infringing model and an
    innocent one (``experiments.instance_attribution.reconstruction_examples``), RD under each."""
    refs, rows = examples["reference"], examples["rows"]
    fig, axes = plt.subplots(1 + len(rows), len(refs), figsize=(1.3 * len(refs), 1.4 * (1 + len(rows))), squeeze=False)
    for col in range(len(refs)):
        axes[0][col].imshow(refs[col])
    for row, (images, distances) in enumerate(rows.values(), start=1):
        for col in range(len(refs)):
            axes[row][col].imshow(images[col])
            axes[row][col].set_xlabel(f"RD {distances[col]:.3f}", fontsize=7)
    for row, label in enumerate(["key reference", *rows]):
        axes[row][0].set_ylabel(label, fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([]), ax.set_yticks([])
    fig.suptitle(f"{examples['source']}: {METHOD_NAMES[examples['strategy']]} keys reconstructed", fontsize=9)
    fig.tight_layout()
    save_figure(fig, layout.figures_dir(profile) / f"04_reconstructions_{examples['source']}")
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


LORA_STEM = "fig_lora_conf_vs_rho_{tag}"  # notebook 10's figure, in the profile's figures_dir
METHOD_STYLE = {"full": ("tab:red", "-"), "lora": ("tab:purple", "--")}


def lora_figure(profile: Profile, table: pd.DataFrame, tag: str, confs: pd.DataFrame | None = None):
    """Figure 6's quantity for LoRA twins beside their full originals: mean conf vs rho per source
    with its 95% interval over models, one curve per fine-tuning method, dots are the models."""
    from ..experiments.lora_ablation import EVERY_SOURCE

    def draw(ax, method, g):
        method = method[0] if isinstance(method, tuple) else method
        colour, line = METHOD_STYLE.get(method, ("tab:gray", ":"))
        source = g.source.iloc[0]
        dots = _matching(confs, finetune=method) if source == EVERY_SOURCE else _matching(confs, source=source, finetune=method)
        shift = 0.02 if method == "lora" else -0.02  # side by side, so one method's interval cannot hide the other's
        if dots is not None:
            dots = dots.assign(rho=dots.rho + shift)
        _interval_curve(ax, "rho", g.sort_values("rho").assign(rho=lambda t: t.rho + shift), dots, "conf", color=colour,
                        ls=line, label=f"{method} fine-tune")

    return _conf_panels(profile, table, ["finetune"], draw, "rho (generated share)",
                        f"LoRA ablation: conf vs rho ({tag}; mean and 95% interval over models)",
                        LORA_STEM.format(tag=tag))
