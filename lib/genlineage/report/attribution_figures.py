"""Figures 6 and 7, the delta0 curve, the ROC curves, the LoRA figure and reconstructions side by
side.

What a reader sees is written in words: titles and legends say which delta0, which key strategy,
which rho and which base (``delta0_words``, ``METHOD_NAMES``, ``LINEAGE_WORDS``); file names keep
the short tags. Intervals of conf (a share) must lie in [0, 1]: the tables truncate them
(``intervals.SHARE``), and a figure refuses a table whose interval leaves [0, 1] rather than
clip it out of sight. Series that share an x are drawn side by side (``_dodges``), so one
interval cannot hide another; a source with nothing to draw gets no panel."""
from __future__ import annotations

import textwrap

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ..config import Profile
from .. import layout
from ..experiments.lora_ablation import EVERY_SOURCE
from ..experiments.instance_tables import METHOD_NAMES
from .figures import save_figure

COLOURS = {"generation": "tab:red", "detection": "tab:orange", "random": "tab:blue", "watermark": "tab:green"}
LINES = {"same": "-", "other": "--"}
LINEAGE_WORDS = {"same": "fine-tuned from the source's own base", "other": "fine-tuned from the other base"}
SCORE_WORDS = {"discriminator": "discriminator (fitted on shadow models)",
               "conf": "conf (threshold from shadow models)"}
FIT_WORDS = {"per_source": "one discriminator fitted per source", "pooled": "one discriminator fitted on every source"}
FINETUNE_WORDS = {"full": "full fine-tune", "lora": "LoRA fine-tune"}
CONF_LABEL = "conf\n(share of keys within delta0)"


def delta0_words(profile: Profile, tag: str) -> str:
    """A figure's delta0 tag in words: ``delta0_calibrated`` -> "delta0 calibrated on each source's
    shadow models", ``delta0_paper`` -> "the paper's delta0 = 0.15"; any other tag as given."""
    name = tag[len("delta0_"):] if tag.startswith("delta0_") else tag
    if name == "calibrated":
        return "delta0 calibrated on each source's shadow models"
    if name == "paper":
        return f"the paper's delta0 = {profile.attribution.delta0:g}"
    return tag


def _panel_title(source: str) -> str:
    return "every source, pooled" if source == EVERY_SOURCE else f"source {source}"


def _columns(n: int) -> int:
    """Panels per row: at most 3, and 4 panels as 2 x 2."""
    return 2 if n == 4 else min(n, 3)


def _panels(n: int, width: float = 3.0, height: float = 2.6, extra: float = 0.0):
    """``n`` panels in rows of ``_columns(n)``, unused slots hidden, ``extra`` inches of height for
    the title and legend; the y label goes on the first panel of each row (``_first_column``)."""
    if n < 1:
        raise ValueError("no panel to draw: the table holds no data")
    cols = _columns(n)
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows + extra), squeeze=False, sharey=True)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])


def _first_column(axes: list) -> list:
    return axes[::_columns(len(axes))]


def _suptitle(fig, title: str) -> None:
    """The figure's title, each line wrapped to the figure's width (about 15 characters an inch
    at this size), so that a long title cannot run past the panels."""
    width = max(30, int(fig.get_figwidth() * 15))
    fig.suptitle("\n".join(textwrap.fill(line, width) for line in title.split("\n")), fontsize=9)


def _legend_below(fig, axes: list, ncol: int = 2) -> float:
    """Every series once, whichever panel holds it, in one legend under the panels; returns the
    share of the figure's height to keep free for it (for ``tight_layout``'s ``rect``)."""
    legend = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            legend.setdefault(label, handle)
    fig.legend(list(legend.values()), list(legend.keys()), loc="lower center", ncol=ncol, fontsize=7, frameon=False)
    return 0.17 * (np.ceil(len(legend) / ncol) + 0.5) / fig.get_figheight()  # about 0.17 inch a row


def _check_share_intervals(table: pd.DataFrame, what: str) -> None:
    """Refuse intervals of a share that leave [0, 1]: the table must be made with
    ``bounds=intervals.SHARE``; drawing it would clip the interval out of sight."""
    low, high = table["low"].astype(float), table["high"].astype(float)
    bad = table[(low < 0) | (high > 1)]
    if len(bad):
        raise ValueError(f"{what}: {len(bad)} intervals of conf leave [0, 1] (e.g. [{bad['low'].iloc[0]:.3f}, "
                         f"{bad['high'].iloc[0]:.3f}]); make the table with bounds=intervals.SHARE")


def _dodges(table: pd.DataFrame, curves: list[str], x: str) -> dict:
    """An x offset per series (a key of ``curves``), the same in every panel: series side by side
    around each x, spread over at most 45% of the smallest gap between x values."""
    series = sorted(set(table[curves].drop_duplicates().itertuples(index=False, name=None)), key=str)
    xs = np.unique(table[x].astype(float))
    gap = float(np.diff(xs).min()) if len(xs) > 1 else 1.0
    step = gap * min(0.12, 0.45 / max(1, len(series) - 1))
    return {k: (i - (len(series) - 1) / 2) * step for i, k in enumerate(series)}


def _conf_panels(profile: Profile, table: pd.DataFrame, curves: list[str], draw, xlabel: str, title: str,
                 stem: str, x: str):
    """One panel per source that has data, one curve per ``curves`` group drawn by
    ``draw(ax, keys, rows, shift)`` (``shift``: the series' x offset); the shared legend, limits,
    ticks at the true x values and saving of Figures 6 and 7 and the LoRA figure."""
    _check_share_intervals(table, title.split(":")[0])
    has_data = table.groupby("source")["mean"].apply(lambda m: bool(np.isfinite(m.astype(float)).any()))
    sources = sorted(has_data[has_data].index)
    shifts = _dodges(table, curves, x)
    fig, axes = _panels(len(sources), extra=0.17 * np.ceil(len(shifts) / 2) + 0.15 * (title.count("\n") + 1))
    ticks = np.unique(table[x].astype(float))
    for ax, source in zip(axes, sources):
        for keys, g in table[table.source == source].groupby(curves):
            keys = keys if isinstance(keys, tuple) else (keys,)
            draw(ax, keys, g, shifts[keys])
        ax.set_title(_panel_title(source), fontsize=9)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.set_xticks(ticks)
        ax.set_xticklabels([f"{t:g}" for t in ticks])
        ax.set_ylim(-0.05, 1.05)
    for ax in _first_column(axes):
        ax.set_ylabel(CONF_LABEL, fontsize=8)
    bottom = _legend_below(fig, axes)
    _suptitle(fig, title)
    fig.tight_layout(rect=(0, bottom, 1, 1))
    save_figure(fig, layout.figures_dir(profile) / stem)
    plt.close(fig)
    return fig


def _interval_curve(ax, x, table: pd.DataFrame, points: pd.DataFrame | None, value: str, shift: float = 0.0,
                    **style) -> None:
    """Mean over models with its 95% interval as error bars, and every model as a faint dot (the
    spread over models, which the interval summarises); everything moved ``shift`` along x."""
    low = (table["mean"] - table["low"]).fillna(0).clip(lower=0)
    high = (table["high"] - table["mean"]).fillna(0).clip(lower=0)
    ax.errorbar(table[x] + shift, table["mean"], yerr=[low, high], marker="o", ms=3, capsize=2, **style)
    if points is not None and len(points):
        ax.scatter(points[x] + shift, points[value], s=6, alpha=0.35, color=style.get("color"), linewidths=0)


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
    def draw(ax, keys, g, shift):
        strategy, lineage = keys
        dots = _matching(confs, source=g.source.iloc[0], strategy=strategy, lineage=lineage)
        _interval_curve(ax, "rho", g.sort_values("rho"), dots, "conf", shift, color=COLOURS.get(strategy),
                        ls=LINES.get(lineage, ":"),
                        label=f"{METHOD_NAMES.get(strategy, strategy)}, {LINEAGE_WORDS.get(lineage, lineage)}")

    return _conf_panels(profile, f6, ["strategy", "lineage"], draw, "rho (share of generated images)",
                        f"Figure 6: conf vs rho at {delta0_words(profile, tag)}\n"
                        "(mean and 95% interval over models; dots are the models; innocent models at rho = 0)",
                        FIGURE6_STEM.format(tag=tag), "rho")


def figure7(profile: Profile, f7: pd.DataFrame, tag: str, per_model: pd.DataFrame | None = None,
            strategy: str | None = None):
    """Mean conf vs N per source with its 95% interval over models: rho = 1 infringing (red) and
    innocent (grey); dots are the models themselves (``per_model``). The title says which keys
    (``strategy``: given, else ``per_model``'s, else the profile's main strategy) and which rho."""
    if strategy is None and per_model is not None and "strategy" in per_model and per_model.strategy.nunique() == 1:
        strategy = str(per_model.strategy.iloc[0])
    strategy = strategy or profile.attribution.main_strategy
    rhos = [1.0]
    if per_model is not None and {"kind", "rho"} <= set(per_model.columns):
        rhos = sorted(per_model[per_model.kind == "infringing"].rho.unique()) or rhos
    rho_text = ", ".join(f"{r:g}" for r in rhos)

    def draw(ax, keys, g, shift):
        kind, lineage = keys
        dots = _matching(per_model, source=g.source.iloc[0], kind=kind, lineage=lineage)
        who = f"infringing (rho = {rho_text})" if kind == "infringing" else "innocent"
        _interval_curve(ax, "N", g.sort_values("N"), dots, "conf", shift, ls=LINES.get(lineage, ":"),
                        color="tab:red" if kind == "infringing" else "tab:gray",
                        label=f"{who}, {LINEAGE_WORDS.get(lineage, lineage)}")

    return _conf_panels(profile, f7, ["kind", "lineage"], draw, "N (key samples queried)",
                        f"Figure 7: conf vs number of key samples N, rho = {rho_text} infringing "
                        f"against innocent models\n{METHOD_NAMES.get(strategy, strategy)} keys, "
                        f"{delta0_words(profile, tag)}\n(mean and 95% interval over models; dots are the models)",
                        FIGURE7_STEM.format(tag=tag), "N")


def delta0_curve(profile: Profile, curve: pd.DataFrame, deltas: dict):
    """Mean conf of the infringing and innocent shadow models vs delta0, one panel per source with
    its calibrated delta0 and the paper's marked."""
    sources = sorted(curve.source.unique())
    fig, axes = plt.subplots(1, len(sources), figsize=(3.2 * len(sources), 3), squeeze=False, sharey=True)
    for ax, source in zip(axes[0], sources):
        c = curve[curve.source == source]
        ax.plot(c.delta0, c.conf_infringing, color="tab:red", lw=0.9, label="infringing shadows")
        ax.plot(c.delta0, c.conf_innocent, color="tab:gray", lw=0.9, label="innocent shadows")
        for name, style in (("paper", "--"), ("calibrated", "-")):
            d = deltas[name][source]
            ax.axvline(d, ls=style, color="black", lw=0.8)
            ax.text(d, 1.01, f"{'the paper' if name == 'paper' else 'calibrated'} {d:.3f}", fontsize=7, rotation=90,
                    va="bottom")
        ax.set_title(f"source {source}", fontsize=9, pad=42)
        ax.set_xlabel("delta0 (distance threshold)")
    axes[0][0].set_ylabel("mean conf of the shadow models")
    axes[0][-1].legend(fontsize=7)
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


ROC_XMIN = 1e-2  # the ROC's log FPR axis starts here; an FPR of 0 lies off its left edge


def _roc_path(fpr, tpr, floor: float = ROC_XMIN / 10, n: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """The ROC through its points with every segment drawn straight in (FPR, TPR), as the ROC is
    (tied scores make a diagonal segment), sampled densely in FPR and in log FPR so that a log
    axis shows each segment where it truly lies; points below ``floor`` (FPR 0) are left out, off
    the axis. The chance line is the path of (0, 0) to (1, 1): TPR = FPR at every point."""
    fpr, tpr = np.asarray(fpr, float), np.asarray(tpr, float)
    xs, ys = [fpr[:1]], [tpr[:1]]
    for f0, t0, f1, t1 in zip(fpr[:-1], tpr[:-1], fpr[1:], tpr[1:]):
        if f1 > f0:
            f = np.unique(np.concatenate([np.linspace(f0, f1, n), np.geomspace(max(f0, floor), f1, n)]))
            f = f[(f >= f0) & (f <= f1)]
            xs.append(f)
            ys.append(t0 + (f - f0) / (f1 - f0) * (t1 - t0))
        else:
            xs.append([f1]), ys.append([t1])
    x, y = np.concatenate(xs), np.concatenate(ys)
    keep = x >= floor
    return x[keep], y[keep]


def roc_curves(profile: Profile, rocs: pd.DataFrame, tag: str):
    """ROC curves per source (discriminator solid, conf dashed) on a log FPR axis, as LiRA plots
    them, with chance (TPR = FPR) drawn as what it is on a log axis: a curve."""
    sources = sorted(rocs.source.unique())
    fig, axes = _panels(len(sources), 2.9, 2.7, extra=0.6)
    chance = _roc_path([0.0, 1.0], [0.0, 1.0])
    for ax, source in zip(axes, sources):
        for score, g in rocs[rocs.source == source].groupby("score"):
            x, y = _roc_path(g.fpr, g.tpr)
            ax.plot(x, y, ls="-" if score == "discriminator" else "--", label=SCORE_WORDS.get(score, score))
        ax.plot(*chance, color="gray", lw=0.6, label="chance (TPR = FPR)", gid="chance")
        ax.set_xscale("log")
        ax.set_xlim(ROC_XMIN, 1)
        ax.set_ylim(-0.03, 1.03)
        ax.set_title(_panel_title(source), fontsize=9)
        ax.set_xlabel("false-positive rate (log)", fontsize=8)
    for ax in _first_column(axes):
        ax.set_ylabel("true-positive rate", fontsize=8)
    bottom = _legend_below(fig, axes)
    _suptitle(fig, f"ROC of the statistical level, {FIT_WORDS.get(tag, tag)}\n"
                   "(evaluated models; an FPR of 0 lies off the left edge)")
    fig.tight_layout(rect=(0, bottom, 1, 1))
    save_figure(fig, layout.figures_dir(profile) / f"05_roc_{tag}")
    plt.close(fig)
    return fig


LORA_STEM = "fig_lora_conf_vs_rho_{tag}"  # notebook 10's figure, in the profile's figures_dir
METHOD_STYLE = {"full": ("tab:red", "-"), "lora": ("tab:purple", "--")}


def lora_figure(profile: Profile, table: pd.DataFrame, tag: str, confs: pd.DataFrame | None = None):
    """Figure 6's quantity for LoRA twins beside their full originals: mean conf vs rho per source
    with its 95% interval over models, one curve per fine-tuning method, dots are the models."""
    def draw(ax, keys, g, shift):
        method = keys[0]
        colour, line = METHOD_STYLE.get(method, ("tab:gray", ":"))
        source = g.source.iloc[0]
        dots = _matching(confs, finetune=method) if source == EVERY_SOURCE else _matching(confs, source=source, finetune=method)
        _interval_curve(ax, "rho", g.sort_values("rho"), dots, "conf", shift, color=colour, ls=line,
                        label=FINETUNE_WORDS.get(method, f"{method} fine-tune"))

    return _conf_panels(profile, table, ["finetune"], draw, "rho (share of generated images)",
                        f"LoRA ablation: conf vs rho at {delta0_words(profile, tag)}\n"
                        "(mean and 95% interval over models; dots are the models)",
                        LORA_STEM.format(tag=tag), "rho")
