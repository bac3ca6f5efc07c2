"""The repository stays light: a clone is what Colab and every contributor download."""

import subprocess

from conftest import REPO_ROOT

BUDGET_MB = 60  # every tracked file together (50 until issue 16 shipped the conditional, discrete, hierarchical
# and diffusion models; 40 until issue 15 shipped a fourth face VAE), below the
# 64 MiB that the GPU machines accept as a working tree


def test_tracked_files_stay_under_the_budget():
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=REPO_ROOT, capture_output=True, check=True).stdout
    files = [REPO_ROOT / name for name in listed.decode().split("\0") if name]
    assert len(files) > 50, "git ls-files listed almost nothing: is this a checkout?"
    sizes = {f.relative_to(REPO_ROOT).as_posix(): f.stat().st_size for f in files if f.is_file()}
    total = sum(sizes.values()) / 1e6
    biggest = ", ".join(f"{name} {size / 1e6:.1f} MB" for name, size in sorted(sizes.items(), key=lambda kv: -kv[1])[:5])
    assert total < BUDGET_MB, f"tracked files take {total:.1f} MB, over the {BUDGET_MB} MB budget; biggest: {biggest}"


def test_shipped_weights_are_stored_in_half_precision():
    from safetensors import safe_open

    from vaebook.checkpoints import PRETRAINED_DIR, manifest

    for name, entry in manifest().items():
        assert entry["dtype"] == "float16", name
        with safe_open(str(PRETRAINED_DIR / entry["file"]), framework="pt") as f:
            dtypes = {str(f.get_slice(key).get_dtype()) for key in f.keys()}
        assert dtypes == {"F16"}, (name, dtypes)


def test_notebook_outputs_are_small():
    """Committed notebooks carry their outputs (nbval compares them); their pictures must stay small."""
    for path in sorted((REPO_ROOT / "notebooks").glob("*.ipynb")):
        size = path.stat().st_size / 1e6
        assert size < 1.5, f"{path.name} is {size:.1f} MB: shrink its figures (JPEG for photographs)"


def test_license_and_citation_match_the_package():
    import tomllib

    import yaml

    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"]["text"] == "MIT"
    assert (REPO_ROOT / "LICENSE").read_text().startswith("MIT License")
    citation = yaml.safe_load((REPO_ROOT / "CITATION.cff").read_text())
    assert citation["cff-version"] == "1.2.0" and citation["license"] == "MIT"
    assert str(citation["version"]) == project["version"]
    quarto = yaml.safe_load((REPO_ROOT / "_quarto.yml").read_text())
    assert citation["repository-code"] == quarto["book"]["repo-url"] and citation["title"] == quarto["book"]["title"]


def test_the_workflows_run_the_readme_test_command_and_publish_the_book():
    import yaml

    readme = (REPO_ROOT / "README.md").read_text()
    test_command = readme.split("```bash\n", 1)[1].splitlines()[1].split("#")[0].strip()
    tests = yaml.safe_load((REPO_ROOT / ".github/workflows/tests.yml").read_text())
    steps = [s.get("run", "") for job in tests["jobs"].values() for s in job["steps"]]
    assert test_command in steps
    publish = yaml.safe_load((REPO_ROOT / ".github/workflows/publish.yml").read_text())
    uses = [s.get("uses", "") for job in publish["jobs"].values() for s in job["steps"]]
    assert any(u.startswith("quarto-dev/quarto-actions/publish@") for u in uses)
    assert [s["with"]["target"] for job in publish["jobs"].values() for s in job["steps"]
            if s.get("uses", "").startswith("quarto-dev/quarto-actions/publish@")] == ["gh-pages"]
    assert yaml.safe_load((REPO_ROOT / "_quarto.yml").read_text())["execute"]["freeze"] == "auto"
