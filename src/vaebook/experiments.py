"""The named experiments of the book: data set, model and training, in one place.

``python -m vaebook list`` prints them; ``python -m vaebook train NAME`` runs one;
``python -m vaebook reproduce`` trains those marked ``book=True`` and redraws the figures.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import torch

from .data import DATASETS, ImageDataset
from .models import ModelConfig
from .train import TrainConfig

FMNIST = (1, 28, 28)
BETAS = (0.1, 0.5, 1, 4, 16)  # the beta-VAE sweep; beta = 1 is fmnist-mlp-vae


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
        exclude_labels: classes left out of the training set (the test set keeps
            them), e.g. to detect a class never seen as an anomaly.
    """

    name: str
    description: str
    data: str
    model: ModelConfig
    train: TrainConfig
    data_options: dict[str, Any] = field(default_factory=dict)
    book: bool = True
    exclude_labels: tuple[int, ...] = ()

    def load_data(self, root: str | None = None, download: bool = True) -> tuple[ImageDataset, ImageDataset]:
        """The (train, test) sets this experiment trains and evaluates on."""
        loader = DATASETS[self.data]
        options = dict(self.data_options)
        if self.data in ("fashion-mnist", "frey"):
            options["download"] = download
        train, test = loader("train", root=root, **options), loader("test", root=root, **options)
        if self.exclude_labels:
            keep = ~torch.isin(train.labels, torch.tensor(self.exclude_labels))
            train = train.subset(keep.nonzero().squeeze(1))
        return train, test

    def with_epochs(self, epochs: int | None) -> "Experiment":
        return self if epochs is None else replace(self, train=replace(self.train, epochs=epochs))


_CONV = dict(arch="conv", in_shape=FMNIST, channels=(32, 64), likelihood="bernoulli")

EXPERIMENTS: dict[str, Experiment] = {e.name: e for e in [
    Experiment("fmnist-ae", "Conv autoencoder, 16-d code, Bernoulli (BCE) loss", "fashion-mnist",
               ModelConfig(kind="ae", latent_dim=16, **_CONV), TrainConfig(epochs=10)),
    Experiment("fmnist-ae-2d", "Conv autoencoder, 2-d code for plotting the latent space", "fashion-mnist",
               ModelConfig(kind="ae", latent_dim=2, **_CONV), TrainConfig(epochs=5)),
    Experiment("fmnist-vae", "Conv VAE, 16-d latent, Bernoulli decoder, beta = 1", "fashion-mnist",
               ModelConfig(kind="vae", latent_dim=16, **_CONV), TrainConfig(epochs=10)),
    Experiment("fmnist-vae-2d", "Conv VAE, 2-d latent for plotting the latent space and manifold", "fashion-mnist",
               ModelConfig(kind="vae", latent_dim=2, **_CONV), TrainConfig(epochs=5)),
    Experiment("fmnist-mlp-vae", "Reference MLP VAE 784-400-20 (Kingma & Welling; pytorch/examples)",
               "fashion-mnist", ModelConfig(kind="vae", arch="mlp", in_shape=FMNIST, latent_dim=20, hidden=400),
               TrainConfig(epochs=10, batch_size=128, lr=1e-3)),
    Experiment("fmnist-linear-ae", "Linear autoencoder 784-16-784, Gaussian (squared error) loss: PCA's subspace",
               "fashion-mnist", ModelConfig(kind="ae", arch="linear", in_shape=FMNIST, latent_dim=16,
                                            likelihood="gaussian", sigma=1.0),
               TrainConfig(epochs=20, lr=1e-3)),
    Experiment("fmnist-dae", "Denoising conv autoencoder: inputs with N(0, 0.3^2) noise, clean targets",
               "fashion-mnist", ModelConfig(kind="ae", latent_dim=16, **_CONV), TrainConfig(epochs=5, noise_std=0.3)),
    Experiment("fmnist-ae-no-bags", "Conv autoencoder trained without the Bag class, for anomaly detection",
               "fashion-mnist", ModelConfig(kind="ae", latent_dim=16, **_CONV), TrainConfig(epochs=5),
               exclude_labels=(8,)),
] + [
    Experiment(f"fmnist-mlp-vae-beta{beta:g}", f"Reference MLP VAE with beta = {beta:g} (the beta-VAE sweep)",
               "fashion-mnist", ModelConfig(kind="vae", arch="mlp", in_shape=FMNIST, latent_dim=20, hidden=400),
               TrainConfig(epochs=10, batch_size=128, lr=1e-3, beta=beta))
    for beta in BETAS if beta != 1
]}


def get(name: str) -> Experiment:
    """The experiment called ``name``; KeyError lists the known names."""
    try:
        return EXPERIMENTS[name]
    except KeyError:
        raise KeyError(f"unknown experiment {name!r}; known: {', '.join(EXPERIMENTS)}") from None
