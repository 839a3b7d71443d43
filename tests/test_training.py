"""The SD training engine: it learns, it resumes to the same weights, batches are epochs."""
from __future__ import annotations

import pytest
import torch

from genlineage.training.encode import encode_dataset
from genlineage.training.sd import TrainConfig, _batch_indices, train_sd

from conftest import CAPTIONS, make_components


def _weights(components) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in components.unet.parameters()])


def test_each_sample_once_per_epoch():
    n, batch = 10, 4
    seen = torch.cat([_batch_indices(7, step, batch, n) for step in range(5)])  # 20 positions = 2 epochs
    assert sorted(seen[:10].tolist()) == list(range(10))
    assert sorted(seen[10:].tolist()) == list(range(10))


def test_interrupted_run_resumes_to_the_same_weights(random_images, tmp_path):
    cfg = TrainConfig(steps=6, batch=4, lr=1e-3, seed=3, checkpoint_every=2)
    straight = make_components()
    data = encode_dataset(straight, random_images, CAPTIONS)
    assert train_sd(straight, data, cfg, tmp_path / "a", progress=False)

    resumed = make_components()
    data = encode_dataset(resumed, random_images, CAPTIONS)
    assert not train_sd(resumed, data, cfg, tmp_path / "b", stop_after=3, progress=False)
    fresh = make_components()  # a new process would start from the initial weights again
    assert train_sd(fresh, encode_dataset(fresh, random_images, CAPTIONS), cfg, tmp_path / "b", progress=False)
    assert torch.equal(_weights(straight), _weights(fresh))


def test_text_encoder_trains_only_when_asked(random_images, tmp_path):
    comp = make_components()
    before = [p.clone() for p in comp.text_encoder.parameters()]
    cfg = TrainConfig(steps=3, batch=4, lr=1e-3, train_text_encoder=True)
    train_sd(comp, encode_dataset(comp, random_images, CAPTIONS), cfg, tmp_path, progress=False)
    assert any(not torch.equal(a, b) for a, b in zip(before, comp.text_encoder.parameters()))
    frozen = make_components()
    before = [p.clone() for p in frozen.text_encoder.parameters()]
    train_sd(frozen, encode_dataset(frozen, random_images, CAPTIONS), TrainConfig(steps=2, batch=4, lr=1e-3),
             tmp_path / "f", progress=False)
    assert all(torch.equal(a, b) for a, b in zip(before, frozen.text_encoder.parameters()))


def test_mixed_precision_and_gradient_checkpointing_run(random_images, tmp_path):
    comp = make_components()
    cfg = TrainConfig(steps=2, batch=2, lr=1e-4, mixed_precision="bf16", gradient_checkpointing=True)
    assert train_sd(comp, encode_dataset(comp, random_images, CAPTIONS), cfg, tmp_path, progress=False)
    assert all(torch.isfinite(p).all() for p in comp.unet.parameters())


def test_an_unknown_prediction_type_is_refused_not_trained_as_epsilon(random_images, tmp_path):
    from genlineage.errors import InputError

    comp = make_components()
    comp.scheduler_config = {**comp.scheduler_config, "prediction_type": "sample"}
    with pytest.raises(InputError, match="prediction_type is 'sample'"):
        train_sd(comp, encode_dataset(comp, random_images, CAPTIONS), TrainConfig(steps=1, batch=2, lr=1e-3),
                 tmp_path / "w", progress=False)


def test_a_finished_run_writes_no_final_checkpoint(random_images, tmp_path, monkeypatch):
    from genlineage.training import sd

    saved = []
    real = sd._Checkpoint.save
    monkeypatch.setattr(sd._Checkpoint, "save", lambda self, m, o, step: (saved.append(step), real(self, m, o, step))[1])
    comp = make_components()
    cfg = TrainConfig(steps=4, batch=2, lr=1e-3, checkpoint_every=2)
    assert train_sd(comp, encode_dataset(comp, random_images, CAPTIONS), cfg, tmp_path / "w", progress=False)
    assert saved == [2], "the periodic checkpoint only: the final step is saved as the model by the caller"
