"""The face data sets: CelebA (aligned faces with 40 attributes) and the Frey faces, as uint8 tensors.

Found like every data set of `vaebook.data` (an explicit ``root``, ``$VAEBOOK_DATA``,
``./data``); CelebA cannot be downloaded automatically (`CELEBA_SOURCES` says where
to get it), the Frey faces are downloaded on demand. CelebA's JPEGs are decoded once,
centre-cropped and resized, and cached on disk.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from .data import ImageDataset, Split, _check_split, _not_found, _places, _search, cache_dir, split_mask
from .errors import DataCorruptError, DataNotFoundError
from .files import atomic_write, missing_dirs, remove_empty


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
