"""The book's structure, checked without Quarto: chapters listed, references and images resolve."""

import re
from pathlib import Path

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
    on_disk = sorted(["index.qmd"] + [str(p.relative_to(ROOT)) for p in (ROOT / "chapters").glob("*.qmd")])
    assert sorted(listed) == on_disk
    assert len(listed) == len(set(listed))


def test_every_image_a_chapter_includes_exists():
    for qmd in [ROOT / c for c in _chapters()]:
        for ref in re.findall(r"!\[[^\]]*\]\(([^)\s]+)", qmd.read_text()):
            if "://" not in ref:
                assert (qmd.parent / ref).exists(), f"{qmd.name}: {ref} does not exist"


def test_every_cross_reference_has_a_target():
    text = "\n".join((ROOT / c).read_text() for c in _chapters())
    labels = set(re.findall(r"#((?:fig|eq|sec|tbl|thm|lem)-[\w-]+)", text))
    for ref in set(re.findall(r"@((?:fig|eq|sec|tbl|thm|lem)-[\w-]*\w)", text)):
        assert ref in labels, f"@{ref} has no target"
