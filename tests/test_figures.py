"""Figures: the latent samplers fit what they claim, grids are right, output is deterministic."""

import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402
import torch  # noqa: E402

from vaebook import evaluate, models, plots  # noqa: E402
from vaebook.data import ImageDataset  # noqa: E402
from vaebook.models import ModelConfig, build_model  # noqa: E402


def _data(n=200):
    gen = torch.Generator().manual_seed(0)
    return ImageDataset(torch.randint(0, 256, (n, 1, 28, 28), generator=gen, dtype=torch.uint8),
                        labels=torch.arange(n) % 10, class_names=tuple(f"class {i}" for i in range(10)))


def _model(kind="ae", latent=2, seed=0):
    torch.manual_seed(seed)
    return build_model(ModelConfig(kind=kind, arch="mlp", latent_dim=latent, hidden=16)).eval()


def test_latent_samplers_match_the_fitted_moments_and_box():
    gen = torch.Generator().manual_seed(0)
    a = torch.tensor([[2.0, 0.0, 0.0], [1.5, 0.5, 0.0], [0.0, 0.3, 1.0]])
    latents = torch.randn(20_000, 3, generator=gen) @ a.T + torch.tensor([1.0, -2.0, 0.5])
    s = models.fit_latent_samplers(latents)
    torch.testing.assert_close(s["mean"].float(), latents.mean(0), atol=1e-4, rtol=0)
    joint = s["sample"]("joint", 50_000, torch.Generator().manual_seed(1))
    torch.testing.assert_close(torch.cov(joint.T), s["cov"].float(), atol=0.08, rtol=0.03)
    indep = s["sample"]("independent", 50_000, torch.Generator().manual_seed(2))
    cov_i = torch.cov(indep.T)
    torch.testing.assert_close(cov_i.diagonal(), s["cov"].diagonal().float(), atol=0, rtol=0.03)
    assert cov_i[0, 1].abs() < 0.05 < s["cov"][0, 1].abs()  # independence drops the correlation
    box = s["sample"]("uniform", 10_000, torch.Generator().manual_seed(3))
    assert (box >= s["low"].float() - 1e-6).all() and (box <= s["high"].float() + 1e-6).all()
    with pytest.raises(ValueError):
        s["sample"]("gamma", 2)


def test_grid_array_tiles_images_in_order():
    imgs = torch.stack([torch.full((1, 4, 4), v) for v in (0.0, 0.5, 1.0)])
    g = plots.grid_array(imgs, nrow=3, padding=2)
    assert g.shape == (8, 20, 3)
    assert g[3, 3, 0] == 0.0 and g[3, 9, 0] == 0.5 and g[3, 15, 0] == 1.0
    assert g[0, 0, 0] == 1.0  # white padding


def test_figures_are_byte_identical_for_the_same_seed(tmp_path):
    data, ae, vae = _data(), _model("ae", 2), _model("vae", 2)
    for run in ("a", "b"):
        plots.random_latent_figure(ae, data, n=6, seed=5, vae=vae, path=tmp_path / run / "random.png")
        plots.samples_figure(vae, n=8, seed=5, path=tmp_path / run / "samples.png")
    for name in ("random.png", "samples.png"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    plots.samples_figure(vae, n=8, seed=6, path=tmp_path / "c.png")
    assert (tmp_path / "c.png").read_bytes() != (tmp_path / "a" / "samples.png").read_bytes()


def test_every_figure_function_writes_a_png(tmp_path):
    data, ae, vae = _data(), _model("ae", 2), _model("vae", 2)
    history = [{"epoch": e, **{f"{s}_{k}": 10.0 / e for s in ("train", "test") for k in ("loss", "recon", "kl")}}
               for e in (1, 2, 3)]
    plots.image_grid_figure(data.images[:16], nrow=8, path=tmp_path / "grid.png")
    plots.reconstruction_figure({"ae": ae, "vae": vae}, data.images[:5], path=tmp_path / "recon.png")
    plots.training_curves_figure({"vae": history}, path=tmp_path / "curves.png")
    plots.latent_scatter_figure({"ae": ae, "vae 8-d": _model("vae", 8)}, data, path=tmp_path / "scatter.png")
    plots.manifold_figure(vae, n=5, path=tmp_path / "manifold-vae.png")
    plots.manifold_figure(ae, n=5, data=data, path=tmp_path / "manifold-ae.png")
    plots.interpolation_figure({"ae": ae}, data.images[0], data.images[1], steps=5, path=tmp_path / "interp.png")
    for f in tmp_path.iterdir():
        assert f.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_manifold_needs_a_2d_latent_space_and_uses_prior_quantiles(monkeypatch):
    with pytest.raises(ValueError, match="2-d"):
        plots.manifold_figure(_model("vae", 3))
    seen = {}

    def capture(model, z):
        seen["z"] = z
        return torch.zeros(len(z), 1, 28, 28)

    import vaebook.plots.latents

    monkeypatch.setattr(vaebook.plots.latents, "decodes", capture)
    plots.manifold_figure(_model("vae", 2), n=3)
    z = seen["z"]
    edge = torch.distributions.Normal(0.0, 1.0).icdf(torch.tensor(0.95))
    torch.testing.assert_close(z[:, 0].unique(), torch.tensor([-edge, 0.0, edge]), atol=1e-6, rtol=0)
    assert z[0, 1] == pytest.approx(edge.item(), abs=1e-6)  # the top row has the largest z2


def test_face_figures_and_numbers(tmp_path):
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (30, 3, 16, 16), generator=gen, dtype=torch.uint8)
    attrs = (torch.arange(30)[:, None] + torch.arange(4)[None]) % 2
    names = evaluate.FACE_ATTRIBUTES
    data = ImageDataset(images, attributes=attrs.to(torch.uint8), attribute_names=names, name="faces")
    torch.manual_seed(0)
    vae = build_model(ModelConfig(kind="vae", arch="mlp", in_shape=(3, 16, 16), latent_dim=4, hidden=16,
                                  likelihood="gaussian", sigma=0.1)).eval()
    plots.attribute_figure(vae, data, data, path=tmp_path / "attrs.png")
    plots.nearest_neighbour_figure(vae, data, n=4, path=tmp_path / "nn.png")
    plots.likelihood_width_figure({"a": vae, "b": vae}, data.images, n=4, path=tmp_path / "sigma.png")
    assert (tmp_path / "attrs.png").read_bytes()[:4] == b"\x89PNG" and (tmp_path / "nn.png").is_file()
    numbers = evaluate.celeba_numbers(vae, data, data.subset(10), n=1000)
    assert numbers["n"] == 10 and numbers["n_train"] == 30
    assert max(numbers["nn_rmse_test_faces"].values()) < 1e-6  # these "test" faces are training faces
    assert numbers["nn_rmse_vae_samples"]["median"] > 0
    assert numbers["attribute_counts"] == {a: int(attrs[:, i].sum()) for i, a in enumerate(names)}


def test_transposed_convolution_figure_draws_the_numbers_of_conv_transpose2d():
    """Every number in the diagram is read back from the figure and checked against PyTorch and the stamp rule."""
    import torch.nn.functional as F
    from matplotlib.text import Text

    from vaebook.plots.diagrams import TRANSPOSED_CONV_INPUT, TRANSPOSED_CONV_KERNEL

    fig = plots.transposed_convolution_figure()
    drawn: dict[str, dict[tuple[int, int], float]] = {}
    for t in fig.findobj(Text):
        if t.get_gid() and ":" in t.get_gid():
            name, cell = t.get_gid().split(":")
            drawn.setdefault(name, {})[tuple(int(c) for c in cell.split(","))] = float(t.get_text())
        if t.get_text():
            assert t.get_fontsize() >= 8, t.get_text()
    assert fig.get_figwidth() <= 8

    def table(name, shape):
        return torch.tensor([[drawn[name][i, j] for j in range(shape[1])] for i in range(shape[0])])

    x, w = torch.tensor(TRANSPOSED_CONV_INPUT), torch.tensor(TRANSPOSED_CONV_KERNEL)
    out = F.conv_transpose2d(x[None, None], w[None, None], stride=2)[0, 0]
    assert out.shape == (5, 5) and len(drawn["output"]) == 25
    torch.testing.assert_close(table("input", (2, 2)), x, atol=0, rtol=0)
    torch.testing.assert_close(table("kernel", (3, 3)), w, atol=0, rtol=0)
    torch.testing.assert_close(table("output", (5, 5)), out, atol=0, rtol=0)
    for i in range(2):  # stamp (i, j): x[i, j] times the kernel, at rows 2i.. and columns 2j.. (blank elsewhere)
        for j in range(2):
            cells = drawn[f"stamp{i}{j}"]
            assert set(cells) == {(2 * i + a, 2 * j + b) for a in range(3) for b in range(3)}
            for (r, c), v in cells.items():
                assert v == x[i, j] * w[r - 2 * i, c - 2 * j]
    stamps, total = plots.transposed_convolution_stamps(x, w)
    torch.testing.assert_close(stamps.sum((0, 1)), total)
    torch.testing.assert_close(total, out)
    # padding=1, output_padding=1 (as in ConvDecoder) keeps the 4 x 4 the figure frames: rows and columns 1 to 4
    kept = F.conv_transpose2d(x[None, None], w[None, None], stride=2, padding=1, output_padding=1)[0, 0]
    torch.testing.assert_close(kept, out[1:, 1:])


def test_figures_without_models_have_text_legible_in_the_text_column():
    """Text of the figures drawn from closed forms (no model, no data) is >= 10.5 px when shown 760 px wide."""
    import matplotlib.pyplot as plt

    from vaebook.build import ARTEFACTS
    from vaebook.plots.base import smallest_text_px

    fig, ax = plt.subplots(figsize=(8, 2))  # the helper: size in points scales to pixels; hidden text is not counted
    ax.set(xticks=[], yticks=[])  # the frame alone sets the saved width
    small, big = ax.text(0.1, 0.1, "small", fontsize=8), ax.text(0.1, 0.6, "big", fontsize=16)
    ax.text(0.5, 0.5, "hidden", fontsize=2, visible=False)
    px = smallest_text_px(fig)
    small.set_visible(False)
    assert smallest_text_px(fig) == pytest.approx(2 * px)
    big.set_fontsize(32)
    assert smallest_text_px(fig, shown_width_px=380) == pytest.approx(2 * px)  # 4 times the size, half the width
    plt.close(fig)
    rows = [r for r in ARTEFACTS if not r.models and r.data is None and r.file.endswith(".png")]
    assert len(rows) >= 6
    for row in rows:
        fig = row.make(None, None)
        assert smallest_text_px(fig) >= 10.5, row.file
        plt.close(fig)


def test_information_split_figure_stacks_the_split_it_is_given_under_a_log_n_line():
    """The bars are the numbers of `latent_information`, information below and mismatch above; text is legible."""
    import math

    import matplotlib.pyplot as plt

    from vaebook.information import latent_information
    from vaebook.plots.base import smallest_text_px

    data, vae = _data(60), _model("vae", 3)
    splits = plots.information_splits({"tiny": vae, "same": vae}, data)
    with torch.no_grad():
        direct = latent_information(*vae.encode(data.float()))
    assert splits["tiny"] == direct == splits["same"]  # all of the images, one seeded draw each
    splits["wide"] = {"mutual_information": 4.0, "kl": 9.0, "marginal_kl": 5.0, "log_n": math.log(60)}
    fig = plots.information_split_figure(splits)
    ax = fig.axes[0]
    bars = {gid: [p for p in ax.patches if p.get_gid() == gid] for gid in ("information", "mismatch")}
    for i, s in enumerate(splits.values()):
        information, mismatch = bars["information"][i], bars["mismatch"][i]
        assert information.get_y() == 0 and information.get_height() == pytest.approx(s["mutual_information"])
        assert mismatch.get_y() == pytest.approx(s["mutual_information"])
        assert mismatch.get_y() + mismatch.get_height() == pytest.approx(s["kl"])
    (line,) = [ln for ln in ax.lines if ln.get_gid() == "log_n"]
    assert line.get_ydata()[0] == pytest.approx(math.log(60))
    assert [t.get_text() for t in ax.get_xticklabels()] == ["tiny", "same", "wide"]
    assert smallest_text_px(fig) >= 10.5
    plt.close(fig)


def test_latent_traversals_put_a_switched_off_dimension_last_and_its_row_is_constant(tmp_path):
    """A dimension whose posterior is the prior for every image (KL 0) and that the decoder ignores decodes to one
    image all along its row; the rows come in order of mean KL, as the figure labels them."""
    import matplotlib.pyplot as plt

    from vaebook.plots.base import smallest_text_px

    data, vae = _data(50), _model("vae", 3)
    with torch.no_grad():
        for head in (vae.to_mu, vae.to_logvar):  # q(z_1 | x) = N(0, 1) for every x
            head.weight[1] = 0
            head.bias[1] = 0
        vae.decoder[0].weight[:, 1] = 0  # and the decoder ignores z_1
    kl = evaluate.kl_per_dimension(vae, data)
    rows = plots.latent_traversals(vae, data, dims=3, values=(-2, 0, 2))
    assert [j for j, _, _ in rows] == torch.argsort(kl, descending=True).tolist() and rows[-1][0] == 1
    assert [k for _, k, _ in rows] == pytest.approx(kl[[j for j, _, _ in rows]].tolist()) and rows[-1][1] == 0
    for j, _, images in rows:
        assert images.shape == (3, 1, 28, 28)
        change = float((images - images[0]).abs().max())
        assert change < 1e-6 if j == 1 else change > 1e-3  # only the switched-off row stays put
    fig = plots.traversal_comparison_figure({"a": vae, "b": _model("vae", 3, seed=1)}, data, dims=2,
                                            path=tmp_path / "t.png")
    assert (tmp_path / "t.png").read_bytes()[:4] == b"\x89PNG" and smallest_text_px(fig) >= 10.5
    plt.close(fig)
