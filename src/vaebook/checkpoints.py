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
* **pretrained weights** shipped with the package (`load_pretrained`): a folder of
  ``.safetensors`` files and a ``manifest.json`` giving each one's sha256, experiment,
  config, test metrics, epochs, device, wall time and torch version.

safetensors files hold raw tensors only, so loading one never runs code, unlike
``torch.load`` of a pickle.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from .errors import CheckpointError
from .models import LatentModel, build_model

PRETRAINED_DIR = Path(__file__).parent / "pretrained"
CHECKPOINT_FORMAT = 1


def sha256(path: str | os.PathLike) -> str:
    """The hex sha256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _atomic_write(path: Path, write) -> None:
    """Call ``write(tmp_path)`` and move the result onto ``path`` in one rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write JSON atomically (never a half-written file)."""
    _atomic_write(Path(path), lambda p: p.write_text(json.dumps(obj, indent=2) + "\n"))


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path} does not exist.") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path} is not valid JSON ({e}); the file is damaged.") from None


def save_tensors(path: str | os.PathLike, tensors: dict[str, torch.Tensor]) -> str:
    """Write tensors as safetensors atomically; returns the file's sha256."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    _atomic_write(Path(path), lambda p: save_file(tensors, str(p)))
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
    digest = save_tensors(run_dir / name, tensors)
    write_json(run_dir / "checkpoint.json", {"format": CHECKPOINT_FORMAT, "epoch": epoch, "tensors": name,
                                             "sha256": digest, "optimizer": opt_meta, **info})
    if old is not None and old["tensors"] != name:
        (run_dir / old["tensors"]).unlink(missing_ok=True)
    return run_dir / "checkpoint.json"


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
    """The pretrained-weights manifest: experiment name -> entry."""
    folder = Path(folder) if folder is not None else PRETRAINED_DIR
    path = folder / "manifest.json"
    return read_json(path) if path.exists() else {}


def load_pretrained(name: str, device: str | torch.device = "cpu",
                    folder: str | os.PathLike | None = None) -> LatentModel:
    """A shipped pretrained model by experiment name, with its sha256 checked before loading."""
    folder = Path(folder) if folder is not None else PRETRAINED_DIR
    entries = manifest(folder)
    if name not in entries:
        have = ", ".join(sorted(entries)) or "none"
        raise CheckpointError(f"No pretrained weights named {name!r} in {folder} (available: {have}). "
                              f"Train them with `python -m vaebook train {name}`.")
    entry = entries[name]
    return _model_from(entry, folder / entry["file"], device)


def publish(run_dir: str | os.PathLike, name: str, folder: str | os.PathLike | None = None) -> dict[str, Any]:
    """Copy a finished run's model into the pretrained folder and record it in the manifest."""
    folder = Path(folder) if folder is not None else PRETRAINED_DIR
    info = read_json(Path(run_dir) / "model.json")
    target = folder / f"{name}.safetensors"
    _atomic_write(target, lambda p: shutil.copyfile(Path(run_dir) / info["file"], p))
    entry = {**info, "file": target.name, "sha256": sha256(target)}
    entries = manifest(folder)
    entries[name] = entry
    write_json(folder / "manifest.json", dict(sorted(entries.items())))
    return entry
