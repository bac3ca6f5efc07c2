"""Saving and loading weights safely: atomic files, safetensors, sha256, no pickle.

Three kinds of file live here:

* **training checkpoints** (`save_checkpoint`, `load_checkpoint`): written after each
  epoch into a run folder as ``epoch-NNNN.safetensors`` (model weights, optimizer
  tensors, random-number state) plus ``checkpoint.json`` (configs, optimizer
  scalars, history, and the sha256 of that tensor file). The tensor file is written
  first under a new name, then ``checkpoint.json`` is replaced atomically, then the
  previous epoch's file is removed: at every instant ``checkpoint.json`` names a
  complete, hash-checked file, so an interruption loses at most the epoch in flight;
* **trained models** (`save_model`, `load_model`): ``model.safetensors`` +
  ``model.json`` (config, metrics, provenance);
* **pretrained weights** shipped with the package (`publish`, `load_pretrained`): a
  folder of ``.safetensors`` files in half precision (a light repository: float16
  halves every file) and a ``manifest.json`` giving each one's sha256, experiment,
  config, test metrics (of the stored weights), epochs, device, wall time and torch
  version.

All files are written through `vaebook.files.atomic_write`: never half-written, with
the user's normal permissions, and an `OutputError` of one line when the disk is full
or the folder read-only.

safetensors files hold raw tensors only, so loading one never runs code, unlike
``torch.load`` of a pickle.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from .errors import CheckpointError, OutputError
from .files import atomic_write, read_json, remove_stale_temporaries, sha256, write_json  # noqa: F401 (re-exported)
from .models import LatentModel, build_model

PRETRAINED_DIR = Path(__file__).parent / "pretrained"
CHECKPOINT_FORMAT = 1


def save_tensors(path: str | os.PathLike, tensors: dict[str, torch.Tensor]) -> str:
    """Write tensors as safetensors atomically; returns the file's sha256."""
    from safetensors.torch import save

    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    data = save(tensors)  # bytes, written by Python, so a full disk is an OSError that atomic_write reports
    atomic_write(Path(path), lambda p: p.write_bytes(data))
    return sha256(path)


def load_tensors(path: str | os.PathLike, expected_sha256: str | None = None) -> dict[str, torch.Tensor]:
    """Read a safetensors file, first checking its sha256 if one is expected.

    Raises `CheckpointError` naming the file for a missing file, a hash mismatch
    (truncated or tampered) or a file that is not safetensors.
    """
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist.")
    if expected_sha256 is not None:
        got = sha256(path)
        if got != expected_sha256:
            raise CheckpointError(
                f"{path} is damaged or was changed: its sha256 is {got}, expected {expected_sha256}. "
                "Restore it (git checkout, or reinstall vaebook) or retrain it with `python -m vaebook train`."
            )
    try:
        return load_file(str(path))
    except Exception as e:  # safetensors raises its own error types for bad headers and short files
        raise CheckpointError(f"{path} is not a readable safetensors file ({type(e).__name__}: {e}).") from None


def _load_state(model: torch.nn.Module, state: dict[str, torch.Tensor], source: Path) -> None:
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise CheckpointError(f"{source} does not fit its model config ({first}).") from None


# --------------------------------------------------------------------------- training checkpoints


def _flatten_optimizer(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    sd = optimizer.state_dict()
    tensors, scalars = {}, {}
    for pid, state in sd["state"].items():
        for k, v in state.items():
            if torch.is_tensor(v):
                tensors[f"optim.{pid}.{k}"] = v
            else:
                scalars.setdefault(str(pid), {})[k] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {int(pid): dict(v) for pid, v in meta["scalars"].items()}
    for key, v in tensors.items():
        if key.startswith("optim."):
            _, pid, name = key.split(".", 2)
            state.setdefault(int(pid), {})[name] = v
    return {"state": state, "param_groups": meta["param_groups"]}


def save_checkpoint(run_dir: str | os.PathLike, model: LatentModel, optimizer: torch.optim.Optimizer, epoch: int,
                    info: dict[str, Any]) -> Path:
    """Write the state after ``epoch`` completed epochs; see the module docstring for the protocol.

    ``info`` (configs, history, ...) goes into ``checkpoint.json`` as it is.
    """
    run_dir = Path(run_dir)
    old = load_checkpoint_info(run_dir)
    opt_tensors, opt_meta = _flatten_optimizer(optimizer)
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()} | opt_tensors
    tensors["rng.cpu"] = torch.get_rng_state()
    if torch.cuda.is_available():
        tensors["rng.cuda"] = torch.cuda.get_rng_state()
    name = f"epoch-{epoch:04d}.safetensors"
    try:
        digest = save_tensors(run_dir / name, tensors)
        write_json(run_dir / "checkpoint.json", {"format": CHECKPOINT_FORMAT, "epoch": epoch, "tensors": name,
                                                 "sha256": digest, "optimizer": opt_meta, **info})
    except OutputError as e:
        if old is not None and old["tensors"] != name:
            (run_dir / name).unlink(missing_ok=True)  # the new file, if it got that far, is named by nothing
        kept = (f"The last good checkpoint (epoch {old['epoch']}) in {run_dir} is kept; free some space or choose "
                "another output folder, then run the same command to resume." if old is not None
                else "No checkpoint had been written yet.")
        raise OutputError(f"Checkpoint of epoch {epoch} not saved. {e} {kept}") from None
    if old is not None and old["tensors"] != name:
        (run_dir / old["tensors"]).unlink(missing_ok=True)
    return run_dir / "checkpoint.json"


def clean_run_dir(run_dir: str | os.PathLike) -> list[Path]:
    """Remove what interrupted runs left in ``run_dir``; returns the removed paths.

    That is: temporary files of writes that were killed (see `vaebook.files`), and
    ``epoch-NNNN.safetensors`` files that ``checkpoint.json`` does not name (a run
    killed between writing a new epoch's file and removing the previous one). The
    checkpoint that ``checkpoint.json`` names is never touched.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    removed = remove_stale_temporaries(run_dir)
    try:
        info = load_checkpoint_info(run_dir)
    except CheckpointError:
        return removed  # a damaged checkpoint.json: which file it named is unknown, so every one stays
    keep = info["tensors"] if info is not None else None
    for path in run_dir.glob("epoch-*.safetensors"):
        if path.name != keep:
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def load_checkpoint_info(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The contents of ``run_dir/checkpoint.json``, or None if there is no checkpoint."""
    path = Path(run_dir) / "checkpoint.json"
    if not path.exists():
        return None
    info = read_json(path)
    if isinstance(info, dict) and "format" in info and info["format"] != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} has format {info['format']!r}; this vaebook reads format {CHECKPOINT_FORMAT}.")
    if not isinstance(info, dict) or any(k not in info for k in ("format", "epoch", "tensors", "sha256", "optimizer")):
        raise CheckpointError(f"{path} is not a vaebook checkpoint (it lacks fields such as 'epoch' and 'tensors'); "
                              "remove the run folder or pass --restart.")
    return info


def load_checkpoint(run_dir: str | os.PathLike, model: LatentModel, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Restore model, optimizer and random state from ``run_dir``; returns ``checkpoint.json``'s contents."""
    run_dir = Path(run_dir)
    info = load_checkpoint_info(run_dir)
    if info is None:
        raise CheckpointError(f"{run_dir} has no checkpoint.json.")
    path = run_dir / info["tensors"]
    tensors = load_tensors(path, info["sha256"])
    _load_state(model, {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}, path)
    try:
        optimizer.load_state_dict(_unflatten_optimizer(tensors, info["optimizer"]))
    except (ValueError, KeyError) as e:
        raise CheckpointError(f"{path}: the optimizer state does not fit this model ({e}).") from None
    torch.set_rng_state(tensors["rng.cpu"])
    if "rng.cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng.cuda"])
    return info


# --------------------------------------------------------------------------- trained models


def save_model(out_dir: str | os.PathLike, model: LatentModel, info: dict[str, Any]) -> Path:
    """Write ``model.safetensors`` and ``model.json`` (the config, its sha256 and ``info``)."""
    out_dir = Path(out_dir)
    digest = save_tensors(out_dir / "model.safetensors", model.state_dict())
    write_json(out_dir / "model.json", {"file": "model.safetensors", "sha256": digest,
                                        "config": model.config.to_dict(), **info})
    return out_dir / "model.json"


def _model_from(entry: dict[str, Any], weights: Path, device: str | torch.device) -> LatentModel:
    try:
        model = build_model(entry["config"])
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"The config for {weights} is invalid ({e}).") from None
    _load_state(model, load_tensors(weights, entry.get("sha256")), weights)
    return model.to(device).eval()


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> LatentModel:
    """A trained model from a folder (or its ``model.json``) written by `save_model`, hash-checked."""
    path = Path(path)
    meta = path if path.suffix == ".json" else path / "model.json"
    entry = read_json(meta)
    return _model_from(entry, meta.parent / entry["file"], device)


# --------------------------------------------------------------------------- pretrained weights


def manifest(folder: str | os.PathLike | None = None) -> dict[str, dict[str, Any]]:
    """The pretrained-weights manifest: experiment name -> entry ({} for a folder with no manifest yet)."""
    folder = Path(folder) if folder is not None else PRETRAINED_DIR
    path = folder / "manifest.json"
    return read_json(path) if path.exists() else {}


def load_pretrained(name: str, device: str | torch.device = "cpu",
                    folder: str | os.PathLike | None = None) -> LatentModel:
    """A shipped pretrained model by experiment name, with its sha256 checked before loading.

    The shipped files hold half-precision tensors (see `publish`); the model is built in
    float32 and the weights are converted on loading.
    """
    folder = Path(folder) if folder is not None else PRETRAINED_DIR
    if not folder.is_dir():
        raise CheckpointError(f"The weights folder {folder} does not exist.")
    entries = manifest(folder)
    if name not in entries:
        have = ", ".join(sorted(entries)) or f"none: {folder} has no manifest.json"
        raise CheckpointError(f"No pretrained weights named {name!r} in {folder} (available: {have}). "
                              f"Train them with `python -m vaebook train {name} --publish`.")
    entry = entries[name]
    return _model_from(entry, folder / entry["file"], device)


def half_precision(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The tensors with every floating-point one stored as float16 (half the bytes of float32).

    float16 keeps 11 significant bits, about 3 decimal digits: the trained weights move
    by at most 1 part in 2,048. A tensor with values beyond float16's range (65,504)
    stays float32.
    """
    out = {}
    for key, value in state.items():
        half = value.half() if value.is_floating_point() else value
        out[key] = half if bool(torch.isfinite(half).all()) or not bool(torch.isfinite(value).all()) else value
    return out


def publish(run_dir: str | os.PathLike, name: str, folder: str | os.PathLike | None = None,
            test_set: Any = None, beta: float = 1.0) -> dict[str, Any]:
    """Ship a finished run's model: its weights in half precision in ``folder``, recorded in the manifest.

    The manifest entry is the run's ``model.json`` (config, training history, device,
    times) with ``file``, ``sha256`` (of the stored file) and ``dtype``. Given the
    ``test_set`` (an `ImageDataset`), ``test_metrics`` are recomputed from the stored
    half-precision weights, at ``beta``, so every number recorded is a number of what
    is shipped; the last epoch's metrics of the float32 model stay in ``history``.
    """
    from .evaluate import dataset_loss

    folder = Path(folder) if folder is not None else PRETRAINED_DIR
    info = read_json(Path(run_dir) / "model.json")
    target = folder / f"{name}.safetensors"
    digest = save_tensors(target, half_precision(load_tensors(Path(run_dir) / info["file"], info.get("sha256"))))
    entry = {**info, "file": target.name, "sha256": digest, "dtype": "float16"}
    if test_set is not None:
        entry["test_metrics"] = dataset_loss(_model_from(entry, target, "cpu"), test_set, beta=beta)
    entries = manifest(folder)
    entries[name] = entry
    write_json(folder / "manifest.json", dict(sorted(entries.items())))
    return entry
