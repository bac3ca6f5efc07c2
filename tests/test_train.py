"""The training loop: it learns, it is deterministic, it resumes exactly, it stops on NaN."""

import json

import pytest
import torch

import vaebook.train as train_module
from vaebook.checkpoints import load_checkpoint_info, load_model, sha256
from vaebook.data import ImageDataset
from vaebook.errors import DeviceError, TrainingDivergedError
from vaebook.evaluate import dataset_loss
from vaebook.models import ModelConfig
from vaebook.train import TrainConfig, pick_device, shuffled_batches, train

CFG = ModelConfig(kind="vae", arch="mlp", in_shape=(1, 8, 8), latent_dim=2, hidden=32)
TCFG = TrainConfig(epochs=3, batch_size=32, lr=3e-3, seed=7, log_every=2)


def _blobs(n: int, seed: int) -> ImageDataset:
    """Images with structure to learn: a bright square at one of four positions, plus noise."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 8, 8, generator=gen) * 0.2
    pos = torch.randint(0, 4, (n,), generator=gen)
    for i, p in enumerate(pos.tolist()):
        r, c = divmod(p, 2)
        x[i, 0, r * 4:r * 4 + 4, c * 4:c * 4 + 4] += 0.8
    return ImageDataset((x * 255).round().to(torch.uint8), labels=pos)


TRAIN, TEST = _blobs(256, 0), _blobs(64, 1)


def _weights(run_dir):
    return load_model(run_dir).state_dict()


def test_training_reduces_the_loss_and_writes_history(tmp_path):
    result = train(CFG, TCFG, TRAIN, TEST, tmp_path, device="cpu", progress=False)
    h = result.history
    assert [e["epoch"] for e in h] == [1, 2, 3]
    assert h[-1]["test_loss"] < h[0]["test_loss"] and h[-1]["train_loss"] < h[0]["train_loss"]
    assert json.loads((tmp_path / "history.json").read_text()) == h
    meta = json.loads((tmp_path / "model.json").read_text())
    assert meta["epochs"] == 3 and meta["device"] == "cpu" and meta["torch_version"] == torch.__version__
    # the recorded test metrics are what evaluating the saved model gives
    again = dataset_loss(load_model(tmp_path), TEST, beta=TCFG.beta)
    for key in ("loss", "recon", "kl", "mse"):
        assert meta["test_metrics"][key] == pytest.approx(again[key], rel=1e-6)


def test_same_seed_same_weights(tmp_path):
    train(CFG, TCFG, TRAIN, TEST, tmp_path / "a", device="cpu", progress=False)
    train(CFG, TCFG, TRAIN, TEST, tmp_path / "b", device="cpu", progress=False)
    a, b = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_after_interruption_gives_identical_weights(tmp_path, monkeypatch):
    train(CFG, TCFG, TRAIN, TEST, tmp_path / "straight", device="cpu", progress=False)

    calls = {"n": 0}
    real = train_module.dataset_loss

    def interrupt_in_epoch_two(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:  # end of epoch 2, before its checkpoint
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(train_module, "dataset_loss", interrupt_in_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        train(CFG, TCFG, TRAIN, TEST, tmp_path / "resumed", device="cpu", progress=False)
    assert load_checkpoint_info(tmp_path / "resumed")["epoch"] == 1
    monkeypatch.setattr(train_module, "dataset_loss", real)
    result = train(CFG, TCFG, TRAIN, TEST, tmp_path / "resumed", device="cpu", progress=False)
    assert len(result.history) == 3
    a, b = _weights(tmp_path / "straight"), _weights(tmp_path / "resumed")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_more_epochs_continue_a_finished_run(tmp_path):
    from dataclasses import replace

    train(CFG, replace(TCFG, epochs=1), TRAIN, TEST, tmp_path / "x", device="cpu", progress=False)
    train(CFG, TCFG, TRAIN, TEST, tmp_path / "x", device="cpu", progress=False)
    train(CFG, TCFG, TRAIN, TEST, tmp_path / "y", device="cpu", progress=False)
    a, b = _weights(tmp_path / "x"), _weights(tmp_path / "y")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_checkpoint_of_another_config_is_refused(tmp_path):
    from vaebook.errors import CheckpointError

    train(CFG, TrainConfig(epochs=1, batch_size=32), TRAIN, TEST, tmp_path, device="cpu", progress=False)
    with pytest.raises(CheckpointError, match="different configuration"):
        train(CFG, TrainConfig(epochs=1, batch_size=64), TRAIN, TEST, tmp_path, device="cpu", progress=False)


def test_nan_loss_stops_training_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    real = train_module.loss_terms
    steps = {"n": 0}
    per_epoch = -(-len(TRAIN) // TCFG.batch_size)

    def nan_in_epoch_two(*args, **kwargs):
        steps["n"] += 1
        terms = real(*args, **kwargs)
        if steps["n"] > per_epoch + 1:
            terms["loss"] = terms["loss"] * float("nan")
        return terms

    monkeypatch.setattr(train_module, "loss_terms", nan_in_epoch_two)
    with pytest.raises(TrainingDivergedError) as err:
        train(CFG, TCFG, TRAIN, TEST, tmp_path, device="cpu", progress=False)
    message = str(err.value)
    assert "nan" in message and "epoch 2" in message and "epoch 1" in message and "learning rate" in message
    info = load_checkpoint_info(tmp_path)
    assert info["epoch"] == 1
    assert sha256(tmp_path / info["tensors"]) == info["sha256"]
    assert not (tmp_path / "model.json").exists()


def test_shuffles_depend_only_on_seed_and_epoch():
    a = torch.cat(list(shuffled_batches(100, 32, seed=1, epoch=3)))
    b = torch.cat(list(shuffled_batches(100, 32, seed=1, epoch=3)))
    c = torch.cat(list(shuffled_batches(100, 32, seed=1, epoch=4)))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(a.sort().values, torch.arange(100))


def test_pick_device():
    assert pick_device("cpu").type == "cpu"
    assert pick_device(None).type in ("cpu", "cuda", "mps")
    with pytest.raises(DeviceError):
        pick_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="CUDA"):
            pick_device("cuda")


def test_wrong_image_shape_is_refused(tmp_path):
    with pytest.raises(ValueError, match="shape"):
        train(ModelConfig(kind="ae", arch="mlp", in_shape=(1, 28, 28)), TCFG, TRAIN, TEST, tmp_path, progress=False)


def test_kl_warmup_scales_the_kl_term_and_ends_at_beta(tmp_path):
    data = _blobs(256, 0)
    warm = train(CFG, TrainConfig(epochs=2, batch_size=32, lr=3e-3, seed=7, kl_warmup_epochs=2), data,
                 _blobs(64, 1), tmp_path / "warm", device="cpu", progress=False).history
    plain = train(CFG, TrainConfig(epochs=1, batch_size=32, lr=3e-3, seed=7), data, _blobs(64, 1),
                  tmp_path / "plain", device="cpu", progress=False).history
    # without warm-up the reported loss is recon + kl; with it, the KL weight averages (1 + ... + 8) / 16 in epoch 1
    e = plain[0]
    assert e["train_loss"] == pytest.approx(e["train_recon"] + e["train_kl"], rel=1e-5)
    w = warm[0]
    assert w["train_loss"] < w["train_recon"] + 0.6 * w["train_kl"]
    assert w["train_loss"] > w["train_recon"] + 0.2 * w["train_kl"]
    # the test metrics are always at beta = 1 (the ELBO), whatever the schedule
    assert w["test_loss"] == pytest.approx(w["test_recon"] + w["test_kl"], rel=1e-5)


def test_free_bits_keep_latent_dimensions_from_collapsing(tmp_path):
    """At beta = 4 the KL term pushes every posterior onto the prior; free bits of 1 nat per dimension
    leave the first nat of each dimension uncharged, so the encoder keeps using them."""
    from vaebook.evaluate import kl_per_dimension

    cfg = ModelConfig(kind="vae", arch="mlp", in_shape=(1, 8, 8), latent_dim=8, hidden=32)
    data, test = _blobs(512, 0), _blobs(128, 1)
    kl = {fb: kl_per_dimension(train(cfg, TrainConfig(epochs=6, batch_size=32, lr=3e-3, seed=7, beta=4.0,
                                                       free_bits=fb), data, test, tmp_path / f"fb{fb}",
                                     device="cpu", progress=False).model, test) for fb in (0.0, 1.0)}
    assert kl[0.0].sum() < 0.3  # collapsed: a few hundredths of a nat per dimension
    assert (kl[1.0] > 0.5).all()  # every dimension carries information
