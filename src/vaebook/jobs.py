"""The long jobs of the command line: train one experiment, score shipped models, reproduce the book.

* `train_experiment` (``python -m vaebook train``) trains one experiment, and with
  ``publish`` copies it into the weights folder.
* `evaluation_table` (``python -m vaebook evaluate``) scores shipped models.
* `reproduce` (``python -m vaebook reproduce``) trains every book experiment, then
  builds every artefact of `vaebook.build`, the evaluation table and the map of the families.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

import torch

from . import checkpoints, experiments
from .build import EVALUATION, RESULTS, build_artefacts
from .checkpoints import PRETRAINED_DIR, load_pretrained, manifest, read_json, write_json
from .distributed import rank
from .errors import DataNotFoundError
from .evaluate import evaluate_model
from .speed import pick_device
from .train import train

def train_experiment(name: str, out: str | Path = "runs", weights: str | Path | None = None,
                     data_root: str | Path | None = None, device: str | None = None, download: bool = True,
                     epochs: int | None = None, lr: float | None = None, restart: bool = False,
                     publish: bool = False, progress: bool = True, compile: bool = False, precision: str = "auto",
                     graphs: str = "auto") -> None:
    """Train the experiment ``name`` into ``out/name`` (resuming if it can) and report it; with ``publish``,
    copy the model into the weights folder (``weights``, or the package's) with its hash and test metrics."""
    exp = experiments.get(name).with_epochs(epochs)
    if lr is not None:
        exp = replace(exp, train=replace(exp.train, lr=lr))
    train_set, test_set = exp.load_data(data_root, download=download, progress=progress)
    run_dir = Path(out) / name
    t0 = time.perf_counter()
    result = train(exp.model, exp.train, train_set, test_set, run_dir, device=device, progress=progress,
                   resume=not restart, meta={"experiment": name, "data": exp.data}, compile=compile,
                   precision=precision, graphs=graphs)
    if rank() != 0:
        return  # under torchrun, rank 0 reports and publishes
    last = result.history[-1] if result.history else {}
    print(f"{name}: {len(result.history)} epochs, test loss {last.get('test_loss', float('nan')):.2f} nats/image, "
          f"{time.perf_counter() - t0:.0f} s; model in {run_dir}")
    if publish:
        folder = Path(weights) if weights else PRETRAINED_DIR
        entry = checkpoints.publish(run_dir, name, folder, test_set=test_set, beta=exp.train.beta)
        print(f"{name}: published to {folder / entry['file']} (half precision; test loss of the shipped weights "
              f"{entry['test_metrics']['loss']:.2f})")


def evaluation_table(names: list[str], weights: str | Path | None = None, data_root: str | Path | None = None,
                     device: str | None = None, download: bool = True, k: int | None = None, n: int | None = None,
                     json_path: str | Path | None = None, skip_missing_data: bool = False,
                     report: Callable[[str, dict], None] | None = None) -> dict[str, dict]:
    """Score shipped models on their test sets (`vaebook.evaluate.evaluate_model`), each with its experiment's
    ``k`` and ``n`` unless given; ``report(name, result)`` is called for each; with ``json_path`` the results are
    merged into that file. A model whose data is missing stops the run, or is skipped with one line."""
    dev = pick_device(device)
    results = {}
    for name in names:
        exp = experiments.get(name)
        try:
            test = exp.load_split("test", data_root, download=download)
        except DataNotFoundError as err:
            if not skip_missing_data:
                raise
            print(f"skipped evaluating {name}: {str(err).splitlines()[0]}")
            continue
        model = load_pretrained(name, device=dev, folder=weights)
        results[name] = evaluate_model(model, test, k=k or exp.eval_k, n=n or exp.eval_images)
        if report:
            report(name, results[name])
    if json_path:
        path = Path(json_path)
        merged = read_json(path)["results"] if path.is_file() else {}
        write_json(path, {"command": f"python -m vaebook evaluate --all --json {path}",
                          "torch_version": torch.__version__, "device": str(dev),
                          "results": {**merged, **results}})
        print(f"wrote {path}")
    return results


def _relative_costs(names: list[str], epochs: int | None, shipped: dict) -> dict[str, float]:
    """Relative training cost of each experiment: its shipped seconds per epoch times the epochs it will run.

    Only ratios matter (the shipped times were recorded on another device); an
    experiment without shipped weights counts as the median of the others.
    """
    per_epoch = {n: shipped[n]["wall_time_s"] / max(1, shipped[n]["epochs"]) for n in names if n in shipped}
    typical = sorted(per_epoch.values())[len(per_epoch) // 2] if per_epoch else 1.0
    return {n: per_epoch.get(n, typical) * (epochs or experiments.get(n).train.epochs) for n in names}


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"


def reproduce(out: str | Path = "runs", images: str | Path = "images", results: str | Path = RESULTS,
              weights: str | Path | None = None, data_root: str | Path | None = None, device: str | None = None,
              download: bool = True, epochs: int | None = None, k: int | None = None, progress: bool = True,
              compile: bool = False, precision: str = "auto", graphs: str = "auto",
              report: Callable[[str, dict], None] | None = None) -> list[Path]:
    """Train and publish every book experiment (saying which of how many and about how long is left), then
    make every artefact and the evaluation table. Experiments whose data is missing keep their shipped weights
    (a missing Fashion-MNIST stops the run). Returns the files written."""
    t0 = time.perf_counter()
    names = [e.name for e in experiments.EXPERIMENTS.values() if e.book]
    cost = _relative_costs(names, epochs, manifest(weights))
    trained, done_cost, train_seconds = 0, 0.0, 0.0
    for i, name in enumerate(names, 1):
        left = sum(cost[n] for n in names[i - 1:])
        estimate = (f"about {_minutes(train_seconds * left / done_cost)} of training left, by the shipped models' "
                    "relative times" if done_cost > 0 else "the first experiment sets the pace of the estimate")
        print(f"reproduce: experiment {i} of {len(names)}: {name} ({_minutes(time.perf_counter() - t0)} so far; "
              f"{estimate})", flush=True)
        start = time.perf_counter()
        try:
            train_experiment(name, out, weights, data_root, device, download, epochs, publish=True,
                             progress=progress, compile=compile, precision=precision, graphs=graphs)
            trained += 1
        except DataNotFoundError as err:
            if experiments.get(name).data == "fashion-mnist":
                raise
            # CelebA cannot be downloaded automatically: keep the shipped weights and say so.
            print(f"skipped {name}: {str(err).splitlines()[0]} The shipped weights are kept; "
                  f"see the README for where to get the data.")
            continue
        train_seconds += time.perf_counter() - start
        done_cost += cost[name]
    print(f"reproduce: drawing the figures ({_minutes(time.perf_counter() - t0)} so far)", flush=True)
    written = build_artefacts(images, results, weights=weights, data_root=data_root, device=device,
                              download=download, skip_missing_data=True)
    table = Path(results) / Path(EVALUATION.file).name
    print(f"reproduce: the evaluation table ({_minutes(time.perf_counter() - t0)} so far)", flush=True)
    evaluation_table(list(manifest(weights)), weights, data_root, device, download, k=k, json_path=table,
                     skip_missing_data=True, report=report)
    written.append(table)
    print(f"reproduce: the map of the families ({_minutes(time.perf_counter() - t0)} so far)", flush=True)
    from .atlas import draw_map  # (atlas imports build, as jobs does)

    map_path = Path(results) / "map.json"
    draw_map(weights, data_root, device, download, json_path=map_path, evaluation=table)
    written.append(map_path)
    print(f"reproduce: trained and published {trained} of {len(names)} models, "
          f"wrote {len(written)} files to {images} and {results} in {time.perf_counter() - t0:.0f} s")
    return written
