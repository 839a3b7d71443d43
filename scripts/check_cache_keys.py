"""List which cached results of a profile's run a re-run would reuse, stage by stage: every image
folder (stage 01), the VAE, bases and sources (02), memorisation tables (02), training sets and
models (03), key sets, RD tables and stage 04's tables (04).

Usage: .venv/bin/python scripts/check_cache_keys.py [profile] [--out keys.json] [--compare other.json]
(default tiny; reads data/<profile>/ or $GENLINEAGE_DATA/<profile>/). Prints fresh/stale counts per
stage; ``--out`` writes each result's key (its inputs as a stamp compares them: an input recorded as
null reads as absent) and whether it is fresh; ``--compare`` names every result whose key differs
from another run of this script's file. What a change to how cache keys are made must pass before
it lands without a cold run (issue 25.1): run it with the code before the change
(``PYTHONPATH=<checkout>/lib``) and after, on the same cache, and compare. Exits 1 when a key
differs. A check for the notes, not a test: it reads a run's cache.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from genlineage.config import load_profile
from genlineage.data import build
from genlineage.experiments import instance_attribution, memorisation, source_models, suspicious_models

STAGES = {"01 datasets": build.stage_results, "02 models": source_models.stage_results,
          "02 memorisation": memorisation.stage_results, "03 training sets and models": suspicious_models.stage_results,
          "04 key sets and RD tables": instance_attribution.stage_results}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("profile", nargs="?", default="tiny")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--compare", type=Path)
    args = parser.parse_args(argv)
    profile = load_profile(args.profile)
    keys: dict[str, dict] = {}
    for stage, results_of in STAGES.items():
        results = results_of(profile)
        states = {str(r.path.relative_to(profile.data_root)): {"fresh": r.fresh(), "key": compared_key(r)}
                  for r in results}
        keys.update(states)
        n_fresh = sum(s["fresh"] for s in states.values())
        print(f"{stage}: {n_fresh} fresh, {len(states) - n_fresh} stale")
    if args.out:
        args.out.write_text(json.dumps(keys, indent=1, sort_keys=True) + "\n")
    if args.compare:
        other = json.loads(args.compare.read_text())
        differ = sorted(p for p in set(keys) | set(other) if (keys.get(p) or {}).get("key") != (other.get(p) or {}).get("key"))
        print(f"keys identical to {args.compare}: {len(keys) - len(differ)} of {len(keys)}; different: {len(differ)}")
        for path in differ:
            mine, theirs = (keys.get(path) or {}).get("key") or {}, (other.get(path) or {}).get("key") or {}
            names = sorted(n for n in set(mine) | set(theirs) if mine.get(n) != theirs.get(n))
            print(f"differs: {path} ({', '.join(names)})")
        return 1 if differ else 0
    return 0


def compared_key(result) -> dict:
    """The inputs as ``Result.changed_inputs`` compares them: a null input is an absent one."""
    return {name: value for name, value in result.stamp_record()["inputs"].items() if value is not None}


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
