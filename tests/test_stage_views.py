"""What the notebooks show, computed in the package: notebook 01's disjointness check and samples,
notebook 08's showcase decision (constructed cases)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from genlineage import layout
from genlineage.data.imagefolder import write_imagefolder
from genlineage.experiments.datasets import check_roles_disjoint, source_samples
from genlineage.experiments.model_owner_verify import EVIDENCE_HEADING, showcase_decision
from genlineage.io import write_json


def _splits(source_ids, heldout_ids) -> dict:
    return {"domains": {"celeba": {"roles": {"source": source_ids, "heldout": heldout_ids}}}, "pretrain": {"ids": []}}


def _folder(path, colours):
    items = [(np.full((4, 4, 3), c, dtype=np.uint8), f"caption {i}", {}) for i, c in enumerate(colours)]
    return write_imagefolder(path, items).root


def test_roles_are_reported_disjoint_only_when_they_are(smoke_profile, tmp_path):
    P = smoke_profile
    folders = {"celeba_source": _folder(tmp_path / "a", [10, 20]), "celeba_heldout": _folder(tmp_path / "b", [30])}
    write_json(P.data_root / "splits.json", _splits(["celeba:1", "celeba:2"], ["celeba:3"]))
    assert check_roles_disjoint(P, folders) == {"roles disjoint by id": True, "images shared between roles": 0}
    write_json(P.data_root / "splits.json", _splits(["celeba:1", "celeba:2"], ["celeba:2"]))
    folders["celeba_heldout"] = _folder(tmp_path / "c", [20])  # the same image bytes as a source image
    checks = check_roles_disjoint(P, folders)
    assert checks["roles disjoint by id"] is False and "celeba:2" in checks["why not"]
    assert checks["images shared between roles"] == 1


def test_source_samples_are_the_first_images_with_their_captions(smoke_profile):
    P = smoke_profile
    _folder(layout.datasets_dir(P) / "celeba_source", [1, 2, 3])
    images, captions = source_samples(P, "celeba", n=2)
    assert images.shape == (2, 4, 4, 3) and captions == ["caption 0", "caption 1"]
    assert len(source_samples(P, "celeba", n=12)[1]) == 3


def test_the_showcase_shows_the_decision_part_of_the_report_or_the_refusal(smoke_profile):
    P = smoke_profile
    table = pd.DataFrame({"model": ["m0", "m1"], "reason": ["", "too few shadows"]})
    report = layout.results_dir(P, "08_verify") / "domain" / "m0" / "report.md"
    report.parent.mkdir(parents=True)
    report.write_text(f"# verdict\n\nsummary\n\n## Decision\n\nfacts\n{EVIDENCE_HEADING} against the null\n\nhistogram\n")
    shown = showcase_decision(P, "domain", "m0", table)
    assert shown.startswith("# verdict") and "facts" in shown and "histogram" not in shown
    assert showcase_decision(P, "domain", "m1", table) == "m1 was refused: too few shadows"


def test_innocent_models_under_the_controls_null_count_keys_easier_than_controls():
    from genlineage.experiments.model_owner_verify import innocent_under_controls

    table = pd.DataFrame({"model": list("abcd"), "label": [0, 0, 0, 1], "verdict": ["not shown"] * 3 + ["infringing"],
                          "p_value": [0.5, 0.2, 0.9, 0.01], "conf": [0.4, 0.1, 0.3, 0.9],
                          "null_hit_rate": [0.2, 0.3, 0.3, 0.1]})
    innocent = innocent_under_controls(table)
    assert list(innocent.model) == ["a", "b", "c"], "the innocent models only"
    assert innocent.attrs["keys_easier"] == 1, "a only: c's keys hit exactly as often as its controls"
