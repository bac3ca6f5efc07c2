"""Glue between the package and the Quarto book: embedded source code and Colab links.

Chapters print the package's real code with `source` inside an ``output: asis``
cell, so the text a reader sees is pulled from ``src/vaebook`` each time the book
renders and cannot drift from the code that ran. Colab links are built from the one
repository address configured in ``_quarto.yml`` (``book.repo-url``).
"""

from __future__ import annotations

import inspect
import re
import textwrap
from pathlib import Path
from typing import Any



def book_root(start: str | Path | None = None) -> Path:
    """The book's folder: the nearest one holding ``_quarto.yml``, from ``start`` (default: the working
    directory, where Quarto runs a chapter) upwards; else the checkout this module was imported from."""
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents, Path(__file__).resolve().parents[2]):
        if (folder / "_quarto.yml").is_file():
            return folder
    raise FileNotFoundError(f"No _quarto.yml in {here} or above it: run this from the book's folder (a checkout "
                            "of the vaebook repository).")


def _quarto_yml(path: str | Path | None) -> Path:
    return Path(path) if path is not None else book_root() / "_quarto.yml"


def source(obj: Any, docstring: bool = True) -> str:
    """The source of a function or class as a fenced Markdown Python block.

    With ``docstring=False`` the docstring is left out, for a shorter listing.
    """
    code = textwrap.dedent(inspect.getsource(obj))
    if not docstring:
        code = re.sub(r'\n(\s+)"""(.|\n)*?"""\n', "\n", code, count=1)
    where = f"{obj.__module__}.{obj.__qualname__}"
    return f"```python\n# {where}\n{code.rstrip()}\n```\n"


def repo_url(quarto_yml: str | Path | None = None) -> str:
    """The repository address configured in ``_quarto.yml`` (``book.repo-url``)."""
    import yaml

    return yaml.safe_load(_quarto_yml(quarto_yml).read_text())["book"]["repo-url"].rstrip("/")


def colab_ref(quarto_yml: str | Path | None = None) -> str:
    """The git ref (a release tag) that Colab opens the notebooks at and installs vaebook from.

    Set as ``vaebook.colab-ref`` in ``_quarto.yml``: ``v`` and the package version, so a
    notebook always runs against the package it was written for. A release pushes that
    tag (see the README).
    """
    import yaml

    return str(yaml.safe_load(_quarto_yml(quarto_yml).read_text())["vaebook"]["colab-ref"])


def colab_url(notebook: str, quarto_yml: str | Path | None = None, ref: str | None = None) -> str:
    """The Colab address that opens ``notebooks/<notebook>`` at `colab_ref` from the configured GitHub repository."""
    repo = repo_url(quarto_yml)
    if not repo.startswith("https://github.com/"):
        raise ValueError(f"Colab opens GitHub repositories; book.repo-url is {repo!r}")
    ref = ref or colab_ref(quarto_yml)
    return f"https://colab.research.google.com/github/{repo.removeprefix('https://github.com/')}/blob/{ref}/notebooks/{notebook}"


def colab_badge(notebook: str, quarto_yml: str | Path | None = None) -> str:
    """A Markdown "Open in Colab" badge linking to ``notebooks/<notebook>`` (what a notebook's first cell shows)."""
    return (f"[![Open in Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
            f"({colab_url(notebook, quarto_yml)})")


def chapter_badge(notebook: str, quarto_yml: str | Path | None = None) -> str:
    """A chapter's Markdown paragraph: its notebook's inline Colab badge, then one sentence.

    The sentence keeps the badge inline: an image alone in its paragraph is what
    Quarto (pandoc) turns into a centred figure with its alt text as a caption.
    """
    return (f"{colab_badge(notebook, quarto_yml)} "
            f"Run this chapter's code as a notebook on Colab (`notebooks/{notebook}`), with or without a GPU.")


def python_cells(qmd: str | Path) -> list[str]:
    """The source of every executable ```` ```{python} ```` cell of a Quarto file, in order."""
    text = Path(qmd).read_text()
    return [m.group(1) for m in re.finditer(r"^```\{python[^}]*\}[ \t]*\n(.*?)^```[ \t]*$", text, flags=re.M | re.S)]


def execute_chapter(qmd: str | Path, timeout: int = 600):
    """Run a chapter's Python cells in order in a fresh Jupyter kernel, as Quarto does.

    The kernel starts in the chapter's folder (Quarto's default). Returns the executed
    notebook; a failing cell raises ``nbclient.exceptions.CellExecutionError``.
    """
    import nbformat
    from nbclient import NotebookClient

    qmd = Path(qmd)
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src) for src in python_cells(qmd)]
    NotebookClient(nb, timeout=timeout, kernel_name="python3",
                   resources={"metadata": {"path": str(qmd.parent.resolve())}}).execute()
    return nb


# --------------------------------------------------------------------------- companion notebooks

SETUP_CODE = '''# Setup. On Colab this installs vaebook (code and pretrained weights) at the version this
# notebook was written for. On your own machine, after `pip install -e ".[test,book]"`, it only
# checks that vaebook imports.
import subprocess
import sys

REPO = "{repo}"  # book.repo-url in _quarto.yml (a fork? its address)
REF = "{ref}"  # the tag, branch or commit to install: vaebook.colab-ref in _quarto.yml
problem = None
if "google.colab" in sys.modules:
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "-q", f"vaebook @ git+{{REPO}}@{{REF}}"],
                         capture_output=True, text=True)
    problem = (pip.stderr.strip().splitlines() or ["pip failed"])[-1] if pip.returncode else None
try:
    import vaebook
except ImportError as error:
    class SetupError(Exception):
        def _render_traceback_(self):  # Jupyter shows this one message, not a traceback
            return [f"SetupError: {{self}}"]

    raise SetupError(f"vaebook is not available ({{problem or error}}). On Colab it is installed from {{REPO}} at "
                     f"{{REF}}: if that repository or ref does not exist, set REPO and REF above to ones that hold "
                     "vaebook (your fork; REF = 'main') and run this cell again. On your own machine: "
                     "pip install -e '.[test,book]' in the repository.") from None'''
DEVICE_CODE = '''# NBVAL_IGNORE_OUTPUT
# (the device differs from machine to machine, so the tests do not compare this cell's output)
import torch

from vaebook.train import pick_device

device = pick_device()  # cuda if there is a GPU (Colab: Runtime > Change runtime type), else mps or cpu
print("vaebook will use:", device.type + (f" ({{torch.cuda.get_device_name()}})" if device.type == "cuda" else ""))'''


def notebook_header(notebook: str, title: str, chapter: str, quarto_yml: str | Path | None = None) -> list:
    """The first three cells every companion notebook starts with.

    A Markdown cell with the title, the "Open in Colab" badge and a pointer to the
    chapter; a setup cell that installs vaebook at `colab_ref` on Colab only and
    otherwise stops with one message saying what to change; a cell that reports the
    device. The repository and ref come from ``_quarto.yml``, like the book's links.
    """
    import nbformat

    intro = (f"# {title}\n\n{colab_badge(notebook, quarto_yml)}\n\n"
             f"The hands-on companion of the chapter *{title}* (`{chapter}` in the book). The chapter has "
             "the theory; here you run the code, look at the results and turn the knobs. Run the cells "
             "from top to bottom.")
    return [nbformat.v4.new_markdown_cell(intro),
            nbformat.v4.new_code_cell(SETUP_CODE.format(repo=repo_url(quarto_yml), ref=colab_ref(quarto_yml))),
            nbformat.v4.new_code_cell(DEVICE_CODE.format())]


def execute_notebook(path: str | Path, timeout: int = 600) -> None:
    """Restart and run a notebook top to bottom in its folder, then save it with its outputs.

    This is how the committed outputs are produced (``python -m vaebook.book --notebooks``);
    ``pytest --nbval`` later re-runs the notebook and compares against them.
    """
    import nbformat
    from nbclient import NotebookClient

    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    NotebookClient(nb, timeout=timeout, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent.resolve())}}).execute()
    nbformat.write(nb, path)


if __name__ == "__main__":
    # python -m vaebook.book chapters/NAME.qmd ...       execute chapters' cells, report the time
    # python -m vaebook.book --notebooks [NAME.ipynb ...]  re-run notebooks in place, saving outputs
    import sys
    import time

    args = sys.argv[1:]
    if args and args[0] == "--notebooks":
        notebooks = book_root() / "notebooks"
        names = args[1:] or sorted(p.name for p in notebooks.glob("*.ipynb"))
        for name in names:
            t0 = time.perf_counter()
            execute_notebook(notebooks / Path(name).name)
            print(f"{name}: executed and saved in {time.perf_counter() - t0:.1f} s")
    for name in (a for a in args if a.endswith(".qmd")):
        t0 = time.perf_counter()
        done = execute_chapter(name)
        print(f"{name}: {len(done.cells)} cells executed in {time.perf_counter() - t0:.1f} s")
