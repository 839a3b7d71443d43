"""The results at a glance in the README: Figures 6 and 7 and the Table 1 summary of a committed
run, written by notebook 09 between two markers, never by hand.

Why generated: a reader landing on the repository should see the figures without opening a
notebook, and a number in the README that no command wrote drifts from the run it describes.
Only a README holding this profile's markers is written (the tiny profile's are in ours), so a
smoke or paper run never touches it.
"""
from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from .. import layout
from ..config import REPO_ROOT, Profile
from ..io import write_text
from ..markdown import markdown
from .attribution_figures import FIGURE6_STEM, FIGURE7_STEM

TAG = "delta0_calibrated"  # the threshold the tiny run's claims are judged at


def markers(profile: Profile) -> tuple[str, str]:
    return (f"<!-- genlineage:results {profile.name} (written by notebook 09; never edit by hand) -->",
            f"<!-- genlineage:results {profile.name} end -->")


def _interval(row: pd.Series, name: str) -> str:
    return f"{row[name]:.2f} [{row[f'{name}_low']:.2f}, {row[f'{name}_high']:.2f}]"


def results_block(profile: Profile, table1: pd.DataFrame, readme_dir: Path = REPO_ROOT) -> str:
    """Markdown: the two figures (paths relative to the README) and the discriminator's rows of
    Table 1, each linked to the notebook that makes it."""
    figures = Path(os.path.relpath(layout.figures_dir(profile), readme_dir)).as_posix()
    summary = pd.DataFrame([{"source": r.source, "models": int(r.n_models), "accuracy": _interval(r, "accuracy"),
                             "AUC": _interval(r, "auc"), "TPR at 1% FPR": _interval(r, "tpr@1%fpr")}
                            for _, r in table1[table1.score == "discriminator"].iterrows()])
    return "\n".join([
        f"**Figure 6** (conf vs rho at the calibrated delta0; mean and 95% interval over models, dots = models; "
        f"[notebook 04](notebooks/04_instance_attribution.ipynb))", "",
        f"![Figure 6]({figures}/{FIGURE6_STEM.format(tag=TAG)}.png)", "",
        f"**Figure 7** (conf vs number of key samples; [notebook 07](notebooks/07_ablation_key_count.ipynb))", "",
        f"![Figure 7]({figures}/{FIGURE7_STEM.format(tag=TAG)}.png)", "",
        "**Table 1**, the discriminator fitted on shadow models, per source, with 95% intervals over the "
        "evaluated models ([notebook 05](notebooks/05_statistical_attribution.ipynb); the whole table: "
        f"[`{Path(os.path.relpath(layout.tables_dir(profile), readme_dir)).as_posix()}/table1_statistical.md`]"
        f"({Path(os.path.relpath(layout.tables_dir(profile), readme_dir)).as_posix()}/table1_statistical.md))", "",
        markdown(summary).rstrip(),
    ])


def write_readme_results(profile: Profile, table1: pd.DataFrame, readme: Path = REPO_ROOT / "README.md") -> Path | None:
    """Replace the text between this profile's markers in ``readme``; None (nothing written) when
    the README holds no such markers."""
    start, end = markers(profile)
    text = readme.read_text(encoding="utf-8")
    if start not in text or end not in text:
        return None
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    write_text(readme, f"{head}{start}\n{results_block(profile, table1, readme.parent)}\n{end}{tail}")
    return readme
