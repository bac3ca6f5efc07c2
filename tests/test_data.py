"""vaebook.data: IDX reading, where data sets are searched for, CelebA and Frey Face loading."""

from __future__ import annotations

import gzip
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

import vaebook.data as data
import vaebook.face_data as face_data
from conftest import (CELEBA_ATTRIBUTES, SHARED_DATA, celeba_attr_text, idx_bytes, make_celeba, make_fmnist,
                      write_idx, write_jpeg)
from vaebook.data import (FASHION_MNIST_CLASSES, ImageDataset, celeba, fashion_mnist, frey_faces, read_idx,
                          to_float)
from vaebook.errors import DataCorruptError, DataNotFoundError, VaebookError

# --------------------------------------------------------------------------- read_idx


@pytest.mark.parametrize("name", ["x.idx.gz", "x.idx"])
@pytest.mark.parametrize("shape", [(7,), (3, 4, 5), (2, 3, 2, 2)])
def test_read_idx_round_trip(tmp_path, name, shape):
    rng = np.random.default_rng(1)
    array = rng.integers(0, 256, size=shape, dtype=np.uint8)
    path = write_idx(tmp_path / name, array)
    out = read_idx(path)
    assert out.dtype == torch.uint8
    assert tuple(out.shape) == shape
    assert np.array_equal(out.numpy(), array)


def test_read_idx_gz_is_really_gzipped(tmp_path):
    path = write_idx(tmp_path / "a.gz", np.arange(12, dtype=np.uint8).reshape(3, 4))
    assert path.read_bytes()[:2] == b"\x1f\x8b"  # the gzip magic: read_idx must decompress
    assert read_idx(path).tolist() == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]


def test_read_idx_accepts_str_path(tmp_path):
    path = write_idx(tmp_path / "a", np.array([5, 6, 7], dtype=np.uint8))
    assert read_idx(str(path)).tolist() == [5, 6, 7]


def _corrupt_cases(tmp_path: Path) -> dict[str, Path]:
    good = idx_bytes(np.arange(200, dtype=np.uint8).reshape(2, 10, 10))
    cases = {
        # the data is cut short (an interrupted download of the uncompressed file)
        "truncated.idx": good[:-17],
        # the gzip stream is cut short
        "truncated-stream.gz": gzip.compress(good)[:40],
        # a valid gzip stream of an IDX file that lost its last bytes
        "truncated-data.gz": gzip.compress(good[:-1]),
        # too many bytes
        "padded.idx": good + b"\x00",
        # wrong magic / type byte (0x0D = float32) / too many dimensions
        "bad-magic.idx": b"\x01\x02" + good[2:],
        "float-type.idx": b"\x00\x00\x0d\x03" + good[4:],
        "ndim9.idx": b"\x00\x00\x08\x09" + good[4:],
        "empty.idx": b"",
        # a file named .gz that is not gzip at all
        "not-gzip.gz": good,
        "html.gz": b"<!DOCTYPE html><html><body>Not found</body></html>",
    }
    paths = {}
    for name, blob in cases.items():
        (tmp_path / name).write_bytes(blob)
        paths[name] = tmp_path / name
    return paths


@pytest.mark.parametrize("case", ["truncated.idx", "truncated-stream.gz", "truncated-data.gz", "padded.idx",
                                  "bad-magic.idx", "float-type.idx", "ndim9.idx", "empty.idx", "not-gzip.gz",
                                  "html.gz"])
def test_read_idx_corrupt_raises_data_corrupt_naming_file(tmp_path, case):
    path = _corrupt_cases(tmp_path)[case]
    with pytest.raises(DataCorruptError) as info:
        read_idx(path)
    assert str(path) in str(info.value)
    assert isinstance(info.value, VaebookError)


def test_read_idx_truncated_inside_header_raises_data_corrupt(tmp_path):
    """BUG (src/vaebook/data.py, read_idx): a file cut off inside its dimension header
    (fewer than 4 + 4*ndim bytes) reaches ``struct.unpack`` and raises ``struct.error``
    instead of `DataCorruptError`. Fix: check ``len(data) < header`` before unpacking."""
    problems = []
    for i, blob in enumerate([b"\x00\x00\x08\x03\x00\x00", b"\x00\x00\x08\x03\x00\x00\x00\x02\x00\x00"]):
        for gz in (False, True):
            path = tmp_path / (f"cut{i}.gz" if gz else f"cut{i}")
            path.write_bytes(gzip.compress(blob) if gz else blob)
            try:
                read_idx(path)
            except DataCorruptError as e:
                if str(path) not in str(e):
                    problems.append(f"{path.name}: message does not name the file")
            except Exception as e:  # noqa: BLE001
                problems.append(f"{path.name}: {type(e).__name__}: {e}")
            else:
                problems.append(f"{path.name}: accepted")
    assert not problems, ("read_idx must raise DataCorruptError naming the file when the header is cut short "
                          "(check len(data) >= 4 + 4*ndim before struct.unpack); got: " + "; ".join(problems))


def test_read_idx_missing_file(tmp_path):
    with pytest.raises(DataCorruptError, match="nope.gz"):
        read_idx(tmp_path / "nope.gz")


# --------------------------------------------------------------------------- Fashion-MNIST: search order


def _train_values(ds: ImageDataset) -> list[int]:
    """The fill value of each image (pixel (1, 1)): tells which fake folder was read."""
    return ds.images[:, 0, 1, 1].tolist()


def test_fmnist_reads_images_labels_and_classes(tmp_path, isolated_env):
    made = make_fmnist(tmp_path / "a", n_train=5, n_test=3, base=10)
    train = fashion_mnist("train", root=tmp_path / "a", download=False)
    test = fashion_mnist("test", root=tmp_path / "a", download=False)
    for ds, (images, labels), n in ((train, made["train"], 5), (test, made["test"], 3)):
        assert ds.images.dtype == torch.uint8 and tuple(ds.images.shape) == (n, 1, 28, 28)
        assert np.array_equal(ds.images[:, 0].numpy(), images)
        assert ds.labels.dtype == torch.int64
        assert ds.labels.tolist() == labels.tolist()
        assert ds.class_names == FASHION_MNIST_CLASSES
        assert len(ds) == n and ds.shape == (1, 28, 28)
    assert _train_values(train) == [10, 11, 12, 13, 14]
    assert _train_values(test) == [110, 111, 112]
    assert train.name == "fashion-mnist/train" and test.name == "fashion-mnist/test"
    assert FASHION_MNIST_CLASSES[0] == "T-shirt/top" and FASHION_MNIST_CLASSES[9] == "Ankle boot"
    # the tensor owns its memory (not a view into a bytes buffer) and floats are in [0, 1]
    assert torch.equal(train.float(2), train.images[:2].float() / 255)
    assert float(to_float(train.images).max()) <= 1.0


def test_fmnist_explicit_root_wins_over_env(tmp_path, isolated_env, monkeypatch):
    make_fmnist(tmp_path / "root", base=10)
    make_fmnist(tmp_path / "env", base=50)
    monkeypatch.setenv("VAEBOOK_DATA", str(tmp_path / "env"))
    assert _train_values(fashion_mnist("train", root=tmp_path / "root", download=False)) == [10, 11, 12, 13, 14]
    assert _train_values(fashion_mnist("train", download=False)) == [50, 51, 52, 53, 54]


def test_fmnist_explicit_root_is_the_only_place_searched(tmp_path, isolated_env, monkeypatch):
    make_fmnist(tmp_path / "env", base=50)
    monkeypatch.setenv("VAEBOOK_DATA", str(tmp_path / "env"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataNotFoundError) as info:
        fashion_mnist("train", root=tmp_path / "empty", download=False)
    assert str(tmp_path / "empty") in str(info.value)


def test_fmnist_env_wins_over_debian_folder(tmp_path, isolated_env, monkeypatch):
    make_fmnist(tmp_path / "env", base=50)
    make_fmnist(tmp_path / "debian", base=90)
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST", tmp_path / "debian")
    monkeypatch.setenv("VAEBOOK_DATA", str(tmp_path / "env"))
    assert _train_values(fashion_mnist("train", download=False)) == [50, 51, 52, 53, 54]
    # without $VAEBOOK_DATA (or with it empty) the Debian folder is used
    monkeypatch.setenv("VAEBOOK_DATA", "")
    assert _train_values(fashion_mnist("train", download=False)) == [90, 91, 92, 93, 94]
    monkeypatch.delenv("VAEBOOK_DATA")
    assert _train_values(fashion_mnist("test", download=False)) == [190, 191, 192]


def test_fmnist_env_without_data_falls_through_to_debian(tmp_path, isolated_env, monkeypatch):
    (tmp_path / "env").mkdir()
    make_fmnist(tmp_path / "debian", base=90)
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST", tmp_path / "debian")
    monkeypatch.setenv("VAEBOOK_DATA", str(tmp_path / "env"))
    assert _train_values(fashion_mnist("train", download=False)) == [90, 91, 92, 93, 94]


def test_fmnist_torchvision_layout(tmp_path, isolated_env):
    made = make_fmnist(tmp_path / "tv", base=30, layout="torchvision")
    assert (tmp_path / "tv" / "FashionMNIST" / "raw" / "train-images-idx3-ubyte.gz").is_file()
    ds = fashion_mnist("train", root=tmp_path / "tv", download=False)
    assert _train_values(ds) == [30, 31, 32, 33, 34]
    assert ds.labels.tolist() == made["train"][1].tolist()


def test_fmnist_torchvision_layout_uncompressed(tmp_path, isolated_env):
    # torchvision unpacks the .gz files next to them; only the raw files are needed
    make_fmnist(tmp_path / "tv", base=40, layout="torchvision", gz=False)
    assert _train_values(fashion_mnist("train", root=tmp_path / "tv", download=False)) == [40, 41, 42, 43, 44]


def test_fmnist_uncompressed_flat(tmp_path, isolated_env):
    make_fmnist(tmp_path / "raw", base=60, gz=False)
    assert not list((tmp_path / "raw").glob("*.gz"))
    assert _train_values(fashion_mnist("test", root=tmp_path / "raw", download=False)) == [160, 161, 162]


def test_fmnist_subfolder_named_fashion_mnist(tmp_path, isolated_env):
    make_fmnist(tmp_path / "top" / "fashion-mnist", base=70)
    assert _train_values(fashion_mnist("train", root=tmp_path / "top", download=False)) == [70, 71, 72, 73, 74]


def test_fmnist_incomplete_folder_is_not_used(tmp_path, isolated_env):
    make_fmnist(tmp_path / "part", base=70)
    (tmp_path / "part" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataNotFoundError):
        fashion_mnist("train", root=tmp_path / "part", download=False)


def test_fmnist_bad_split(tmp_path, isolated_env):
    with pytest.raises(ValueError, match="valid"):
        fashion_mnist("valid", root=tmp_path, download=False)


def test_fmnist_mismatched_files_raise_corrupt(tmp_path, isolated_env):
    make_fmnist(tmp_path / "m", n_train=5)
    write_idx(tmp_path / "m" / "train-labels-idx1-ubyte.gz", np.zeros(4, dtype=np.uint8))
    with pytest.raises(DataCorruptError, match="train-images-idx3-ubyte"):
        fashion_mnist("train", root=tmp_path / "m", download=False)
    write_idx(tmp_path / "m" / "train-labels-idx1-ubyte.gz", np.zeros(5, dtype=np.uint8))
    write_idx(tmp_path / "m" / "train-images-idx3-ubyte.gz", np.zeros((5, 27, 27), dtype=np.uint8))
    with pytest.raises(DataCorruptError):
        fashion_mnist("train", root=tmp_path / "m", download=False)


def test_fmnist_corrupt_file_in_folder_names_it(tmp_path, isolated_env):
    make_fmnist(tmp_path / "c")
    bad = tmp_path / "c" / "t10k-images-idx3-ubyte.gz"
    bad.write_bytes(bad.read_bytes()[:30])
    with pytest.raises(DataCorruptError) as info:
        fashion_mnist("test", root=tmp_path / "c", download=False)
    assert str(bad) in str(info.value)


# --------------------------------------------------------------------------- Fashion-MNIST: missing


def test_fmnist_missing_message_names_places_and_fixes(tmp_path, isolated_env, monkeypatch):
    (tmp_path / "env").mkdir()
    monkeypatch.setenv("VAEBOOK_DATA", str(tmp_path / "env"))
    with pytest.raises(DataNotFoundError) as info:
        fashion_mnist("train", download=False)
    msg, first = str(info.value), str(info.value).splitlines()[0]
    # the first line (what `figures` and `reproduce` print when they skip) names every place searched
    assert first.startswith("Fashion-MNIST was not found. Searched: ")
    assert str(tmp_path / "env") in first and "$VAEBOOK_DATA" in first
    assert str(isolated_env["debian"]) in first
    assert "apt-get install dataset-fashion-mnist" in msg
    # Python's words for a library user, the command line's for the CLI
    assert "Colab" in msg and "download=True" in msg and "root=" in msg and "--" not in msg
    cli = info.value.cli
    assert cli.splitlines()[0] == first and "--no-download" in cli and "--data-root" in cli and "download=" not in cli


def test_fmnist_missing_with_root_names_root(tmp_path, isolated_env):
    empty = tmp_path / "nothing-here"
    empty.mkdir()
    with pytest.raises(DataNotFoundError) as info:
        fashion_mnist("test", root=empty, download=False)
    msg = str(info.value)
    assert str(empty) in msg
    assert "apt-get install dataset-fashion-mnist" in msg and "Colab" in msg


# --------------------------------------------------------------------------- Fashion-MNIST: real data

REAL_FMNIST = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.skipif(not (REAL_FMNIST / "train-images-idx3-ubyte.gz").is_file(),
                    reason="dataset-fashion-mnist is not installed")
def test_real_fashion_mnist(isolated_env):
    train = fashion_mnist("train", root=REAL_FMNIST, download=False)
    test = fashion_mnist("test", root=REAL_FMNIST, download=False)
    assert tuple(train.images.shape) == (60000, 1, 28, 28) and train.images.dtype == torch.uint8
    assert tuple(test.images.shape) == (10000, 1, 28, 28)
    assert torch.bincount(train.labels, minlength=10).tolist() == [6000] * 10
    assert torch.bincount(test.labels, minlength=10).tolist() == [1000] * 10
    assert int(train.images.max()) == 255 and int(train.images.min()) == 0
    # the well-known first labels of the official files: Ankle boot, T-shirt/top, T-shirt/top, Dress
    assert train.labels[:4].tolist() == [9, 0, 0, 3]
    assert test.labels[:4].tolist() == [9, 2, 1, 1]


# --------------------------------------------------------------------------- CelebA (miniature)


def _means(ds: ImageDataset) -> np.ndarray:
    """Each image's mean colour, (N, 3)."""
    return ds.images.double().mean(dim=(2, 3)).numpy()


def _load_all(root, **kw) -> dict[str, ImageDataset]:
    return {s: celeba(s, root=root, progress=False, **kw) for s in ("train", "valid", "test")}


def test_celeba_default_size_and_values(tmp_path, isolated_env):
    made = make_celeba(tmp_path / "celeba", n=25)
    ds = celeba("train", root=tmp_path / "celeba", progress=False)
    assert ds.images.dtype == torch.uint8
    train_idx = [i for i in range(25) if i % 10 < 8]
    assert tuple(ds.images.shape) == (len(train_idx), 3, 64, 64) == (21, 3, 64, 64)
    # solid colours survive crop + resize (JPEG tolerance), in file order
    assert np.abs(_means(ds) - made["colours"][train_idx]).max() < 4
    assert ds.attribute_names == tuple(CELEBA_ATTRIBUTES)
    assert ds.name == "celeba/train" and ds.labels is None


def test_celeba_other_sizes(tmp_path, isolated_env):
    made = make_celeba(tmp_path / "celeba", n=12)
    rect = celeba("valid", root=tmp_path / "celeba", size=(32, 24), progress=False)
    assert tuple(rect.images.shape) == (1, 3, 32, 24)
    native = celeba("train", root=tmp_path / "celeba", size=None, progress=False)
    train_idx = [i for i in range(12) if i % 10 < 8]
    assert tuple(native.images.shape) == (10, 3, 109, 89)
    assert np.abs(_means(native) - made["colours"][train_idx]).max() < 4
    small = celeba("test", root=tmp_path / "celeba", size=16, crop=False, progress=False)
    assert tuple(small.images.shape) == (1, 3, 16, 16)
    assert np.abs(_means(small)[0] - made["colours"][9]).max() < 4


def test_celeba_attributes_are_zero_one_and_match_file(tmp_path, isolated_env):
    made = make_celeba(tmp_path / "celeba", n=25, seed=3)
    sets = _load_all(tmp_path / "celeba", size=8)
    expected01 = (made["attrs"] > 0).astype(np.uint8)
    for split, rule in (("train", lambda i: i % 10 < 8), ("valid", lambda i: i % 10 == 8),
                        ("test", lambda i: i % 10 == 9)):
        idx = [i for i in range(25) if rule(i)]
        attrs = sets[split].attributes
        assert attrs.dtype == torch.uint8 and set(attrs.unique().tolist()) <= {0, 1}
        assert np.array_equal(attrs.numpy(), expected01[idx])
    # column 0 ("5_o_Clock_Shadow") was set to 1 exactly for even image numbers 0, 2, ...
    assert sets["valid"].attributes[:, 0].tolist() == [1, 1]  # images 8 and 18
    assert sets["test"].attributes[:, 0].tolist() == [0, 0]  # images 9 and 19


def test_celeba_deterministic_split_partitions_images(tmp_path, isolated_env):
    made = make_celeba(tmp_path / "celeba", n=25)
    sets = _load_all(tmp_path / "celeba", size=8)
    assert {s: len(d) for s, d in sets.items()} == {"train": 21, "valid": 2, "test": 2}
    # which image went where: identify each by its colour
    colours = made["colours"]
    where = {}
    for split, ds in sets.items():
        for m in _means(ds):
            i = int(np.argmin(np.abs(colours - m).sum(axis=1)))
            assert np.abs(colours[i] - m).max() < 4
            assert i not in where, f"image {i} is in both {where.get(i)} and {split}"
            where[i] = split
    assert sorted(where) == list(range(25))
    assert [i for i in range(25) if where[i] == "test"] == [9, 19]
    assert [i for i in range(25) if where[i] == "valid"] == [8, 18]


def test_celeba_official_partition_is_used_when_it_has_heldout_rows(tmp_path, isolated_env):
    partition = [0] * 15 + [1] * 4 + [2] * 6
    made = make_celeba(tmp_path / "celeba", n=25, partition=partition)
    sets = _load_all(tmp_path / "celeba", size=8)
    assert {s: len(d) for s, d in sets.items()} == {"train": 15, "valid": 4, "test": 6}
    expected01 = (made["attrs"] > 0).astype(np.uint8)
    assert np.array_equal(sets["train"].attributes.numpy(), expected01[:15])
    assert np.array_equal(sets["valid"].attributes.numpy(), expected01[15:19])
    assert np.array_equal(sets["test"].attributes.numpy(), expected01[19:])
    assert np.abs(_means(sets["test"]) - made["colours"][19:]).max() < 4


def test_celeba_without_partition_file_uses_deterministic_split(tmp_path, isolated_env):
    make_celeba(tmp_path / "celeba", n=20)
    (tmp_path / "celeba" / "list_eval_partition.txt").unlink()
    sets = _load_all(tmp_path / "celeba", size=8)
    assert {s: len(d) for s, d in sets.items()} == {"train": 16, "valid": 2, "test": 2}


def test_celeba_second_load_reads_cache(tmp_path, isolated_env, monkeypatch):
    make_celeba(tmp_path / "celeba", n=12)
    first = celeba("train", root=tmp_path / "celeba", size=16, progress=False)
    cached = list(isolated_env["cache"].glob("celeba-*.safetensors"))
    assert len(cached) == 1  # only the split that was asked for is decoded and cached
    assert not list(isolated_env["cache"].glob("*.tmp"))
    celeba("test", root=tmp_path / "celeba", size=16, progress=False)
    assert len(list(isolated_env["cache"].glob("celeba-*.safetensors"))) == 2

    def no_decoding(*args, **kwargs):
        raise RuntimeError("decoded although a cache exists")

    monkeypatch.setattr(face_data, "_decode", no_decoding)
    second = celeba("train", root=tmp_path / "celeba", size=16, progress=False)
    assert torch.equal(first.images, second.images)
    assert torch.equal(first.attributes, second.attributes)
    test = celeba("test", root=tmp_path / "celeba", size=16, progress=False)  # its own cache
    assert len(test) == 1
    # the patch is effective: another size is not cached and must decode
    with pytest.raises(RuntimeError, match="decoded although"):
        celeba("train", root=tmp_path / "celeba", size=8, progress=False)
    with pytest.raises(RuntimeError, match="decoded although"):
        celeba("train", root=tmp_path / "celeba", size=16, cache=False, progress=False)


def test_celeba_broken_cache_is_rebuilt(tmp_path, isolated_env):
    make_celeba(tmp_path / "celeba", n=12)
    first = celeba("train", root=tmp_path / "celeba", size=16, progress=False)
    (cached,) = isolated_env["cache"].glob("celeba-*.safetensors")
    cached.write_bytes(b"garbage")
    second = celeba("train", root=tmp_path / "celeba", size=16, progress=False)
    assert torch.equal(first.images, second.images)


def test_celeba_missing_image_is_skipped(tmp_path, isolated_env):
    made = make_celeba(tmp_path / "celeba", n=25)
    (tmp_path / "celeba" / "img_align_celeba" / "000005.jpg").unlink()  # image index 4
    sets = _load_all(tmp_path / "celeba", size=8)
    present = [i for i in range(25) if i != 4]
    assert sum(len(d) for d in sets.values()) == 24
    expected01 = (made["attrs"] > 0).astype(np.uint8)
    train_idx = [present[j] for j in range(24) if j % 10 < 8]
    assert np.array_equal(sets["train"].attributes.numpy(), expected01[train_idx])
    assert np.abs(_means(sets["train"]) - made["colours"][train_idx]).max() < 4
    all_means = np.concatenate([_means(d) for d in sets.values()])
    assert np.abs(all_means - made["colours"][4]).max(axis=1).min() > 10  # colour 4 is nowhere


def test_celeba_unlisted_image_is_ignored(tmp_path, isolated_env):
    make_celeba(tmp_path / "celeba", n=10)
    write_jpeg(tmp_path / "celeba" / "img_align_celeba" / "999999.jpg", (0, 0, 0))
    sets = _load_all(tmp_path / "celeba", size=8)
    assert sum(len(d) for d in sets.values()) == 10


def test_celeba_centre_crop_keeps_solid_colour(tmp_path, isolated_env):
    from PIL import Image

    folder = tmp_path / "celeba"
    make_celeba(folder, n=1)
    colour = (200, 40, 90)
    write_jpeg(folder / "img_align_celeba" / "000001.jpg", colour)
    ds = celeba("train", root=folder, size=64, progress=False, cache=False)
    assert (ds.images[0].double() - torch.tensor(colour, dtype=torch.float64)[:, None, None]).abs().max() <= 6

    # a red frame outside the 148/178 centre box: cropping removes it, resizing the whole image keeps it
    im = Image.new("RGB", (89, 109), (255, 0, 0))
    im.paste((0, 200, 0), (7, 17, 82, 92))  # the 64x64 crop box of an 89x109 image is (7, 17, 81, 91)
    im.save(folder / "img_align_celeba" / "000001.jpg", format="PNG")  # lossless; PIL reads by content
    cropped = celeba("train", root=folder, size=64, progress=False, cache=False).images[0].double()
    assert cropped[0].max() < 60 and cropped[1].min() > 150  # no red anywhere, all green
    whole = celeba("train", root=folder, size=64, crop=False, progress=False, cache=False).images[0].double()
    assert whole[0, 0, 0] > 200 and whole[1, 32, 32] > 150  # red corner, green centre


def test_celeba_layout_inside_celeba_subfolder(tmp_path, isolated_env):
    make_celeba(tmp_path / "top" / "celeba", n=10)
    assert len(celeba("train", root=tmp_path / "top", size=8, progress=False)) == 8


def test_vaebook_data_may_list_several_folders_one_per_data_set(tmp_path, isolated_env, monkeypatch):
    """$VAEBOOK_DATA is a list like $PATH: CelebA found in one folder, the Frey faces in another, from any
    working directory; the not-found message names every folder listed."""
    import os

    make_celeba(tmp_path / "faces" / "celeba", n=10)
    _write_frey(tmp_path / "frey", np.zeros((560, 20), dtype=np.uint8))
    monkeypatch.setenv("VAEBOOK_DATA", os.pathsep.join([str(tmp_path / "faces"), str(tmp_path / "frey")]))
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert len(celeba("train", size=8, progress=False)) == 8
    assert len(frey_faces("train", download=False)) == 16
    monkeypatch.setenv("VAEBOOK_DATA", os.pathsep.join([str(tmp_path / "none-1"), str(tmp_path / "none-2")]))
    with pytest.raises(DataNotFoundError) as err:
        celeba("train", size=8, progress=False)
    first = str(err.value).splitlines()[0]
    assert str(tmp_path / "none-1") in first and str(tmp_path / "none-2") in first


def test_celeba_env_variable(tmp_path, isolated_env, monkeypatch):
    make_celeba(tmp_path / "envdata", n=10)
    monkeypatch.setenv("VAEBOOK_DATA", str(tmp_path / "envdata"))
    assert len(celeba("valid", size=8, progress=False)) == 1


def test_celeba_html_zip_raises_corrupt(tmp_path, isolated_env):
    folder = tmp_path / "celeba"
    made = make_celeba(folder, n=3)
    for f in made["files"]:
        (folder / "img_align_celeba" / f).unlink()
    (folder / "img_align_celeba").rmdir()
    (folder / "img_align_celeba.zip").write_text(
        "<!DOCTYPE html><html><head><title>Google Drive - Quota exceeded</title></head>"
        "<body>Too many users have viewed or downloaded this file recently.</body></html>")
    with pytest.raises(DataCorruptError) as info:
        celeba("train", root=folder, progress=False)
    msg = str(info.value)
    assert str(folder / "img_align_celeba.zip") in msg
    assert "HTML page" in msg and "quota" in msg
    assert not (folder / "img_align_celeba").exists()


def test_celeba_truncated_zip_raises_corrupt(tmp_path, isolated_env):
    folder = tmp_path / "celeba"
    make_celeba(folder, n=3, zipped=True)
    z = folder / "img_align_celeba.zip"
    z.write_bytes(z.read_bytes()[:100])
    with pytest.raises(DataCorruptError, match="not a zip archive"):
        celeba("train", root=folder, progress=False)


def test_celeba_real_zip_is_unpacked_and_loaded(tmp_path, isolated_env):
    folder = tmp_path / "celeba"
    made = make_celeba(folder, n=12, zipped=True)
    assert not (folder / "img_align_celeba").exists()
    assert zipfile.is_zipfile(folder / "img_align_celeba.zip")
    ds = celeba("train", root=folder, size=16, progress=False)
    assert sorted(os.listdir(folder / "img_align_celeba")) == made["files"]
    train_idx = [i for i in range(12) if i % 10 < 8]
    assert tuple(ds.images.shape) == (10, 3, 16, 16)
    assert np.abs(_means(ds) - made["colours"][train_idx]).max() < 4


def test_celeba_missing_names_folder_and_sources(tmp_path, isolated_env):
    empty = tmp_path / "no-celeba"
    empty.mkdir()
    with pytest.raises(DataNotFoundError) as info:
        celeba("train", root=empty, progress=False)
    msg = str(info.value)
    assert str(empty) in msg
    assert "img_align_celeba" in msg and "list_attr_celeba.txt" in msg
    assert "mmlab.ie.cuhk.edu.hk" in msg and "Kaggle" in msg
    assert "VAEBOOK_DATA" in msg


def test_celeba_no_listed_image_present(tmp_path, isolated_env):
    folder = tmp_path / "celeba"
    made = make_celeba(folder, n=3)
    for f in made["files"]:
        (folder / "img_align_celeba" / f).unlink()
    with pytest.raises(DataNotFoundError, match="img_align_celeba"):
        celeba("train", root=folder, progress=False)


def test_celeba_bad_attribute_file(tmp_path, isolated_env):
    folder = tmp_path / "celeba"
    made = make_celeba(folder, n=3)
    attr = folder / "list_attr_celeba.txt"
    good = celeba_attr_text(made["files"], made["attrs"])
    lines = good.splitlines()
    bad_value = "\n".join(lines[:3] + [lines[3].replace("000002.jpg", "000002.jpg x", 1)] + lines[4:])
    bad_count = "\n".join(["7"] + lines[1:])
    short_row = "\n".join(lines[:3] + [lines[3].rsplit(" ", 3)[0]] + lines[4:])
    for text in (bad_value, bad_count, short_row, ""):
        attr.write_text(text)
        with pytest.raises(DataCorruptError) as info:
            celeba("train", root=folder, progress=False)
        assert str(attr) in str(info.value)


def test_celeba_undecodable_image_raises_corrupt(tmp_path, isolated_env):
    folder = tmp_path / "celeba"
    make_celeba(folder, n=3)
    (folder / "img_align_celeba" / "000002.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(DataCorruptError, match="img_align_celeba"):
        celeba("train", root=folder, progress=False, cache=False)


def test_celeba_bad_split(tmp_path, isolated_env):
    with pytest.raises(ValueError, match="split"):
        celeba("validation", root=tmp_path, progress=False)


# --------------------------------------------------------------------------- CelebA (shared real subset)

CELEBA_10K = Path(__file__).resolve().parents[2] / "shared" / "data" / "celeba-10k"
assert CELEBA_10K == SHARED_DATA / "celeba-10k"


@pytest.fixture(scope="module")
def celeba10k(tmp_path_factory):
    if not (CELEBA_10K / "celeba" / "list_attr_celeba.txt").is_file():
        pytest.skip(f"the CelebA development subset is not at {CELEBA_10K}")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VAEBOOK_CACHE", str(tmp_path_factory.mktemp("celeba-cache")))
        mp.delenv("VAEBOOK_DATA", raising=False)
        yield {s: celeba(s, root=CELEBA_10K, size=16, progress=False) for s in ("train", "valid", "test")}


def test_celeba10k_splits(celeba10k):
    assert {s: len(d) for s, d in celeba10k.items()} == {"train": 8000, "valid": 1000, "test": 1000}
    for ds in celeba10k.values():
        assert tuple(ds.images.shape[1:]) == (3, 16, 16) and ds.images.dtype == torch.uint8
        assert tuple(ds.attributes.shape) == (len(ds), 40)
        assert float(ds.images.double().std()) > 20  # real pictures, not blank
    names = celeba10k["train"].attribute_names
    assert len(names) == 40 and "Smiling" in names and "Eyeglasses" in names
    assert names == tuple(CELEBA_ATTRIBUTES)


def test_celeba10k_attributes_match_file(celeba10k):
    lines = (CELEBA_10K / "celeba" / "list_attr_celeba.txt").read_text().splitlines()
    rows = {line.split()[0]: [int(v) > 0 for v in line.split()[1:]] for line in lines[2:] if line.strip()}
    # deterministic split: file index 0 -> train[0], 8 -> valid[0], 9 -> test[0], 10 -> train[8]
    assert celeba10k["train"].attributes[0].tolist() == rows["000001.jpg"]
    assert celeba10k["valid"].attributes[0].tolist() == rows["000009.jpg"]
    assert celeba10k["test"].attributes[0].tolist() == rows["000010.jpg"]
    assert celeba10k["train"].attributes[8].tolist() == rows["000011.jpg"]
    smiling = celeba10k["train"].attribute_names.index("Smiling")
    total = sum(int(d.attributes[:, smiling].sum()) for d in celeba10k.values())
    assert total == sum(r[smiling] for r in rows.values())


# --------------------------------------------------------------------------- Frey Face


def _write_frey(folder: Path, ff: np.ndarray, key: str = "ff") -> Path:
    from scipy.io import savemat

    folder.mkdir(parents=True, exist_ok=True)
    savemat(folder / "frey_rawface.mat", {key: ff})
    return folder / "frey_rawface.mat"


def test_frey_images_in_order(tmp_path, isolated_env):
    ff = np.random.default_rng(0).integers(0, 256, size=(560, 30), dtype=np.uint8)
    _write_frey(tmp_path / "frey", ff)
    all_images = ff.T.reshape(-1, 28, 20)
    sizes = {}
    for split, rule in (("train", lambda i: i % 10 < 8), ("valid", lambda i: i % 10 == 8),
                        ("test", lambda i: i % 10 == 9)):
        ds = frey_faces(split, root=tmp_path / "frey", download=False)
        idx = [i for i in range(30) if rule(i)]
        assert ds.images.dtype == torch.uint8 and tuple(ds.images.shape) == (len(idx), 1, 28, 20)
        assert np.array_equal(ds.images[:, 0].numpy(), all_images[idx])
        assert ds.name == f"frey/{split}"
        sizes[split] = len(ds)
    assert sizes == {"train": 24, "valid": 3, "test": 3}


def test_frey_subfolder_and_env(tmp_path, isolated_env, monkeypatch):
    ff = np.arange(560 * 10, dtype=np.int64).reshape(560, 10).astype(np.uint8)
    _write_frey(tmp_path / "top" / "frey-faces", ff)
    monkeypatch.setenv("VAEBOOK_DATA", str(tmp_path / "top"))
    ds = frey_faces("test", download=False)
    assert np.array_equal(ds.images[0, 0].numpy(), ff[:, 9].reshape(28, 20))


@pytest.mark.parametrize("key, ff", [
    ("faces", np.zeros((560, 5), dtype=np.uint8)),
    ("ff", np.zeros((100, 5), dtype=np.uint8)),
    ("ff", np.zeros((560, 5), dtype=np.float64)),
], ids=["wrong-key", "wrong-shape", "wrong-dtype"])
def test_frey_wrong_content_raises_corrupt(tmp_path, isolated_env, key, ff):
    path = _write_frey(tmp_path / "frey", ff, key=key)
    with pytest.raises(DataCorruptError) as info:
        frey_faces("train", root=tmp_path / "frey", download=False)
    assert str(path) in str(info.value)


def test_frey_not_a_mat_file_raises_corrupt(tmp_path, isolated_env):
    (tmp_path / "frey").mkdir()
    (tmp_path / "frey" / "frey_rawface.mat").write_text("<html>404</html>")
    with pytest.raises(DataCorruptError, match="frey_rawface.mat"):
        frey_faces("train", root=tmp_path / "frey", download=False)


def test_frey_missing(tmp_path, isolated_env):
    empty = tmp_path / "nofrey"
    empty.mkdir()
    with pytest.raises(DataNotFoundError) as info:
        frey_faces("train", root=empty, download=False)
    msg = str(info.value)
    assert str(empty) in msg and "frey_rawface.mat" in msg and data.FREY_URL in msg


REAL_FREY = SHARED_DATA / "frey-faces" / "frey_rawface.mat"


@pytest.mark.skipif(not REAL_FREY.is_file(), reason="the Frey Face development copy is absent")
def test_real_frey(isolated_env):
    from scipy.io import loadmat

    sets = {s: frey_faces(s, root=REAL_FREY.parent, download=False) for s in ("train", "valid", "test")}
    assert sum(len(d) for d in sets.values()) == 1965
    assert {s: len(d) for s, d in sets.items()} == {"train": 1573, "valid": 196, "test": 196}
    ff = loadmat(REAL_FREY)["ff"]
    assert np.array_equal(sets["train"].images[0, 0].numpy(), ff[:, 0].reshape(28, 20))
    assert np.array_equal(sets["test"].images[-1, 0].numpy(), ff[:, 1959].reshape(28, 20))


# --------------------------------------------------------------------------- ImageDataset


def test_image_dataset_subset_and_checks():
    images = torch.arange(4 * 2 * 2, dtype=torch.uint8).view(4, 1, 2, 2)
    ds = ImageDataset(images, labels=torch.tensor([3, 1, 4, 1]))
    assert ds.subset(2).labels.tolist() == [3, 1]
    sub = ds.subset([3, 0])
    assert sub.labels.tolist() == [1, 3] and torch.equal(sub.images, images[[3, 0]])
    assert ds.subset([1]).attributes is None
    with pytest.raises(ValueError):
        ImageDataset(images.float())
    with pytest.raises(ValueError):
        ImageDataset(images[:, 0])


def test_a_failed_download_leaves_no_empty_folders(tmp_path, isolated_env, monkeypatch):
    """torchvision creates root/FashionMNIST/raw before it downloads; when the download fails, vaebook
    removes the folders it made (and only those), then names the failure in its message."""
    import torchvision.datasets

    def offline(root, train=True, download=False):
        (Path(root) / "FashionMNIST" / "raw").mkdir(parents=True, exist_ok=True)
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nTried https://..., got: offline")

    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", offline)
    users = tmp_path / "my-data"
    users.mkdir()
    (users / "notes.txt").write_text("mine")
    for root in (users / "fmnist" / "new", users):
        with pytest.raises(DataNotFoundError) as info:
            fashion_mnist("train", root=root, download=True)
        assert "torchvision download failed: RuntimeError: Error downloading train-images-idx3-ubyte.gz:" in str(info.value)
        assert sorted(p.name for p in users.iterdir()) == ["notes.txt"]  # no empty folders, nothing of mine removed
    with pytest.raises(DataNotFoundError):
        fashion_mnist("train", download=True)  # the default target: the cache folder, created for the download
    assert not isolated_env["cache"].exists()


def test_a_root_that_does_not_exist_is_called_that(tmp_path, isolated_env):
    with pytest.raises(DataNotFoundError) as info:
        fashion_mnist("train", root=tmp_path / "typo", download=False)
    assert f"Searched: {tmp_path / 'typo'} (the path you gave, does not exist)." in str(info.value)


def test_an_experiment_loads_celeba_quietly_when_asked(tmp_path, isolated_env, capfd):
    """``python -m vaebook train NAME --quiet`` prints no JPEG-decoding bar (it reaches the loader as progress=False)."""
    from vaebook.experiments import get

    make_celeba(tmp_path / "celeba", n=12)
    train, test = get("celeba-vae").load_data(tmp_path / "celeba", progress=False)
    assert len(train) == 10 and len(test) == 1
    assert "decoding CelebA" not in capfd.readouterr().err
