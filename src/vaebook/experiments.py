"""The named experiments of the book: data set, model and training, in one place.

``python -m vaebook list`` prints them; ``python -m vaebook train NAME`` runs one;
``python -m vaebook reproduce`` trains those marked ``book=True`` and redraws the figures.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from .data import DATASETS, ImageDataset
from .models import ModelConfig
from .train import TrainConfig

FMNIST = (1, 28, 28)


@dataclass(frozen=True)
class Experiment:
    """A reproducible training run.

    Attributes:
        name: the CLI name, e.g. ``fmnist-vae``.
        description: one line for ``list``.
        data: a key of `vaebook.data.DATASETS`.
        model, train: the configs passed to `vaebook.train.train`.
        data_options: keyword arguments for the data loader (e.g. CelebA's ``size``).
        book: whether ``reproduce`` trains it and ships its weights.
    """

    name: str
    description: str
    data: str
    model: ModelConfig
    train: TrainConfig
    data_options: dict[str, Any] = field(default_factory=dict)
    book: bool = True

    def load_data(self, root: str | None = None, download: bool = True) -> tuple[ImageDataset, ImageDataset]:
        """The (train, test) sets this experiment trains and evaluates on."""
        loader = DATASETS[self.data]
        options = dict(self.data_options)
        if self.data in ("fashion-mnist", "frey"):
            options["download"] = download
        return loader("train", root=root, **options), loader("test", root=root, **options)

    def with_epochs(self, epochs: int | None) -> "Experiment":
        return self if epochs is None else replace(self, train=replace(self.train, epochs=epochs))


_CONV = dict(arch="conv", in_shape=FMNIST, channels=(32, 64), likelihood="bernoulli")

EXPERIMENTS: dict[str, Experiment] = {e.name: e for e in [
    Experiment("fmnist-ae", "Conv autoencoder, 16-d code, Bernoulli (BCE) loss", "fashion-mnist",
               ModelConfig(kind="ae", latent_dim=16, **_CONV), TrainConfig(epochs=10)),
    Experiment("fmnist-ae-2d", "Conv autoencoder, 2-d code for plotting the latent space", "fashion-mnist",
               ModelConfig(kind="ae", latent_dim=2, **_CONV), TrainConfig(epochs=10)),
    Experiment("fmnist-vae", "Conv VAE, 16-d latent, Bernoulli decoder, beta = 1", "fashion-mnist",
               ModelConfig(kind="vae", latent_dim=16, **_CONV), TrainConfig(epochs=10)),
    Experiment("fmnist-vae-2d", "Conv VAE, 2-d latent for plotting the latent space and manifold", "fashion-mnist",
               ModelConfig(kind="vae", latent_dim=2, **_CONV), TrainConfig(epochs=10)),
    Experiment("fmnist-mlp-vae", "Reference MLP VAE 784-400-20 (Kingma & Welling; pytorch/examples)",
               "fashion-mnist", ModelConfig(kind="vae", arch="mlp", in_shape=FMNIST, latent_dim=20, hidden=400),
               TrainConfig(epochs=10, batch_size=128, lr=1e-3)),
]}


def get(name: str) -> Experiment:
    """The experiment called ``name``; KeyError lists the known names."""
    try:
        return EXPERIMENTS[name]
    except KeyError:
        raise KeyError(f"unknown experiment {name!r}; known: {', '.join(EXPERIMENTS)}") from None
