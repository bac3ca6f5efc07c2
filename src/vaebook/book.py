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

ROOT = Path(__file__).resolve().parents[2]
QUARTO_YML = ROOT / "_quarto.yml"


def source(obj: Any, docstring: bool = True) -> str:
    """The source of a function or class as a fenced Markdown Python block.

    With ``docstring=False`` the docstring is left out, for a shorter listing.
    """
    code = textwrap.dedent(inspect.getsource(obj))
    if not docstring:
        code = re.sub(r'\n(\s+)"""(.|\n)*?"""\n', "\n", code, count=1)
    where = f"{obj.__module__}.{obj.__qualname__}"
    return f"```python\n# {where}\n{code.rstrip()}\n```\n"


def repo_url(quarto_yml: str | Path = QUARTO_YML) -> str:
    """The repository address configured in ``_quarto.yml`` (``book.repo-url``)."""
    import yaml

    return yaml.safe_load(Path(quarto_yml).read_text())["book"]["repo-url"].rstrip("/")


def colab_url(notebook: str, quarto_yml: str | Path = QUARTO_YML, branch: str = "main") -> str:
    """The Colab address that opens ``notebooks/<notebook>`` from the configured GitHub repository."""
    repo = repo_url(quarto_yml)
    if not repo.startswith("https://github.com/"):
        raise ValueError(f"Colab opens GitHub repositories; book.repo-url is {repo!r}")
    return f"https://colab.research.google.com/github/{repo.removeprefix('https://github.com/')}/blob/{branch}/notebooks/{notebook}"


def colab_badge(notebook: str, quarto_yml: str | Path = QUARTO_YML) -> str:
    """A Markdown "Open in Colab" badge linking to the chapter's notebook."""
    return (f"[![Open in Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
            f"({colab_url(notebook, quarto_yml)})")


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


if __name__ == "__main__":  # python -m vaebook.book chapters/NAME.qmd ...: execute chapters, report time
    import sys
    import time

    for name in sys.argv[1:]:
        t0 = time.perf_counter()
        done = execute_chapter(name)
        print(f"{name}: {len(done.cells)} cells executed in {time.perf_counter() - t0:.1f} s")
