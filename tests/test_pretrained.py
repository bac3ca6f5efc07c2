"""The shipped pretrained weights: complete, hash-checked, and as good as their manifest says."""

from pathlib import Path

import pytest
import torch

from vaebook import experiments
from vaebook.checkpoints import PRETRAINED_DIR, load_pretrained, manifest, sha256
from vaebook.data import DEBIAN_FASHION_MNIST, fashion_mnist
from vaebook.evaluate import dataset_loss
from vaebook.models import FAMILIES, ModelConfig

SHIPPED = manifest()
BOOK = [e.name for e in experiments.EXPERIMENTS.values() if e.book]


def test_every_book_experiment_has_shipped_weights():
    assert sorted(SHIPPED) == sorted(BOOK)


@pytest.mark.parametrize("name", BOOK)
def test_manifest_entry_is_complete_and_matches_the_file(name):
    entry = SHIPPED[name]
    for key in ("experiment", "config", "sha256", "test_metrics", "epochs", "device", "wall_time_s", "torch_version",
                "history"):
        assert key in entry, key
    assert entry["experiment"] == name
    assert sha256(PRETRAINED_DIR / entry["file"]) == entry["sha256"]
    assert ModelConfig.from_dict(entry["config"]) == experiments.get(name).model
    assert entry["epochs"] == experiments.get(name).train.epochs == len(entry["history"])
    assert Path(entry["file"]).suffix == ".safetensors"
    model = load_pretrained(name)  # hash-checked, no pickle
    if entry["config"]["kind"] in FAMILIES:  # a family draws its own samples (a diffusion model has no z)
        images = model.sample(3, generator=torch.Generator().manual_seed(0))
    else:
        images = model.decode(torch.zeros(3, model.latent_dim))
    assert images.shape == (3, *experiments.get(name).model.in_shape) and torch.isfinite(images).all()


# Re-evaluating all 10,000 test images is a few seconds per conv model on 2 cores: check one model of each kind.
@pytest.mark.skipif(not DEBIAN_FASHION_MNIST.exists(), reason="needs the Fashion-MNIST Debian package")
@pytest.mark.parametrize("name", ["fmnist-ae", "fmnist-vae", "fmnist-mlp-vae", "fmnist-linear-ae", "fmnist-cvae",
                                  "fmnist-hvae"])
def test_shipped_model_reproduces_its_recorded_test_metrics(name):
    model = load_pretrained(name)
    got = dataset_loss(model, fashion_mnist("test", download=False), beta=experiments.get(name).train.beta)
    want = SHIPPED[name]["test_metrics"]
    for key in ("loss", "recon", "kl", "mse"):
        assert got[key] == pytest.approx(want[key], rel=1e-3, abs=1e-4), key


@pytest.mark.parametrize("name", ["celeba-vae", "frey-vae-2d"])
def test_shipped_face_model_reproduces_its_recorded_test_metrics(name):
    """Needs the face data (the development copies beside the checkout, or $VAEBOOK_DATA)."""
    from vaebook.errors import DataNotFoundError

    exp = experiments.get(name)
    try:
        test = exp.load_split("test", download=False)
    except DataNotFoundError as e:
        pytest.skip(f"{exp.data} data not found: {str(e).splitlines()[0]}")
    got = dataset_loss(load_pretrained(name), test, beta=exp.train.beta)
    want = SHIPPED[name]["test_metrics"]
    for key in ("loss", "recon", "kl", "mse"):
        assert got[key] == pytest.approx(want[key], rel=1e-3, abs=1e-4), key
