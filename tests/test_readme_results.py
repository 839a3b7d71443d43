"""The README's results block: written between the profile's markers only, from the tables given."""
from __future__ import annotations

import pandas as pd

from genlineage.config import load_profile
from genlineage.report.readme_results import markers, write_readme_results


def _table1() -> pd.DataFrame:
    row = {"n_models": 18, "accuracy": 0.9, "accuracy_low": 0.7, "accuracy_high": 1.0, "auc": 0.95, "auc_low": 0.8,
           "auc_high": 1.0, "tpr@0fp": 0.5, "tpr@0fp_low": 0.2, "tpr@0fp_high": 0.8}
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


def test_the_lora_block_has_its_own_markers_and_leaves_the_results_block_alone(tmp_path):
    from genlineage.experiments.lora_ablation import EVERY_SOURCE
    from genlineage.report.readme_results import lora_block, write_readme_block

    profile = load_profile("tiny")
    (r_start, r_end), (l_start, l_end) = markers(profile), markers(profile, "lora")
    assert "notebook 10" in l_start and l_start != r_start
    readme = tmp_path / "README.md"
    readme.write_text(f"{r_start}\nresults\n{r_end}\n{l_start}\nstale\n{l_end}\n")
    confs = pd.DataFrame([{"finetune": m, "source": s, "rho": 1.0, "mean": 0.5, "low": 0.25, "high": 0.75, "models": 4}
                          for m in ("full", "lora") for s in ("v1-celeba", EVERY_SOURCE)])
    inherited = pd.DataFrame({"finetune": ["full", "full", "lora", "lora"], "source": ["v1-celeba", EVERY_SOURCE] * 2,
                              "shown (p < 0.05)": [True, True, False, False], "rd_gap": [0.05, 0.04, 0.01, 0.02],
                              "rd_gap_low": [0.01, 0.02, -0.01, -0.01], "rd_gap_high": [0.09, 0.06, 0.03, 0.05],
                              "permutation_p": [0.01, 1 / 81, 0.5, 0.3]})
    rates = pd.DataFrame([{"suspect": "lora", "shadows": "full", "label": 0, "answered": 8, "called infringing": 1,
                           "rate": 0.125, "low": 0.003, "high": 0.527}])
    write_readme_block(profile, lora_block(profile, 0.01, confs, inherited, rates, tmp_path), "lora", readme)
    text = readme.read_text()
    assert f"{r_start}\nresults\n{r_end}" in text and "stale" not in text
    assert "full: gap +0.040 [+0.020, +0.060], p = 0.0123 (1/1 sources alone)" in text
    assert "lora: gap +0.020 [-0.010, +0.050], p = 0.3 (0/1 sources alone)" in text
    assert "| lora | full | innocent | 1/8 | 0.12 [0.00, 0.53] |" in text
    assert text.count("| full | 1 | 4 | 0.50 [0.25, 0.75] |") == 1, "the every-source rows only"
    assert "fig_lora_conf_vs_rho_delta0_calibrated.png" in text


def test_our_readme_holds_the_lora_blocks_markers_and_its_figure_exists():
    from genlineage.config import REPO_ROOT

    text = (REPO_ROOT / "README.md").read_text()
    start, end = markers(load_profile("tiny"), "lora")
    assert text.count(start) == 1 and text.count(end) == 1 and text.index(start) < text.index(end)
    images = [line for line in text.split(start)[1].split(end)[0].splitlines() if line.startswith("![")]
    assert images, "the block shows its figure"
    for line in images:
        assert (REPO_ROOT / line.split("](")[1].rstrip(")")).is_file(), line


def test_the_memorisation_and_inheritance_sentences_come_from_their_tables(tmp_path):
    """The README says what tables/memorisation and tables/inheritance hold, and links them."""
    checks = pd.DataFrame({"source": ["a", "b"], "nearest_own": [0.47, 0.9], "base_nearest_own": [0.02, 0.25],
                           "chance": [1 / 60, 1 / 60], "source above base (p < 0.05)": [True, False]})
    inh = pd.DataFrame({"source": ["a", "b", "a"], "lineage": ["same", "same", "other"], "infringing models": 3,
                        "innocent models": 6, "rd_gap": [0.028, 0.074, 0.5], "permutation_p": [0.01, 0.2, 0.01],
                        "permutation_p_reverse": [0.99, 0.8, 0.99]})
    profile = load_profile("tiny")
    (start, end), (a_start, a_end) = markers(profile), markers(profile, "answer")
    readme = tmp_path / "README.md"
    readme.write_text(f"# genlineage\n{a_start}\n{a_end}\nmiddle\n{start}\n{end}\n")
    write_readme_results(profile, _table1(), readme, memorisation=checks, inherited=inh,
                         tally={"held": 2, "not held": 3, "inconclusive": 1, "untestable here": 4})
    text = readme.read_text()
    answer = text.split(a_start)[1].split(a_end)[0]
    assert "Memorisation" in answer and "Inheritance" in answer and "Memorisation" not in text.split(start)[1]
    assert "of 6 this world can test, 2 held, 3 not held, 1 inconclusive; 4 untestable" in answer
    assert "![Figure 6" in answer and text.index(a_end) < text.index("middle")
    assert "own training image in 47%-90% of cases" in text and "2%-25%" in text and "for 1 of 2 sources" in text
    assert "p < 0.05) for 1 of 2 sources, innocent closer for 0; mean RD gap +0.028 to +0.074" in text
    assert "memorisation.md" in text and "inheritance.md" in text
