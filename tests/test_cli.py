"""The command line, in-process through `vaebook.cli.main` and as ``python -m vaebook`` subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import make_celeba, make_fmnist
from vaebook import checkpoints, experiments
from vaebook.cli import main

NAMES = list(experiments.EXPERIMENTS)


@pytest.fixture
def env(tmp_path, monkeypatch):
    """In-process and subprocess runs that cannot see the machine's data or caches."""
    monkeypatch.delenv("VAEBOOK_DATA", raising=False)
    monkeypatch.setenv("VAEBOOK_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    sub_env = {k: v for k, v in os.environ.items() if k != "VAEBOOK_DATA"}
    sub_env["VAEBOOK_CACHE"] = str(tmp_path / "cache")
    return sub_env


def run_cli(args: list[str], sub_env: dict, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vaebook", *args], capture_output=True, text=True, env=sub_env,
                          cwd=cwd, timeout=120)


@pytest.fixture
def fake_fmnist(tmp_path):
    folder = tmp_path / "fmnist"
    make_fmnist(folder, n_train=64, n_test=32, random=True, seed=1)
    return folder


def tiny_train(data_root, out, epochs: int = 1) -> int:
    return main(["train", "fmnist-mlp-vae", "--data-root", str(data_root), "--epochs", str(epochs),
                 "--out", str(out), "--quiet", "--device", "cpu", "--no-download"])


# --------------------------------------------------------------------------- list, help, usage errors


def test_list_names_every_experiment(env, capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["name", "epochs", "test"]
    listed = [line.split()[0] for line in lines[1:len(NAMES) + 1]]
    assert listed == NAMES
    shipped = checkpoints.manifest()
    for line in lines[1:len(NAMES) + 1]:
        name, epochs, loss = line.split()[:3]
        assert int(epochs) == (shipped[name]["epochs"] if name in shipped else experiments.get(name).train.epochs)
        assert loss == (f"{shipped[name]['test_metrics']['loss']:.2f}" if name in shipped else "-")
    for e in experiments.EXPERIMENTS.values():
        assert e.description in out
    assert {"fmnist-ae", "fmnist-ae-2d", "fmnist-vae", "fmnist-vae-2d", "fmnist-mlp-vae"} <= set(NAMES)


@pytest.mark.parametrize("argv", [["--help"], ["train", "--help"], ["list", "--help"]])
def test_help_exits_zero(env, capsys, argv):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "usage:" in out
    if argv[0] == "train":
        assert "--epochs" in out and "--data-root" in out and "--no-download" in out


def test_unknown_experiment_is_a_usage_error(env, capsys):
    with pytest.raises(SystemExit) as info:
        main(["train", "no-such-experiment"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "usage:" in err and "no-such-experiment" in err
    for name in NAMES:
        assert name in err


@pytest.mark.parametrize("argv", [
    ["train", "fmnist-vae", "--no-such-flag"],
    ["train", "fmnist-vae", "--epochs", "0"],
    ["train", "fmnist-vae", "--epochs", "-3"],
    ["train", "fmnist-vae", "--epochs", "two"],
    ["train", "fmnist-vae", "--lr", "0"],
    ["train"],
    ["frobnicate"],
    [],
], ids=["unknown-flag", "epochs-0", "epochs-negative", "epochs-not-int", "lr-0", "no-name", "unknown-command",
        "nothing"])
def test_bad_arguments_exit_2(env, capsys, argv, tmp_path):
    with pytest.raises(SystemExit) as info:
        main(argv + ["--out", str(tmp_path / "out")] if argv[:1] == ["train"] and len(argv) > 1 else argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "usage:" in err and "error:" in err
    if "--epochs" in argv and argv[-1] in ("0", "-3"):
        assert "--epochs must be positive" in err
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- errors a user can fix: exit 1, one message


def test_missing_data_is_one_message_without_traceback(env, tmp_path):
    empty = tmp_path / "empty-data"
    empty.mkdir()
    proc = run_cli(["train", "fmnist-mlp-vae", "--data-root", str(empty), "--no-download",
                    "--out", str(tmp_path / "out"), "--quiet"], env, tmp_path)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    assert proc.stderr.count("vaebook: error:") == 1
    assert proc.stderr.startswith("vaebook: error: Fashion-MNIST was not found")
    assert str(empty) in proc.stderr
    assert "apt-get install dataset-fashion-mnist" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_missing_data_in_process(env, tmp_path, capsys):
    empty = tmp_path / "empty-data"
    empty.mkdir()
    assert main(["train", "fmnist-vae", "--data-root", str(empty), "--no-download", "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert err.count("vaebook: error:") == 1 and str(empty) in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_exits_1(env, tmp_path, capsys, fake_fmnist):
    code = main(["train", "fmnist-mlp-vae", "--data-root", str(fake_fmnist), "--epochs", "1",
                 "--out", str(tmp_path / "out"), "--quiet", "--device", "cuda"])
    assert code == 1
    err = capsys.readouterr().err
    assert err.startswith("vaebook: error:") and "CUDA" in err and "--device cpu" in err
    assert not (tmp_path / "out" / "fmnist-mlp-vae" / "checkpoint.json").exists()


def test_unknown_device_exits_1(env, tmp_path, capsys, fake_fmnist):
    code = main(["train", "fmnist-mlp-vae", "--data-root", str(fake_fmnist), "--epochs", "1",
                 "--out", str(tmp_path / "out"), "--quiet", "--device", "tpu9"])
    assert code == 1
    err = capsys.readouterr().err
    assert "vaebook: error:" in err and "tpu9" in err


# --------------------------------------------------------------------------- a real (tiny) training run


def test_tiny_training_run_and_resume(env, tmp_path, capsys, fake_fmnist):
    out = tmp_path / "out"
    assert tiny_train(fake_fmnist, out, epochs=1) == 0
    stdout = capsys.readouterr().out
    assert stdout.startswith("fmnist-mlp-vae: 1 epochs, test loss ")
    run = out / "fmnist-mlp-vae"
    assert {"model.json", "model.safetensors", "history.json", "checkpoint.json",
            "epoch-0001.safetensors"} <= {p.name for p in run.iterdir()}

    history = json.loads((run / "history.json").read_text())
    assert len(history) == 1 and history[0]["epoch"] == 1
    # random pixels under a Bernoulli likelihood: about 784 * ln 2 = 543 nats per image at best, finite
    assert 300 < history[0]["train_loss"] < 5000 and 300 < history[0]["test_loss"] < 5000
    assert history[0]["test_loss"] == pytest.approx(history[0]["test_recon"] + history[0]["test_kl"], rel=1e-4)

    meta = json.loads((run / "model.json").read_text())
    assert meta["experiment"] == "fmnist-mlp-vae" and meta["data"] == "fashion-mnist"
    assert meta["epochs"] == 1 and meta["train"]["epochs"] == 1
    assert meta["sha256"] == checkpoints.sha256(run / "model.safetensors")
    assert meta["config"] == experiments.get("fmnist-mlp-vae").model.to_dict() | {"in_shape": [1, 28, 28],
                                                                                   "channels": [32, 64],
                                                                                   "condition": []}  # JSON lists
    model = checkpoints.load_model(run)
    assert model.config == experiments.get("fmnist-mlp-vae").model
    with torch.no_grad():
        assert torch.isfinite(model.embed(torch.rand(2, 1, 28, 28))).all()

    # the same command with more epochs resumes from epoch 1
    assert tiny_train(fake_fmnist, out, epochs=2) == 0
    assert capsys.readouterr().out.startswith("fmnist-mlp-vae: 2 epochs")
    history2 = json.loads((run / "history.json").read_text())
    assert [h["epoch"] for h in history2] == [1, 2]
    assert history2[0] == history[0]  # epoch 1 was not redone
    names = {p.name for p in run.iterdir()}
    assert "epoch-0002.safetensors" in names and "epoch-0001.safetensors" not in names
    assert json.loads((run / "checkpoint.json").read_text())["epoch"] == 2


def test_damaged_checkpoint_is_reported_without_traceback(env, tmp_path, capsys, fake_fmnist):
    out = tmp_path / "out"
    assert tiny_train(fake_fmnist, out, epochs=1) == 0
    capsys.readouterr()
    damaged = out / "fmnist-mlp-vae" / "epoch-0001.safetensors"
    damaged.write_bytes(b"this is not the checkpoint you are looking for" * 10)

    proc = run_cli(["train", "fmnist-mlp-vae", "--data-root", str(fake_fmnist), "--epochs", "2", "--out", str(out),
                    "--quiet", "--device", "cpu", "--no-download"], env, tmp_path)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    assert proc.stderr.count("vaebook: error:") == 1
    assert str(damaged) in proc.stderr
    assert "sha256" in proc.stderr and "damaged" in proc.stderr
    # nothing was overwritten: the checkpoint still points at epoch 1 and the file is kept for inspection
    info = json.loads((out / "fmnist-mlp-vae" / "checkpoint.json").read_text())
    assert info["epoch"] == 1 and damaged.read_bytes().startswith(b"this is not")
    assert len(json.loads((out / "fmnist-mlp-vae" / "history.json").read_text())) == 1


def test_checkpoint_of_other_config_is_refused(env, tmp_path, capsys, fake_fmnist):
    import shutil

    out = tmp_path / "out"
    assert tiny_train(fake_fmnist, out, epochs=1) == 0
    capsys.readouterr()
    shutil.copytree(out / "fmnist-mlp-vae", out / "fmnist-mlp-vae-beta4")  # a beta = 1 run where beta = 4 resumes
    code = main(["train", "fmnist-mlp-vae-beta4", "--data-root", str(fake_fmnist), "--epochs", "2",
                 "--out", str(out), "--quiet", "--device", "cpu"])
    assert code == 1
    err = capsys.readouterr().err
    assert "different configuration" in err and "--restart" in err


def _write_frey(folder, n: int = 40):
    from scipy.io import savemat

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    savemat(folder / "frey_rawface.mat", {"ff": rng.integers(0, 256, (560, n), dtype=np.uint8)})


def test_reproduce_trains_publishes_and_draws_end_to_end(env, tmp_path, fake_fmnist):
    """The README's main job, on tiny data: every book model trained, published with hashes, figures drawn."""
    make_celeba(fake_fmnist / "celeba", n=40)  # one --data-root holds all three data sets
    _write_frey(fake_fmnist / "frey-faces")
    weights, images, results = tmp_path / "weights", tmp_path / "images", tmp_path / "results"
    code = main(["reproduce", "--epochs", "1", "--data-root", str(fake_fmnist), "--out", str(tmp_path / "runs"),
                 "--weights", str(weights), "--images", str(images), "--results", str(results), "--device", "cpu",
                 "--quiet", "--no-download",
                 "-k", "3"])
    assert code == 0
    shipped = checkpoints.manifest(weights)
    assert sorted(shipped) == sorted(e.name for e in experiments.EXPERIMENTS.values() if e.book)
    table = json.loads((results / "evaluation.json").read_text())["results"]
    assert sorted(table) == sorted(shipped) and table["fmnist-mlp-vae"]["k"] == 3
    assert "iwae_nll_bpd" in table["celeba-vae"] and "iwae_nll_bpd" not in table["fmnist-mlp-vae"]
    assert "iwae_nll" not in table["celeba-ae"] and not any(k.endswith("_bpd") for k in table["celeba-ae"])
    assert {"celeba-ae", "celeba-vae", "frey-vae-2d"} <= set(shipped)
    for name, entry in shipped.items():
        assert checkpoints.sha256(weights / entry["file"]) == entry["sha256"]
        assert entry["epochs"] == 1 and entry["device"] == "cpu"
    pngs = sorted(p.name for p in images.glob("*.png"))
    for expected in ("fmnist-reconstructions.png", "fmnist-vae-2d-manifold.png", "celeba-attributes.png",
                     "celeba-nearest-neighbours.png", "frey-vae-2d-manifold.png"):
        assert expected in pngs
    assert all((images / p).read_bytes()[:4] == b"\x89PNG" for p in pngs)
    numbers = json.loads((results / "celeba-numbers.json").read_text())
    assert numbers["n_train"] == 32 and numbers["n"] == 4  # 40 images split 80/10/10; n is capped by the test set
    assert 0 <= numbers["nn_rmse_vae_samples"]["min"] <= numbers["nn_rmse_vae_samples"]["median"] <= 1


def test_reproduce_without_face_data_keeps_the_shipped_face_weights(env, tmp_path, capsys, fake_fmnist):
    """CelebA cannot be downloaded automatically: reproduce says what it skipped and still finishes."""
    weights, images, results = tmp_path / "weights", tmp_path / "images", tmp_path / "results"
    code = main(["reproduce", "--epochs", "1", "--data-root", str(fake_fmnist), "--out", str(tmp_path / "runs"),
                 "--weights", str(weights), "--images", str(images), "--results", str(results), "--device", "cpu",
                 "--quiet", "--no-download",
                 "-k", "3"])
    assert code == 0
    out = capsys.readouterr().out
    book = [e.name for e in experiments.EXPERIMENTS.values() if e.book]
    for k, name in enumerate(book, 1):
        assert f"reproduce: experiment {k} of {len(book)}: {name} (" in out
    assert "of training left, by the shipped models' relative times" in out
    lines = out.splitlines()
    for name in ("celeba-ae", "celeba-vae", "frey-vae-2d"):
        skip = next(line for line in lines if line.startswith(f"skipped {name}:"))
        assert f"Searched: {fake_fmnist} (the path you gave)" in skip  # the places searched, not an empty list
    for name in ("celeba", "frey"):
        skip = next(line for line in lines if line.startswith(f"skipped the {name} figures:"))
        assert f"Searched: {fake_fmnist} (the path you gave)" in skip
    shipped = checkpoints.manifest(weights)
    assert sorted(shipped) == sorted(e.name for e in experiments.EXPERIMENTS.values()
                                     if e.book and e.data == "fashion-mnist")
    assert (images / "fmnist-reconstructions.png").is_file() and not (images / "celeba-attributes.png").exists()


def test_evaluate_prints_the_bounds_of_a_shipped_model_and_refuses_unknown_names(env, tmp_path, capsys, fake_fmnist):
    code = main(["evaluate", "fmnist-mlp-vae", "fmnist-ae", "-k", "20", "--images", "8", "--data-root",
                 str(fake_fmnist), "--device", "cpu", "--no-download", "--json", str(tmp_path / "e.json")])
    assert code == 0
    out = capsys.readouterr().out
    assert "negative ELBO" in out and "K = 20 on the first 8 images" in out and "active units" in out
    assert "an autoencoder has no likelihood" in out and "not a probability of the data" in out
    saved = json.loads((tmp_path / "e.json").read_text())["results"]
    assert saved["fmnist-mlp-vae"]["k"] == 20 and saved["fmnist-mlp-vae"]["iwae_images"] == 8
    assert saved["fmnist-mlp-vae"]["iwae_nll"] < saved["fmnist-mlp-vae"]["neg_elbo_on_iwae_images"] + 1.0
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", "no-such-model"])
    assert exit_info.value.code == 2 and "no shipped weights for no-such-model" in capsys.readouterr().err


# --------------------------------------------------------------------------- folders that do not exist or cannot be written


@pytest.mark.parametrize("command", [["train", "fmnist-mlp-vae"], ["figures"], ["evaluate", "fmnist-mlp-vae"],
                                     ["reproduce"]])
def test_a_data_root_that_does_not_exist_is_called_that(env, tmp_path, capsys, command):
    missing = tmp_path / "no-such-folder"
    out = [] if command[0] == "evaluate" else ["--out", str(tmp_path / "out")]  # evaluate writes no run folder
    code = main(command + ["--data-root", str(missing), *out, "--device", "cpu"])
    assert code == 1
    err = capsys.readouterr().err
    assert err == f"vaebook: error: --data-root {missing} does not exist (or is not a folder).\n"
    assert not missing.exists() and not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", [["list"], ["figures"], ["evaluate", "fmnist-mlp-vae"]])
def test_a_weights_folder_that_does_not_exist_is_named(env, tmp_path, capsys, command, fake_fmnist):
    missing = tmp_path / "no-weights"
    code = main(command + ["--weights", str(missing)] + ([] if command == ["list"] else ["--data-root", str(fake_fmnist)]))
    assert code == 1
    assert capsys.readouterr().err == f"vaebook: error: --weights {missing} does not exist (or is not a folder).\n"
    (tmp_path / "empty").mkdir()
    assert main(command + ["--weights", str(tmp_path / "empty")]) == 1
    assert "has no manifest.json" in capsys.readouterr().err


@pytest.mark.parametrize("flag", ["--out", "--images", "--weights"])
def test_reproduce_checks_every_output_folder_before_training(env, tmp_path, capsys, fake_fmnist, flag):
    folders = {"--out": tmp_path / "runs", "--images": tmp_path / "images", "--weights": tmp_path / "weights"}
    folders[flag] = "/proc/vaebook-test/" + flag.strip("-")
    argv = ["reproduce", "--epochs", "1", "--data-root", str(fake_fmnist), "--device", "cpu", "--quiet", "--no-download"]
    code = main(argv + [str(a) for kv in folders.items() for a in kv])
    assert code == 1
    captured = capsys.readouterr()
    assert captured.out == ""  # nothing trained
    assert captured.err.startswith(f"vaebook: error: Cannot write to {folders[flag]} (the {flag} folder): ")
    assert captured.err.count("\n") == 1
    assert not any(Path(f).exists() for f in folders.values())  # the check left no empty folders behind


def test_train_into_an_unwritable_out_fails_before_loading_data(env, tmp_path, capsys, fake_fmnist, monkeypatch):
    import vaebook.experiments

    def no_data(*args, **kwargs):
        raise AssertionError("data were loaded before the --out folder was checked")

    monkeypatch.setattr(vaebook.experiments.Experiment, "load_data", no_data)
    code = main(["train", "fmnist-mlp-vae", "--data-root", str(fake_fmnist), "--out", "/proc/vaebook-test",
                 "--device", "cpu", "--quiet"])
    assert code == 1
    err = capsys.readouterr().err
    assert err.startswith("vaebook: error: Cannot write to /proc/vaebook-test (the --out folder): ") and err.count("\n") == 1


def test_the_divergence_message_speaks_command_line_and_its_advice_resumes(env, tmp_path, capsys, fake_fmnist,
                                                                           monkeypatch):
    import re

    import vaebook.train as train_module

    out = tmp_path / "out"
    assert tiny_train(fake_fmnist, out, epochs=1) == 0
    real = train_module.loss_terms
    def nan(*args, **kwargs):
        terms = real(*args, **kwargs)
        return {**terms, "loss": terms["loss"] * float("nan")}

    monkeypatch.setattr(train_module, "loss_terms", nan)
    assert tiny_train(fake_fmnist, out, epochs=2) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "lr=" not in err
    assert "Training diverged" in err and "The last good checkpoint" in err and "epoch 1" in err
    lr = re.search(r"Run the same command again with a smaller learning rate, e\.g\. --lr (\S+) ", err).group(1)
    monkeypatch.setattr(train_module, "loss_terms", real)
    code = main(["train", "fmnist-mlp-vae", "--data-root", str(fake_fmnist), "--epochs", "2", "--out", str(out),
                 "--device", "cpu", "--no-download", "--lr", lr])
    assert code == 0
    captured = capsys.readouterr()
    assert f"Resuming {out / 'fmnist-mlp-vae'} from epoch 1 with learning rate {lr}." in captured.out
    history = json.loads((out / "fmnist-mlp-vae" / "history.json").read_text())
    assert [h["lr"] for h in history] == [1e-3, float(lr)]


def test_figures_skip_a_damaged_weights_file_and_draw_the_rest(env, tmp_path, capsys):
    import shutil

    from vaebook.checkpoints import PRETRAINED_DIR
    from vaebook.build import ARTEFACTS, build_artefacts

    _write_frey(tmp_path / "data" / "frey-faces")
    weights = tmp_path / "weights"
    weights.mkdir()
    shutil.copy(PRETRAINED_DIR / "manifest.json", weights)
    (weights / "frey-vae-2d.safetensors").write_bytes(b"damaged")
    written = build_artefacts(tmp_path / "images", tmp_path / "results", weights=weights, data_root=tmp_path / "data",
                              device="cpu", download=False, rows=[r for r in ARTEFACTS if r.data == "frey"])
    out = capsys.readouterr().out
    assert "skipped frey-vae-2d-manifold.png: " in out and "frey-vae-2d.safetensors is damaged" in out
    assert (tmp_path / "images" / "frey-faces.png").is_file()  # drawn from the data alone
    assert not (tmp_path / "images" / "frey-vae-2d-manifold.png").exists()
    assert tmp_path / "images" / "frey-faces.png" in written
