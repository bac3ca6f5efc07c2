"""``torchrun -m vaebook train`` with DistributedDataParallel on two CPU processes (gloo) matches one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import torch

from conftest import make_fmnist
from vaebook.checkpoints import load_model, load_tensors


def _train(args: list[str], out, data, cwd, env) -> subprocess.CompletedProcess:
    cmd = [sys.executable, *args, "-m", "vaebook", "train", "fmnist-ae", "--epochs", "2", "--data-root", str(data),
           "--out", str(out), "--quiet", "--device", "cpu", "--no-download"]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, env=env, timeout=240)


def test_two_gloo_ranks_match_one_process_with_the_same_global_batch(tmp_path):
    data = tmp_path / "fmnist"
    make_fmnist(data, n_train=300, n_test=20, random=True, seed=3)  # 3 steps per epoch, the last one short
    env = {k: v for k, v in os.environ.items() if k not in ("VAEBOOK_DATA", "WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env.update(VAEBOOK_CACHE=str(tmp_path / "cache"), OMP_NUM_THREADS="1")
    one = _train([], tmp_path / "one", data, tmp_path, env)
    assert one.returncode == 0, one.stderr
    two = _train(["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"], tmp_path / "two", data,
                 tmp_path, env)
    assert two.returncode == 0, two.stderr
    assert two.stdout.count("fmnist-ae: 2 epochs") == 1  # only rank 0 reports
    a = load_tensors(tmp_path / "one" / "fmnist-ae" / "model.safetensors")
    b = load_tensors(tmp_path / "two" / "fmnist-ae" / "model.safetensors")
    assert a.keys() == b.keys()
    # Adam divides by sqrt(v): a weight whose gradient is ~0 may step differently when sums are ordered
    # differently, so compare the bulk of the weights and what the models compute, not the worst weight.
    diffs = torch.cat([(a[k] - b[k]).abs().flatten() for k in a])
    assert float(diffs.median()) < 1e-4 and float(diffs.max()) < 10 * 1e-3 * 6  # 6 Adam steps of lr 1e-3
    one_model, two_model = (load_model(tmp_path / run / "fmnist-ae") for run in ("one", "two"))
    x = torch.rand(16, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out1, out2 = one_model.reconstruct(x), two_model.reconstruct(x)
    assert float((out1 - out2).abs().max()) < 1e-3
    assert float((out1 - x).abs().mean()) > 0.01  # not trivially equal: real, imperfect reconstructions
    h1 = json.loads((tmp_path / "one" / "fmnist-ae" / "history.json").read_text())
    h2 = json.loads((tmp_path / "two" / "fmnist-ae" / "history.json").read_text())
    for e1, e2 in zip(h1, h2, strict=True):  # metrics summed over both ranks = the one-process metrics
        for key in ("train_loss", "test_loss"):
            assert abs(e1[key] - e2[key]) < 1e-5 * abs(e1[key]), (key, e1[key], e2[key])
    assert h1[0]["train_loss"] > h1[1]["train_loss"]  # it trained
    info = json.loads((tmp_path / "two" / "fmnist-ae" / "model.json").read_text())
    assert info["device"] == "cpu x 2 (gloo)"
