"""The build table is the book's plan: every file a page shows is a row, every row is shown where it says,
and the package's layers keep their order (plots below training, the command line on top)."""

import ast
import re
from pathlib import Path

from vaebook import experiments
from vaebook.build import ARTEFACTS, EVALUATION

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "vaebook"
PAGES = sorted((ROOT / "chapters").glob("*.qmd")) + [ROOT / "index.qmd"]


def _shown() -> dict[str, set[str]]:
    """``{file: {page, ...}}`` for every image or results file a page includes or reads."""
    shown: dict[str, set[str]] = {}
    for page in PAGES:
        for file in re.findall(r"\.\./((?:images|results)/[\w.-]+\.(?:png|json))", page.read_text()):
            shown.setdefault(file, set()).add(page.name)
        for file in re.findall(r"`((?:images|results)/[\w.-]+\.(?:png|json))`", page.read_text()):
            shown.setdefault(file, set()).add(page.name)
    return shown


def test_every_file_a_page_shows_is_a_row_of_the_table_and_every_row_is_shown_where_it_says():
    rows = {row.file: set(row.chapters) for row in (*ARTEFACTS, EVALUATION)}
    assert len(rows) == len(ARTEFACTS) + 1, "a file is listed twice"
    shown = _shown()
    assert set(shown) - set(rows) == set(), "pages show files that no row of vaebook.build.ARTEFACTS makes"
    for file, chapters in rows.items():
        assert file in shown, f"{file} is made but no page shows it"
        assert shown[file] <= chapters, f"{file} is shown by {shown[file] - chapters} too: add them to its row"
        assert chapters <= shown[file], f"{file}'s row names {chapters - shown[file]}, which do not show it"
    for row in ARTEFACTS:  # each row's file is in the repository, made by the last build
        assert (ROOT / row.file).is_file(), row.file
        assert set(row.models) <= set(experiments.EXPERIMENTS), row.file
        assert row.data in (None, "fashion-mnist", "frey", "celeba"), row.file
    assert {p.name for p in (ROOT / "images").glob("*.png")} == {Path(f).name for f in rows if f.endswith(".png")}


def _imports(module: Path) -> set[str]:
    """The vaebook modules ``module`` imports (relative imports resolved), at any depth of the file."""
    found = set()
    parts = module.relative_to(PACKAGE.parent).with_suffix("").parts
    for node in ast.walk(ast.parse(module.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = list(parts[:-1]) if node.level else []
            if node.level > 1:
                base = base[:len(base) - (node.level - 1)]
            target = ".".join(base + ([node.module] if node.module else []))
            names = [target + "." + a.name for a in node.names] if not node.module else [target]
            found.update(n for n in names if n.startswith("vaebook"))
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("vaebook"))
    return found


def test_plots_sit_below_training_and_the_command_line_is_the_only_top():
    above = {"vaebook.train", "vaebook.speed", "vaebook.experiments", "vaebook.build", "vaebook.jobs", "vaebook.cli"}
    for module in (PACKAGE / "plots").glob("*.py"):
        bad = {m for m in _imports(module) if any(m == a or m.startswith(a + ".") for a in above)}
        assert not bad, f"{module.name} imports {bad}: plots must not depend on training, experiments or the build"
    for module in PACKAGE.rglob("*.py"):
        if module.name not in ("cli.py", "__main__.py"):
            assert "vaebook.cli" not in _imports(module), module


def test_no_module_is_over_about_400_lines():
    sizes = {m.relative_to(PACKAGE).as_posix(): len(m.read_text().splitlines()) for m in PACKAGE.rglob("*.py")}
    assert max(sizes.values()) <= 400, {m: n for m, n in sizes.items() if n > 400}
