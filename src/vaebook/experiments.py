"""The named experiments of the book: data set, model and training, in one place.

``python -m vaebook list`` prints them; ``python -m vaebook train NAME`` runs one;
``python -m vaebook reproduce`` trains those marked ``book=True`` and redraws the figures.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable

import torch

from .data import FASHION_MNIST_CLASSES, ImageDataset, class_condition, fashion_mnist
from .evaluate import FACE_ATTRIBUTES
from .face_data import celeba, frey_faces
from .models import ModelConfig
from .train import TrainConfig

FMNIST = (1, 28, 28)
FACES = (3, 64, 64)  # CelebA, centre-cropped and resized (vaebook.face_data.celeba's default)
FULL_CELEBA = (3, 218, 178)  # CelebA's aligned images at their original size
FREY = (1, 28, 20)
QUANTISATION_SIGMA = 1 / (255 * 12 ** 0.5)  # the sd of rounding to 256 levels: a floor for a learned sigma
BETAS = (0.1, 0.5, 1, 4, 16)  # the beta-VAE sweep; beta = 1 is fmnist-mlp-vae


DATASETS: dict[str, Callable[..., ImageDataset]] = {  # the data sets experiments name, and their loaders
    "fashion-mnist": fashion_mnist,
    "celeba": celeba,
    "frey": frey_faces,
}


@dataclass(frozen=True)
class Experiment:
    """A reproducible training run.

    Attributes:
        name: the CLI name, e.g. ``fmnist-vae``.
        description: one line for ``list``.
        data: a key of `DATASETS`.
        model, train: the configs passed to `vaebook.train.train`.
        data_options: keyword arguments for the data loader (e.g. CelebA's ``size``).
        book: whether ``reproduce`` trains it and ships its weights.
        exclude_labels: classes left out of the training set (the test set keeps
            them), e.g. to detect a class never seen as an anomaly.
        eval_k, eval_images: importance samples per image and test images for the
            IWAE estimate of ``python -m vaebook evaluate`` (smaller for big decoders).
    """

    name: str
    description: str
    data: str
    model: ModelConfig
    train: TrainConfig
    data_options: dict[str, Any] = field(default_factory=dict)
    book: bool = True
    exclude_labels: tuple[int, ...] = ()
    eval_k: int = 2000
    eval_images: int = 500

    def load_split(self, split: str, root: str | None = None, download: bool = True,
                   progress: bool = True) -> ImageDataset:
        """One split (``"train"`` or ``"test"``) of this experiment's data set, as the model expects it
        (``progress``: CelebA's bar while it decodes JPEGs the first time)."""
        options = dict(self.data_options)
        if self.data in ("fashion-mnist", "frey"):
            options["download"] = download
        if self.data == "celeba":
            options["progress"] = progress
        return DATASETS[self.data](split, root=root, **options)

    def load_data(self, root: str | None = None, download: bool = True,
                  progress: bool = True) -> tuple[ImageDataset, ImageDataset]:
        """The (train, test) sets this experiment trains and evaluates on."""
        train = self.load_split("train", root, download, progress)
        test = self.load_split("test", root, download, progress)
        if self.exclude_labels:
            keep = ~torch.isin(train.labels, torch.tensor(self.exclude_labels))
            train = train.subset(keep.nonzero().squeeze(1))
        return train, test

    def with_epochs(self, epochs: int | None) -> "Experiment":
        return self if epochs is None else replace(self, train=replace(self.train, epochs=epochs))


_CONV = dict(arch="conv", in_shape=FMNIST, channels=(32, 64), likelihood="bernoulli")
_FACES = dict(arch="conv", in_shape=FACES, channels=(32, 64, 128, 256), likelihood="gaussian")
_MLP = dict(kind="vae", arch="mlp", in_shape=FMNIST, hidden=400)  # pytorch/examples' MLP VAE (Kingma & Welling's model; the paper used 500 tanh units)
_CLASSIC = dict(epochs=10, batch_size=128, lr=1e-3)  # and its training (pytorch/examples)

EXPERIMENTS: dict[str, Experiment] = {e.name: e for e in [
    Experiment("fmnist-ae", "Conv autoencoder, 16-d code, Bernoulli (BCE) loss", "fashion-mnist",
               ModelConfig(kind="ae", latent_dim=16, **_CONV), TrainConfig(epochs=10)),
    Experiment("fmnist-ae-2d", "Conv autoencoder, 2-d code for plotting the latent space", "fashion-mnist",
               ModelConfig(kind="ae", latent_dim=2, **_CONV), TrainConfig(epochs=5)),
    Experiment("fmnist-vae", "Conv VAE, 16-d latent, Bernoulli decoder, beta = 1", "fashion-mnist",
               ModelConfig(kind="vae", latent_dim=16, **_CONV), TrainConfig(epochs=10)),
    Experiment("fmnist-vae-2d", "Conv VAE, 2-d latent for plotting the latent space and manifold", "fashion-mnist",
               ModelConfig(kind="vae", latent_dim=2, **_CONV), TrainConfig(epochs=5)),
    Experiment("fmnist-mlp-vae", "Reference MLP VAE 784-400-20 (pytorch/examples vae/main.py, after Kingma & Welling)",
               "fashion-mnist", ModelConfig(latent_dim=20, **_MLP), TrainConfig(**_CLASSIC)),
    Experiment("fmnist-linear-ae", "Linear autoencoder 784-16-784, Gaussian (squared error) loss: PCA's subspace",
               "fashion-mnist", ModelConfig(kind="ae", arch="linear", in_shape=FMNIST, latent_dim=16,
                                            likelihood="gaussian", sigma=1.0),
               TrainConfig(epochs=20, lr=1e-3)),
    Experiment("fmnist-dae", "Denoising conv autoencoder: inputs with N(0, 0.3^2) noise, clean targets",
               "fashion-mnist", ModelConfig(kind="ae", latent_dim=16, **_CONV), TrainConfig(epochs=5, noise_std=0.3)),
    Experiment("fmnist-ae-no-bags", "Conv autoencoder trained without the Bag class, for anomaly detection",
               "fashion-mnist", ModelConfig(kind="ae", latent_dim=16, **_CONV), TrainConfig(epochs=5),
               exclude_labels=(8,)),
    Experiment("celeba-ae", "Conv autoencoder on 64x64 RGB CelebA faces, 128-d code, Gaussian (squared error) loss",
               "celeba", ModelConfig(kind="ae", latent_dim=128, sigma=0.1, **_FACES),
               TrainConfig(epochs=20, batch_size=64), eval_k=100, eval_images=100),
    Experiment("celeba-vae", "Conv VAE on 64x64 RGB CelebA faces, 128-d latent, Gaussian decoder with sigma = 0.5",
               "celeba", ModelConfig(kind="vae", latent_dim=128, sigma=0.5, **_FACES),
               TrainConfig(epochs=20, batch_size=64), eval_k=100, eval_images=100),
    Experiment("celeba-vae-sigma0.1", "The same VAE with sigma = 0.1: sharp reconstructions, samples that are not faces",
               "celeba", ModelConfig(kind="vae", latent_dim=128, sigma=0.1, **_FACES),
               TrainConfig(epochs=20, batch_size=64), eval_k=100, eval_images=100),
    Experiment("celeba-vae-learned-sigma", "The same VAE with the decoder's sigma learned (one for all values, started at 0.5)",
               "celeba", ModelConfig(kind="vae", latent_dim=128, sigma=0.5, decoder_sigma="shared", **_FACES),
               TrainConfig(epochs=20, batch_size=64), eval_k=100, eval_images=100),
    Experiment("celeba-fullsize-ae", "A convolutional autoencoder as it is often written: full-size 218x178 RGB, channels 16-32-64-128-256, MSE, "
               "Adam, 10 epochs (needs the full CelebA and a GPU)", "celeba",
               ModelConfig(kind="ae", arch="conv", in_shape=FULL_CELEBA, latent_dim=128,
                           channels=(16, 32, 64, 128, 256), likelihood="gaussian", sigma=0.5 ** 0.5),
               TrainConfig(epochs=10, batch_size=64), data_options=dict(size=(218, 178), crop=False), book=False),
    Experiment("frey-vae-2d", "MLP VAE 560-200-2 on the Frey faces, Gaussian decoder: the learned 2-D face manifold",
               "frey", ModelConfig(kind="vae", arch="mlp", in_shape=FREY, latent_dim=2, hidden=200,
                                   likelihood="gaussian", sigma=0.3),
               TrainConfig(epochs=300, batch_size=100, lr=1e-3)),
    Experiment("fmnist-mlp-vae-pixel-sigma", "MLP VAE with a Gaussian decoder that outputs a sigma per pixel, "
               "floored at 8-bit rounding noise", "fashion-mnist",
               ModelConfig(latent_dim=20, **{**_MLP, "likelihood": "gaussian"}, decoder_sigma="pixel",
                           min_sigma=QUANTISATION_SIGMA), TrainConfig(**_CLASSIC)),
    Experiment("fmnist-mlp-vae-z64", "MLP VAE with a 64-d latent: more dimensions than the data needs collapse",
               "fashion-mnist", ModelConfig(latent_dim=64, **_MLP), TrainConfig(**_CLASSIC)),
    Experiment("fmnist-mlp-vae-z64-warmup", "The 64-d MLP VAE with KL warm-up over 5 epochs",
               "fashion-mnist", ModelConfig(latent_dim=64, **_MLP), TrainConfig(**_CLASSIC, kl_warmup_epochs=5)),
    Experiment("fmnist-mlp-vae-z64-freebits", "The 64-d MLP VAE with free bits: 0.25 nats per dimension uncharged",
               "fashion-mnist", ModelConfig(latent_dim=64, **_MLP), TrainConfig(**_CLASSIC, free_bits=0.25)),
    Experiment("fmnist-cvae", "Conditional MLP VAE 784-400-20 given the class (one-hot y into encoder and decoder)",
               "fashion-mnist", ModelConfig(latent_dim=20, **{**_MLP, "kind": "cvae"},
                                            condition=class_condition(FASHION_MNIST_CLASSES)),
               TrainConfig(**_CLASSIC)),
    Experiment("celeba-cvae", "Conditional conv VAE on 64x64 CelebA faces given four attributes, sigma = 0.5",
               "celeba", ModelConfig(kind="cvae", latent_dim=128, sigma=0.5, condition=FACE_ATTRIBUTES, **_FACES),
               TrainConfig(epochs=20, batch_size=64), eval_k=100, eval_images=100),
    Experiment("fmnist-hvae", "Two-level MLP VAE (top-down inference), z1 20-d, z2 10-d, as many weights as "
               "fmnist-mlp-vae", "fashion-mnist",
               ModelConfig(**{**_MLP, "kind": "hvae", "hidden": 350}, latent_dim=20, top_latent_dim=10),
               TrainConfig(**_CLASSIC)),
    Experiment("fmnist-hvae-bottom-up", "The two-level MLP VAE with bottom-up inference q(z1|x) q(z2|z1), "
               "as many weights", "fashion-mnist",
               ModelConfig(**{**_MLP, "kind": "hvae", "hidden": 390}, latent_dim=20, top_latent_dim=10,
                           hierarchy="bottom-up"), TrainConfig(**_CLASSIC)),
    Experiment("fmnist-vqvae-k8", "VQ-VAE, 7x7 grid of 16-d codes from a codebook of K = 8, PixelCNN prior",
               "fashion-mnist", ModelConfig(kind="vqvae", latent_dim=16, codebook_size=8, **_CONV),
               TrainConfig(epochs=3)),
    Experiment("fmnist-vqvae-k64", "VQ-VAE, 7x7 grid of 16-d codes from a codebook of K = 64, PixelCNN prior",
               "fashion-mnist", ModelConfig(kind="vqvae", latent_dim=16, codebook_size=64, **_CONV),
               TrainConfig(epochs=3)),
    Experiment("fmnist-vqvae-k512", "VQ-VAE, 7x7 grid of 16-d codes from a codebook of K = 512, PixelCNN prior",
               "fashion-mnist", ModelConfig(kind="vqvae", latent_dim=16, codebook_size=512, **_CONV),
               TrainConfig(epochs=3)),
    # T = 100 and a U-Net without full-size blocks: about 0.4 s of CPU per step of 128 (one core), so an epoch
    # takes 2-3 minutes and 1,000 samples (T passes each) under 2 minutes. latent_dim is the width of the time
    # embedding (the latents are x_1..x_T).
    Experiment("fmnist-diffusion", "Denoising diffusion model (T = 100, cosine schedule, small U-Net), scored as a "
               "hierarchical VAE with a fixed encoder", "fashion-mnist",
               ModelConfig(kind="diffusion", latent_dim=64, steps=100, **_CONV), TrainConfig(epochs=6)),
] + [
    Experiment(f"fmnist-mlp-vae-beta{beta:g}", f"Reference MLP VAE with beta = {beta:g} (the beta-VAE sweep)",
               "fashion-mnist", ModelConfig(latent_dim=20, **_MLP), TrainConfig(**_CLASSIC, beta=beta))
    for beta in BETAS if beta != 1
]}


def get(name: str) -> Experiment:
    """The experiment called ``name``; KeyError lists the known names."""
    try:
        return EXPERIMENTS[name]
    except KeyError:
        raise KeyError(f"unknown experiment {name!r}; known: {', '.join(EXPERIMENTS)}") from None
