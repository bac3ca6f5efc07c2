"""Shared helpers: tiny IDX files, fake Fashion-MNIST folders, miniature CelebA folders.

Everything here writes small synthetic data into pytest's tmp folders, so no test
needs the network or the real data sets (tests that use the real ones skip when
they are absent).
"""

from __future__ import annotations

import gzip
import os
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

# The tests point the package at the face data where this workplace keeps it (the library itself
# knows no such place): $VAEBOOK_DATA, if not set already, lists the CelebA subset and the Frey
# faces. The chapters and notebooks that the tests execute inherit it.
if not os.environ.get("VAEBOOK_DATA") and SHARED_DATA.is_dir():
    os.environ["VAEBOOK_DATA"] = os.pathsep.join(str(SHARED_DATA / d) for d in ("celeba-10k", "frey-faces"))

# The 40 attribute names of CelebA's list_attr_celeba.txt, in file order.
CELEBA_ATTRIBUTES = (
    "5_o_Clock_Shadow Arched_Eyebrows Attractive Bags_Under_Eyes Bald Bangs Big_Lips Big_Nose Black_Hair "
    "Blond_Hair Blurry Brown_Hair Bushy_Eyebrows Chubby Double_Chin Eyeglasses Goatee Gray_Hair Heavy_Makeup "
    "High_Cheekbones Male Mouth_Slightly_Open Mustache Narrow_Eyes No_Beard Oval_Face Pale_Skin Pointy_Nose "
    "Receding_Hairline Rosy_Cheeks Sideburns Smiling Straight_Hair Wavy_Hair Wearing_Earrings Wearing_Hat "
    "Wearing_Lipstick Wearing_Necklace Wearing_Necktie Young"
).split()

FMNIST_STEMS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


# --------------------------------------------------------------------------- IDX / Fashion-MNIST


def idx_bytes(array: np.ndarray) -> bytes:
    """The IDX encoding of a uint8 array: 0, 0, 0x08, ndim, big-endian uint32 dims, data."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    return bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def write_idx(path: Path, array: np.ndarray) -> Path:
    """Write ``array`` as an IDX file, gzipped when ``path`` ends in ``.gz``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = idx_bytes(array)
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


def make_fmnist(folder: Path, n_train: int = 5, n_test: int = 3, base: int = 0, gz: bool = True,
                layout: str = "flat", random: bool = False, seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Write the four Fashion-MNIST IDX files into ``folder`` and return {split: (images, labels)}.

    Without ``random``, train image i is filled with ``base + i`` and test image i with
    ``base + 100 + i``, so a test can tell which folder (``base``) and which image it read.
    ``layout`` is ``"flat"`` (files in ``folder``) or ``"torchvision"`` (``folder/FashionMNIST/raw``).
    """
    target = Path(folder) / "FashionMNIST" / "raw" if layout == "torchvision" else Path(folder)
    rng = np.random.default_rng(seed)
    out = {}
    for split, n, offset in (("train", n_train, 0), ("test", n_test, 100)):
        if random:
            images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        else:
            images = np.empty((n, 28, 28), dtype=np.uint8)
            for i in range(n):
                images[i] = (base + offset + i) % 256
            images[:, 0, 0] = 255 - images[:, 0, 0]  # not a constant image: one corner differs
        labels = ((np.arange(n) * 3 + base + offset) % 10).astype(np.uint8)
        image_stem, label_stem = FMNIST_STEMS[split]
        suffix = ".gz" if gz else ""
        write_idx(target / (image_stem + suffix), images)
        write_idx(target / (label_stem + suffix), labels)
        out[split] = (images, labels)
    return out


# --------------------------------------------------------------------------- CelebA


def blobs(n: int, seed: int):
    """Tiny images with structure to learn: 8x8, a bright square in one of four quadrants (the label), plus noise."""
    import torch

    from vaebook.data import ImageDataset

    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 8, 8, generator=gen) * 0.2
    pos = torch.randint(0, 4, (n,), generator=gen)
    for i, p in enumerate(pos.tolist()):
        r, c = divmod(p, 2)
        x[i, 0, r * 4:r * 4 + 4, c * 4:c * 4 + 4] += 0.8
    return ImageDataset((x * 255).round().to(torch.uint8), labels=pos)


def celeba_colour(i: int) -> tuple[int, int, int]:
    """A distinct, saturated-enough solid colour for image i (0-based)."""
    return (20 + (37 * i) % 216, 230 - (23 * i) % 200, 40 + (71 * i) % 180)


def write_jpeg(path: Path, colour: tuple[int, int, int], width: int = 89, height: int = 109) -> None:
    from PIL import Image

    Image.new("RGB", (width, height), colour).save(path, quality=95, subsampling=0)


def celeba_attr_text(files: list[str], attrs: np.ndarray) -> str:
    """``list_attr_celeba.txt`` in CelebA's format for +1/-1 ``attrs`` of shape (N, 40)."""
    lines = [str(len(files)), " ".join(CELEBA_ATTRIBUTES) + " "]
    for f, row in zip(files, attrs):
        lines.append(f + " " + " ".join(f"{int(v):2d}" for v in row) + " ")
    return "\n".join(lines) + "\n"


def make_celeba(folder: Path, n: int = 25, partition: list[int] | None = None, width: int = 89,
                height: int = 109, zipped: bool = False, seed: int = 0) -> dict:
    """A miniature CelebA in the official layout; returns files, colours and the +1/-1 attributes.

    ``partition`` gives each image's row of ``list_eval_partition.txt`` (default: all 0,
    like the development subset). With ``zipped`` the images go into
    ``img_align_celeba.zip`` (entries ``img_align_celeba/NNNNNN.jpg``) instead of a folder.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    files = [f"{i + 1:06d}.jpg" for i in range(n)]
    colours = [celeba_colour(i) for i in range(n)]
    rng = np.random.default_rng(seed)
    attrs = rng.choice(np.array([-1, 1], dtype=np.int8), size=(n, 40))
    attrs[:, 0] = np.where(np.arange(n) % 2 == 0, 1, -1)  # a known column too
    img_dir = folder / "img_align_celeba"
    if zipped:
        staging = folder / "_staging"
        staging.mkdir()
        with zipfile.ZipFile(folder / "img_align_celeba.zip", "w") as z:
            for f, c in zip(files, colours):
                write_jpeg(staging / f, c, width, height)
                z.write(staging / f, f"img_align_celeba/{f}")
        for f in files:
            (staging / f).unlink()
        staging.rmdir()
    else:
        img_dir.mkdir(exist_ok=True)
        for f, c in zip(files, colours):
            write_jpeg(img_dir / f, c, width, height)
    (folder / "list_attr_celeba.txt").write_text(celeba_attr_text(files, attrs))
    partition = [0] * n if partition is None else partition
    (folder / "list_eval_partition.txt").write_text("".join(f"{f} {p}\n" for f, p in zip(files, partition)))
    return {"folder": folder, "files": files, "colours": np.array(colours, dtype=np.float64), "attrs": attrs}


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def isolated_env(tmp_path, monkeypatch):
    """No $VAEBOOK_DATA, a tmp $VAEBOOK_CACHE and an empty stand-in for the Debian folder.

    Nothing a test loads can then come from the real machine's data folders, and a
    Fashion-MNIST search that finds nothing fails instead of reaching real files.
    """
    import vaebook.data

    monkeypatch.delenv("VAEBOOK_DATA", raising=False)
    cache = tmp_path / "cache"
    monkeypatch.setenv("VAEBOOK_CACHE", str(cache))
    debian = tmp_path / "no-debian"
    debian.mkdir()
    monkeypatch.setattr(vaebook.data, "DEBIAN_FASHION_MNIST", debian)
    monkeypatch.chdir(tmp_path)
    return {"cache": cache, "debian": debian}


# --------------------------------------------------------------------------- test layers

# Files whose tests run whole jobs (several processes, reproduce end to end, the shipped models
# over their full test sets) or execute the book: not in the fast `unit` layer.
_LAYERS = {"test_book.py": "book", "test_notebooks.py": "book", "test_ddp.py": "slow", "test_pretrained.py": "slow"}
_SLOW_TESTS = ("test_reproduce_",)


def pytest_collection_modifyitems(config, items):
    """Give every test one layer: ``unit`` (fast, the default for a test), ``slow``, ``book`` (chapters and
    notebooks executed in a kernel) or ``notebooks`` (nbval's cell-by-cell comparison). ``python -m pytest``
    runs them all; ``python -m pytest -m unit`` the fast layer alone."""
    for item in items:
        path = Path(str(item.fspath))
        if path.suffix == ".ipynb":
            layer = "notebooks"
        elif path.name in _LAYERS:
            layer = _LAYERS[path.name]
        elif item.name.startswith(_SLOW_TESTS) or item.get_closest_marker("inductor"):
            layer = "slow"
        else:
            layer = "unit"
        item.add_marker(getattr(pytest.mark, layer))
