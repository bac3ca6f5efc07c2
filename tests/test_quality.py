"""Sample quality: the Fréchet distance, the shipped feature classifier, and the map of the families."""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch

from conftest import REPO_ROOT, make_fmnist
from vaebook import quality
from vaebook.atlas import FAMILY_MAP, classifier_folder, draw_map
from vaebook.checkpoints import PRETRAINED_DIR, manifest, sha256
from vaebook.cli import main
from vaebook.data import DEBIAN_FASHION_MNIST, FASHION_MNIST_CLASSES, fashion_mnist
from vaebook.errors import CheckpointError
from vaebook.quality import frechet_distance, frechet_gaussian


def normal_sample(n: int, mean: torch.Tensor, cov: torch.Tensor, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return mean + torch.randn(n, len(mean), generator=gen, dtype=torch.float64) @ torch.linalg.cholesky(cov).T


def random_cov(d: int, seed: int) -> torch.Tensor:
    a = torch.randn(d, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return a @ a.T / d + 0.1 * torch.eye(d, dtype=torch.float64)


# --------------------------------------------------------------------------- the Fréchet distance


def test_closed_form_for_diagonal_covariances():
    """Diagonal covariances commute: FD = ||mu1 - mu2||^2 + sum_j (s1_j - s2_j)^2 in standard deviations."""
    gen = torch.Generator().manual_seed(0)
    mu1, mu2 = (torch.randn(8, generator=gen, dtype=torch.float64) for _ in range(2))
    s1, s2 = (torch.rand(8, generator=gen, dtype=torch.float64) + 0.1 for _ in range(2))
    want = float((mu1 - mu2).square().sum() + (s1 - s2).square().sum())
    assert frechet_gaussian(mu1, torch.diag(s1 ** 2), mu2, torch.diag(s2 ** 2)) == pytest.approx(want, rel=1e-10)


def test_closed_form_for_full_covariances_matches_the_eigenvalues_of_the_product():
    """Tr((S1^1/2 S2 S1^1/2)^1/2) = sum of the square roots of the (real, positive) eigenvalues of S1 S2."""
    c1, c2 = random_cov(6, 1), random_cov(6, 2)
    mu1, mu2 = torch.zeros(6, dtype=torch.float64), torch.ones(6, dtype=torch.float64)
    cross = torch.linalg.eigvals(c1 @ c2).real.sqrt().sum()
    want = float(6 + c1.trace() + c2.trace() - 2 * cross)
    assert frechet_gaussian(mu1, c1, mu2, c2) == pytest.approx(want, rel=1e-9)
    assert frechet_gaussian(mu1, c1, mu1, c1) == pytest.approx(0, abs=1e-9)


def test_fd_of_large_samples_approaches_the_closed_form():
    c1, c2 = random_cov(4, 3), random_cov(4, 4)
    mu1, mu2 = torch.zeros(4, dtype=torch.float64), torch.full((4,), 0.5, dtype=torch.float64)
    got = frechet_distance(normal_sample(100_000, mu1, c1, 0), normal_sample(100_000, mu2, c2, 1))
    assert got == pytest.approx(frechet_gaussian(mu1, c1, mu2, c2), abs=0.02)


def test_fd_of_a_set_with_itself_is_zero_and_fd_is_symmetric():
    cov = random_cov(16, 5)
    a = normal_sample(500, torch.zeros(16, dtype=torch.float64), cov, 0)
    b = normal_sample(300, torch.ones(16, dtype=torch.float64), 2 * cov, 1)
    assert frechet_distance(a, a) == pytest.approx(0, abs=1e-8)
    assert frechet_distance(a[:10], a[:10]) == pytest.approx(0, abs=1e-5)  # 10 points in 16-d: singular covariances
    assert frechet_distance(a, b) == pytest.approx(frechet_distance(b, a), rel=1e-10)
    assert frechet_distance(a, b) > 16  # the means alone are 16 apart (squared)
    assert frechet_distance(a.float(), b.float()) == pytest.approx(frechet_distance(a, b), rel=1e-5)


def test_fd_is_invariant_to_a_common_rotation_and_shift():
    cov = random_cov(12, 6)
    a = normal_sample(400, torch.zeros(12, dtype=torch.float64), cov, 0)
    b = normal_sample(400, torch.full((12,), 0.3, dtype=torch.float64), cov.inverse(), 1)
    q, _ = torch.linalg.qr(torch.randn(12, 12, generator=torch.Generator().manual_seed(7), dtype=torch.float64))
    shift = torch.arange(12, dtype=torch.float64)
    assert frechet_distance(a @ q + shift, b @ q + shift) == pytest.approx(frechet_distance(a, b), rel=1e-9)


def test_finite_samples_bias_fd_upwards_less_as_they_grow():
    """Two samples of the same Gaussian: FD > 0, shrinking roughly like 1/n."""
    mean, cov = torch.zeros(16, dtype=torch.float64), torch.eye(16, dtype=torch.float64)
    fds = [frechet_distance(normal_sample(n, mean, cov, 0), normal_sample(n, mean, cov, 1)) for n in (100, 1000, 10000)]
    assert fds[0] > fds[1] > fds[2] > 0
    assert fds[0] > 5 * fds[2]


def test_fd_refuses_mismatched_or_too_small_sets():
    with pytest.raises(ValueError, match="same D"):
        frechet_distance(torch.zeros(5, 3), torch.zeros(5, 4))
    with pytest.raises(ValueError, match="at least two"):
        frechet_distance(torch.zeros(1, 3), torch.zeros(5, 3))


# --------------------------------------------------------------------------- the classifier


def test_the_shipped_classifier_loads_hash_checked_and_is_recorded():
    info = quality.classifier_info()
    assert sha256(PRETRAINED_DIR / info["file"]) == info["sha256"]
    for key in ("test_accuracy", "epochs", "seed", "torch_version", "command", "wall_time_s"):
        assert key in info, key
    assert info["command"].startswith("python -m vaebook map --train-classifier")
    assert info["test_accuracy"] >= 0.85 and info["test_images"] == 10_000
    assert quality.CLASSIFIER not in manifest()  # the manifest lists latent-variable models only
    assert (PRETRAINED_DIR / info["file"]).stat().st_size < 500_000
    model = quality.load_classifier()
    x = torch.rand(3, 1, 28, 28)
    assert model.features(x).shape == (3, 128) and model(x).shape == (3, 10)


def test_a_damaged_or_missing_classifier_is_one_clear_error(tmp_path):
    for suffix in (".json", ".safetensors"):
        shutil.copy(PRETRAINED_DIR / f"{quality.CLASSIFIER}{suffix}", tmp_path)
    weights = tmp_path / f"{quality.CLASSIFIER}.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1  # one flipped bit
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="damaged or was changed") as info:
        quality.load_classifier(tmp_path)
    assert str(weights) in str(info.value) and quality.TRAIN_COMMAND in str(info.value)
    weights.unlink()
    with pytest.raises(CheckpointError, match="do not exist") as info:
        quality.load_classifier(tmp_path)
    assert quality.TRAIN_COMMAND in str(info.value) and "\n" not in str(info.value)
    (tmp_path / f"{quality.CLASSIFIER}.json").unlink()
    with pytest.raises(CheckpointError, match="does not exist"):
        quality.load_classifier(tmp_path)


@pytest.mark.skipif(not DEBIAN_FASHION_MNIST.exists(), reason="needs the Fashion-MNIST Debian package")
def test_the_shipped_classifier_is_accurate_on_fashion_mnist():
    test = fashion_mnist("test", download=False).subset(1000)
    assert quality.accuracy(quality.load_classifier(), test) >= 0.85


def test_training_is_seeded_and_a_saved_classifier_loads_back(tmp_path):
    make_fmnist(tmp_path / "data", n_train=64, n_test=16, random=True)
    train, test = (fashion_mnist(s, root=tmp_path / "data", download=False) for s in ("train", "test"))
    a, info = quality.train_classifier(train, test, epochs=1, seed=3, batch_size=32)
    b, _ = quality.train_classifier(train, test, epochs=1, seed=3, batch_size=32)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    assert 0 <= info["test_accuracy"] <= 1 and info["epochs"] == 1 and info["seed"] == 3
    quality.save_classifier(a, info, tmp_path)
    loaded = quality.load_classifier(tmp_path)
    x = torch.rand(4, 1, 28, 28)
    assert torch.equal(loaded(x), a.eval()(x))


def test_sample_quality_reports_fd_and_what_the_classifier_sees():
    classifier = quality.load_classifier()
    gen = torch.Generator().manual_seed(0)
    samples, reference = torch.rand(40, 1, 28, 28, generator=gen), torch.rand(50, 1, 28, 28, generator=gen)
    q = quality.sample_quality(classifier, samples, reference)
    assert q["n_samples"] == 40 and q["n_reference"] == 50 and q["fd"] > 0
    assert len(q["class_share"]) == len(FASHION_MNIST_CLASSES) and sum(q["class_share"]) == pytest.approx(1)
    assert 0 <= q["class_entropy"] <= math.log(10) + 1e-9 and 0.1 <= q["confidence"] <= 1
    features = quality.classify(classifier, (reference * 255).round().to(torch.uint8))[0]
    assert quality.sample_quality(classifier, samples, features)["fd"] == pytest.approx(
        quality.sample_quality(classifier, samples, (reference * 255).round().to(torch.uint8))["fd"])
    one_class = quality.class_statistics(torch.tensor([[0.9, 0.1], [0.8, 0.2]]))
    assert one_class == {"confidence": pytest.approx(0.85), "class_share": [1.0, 0.0], "class_entropy": 0.0}


# --------------------------------------------------------------------------- the map


@pytest.fixture
def two_models(tmp_path, monkeypatch):
    """A weights folder holding fmnist-ae and fmnist-vae only, and 64 + 32 random Fashion-MNIST-shaped images."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("VAEBOOK_DATA", raising=False)
    weights = tmp_path / "weights"
    weights.mkdir()
    shipped = manifest()
    entries = {name: shipped[name] for name in ("fmnist-ae", "fmnist-vae")}
    for entry in entries.values():
        shutil.copy(PRETRAINED_DIR / entry["file"], weights)
    (weights / "manifest.json").write_text(json.dumps(entries))
    make_fmnist(tmp_path / "data", n_train=64, n_test=32, random=True)
    return weights, tmp_path / "data"


def test_the_map_runs_end_to_end_and_skips_models_not_shipped(two_models, tmp_path, capsys):
    weights, data = two_models
    path = tmp_path / "out" / "map.json"
    code = main(["map", "--n", "16", "--weights", str(weights), "--data-root", str(data), "--device", "cpu",
                 "--no-download", "--json", str(path)])
    assert code == 0
    out = capsys.readouterr().out
    assert all(len(line) <= 80 for line in out.splitlines() if not line.startswith("wrote ")), out
    for family in FAMILY_MAP:
        skipped = f"map: skipped {family.label} ({family.name}: not shipped yet)"
        assert (skipped in out) == (family.name not in ("fmnist-ae", "fmnist-vae"))
    saved = json.loads(path.read_text())
    assert saved["n"] == 16 and saved["seed"] == 0 and saved["device"] == "cpu"
    assert saved["torch_version"] == torch.__version__ and saved["command"].startswith("python -m vaebook map --n 16")
    assert [r["name"] for r in saved["rows"]] == ["fmnist-ae", "fmnist-vae"]
    assert saved["classifier"]["sha256"] == quality.classifier_info()["sha256"]  # the package's, as weights has none
    for row in saved["rows"] + [saved["floor"]]:
        assert row["fd"] > 0 and row["n_samples"] == row["n_reference"] == 16
    ae, vae = saved["rows"]
    assert ae["likelihood"] == "none" and ae["likelihood_note"] == "no likelihood" and ae["draw"] == "fitted-normal"
    assert vae["neg_elbo"] is None and vae["likelihood_note"].startswith("not in ")  # no results/ in tmp_path

    # the same map from Python, reading the recorded likelihoods: the same numbers (every draw is seeded)
    again = draw_map(weights, data, "cpu", download=False, n=16, evaluation=REPO_ROOT / "results" / "evaluation.json",
                     families=FAMILY_MAP[:2], report=None)
    recorded = json.loads((REPO_ROOT / "results" / "evaluation.json").read_text())["results"]["fmnist-vae"]
    assert [r["fd"] for r in again["rows"]] == [r["fd"] for r in saved["rows"]]
    assert again["floor"]["fd"] == saved["floor"]["fd"]
    assert again["rows"][1]["neg_elbo"] == recorded["neg_elbo"] and again["rows"][1]["iwae_nll"] == recorded["iwae_nll"]
    assert again["rows"][0]["neg_elbo"] is None


def test_map_train_classifier_writes_it_into_the_weights_folder(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make_fmnist(tmp_path / "data", n_train=64, n_test=16, random=True)
    weights = tmp_path / "weights"
    weights.mkdir()
    assert classifier_folder(weights) == PRETRAINED_DIR  # none there yet: the package's
    code = main(["map", "--train-classifier", "--n", "8", "--weights", str(weights), "--data-root",
                 str(tmp_path / "data"), "--device", "cpu", "--no-download", "--quiet"])
    assert code == 0
    assert classifier_folder(weights) == weights
    info = quality.classifier_info(weights)
    assert info["train_images"] == 64 and info["sha256"] == sha256(weights / info["file"])
    out = capsys.readouterr().out
    assert all(f"({family.name}: not shipped yet)" in out for family in FAMILY_MAP)


def test_map_refuses_fewer_than_two_images(capsys):
    with pytest.raises(SystemExit) as info:
        main(["map", "--n", "1"])
    assert info.value.code == 2 and "--n must be at least 2" in capsys.readouterr().err
