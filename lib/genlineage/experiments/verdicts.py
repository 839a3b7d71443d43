"""Stage 08: the model owner's tool (``genlineage verify``) on every evaluated suspicious model.

Why: the paper reports figures over many models; an owner has one suspect. Running the tool on
each evaluated model, with that source's shadow models as the null and the stored key samples,
shows how often its verdict is right at a stated false-positive rate. The generation cache of the
pipeline is shared, so this costs no new queries after notebook 04.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from ..config import Profile
from ..errors import InputError
from ..io import atomic_path, read_json, stamp_matches, write_json
from ..verify import verify, write_report
from . import layout
from .attribution import keys_dir
from .suspicious import read_manifest

STAGE = "08_verify"


def verify_evaluated(profile: Profile, target_fpr: float = 0.05, progress: bool = True,
                     showcase: tuple[str, ...] = ()) -> pd.DataFrame:
    """One row per evaluated model: the tool's verdict, p-value, conf and discriminator score.
    Models named in ``showcase`` also get their full report under ``results/08_verify/<name>/``."""
    manifest = read_manifest(profile)
    strategy = profile["attribution"]["main_strategy"]
    cached = layout.results_dir(profile, STAGE) / "verdicts.csv"
    stamp = cached.with_suffix(".json")
    key = {"models": {r["name"]: read_json(Path(r["path"]) / "genlineage.json").get("stage_key")
                      for r in manifest.to_dict("records")},
           "keys": {s: read_json(keys_dir(profile, s, strategy) / "_want.json") for s in sorted(manifest.source.unique())},
           "attribution": profile["attribution"], "statistical": profile["statistical"],
           "generation": profile["generation"], "target_fpr": target_fpr, "showcase": sorted(showcase),
           "format": 2}  # bump when the table or the verdict logic changes
    if cached.is_file() and stamp_matches(stamp, key):
        return pd.read_csv(cached).fillna({"reason": ""})
    rows = []
    evaluated = manifest[manifest.role == "evaluated"]
    for _, m in tqdm(list(evaluated.iterrows()), desc="verify", disable=not progress):
        shadows = manifest[(manifest.source == m.source) & (manifest.role == "shadow")]
        out = layout.results_dir(profile, STAGE) / m["name"]
        row = {"model": m["name"], "source": m.source, "lineage": m.lineage, "rho": m.rho, "label": m.label,
               "target_fpr": target_fpr}
        try:
            v = verify(m.source_path, m.path, keys=keys_dir(profile, m.source, strategy),
                       innocent_shadows=list(shadows[shadows.label == 0].path),
                       infringing_shadows=list(shadows[shadows.label == 1].path), target_fpr=target_fpr,
                       profile=profile, out=out, progress=False, cache_dir=layout.generation_cache_dir(profile))
        except InputError as err:  # e.g. the null's hit rate is too high for the keys to reach target_fpr
            rows.append({**row, "verdict": "refused", "reason": str(err)})
            continue
        if m["name"] in showcase:
            write_report(v, out)
        rows.append({**row, "verdict": v.verdict, "p_value": v.p_value, "conf": v.conf, "delta0": v.delta0,
                     "discriminator": v.discriminator_score, "null_hit_rate": v.null_hit_rate,
                     "empirical_p": v.empirical_p_value, "warned": bool(v.warning), "queries": v.queries, "reason": ""})
    table = pd.DataFrame(rows, columns=["model", "source", "lineage", "rho", "label", "target_fpr", "verdict", "p_value",
                                        "conf", "delta0", "discriminator", "null_hit_rate", "empirical_p", "warned", "queries",
                                        "reason"])
    with atomic_path(cached) as tmp:
        table.to_csv(tmp, index=False)
    write_json(stamp, {"key": key})
    return pd.read_csv(cached).fillna({"reason": ""})  # what a cached run returns


def showcase_models(profile: Profile) -> tuple[str, str]:
    """The two suspects whose full report notebook 08 shows: the first source's rho = 1 and innocent
    evaluated models from its own base."""
    manifest = read_manifest(profile)
    ev = manifest[(manifest.role == "evaluated") & (manifest.lineage == "same")]
    return ev[ev.rho == 1.0].name.iloc[0], ev[ev.rho == 0.0].name.iloc[0]


def verdict_rates(table: pd.DataFrame) -> pd.DataFrame:
    """Per source and lineage: share of infringing models called infringing (TPR) and of innocent
    ones (FPR), over the models the tool could judge."""
    judged = table[table.verdict != "refused"].assign(called=lambda t: (t.verdict == "infringing").astype(int))
    out = []
    for (source, lineage), g in judged.groupby(["source", "lineage"]):
        inf, inn = g[g.label == 1], g[g.label == 0]
        out.append({"source": source, "lineage": lineage, "infringing called": f"{inf.called.sum()}/{len(inf)}",
                    "innocent called": f"{inn.called.sum()}/{len(inn)}",
                    "TPR": inf.called.mean() if len(inf) else float("nan"),
                    "FPR": inn.called.mean() if len(inn) else float("nan")})
    refused = int((table.verdict == "refused").sum())
    result = pd.DataFrame(out)
    result.attrs["refused"] = refused
    return result
