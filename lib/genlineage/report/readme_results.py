"""The results at a glance in the README: Figures 6 and 7 and the Table 1 summary of a committed
run, written by notebook 09 between two markers, and the LoRA ablation's, written by notebook 10
between its own; never by hand.

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
from ..experiments.lora_ablation import EVERY_SOURCE
from ..config import REPO_ROOT, Profile
from ..io import write_text
from ..markdown import markdown
from .attribution_figures import FIGURE6_STEM, FIGURE7_STEM, LORA_STEM

TAG = "delta0_calibrated"  # the threshold the tiny run's claims are judged at


BLOCKS = {"answer": "notebook 09", "results": "notebook 09", "lora": "notebook 10"}  # README block -> the notebook that writes it


def markers(profile: Profile, block: str = "results") -> tuple[str, str]:
    return (f"<!-- genlineage:{block} {profile.name} (written by {BLOCKS[block]}; never edit by hand) -->",
            f"<!-- genlineage:{block} {profile.name} end -->")


def _interval(row: pd.Series, name: str) -> str:
    return f"{row[name]:.2f} [{row[f'{name}_low']:.2f}, {row[f'{name}_high']:.2f}]"


def memorisation_sentence(checks: pd.DataFrame, tables: str) -> str:
    """One sentence from notebook 02's memorisation table (``tables/memorisation``)."""
    above = int(checks["source above base (p < 0.05)"].sum())
    return (f"**Memorisation** (do the sources memorise their training images?): a fine-tuned source's generations "
            f"land nearest their own training image in {checks.nearest_own.min():.0%}-{checks.nearest_own.max():.0%} "
            f"of cases, its base's on the same captions in {checks.base_nearest_own.min():.0%}-"
            f"{checks.base_nearest_own.max():.0%} (chance {checks.chance.max():.0%}); above the base (paired test over "
            f"images, p < 0.05) for {above} of {len(checks)} sources ([notebook 02](notebooks/02_source_models.ipynb); "
            f"[`{tables}/memorisation.md`]({tables}/memorisation.md)).")


def inheritance_sentence(inh: pd.DataFrame, tables: str) -> str:
    """One sentence from notebook 04's inheritance table (``tables/inheritance``), own lineage."""
    own = inh[inh.lineage == "same"]
    shown = int((own.permutation_p < 0.05).sum())
    reverse = int((own.permutation_p_reverse < 0.05).sum())
    return (f"**Inheritance** (does a model trained on a source's generations bring its memory back?): rho = 1 "
            f"infringing models reconstruct the source's keys closer than innocent models (one-sided exact permutation "
            f"test over models, p < 0.05) for {shown} of {len(own)} sources, innocent closer for {reverse}; mean RD gap "
            f"{own.rd_gap.min():+.3f} to {own.rd_gap.max():+.3f} ({int(own['infringing models'].min())} infringing vs "
            f"{int(own['innocent models'].min())} innocent models a source; [notebook 04]"
            f"(notebooks/04_instance_attribution.ipynb); [`{tables}/inheritance.md`]({tables}/inheritance.md)).")


def owner_test_sentence(owner_test: pd.DataFrame, target: str = "0.05") -> str:
    """One sentence from the owner's test summary (:func:`model_owner_verify.owner_test_summary`)."""
    row = owner_test.set_index("target FPR").loc[target]
    called = {c.split("rho = ")[1]: row[c] for c in owner_test.columns if c.startswith("infringing called, rho = ")}
    by_rho = "; ".join(f"rho = {rho}: {text}" for rho, text in called.items())
    return (f"**The owner's test** (`genlineage verify`, each suspect judged against innocent shadows made like it, "
            f"at a {float(target):.0%} target): infringing models called, with exact 95% intervals, {by_rho}; innocent "
            f"models it never saw called {row['innocent called (FPR)']} ([notebook 08](notebooks/08_model_owner_verify.ipynb)).")


def tally_sentence(tally: dict[str, int]) -> str:
    judged = tally["held"] + tally["not held"] + tally["inconclusive"]
    return (f"**The paper's claims** (section 3): of {judged} this world can test, {tally['held']} held, "
            f"{tally['not held']} not held, {tally['inconclusive']} inconclusive; {tally['untestable here']} untestable "
            "here, each with its reason ([`REPRODUCTION_tiny.md`](REPRODUCTION_tiny.md)).")


def answer_block(profile: Profile, readme_dir: Path = REPO_ROOT, memorisation: pd.DataFrame | None = None,
                 inherited: pd.DataFrame | None = None, owner_test: pd.DataFrame | None = None,
                 tally: dict[str, int] | None = None) -> str:
    """The README's first screen: what this run measured, a sentence each from the tables behind it,
    and the headline figure (Figure 6)."""
    tables = _relative(layout.tables_dir(profile), readme_dir)
    figures = _relative(layout.figures_dir(profile), readme_dir)
    lines = []
    if memorisation is not None and len(memorisation):
        lines += [f"- {memorisation_sentence(memorisation, tables)}"]
    if inherited is not None and len(inherited):
        lines += [f"- {inheritance_sentence(inherited, tables)}"]
    if owner_test is not None and len(owner_test):
        lines += [f"- {owner_test_sentence(owner_test)}"]
    if tally is not None:
        lines += [f"- {tally_sentence(tally)}"]
    return "\n".join([*lines, "", f"![Figure 6: conf vs rho, Strategy 2 beside the baselines]"
                                    f"({figures}/{FIGURE6_STEM.format(tag=TAG)}.png)"])


def results_block(profile: Profile, table1: pd.DataFrame, readme_dir: Path = REPO_ROOT,
                  owner_test: pd.DataFrame | None = None) -> str:
    """Markdown: the two figures (paths relative to the README), the discriminator's rows of
    Table 1, and the owner's test on innocents it never saw (``owner_test``: the rows of
    ``experiments.model_owner_verify.owner_test_summary``), each linked to the notebook that makes it."""
    figures = Path(os.path.relpath(layout.figures_dir(profile), readme_dir)).as_posix()
    summary = pd.DataFrame([{"source": r.source, "models": int(r.n_models), "accuracy": _interval(r, "accuracy"),
                             "AUC": _interval(r, "auc"),
                             "TPR at zero false positives": _interval(r, "tpr@0fp")}
                            for _, r in table1[table1.score == "discriminator"].iterrows()])
    return "\n".join([
        "**Figure 6** (conf vs rho at the calibrated delta0; mean and 95% interval over models, dots = models; "
        "[notebook 04](notebooks/04_instance_attribution.ipynb))", "",
        f"![Figure 6]({figures}/{FIGURE6_STEM.format(tag=TAG)}.png)", "",
        "**Figure 7** (conf vs number of key samples; [notebook 07](notebooks/07_ablation_key_count.ipynb))", "",
        f"![Figure 7]({figures}/{FIGURE7_STEM.format(tag=TAG)}.png)", "",
        "**Table 1**, the discriminator fitted on shadow models, per source, with 95% intervals over the "
        "evaluated models ([notebook 05](notebooks/05_statistical_attribution.ipynb); the whole table: "
        f"[`{Path(os.path.relpath(layout.tables_dir(profile), readme_dir)).as_posix()}/table1_statistical.md`]"
        f"({Path(os.path.relpath(layout.tables_dir(profile), readme_dir)).as_posix()}/table1_statistical.md))", "",
        markdown(summary).rstrip(),
        *(["", "**The owner's test** (`genlineage verify` on every evaluated model, each judged against the innocent "
            "shadows made like it, with the statistic chosen on shadow models only; none of the evaluated models took "
            "part in the choice or the null; exact 95% intervals over models; "
            "[notebook 08](notebooks/08_model_owner_verify.ipynb))", "", markdown(owner_test).rstrip()]
          if owner_test is not None and len(owner_test) else []),
    ])


def _relative(folder: Path, readme_dir: Path) -> str:
    return Path(os.path.relpath(folder, readme_dir)).as_posix()


def lora_block(profile: Profile, lr: float, confs: pd.DataFrame, inherited: pd.DataFrame, rates: pd.DataFrame,
               readme_dir: Path = REPO_ROOT) -> str:
    """Markdown for notebook 10's results: the figure, conf per method over every source's models,
    how many sources showed inheritance per method, and verify's call rates across methods."""
    figures, tables = _relative(layout.figures_dir(profile), readme_dir), _relative(layout.tables_dir(profile), readme_dir)
    every = confs[confs.source == EVERY_SOURCE]
    conf_rows = pd.DataFrame([{"fine-tune": r.finetune, "rho": f"{r.rho:g}", "models": int(r.models),
                               "conf": f"{r['mean']:.2f} [{r.low:.2f}, {r.high:.2f}]"} for _, r in every.iterrows()])
    pooled = inherited[inherited.source == EVERY_SOURCE].set_index("finetune")
    per_source = inherited[inherited.source != EVERY_SOURCE].groupby("finetune")["shown (p < 0.05)"].agg(["sum", "count"])
    inheritance_text = "; ".join(
        f"{m}: gap {r.rd_gap:+.3f} [{r.rd_gap_low:+.3f}, {r.rd_gap_high:+.3f}], p = {r.permutation_p:.3g}"
        f" ({int(per_source.loc[m, 'sum']) if m in per_source.index else 0}/"
        f"{int(per_source.loc[m, 'count']) if m in per_source.index else 0} sources alone)"
        for m, r in pooled.iterrows())
    rate_rows = pd.DataFrame([{"suspect": r.suspect, "shadows": r.shadows,
                               "suspects": "infringing" if r.label else "innocent",
                               "called infringing": f"{int(r['called infringing'])}/{int(r.answered)}",
                               "rate": f"{r.rate:.2f} [{r.low:.2f}, {r.high:.2f}]"} for _, r in rates.iterrows()])
    return "\n".join([
        f"LoRA learning rate chosen on shadow models: {lr:g}. Inheritance over every source (innocent minus "
        f"rho = 1 infringing mean RD, mean over sources with its t interval; p relabels models within each "
        f"source) for {inheritance_text} ([notebook 10](notebooks/10_lora_ablation.ipynb); "
        f"[`{tables}/lora_inheritance.md`]({tables}/lora_inheritance.md))", "",
        f"![LoRA ablation]({figures}/{LORA_STEM.format(tag=TAG)}.png)", "",
        "conf at the calibrated delta0 over every source's models (mean and 95% t interval over models):", "",
        markdown(conf_rows).rstrip(), "",
        "`genlineage verify` at a 5% target FPR, suspects and shadows of either method (exact 95% intervals over models; "
        "for innocent suspects the rate is the false-positive rate):", "",
        markdown(rate_rows).rstrip(),
    ])


def write_readme_block(profile: Profile, text: str, block: str = "results",
                       readme: Path = REPO_ROOT / "README.md") -> Path | None:
    """Replace the text between this profile's ``block`` markers in ``readme``; None (nothing
    written) when the README holds no such markers."""
    start, end = markers(profile, block)
    current = readme.read_text(encoding="utf-8")
    if start not in current or end not in current:
        return None
    head, rest = current.split(start, 1)
    _, tail = rest.split(end, 1)
    write_text(readme, f"{head}{start}\n{text}\n{end}{tail}")
    return readme


def write_readme_results(profile: Profile, table1: pd.DataFrame, readme: Path = REPO_ROOT / "README.md",
                         owner_test: pd.DataFrame | None = None, memorisation: pd.DataFrame | None = None,
                         inherited: pd.DataFrame | None = None, tally: dict[str, int] | None = None) -> Path | None:
    """Notebook 09's two blocks: the answer on the first screen (:func:`answer_block`) and the
    results further down (the figures, Table 1 and the owner's test: :func:`results_block`)."""
    answer = answer_block(profile, readme.parent, memorisation, inherited, owner_test, tally)
    write_readme_block(profile, answer, "answer", readme)
    return write_readme_block(profile, results_block(profile, table1, readme.parent, owner_test), "results", readme)
