"""How good are samples? A Fashion-MNIST classifier's features and the Fréchet distance between image sets.

A likelihood says how well a model explains test images; it says little about how
its samples look. The standard complement (Heusel et al., 2017, "FID") compares
*sets* of images in the feature space of a classifier: fit a Gaussian to the
features of the samples and another to those of real images, and measure

    FD = ||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a^{1/2} S_b S_a^{1/2})^{1/2}),

the squared 2-Wasserstein (Fréchet) distance between the two Gaussians. It is 0
only when means and covariances agree; blur, artefacts and missing classes all move
the features. The Inception network of FID knows nothing of 28x28 clothes, so here
the features come from `FeatureClassifier`, a small CNN trained on Fashion-MNIST
(its 128-unit hidden layer), shipped in ``pretrained/fmnist-classifier.*``.

Numbers from this classifier compare models with each other on Fashion-MNIST, not
with published FIDs. The estimate is biased upwards for finite sets (two samples of
the same distribution have FD > 0, shrinking with their size), so compare values
computed with the same number of images, and quote the real-vs-real floor beside them.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .data import ImageDataset, fashion_mnist, to_float
from .errors import CheckpointError
from .files import read_json, sha256, write_json

CLASSIFIER = "fmnist-classifier"  # pretrained/<CLASSIFIER>.safetensors and .json
TRAIN_COMMAND = "python -m vaebook map --train-classifier"


class FeatureClassifier(nn.Module):
    """A small CNN for 28x28 grey images: two conv + max-pool stages, a hidden layer (the features), 10 logits.

    ``(N, 1, 28, 28)`` in [0, 1] -> conv 3x3 (``channels[0]``), ReLU, max-pool -> 14x14
    -> conv 3x3 (``channels[1]``), ReLU, max-pool -> 7x7 -> max-pool to 3x3 (overlapping
    windows) -> linear to ``hidden`` units, ReLU (`features`) -> linear to ``classes``
    logits (`forward`). The last pooling keeps the hidden layer's weights at 74k, so the
    shipped float32 file stays under 400 kB.
    """

    def __init__(self, channels: tuple[int, int] = (32, 64), hidden: int = 128, classes: int = 10) -> None:
        super().__init__()
        self.channels, self.hidden = tuple(channels), hidden
        self.conv1 = nn.Conv2d(1, channels[0], 3, padding=1)
        self.conv2 = nn.Conv2d(channels[0], channels[1], 3, padding=1)
        self.fc = nn.Linear(channels[1] * 3 * 3, hidden)
        self.out = nn.Linear(hidden, classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The penultimate activations, ``(N, hidden)``: what the Fréchet distance compares."""
        h = F.max_pool2d(F.relu(self.conv1(x)), 2)  # 14x14
        h = F.max_pool2d(F.relu(self.conv2(h)), 2)  # 7x7
        h = F.adaptive_max_pool2d(h, 3)  # 3x3, from overlapping windows that cover all of the 7x7
        return F.relu(self.fc(h.flatten(1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits, ``(N, classes)``."""
        return self.out(self.features(x))


def _floats(images: torch.Tensor | ImageDataset) -> torch.Tensor:
    """Images as floats in [0, 1]: an `ImageDataset`, uint8 pixels or floats already."""
    images = images.images if isinstance(images, ImageDataset) else images
    return to_float(images) if images.dtype == torch.uint8 else images.float()


@torch.no_grad()
def accuracy(model: FeatureClassifier, data: ImageDataset, batch_size: int = 1000) -> float:
    """The share of ``data``'s images whose predicted class is their label."""
    model.eval()
    device = next(model.parameters()).device
    correct = 0
    for i in range(0, len(data), batch_size):
        x = to_float(data.images[i:i + batch_size].to(device))
        correct += int((model(x).argmax(1).cpu() == data.labels[i:i + batch_size]).sum())
    return correct / len(data)


def train_classifier(train: ImageDataset, test: ImageDataset, epochs: int = 3, seed: int = 0,
                     batch_size: int = 128, lr: float = 1e-3, device: str | torch.device = "cpu",
                     progress: bool = False) -> tuple[FeatureClassifier, dict[str, Any]]:
    """Train `FeatureClassifier` with Adam and cross-entropy; returns ``(model, info)``.

    The initial weights and the order of the batches come from ``seed``; ``info`` holds
    the test accuracy, the settings, the wall time and the CPU time of this process
    (all cores together; on a shared machine the wall time also counts waiting).
    """
    torch.manual_seed(seed)
    model = FeatureClassifier().to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    t0, cpu0 = time.perf_counter(), time.process_time()
    for epoch in range(1, epochs + 1):
        model.train()
        order = torch.randperm(len(train), generator=gen)
        total = 0.0
        for i in range(0, len(train), batch_size):
            idx = order[i:i + batch_size]
            x, y = to_float(train.images[idx]).to(device), train.labels[idx].to(device)
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(idx)
        if progress:
            print(f"classifier epoch {epoch}/{epochs}: train loss {total / len(train):.4f}, "
                  f"{time.perf_counter() - t0:.0f} s", flush=True)
    model.eval()
    info = {"test_accuracy": accuracy(model, test), "test_images": len(test), "train_images": len(train),
            "epochs": epochs, "seed": seed, "batch_size": batch_size, "lr": lr,
            "wall_time_s": round(time.perf_counter() - t0, 1), "cpu_time_s": round(time.process_time() - cpu0, 1),
            "threads": torch.get_num_threads(), "device": str(device)}
    return model.cpu(), info


def save_classifier(model: FeatureClassifier, info: dict[str, Any], folder: str | os.PathLike | None = None) -> Path:
    """Write ``fmnist-classifier.safetensors`` (float32) and ``fmnist-classifier.json`` (its sha256 and ``info``)."""
    from .checkpoints import PRETRAINED_DIR, save_tensors

    folder = Path(folder) if folder is not None else PRETRAINED_DIR
    digest = save_tensors(folder / f"{CLASSIFIER}.safetensors", model.state_dict())
    meta = {"file": f"{CLASSIFIER}.safetensors", "sha256": digest, "dtype": "float32",
            "channels": list(model.channels), "hidden": model.hidden, **info,
            "torch_version": torch.__version__, "command": TRAIN_COMMAND}
    write_json(folder / f"{CLASSIFIER}.json", meta)
    return folder / f"{CLASSIFIER}.json"


def classifier_info(folder: str | os.PathLike | None = None) -> dict[str, Any]:
    """The contents of ``fmnist-classifier.json`` (sha256, test accuracy, ...); `CheckpointError` if missing."""
    from .checkpoints import PRETRAINED_DIR

    path = (Path(folder) if folder is not None else PRETRAINED_DIR) / f"{CLASSIFIER}.json"
    if not path.is_file():
        raise CheckpointError(f"The feature classifier's record {path} does not exist. Restore it (git checkout, "
                              f"or reinstall vaebook) or retrain it with `{TRAIN_COMMAND}`.")
    return read_json(path)


def load_classifier(folder: str | os.PathLike | None = None, device: str | torch.device = "cpu") -> FeatureClassifier:
    """The shipped `FeatureClassifier`, its sha256 checked before loading (in eval mode on ``device``)."""
    from .checkpoints import PRETRAINED_DIR, load_tensors

    folder = Path(folder) if folder is not None else PRETRAINED_DIR
    info = classifier_info(folder)
    path = folder / info.get("file", f"{CLASSIFIER}.safetensors")
    fix = f"Restore it (git checkout, or reinstall vaebook) or retrain it with `{TRAIN_COMMAND}`."
    if not path.is_file():
        raise CheckpointError(f"The feature classifier's weights {path} do not exist. {fix}")
    got = sha256(path)
    if got != info.get("sha256"):
        raise CheckpointError(f"{path} is damaged or was changed: its sha256 is {got}, expected "
                              f"{info.get('sha256')}. {fix}")
    model = FeatureClassifier(tuple(info.get("channels", (32, 64))), info.get("hidden", 128))
    try:
        model.load_state_dict(load_tensors(path))
    except RuntimeError as e:
        raise CheckpointError(f"{path} does not fit the classifier ({str(e).strip().splitlines()[0]}). {fix}") from None
    return model.to(device).eval()


def train_and_save_classifier(folder: str | os.PathLike | None = None, data_root: str | os.PathLike | None = None,
                              download: bool = True, epochs: int = 3, seed: int = 0,
                              device: str | torch.device | None = "cpu", progress: bool = True) -> dict[str, Any]:
    """Train the classifier on Fashion-MNIST's training set and write it into ``folder`` (the package's by
    default); returns what ``fmnist-classifier.json`` records."""
    from .speed import pick_device

    train = fashion_mnist("train", root=data_root, download=download)
    test = fashion_mnist("test", root=data_root, download=download)
    device = pick_device(None if device is None else str(device))
    model, info = train_classifier(train, test, epochs=epochs, seed=seed, device=device, progress=progress)
    path = save_classifier(model, info, folder)
    if progress:
        print(f"classifier: test accuracy {info['test_accuracy']:.4f} after {epochs} epochs, "
              f"{info['wall_time_s']:.0f} s; wrote {path}")
    return read_json(path)


# --------------------------------------------------------------------------- the Fréchet distance


def _sqrtm_psd(matrix: torch.Tensor) -> torch.Tensor:
    """The symmetric square root of a symmetric positive semi-definite matrix (tiny negative eigenvalues -> 0)."""
    values, vectors = torch.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * values.clamp(min=0).sqrt()) @ vectors.T


def frechet_gaussian(mu1: torch.Tensor, cov1: torch.Tensor, mu2: torch.Tensor, cov2: torch.Tensor) -> float:
    """The Fréchet (2-Wasserstein squared) distance between ``N(mu1, cov1)`` and ``N(mu2, cov2)``.

    ``||mu1 - mu2||^2 + Tr(cov1) + Tr(cov2) - 2 Tr((cov1^{1/2} cov2 cov1^{1/2})^{1/2})``, in float64.
    Both square roots come from symmetric eigendecompositions, so the result is real
    (no complex parts to discard, as with a general matrix square root of ``cov1 cov2``).
    """
    mu1, mu2, cov1, cov2 = (t.double().cpu() for t in (mu1, mu2, cov1, cov2))
    root1 = _sqrtm_psd(cov1)
    middle = root1 @ cov2 @ root1
    cross = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp(min=0).sqrt().sum()
    return float((mu1 - mu2).square().sum() + cov1.trace() + cov2.trace() - 2 * cross)


def gaussian_fit(feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and (unbiased, ``N - 1``) covariance of the rows of ``feats``, in float64."""
    x = feats.double().cpu()
    return x.mean(0), torch.cov(x.T).reshape(x.shape[1], x.shape[1])


def frechet_distance(a_feats: torch.Tensor, b_feats: torch.Tensor) -> float:
    """The Fréchet distance between Gaussians fitted to two sets of feature vectors, ``(N, D)`` and ``(M, D)``."""
    if a_feats.dim() != 2 or b_feats.dim() != 2 or a_feats.shape[1] != b_feats.shape[1]:
        raise ValueError(f"need two (N, D) feature sets of the same D, got {tuple(a_feats.shape)} "
                         f"and {tuple(b_feats.shape)}")
    if min(len(a_feats), len(b_feats)) < 2:
        raise ValueError("a covariance needs at least two feature vectors per set")
    return frechet_gaussian(*gaussian_fit(a_feats), *gaussian_fit(b_feats))


# --------------------------------------------------------------------------- sample quality


@torch.no_grad()
def classify(classifier: FeatureClassifier, images: torch.Tensor | ImageDataset,
             batch_size: int = 1000) -> tuple[torch.Tensor, torch.Tensor]:
    """``(features (N, hidden), class probabilities (N, classes))`` of images, on the CPU in float32."""
    from .evaluate import full_float32

    classifier.eval()
    device = next(classifier.parameters()).device
    x = _floats(images)
    feats, probs = [], []
    with full_float32():
        for i in range(0, len(x), batch_size):
            h = classifier.features(x[i:i + batch_size].to(device))
            feats.append(h.float().cpu())
            probs.append(torch.softmax(classifier.out(h), 1).float().cpu())
    return torch.cat(feats), torch.cat(probs)


def class_statistics(probs: torch.Tensor) -> dict[str, Any]:
    """What the classifier makes of a set of images, from its class probabilities ``(N, classes)``.

    ``confidence``: the mean largest probability (real test images score high; smudges
    that look like no class score low). ``class_share``: the fraction of images
    predicted as each class. ``class_entropy``: the entropy of those shares in nats
    (``log 10 = 2.303`` when all classes are equally common; lower when the images
    crowd into a few classes).
    """
    share = torch.bincount(probs.argmax(1), minlength=probs.shape[1]).double() / len(probs)
    nonzero = share[share > 0]
    return {"confidence": float(probs.max(1).values.double().mean()), "class_share": share.tolist(),
            "class_entropy": float(-(nonzero * nonzero.log()).sum())}


def sample_quality(classifier: FeatureClassifier, samples: torch.Tensor | ImageDataset,
                   reference: torch.Tensor | ImageDataset) -> dict[str, Any]:
    """Samples against reference images: ``fd`` in the classifier's feature space, and `class_statistics`.

    ``samples`` and ``reference`` are images (floats in [0, 1], uint8 pixels or an
    `ImageDataset`); ``reference`` may also be its features already, ``(M, hidden)``
    (from `classify`), to reuse them for many sample sets.
    """
    feats, probs = classify(classifier, samples)
    is_features = isinstance(reference, torch.Tensor) and reference.dim() == 2
    ref = reference if is_features else classify(classifier, reference)[0]
    return {"fd": frechet_distance(feats, ref), "n_samples": len(feats), "n_reference": len(ref),
            **class_statistics(probs)}


__all__ = ["FeatureClassifier", "train_classifier", "save_classifier", "load_classifier", "classifier_info",
           "train_and_save_classifier", "accuracy", "frechet_gaussian", "frechet_distance", "gaussian_fit",
           "classify", "class_statistics", "sample_quality", "CLASSIFIER"]
