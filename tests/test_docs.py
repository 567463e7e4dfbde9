"""The generated reference pages (docs/cli.md, docs/design-files.md) match what scripts/make_docs.py writes now,
and every relative link of the README and docs/ reaches a file (and a heading, where it names one)."""
import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def make_docs():
    spec = importlib.util.spec_from_file_location("make_docs", ROOT / "scripts" / "make_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_pages_are_up_to_date():
    docs = make_docs()
    for relative, text in docs.pages().items():
        path = ROOT / relative
        assert path.exists(), f"{relative} is missing; write it with `{docs.REGENERATE}`"
        assert path.read_text() == text, (f"{relative} differs from the current --help texts and design fields; "
                                          f"regenerate it with `{docs.REGENERATE}` and commit the result")


def anchors(path: Path) -> set[str]:
    """GitHub's anchors for the headings of a Markdown page (lower case, punctuation dropped, blanks to '-')."""
    text = re.sub(r"^```.*?^```", "", path.read_text(), flags=re.S | re.M)
    return {re.sub(r"[^\w\- ]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
            for line in text.splitlines() if line.startswith("#")}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_resolve(page):
    broken = []
    for target in LINK.findall(re.sub(r"^```.*?^```", "", page.read_text(), flags=re.S | re.M)):
        if re.match(r"[a-z]+:", target):
            continue
        file, _, anchor = target.partition("#")
        path = (page.parent / file).resolve() if file else page
        if not path.exists():
            broken.append(target)
        elif anchor and path.suffix == ".md" and anchor not in anchors(path):
            broken.append(target)
    assert not broken, f"{page.name}: links to nothing: {broken}"
