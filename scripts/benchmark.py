"""Benchmark of the tiny family's engines (fine-tuning steps/s, generated images/s) against
bare diffusers/torch loops on the same model, at 1 and 2 threads, plus two single-thread
processes side by side. Usage: .venv/bin/python scripts/benchmark.py [profile] [base]
Needs the profile's base model (run notebook 02 or run_all.sh first). Writes
data/<profile>/results/benchmark.json and prints a table."""
from __future__ import annotations

import json
import subprocess
import sys
import time

import pandas as pd

from genlineage.config import load_profile
from genlineage.data.imagefolder import read_imagefolder
from genlineage.experiments import layout
from genlineage.generation import GenerationConfig
from genlineage.io import write_json
from genlineage.models.pipeline_io import load_pipeline
from genlineage.training.sd import TrainConfig


def one(profile_name: str, base: str, threads: int) -> list[dict]:
    from genlineage.benchmark import measure

    p = load_profile(profile_name)
    folder = read_imagefolder(layout.datasets_dir(p) / "celeba_source", size=int(p["data"]["image_size"]))
    comp = load_pipeline(layout.base_dir(p, base))
    res = measure(comp, folder.load_images(), folder.captions, TrainConfig.from_mapping(p["training"]["finetune"]),
                  GenerationConfig.from_mapping(p["generation"]), threads)
    return [r.__dict__ for r in res]


def main() -> None:
    profile_name = sys.argv[1] if len(sys.argv) > 1 else "tiny"
    base = sys.argv[2] if len(sys.argv) > 2 else "v1"
    if len(sys.argv) > 3 and sys.argv[3] == "--worker":
        print(json.dumps(one(profile_name, base, int(sys.argv[4]))))
        return
    rows = one(profile_name, base, 1) + one(profile_name, base, 2)
    # two single-thread jobs side by side: total throughput of the pair
    cmd = [sys.executable, __file__, profile_name, base, "--worker", "1"]
    start = time.perf_counter()
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    pair = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
    for i, r in enumerate(pair[0]):
        rows.append({**r, "engine": r["engine"] + ", 2 procs x 1 thread", "threads": 2,
                     "rate": r["rate"] + pair[1][i]["rate"]})
    table = pd.DataFrame(rows)
    p = load_profile(profile_name)
    write_json(layout.results_dir(p, "benchmark") / "benchmark.json",
               {"rows": rows, "wall_seconds": time.perf_counter() - start})
    print(table.to_string(index=False, float_format=lambda v: f"{v:.2f}"))


if __name__ == "__main__":
    main()
