"""The LoRA ablation: does attribution survive when the fine-tune is a LoRA?

Infringers in the wild often fine-tune with LoRA (a low-rank adapter on a public base), and an
owner's shadows will rarely be trained the way the suspect was. So every model of the comparison
gets a *LoRA twin*: the same (caption, image) pairs, the same seed, the same base, the same steps,
a LoRA on the UNet's attention projections instead of a full fine-tune. Twins are paired with their
full counterparts, so a difference between the two is the fine-tuning method's, not the data's.

The LoRA learning rate is not the full fine-tune's (an adapter of rank 4 needs a larger step to
move the model as far). It is chosen on shadow models only (``suspicious.lora_ablation.lr_grid``):
the LoRA twins of one replicate's shadow set are trained at each rate of the grid, and the rate
with the largest gap between innocent and infringing shadows' mean reconstruction distance
(innocent minus infringing, averaged over sources) is the one every other twin is trained with.
No evaluated model is looked at before that choice.

What is measured, over models (the model is the unit of every interval):
* inheritance and conf (Figure 6's quantity) of LoRA infringers beside full ones, per rho;
* ``genlineage verify``'s call rates for LoRA suspects against the owner's full shadows;
* verify's false-positive rate across methods: LoRA shadows judging full innocents, full shadows
  judging LoRA innocents, beside the matched cases.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from .. import layout
from ..cached_job import CachedJob, code_of, content, output
from ..config import AttributionSettings, GenerationConfig, Profile, StatisticalSettings, as_profile
from ..errors import InputError
from ..intervals import SHARE, SHARE_DIFFERENCE, binomial_interval, per_group, stratified_permutation_p, t_interval
from ..cache import Result
from ..io import atomic_path
from ..jobs import executor_for, run_jobs
from ..models.pipeline_io import fingerprint, model_trust, stage_model
from ..training.finetune import finetune_folder, finetune_result
from ..study.queries import keys_dir, query_model
from .instance_tables import evaluated_confs, inheritance
from .model_owner_verify import VERDICT_CODE
from .suspicious_models import training_set_job
from ..study.manifest import plan_manifest
from ..verify import verify

STAGE = "10_lora"
TWINS = "lora_manifest.csv"
EVERY_SOURCE = "every source"  # the rows of a table pooled over sources


def twin_name(name: str, lr: float) -> str:
    """A twin's name carries its learning rate: the grid's candidates and the chosen set are one
    family of cached models, so the chosen rate's selection shadows are not trained twice."""
    return f"{name}__lora_lr{lr:g}"


def learning_rates(profile: Profile) -> list[float]:
    """The LoRA learning rates to try: the grid, or the one rate the profile gives LoRA models."""
    cfg = profile.suspicious
    grid = list(cfg.lora_ablation.lr_grid)
    if grid:
        return grid
    return [float(cfg.train_config(profile.training.finetune, "lora").lr)]


def twin_rows(profile: Profile, rows: pd.DataFrame, lr: float) -> pd.DataFrame:
    """LoRA twins of ``rows`` (stage 03 manifest rows) at learning rate ``lr``: each keeps its
    original's seed, base and training pairs (``twin_of`` names the original) and trains a LoRA."""
    out = rows.copy()
    out["twin_of"] = rows["name"]
    out["name"] = [twin_name(n, lr) for n in rows["name"]]
    out["path"] = [str(layout.models_dir(profile) / "suspicious_lora" / n) for n in out["name"]]
    out["finetune"], out["lora_lr"] = "lora", float(lr)
    return out.reset_index(drop=True)


def ablated_models(profile: Profile) -> pd.DataFrame:
    """The stage 03 models the ablation twins: same-lineage evaluated infringers at the ablation's
    rhos and evaluated innocents, of the ablation's replicates, and the shadow sets of every
    replicate (so that verify's LoRA null holds as many shadows as its full one); of the ablation's
    sources only, when it names some."""
    cfg = profile.suspicious.lora_ablation
    manifest = plan_manifest(profile)
    evaluated = (manifest.role == "evaluated") & ((manifest.rho == 0) | manifest.rho.isin(cfg.rhos))
    if cfg.replicates:
        evaluated &= manifest.replicate.isin(cfg.replicates)
    keep = (manifest.lineage == "same") & (evaluated | (manifest.role == "shadow"))
    if cfg.sources:
        keep &= manifest.source.isin(cfg.sources)
    return manifest[keep].reset_index(drop=True)


def selection_rows(profile: Profile) -> pd.DataFrame:
    """The twins that choose the learning rate: one replicate's shadow sets, at every rate of the grid."""
    ablated = ablated_models(profile)
    shadows = ablated[(ablated.role == "shadow") & (ablated.replicate == profile.suspicious.lora_ablation.selection_replicate)]
    return pd.concat([twin_rows(profile, shadows, lr) for lr in learning_rates(profile)], ignore_index=True)


def choose_lr(shadow_models: pd.DataFrame) -> tuple[float, pd.DataFrame]:
    """The rate whose LoRA shadows separate best: per rate and source, innocent shadows' mean RD
    minus infringing shadows' (each shadow's mean RD over the keys), averaged over sources; the
    largest wins, the smaller rate on a tie. ``shadow_models`` holds one row per shadow twin with
    ``lora_lr``, ``source``, ``label`` and ``mean_rd``. Returns (rate, the gaps behind it)."""
    by_source = (shadow_models.groupby(["lora_lr", "source", "label"]).mean_rd.mean().unstack("label")
                 .rename(columns={0: "innocent", 1: "infringing"}))
    by_source["gap"] = by_source["innocent"] - by_source["infringing"]
    gaps = by_source.groupby("lora_lr").gap.agg(["mean", "min", "count"]).reset_index()
    gaps = gaps.rename(columns={"mean": "mean_gap", "min": "min_gap", "count": "sources"})
    best = gaps.sort_values(["mean_gap", "lora_lr"], ascending=[False, True]).iloc[0]
    return float(best.lora_lr), gaps


def build_twin(profile: dict, row: dict, progress: bool = False) -> str:
    """One job: the original's training pairs (cached by stage 03; a set released with its model is
    rebuilt for the twin and released again), then the LoRA fine-tune."""
    profile = as_profile(profile)
    data = training_set_job(profile, {**row, "name": row["twin_of"]})
    cfg = profile.suspicious.train_config(profile.training.finetune, "lora", seed=int(row["seed"]) % (2**31),
                                          lr=float(row["lora_lr"]))
    released = data.is_released()
    if not data.spares(finetune_result(row["base_path"], data.out, row["path"], cfg, profile.data.image_size)):
        finetune_folder(row["base_path"], data.build(), row["path"], cfg, profile.data.image_size, layout.work_dir(profile),
                        {k: row[k] for k in ("name", "twin_of", "source", "rho", "role", "lineage", "base")},
                        device=profile.run.device, progress=progress, desc=row["name"],
                        trust=model_trust(profile, row["base_path"]))
    if released:
        data.release()
    return row["path"]


def train_and_query(profile: Profile, rows: pd.DataFrame, desc: str, progress: bool = True
                    ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train every twin of ``rows`` and ask it every key (stage 04's query, cached per model).
    Returns (``rows`` with stage 04's watermark columns, the per-sample RD rows of all of them)."""
    records = rows.to_dict("records")
    run_jobs(build_twin, [{"profile": profile, "row": r} for r in records],
             profile.run.parallel_jobs, profile.run.threads_per_job, desc=f"LoRA {desc}" if progress else None,
             executor=executor_for(profile.run))
    answers = run_jobs(query_model,
                       [{"profile": profile, "row": r} for r in records], profile.run.parallel_jobs,
                       profile.run.threads_per_job, desc=f"queries of {desc}" if progress else None,
                       executor=executor_for(profile.run))
    watermark = pd.DataFrame([{k: v for k, v in a.items() if k != "per_model"} for a in answers])
    models = pd.concat([rows.reset_index(drop=True), watermark], axis=1)
    return models, pd.concat([pd.read_csv(a["per_model"]) for a in answers], ignore_index=True)


def mean_rds(models: pd.DataFrame, per_sample: pd.DataFrame, strategy: str, n_keys: int) -> pd.DataFrame:
    """``models`` with each one's mean RD over its first ``n_keys`` keys of ``strategy``."""
    keys = per_sample[(per_sample.strategy == strategy) & (per_sample["rank"] < n_keys)]
    means = keys.groupby("model").rd.mean().rename("mean_rd")
    return models.merge(means, left_on="name", right_index=True, how="left")


def write_twins(profile: Profile, twins: pd.DataFrame) -> Path:
    """The twins' manifest (``lora_manifest.csv`` beside stage 03's), in one atomic write."""
    path = profile.data_root / TWINS
    with atomic_path(path) as tmp:
        twins.to_csv(tmp, index=False)
    return path


def paired_gaps(confs: pd.DataFrame) -> pd.DataFrame:
    """Per (source, rho), and per rho over every source: the LoRA twin minus its full original, in
    mean RD and in conf, with a paired t interval over the pairs of models (a negative RD gap: the
    LoRA twin comes closer to the keys); the conf gap's interval is truncated to [-1, 1].
    ``confs`` is :func:`method_confs`'s table."""
    lora = confs[confs.finetune == "lora"]
    full = confs.loc[confs.finetune == "full", ["model", "mean_rd", "conf"]].rename(
        columns={"model": "twin_of", "mean_rd": "mean_rd_full", "conf": "conf_full"})
    pairs = lora.merge(full, on="twin_of", how="inner")
    pairs = pd.concat([pairs, pairs.assign(source=EVERY_SOURCE)], ignore_index=True)
    rows = []
    for (source, rho), g in pairs.groupby(["source", "rho"]):
        rd, cf = t_interval(g.mean_rd - g.mean_rd_full), t_interval(g.conf - g.conf_full, bounds=SHARE_DIFFERENCE)
        rows.append({"source": source, "rho": rho, "pairs": len(g), "rd_lora_minus_full": rd.mean, "rd_low": rd.low,
                     "rd_high": rd.high, "conf_lora_minus_full": cf.mean, "conf_low": cf.low, "conf_high": cf.high})
    return pd.DataFrame(rows)


def conf_by_method(confs: pd.DataFrame) -> pd.DataFrame:
    """Figure 6's quantity per fine-tuning method: mean conf over the evaluated models of each
    (finetune, source, rho) with its t interval over models, and over every source's models
    (source ``every source``: a source holds few models per replicate); conf is a share, so its
    interval is truncated to [0, 1] (``intervals.SHARE``)."""
    pooled = confs.assign(source=EVERY_SOURCE)
    return per_group(pd.concat([confs, pooled], ignore_index=True), ["finetune", "source", "rho"], "conf", bounds=SHARE)


def call_rates(verdicts: pd.DataFrame) -> pd.DataFrame:
    """Per (suspect method, shadow method, label): how many models verify called infringing, with
    an exact 95% interval over models (for label 0 the rate is the false-positive rate)."""
    rows = []
    for (suspect, shadows, label), g in verdicts.groupby(["suspect_finetune", "shadow_finetune", "label"]):
        called = int((g.verdict == "infringing").sum())
        answered = int(g.verdict.isin(["infringing", "not shown"]).sum())
        iv = binomial_interval(called, answered)
        rows.append({"suspect": suspect, "shadows": shadows, "label": int(label), "models": len(g), "answered": answered,
                     "called infringing": called, "rate": iv.mean, "low": iv.low, "high": iv.high})
    return pd.DataFrame(rows)


def verification_pairs(manifest: pd.DataFrame, twins: pd.DataFrame) -> list[dict]:
    """Every (suspect, null) pairing the ablation asks verify about: each evaluated model of either
    method against its domain's innocent shadows and its source's infringing shadows of either
    method; the evaluated models of one method only appear beside their twins."""
    evaluated_full = manifest[manifest.name.isin(twins.twin_of) & (manifest.role == "evaluated")].assign(finetune="full")
    everything = pd.concat([manifest.assign(finetune="full"), twins], ignore_index=True)
    suspects = pd.concat([evaluated_full, twins[twins.role == "evaluated"]], ignore_index=True)
    pairs = []
    for _, m in suspects.iterrows():
        for method in ("full", "lora"):
            pool = everything[(everything.finetune == method) & (everything.role == "shadow")]
            if method == "lora":  # only the twins at the chosen rate are in ``twins``
                pool = pool[pool.name.isin(twins.name)]
            innocent = pool[(pool.label == 0) & (pool.domain == m.domain)]
            infringing = pool[(pool.label == 1) & (pool.source == m.source)]
            pairs.append({"model": m["name"], "suspect_finetune": m.finetune, "shadow_finetune": method,
                          "source": m.source, "source_path": m.source_path, "path": m.path, "domain": m.domain,
                          "rho": m.rho, "label": int(m.label), "replicate": int(m.replicate),
                          "innocent_shadows": list(innocent.path), "infringing_shadows": list(infringing.path)})
    return pairs


def run_ablation(profile: Profile, progress: bool = True) -> dict:
    """The learning rate chosen on one replicate's LoRA shadows, then every twin trained at it and
    queried. Returns the choice (``lr``, ``lr_gaps``: the shadows' gap per rate, ``selection``:
    the selection twins' mean RDs), the ``twins`` (with stage 04's watermark columns) and their
    ``per_sample`` RD rows."""
    att = profile.attribution
    selection, selection_rd = train_and_query(profile, selection_rows(profile), "lr selection", progress)
    chosen_by = mean_rds(selection, selection_rd, att.main_strategy, att.n_keys)
    lr, gaps = choose_lr(chosen_by[chosen_by.role == "shadow"])
    twins, per_sample = train_and_query(profile, twin_rows(profile, ablated_models(profile), lr), "twins", progress)
    write_twins(profile, twins)
    return {"lr": lr, "lr_gaps": gaps, "twins": twins, "per_sample": per_sample, "selection": chosen_by}


def with_twins(models: pd.DataFrame, per_sample: pd.DataFrame, ablation: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Stage 04's models (marked ``finetune`` full) and their twins in one table, and their RD rows:
    what stage 04's conf and inheritance functions take, with ``finetune`` to tell them apart."""
    full = models.assign(finetune="full")
    both = pd.concat([full, ablation["twins"]], ignore_index=True)
    return both, pd.concat([per_sample, ablation["per_sample"]], ignore_index=True)


def _paired(models: pd.DataFrame, method: str | None = None) -> pd.DataFrame:
    """The twins and the stage 04 models that have one (of ``method`` only, when given)."""
    twinned = set(models.loc[models.finetune == "lora", "twin_of"])
    paired = models[(models.finetune == "lora") | models.name.isin(twinned)]
    return paired if method is None else paired[paired.finetune == method]


def method_confs(profile: Profile, models: pd.DataFrame, per_sample: pd.DataFrame, delta0) -> pd.DataFrame:
    """conf and mean RD (the main strategy, N keys) of every evaluated model that has a twin and of
    every twin, each replicate at its delta0 (calibrated on the replicate's full shadows, the
    owner's threshold, so that one threshold judges both methods)."""
    keep = _paired(models)
    confs = evaluated_confs(profile, keep, per_sample[per_sample.model.isin(keep.name)], delta0)
    confs = confs[confs.strategy == profile.attribution.main_strategy]
    return confs.merge(keep[["name", "finetune", "twin_of"]].rename(columns={"name": "model"}), on="model", how="left")


def pooled_inheritance(confs: pd.DataFrame) -> dict:
    """Inheritance over every source at once, for one method's evaluated models (``confs``: one row
    per model with source, rho, mean_rd and conf): innocent minus rho = 1 infringing mean RD,
    tested by relabelling models within each source only (each source's keys have their own
    scale), with the mean of the per-source gaps and its t interval over sources. Why: one
    replicate gives a source 1 infringing and 2 innocent models, which alone can never show
    anything (p >= 1/3); four sources together can (p down to 1/81)."""
    inf, inn = confs[confs.rho == 1.0], confs[confs.rho == 0.0]
    rd = (inn.groupby("source").mean_rd.mean() - inf.groupby("source").mean_rd.mean()).dropna()
    cf = (inf.groupby("source").conf.mean() - inn.groupby("source").conf.mean()).dropna()
    gap, conf_gap = t_interval(rd), t_interval(cf, bounds=SHARE_DIFFERENCE)
    p = stratified_permutation_p(inn.mean_rd, inn.source, inf.mean_rd, inf.source)
    return {"source": EVERY_SOURCE, "lineage": "same", "infringing models": len(inf), "innocent models": len(inn),
            "rd_gap": gap.mean, "rd_gap_low": gap.low, "rd_gap_high": gap.high,
            "conf_gap": conf_gap.mean, "conf_gap_low": conf_gap.low, "conf_gap_high": conf_gap.high,
            "permutation_p": p,
            "permutation_p_reverse": stratified_permutation_p(inf.mean_rd, inf.source, inn.mean_rd, inn.source),
            "shown (p < 0.05)": bool(p < 0.05)}


def inheritance_by_method(profile: Profile, models: pd.DataFrame, per_sample: pd.DataFrame, delta0) -> pd.DataFrame:
    """Stage 04's inheritance test (innocent minus rho = 1 infringing mean RD, over models) per
    fine-tuning method, each on the same models' twins or originals: per source, and over every
    source (:func:`pooled_inheritance`; its gap is a mean over sources)."""
    confs = method_confs(profile, models, per_sample, delta0)
    parts = []
    for method in ("full", "lora"):
        own = _paired(models, method)
        table = inheritance(profile, own, per_sample[per_sample.model.isin(own.name)], delta0)
        pooled = pd.DataFrame([pooled_inheritance(confs[confs.finetune == method])])
        parts.append(pd.concat([table, pooled], ignore_index=True).assign(finetune=method))
    return pd.concat(parts, ignore_index=True)


@dataclass(frozen=True)
class AblationVerdictsJob(CachedJob):
    """The ablation's verdict table: made from every model's weights (suspects and shadows, named by
    path), the sources', the content of the key sets, the pairings, every setting verify uses and
    the code that decides."""

    made_by = f"notebook {STAGE}_ablation"

    out: Path = output()
    models: dict[str, Path] = content(fingerprint)
    sources: dict[str, Path] = content(fingerprint)
    keys: dict[str, Path] = content()
    pairs: tuple[dict, ...]
    attribution: AttributionSettings
    statistical: StatisticalSettings
    generation: GenerationConfig
    target_fpr: float
    code: tuple[str, ...] = code_of()


def verdicts_result(profile: Profile, pairs: list[dict], keys_of, target_fpr: float) -> Result:
    """The ablation's verdict table as a cached result (:class:`AblationVerdictsJob`)."""
    paths = sorted({p["path"] for p in pairs} | {s for p in pairs for s in p["innocent_shadows"] + p["infringing_shadows"]})
    sources = sorted({(p["source"], p["source_path"]) for p in pairs})
    return AblationVerdictsJob(
        layout.results_dir(profile, STAGE) / "verdicts.csv", {str(path): Path(path) for path in paths},
        {s: Path(path) for s, path in sources}, {s: Path(keys_of(s)) for s, _ in sources},
        tuple({k: v for k, v in p.items() if k not in ("path", "source_path")} for p in pairs),
        profile.attribution, profile.statistical, profile.generation, target_fpr, (__name__, *VERDICT_CODE)).result()


def main_keys_of(profile: Profile):
    """A source's stored key set of the main strategy (stage 04's), as verify takes it."""
    return lambda source: keys_dir(profile, source, profile.attribution.main_strategy)


def verify_pairs(profile: Profile, pairs: list[dict], keys_of=None, target_fpr: float | None = None,
                 progress: bool = True) -> pd.DataFrame:
    """``genlineage verify`` on every pairing of :func:`verification_pairs`; one row each with the
    verdict (``refused`` with the reason when the null cannot reach ``target_fpr``). ``keys_of``
    maps a source to its stored key set folder (default: stage 04's main strategy). Generations are shared with the other stages'
    cache, so a model asked before costs nothing; the table is cached under its inputs."""
    keys_of = keys_of or main_keys_of(profile)
    target_fpr = profile.verify.target_fpr if target_fpr is None else target_fpr  # one default: the profile's
    result = verdicts_result(profile, pairs, keys_of, target_fpr)
    if result.fresh():
        return pd.read_csv(result.path).fillna({"reason": ""})
    rows = []
    for pair in tqdm(pairs, desc="verify", unit="pairing", disable=not progress):
        row = {k: pair[k] for k in ("model", "suspect_finetune", "shadow_finetune", "source", "rho", "label", "replicate")}
        row["innocent shadows"] = len(pair["innocent_shadows"])
        out = layout.results_dir(profile, STAGE) / "verify" / f"{pair['model']}__{pair['shadow_finetune']}_shadows"
        try:
            v = verify(pair["source_path"], stage_model(profile, pair["path"]), keys=keys_of(pair["source"]),
                       target_fpr=target_fpr, profile=profile, out=out, progress=False,
                       cache_dir=layout.generation_cache_dir(profile),
                       innocent_shadows=pair["innocent_shadows"], infringing_shadows=pair["infringing_shadows"],
                       # the ablation asks how a null of one method judges models of the other, over the
                       # domain's shadows of both bases (as stage 08 did when this notebook was written):
                       # the mismatch is its question, and the statistic is the one it was run with
                       statistic="mean_rd", allow_mismatched_null=True)
        except InputError as err:
            rows.append({**row, "verdict": "refused", "p_value": float("nan"), "conf": float("nan"), "reason": str(err)})
            continue
        rows.append({**row, "verdict": v.verdict, "p_value": v.p_value, "conf": v.conf, "reason": ""})
    table = pd.DataFrame(rows)
    result.write(lambda tmp: table.to_csv(tmp, index=False))
    return pd.read_csv(result.path).fillna({"reason": ""})
