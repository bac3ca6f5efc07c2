"""The build of the book: one table of every file it shows, and the jobs that make them.

`ARTEFACTS` lists every figure (``images/*.png``) and every file of numbers
(``results/*.json``) that a chapter reads: the chapters that show it, the function
that makes it, the shipped models and the data set it needs. Find a figure of the
book in this table and you have the function that draws it.

`build_artefacts` (``python -m vaebook figures``) makes every row from the shipped
weights: a loop over the table. The jobs that train and score the models, and
``reproduce``, which runs them all, are in `vaebook.jobs`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Sequence

import matplotlib.pyplot as plt
import torch

from . import experiments, plots, priors
from .checkpoints import load_pretrained, manifest, write_json
from .data import ImageDataset, fashion_mnist, frey_faces
from .diffusion import diffusion_numbers
from .errors import CheckpointError, DataNotFoundError
from .evaluate import celeba_numbers, reconstruction_errors
from .models import LatentModel
from .speed import pick_device

RESULTS = "results"  # where the JSON files of numbers go, apart from the images


class Book:
    """What the table's rows are made from: shipped models (each loaded when a row first needs it, so a damaged
    weights file costs only its own rows) and the data sets (each loaded once)."""

    def __init__(self, weights: str | Path | None, data_root: str | Path | None, device: torch.device,
                 download: bool) -> None:
        self.weights, self.data_root, self.device, self.download = weights, data_root, device, download
        self.loaded: dict[str, LatentModel] = {}

    def model(self, name: str) -> LatentModel:
        if name not in self.loaded:
            self.loaded[name] = load_pretrained(name, device=self.device, folder=self.weights)
        return self.loaded[name]

    def models(self, labels: dict[str, str]) -> dict[str, LatentModel]:
        """``{label: model}`` from ``{label: shipped name}``."""
        return {label: self.model(name) for label, name in labels.items()}

    def history(self, *names: str) -> dict[str, list[dict[str, float]]]:
        return {n: self.manifest[n]["history"] for n in names}

    @cached_property
    def manifest(self) -> dict[str, dict[str, Any]]:
        return manifest(self.weights)

    @cached_property
    def fmnist_test(self) -> ImageDataset:
        return fashion_mnist("test", root=self.data_root, download=self.download)

    @cached_property
    def fmnist_train(self) -> ImageDataset:
        return fashion_mnist("train", root=self.data_root, download=self.download)

    @cached_property
    def frey_test(self) -> ImageDataset:
        return frey_faces("test", root=self.data_root, download=self.download)

    @cached_property
    def celeba(self) -> tuple[ImageDataset, ImageDataset]:
        return experiments.get("celeba-vae").load_data(self.data_root, download=self.download)

    def data(self, name: str | None) -> None:
        """Load the data set a row needs (raises `DataNotFoundError` if it is missing)."""
        {"fashion-mnist": lambda: self.fmnist_test, "frey": lambda: self.frey_test, "celeba": lambda: self.celeba,
         None: lambda: None}[name]()


@dataclass(frozen=True)
class Artefact:
    """One file of the book: where it goes, who shows it, what makes it and from what."""

    file: str  # relative to the repository: images/NAME.png or results/NAME.json
    chapters: tuple[str, ...]  # the chapter files that show it
    make: Callable[[Book, Path], Any]  # draws or computes it into the path; returns a Figure or None
    models: tuple[str, ...] = ()  # the shipped models it needs
    data: str | None = None  # the data set it needs: "fashion-mnist", "frey", "celeba", or None


def _anomaly(b: Book, p: Path):
    errors = reconstruction_errors(b.model("fmnist-ae-no-bags"), b.fmnist_test)
    left_out = torch.tensor(experiments.get("fmnist-ae-no-bags").exclude_labels)  # the Bag class
    seen = ~torch.isin(b.fmnist_test.labels, left_out)
    return plots.anomaly_figure(errors[seen], errors[~seen], labels=("the nine classes seen in training",
                                                                     "Bag, never seen"), path=p)


def _betas(b: Book, betas) -> dict[str, LatentModel]:
    return {f"beta = {x:g}": b.model("fmnist-mlp-vae" if x == 1 else f"fmnist-mlp-vae-beta{x:g}") for x in betas}


_BETA_NAMES = tuple("fmnist-mlp-vae" if x == 1 else f"fmnist-mlp-vae-beta{x:g}" for x in experiments.BETAS)
_FM, _FR, _CE = "fashion-mnist", "frey", "celeba"
_AE_VAE = {"autoencoder": "fmnist-ae", "VAE": "fmnist-vae"}
_CH9, _CH10, _CH11 = "09-conditional-vaes.qmd", "10-discrete-latents.qmd", "11-hierarchies-and-diffusion.qmd"

ARTEFACTS: tuple[Artefact, ...] = (
    # figures drawn from closed forms and small computations: no model, no data
    Artefact("images/autoencoder-diagram.png", ("02-autoencoders.qmd",),
             lambda b, p: plots.autoencoder_diagram_figure(path=p)),
    Artefact("images/vae-diagram.png", ("05-reparameterisation.qmd",), lambda b, p: plots.vae_diagram_figure(path=p)),
    Artefact("images/transposed-convolution.png", ("02-autoencoders.qmd",),
             lambda b, p: plots.transposed_convolution_figure(path=p)),
    Artefact("images/mse-vs-bce.png", ("02-autoencoders.qmd",), lambda b, p: plots.penalty_figure(path=p)),
    Artefact("images/kl-asymmetry.png", ("04-latent-variable-models.qmd",),
             lambda b, p: plots.kl_asymmetry_figure(path=p)),
    Artefact("images/inverse-transform.png", ("appendix-maths.qmd",),
             lambda b, p: plots.inverse_transform_figure(path=p, seed=0)),
    Artefact("images/gradient-variance.png", ("05-reparameterisation.qmd",),
             lambda b, p: plots.gradient_variance_figure(path=p, seed=0)),
    # Fashion-MNIST
    Artefact("images/fmnist-reconstructions.png", ("02-autoencoders.qmd",),
             lambda b, p: plots.reconstruction_figure(b.models({"autoencoder (16-d)": "fmnist-ae",
                                                                "VAE (16-d)": "fmnist-vae"}),
                                                      b.fmnist_test.images[:10], path=p),
             ("fmnist-ae", "fmnist-vae"), _FM),
    Artefact("images/fmnist-ae-random-latents.png", ("03-generating-with-autoencoders.qmd",),
             lambda b, p: plots.random_latent_figure(b.model("fmnist-ae"), b.fmnist_test, n=10, seed=0, path=p),
             ("fmnist-ae",), _FM),
    Artefact("images/fmnist-ae-vs-vae-samples.png", ("06-training-a-vae.qmd",),
             lambda b, p: plots.random_latent_figure(b.model("fmnist-ae"), b.fmnist_test, n=10, seed=1,
                                                     vae=b.model("fmnist-vae"), path=p),
             ("fmnist-ae", "fmnist-vae"), _FM),
    Artefact("images/fmnist-vae-samples.png", ("06-training-a-vae.qmd",),
             lambda b, p: plots.samples_figure(b.model("fmnist-vae"), n=32, seed=0, path=p), ("fmnist-vae",), _FM),
    Artefact("images/fmnist-latent-2d.png", ("02-autoencoders.qmd",),
             lambda b, p: plots.latent_scatter_figure(b.models({"autoencoder": "fmnist-ae-2d",
                                                                "VAE (posterior means)": "fmnist-vae-2d"}),
                                                      b.fmnist_test, path=p),
             ("fmnist-ae-2d", "fmnist-vae-2d"), _FM),
    Artefact("images/fmnist-ae-2d-manifold.png", ("03-generating-with-autoencoders.qmd",),
             lambda b, p: plots.manifold_figure(b.model("fmnist-ae-2d"), data=b.fmnist_test, path=p),
             ("fmnist-ae-2d",), _FM),
    Artefact("images/fmnist-vae-2d-manifold.png", ("06-training-a-vae.qmd",),
             lambda b, p: plots.manifold_figure(b.model("fmnist-vae-2d"), path=p), ("fmnist-vae-2d",), _FM),
    Artefact("images/fmnist-interpolation.png", ("06-training-a-vae.qmd",),
             lambda b, p: plots.interpolation_figure(b.models(_AE_VAE), b.fmnist_test.images[0],
                                                     b.fmnist_test.images[2], steps=10, path=p),  # a boot, a trouser
             ("fmnist-ae", "fmnist-vae"), _FM),
    Artefact("images/fmnist-training-curves.png", ("06-training-a-vae.qmd",),
             lambda b, p: plots.training_curves_figure(b.history("fmnist-ae", "fmnist-vae", "fmnist-mlp-vae"), path=p),
             ("fmnist-ae", "fmnist-vae", "fmnist-mlp-vae"), _FM),
    Artefact("images/fmnist-pca-reconstructions.png", ("01-dimensionality-reduction.qmd",),
             lambda b, p: plots.pca_reconstruction_figure(b.fmnist_train, b.fmnist_test.images[:10],
                                                          linear_ae=b.model("fmnist-linear-ae"), path=p),
             ("fmnist-linear-ae",), _FM),
    Artefact("images/fmnist-denoising.png", ("02-autoencoders.qmd",),
             lambda b, p: plots.denoising_figure(b.models({"autoencoder": "fmnist-ae",
                                                           "denoising autoencoder": "fmnist-dae"}),
                                                 b.fmnist_test.images[:10], noise_std=0.3, path=p),
             ("fmnist-ae", "fmnist-dae"), _FM),
    Artefact("images/fmnist-anomaly.png", ("02-autoencoders.qmd",), _anomaly, ("fmnist-ae-no-bags",), _FM),
    Artefact("images/fmnist-beta-sweep.png", ("06-training-a-vae.qmd",),
             lambda b, p: plots.beta_sweep_figure(_betas(b, (0.1, 1, 4, 16)), b.fmnist_test.images[:10], path=p),
             _BETA_NAMES, _FM),
    Artefact("images/fmnist-beta-kl-per-dim.png", ("06-training-a-vae.qmd",),
             lambda b, p: plots.kl_per_dimension_figure(_betas(b, experiments.BETAS), b.fmnist_test, path=p),
             _BETA_NAMES, _FM),
    Artefact("images/fmnist-elbo-surgery.png", ("06-training-a-vae.qmd",),  # the 2,000 images of the beta sweep
             lambda b, p: plots.information_split_figure(plots.information_splits(
                 {"conv 2-d\n$\\beta$ = 1": b.model("fmnist-vae-2d"), "conv 16-d\n$\\beta$ = 1": b.model("fmnist-vae"),
                  **{f"MLP 20-d\n$\\beta$ = {x:g}": m for x, m in zip(experiments.BETAS,
                                                                    _betas(b, experiments.BETAS).values())}},
                 b.fmnist_test.images[:2000]), path=p),
             ("fmnist-vae-2d", "fmnist-vae") + _BETA_NAMES, _FM),
    Artefact("images/fmnist-traversals.png", ("06-training-a-vae.qmd",),
             lambda b, p: plots.traversal_comparison_figure(
                 {f"$\\beta$ = {x:g}": m for x, m in zip((1, 4, 16), _betas(b, (1, 4, 16)).values())}, b.fmnist_test,
                 path=p),
             ("fmnist-mlp-vae", "fmnist-mlp-vae-beta4", "fmnist-mlp-vae-beta16"), _FM),
    Artefact("images/fmnist-naive-monte-carlo.png", ("04-latent-variable-models.qmd",),
             lambda b, p: plots.naive_monte_carlo_figure(b.model("fmnist-mlp-vae"), b.fmnist_test.images[0], path=p),
             ("fmnist-mlp-vae",), _FM),
    # Frey faces
    Artefact("images/frey-faces.png", ("07-faces.qmd",),
             lambda b, p: plots.image_grid_figure(b.frey_test.images[:20], nrow=10, path=p), (), _FR),
    Artefact("images/frey-vae-2d-manifold.png", ("07-faces.qmd",),
             lambda b, p: plots.manifold_figure(b.model("frey-vae-2d"), n=19, height=9, path=p), ("frey-vae-2d",), _FR),
    # CelebA
    Artefact("images/celeba-reconstructions.png", ("07-faces.qmd",),
             lambda b, p: plots.reconstruction_figure(b.models({"autoencoder (128-d)": "celeba-ae",
                                                                "VAE (128-d)": "celeba-vae"}),
                                                      b.celeba[1].images[:10], path=p),
             ("celeba-ae", "celeba-vae"), _CE),
    Artefact("images/celeba-ae-vs-vae-samples.png", ("07-faces.qmd",),
             lambda b, p: plots.random_latent_figure(b.model("celeba-ae"), b.celeba[1], n=10, seed=0,
                                                     vae=b.model("celeba-vae"), path=p),
             ("celeba-ae", "celeba-vae"), _CE),
    Artefact("images/celeba-vae-samples.png", ("07-faces.qmd",),
             lambda b, p: plots.samples_figure(b.model("celeba-vae"), n=32, nrow=8, seed=0, path=p),
             ("celeba-vae",), _CE),
    Artefact("images/celeba-interpolation.png", ("07-faces.qmd",),
             lambda b, p: plots.interpolation_figure(b.models({"autoencoder": "celeba-ae", "VAE": "celeba-vae"}),
                                                     b.celeba[1].images[0], b.celeba[1].images[1], steps=10, path=p),
             ("celeba-ae", "celeba-vae"), _CE),
    Artefact("images/celeba-attributes.png", ("07-faces.qmd",),
             lambda b, p: plots.attribute_figure(b.model("celeba-vae"), *b.celeba, path=p), ("celeba-vae",), _CE),
    Artefact("images/celeba-nearest-neighbours.png", ("07-faces.qmd",),
             lambda b, p: plots.nearest_neighbour_figure(b.model("celeba-vae"), b.celeba[0], n=10, seed=0, path=p),
             ("celeba-vae",), _CE),
    Artefact("images/celeba-training-curves.png", ("07-faces.qmd",),
             lambda b, p: plots.training_curves_figure(b.history("celeba-ae", "celeba-vae", "celeba-vae-sigma0.1"),
                                                       path=p),
             ("celeba-ae", "celeba-vae", "celeba-vae-sigma0.1"), _CE),
    Artefact("images/celeba-learned-sigma.png", ("07-faces.qmd",),
             lambda b, p: plots.likelihood_width_figure(
                 {f"learned sigma = {b.model('celeba-vae-learned-sigma').decoder_sigma():.3f}":
                  b.model("celeba-vae-learned-sigma")}, b.celeba[1].images, path=p),
             ("celeba-vae-learned-sigma",), _CE),
    Artefact("images/fmnist-pixel-sigma.png", ("07-faces.qmd",),
             lambda b, p: plots.pixel_sigma_figure(b.model("fmnist-mlp-vae-pixel-sigma"), b.fmnist_test.images, path=p),
             ("fmnist-mlp-vae-pixel-sigma",), _FM),
    Artefact("images/celeba-sigma.png", ("07-faces.qmd",),
             lambda b, p: plots.likelihood_width_figure(
                 {f"sigma = {b.model(n).config.sigma:g}": b.model(n) for n in ("celeba-vae", "celeba-vae-sigma0.1")},
                 b.celeba[1].images, path=p),
             ("celeba-vae", "celeba-vae-sigma0.1"), _CE),
    Artefact(f"{RESULTS}/celeba-numbers.json", ("07-faces.qmd",),
             lambda b, p: write_json(p, celeba_numbers(b.model("celeba-vae"), *b.celeba)), ("celeba-vae",), _CE),
    Artefact("images/celeba-fitted-prior.png", ("07-faces.qmd",), lambda b, p: plots.fitted_prior_figure(b.models(
        {"sigma = 0.1": "celeba-vae-sigma0.1", "sigma = 0.5": "celeba-vae"}), b.celeba[0], path=p),
        ("celeba-vae-sigma0.1", "celeba-vae"), _CE),
    Artefact(f"{RESULTS}/celeba-fitted-prior.json", ("07-faces.qmd",), lambda b, p: write_json(
        p, priors.fitted_prior_numbers(b.model("celeba-vae-sigma0.1"), *b.celeba)), ("celeba-vae-sigma0.1",), _CE),
    Artefact("images/celeba-traversals.png", ("07-faces.qmd",), lambda b, p: plots.latent_traversal_figure(
        b.model("celeba-vae"), b.celeba[1], dims=8, path=p), ("celeba-vae",), _CE),  # from z = 0
    # beyond one Gaussian latent: conditional, discrete, hierarchical
    Artefact("images/fmnist-cvae-classes.png", (_CH9,), lambda b, p: plots.class_grid_figure(
        b.model("fmnist-cvae"), b.fmnist_test.class_names, n_z=10, seed=0, path=p), ("fmnist-cvae",), _FM),
    Artefact("images/fmnist-cvae-transfer.png", (_CH9,), lambda b, p: plots.style_transfer_figure(
        b.model("fmnist-cvae"), b.fmnist_test, n=6, seed=0, path=p), ("fmnist-cvae",), _FM),
    Artefact("images/celeba-cvae-attributes.png", (_CH9,), lambda b, p: plots.attribute_flip_figure(
        b.model("celeba-cvae"), b.celeba[1], n=8, seed=0, path=p), ("celeba-cvae",), _CE),
    Artefact("images/fmnist-hvae-levels.png", (_CH11,), lambda b, p: plots.hierarchy_figure(
        b.model("fmnist-hvae"), n_top=5, n_bottom=10, seed=0, path=p), ("fmnist-hvae",), _FM),
    Artefact("images/fmnist-vqvae-reconstructions.png", (_CH10,), lambda b, p: plots.codebook_reconstruction_figure(
        b.models({f"K = {k}": f"fmnist-vqvae-k{k}" for k in (8, 64, 512)}), b.fmnist_test.images[:10], path=p),
        tuple(f"fmnist-vqvae-k{k}" for k in (8, 64, 512)), _FM),
    Artefact("images/fmnist-vqvae-usage.png", (_CH10,), lambda b, p: plots.codebook_usage_figure(
        b.models({f"K = {k}": f"fmnist-vqvae-k{k}" for k in (8, 64, 512)}), b.fmnist_test, path=p),
        tuple(f"fmnist-vqvae-k{k}" for k in (8, 64, 512)), _FM),
    Artefact("images/fmnist-vqvae-prior-samples.png", (_CH10,), lambda b, p: plots.code_prior_samples_figure(
        b.models({f"K = {k}": f"fmnist-vqvae-k{k}" for k in (64, 512)}), n=10, seed=0, data=b.fmnist_test, path=p),
        ("fmnist-vqvae-k64", "fmnist-vqvae-k512"), _FM),
    Artefact("images/diffusion-toy.png", (_CH11,), lambda b, p: plots.diffusion_toy_figure(seed=0, path=p)),
    Artefact("images/fmnist-diffusion-vs-vae.png", (_CH11,), lambda b, p: plots.samples_side_by_side_figure(
        b.models({"VAE (fmnist-vae)": "fmnist-vae", "two-level VAE": "fmnist-hvae",
                  "diffusion (T = 100)": "fmnist-diffusion"}), n=16, seed=0, path=p),
        ("fmnist-vae", "fmnist-hvae", "fmnist-diffusion"), _FM),
    Artefact(f"{RESULTS}/diffusion-numbers.json", (_CH11,), lambda b, p: write_json(
        p, diffusion_numbers(b.model("fmnist-diffusion"), b.fmnist_test, n=500, seed=0)), ("fmnist-diffusion",), _FM),
)
EVALUATION = Artefact(f"{RESULTS}/evaluation.json", ("07-faces.qmd", "08-evaluation.qmd", _CH9),
                      lambda b, p: None)  # written by `evaluation_table`, which `reproduce` runs after the rest


def build_artefacts(images: str | Path = "images", results: str | Path = RESULTS, weights: str | Path | None = None,
                    data_root: str | Path | None = None, device: str | None = None, download: bool = True,
                    skip_missing_data: bool = False, rows: Sequence[Artefact] = ARTEFACTS) -> list[Path]:
    """Make every row of `ARTEFACTS` (or of ``rows``) from the shipped weights: PNGs into ``images``, JSON into
    ``results``.

    A data set that is not on disk (CelebA cannot be downloaded automatically) stops the
    run, or with ``skip_missing_data`` skips its rows with one printed line. A row whose
    weights file is damaged or missing is skipped with a printed line and the others are
    made. Returns the paths written.
    """
    book = Book(weights, data_root, pick_device(device), download)
    folders = {"images": Path(images), RESULTS: Path(results)}
    written, missing = [], set()
    for row in rows:
        if row.data in missing:
            continue
        try:
            book.data(row.data)  # data first: a missing data set skips its rows
        except DataNotFoundError as e:
            if not skip_missing_data:
                raise
            print(f"skipped the {row.data} figures: {str(e).splitlines()[0]}")
            missing.add(row.data)
            continue
        folder, name = row.file.split("/")
        path = folders[folder] / name
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            result = row.make(book, path)  # a Figure, or None for a JSON file of numbers
        except CheckpointError as e:  # a damaged or missing weights file: the rows of the others still come
            print(f"skipped {name}: {str(e).splitlines()[0]}")
            continue
        if result is not None:
            plt.close(result)
        written.append(path)
    return written
