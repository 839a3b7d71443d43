"""Check that the training-set job rebuilds a profile's cached training sets byte for byte: each
stage-03 training set (the manifest's models and the shared null shadows) is rebuilt into a
temporary folder and its content id compared with the cached folder's, and each suspicious
model's cache key is asked whether it is still fresh.

Usage: .venv/bin/python scripts/check_training_sets_rebuild.py [profile]   (default tiny; needs
stage 03's cache under data/<profile>/). Prints the counts; exits 1 if any set differs or any
model would retrain. What a change to the training-set job's key must pass before it lands
without a cold run (issue 25.1). A check for the notes, not a test: it reads a run's cache.
"""
from __future__ import annotations

import dataclasses
import sys
import tempfile
from pathlib import Path

from genlineage.cache import content_id
from genlineage.config import load_profile
from genlineage.models import storage
from genlineage.experiments.suspicious_models import model_result, training_set_job
from genlineage.study.manifest import read_manifest, read_null_shadows


def main(argv: list[str]) -> int:
    profile = load_profile(argv[0] if argv else "tiny")
    rows = read_manifest(profile).to_dict("records") + read_null_shadows(profile).to_dict("records")
    missing, differ, fresh = [], [], 0
    with tempfile.TemporaryDirectory() as tmp:
        for row in rows:
            job = training_set_job(profile, row)
            if not job.out.exists():
                missing.append(row["name"])
                continue
            rebuilt = dataclasses.replace(job, out=Path(tmp) / job.out.name).build()
            if content_id(rebuilt) != (storage.released_data_identity(job.out) or content_id(job.out)):
                differ.append(row["name"])
            fresh += model_result(profile, row).fresh()
    print(f"training sets rebuilt identical: {len(rows) - len(missing) - len(differ)}, different: {len(differ)}, "
          f"not cached: {len(missing)}")
    print(f"models fresh under the current keys: {fresh} of {len(rows)}")
    for name in differ:
        print("differs:", name)
    return 1 if differ or fresh < len(rows) - len(missing) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
