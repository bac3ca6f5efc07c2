"""vaebook.checkpoints: safetensors with sha256 checks, trained models, pretrained weights, resumable checkpoints."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch

from conftest import REPO_ROOT
from vaebook import checkpoints as C
from vaebook.errors import CheckpointError, VaebookError
from vaebook.models import ModelConfig, build_model

TINY = ModelConfig(kind="vae", arch="mlp", in_shape=(1, 8, 8), latent_dim=2, hidden=16)


def tiny_model(seed: int = 0, config: ModelConfig = TINY):
    torch.manual_seed(seed)
    return build_model(config)


def train_steps(model, optimizer, steps: int = 3, seed: int = 123) -> None:
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x = torch.rand(4, *model.config.in_shape, generator=gen)
        out = model(x)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(out["out"], x) + out["mu"].pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def outputs(model) -> dict[str, torch.Tensor]:
    """Deterministic outputs of a model: the latent mean of fixed images and the decoding of fixed codes."""
    gen = torch.Generator().manual_seed(7)
    x = torch.rand(5, *model.config.in_shape, generator=gen)
    z = torch.randn(5, model.config.latent_dim, generator=gen)
    with torch.no_grad():
        return {"embed": model.embed(x), "decode": model.decode(z)}


def assert_same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k


# --------------------------------------------------------------------------- tensors


def test_save_and_load_tensors_round_trip(tmp_path):
    tensors = {
        "w": torch.randn(3, 4),
        "i": torch.arange(10, dtype=torch.int64),
        "u": torch.arange(256, dtype=torch.uint8).view(16, 16),
        "b": torch.tensor([1.5, -2.25], dtype=torch.bfloat16),
        "t": torch.randn(4, 3).t(),  # not contiguous
    }
    path = tmp_path / "sub" / "t.safetensors"
    digest = C.save_tensors(path, tensors)
    assert digest == hashlib.sha256(path.read_bytes()).hexdigest() == C.sha256(path)
    assert [p.name for p in path.parent.iterdir()] == ["t.safetensors"]  # no temporary file left behind
    for expected in (None, digest):
        loaded = C.load_tensors(path, expected)
        assert_same_state(loaded, tensors)


def test_load_tensors_wrong_sha256(tmp_path):
    path = tmp_path / "t.safetensors"
    digest = C.save_tensors(path, {"x": torch.ones(3)})
    wrong = "0" * 64
    with pytest.raises(CheckpointError) as info:
        C.load_tensors(path, wrong)
    msg = str(info.value)
    assert str(path) in msg and digest in msg and wrong in msg


def test_load_tensors_truncated_without_hash(tmp_path):
    path = tmp_path / "t.safetensors"
    C.save_tensors(path, {"x": torch.arange(1000.0), "y": torch.ones(10, 10)})
    blob = path.read_bytes()
    for cut in (3, 20, len(blob) // 2, len(blob) - 8):
        path.write_bytes(blob[:cut])
        with pytest.raises(CheckpointError) as info:
            C.load_tensors(path)
        assert str(path) in str(info.value)
    path.write_bytes(b"<html>not safetensors</html>")
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        C.load_tensors(path)


def test_load_tensors_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist") as info:
        C.load_tensors(tmp_path / "gone.safetensors", "ab" * 32)
    assert "gone.safetensors" in str(info.value)
    assert isinstance(info.value, VaebookError)


def test_write_and_read_json(tmp_path):
    C.write_json(tmp_path / "a" / "x.json", {"a": [1, 2], "b": None})
    assert C.read_json(tmp_path / "a" / "x.json") == {"a": [1, 2], "b": None}
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["x.json"]
    with pytest.raises(CheckpointError, match="does not exist"):
        C.read_json(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_bytes(b"\xff\xfe{")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        C.read_json(tmp_path / "bad.json")


# --------------------------------------------------------------------------- trained models


def test_save_and_load_model_round_trip(tmp_path):
    model = tiny_model(1).eval()
    meta = C.save_model(tmp_path / "run", model, {"epochs": 3, "test_metrics": {"loss": 1.5}})
    assert meta == tmp_path / "run" / "model.json"
    info = json.loads(meta.read_text())
    assert info["file"] == "model.safetensors"
    assert info["sha256"] == C.sha256(tmp_path / "run" / "model.safetensors")
    assert ModelConfig.from_dict(info["config"]) == TINY
    assert info["epochs"] == 3 and info["test_metrics"] == {"loss": 1.5}

    for where in (tmp_path / "run", meta, str(tmp_path / "run")):
        loaded = C.load_model(where)
        assert type(loaded) is type(model) and loaded.config == TINY
        assert not loaded.training
        assert_same_state(loaded.state_dict(), model.state_dict())
        for k, v in outputs(model).items():
            assert torch.equal(outputs(loaded)[k], v), k
    # a differently initialised model really differs, so the comparison above means something
    assert not torch.equal(outputs(tiny_model(2))["decode"], outputs(model)["decode"])


def test_load_model_tampered_weights(tmp_path):
    C.save_model(tmp_path / "run", tiny_model(), {})
    weights = tmp_path / "run" / "model.safetensors"
    blob = bytearray(weights.read_bytes())
    blob[-1] ^= 0xFF
    weights.write_bytes(bytes(blob))
    with pytest.raises(CheckpointError, match="sha256") as info:
        C.load_model(tmp_path / "run")
    assert "model.safetensors" in str(info.value)


def test_load_model_weights_of_other_config(tmp_path):
    C.save_model(tmp_path / "run", tiny_model(), {})
    meta = tmp_path / "run" / "model.json"
    info = json.loads(meta.read_text())
    info["config"]["hidden"] = 32
    meta.write_text(json.dumps(info))
    with pytest.raises(CheckpointError, match="does not fit"):
        C.load_model(tmp_path / "run")
    info["config"]["kind"] = "gan"
    meta.write_text(json.dumps(info))
    with pytest.raises(CheckpointError, match="invalid"):
        C.load_model(tmp_path / "run")


# --------------------------------------------------------------------------- pretrained weights


def test_publish_and_load_pretrained(tmp_path):
    model = tiny_model(3).eval()
    C.save_model(tmp_path / "run", model, {"experiment": "tiny", "epochs": 2})
    folder = tmp_path / "pretrained"
    entry = C.publish(tmp_path / "run", "tiny", folder=folder)
    weights = folder / "tiny.safetensors"
    assert weights.is_file()
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest == C.manifest(folder) == {"tiny": entry}
    assert entry["file"] == "tiny.safetensors"
    assert entry["sha256"] == C.sha256(weights)
    assert ModelConfig.from_dict(entry["config"]) == TINY
    assert entry["experiment"] == "tiny" and entry["epochs"] == 2

    # shipped in half precision: every weight is the float16 rounding of the trained one, loaded as float32
    stored = C.load_tensors(weights, entry["sha256"])
    assert entry["dtype"] == "float16" and {v.dtype for v in stored.values()} == {torch.float16}
    loaded = C.load_pretrained("tiny", folder=folder)
    for k, v in model.state_dict().items():
        assert loaded.state_dict()[k].dtype == torch.float32
        assert torch.equal(loaded.state_dict()[k], v.half().float()), k
        assert torch.allclose(loaded.state_dict()[k], v, rtol=2 ** -11, atol=2 ** -24), k  # float16's rounding
    for k, v in outputs(model).items():
        assert torch.allclose(outputs(loaded)[k], v, rtol=1e-2, atol=1e-3), k

    # a second model joins the manifest; the first entry stays
    C.publish(tmp_path / "run", "another", folder=folder)
    assert sorted(C.manifest(folder)) == ["another", "tiny"]


def test_load_pretrained_tampered_file(tmp_path):
    C.save_model(tmp_path / "run", tiny_model(), {})
    folder = tmp_path / "pretrained"
    C.publish(tmp_path / "run", "tiny", folder=folder)
    weights = folder / "tiny.safetensors"
    blob = bytearray(weights.read_bytes())
    blob[len(blob) // 2 + 5] ^= 0x01  # one bit of one weight
    weights.write_bytes(bytes(blob))
    with pytest.raises(CheckpointError) as info:
        C.load_pretrained("tiny", folder=folder)
    msg = str(info.value)
    assert "tiny.safetensors" in msg and "sha256" in msg


def test_load_pretrained_unknown_name(tmp_path):
    C.save_model(tmp_path / "run", tiny_model(), {})
    folder = tmp_path / "pretrained"
    C.publish(tmp_path / "run", "tiny", folder=folder)
    C.publish(tmp_path / "run", "other", folder=folder)
    with pytest.raises(CheckpointError) as info:
        C.load_pretrained("fmnist-nope", folder=folder)
    msg = str(info.value)
    assert "fmnist-nope" in msg and "other, tiny" in msg and "python -m vaebook train" in msg
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="available: none: .*empty has no manifest.json"):
        C.load_pretrained("tiny", folder=tmp_path / "empty")
    with pytest.raises(CheckpointError, match="weights folder .*nowhere does not exist"):
        C.load_pretrained("tiny", folder=tmp_path / "nowhere")


def test_half_precision_rounds_floats_and_keeps_the_rest():
    state = {"w": torch.tensor([1.0, 1 + 2 ** -12, -3.14159, 1e-9]), "big": torch.tensor([1e6, 1.0]),
             "steps": torch.tensor([3]), "inf": torch.tensor([float("inf")])}
    half = C.half_precision(state)
    assert half["w"].dtype == torch.float16 and half["w"].tolist() == [1.0, 1.0, -3.140625, 0.0]
    assert half["big"].dtype == torch.float32 and torch.equal(half["big"], state["big"])  # beyond 65,504
    assert half["steps"].dtype == torch.int64 and half["inf"].dtype == torch.float16


def test_publish_records_the_test_metrics_of_the_stored_weights(tmp_path):
    from vaebook.data import ImageDataset
    from vaebook.evaluate import dataset_loss

    model = tiny_model(5).eval()
    C.save_model(tmp_path / "run", model, {"test_metrics": {"loss": -1.0}})
    images = torch.randint(0, 256, (20, *TINY.in_shape), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    entry = C.publish(tmp_path / "run", "tiny", folder=tmp_path / "w", test_set=ImageDataset(images), beta=2.0)
    shipped = C.load_pretrained("tiny", folder=tmp_path / "w")
    assert entry["test_metrics"] == dataset_loss(shipped, images, beta=2.0)
    assert entry["test_metrics"]["loss"] == pytest.approx(entry["test_metrics"]["recon"] + 2 * entry["test_metrics"]["kl"])


def test_pretrained_folder_is_shipped_as_package_data():
    """The pretrained folder is package data, so a wheel (pip install, Colab) ships the weights.

    Regression: package-data once named a ``weights/`` folder while `load_pretrained`
    reads ``pretrained/``, so a wheel shipped no weights."""
    tomllib = pytest.importorskip("tomllib")
    from fnmatch import fnmatch

    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    patterns = pyproject.get("tool", {}).get("setuptools", {}).get("package-data", {}).get("vaebook", [])
    rel = C.PRETRAINED_DIR.relative_to(Path(C.__file__).parent).as_posix()
    for name in ("manifest.json", "fmnist-vae.safetensors"):
        assert any(fnmatch(f"{rel}/{name}", p) for p in patterns), (
            f"{rel}/{name} is not package data (patterns {patterns}); a built wheel would not contain "
            f"the pretrained weights that load_pretrained reads from {rel}/")


# --------------------------------------------------------------------------- training checkpoints


def _optimizer(model):
    return torch.optim.Adam(model.parameters(), lr=1e-2)


def test_save_checkpoint_keeps_only_latest_epoch(tmp_path):
    model = tiny_model()
    opt = _optimizer(model)
    run = tmp_path / "run"
    train_steps(model, opt)
    path = C.save_checkpoint(run, model, opt, 1, {"history": [{"epoch": 1}]})
    assert path == run / "checkpoint.json"
    first = json.loads(path.read_text())
    assert first["tensors"] == "epoch-0001.safetensors" and first["epoch"] == 1

    train_steps(model, opt)
    C.save_checkpoint(run, model, opt, 2, {"history": [{"epoch": 1}, {"epoch": 2}], "wall_time_s": 1.0})
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint.json", "epoch-0002.safetensors"]
    info = json.loads((run / "checkpoint.json").read_text())
    assert info["format"] == C.CHECKPOINT_FORMAT
    assert info["epoch"] == 2 and info["tensors"] == "epoch-0002.safetensors"
    assert info["sha256"] == C.sha256(run / "epoch-0002.safetensors")
    assert info["history"] == [{"epoch": 1}, {"epoch": 2}] and info["wall_time_s"] == 1.0
    assert C.load_checkpoint_info(run) == info
    assert C.load_checkpoint_info(tmp_path / "elsewhere") is None


def test_load_checkpoint_restores_model_optimizer_and_rng(tmp_path):
    model = tiny_model(0)
    opt = _optimizer(model)
    train_steps(model, opt, steps=3)
    torch.manual_seed(999)
    C.save_checkpoint(tmp_path, model, opt, 1, {"note": "x"})
    expected_draw = torch.rand(6)  # what the RNG gives right after the checkpoint

    saved_model = {k: v.clone() for k, v in model.state_dict().items()}
    saved_opt = opt.state_dict()

    other = tiny_model(5)
    other_opt = _optimizer(other)
    train_steps(other, other_opt, steps=1, seed=9)
    torch.rand(100)  # move the RNG on
    info = C.load_checkpoint(tmp_path, other, other_opt)
    assert info["epoch"] == 1 and info["note"] == "x"

    assert torch.equal(torch.rand(6), expected_draw)
    assert_same_state(other.state_dict(), saved_model)
    restored = other_opt.state_dict()
    assert restored["state"].keys() == saved_opt["state"].keys() and len(saved_opt["state"]) == len(list(model.parameters())) == 10
    for pid, state in saved_opt["state"].items():
        assert state.keys() == restored["state"][pid].keys() == {"step", "exp_avg", "exp_avg_sq"}
        for k, v in state.items():
            assert torch.equal(restored["state"][pid][k], v), (pid, k)
        assert float(restored["state"][pid]["step"]) == 3.0
    # param groups (lr, betas, eps, ...) survive the JSON round trip (tuples come back as lists)
    assert json.loads(json.dumps(restored["param_groups"])) == json.loads(json.dumps(saved_opt["param_groups"]))
    assert restored["param_groups"][0]["lr"] == 1e-2

    # training on from either gives the same weights: the optimizer state really works
    torch.manual_seed(11)  # the VAE's sampling noise comes from the global RNG
    train_steps(model, opt, steps=2, seed=4)
    torch.manual_seed(11)
    train_steps(other, other_opt, steps=2, seed=4)
    assert_same_state(other.state_dict(), model.state_dict())


def test_load_checkpoint_damaged_tensor_file(tmp_path):
    model = tiny_model()
    opt = _optimizer(model)
    train_steps(model, opt)
    C.save_checkpoint(tmp_path, model, opt, 1, {})
    (tmp_path / "epoch-0001.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError) as info:
        C.load_checkpoint(tmp_path, tiny_model(), _optimizer(tiny_model()))
    msg = str(info.value)
    assert "epoch-0001.safetensors" in msg and "sha256" in msg and "damaged" in msg
    (tmp_path / "epoch-0001.safetensors").unlink()
    with pytest.raises(CheckpointError, match="does not exist"):
        C.load_checkpoint(tmp_path, model, opt)


def test_load_checkpoint_into_other_architecture(tmp_path):
    model = tiny_model()
    opt = _optimizer(model)
    train_steps(model, opt)
    C.save_checkpoint(tmp_path, model, opt, 1, {})
    bigger = tiny_model(config=ModelConfig(kind="vae", arch="mlp", in_shape=(1, 8, 8), latent_dim=2, hidden=32))
    with pytest.raises(CheckpointError, match="does not fit"):
        C.load_checkpoint(tmp_path, bigger, _optimizer(bigger))


def test_load_checkpoint_without_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint.json"):
        C.load_checkpoint(tmp_path, tiny_model(), _optimizer(tiny_model()))


def test_corrupted_checkpoint_json(tmp_path):
    model = tiny_model()
    opt = _optimizer(model)
    train_steps(model, opt)
    C.save_checkpoint(tmp_path, model, opt, 1, {})
    (tmp_path / "checkpoint.json").write_text('{"format": 1, "epoch": 1, "tens')  # cut off mid-write
    for call in (lambda: C.load_checkpoint_info(tmp_path), lambda: C.load_checkpoint(tmp_path, model, opt),
                 lambda: C.save_checkpoint(tmp_path, model, opt, 2, {})):
        with pytest.raises(CheckpointError) as info:
            call()
        assert "checkpoint.json" in str(info.value) and "not valid JSON" in str(info.value)


def test_checkpoint_json_of_other_format(tmp_path):
    (tmp_path / "checkpoint.json").write_text(json.dumps({"format": 99, "epoch": 1}))
    with pytest.raises(CheckpointError, match="format 99"):
        C.load_checkpoint_info(tmp_path)


@pytest.mark.parametrize("content", ['{"format": 1}', "[1, 2]", '{"format": 1, "epoch": 1, '
                                     '"tensors": "epoch-0001.safetensors", "sha256": null}'],
                         ids=["missing-fields", "not-an-object", "no-optimizer"])
def test_checkpoint_json_missing_fields_gives_checkpoint_error(tmp_path, content):
    """BUG (src/vaebook/checkpoints.py): a ``checkpoint.json`` that is valid JSON but not a
    checkpoint (a list, or missing ``tensors``/``sha256``/``optimizer``) escapes as
    ``KeyError``/``AttributeError``, so the CLI prints a traceback. Fix: in
    `load_checkpoint_info`, check ``isinstance(info, dict)`` and that the keys
    ``epoch, tensors, sha256, optimizer`` are present, raising `CheckpointError` otherwise."""
    model = tiny_model()
    opt = _optimizer(model)
    train_steps(model, opt)
    C.save_checkpoint(tmp_path, model, opt, 1, {})
    (tmp_path / "checkpoint.json").write_text(content)
    try:
        C.load_checkpoint(tmp_path, model, opt)
    except CheckpointError as e:
        assert "checkpoint.json" in str(e) or "epoch-0001" in str(e)
    except Exception as e:  # noqa: BLE001
        pytest.fail(f"a checkpoint.json without the checkpoint fields raised {type(e).__name__}: {e}; "
                    "it must raise CheckpointError naming the file")
    else:
        pytest.fail("a checkpoint.json without the checkpoint fields was accepted")


def test_clean_run_dir_removes_orphans_and_dead_temporaries_but_never_the_named_checkpoint(tmp_path):
    model = tiny_model()
    opt = _optimizer(model)
    run = tmp_path / "run"
    C.save_checkpoint(run, model, opt, 3, {"history": []})
    (run / "epoch-0002.safetensors").write_bytes(b"orphan")
    dead = run / ".history.json.999999999-abcdef12.tmp"  # no process has such a pid
    dead.write_text("half")
    removed = C.clean_run_dir(run)
    assert sorted(p.name for p in removed) == sorted([dead.name, "epoch-0002.safetensors"])
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint.json", "epoch-0003.safetensors"]
    (run / "epoch-0002.safetensors").write_bytes(b"orphan")
    (run / "checkpoint.json").write_text("{ damaged")
    assert C.clean_run_dir(run) == []  # which file a damaged checkpoint.json named is unknown: all stay
    assert C.clean_run_dir(tmp_path / "nowhere") == []
