"""The book's structure, checked without Quarto: chapters listed, references and images resolve."""

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def _chapters() -> list[str]:
    book = yaml.safe_load((ROOT / "_quarto.yml").read_text())["book"]
    listed = []
    for item in book.get("chapters", []) + book.get("appendices", []):
        if isinstance(item, dict):  # a part: {part: ..., chapters: [...]}
            listed += item.get("chapters", [])
            if str(item.get("part", "")).endswith(".qmd"):
                listed.append(item["part"])
        else:
            listed.append(item)
    return listed


def test_quarto_lists_every_chapter_and_only_existing_ones():
    listed = _chapters()
    on_disk = sorted([p.name for p in ROOT.glob("*.qmd")] + [str(p.relative_to(ROOT)) for p in (ROOT / "chapters").glob("*.qmd")])
    assert sorted(listed) == on_disk
    assert len(listed) == len(set(listed))


def test_every_image_a_chapter_includes_exists():
    for qmd in [ROOT / c for c in _chapters()]:
        for ref in re.findall(r"!\[[^\]]*\]\(([^)\s]+)", qmd.read_text()):
            if "://" not in ref:
                assert (qmd.parent / ref).exists(), f"{qmd.name}: {ref} does not exist"


def test_every_cross_reference_has_a_target():
    text = "\n".join((ROOT / c).read_text() for c in _chapters())
    labels = set(re.findall(r"#((?:fig|eq|sec|tbl|thm|lem|exr)-[\w-]+)", text))
    labels |= set(re.findall(r"#\|\s*label:\s*((?:fig|tbl)-[\w-]+)", text))  # labels of figure/table cells
    for ref in set(re.findall(r"@((?:fig|eq|sec|tbl|thm|lem|exr)-[\w-]*\w)", text)):
        assert ref in labels, f"@{ref} has no target"


def _executable() -> list[str]:
    from vaebook.book import python_cells

    return [c for c in _chapters() if python_cells(ROOT / c)]


@pytest.mark.parametrize("chapter", _executable())
def test_chapter_cells_execute_in_a_kernel(chapter):
    """Every Python cell of the chapter runs, in order, in one Jupyter kernel started in the chapter's folder."""
    from vaebook.book import execute_chapter

    nb = execute_chapter(ROOT / chapter, timeout=300)
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    # Printed output is shown in a fixed-width block that cuts off what is wider than the text column.
    for cell in nb.cells:
        if "output: asis" in cell.source:  # rendered as Markdown, which wraps
            continue
        for out in cell.get("outputs", []):
            text = out.get("text") or out.get("data", {}).get("text/plain", "")
            for line in text.splitlines():
                assert len(line) <= OUTPUT_COLUMNS, f"{chapter}: an output line of {len(line)} characters: {line!r}"


OUTPUT_COLUMNS = 80  # characters of monospaced output that fit the text column of the rendered page


def _numbered() -> list[str]:
    return [c for c in _chapters() if c.startswith("chapters/") and Path(c).name[:2].isdigit()]


@pytest.mark.parametrize("chapter", _numbered())
def test_every_numbered_chapter_ends_with_a_summary_and_exercises_with_solutions(chapter):
    text = (ROOT / chapter).read_text()
    headings = [h for h in re.findall(r"^## (.+?)\s*(?:\{.*\})?$", text, flags=re.M) if h != "Solution"]
    assert headings[-2:] == ["Summary", "Exercises"], f"{chapter} ends with {headings[-2:]}"
    exercises = text[text.rindex("\n## Exercises"):]
    blocks = re.findall(r"^::: \{#exr-[\w-]+\}\n(.+?)^:::\n\s*^::: \{\.callout-tip collapse=\"true\"\}\n## Solution\n(.+?)^:::$",
                        exercises, flags=re.M | re.S)
    assert len(blocks) >= 3, f"{chapter}: {len(blocks)} exercises with a collapsed worked solution, want 3 or more"
    assert len(blocks) == exercises.count("{#exr-"), f"{chapter}: an exercise without a solution right after it"
    assert all(statement.strip() and solution.strip() for statement, solution in blocks)


def test_labels_are_unique_across_the_book():
    text = "\n".join((ROOT / c).read_text() for c in _chapters())
    labels = re.findall(r"\{#((?:fig|eq|sec|tbl|thm|lem|exr)-[\w-]+)", text)
    labels += re.findall(r"#\|\s*label:\s*((?:fig|tbl)-[\w-]+)", text)
    assert not {label for label in labels if labels.count(label) > 1}


def test_no_page_speaks_of_drafts():
    """The reader never saw the material the book grew from: no page, notebook or printed docstring names it."""
    pages = [ROOT / c for c in _chapters()] + sorted((ROOT / "notebooks").glob("*.ipynb"))
    pages += sorted((ROOT / "src" / "vaebook").rglob("*.py"))  # the book prints the package's source
    for page in pages:
        for n, line in enumerate(page.read_text().splitlines(), 1):
            assert not re.search(r"\bdrafts?\b|\bseeds? material", line, flags=re.I), f"{page.name}:{n}: {line.strip()}"


def test_the_colab_badge_is_inline_not_a_figure():
    """An image alone in its paragraph becomes a captioned figure in Quarto; the badge shares its paragraph."""
    from vaebook.book import chapter_badge

    badge = chapter_badge("01-x.ipynb", ROOT / "_quarto.yml")
    assert "\n" not in badge.strip()
    link_end = badge.index(")", badge.index("](https://colab.research.google.com/github/")) + 1
    assert badge.startswith("[![Open in Colab](") and badge[link_end:].strip(), "no text beside the badge"


def test_numbered_chapters_link_their_colab_notebook():
    for chapter in _chapters():
        if chapter.startswith("chapters/") and Path(chapter).name[:2].isdigit():
            text = (ROOT / chapter).read_text()
            assert f'chapter_badge("{Path(chapter).stem}.ipynb")' in text, chapter


def test_colab_urls_come_from_the_configured_repository_and_ref():
    from vaebook.book import colab_ref, colab_url, repo_url

    repo, ref = repo_url(ROOT / "_quarto.yml"), colab_ref(ROOT / "_quarto.yml")
    assert colab_url("01-x.ipynb", ROOT / "_quarto.yml") == (
        "https://colab.research.google.com/github/" + repo.removeprefix("https://github.com/")
        + f"/blob/{ref}/notebooks/01-x.ipynb")


def test_the_colab_ref_is_the_release_tag_of_this_version():
    """Notebooks opened on Colab install the package they were written for: the tag v<version>."""
    import tomllib

    import vaebook
    from vaebook.book import colab_ref

    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert vaebook.__version__ == version
    assert colab_ref(ROOT / "_quarto.yml") == f"v{version}"


def test_every_colab_badge_points_at_a_notebook_that_exists():
    pages = [ROOT / c for c in _chapters()]
    badges = [(p.name, n) for p in pages for n in re.findall(r'chapter_badge\("([^"]+)"\)', p.read_text())]
    assert badges
    for page, notebook in badges:
        assert (ROOT / "notebooks" / notebook).is_file(), f"{page} links {notebook}, which does not exist"


def test_every_citation_is_in_the_bibliography():
    bib = (ROOT / "references.bib").read_text()
    keys = set(re.findall(r"@\w+\{([^,]+),", bib))
    text = "\n".join((ROOT / c).read_text() for c in _chapters())
    cited = set(re.findall(r"(?<![\w.])@([a-z]+\d{4}[a-z]?)\b", text))
    assert cited <= keys, sorted(cited - keys)


def test_the_book_is_found_from_the_working_directory_upwards(tmp_path, monkeypatch):
    """Quarto runs a chapter in its own folder: the book's root is the nearest folder above with _quarto.yml
    (not a path baked into the package), and its settings are read from there."""
    from vaebook.book import book_root, colab_ref

    (tmp_path / "_quarto.yml").write_text("book:\n  repo-url: https://github.com/someone/fork\nvaebook:\n  colab-ref: v9\n")
    (tmp_path / "chapters").mkdir()
    assert book_root(tmp_path / "chapters") == tmp_path
    assert colab_ref(tmp_path / "_quarto.yml") == "v9"
    assert book_root(ROOT / "chapters") == ROOT
    monkeypatch.chdir(tmp_path / "chapters")  # the default start: where the chapter runs
    assert book_root() == tmp_path and colab_ref() == "v9"
