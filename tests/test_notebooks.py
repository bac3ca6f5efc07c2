"""The companion notebooks: one per chapter, with the shared header, committed after one clean run.

``pytest --nbval notebooks/`` (part of the README's test command) re-executes them and
compares outputs; these tests catch what nbval cannot: a notebook committed without
outputs, out of order, with errors, or with a header that drifted from ``_quarto.yml``.
"""

import re
import sys
from pathlib import Path

import nbformat
import pytest

from vaebook.book import notebook_header

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
CHAPTERS = sorted((ROOT / "chapters").glob("[0-9][0-9]-*.qmd"))


def test_every_numbered_chapter_has_its_notebook():
    assert CHAPTERS
    have = {p.stem for p in NOTEBOOKS}
    assert [c.stem for c in CHAPTERS if c.stem not in have] == []


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_starts_with_badge_setup_and_device_cells(path):
    nb = nbformat.read(path, as_version=4)
    title = nb.cells[0].source.splitlines()[0].removeprefix("# ")
    chapter = re.search(r"`(chapters/[^`]+\.qmd)`", nb.cells[0].source).group(1)
    want = notebook_header(path.name, title, chapter)
    assert [c.source for c in nb.cells[:3]] == [c.source for c in want]
    assert (ROOT / chapter).exists()


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_was_committed_after_one_clean_run(path):
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code" and c.source.strip()]
    counts = [c.execution_count for c in code]
    assert counts == list(range(1, len(code) + 1)), f"execution counts {counts}: restart and run all, then save"
    assert any(c.outputs for c in code), "no outputs: run the notebook before committing it"
    for cell in code:
        for out in cell.outputs:
            assert out.output_type != "error", f"cell {cell.execution_count} raised {out.get('ename')}"
            if out.output_type == "stream" and out.name == "stderr" and "NBVAL_IGNORE_OUTPUT" not in cell.source:
                pytest.fail(f"cell {cell.execution_count} writes to stderr ({out.text[:80]!r}); nbval would "
                            "compare it: silence it, or mark a volatile cell # NBVAL_IGNORE_OUTPUT")


def test_faces_notebook_runs_with_celeba(tmp_path):
    """With CelebA on disk, notebook 07 runs top to bottom, the data cells (# NBVAL_SKIP) included.

    nbval skips those cells, so this is what checks them. The notebook runs from a copy in a
    temporary folder (the committed one and its outputs stay untouched), with its two slow
    knobs turned down to keep the test near a minute on a CPU.
    """
    from vaebook.book import execute_notebook
    from vaebook.data import celeba
    from vaebook.errors import DataNotFoundError

    try:
        celeba("test", progress=False)
    except DataNotFoundError:
        pytest.skip("CelebA not found (set VAEBOOK_DATA, see vaebook.face_data.CELEBA_SOURCES): "
                    "the data cells of notebooks/07-faces.ipynb cannot run")
    nb = nbformat.read(ROOT / "notebooks" / "07-faces.ipynb", as_version=4)
    knobs = {"N_TRAIN = 2_000": "N_TRAIN = 256", "N_QUERIES = 500": "N_QUERIES = 100"}
    for old, new in knobs.items():
        cells = [c for c in nb.cells if c.cell_type == "code" and old in c.source]
        assert len(cells) == 1, f"knob {old!r} not found once in the notebook"
        cells[0].source = cells[0].source.replace(old, new)
    copy = tmp_path / "07-faces.ipynb"
    nbformat.write(nb, copy)
    execute_notebook(copy, timeout=300)  # raises CellExecutionError if a cell fails
    done = nbformat.read(copy, as_version=4)
    errors = [o for c in done.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
    assert all(c.execution_count for c in done.cells if c.cell_type == "code" and c.source.strip())


def test_colab_setup_cell_stops_with_one_message_when_the_install_fails():
    """On Colab, a repository or ref that does not exist (a fork, an untagged release) must not strand the
    reader: the setup cell stops "Run all" with one message, no traceback, naming what to change."""
    import nbformat
    from nbclient import NotebookClient

    from vaebook.book import SETUP_CODE, colab_ref, repo_url

    repo, ref = repo_url(), colab_ref()
    pretend = (
        "import subprocess, sys, types\n"
        "sys.modules['google.colab'] = types.ModuleType('google.colab')  # as on Colab\n"
        "sys.modules['vaebook'] = None  # vaebook not installed: `import vaebook` raises ImportError\n"
        "calls = []\n"
        "def pip_fails(cmd, **kwargs):\n"
        "    calls.append(cmd)\n"
        "    return subprocess.CompletedProcess(cmd, 1, '', 'Cloning...\\nERROR: repository not found\\n')\n"
        "subprocess.run = pip_fails\n")
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(pretend), nbformat.v4.new_code_cell(SETUP_CODE.format(repo=repo, ref=ref)),
                nbformat.v4.new_code_cell("print(calls)")]
    NotebookClient(nb, timeout=60, kernel_name="python3", allow_errors=True).execute()
    (error,) = nb.cells[1].outputs
    assert error.output_type == "error" and error.ename == "SetupError"
    assert len(error.traceback) == 1  # the message alone
    message = error.traceback[0]
    assert message.startswith("SetupError: vaebook is not available (ERROR: repository not found).")
    assert f"installed from {repo} at {ref}" in message and "set REPO and REF above" in message
    assert f"vaebook @ git+{repo}@{ref}" in nb.cells[2].outputs[0].text


def test_setup_cell_does_nothing_but_import_outside_colab():
    import subprocess

    from vaebook.book import SETUP_CODE

    code = SETUP_CODE.format(repo="https://github.com/x/y", ref="v0")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout == "" and proc.stderr == ""
