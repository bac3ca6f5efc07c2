"""The training loop: it learns, it is deterministic, it resumes exactly, it stops on NaN."""

import json
import os
from pathlib import Path

import pytest
import torch
from conftest import blobs

import vaebook.train as train_module
from vaebook.checkpoints import load_checkpoint_info, load_model, sha256
from vaebook.errors import DeviceError, TrainingDivergedError
from vaebook.evaluate import dataset_loss
from vaebook.models import ModelConfig
from vaebook.train import TrainConfig, pick_device, shuffled_batches, train

CFG = ModelConfig(kind="vae", arch="mlp", in_shape=(1, 8, 8), latent_dim=2, hidden=32)
TCFG = TrainConfig(epochs=3, batch_size=32, lr=3e-3, seed=7, log_every=2)


TRAIN, TEST = blobs(256, 0), blobs(64, 1)


def _weights(run_dir):
    return load_model(run_dir).state_dict()


def test_training_reduces_the_loss_and_writes_history(tmp_path):
    result = train(CFG, TCFG, TRAIN, TEST, tmp_path, device="cpu", progress=False)
    h = result.history
    assert [e["epoch"] for e in h] == [1, 2, 3]
    assert h[-1]["test_loss"] < h[0]["test_loss"] and h[-1]["train_loss"] < h[0]["train_loss"]
    assert json.loads((tmp_path / "history.json").read_text()) == h
    meta = json.loads((tmp_path / "model.json").read_text())
    assert meta["epochs"] == 3 and meta["device"] == "cpu" and meta["torch_version"] == torch.__version__
    # the recorded test metrics are what evaluating the saved model gives
    again = dataset_loss(load_model(tmp_path), TEST, beta=TCFG.beta)
    for key in ("loss", "recon", "kl", "mse"):
        assert meta["test_metrics"][key] == pytest.approx(again[key], rel=1e-6)


def test_same_seed_same_weights(tmp_path):
    train(CFG, TCFG, TRAIN, TEST, tmp_path / "a", device="cpu", progress=False)
    train(CFG, TCFG, TRAIN, TEST, tmp_path / "b", device="cpu", progress=False)
    a, b = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_after_interruption_gives_identical_weights(tmp_path, monkeypatch):
    train(CFG, TCFG, TRAIN, TEST, tmp_path / "straight", device="cpu", progress=False)

    calls = {"n": 0}
    real = train_module.dataset_loss

    def interrupt_in_epoch_two(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:  # end of epoch 2, before its checkpoint
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(train_module, "dataset_loss", interrupt_in_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        train(CFG, TCFG, TRAIN, TEST, tmp_path / "resumed", device="cpu", progress=False)
    assert load_checkpoint_info(tmp_path / "resumed")["epoch"] == 1
    monkeypatch.setattr(train_module, "dataset_loss", real)
    result = train(CFG, TCFG, TRAIN, TEST, tmp_path / "resumed", device="cpu", progress=False)
    assert len(result.history) == 3
    a, b = _weights(tmp_path / "straight"), _weights(tmp_path / "resumed")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_more_epochs_continue_a_finished_run(tmp_path):
    from dataclasses import replace

    train(CFG, replace(TCFG, epochs=1), TRAIN, TEST, tmp_path / "x", device="cpu", progress=False)
    train(CFG, TCFG, TRAIN, TEST, tmp_path / "x", device="cpu", progress=False)
    train(CFG, TCFG, TRAIN, TEST, tmp_path / "y", device="cpu", progress=False)
    a, b = _weights(tmp_path / "x"), _weights(tmp_path / "y")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_checkpoint_of_another_config_is_refused(tmp_path):
    from vaebook.errors import CheckpointError

    train(CFG, TrainConfig(epochs=1, batch_size=32), TRAIN, TEST, tmp_path, device="cpu", progress=False)
    with pytest.raises(CheckpointError, match="different configuration"):
        train(CFG, TrainConfig(epochs=1, batch_size=64), TRAIN, TEST, tmp_path, device="cpu", progress=False)


def _nan_from_epoch_two(monkeypatch) -> None:
    """Make the loss NaN from the second step of epoch 2 on (epoch 1 trains and is checkpointed)."""
    real = train_module.loss_terms
    steps = {"n": 0}
    per_epoch = -(-len(TRAIN) // TCFG.batch_size)

    def nan_in_epoch_two(*args, **kwargs):
        steps["n"] += 1
        terms = real(*args, **kwargs)
        if steps["n"] > per_epoch + 1:
            terms["loss"] = terms["loss"] * float("nan")
        return terms

    monkeypatch.setattr(train_module, "loss_terms", nan_in_epoch_two)


def test_nan_loss_stops_training_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    _nan_from_epoch_two(monkeypatch)
    with pytest.raises(TrainingDivergedError) as err:
        train(CFG, TCFG, TRAIN, TEST, tmp_path, device="cpu", progress=False)
    message = str(err.value)
    assert "nan" in message and "epoch 2" in message and "epoch 1" in message and "learning rate" in message
    info = load_checkpoint_info(tmp_path)
    assert info["epoch"] == 1
    assert sha256(tmp_path / info["tensors"]) == info["sha256"]
    assert not (tmp_path / "model.json").exists()


def test_shuffles_depend_only_on_seed_and_epoch():
    a = torch.cat(list(shuffled_batches(100, 32, seed=1, epoch=3)))
    b = torch.cat(list(shuffled_batches(100, 32, seed=1, epoch=3)))
    c = torch.cat(list(shuffled_batches(100, 32, seed=1, epoch=4)))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(a.sort().values, torch.arange(100))


def test_pick_device():
    assert pick_device("cpu").type == "cpu"
    assert pick_device(None).type in ("cpu", "cuda", "mps")
    with pytest.raises(DeviceError):
        pick_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="CUDA"):
            pick_device("cuda")


def test_wrong_image_shape_is_refused(tmp_path):
    with pytest.raises(ValueError, match="shape"):
        train(ModelConfig(kind="ae", arch="mlp", in_shape=(1, 28, 28)), TCFG, TRAIN, TEST, tmp_path, progress=False)


def test_kl_warmup_scales_the_kl_term_and_ends_at_beta(tmp_path):
    data = blobs(256, 0)
    warm = train(CFG, TrainConfig(epochs=2, batch_size=32, lr=3e-3, seed=7, kl_warmup_epochs=2), data,
                 blobs(64, 1), tmp_path / "warm", device="cpu", progress=False).history
    plain = train(CFG, TrainConfig(epochs=1, batch_size=32, lr=3e-3, seed=7), data, blobs(64, 1),
                  tmp_path / "plain", device="cpu", progress=False).history
    # without warm-up the reported loss is recon + kl; with it, the KL weight averages (1 + ... + 8) / 16 in epoch 1
    e = plain[0]
    assert e["train_loss"] == pytest.approx(e["train_recon"] + e["train_kl"], rel=1e-5)
    w = warm[0]
    assert w["train_loss"] < w["train_recon"] + 0.6 * w["train_kl"]
    assert w["train_loss"] > w["train_recon"] + 0.2 * w["train_kl"]
    # the test metrics are always at beta = 1 (the ELBO), whatever the schedule
    assert w["test_loss"] == pytest.approx(w["test_recon"] + w["test_kl"], rel=1e-5)


def test_free_bits_keep_latent_dimensions_from_collapsing(tmp_path):
    """At beta = 4 the KL term pushes every posterior onto the prior; free bits of 1 nat per dimension
    leave the first nat of each dimension uncharged, so the encoder keeps using them."""
    from vaebook.evaluate import kl_per_dimension

    cfg = ModelConfig(kind="vae", arch="mlp", in_shape=(1, 8, 8), latent_dim=8, hidden=32)
    data, test = blobs(512, 0), blobs(128, 1)
    kl = {fb: kl_per_dimension(train(cfg, TrainConfig(epochs=6, batch_size=32, lr=3e-3, seed=7, beta=4.0,
                                                       free_bits=fb), data, test, tmp_path / f"fb{fb}",
                                     device="cpu", progress=False).model, test) for fb in (0.0, 1.0)}
    assert kl[0.0].sum() < 0.3  # collapsed: a few hundredths of a nat per dimension
    assert (kl[1.0] > 0.5).all()  # every dimension carries information


# --------------------------------------------------------------------------- torch.compile, precision


@pytest.mark.parametrize("kind", ["ae", "vae"])
@pytest.mark.parametrize("arch", ["conv", "mlp", "linear"])
def test_compiled_training_runs_through_a_short_last_batch_and_matches_eager(tmp_path, kind, arch):
    """torch.compile traces each model for one batch size, then again with a symbolic one for the short
    last batch (10 images in batches of 4: 4, 4, 2). `VAE.reparameterise` once broke there ("SymIntArrayRef
    expected to contain only concrete integers"). The aot_eager backend runs the same tracing as the default
    inductor without its C++ code generation, so the training must also give eager's numbers."""
    import torch._dynamo

    cfg = ModelConfig(kind=kind, arch=arch, in_shape=(1, 8, 8), latent_dim=2, hidden=16, channels=(4, 8))
    tcfg = TrainConfig(epochs=2, batch_size=4, seed=3)
    data = blobs(10, 0)
    if not torch._dynamo.is_dynamo_supported():  # e.g. a Python newer than this torch's dynamo: one clear error
        with pytest.raises(DeviceError, match="torch.compile does not support Python"):
            train(cfg, tcfg, data, data, tmp_path / "compiled", device="cpu", progress=False, compile="aot_eager")
        return
    compiled = train(cfg, tcfg, data, data, tmp_path / "compiled", device="cpu", progress=False, compile="aot_eager")
    eager = train(cfg, tcfg, data, data, tmp_path / "eager", device="cpu", progress=False)
    for c, e in zip(compiled.history, eager.history):
        for key in ("train_loss", "test_loss"):
            assert c[key] == pytest.approx(e[key], rel=1e-4), key
    assert json.loads((tmp_path / "compiled" / "model.json").read_text())["compile"] == "aot_eager"


@pytest.mark.inductor
def test_inductor_compiled_vae_trains_through_a_short_last_batch(tmp_path):
    """The real `--compile` (inductor, C++ on the CPU). Slow (about 30 s), so CI runs it on its own
    (``pytest -m inductor``); inductor draws its own random numbers, so only the loss level is compared."""
    cfg = ModelConfig(kind="vae", arch="conv", in_shape=(1, 8, 8), latent_dim=2, channels=(4, 8))
    data = blobs(10, 0)
    compiled = train(cfg, TrainConfig(epochs=2, batch_size=4), data, data, tmp_path / "c", device="cpu",
                     progress=False, compile=True)
    eager = train(cfg, TrainConfig(epochs=2, batch_size=4), data, data, tmp_path / "e", device="cpu", progress=False)
    assert compiled.history[-1]["train_loss"] == pytest.approx(eager.history[-1]["train_loss"], rel=0.05)


def test_autocast_dtype_follows_the_gpu_compute_capability(monkeypatch):
    from vaebook.train import autocast_dtype

    cuda = torch.device("cuda")
    expected = {(9, 0): torch.bfloat16, (8, 0): torch.bfloat16, (8, 6): torch.bfloat16,  # H100, A100, RTX 30xx
                (7, 5): torch.float16, (7, 0): torch.float16,  # T4 (Colab), V100: fp16 tensor cores, no bf16
                (6, 1): None}  # P4, GTX 10xx: float32
    for capability, dtype in expected.items():
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None, c=capability: c)
        assert autocast_dtype(cuda) is dtype, capability
        assert autocast_dtype(cuda, "fp32") is None and autocast_dtype(cuda, "fp16") is torch.float16
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))
    with pytest.raises(DeviceError) as err:
        autocast_dtype(cuda, "bf16")  # emulated on a T4: refused
    assert "7.5" in str(err.value) and "fp16" in str(err.value) and "--precision" in err.value.cli
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
    assert autocast_dtype(cuda, "bf16") is torch.bfloat16
    assert autocast_dtype(torch.device("cpu")) is None and autocast_dtype(torch.device("mps")) is None
    with pytest.raises(DeviceError, match="Unknown precision"):
        autocast_dtype(torch.device("cpu"), "fp8")


def test_fp16_training_uses_a_gradient_scaler_and_matches_fp32(tmp_path, monkeypatch):
    """The T4 path (fp16 autocast and a gradient scaler), run on the CPU: the same code as on CUDA."""
    made = []
    real = torch.amp.GradScaler

    def spy(*args, **kwargs):
        scaler = real(*args, **kwargs)
        made.append(scaler)
        return scaler

    monkeypatch.setattr(torch.amp, "GradScaler", spy)
    half = train(CFG, TCFG, TRAIN, TEST, tmp_path / "fp16", device="cpu", progress=False, precision="fp16")
    assert len(made) == 1 and made[0].is_enabled()
    assert json.loads((tmp_path / "fp16" / "model.json").read_text())["precision"] == "float16"
    full = train(CFG, TCFG, TRAIN, TEST, tmp_path / "fp32", device="cpu", progress=False, precision="fp32")
    assert not made[1].is_enabled()
    assert half.history[-1]["test_loss"] == pytest.approx(full.history[-1]["test_loss"], rel=0.02)
    assert half.history[-1]["test_loss"] < half.history[0]["test_loss"]


# --------------------------------------------------------------------------- bad output folders, full disks, kills


def _never_built(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("the model was built: the output folder was not checked first")

    monkeypatch.setattr(train_module, "build_model", fail)


@pytest.mark.parametrize("where", ["proc", "file", "read-only"])
def test_an_output_folder_that_cannot_be_written_is_reported_before_any_work(tmp_path, monkeypatch, where):
    from vaebook.errors import OutputError

    if where == "proc":
        run_dir = "/proc/vaebook-test/run"
    elif where == "file":
        (tmp_path / "a-file").write_text("not a folder")
        run_dir = tmp_path / "a-file" / "run"
    else:
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o555)
        run_dir = locked / "run"
        if os.geteuid() == 0:  # permissions do not bind root: make the folder refuse new files as it would
            import vaebook.files

            real_open = os.open

            def refuse(path, *args, **kwargs):
                if str(path).startswith(str(locked)):
                    raise PermissionError(13, "Permission denied", str(path))
                return real_open(path, *args, **kwargs)

            monkeypatch.setattr(vaebook.files.os, "open", refuse)
            monkeypatch.setattr(Path, "mkdir", lambda self, *a, **k: (_ for _ in ()).throw(
                PermissionError(13, "Permission denied", str(self))) if str(self).startswith(str(locked)) else None)
    _never_built(monkeypatch)
    with pytest.raises(OutputError) as err:
        train(CFG, TCFG, TRAIN, TEST, run_dir, device="cpu", progress=False)
    message = str(err.value)
    assert "\n" not in message and str(run_dir) in message and "Cannot write" in message
    assert not (tmp_path / "locked" / "run").exists()


def test_a_full_disk_during_a_checkpoint_is_one_line_and_keeps_the_last_good_one(tmp_path, monkeypatch):
    from dataclasses import replace

    from vaebook.errors import OutputError

    train(CFG, replace(TCFG, epochs=1), TRAIN, TEST, tmp_path, device="cpu", progress=False)
    good = load_checkpoint_info(tmp_path)

    def full(self, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", full)
    with pytest.raises(OutputError) as err:
        train(CFG, TCFG, TRAIN, TEST, tmp_path, device="cpu", progress=False)
    message = str(err.value)
    assert "\n" not in message and "No space left on device" in message
    assert "epoch 2" in message and "last good checkpoint (epoch 1)" in message and "resume" in message
    monkeypatch.undo()
    assert load_checkpoint_info(tmp_path) == good
    assert sha256(tmp_path / good["tensors"]) == good["sha256"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [  # no temporary or half-written files
        "checkpoint.json", "epoch-0001.safetensors", "history.json", "model.json", "model.safetensors"]


def test_written_files_get_the_users_normal_permissions(tmp_path):
    from vaebook.checkpoints import publish

    old = os.umask(0o022)
    try:
        train(CFG, replace_epochs(1), TRAIN, TEST, tmp_path / "run", device="cpu", progress=False)
        publish(tmp_path / "run", "tiny", tmp_path / "weights")
        os.umask(0o002)
        publish(tmp_path / "run", "tiny2", tmp_path / "weights2")
    finally:
        os.umask(old)
    for path in (tmp_path / "run").iterdir():
        assert path.stat().st_mode & 0o777 == 0o644, path.name
    for name in ("tiny.safetensors", "manifest.json"):
        assert (tmp_path / "weights" / name).stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "weights2" / "manifest.json").stat().st_mode & 0o777 == 0o664


def replace_epochs(epochs: int) -> TrainConfig:
    from dataclasses import replace

    return replace(TCFG, epochs=epochs)


def test_temporary_files_of_killed_runs_are_removed_by_the_next_run(tmp_path):
    """A write killed with SIGKILL leaves its temporary file; the next run in the folder removes it, and
    the checkpoint files that checkpoint.json no longer names, but not a live process's temporary file."""
    import signal
    import subprocess
    import sys
    import time

    run = tmp_path / "run"
    train(CFG, replace_epochs(1), TRAIN, TEST, run, device="cpu", progress=False)
    writer = subprocess.Popen([sys.executable, "-c", (
        "import time, sys\n"
        "from vaebook.files import atomic_write\n"
        "def slow(p):\n"
        "    p.write_bytes(b'x' * 1000)\n"
        "    time.sleep(60)\n"
        f"atomic_write({str(run / 'epoch-0002.safetensors')!r}, slow)\n")])
    deadline = time.time() + 30
    while not list(run.glob(".epoch-0002.safetensors.*.tmp")) and time.time() < deadline:
        time.sleep(0.05)
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    left = list(run.glob(".*.tmp"))
    assert len(left) == 1 and left[0].stat().st_size == 1000  # what kill -9 leaves behind
    (run / "epoch-0007.safetensors").write_bytes(b"an orphan")  # killed between the new file and the old one's removal
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        in_flight = run / f".history.json.{live.pid}-0123abcd.tmp"
        in_flight.write_text("another process is writing this")
        train(CFG, replace_epochs(2), TRAIN, TEST, run, device="cpu", progress=False)
        assert not left[0].exists() and not (run / "epoch-0007.safetensors").exists()
        assert in_flight.exists()  # its process still runs
        assert sorted(p.name for p in run.iterdir() if p != in_flight) == [
            "checkpoint.json", "epoch-0002.safetensors", "history.json", "model.json", "model.safetensors"]
    finally:
        live.kill()
        live.wait()


def test_the_divergence_advice_works_as_written(tmp_path, monkeypatch):
    """After a NaN the message says: run again with a smaller learning rate, it resumes. It does."""
    from dataclasses import replace
    import re

    real = train_module.loss_terms
    bars = []
    real_progress = train_module._progress

    def recording_progress(*args, **kwargs):
        bars.append(real_progress(*args, **kwargs))
        return bars[-1]

    _nan_from_epoch_two(monkeypatch)
    monkeypatch.setattr(train_module, "_progress", recording_progress)
    with pytest.raises(TrainingDivergedError) as err:
        train(CFG, TCFG, TRAIN, TEST, tmp_path, device="cpu", progress=True)
    assert bars[-1].disable, "the progress bar was left open under the error message"
    smaller = float(re.search(r"lr=([0-9.e-]+)", str(err.value)).group(1))
    assert smaller == TCFG.lr / 2 and f"--lr {smaller:g}" in err.value.cli
    monkeypatch.setattr(train_module, "loss_terms", real)
    result = train(CFG, replace(TCFG, lr=smaller), TRAIN, TEST, tmp_path, device="cpu", progress=False)
    assert [h["epoch"] for h in result.history] == [1, 2, 3]
    assert [h["lr"] for h in result.history] == [TCFG.lr, smaller, smaller]
    assert load_checkpoint_info(tmp_path)["optimizer"]["param_groups"][0]["lr"] == smaller


# --------------------------------------------------------------------------- the CUDA-graph path, run on the CPU


def _record_batches(monkeypatch) -> list[torch.Tensor]:
    """Record the indices of every batch the step reads (through `Runner.batch`)."""
    from vaebook.speed import Runner

    seen, real = [], Runner.batch

    def batch(self, images, idx):
        seen.append(idx.clone())
        return real(self, images, idx)

    monkeypatch.setattr(Runner, "batch", batch)
    return seen


@pytest.mark.parametrize("case", ["vae", "ae-denoising", "vae-warmup-free-bits", "vae-fp16"])
def test_the_static_step_of_cuda_graphs_trains_exactly_as_the_eager_loop(tmp_path, monkeypatch, case):
    """``graphs="static"`` is the CUDA-graph code path without capture: after its warm-up steps each batch
    size gets a "graph" that reads the batch through static index and KL-weight buffers. 100 images in
    batches of 32 end each epoch with a short batch of 4, which gets a graph of its own from epoch 4 on.
    Every image is seen once per epoch, and weights and metrics equal the eager loop's bit for bit."""
    from vaebook.speed import StaticStep, WARMUP_STEPS

    cfg = {"vae": CFG, "ae-denoising": ModelConfig(kind="ae", arch="conv", in_shape=(1, 8, 8), latent_dim=2,
                                                   channels=(4, 8)),
           "vae-warmup-free-bits": CFG, "vae-fp16": CFG}[case]
    tcfg = TrainConfig(epochs=5, batch_size=32, lr=3e-3, seed=7, log_every=2,
                       noise_std=0.2 if case == "ae-denoising" else 0.0,
                       kl_warmup_epochs=3 if case == "vae-warmup-free-bits" else 0.0,
                       free_bits=0.5 if case == "vae-warmup-free-bits" else 0.0)
    data = blobs(100, 0)
    captured, real_capture = [], StaticStep._capture
    monkeypatch.setattr(StaticStep, "_capture", lambda self, n: captured.append(n) or real_capture(self, n))
    seen = _record_batches(monkeypatch)
    precision = "fp16" if case == "vae-fp16" else "auto"  # fp16: the scaler's step runs after each "replay"
    static = train(cfg, tcfg, data, TEST, tmp_path / "static", device="cpu", progress=False, graphs="static",
                   precision=precision)
    per_epoch = [torch.cat(seen[i:i + 4]) for i in range(0, len(seen), 4)]
    assert len(seen) == 5 * 4 and all(torch.equal(e.sort().values, torch.arange(100)) for e in per_epoch)
    assert captured == [32, 4]  # the full batch after WARMUP_STEPS steps, the short one in epoch WARMUP_STEPS + 1
    assert WARMUP_STEPS == 3
    eager = train(cfg, tcfg, data, TEST, tmp_path / "eager", device="cpu", progress=False, graphs="off",
                  precision=precision)
    assert static.history == [{**h, "seconds": s["seconds"], "images_per_second": s["images_per_second"]}
                              for h, s in zip(eager.history, static.history)]
    for (name, a), b in zip(static.model.state_dict().items(), eager.model.state_dict().values()):
        assert torch.equal(a, b), name
    info = json.loads((tmp_path / "static" / "model.json").read_text())
    assert info["step"] == "static" and json.loads((tmp_path / "eager" / "model.json").read_text())["step"] == "eager"


def test_a_failed_capture_says_why_in_one_line_and_training_goes_on_eagerly(tmp_path, monkeypatch, capsys):
    from vaebook.speed import StaticStep

    def refuse(self, n):
        raise RuntimeError("CUDA error: operation not permitted when stream is capturing\nmore detail")

    monkeypatch.setattr(StaticStep, "_capture", refuse)
    seen = _record_batches(monkeypatch)
    fell_back = train(CFG, TCFG, TRAIN, TEST, tmp_path / "fell-back", device="cpu", progress=False, graphs="static")
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["vaebook: CUDA graph capture failed (RuntimeError: CUDA error: operation not permitted when "
                   "stream is capturing); training goes on without graphs."]
    assert len(seen) == TCFG.epochs * 8  # no batch was lost or repeated at the failure
    eager = train(CFG, TCFG, TRAIN, TEST, tmp_path / "eager", device="cpu", progress=False, graphs="off")
    assert [h["train_loss"] for h in fell_back.history] == [h["train_loss"] for h in eager.history]
    assert json.loads((tmp_path / "fell-back" / "model.json").read_text())["step"] == "eager (capture failed)"


def test_graphs_are_used_only_where_they_can_be(monkeypatch):
    """On the CPU, with DDP, with torch.compile or with images that stay in host memory, the step runs
    eagerly; the CPU's Adam is the single-tensor loop, PyTorch's default for CPU tensors."""
    from vaebook.speed import Runner

    images = torch.zeros(10, 1, 8, 8, dtype=torch.uint8)
    run = Runner.start("cpu")
    step = run.stepper(lambda *a: None, images, 4)
    assert run.mode == "eager" and not hasattr(step, "graphs")
    assert Runner.start("cpu", graphs="static").stepper(lambda *a: None, images, 4).graphs == {}
    assert Runner.start("cpu", compile="aot_eager", graphs="static")._no_graphs(images) == "compiled instead"
    cuda = Runner(torch.device("cuda"))
    assert cuda._no_graphs(images) == "the images do not fit on the GPU"
    # the images' device names its index (cuda:0) where the runner's may not (cuda): the same place
    assert Runner(torch.device("cpu", 0), graphs="static")._no_graphs(images) == ""
    model = torch.nn.Linear(2, 2)
    group = run.optimizer(model, 1e-3).param_groups[0]
    assert group["foreach"] is False and not group["capturable"] and not group["fused"]
    with pytest.raises(ValueError, match="graphs must be one of"):
        Runner.start("cpu", graphs="always")
