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


def test_the_checkpoint_keeps_the_fp16_loss_scale(tmp_path):
    """fp16 training scales the loss (GradScaler) and lowers the scale after each overflow; a resumed
    run that started again at 65536 would skip other steps than one that never stopped."""
    from genlineage.training.sd import _Checkpoint

    cfg = TrainConfig(steps=6, batch=4, lr=1e-3, mixed_precision="fp16")
    module = torch.nn.Linear(2, 2)
    scaler = torch.amp.GradScaler("cpu", init_scale=65536.0)
    scaler.scale(torch.ones(()))  # the scale is made at first use
    scaler.update(new_scale=1024.0)  # where a run lands after six overflows
    _Checkpoint(tmp_path, cfg).save({"m": module}, torch.optim.AdamW(module.parameters()), 3, scaler)
    resumed = torch.amp.GradScaler("cpu", init_scale=65536.0)
    step = _Checkpoint(tmp_path, cfg).load({"m": torch.nn.Linear(2, 2)}, torch.optim.AdamW(module.parameters()), resumed)
    assert step == 3 and resumed.get_scale() == 1024.0


def test_an_interrupted_fp16_run_resumes_to_the_same_weights(random_images, tmp_path):
    cfg = TrainConfig(steps=6, batch=4, lr=1e-3, seed=3, checkpoint_every=3, mixed_precision="fp16")
    straight = make_components()
    assert train_sd(straight, encode_dataset(straight, random_images, CAPTIONS), cfg, tmp_path / "a", progress=False)
    first = make_components()
    assert not train_sd(first, encode_dataset(first, random_images, CAPTIONS), cfg, tmp_path / "b", stop_after=3,
                        progress=False)
    fresh = make_components()
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
    monkeypatch.setattr(sd._Checkpoint, "save",
                        lambda self, m, o, step, scaler=None: (saved.append(step), real(self, m, o, step, scaler))[1])
    comp = make_components()
    cfg = TrainConfig(steps=4, batch=2, lr=1e-3, checkpoint_every=2)
    assert train_sd(comp, encode_dataset(comp, random_images, CAPTIONS), cfg, tmp_path / "w", progress=False)
    assert saved == [2], "the periodic checkpoint only: the final step is saved as the model by the caller"


def test_the_frozen_parts_encode_in_half_precision_without_touching_the_pipeline(random_images):
    """``frozen_dtype`` runs the VAE on a half-precision copy: the moments come back fp32 and close
    to the fp32 ones, and the pipeline's own VAE keeps its fp32 weights (it is what gets saved)."""
    comp = make_components()
    before = [p.clone() for p in comp.vae.parameters()]
    full = encode_dataset(comp, random_images, CAPTIONS, batch=3)
    half = encode_dataset(comp, random_images, CAPTIONS, batch=3, dtype="bfloat16")
    assert half.mean.dtype == torch.float32 and all(p.dtype == torch.float32 for p in comp.vae.parameters())
    assert all(torch.equal(a, b) for a, b in zip(before, comp.vae.parameters()))
    assert not torch.equal(full.mean, half.mean), "the encoding ran in bfloat16"
    assert torch.allclose(full.mean, half.mean, atol=0.1), (full.mean - half.mean).abs().max()


def test_keys_of_models_trained_before_a_setting_existed_do_not_move():
    """A setting added later is keyed only away from the value that trains as before, so caches survive."""
    import dataclasses

    from genlineage.io import stable_hash

    cfg = TrainConfig(steps=6, batch=4, lr=1e-3)
    settings_before = {k: v for k, v in dataclasses.asdict(cfg).items()
                       if k not in ("checkpoint_every", "frozen_dtype", "encode_batch", "finetune", "lora_rank",
                                    "lora_alpha", "lora_targets")}
    assert cfg.key() == stable_hash(settings_before), "the key as it was computed before the later settings"
    assert cfg.key() != TrainConfig(steps=6, batch=4, lr=1e-3, frozen_dtype="float16").key()
    assert cfg.key() != TrainConfig(steps=6, batch=4, lr=1e-3, encode_batch=8).key()
    assert cfg.key() != TrainConfig(steps=6, batch=4, lr=1e-3, finetune="lora").key()
