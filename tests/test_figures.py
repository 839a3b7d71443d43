"""The figures of stages 04-07 and 10 as a reader sees them, drawn from planted tables: the ROC's
chance line is TPR = FPR on its log axis, intervals of conf stay in [0, 1], titles and legends are
words (which delta0, which keys, which rho), series at one x are side by side, no panel is empty."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from genlineage.intervals import SHARE, per_group
from genlineage.metrics import roc_points
from genlineage.report import attribution_figures as af

SOURCES = ["v1-cc3m", "v1-celeba", "v2-cc3m", "v2-celeba"]
CODE_NAMES = ("delta0_calibrated", "delta0_paper", "per_source", "generation,", "detection,", "same base")


def _texts(fig) -> list[str]:
    texts = [fig._suptitle.get_text()] + [t.get_text() for legend in fig.legends for t in legend.get_texts()]
    for ax in fig.axes:
        texts += [ax.get_title(), ax.get_xlabel(), ax.get_ylabel()]
        if ax.get_legend():
            texts += [t.get_text() for t in ax.get_legend().get_texts()]
    return texts


def _no_code_names(fig) -> None:
    for text in _texts(fig):
        assert not any(code in text for code in CODE_NAMES), text
        assert "_" not in text, f"a code name in {text!r}"


def _f7_per_model(seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for source in SOURCES:
        for kind, n in (("infringing", 3), ("innocent", 6)):
            for m in range(n):
                base = rng.uniform(0, 1)
                for n_keys in (10, 20, 30, 50):
                    rows.append({"source": source, "lineage": "same", "kind": kind, "N": n_keys, "model": f"{kind}{m}",
                                 "strategy": "generation", "rho": 1.0 if kind == "infringing" else 0.0,
                                 "conf": float(np.clip(base + rng.normal(0, 0.1), 0, 1))})
    return pd.DataFrame(rows)


def _bars(fig):
    """(label, x positions, lower ends, upper ends) of every error-bar series drawn."""
    out = []
    for ax in fig.axes:
        for c in ax.containers:
            data, _, (bars,) = c.lines
            segments = bars.get_segments()
            out.append((c.get_label(), np.asarray(data.get_xdata(), float),
                        np.array([min(s[:, 1]) for s in segments]), np.array([max(s[:, 1]) for s in segments])))
    return out


def test_the_roc_chance_line_is_tpr_equals_fpr_along_the_whole_log_axis(smoke_profile):
    rocs = []
    rng = np.random.default_rng(0)
    for source in SOURCES[:2]:
        y = np.r_[np.ones(12), np.zeros(6)]
        for score in ("discriminator", "conf"):
            fpr, tpr, _ = roc_points(y, np.r_[rng.normal(1, 1, 12), rng.normal(0, 1, 6)])
            rocs.append(pd.DataFrame({"source": source, "score": score, "fpr": fpr, "tpr": tpr}))
    fig = af.roc_curves(smoke_profile, pd.concat(rocs), "per_source")
    _no_code_names(fig)
    for ax in fig.axes:
        (chance,) = [line for line in ax.get_lines() if line.get_gid() == "chance"]
        x, y = np.asarray(chance.get_xdata(), float), np.asarray(chance.get_ydata(), float)
        assert np.array_equal(x, y), "every point of the chance line has TPR = FPR"
        low, high = ax.get_xlim()
        assert x.min() <= low and x.max() == high == 1.0, "it spans the axis, both ends"
        # drawn straight between points on the log axis: the midpoint (in log FPR) of each
        # segment must also lie on TPR = FPR, which a line from (1e-3, 1e-3) to (1, 1) misses by 0.47
        mid_x, mid_y = np.sqrt(x[:-1] * x[1:]), (y[:-1] + y[1:]) / 2
        seen = (mid_x >= low)
        assert np.abs(mid_y - mid_x)[seen].max() < 0.005


def test_an_roc_of_tied_scores_is_the_chance_line():
    fpr, tpr, _ = roc_points([1, 1, 0, 0, 0], [0.5] * 5)  # every score tied: (0, 0) to (1, 1) in one step
    x, y = af._roc_path(fpr, tpr)
    assert np.allclose(x, y) and x.min() <= af.ROC_XMIN and x.max() == 1.0
    step_x, step_y = af._roc_path([0, 0, 0.5, 1], [0, 0.5, 0.5, 1])  # a vertical, a flat and a diagonal step
    assert np.allclose(step_y[step_x <= 0.5], 0.5) and np.allclose(step_y[step_x > 0.5], step_x[step_x > 0.5])


def test_figure7_says_which_keys_delta0_and_rho_dodges_its_series_and_stays_in_zero_one(smoke_profile):
    per_model = _f7_per_model()
    f7 = per_group(per_model, ["source", "lineage", "kind", "N"], "conf", bounds=SHARE)
    fig = af.figure7(smoke_profile, f7, "delta0_calibrated", per_model)
    _no_code_names(fig)
    title = fig._suptitle.get_text().replace("\n", " ")
    assert "Strategy 2 (generation)" in title and "rho = 1" in title
    assert "delta0 calibrated on each source's shadow models" in title
    assert len(fig.axes) - sum(not ax.get_visible() for ax in fig.axes) == 4
    bars = _bars(fig)
    by_label = {}
    for label, x, low, high in bars:
        assert low.min() >= 0 and high.max() <= 1, f"{label}: an interval leaves [0, 1]"
        by_label.setdefault(label, x)
    infringing, innocent = (next(x for label, x in by_label.items() if label.startswith(kind))
                            for kind in ("infringing", "innocent"))
    grid = np.array([10, 20, 30, 50])
    assert np.all(infringing != innocent), "the two series never share an x"
    assert np.allclose(infringing, grid, atol=2) and np.allclose(innocent, grid, atol=2), "near the true N"
    assert np.allclose(infringing + innocent, 2 * grid), "side by side around the true N"
    tick_labels = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert tick_labels == ["10", "20", "30", "50"]


def test_a_source_without_data_gets_no_panel_and_an_interval_outside_zero_one_is_refused(smoke_profile):
    per_model = _f7_per_model()
    f7 = per_group(per_model, ["source", "lineage", "kind", "N"], "conf", bounds=SHARE)
    f7.loc[f7.source == "v2-celeba", ["mean", "low", "high"]] = np.nan  # e.g. a lineage absent at this profile
    fig = af.figure7(smoke_profile, f7, "delta0_paper", per_model)
    shown = [ax for ax in fig.axes if ax.get_visible()]
    assert len(shown) == 3 and "source v2-celeba" not in [ax.get_title() for ax in shown]
    assert all(ax.containers for ax in shown), "every panel drawn holds data"
    assert "the paper's delta0 = 0.15" in fig._suptitle.get_text().replace("\n", " ")
    unbounded = per_group(per_model, ["source", "lineage", "kind", "N"], "conf")  # plain t: leaves [0, 1]
    assert (unbounded.low < 0).any() or (unbounded.high > 1).any()
    with pytest.raises(ValueError, match="leave \\[0, 1\\]"):
        af.figure7(smoke_profile, unbounded, "delta0_paper", per_model)


def test_figure6_and_the_lora_figure_write_words_and_dodge_every_series(smoke_profile):
    rng = np.random.default_rng(1)
    confs = pd.DataFrame([{"source": s, "lineage": "same", "strategy": strategy, "rho": rho, "model": m,
                           "conf": float(rng.choice([0.0, 0.1, 0.5, 1.0]))}
                          for s in SOURCES[:3] for strategy in ("detection", "generation", "random", "watermark")
                          for rho in (0.0, 0.3, 0.5, 1.0) for m in range(3)])
    fig = af.figure6(smoke_profile, per_group(confs, ["source", "lineage", "strategy", "rho"], "conf", bounds=SHARE),
                     "delta0_calibrated", confs)
    _no_code_names(fig)
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "Strategy 2 (generation), fine-tuned from the source's own base" in labels and len(labels) == 4
    first_panel = [x for label, x, _, _ in _bars(fig)[:4]]
    at_half = sorted(x[np.argmin(np.abs(x - 0.5))] for x in first_panel)
    assert len(set(at_half)) == 4 and max(at_half) - min(at_half) < 0.2 * 0.45 + 1e-9, "four series side by side at rho 0.5"
    for _, _, low, high in _bars(fig):
        assert low.min() >= 0 and high.max() <= 1

    from genlineage.experiments.lora_ablation import EVERY_SOURCE

    lc = pd.DataFrame([{"source": s, "finetune": ft, "rho": rho, "conf": float(rng.uniform(0, 1))}
                       for s in SOURCES for ft in ("full", "lora") for rho in (0.0, 1.0) for _ in range(2)])
    table = per_group(pd.concat([lc, lc.assign(source=EVERY_SOURCE)]), ["finetune", "source", "rho"], "conf", bounds=SHARE)
    fig = af.lora_figure(smoke_profile, table, "delta0_calibrated", lc)
    _no_code_names(fig)
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["full fine-tune", "LoRA fine-tune"]
    assert "every source, pooled" in [ax.get_title() for ax in fig.axes]
    full, lora = (x for label, x, _, _ in _bars(fig)[:2])
    assert np.all(lora > full)


def test_delta0_tags_are_written_in_words(smoke_profile):
    assert af.delta0_words(smoke_profile, "delta0_calibrated") == "delta0 calibrated on each source's shadow models"
    assert af.delta0_words(smoke_profile, "delta0_paper") == f"the paper's delta0 = {smoke_profile.attribution.delta0:g}"
