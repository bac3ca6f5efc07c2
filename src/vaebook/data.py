"""Data sets as single uint8 tensors: Fashion-MNIST, CelebA and Frey Face.

Every loader returns an `ImageDataset`: all images of one split in one
``(N, C, H, W)`` uint8 tensor, with labels or attributes beside it. Holding the
raw bytes (not floats, not PIL images) keeps Fashion-MNIST at 47 MB and CelebA at
64x64 at 2.5 GB, lets the training loop slice batches with plain indexing (no
DataLoader, no per-sample Python work) and lets the whole set live on a GPU.
Batches are turned into floats in [0, 1] with `to_float`.

Where the files are looked for (the first place that has them wins):

* Fashion-MNIST: an explicit ``root``; ``$VAEBOOK_DATA``; the Debian package's
  folder ``/usr/share/datasets/fashion-mnist``; otherwise torchvision downloads it
  (into ``root`` if given, else ``~/.cache/vaebook``). This is what happens on Colab.
* CelebA: an explicit ``root``; ``$VAEBOOK_DATA``; ``./data``. Each place may hold
  the official layout itself or inside a ``celeba/`` folder. Decoded images are
  cached once on disk.
* Frey Face: an explicit ``root``; ``$VAEBOOK_DATA``; ``./data``; otherwise
  downloaded from Sam Roweis' page.

``$VAEBOOK_DATA`` may name several folders, separated like ``$PATH`` (``:`` on Linux
and macOS, ``;`` on Windows), e.g. one holding CelebA and another the Frey faces.

A data set that is missing or corrupt raises a `VaebookError` whose message names
every place searched and how to get the data.
"""

from __future__ import annotations

import gzip
import os
import struct
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

import numpy as np
import torch

from .errors import DataCorruptError, DataNotFoundError
from .files import missing_dirs, remove_empty

Split = Literal["train", "valid", "test"]

FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


@dataclass(frozen=True)
class ImageDataset:
    """One split of an image data set held as a single uint8 tensor.

    Attributes:
        images: ``(N, C, H, W)`` uint8 pixel values in 0..255.
        labels: ``(N,)`` int64 class indices, or None.
        attributes: ``(N, A)`` uint8 0/1 binary attributes (CelebA), or None.
        class_names: names of the classes that ``labels`` index.
        attribute_names: names of the columns of ``attributes``.
        name: a short description, e.g. ``"fashion-mnist/train"``.
    """

    images: torch.Tensor
    labels: torch.Tensor | None = None
    attributes: torch.Tensor | None = None
    class_names: tuple[str, ...] = ()
    attribute_names: tuple[str, ...] = ()
    name: str = ""

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError(f"images must be a (N, C, H, W) uint8 tensor, got {self.images.dtype} {tuple(self.images.shape)}")

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def shape(self) -> tuple[int, int, int]:
        """The shape ``(C, H, W)`` of one image."""
        c, h, w = self.images.shape[1:]
        return (c, h, w)

    def subset(self, index: int | Sequence[int] | torch.Tensor) -> "ImageDataset":
        """The first ``index`` images if an int, else the images at those positions."""
        idx = torch.arange(index) if isinstance(index, int) else torch.as_tensor(index)
        pick = lambda t: None if t is None else t[idx]  # noqa: E731
        return replace(self, images=self.images[idx], labels=pick(self.labels), attributes=pick(self.attributes))

    def float(self, index: int | Sequence[int] | torch.Tensor | None = None) -> torch.Tensor:
        """Images (all, the first ``index``, or those at ``index``) as floats in [0, 1]."""
        return to_float(self.images if index is None else self.subset(index).images)


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 pixels 0..255 to floats in [0, 1] (on whatever device they are)."""
    return images.float().div_(255.0)


def class_condition(class_names: Sequence[str]) -> tuple[str, ...]:
    """The ``condition`` of a model conditioned on the class: ``("class:" + name, ...)``."""
    return tuple(f"class:{n}" for n in class_names)


def condition_vectors(config: Any, data: ImageDataset) -> torch.Tensor:
    """The ``y`` a conditional model sees for each image, ``(N, c)`` floats, one column per name of
    ``config.condition``: ``"class:NAME"`` names (all of them) give the one-hot class label, columns in
    that order (`class_condition` writes them); attribute names give those 0/1 attributes (CelebA's).

    Raises ValueError (naming what is missing) if the data set does not carry them.
    """
    names = tuple(config.condition)
    if all(n.startswith("class:") for n in names):
        wanted = [n[len("class:"):] for n in names]
        if data.labels is None or not set(wanted) <= set(data.class_names):
            raise ValueError(f"{data.name or 'this data set'} has no classes {', '.join(wanted)} to condition on")
        columns = torch.tensor([data.class_names.index(n) for n in wanted])
        return (data.labels[:, None] == columns).float()
    if data.attributes is None:
        raise ValueError(f"{data.name or 'this data set'} has no attributes to condition on ({', '.join(names)})")
    missing = [n for n in names if n not in data.attribute_names]
    if missing:
        raise ValueError(f"unknown attributes {', '.join(missing)}; known: {', '.join(data.attribute_names)}")
    return data.attributes[:, [data.attribute_names.index(n) for n in names]].float()


# --------------------------------------------------------------------------- helpers


def _places(root: str | os.PathLike | None, defaults: Sequence[tuple[str, Path]]) -> list[tuple[str, Path]]:
    """The (description, folder) pairs to search: an explicit root alone, else $VAEBOOK_DATA and the defaults."""
    if root is not None:
        return [("the path you gave", Path(root).expanduser())]
    listed = [p for p in os.environ.get("VAEBOOK_DATA", "").split(os.pathsep) if p]
    return [("$VAEBOOK_DATA", Path(p).expanduser()) for p in listed] + list(defaults)


def _search(places: Sequence[tuple[str, Path]], find: Callable[[Path], Path | None]) -> Path | None:
    for _, place in places:
        found = find(place)
        if found is not None:
            return found
    return None


def _not_found(what: str, places: Sequence[tuple[str, Path]]) -> str:
    """The first line of a not-found message: what, and every place searched (a missing folder said so)."""
    where = "; ".join(f"{p} ({why}{'' if p.exists() else ', does not exist'})" for why, p in places)
    return f"{what} was not found. Searched: {where or 'nowhere'}."


def cache_dir() -> Path:
    """Where downloads and decoded caches go: ``$VAEBOOK_CACHE`` or ``~/.cache/vaebook``."""
    return Path(os.environ.get("VAEBOOK_CACHE", Path.home() / ".cache" / "vaebook")).expanduser()


def split_mask(n: int, split: Split) -> torch.Tensor:
    """The documented deterministic split used where a data set has no held-out rows.

    Image i (0-based, in file order) is test if i % 10 == 9, valid if i % 10 == 8,
    else train: 80/10/10, stable when more images are added, independent of seeds.
    """
    r = torch.arange(n) % 10
    return {"train": r < 8, "valid": r == 8, "test": r == 9}[split]


def _check_split(split: str) -> None:
    if split not in ("train", "valid", "test"):
        raise ValueError(f"split must be 'train', 'valid' or 'test', got {split!r}")


# --------------------------------------------------------------------------- Fashion-MNIST

_FMNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def read_idx(path: str | os.PathLike) -> torch.Tensor:
    """Read an IDX file (the MNIST format), gzipped or not, as a uint8 tensor.

    IDX: two zero bytes, a type byte (0x08 = uint8), the number of dimensions, then
    each dimension as a big-endian uint32, then the data. Anything else raises
    `DataCorruptError` naming the file.
    """
    path = Path(path)
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise DataCorruptError(f"{path} cannot be read ({e}); delete it and get the data again.") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08 or not 1 <= data[3] <= 4:
        raise DataCorruptError(f"{path} is not a uint8 IDX file (bad header {data[:4]!r}); delete it and get the data again.")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataCorruptError(f"{path} is truncated: its header is cut short; delete it and get the data again.")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    if len(data) - header != int(np.prod(dims)):
        raise DataCorruptError(
            f"{path} is truncated or padded: header says {dims} = {int(np.prod(dims))} bytes, "
            f"file has {len(data) - header}; delete it and get the data again."
        )
    return torch.frombuffer(bytearray(data), dtype=torch.uint8, offset=header).view(*dims)


def _fmnist_file(folder: Path, stem: str) -> Path | None:
    for sub in (folder, folder / "fashion-mnist", folder / "FashionMNIST" / "raw"):
        for name in (stem + ".gz", stem):
            if (sub / name).is_file():
                return sub / name
    return None


def _find_fmnist(folder: Path) -> Path | None:
    files = [_fmnist_file(folder, stem) for pair in _FMNIST_FILES.values() for stem in pair]
    return files[0].parent if all(files) else None


def fashion_mnist(split: Literal["train", "test"] = "train", root: str | os.PathLike | None = None,
                  download: bool = True) -> ImageDataset:
    """Fashion-MNIST (60,000 train / 10,000 test grey 28x28 images, 10 classes).

    Args:
        split: ``"train"`` or ``"test"`` (the official split).
        root: a folder holding the four IDX files (gzipped or not, flat or in
            torchvision's ``FashionMNIST/raw`` layout). If given, only it is searched,
            and a download goes there.
        download: whether torchvision may download the files when none are found.
    """
    if split not in _FMNIST_FILES:
        raise ValueError(f"Fashion-MNIST has splits 'train' and 'test', not {split!r}")
    places = _places(root, [("Debian package dataset-fashion-mnist", DEBIAN_FASHION_MNIST)])
    folder = _search(places, _find_fmnist)
    if folder is None and download:
        target = Path(root).expanduser() if root is not None else cache_dir()
        created = missing_dirs(target / "FashionMNIST" / "raw")  # torchvision's layout
        try:
            from torchvision.datasets import FashionMNIST

            FashionMNIST(str(target), train=True, download=True)
            FashionMNIST(str(target), train=False, download=True)
        except Exception as e:  # network errors come in many types; all mean "could not download"
            remove_empty(created)  # a failed download leaves no empty folders behind
            places = places + [(f"torchvision download failed: {type(e).__name__}: {str(e).splitlines()[0]}", target)]
        else:
            folder = _find_fmnist(target)
    if folder is None:
        first = _not_found("Fashion-MNIST", places)
        get = ("Get it with one of:\n"
               "  - Debian/Ubuntu: sudo apt-get install dataset-fashion-mnist\n"
               "  - on a machine with internet (Colab): {download}, and torchvision downloads it\n"
               "  - {point} at a folder holding train-images-idx3-ubyte.gz and the other three files")
        raise DataNotFoundError(
            first + "\n" + get.format(download="call with download=True (the default)",
                                      point="set VAEBOOK_DATA or pass root="),
            cli=first + "\n" + get.format(download="run the command without --no-download",
                                          point="set VAEBOOK_DATA or pass --data-root"))
    image_stem, label_stem = _FMNIST_FILES[split]
    paths = [_fmnist_file(folder, image_stem), _fmnist_file(folder, label_stem)]
    images, labels = (read_idx(p) for p in paths)
    if images.shape[0] != labels.shape[0] or images.shape[1:] != (28, 28):
        raise DataCorruptError(f"{paths[0]} and {paths[1]} do not match: {tuple(images.shape)} images, {tuple(labels.shape)} labels.")
    return ImageDataset(images.unsqueeze(1).clone(), labels.long(), class_names=FASHION_MNIST_CLASSES,
                        name=f"fashion-mnist/{split}")


# The face data sets live in `vaebook.face_data`; their names are also reachable from here.
_FACE_DATA = ("CELEBA_SOURCES", "FREY_URL", "celeba", "crop_box", "frey_faces")


def __getattr__(name: str):
    if name in _FACE_DATA:
        from . import face_data

        return getattr(face_data, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
