"""The map of the families: one table of every kind of generative model the book trains on Fashion-MNIST.

``python -m vaebook map`` puts, for each row of `FAMILY_MAP`, two kinds of number side
by side:

* *sample quality*: the Fréchet distance (`vaebook.quality`) between ``n`` samples of
  the model and ``n`` Fashion-MNIST test images, in the feature space of the shipped
  classifier, with the classifier's view of the samples (its mean confidence and how
  evenly the samples spread over the 10 classes). The floor is the same distance for
  ``n`` real *training* images: what a perfect generator would score at this ``n``;
* *likelihood*: the negative ELBO and the IWAE estimate of ``-log p(x)`` recorded in
  ``results/evaluation.json`` by ``python -m vaebook evaluate`` (an autoencoder has none).

Every random draw (which test and training images, latent codes, the models' own
noise) comes from CPU generators seeded with ``seed``, one fresh generator per row,
so a row's numbers do not depend on which other rows ran. A row whose model has no
shipped weights is skipped with one printed line.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from .build import RESULTS
from .checkpoints import PRETRAINED_DIR, load_pretrained, manifest, read_json, write_json
from .data import ImageDataset, fashion_mnist
from .evaluate import embed_dataset, full_float32
from .models import fit_latent_samplers
from .quality import CLASSIFIER, classifier_info, classify, load_classifier, sample_quality
from .speed import pick_device


@dataclass(frozen=True)
class Family:
    """One row of the map: a family, the shipped model that stands for it, and how it is built.

    ``draw`` says how samples are made: ``"model"`` calls the model's own
    ``sample(n, generator=...)`` (a conditional model then draws the classes
    uniformly); ``"fitted-normal"`` decodes codes drawn from a normal fitted to the
    training images' codes (`vaebook.models.fit_latent_samplers`, ``"joint"``), for an
    autoencoder, which has no prior of its own.
    """

    label: str
    name: str
    latent: str
    prior: str
    objective: str
    likelihood: str
    draw: str = "model"


FAMILY_MAP: tuple[Family, ...] = (
    Family("Autoencoder", "fmnist-ae", "16-d code", "none (a normal fitted to the codes)",
           "reconstruction (BCE)", "none", draw="fitted-normal"),
    Family("VAE", "fmnist-vae", "16-d Gaussian", "N(0, I)", "ELBO", "lower bound (ELBO)"),
    Family("beta-VAE, beta = 4", "fmnist-mlp-vae-beta4", "20-d Gaussian", "N(0, I)",
           "reconstruction + 4 KL", "lower bound (ELBO)"),
    Family("Conditional VAE", "fmnist-cvae", "20-d Gaussian, given the class", "N(0, I)",
           "ELBO of x given y", "lower bound on log p(x | y)"),
    Family("VQ-VAE, K = 512", "fmnist-vqvae-k512", "7x7 grid of codes", "PixelCNN over the codes",
           "reconstruction + codebook + commitment + prior NLL", "lower bound (ELBO)"),
    Family("Hierarchical VAE", "fmnist-hvae", "20-d z1 below 10-d z2", "p(z2) p(z1 | z2)", "ELBO",
           "lower bound (ELBO)"),
    Family("Diffusion", "fmnist-diffusion", "T = 100 noisy images", "N(0, I) at step T",
           "noise prediction (L_simple)", "lower bound (ELBO)"),
)

CHUNK = 500  # images drawn per call of a model's sample (bounds the memory of big samplers)


@full_float32()
@torch.no_grad()
def draw_samples(family: Family, model: torch.nn.Module, train: ImageDataset, n: int,
                 generator: torch.Generator) -> torch.Tensor:
    """``n`` samples of ``model`` as ``family.draw`` says, float32 in [0, 1] on the CPU."""
    model.eval()
    if family.draw == "fitted-normal":
        sample = fit_latent_samplers(embed_dataset(model, train))["sample"]
        z = sample("joint", n, generator)
        out = [model.decode(z[i:i + CHUNK].to(model.device)) for i in range(0, n, CHUNK)]
    elif family.draw == "model":
        out = [model.sample(min(CHUNK, n - i), generator=generator) for i in range(0, n, CHUNK)]
    else:
        raise ValueError(f"draw must be 'model' or 'fitted-normal', not {family.draw!r}")
    return torch.cat([x.float().cpu() for x in out]).clamp(0, 1)


def likelihoods(path: str | Path | None) -> dict[str, dict[str, Any]]:
    """``{name: results}`` from a ``python -m vaebook evaluate --json`` file ({} if there is none)."""
    return read_json(Path(path))["results"] if path is not None and Path(path).is_file() else {}


def classifier_folder(weights: str | Path | None) -> Path:
    """Where the classifier is read from: the weights folder if it holds one, else the package's."""
    if weights is not None and (Path(weights) / f"{CLASSIFIER}.json").is_file():
        return Path(weights)
    return PRETRAINED_DIR


def _fmt(value: float | None, spec: str = "7.2f") -> str:
    return "-".rjust(int(spec.split(".")[0])) if value is None else format(value, spec)


def print_row(row: dict[str, Any]) -> None:
    """One line (under 80 characters) of the map: family, model, FD, confidence, class entropy, -ELBO, IWAE."""
    if row["name"] is None:  # the real-data floor
        likelihood = ""
    elif row["likelihood"] == "none":
        likelihood = "  no likelihood"
    else:
        likelihood = f"{_fmt(row.get('neg_elbo'))} {_fmt(row.get('iwae_nll'))}"
    name = row["name"] or "(the floor)"
    print(f"{row['label'][:18]:<18} {name[:20]:<20} {row['fd']:7.2f} {row['confidence']:5.2f} "
          f"{row['class_entropy']:5.2f} {likelihood}")


def draw_map(weights: str | Path | None = None, data_root: str | Path | None = None, device: str | None = None,
             download: bool = True, n: int = 2000, seed: int = 0, json_path: str | Path | None = None,
             evaluation: str | Path | None = Path(RESULTS) / "evaluation.json",
             families: Sequence[Family] = FAMILY_MAP,
             report: Callable[[dict[str, Any]], None] | None = print_row) -> dict[str, Any]:
    """The map (see the module docstring): a dict with the settings, the real-data ``floor`` and one row per
    shipped family; written to ``json_path`` as JSON if given. ``report`` is called with each row."""
    dev = pick_device(device)
    shipped = manifest(weights)
    folder = classifier_folder(weights)
    classifier = load_classifier(folder, device=dev)
    train = fashion_mnist("train", root=data_root, download=download)
    test = fashion_mnist("test", root=data_root, download=download)
    n = min(n, len(train), len(test))
    gen = torch.Generator().manual_seed(seed)
    test_images = test.images[torch.randperm(len(test), generator=gen)[:n]]
    train_images = train.images[torch.randperm(len(train), generator=gen)[:n]]
    reference = classify(classifier, test_images)[0]
    recorded = likelihoods(evaluation)
    floor = {"label": "Training images", "name": None, "likelihood": "none",
             **sample_quality(classifier, train_images, reference)}
    if report:
        print(f"map: {n:,} samples per model vs {n:,} Fashion-MNIST test images, seed {seed}, {dev}")
        print(f"{'family':<18} {'model':<20} {'FD':>7} {'conf.':>5} {'H':>5} {'-ELBO':>7} {'IWAE':>7}")
        report(floor)
    rows = []
    for family in families:
        if family.name not in shipped:
            print(f"map: skipped {family.label} ({family.name}: not shipped yet)")
            continue
        model = load_pretrained(family.name, device=dev, folder=weights)
        samples = draw_samples(family, model, train, n, torch.Generator().manual_seed(seed))
        r = recorded.get(family.name, {})
        row = {**asdict(family), **sample_quality(classifier, samples, reference),
               "neg_elbo": r.get("neg_elbo"), "iwae_nll": r.get("iwae_nll")}
        row["likelihood_note"] = ("no likelihood" if family.likelihood == "none" else
                                  "from " + str(evaluation) if r else "not in " + str(evaluation))
        rows.append(row)
        if report:
            report(row)
    info = classifier_info(folder)
    out = {"command": f"python -m vaebook map --n {n}" + (f" --json {json_path}" if json_path else ""),
           "torch_version": torch.__version__, "device": str(dev), "n": n, "seed": seed,
           "reference": "Fashion-MNIST test images", "evaluation": None if evaluation is None else str(evaluation),
           "classifier": {"sha256": info["sha256"], "test_accuracy": info["test_accuracy"]},
           "floor": floor, "rows": rows}
    if report:
        print("FD: Fréchet distance in the classifier's features, lower is better (the\n"
              "  floor: real training images); conf.: mean top class probability;\n"
              "  H: entropy of the predicted classes in nats (log 10 = 2.30 if even);\n"
              "  -ELBO, IWAE: nats per test image, as `python -m vaebook evaluate` gave.")
    if json_path:
        write_json(Path(json_path), out)
        print(f"wrote {json_path}")
    return out


__all__ = ["Family", "FAMILY_MAP", "draw_map", "draw_samples", "likelihoods", "classifier_folder", "print_row"]
