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
import hashlib
import json
import os
import shutil
import struct
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Literal, Sequence

import numpy as np
import torch

from .errors import DataCorruptError, DataNotFoundError
from .files import atomic_write, missing_dirs, remove_empty

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


# --------------------------------------------------------------------------- CelebA

CELEBA_SOURCES = (
    "CelebA is not downloadable here automatically. Get img_align_celeba (aligned and cropped JPEGs), "
    "list_attr_celeba.txt and list_eval_partition.txt from the official site "
    "(https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html) or a mirror (Kaggle's 'jessicali9530/celeba-dataset', "
    "or Hugging Face), unpack them into one folder, and pass it as root / --data-root or set VAEBOOK_DATA. "
    "torchvision's CelebA(download=True) uses Google Drive, which often fails with a quota error."
)


def _is_celeba(folder: Path) -> Path | None:
    for sub in (folder, folder / "celeba"):
        if (sub / "list_attr_celeba.txt").is_file() and ((sub / "img_align_celeba").is_dir()
                                                         or (sub / "img_align_celeba.zip").is_file()):
            return sub
    return None


def _unpack_celeba_zip(folder: Path) -> None:
    """Extract ``img_align_celeba.zip`` once, after checking it really is a zip."""
    archive = folder / "img_align_celeba.zip"
    if (folder / "img_align_celeba").is_dir() or not archive.is_file():
        return
    if not zipfile.is_zipfile(archive):
        head = archive.read_bytes()[:2048].lower()
        if b"<html" in head or b"<!doctype" in head:
            raise DataCorruptError(
                f"{archive} is an HTML page, not a zip archive: Google Drive answered the download with a web page "
                "(usually its 'download quota exceeded' error). Delete the file and get the images elsewhere. "
                + CELEBA_SOURCES
            )
        raise DataCorruptError(f"{archive} is not a zip archive (truncated download?). Delete it and download it again.")
    # Extract into a temporary folder and rename it, so an interrupted unpack leaves no partial image folder.
    staging = folder / ".img_align_celeba.unpacking"
    shutil.rmtree(staging, ignore_errors=True)
    with zipfile.ZipFile(archive) as z:
        z.extractall(staging)
    inner = staging / "img_align_celeba"
    os.replace(inner if inner.is_dir() else staging, folder / "img_align_celeba")
    shutil.rmtree(staging, ignore_errors=True)


def _read_attributes(path: Path) -> tuple[list[str], list[str], np.ndarray]:
    """CelebA's ``list_attr_celeba.txt``: count, 40 names, then ``file +-1 ...`` rows."""
    try:
        lines = path.read_text().splitlines()
        names = lines[1].split()
        files, rows = [], []
        for line in lines[2:]:
            parts = line.split()
            if parts:
                files.append(parts[0])
                rows.append([int(v) for v in parts[1:]])
        values = np.asarray(rows, dtype=np.int8)
        if values.shape != (len(files), len(names)) or int(lines[0]) != len(files):
            raise ValueError(f"{len(files)} rows of {values.shape[1:]} values for {len(names)} names; header count {lines[0]}")
    except (ValueError, IndexError) as e:
        raise DataCorruptError(f"{path} is not in CelebA's attribute format ({e}).") from None
    return files, names, values


def _read_partition(path: Path) -> dict[str, int]:
    if not path.is_file():
        return {}
    try:
        return {f: int(p) for f, p in (line.split() for line in path.read_text().splitlines() if line.strip())}
    except ValueError as e:
        raise DataCorruptError(f"{path} is not in CelebA's partition format ({e}).") from None


def crop_box(width: int, height: int, out_hw: tuple[int, int]) -> tuple[int, int, int, int]:
    """The centre box that the usual 64x64 CelebA recipe crops (148x148 of 178x218), scaled to the image.

    Its width is 148/178 of the image's; its height follows the requested aspect ratio.
    """
    cw = round(width * 148 / 178)
    ch = min(height, round(cw * out_hw[0] / out_hw[1]))
    left, top = (width - cw) // 2, (height - ch) // 2
    return left, top, left + cw, top + ch


def _decode(path: Path, size: tuple[int, int] | None, crop: bool) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("RGB")
        if size is not None:
            if crop:
                im = im.crop(crop_box(im.width, im.height, size))
            if im.size != (size[1], size[0]):
                im = im.resize((size[1], size[0]), Image.Resampling.BICUBIC, reducing_gap=3.0)
        return np.asarray(im).transpose(2, 0, 1)


def _as_hw(size: int | tuple[int, int] | None) -> tuple[int, int] | None:
    return (size, size) if isinstance(size, int) else (tuple(size) if size is not None else None)


def celeba(split: Split = "train", root: str | os.PathLike | None = None, size: int | tuple[int, int] | None = 64,
           crop: bool = True, cache: bool = True, progress: bool = True) -> ImageDataset:
    """CelebA faces with their 40 binary attributes, read from the official folder layout.

    The folder holds ``img_align_celeba/`` (or ``img_align_celeba.zip``),
    ``list_attr_celeba.txt`` and optionally ``list_eval_partition.txt``. Any subset of
    the 202,599 images works (torchvision's ``CelebA`` refuses subsets); only images
    that are both listed and present are used.

    Args:
        split: ``"train"``, ``"valid"`` or ``"test"``. The official partition is used
            when it has rows of the requested kind among the present images; otherwise
            the deterministic rule of `split_mask` (80/10/10 by file order).
        size: output ``H`` (square) or ``(H, W)``; None keeps the native size.
        crop: centre-crop the face box (148x148 of 178x218, scaled) before resizing,
            the usual 64x64 recipe. With ``crop=False`` the whole image is resized.
        cache: keep decoded images in ``cache_dir()`` so later loads skip JPEG decoding.
            The cache is keyed by the folder, the list of images and the attribute
            file; if you replace JPEGs in place, pass ``cache=False`` once (or delete
            the ``celeba-*.safetensors`` files there).
    """
    _check_split(split)
    here = Path.cwd()
    places = _places(root, [("./data", here / "data")])
    folder = _search(places, _is_celeba)
    if folder is None:
        raise DataNotFoundError(_not_found("CelebA", places) + "\n" + CELEBA_SOURCES)
    _unpack_celeba_zip(folder)
    images, attrs, names = _celeba_split(folder, split, _as_hw(size), crop, cache, progress)
    return ImageDataset(images, attributes=attrs, attribute_names=tuple(names), name=f"celeba/{split}")


def _celeba_split(folder: Path, split: Split, hw: tuple[int, int] | None, crop: bool, cache: bool,
                  progress: bool) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """The present images of one split of a CelebA folder, decoded (or read from the cache).

    Only the split's images are decoded, into one preallocated array, so memory is the
    split's size once (the full training split at 218x178 is 19 GB of uint8).
    """
    from safetensors.torch import load_file, save_file

    attr_file = folder / "list_attr_celeba.txt"
    listed, names, values = _read_attributes(attr_file)
    present = set(os.listdir(folder / "img_align_celeba"))
    keep = [i for i, f in enumerate(listed) if f in present]
    if not keep:
        raise DataNotFoundError(f"{folder / 'img_align_celeba'} has none of the images that {attr_file} lists.")
    files = [listed[i] for i in keep]
    partition = _read_partition(folder / "list_eval_partition.txt")
    official = np.asarray([partition.get(f, 0) for f in files], dtype=np.int64)
    has_heldout = bool(((official == 1) | (official == 2)).any())
    wanted = {"train": 0, "valid": 1, "test": 2}[split]
    mask = official == wanted if has_heldout else split_mask(len(files), split).numpy()
    attrs = torch.from_numpy((values[keep] > 0).astype(np.uint8)[mask])
    all_files, files = files, [f for f, m in zip(files, mask) if m]

    stat = attr_file.stat()
    key = hashlib.sha1(json.dumps([str(folder.resolve()), all_files[0], all_files[-1], len(all_files), stat.st_size,
                                   stat.st_mtime_ns, hw, crop, split, has_heldout, 2]).encode()).hexdigest()[:16]
    cached = cache_dir() / f"celeba-{key}.safetensors"
    if cache and cached.is_file():
        try:
            return load_file(cached)["images"], attrs, names
        except Exception:  # a broken cache is rebuilt, never trusted
            cached.unlink()
    paths = [folder / "img_align_celeba" / f for f in files]
    try:
        first = _decode(paths[0] if paths else folder / "img_align_celeba" / all_files[0], hw, crop)
        images = np.empty((len(paths), *first.shape), dtype=np.uint8)
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            decoded = pool.map(lambda p: _decode(p, hw, crop), paths)
            if progress:
                from tqdm.auto import tqdm

                decoded = tqdm(decoded, total=len(paths), desc=f"decoding CelebA ({split})", unit="img")
            for i, image in enumerate(decoded):
                images[i] = image
    except (OSError, ValueError) as e:
        raise DataCorruptError(f"A CelebA image in {folder / 'img_align_celeba'} cannot be decoded ({e}).") from None
    images = torch.from_numpy(images)
    if cache:
        try:
            atomic_write(cached, lambda p: save_file({"images": images}, str(p)))
        except Exception:  # OutputError, or safetensors' own error type for a full disk
            pass  # no room for the cache: the images are decoded again next time, nothing is lost
    return images, attrs, names


# --------------------------------------------------------------------------- Frey Face

FREY_URL = "https://cs.nyu.edu/~roweis/data/frey_rawface.mat"


def frey_faces(split: Split = "train", root: str | os.PathLike | None = None, download: bool = True) -> ImageDataset:
    """The Frey Face data set: 1,965 grey 28x20 images of one face (Kingma & Welling's 2-D manifold).

    Read from ``frey_rawface.mat`` (key ``ff``, uint8, shape (560, 1965)). There is no
    official split; the deterministic 80/10/10 rule of `split_mask` is used.
    """
    _check_split(split)
    here = Path.cwd()
    places = _places(root, [("./data", here / "data")])

    def find(folder: Path) -> Path | None:
        for sub in (folder, folder / "frey-faces"):
            if (sub / "frey_rawface.mat").is_file():
                return sub / "frey_rawface.mat"
        return None

    path = _search(places, find)
    if path is None and download:
        target = Path(root).expanduser() if root is not None else cache_dir() / "frey-faces"
        created = missing_dirs(target)
        try:
            from torchvision.datasets.utils import download_url

            download_url(FREY_URL, str(target), "frey_rawface.mat")
            path = find(target)
        except Exception as e:
            remove_empty(created)
            places = places + [(f"download failed: {type(e).__name__}: {str(e).splitlines()[0]}", target)]
    if path is None:
        first = _not_found("The Frey Face data (frey_rawface.mat)", places)
        get = f"Download it from {FREY_URL} into one of these folders, or {{point}} its folder."
        raise DataNotFoundError(first + "\n" + get.format(point="pass as root="),
                                cli=first + "\n" + get.format(point="pass as --data-root"))
    try:
        from scipy.io import loadmat

        ff = loadmat(path)["ff"]
    except Exception as e:
        raise DataCorruptError(f"{path} is not a MATLAB file with the key 'ff' ({type(e).__name__}: {e}).") from None
    if ff.dtype != np.uint8 or ff.ndim != 2 or ff.shape[0] != 28 * 20:
        raise DataCorruptError(f"{path}: expected 'ff' as uint8 (560, N), got {ff.dtype} {ff.shape}.")
    images = torch.from_numpy(np.ascontiguousarray(ff.T.reshape(-1, 1, 28, 20)))
    return ImageDataset(images[split_mask(len(images), split)], name=f"frey/{split}")


DATASETS: dict[str, Callable[..., ImageDataset]] = {
    "fashion-mnist": fashion_mnist,
    "celeba": celeba,
    "frey": frey_faces,
}
