"""The README's results block: written between the profile's markers only, from the tables given."""
from __future__ import annotations

import pandas as pd

from genlineage.config import load_profile
from genlineage.report.readme_results import markers, write_readme_results


def _table1() -> pd.DataFrame:
    row = {"n_models": 18, "accuracy": 0.9, "accuracy_low": 0.7, "accuracy_high": 1.0, "auc": 0.95, "auc_low": 0.8,
           "auc_high": 1.0, "tpr@1%fpr": 0.5, "tpr@1%fpr_low": 0.2, "tpr@1%fpr_high": 0.8}
    return pd.DataFrame([{"source": "v1-celeba", "score": "discriminator", **row},
                         {"source": "v1-celeba", "score": "conf", **row, "accuracy": 0.1}])


def test_the_block_between_the_markers_is_rewritten_and_nothing_else(tmp_path):
    profile = load_profile("tiny")
    start, end = markers(profile)
    readme = tmp_path / "README.md"
    readme.write_text(f"# title\n\nbefore\n{start}\nstale text\n{end}\nafter\n")
    assert write_readme_results(profile, _table1(), readme) == readme
    text = readme.read_text()
    assert text.startswith("# title\n\nbefore\n") and text.endswith(f"{end}\nafter\n") and "stale text" not in text
    assert "| v1-celeba | 18 | 0.90 [0.70, 1.00] | 0.95 [0.80, 1.00] | 0.50 [0.20, 0.80] |" in text
    assert "0.10" not in text, "the discriminator's rows only"
    assert "fig6_conf_vs_rho_delta0_calibrated.png)" in text and "(notebooks/05_statistical_attribution.ipynb" in text
    once = text
    write_readme_results(profile, _table1(), readme)
    assert readme.read_text() == once, "a re-run writes the same README"


def test_a_readme_without_this_profiles_markers_is_left_alone(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# title\n")
    assert write_readme_results(load_profile("smoke"), _table1(), readme) is None
    assert readme.read_text() == "# title\n"


def test_our_readme_holds_the_tiny_profiles_markers_and_its_figures_exist():
    from genlineage.config import REPO_ROOT

    text = (REPO_ROOT / "README.md").read_text()
    start, end = markers(load_profile("tiny"))
    assert text.count(start) == 1 and text.count(end) == 1 and text.index(start) < text.index(end)
    for line in text.split(start)[1].split(end)[0].splitlines():
        if line.startswith("![Figure"):
            assert (REPO_ROOT / line.split("](")[1].rstrip(")")).is_file(), line
