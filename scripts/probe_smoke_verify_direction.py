"""Probe: do smoke-sized pipelines, fine-tuned in seconds, show the direction of ``genlineage verify``?

Why it exists: to check whether smoke-profile models show the direction of the tool's verdict
(docs/method.md#the-model-owners-tool). This builds the test suite's smoke base (tests/conftest.py),
a source fine-tuned on six pattern pairs, its six Strategy-2 keys, two rho = 1 suspects fine-tuned
from the base on the source's generations for the key prompts, and four innocent models fine-tuned
on unrelated pairs, then prints each model's mean reconstruction distance over the keys (the
statistic of the tool's shadow null).

    .venv/bin/python scripts/probe_smoke_verify_direction.py SOURCE_STEPS SUSPECT_STEPS LR [WORKDIR]

Measured (2026-11-28, a 2-core machine; the settings and results follow): at (6, 60, 1e-3),
(60, 60, 1e-3), (60, 200, 1e-3), (200, 100, 1e-3) and (60, 60, 3e-3) the two rho = 1 suspects were not
both below every innocent model; at (60, 30, 1e-3) they were (0.074, 0.078 against 0.080-0.084), by
less than twice the innocents' spread. No setting gave a separation a test could rely on, so the
tests check the direction with suspects of known behaviour instead.
"""
from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import torch  # noqa: E402

from conftest import CAPTIONS, make_components  # noqa: E402
from genlineage.config import load_profile  # noqa: E402
from genlineage.data.imagefolder import write_imagefolder  # noqa: E402
from genlineage.generation import generate_cached  # noqa: E402
from genlineage.models.pipeline_io import load_pipeline, save_pipeline  # noqa: E402
from genlineage.training.finetune import finetune_folder  # noqa: E402
from genlineage.training.sd import TrainConfig  # noqa: E402
from genlineage.verify import select_keys  # noqa: E402
from genlineage.verify.verdict import _rd  # noqa: E402
from genlineage.verify.suspect import PipelineSuspect  # noqa: E402
from test_verify import _pattern  # noqa: E402


def main(src_steps: int, steps: int, lr: float, root: Path) -> None:
    torch.set_num_threads(1)
    P = load_profile("smoke")
    cfg = P.generation
    seeds = list(P.attribution.query_seeds)
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    base = root / "base"
    save_pipeline(make_components(), base, {"role": "probe"})

    def train(data: Path, out: Path, seed: int, n: int) -> tuple[Path, float]:
        start = time.time()
        finetune_folder(base, data, out, TrainConfig.from_mapping({"steps": n, "batch": 6, "lr": lr}, seed=seed), 32,
                        root / "work", progress=False)
        return out, time.time() - start

    write_imagefolder(root / "src_data", [(_pattern(i), CAPTIONS[i], {}) for i in range(6)])
    source, _ = train(root / "src_data", root / "source", 1, src_steps)
    keys = select_keys(source, root / "src_data", "generation", 6, base, P, root / "sel", False)
    prompts = [p for p in keys.prompts for _ in range(4)]
    gens = generate_cached(load_pipeline(source), prompts, [s for _ in keys.prompts for s in range(4)], cfg, None)
    write_imagefolder(root / "inf_data", list(zip(gens, prompts, [{}] * len(prompts))))
    models = {f"rho1_{s}": train(root / "inf_data", root / f"inf{s}", s, steps) for s in (11, 12)}
    for k in range(4):
        write_imagefolder(root / f"inn{k}_data", [(_pattern(200 + 10 * k + i), CAPTIONS[(i + k) % 12], {}) for i in range(24)])
        models[f"innocent{k}"] = train(root / f"inn{k}_data", root / f"inn{k}", 3000 + k, steps)
    models["base"] = (base, 0.0)
    for name, (path, seconds) in models.items():
        rd = _rd(PipelineSuspect(path, cfg, root / "cache"), keys.prompts, keys.references, seeds, "l2", False)[0]
        print(f"source {src_steps} steps, suspects {steps} steps, lr {lr:g}: {name:10s} "
              f"fine-tune {seconds:5.1f} s, mean RD {rd.mean():.4f}", flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]),
         Path(sys.argv[4]) if len(sys.argv) > 4 else Path("/tmp/genlineage_probe"))
